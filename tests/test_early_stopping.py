"""`--task_early_stopping_patience`: a task out of patience leaves the sampler, the others train on for their passes
over the data, a resumed run replays the stops exactly, and two ranks stop the same task at the same step.

The NER dev rows have only `O` tags, so NER's entity F1 is 0 at every evaluation: its first evaluation is its best and
it runs out of patience at a known step, whatever the model learns. The topic task learns (its accuracy rises).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from transformers import TrainerCallback

from mtl_hf import MultiTaskTrainer, MultiTaskTrainingArguments
from mtl_hf.sampler import MultiTaskBatchSampler
from tests.test_trainer import args, max_difference, params, run_two_processes
from mtl_hf.task_selection import read_best
from tests.trainer_fixtures import (
    EARLY_STOPPING_TRAIN_SIZE,
    MOOD,
    NER,
    TOPIC,
    SAME,
    TOPIC_SET,
    WHERE,
    RecordingTrainer,
    make_model,
    make_tokenizer,
    tokenized,
    tokenized_qa,
    tokenized_types,
    tokenized_unlearnable_ner,
)

ROWS, BATCH, EPOCHS, EVAL_STEPS, PATIENCE = 48, 4, 4, 6, 2
GROUPS = ROWS // BATCH  # per task and pass
NER_STOP_STEP = 3 * EVAL_STEPS  # best at the first evaluation, then PATIENCE evaluations without improvement


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    return make_tokenizer(tmp_path_factory.mktemp("tok"))


def run_args(out: Path, **overrides) -> MultiTaskTrainingArguments:
    settings = dict(num_train_epochs=EPOCHS, learning_rate=1e-2, per_device_train_batch_size=BATCH,
                    eval_strategy="steps", eval_steps=EVAL_STEPS, save_strategy="steps", save_steps=EVAL_STEPS,
                    task_early_stopping_patience=PATIENCE, logging_steps=6)
    return args(out, **{**settings, **overrides})


def make_trainer(tokenizer, out: Path, model_init: bool = False, **overrides) -> RecordingTrainer:
    def build():
        return make_model(tokenizer.vocab_size, dropout=0.1)

    return RecordingTrainer(**({"model_init": build} if model_init else {"model": build()}),
                            args=run_args(out, **overrides), train_dataset=tokenized(tokenizer, ROWS, seed=0),
                            eval_dataset=tokenized_unlearnable_ner(tokenizer, 16, seed=100),
                            processing_class=tokenizer)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> dict:
    out = tmp_path_factory.mktemp("early")
    trainer = make_trainer(tokenizer, out)
    trainer.train()
    trainer.create_model_card()
    return {"out": out, "trainer": trainer}


def replay(stops: dict[str, int], epochs: int = EPOCHS) -> list[tuple[str, list[int]]]:
    """The stream a fresh sampler draws with these stops, epoch after epoch, as (task, row ids) per batch."""
    sampler = MultiTaskBatchSampler({"topic": ROWS, "ner": ROWS}, batch_size=BATCH, seed=7, max_passes=epochs)
    for task, position in stops.items():
        sampler.stop_task(task, position)
    stream = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        stream += [("topic", batch) if batch[0] < ROWS else ("ner", [i - ROWS for i in batch]) for batch in sampler]
    return stream


def test_a_task_out_of_patience_leaves_the_sampler_while_the_others_train_on(run: dict) -> None:
    trainer = run["trainer"]
    assert set(trainer.task_stops) == {"ner"}  # topic improved in time
    stop = trainer.task_stops["ner"]
    assert (stop["step"], stop["best_step"], stop["metric"], stop["best_value"]) == (NER_STOP_STEP, EVAL_STEPS, "f1",
                                                                                      0.0)
    position = stop["position"]
    # The data loader draws ahead of training: the stop takes effect at what the sampler had drawn, at most a step on.
    assert NER_STOP_STEP <= position <= NER_STOP_STEP + 1

    trained = [(task, sorted(rows)) for task, rows in trainer.trained]
    expected = [(task, sorted(rows)) for task, rows in replay({"ner": position})]
    assert trained == expected  # exactly the stream with NER left out from `position` on
    assert "ner" not in [task for task, _ in trained[position:]]
    assert [task for task, _ in trained[position:]].count("topic") > 0
    # The passes shrank: topic still trains every row once per pass (EPOCHS passes), NER only what came before its
    # stop, so training ends well before EPOCHS full epochs of both tasks.
    topic_rows = sorted(row for task, rows in trained if task == "topic" for row in rows)
    assert topic_rows == sorted(list(range(ROWS)) * EPOCHS)
    ner_groups = [task for task, _ in trained[:position]].count("ner")
    assert trainer.state.global_step == len(trained) == ner_groups + EPOCHS * GROUPS < EPOCHS * 2 * GROUPS


def test_the_card_and_the_checkpoints_record_the_stop(run: dict) -> None:
    card = (run["out"] / "README.md").read_text()
    assert "## Tasks stopped early" in card and "task_early_stopping_patience: 2" in card
    section = card.split("## Tasks stopped early", 1)[1]
    row = next(line for line in section.splitlines() if line.startswith("| ner | "))
    assert row.startswith(f"| ner | {NER_STOP_STEP} | ") and "| f1 | 0.0000 | 6 |" in row
    state = json.loads((run["out"] / f"checkpoint-{NER_STOP_STEP}" / "multitask_state.json").read_text())
    assert state["task_stops"]["ner"] == run["trainer"].task_stops["ner"]
    before = json.loads((run["out"] / f"checkpoint-{NER_STOP_STEP - EVAL_STEPS}" / "multitask_state.json").read_text())
    assert before["task_stops"] == {} and before["task_selection"]["since_best"]["ner"] == PATIENCE - 1


def test_the_end_of_the_shortened_run_is_evaluated_and_saved(run: dict) -> None:
    """As at max_steps: the steps after the last scheduled evaluation are evaluated, and the end is checkpointed."""
    trainer = run["trainer"]
    last = trainer.state.global_step
    assert last % EVAL_STEPS != 0
    assert [entry["step"] for entry in trainer.state.log_history if "eval_topic_accuracy" in entry][-1] == last
    assert (run["out"] / f"checkpoint-{last}" / "multitask_state.json").is_file()


@pytest.mark.parametrize(("at", "model_init"), [(NER_STOP_STEP - EVAL_STEPS, False), (NER_STOP_STEP + EVAL_STEPS, False),
                                                (NER_STOP_STEP + EVAL_STEPS, True)])
def test_resume_replays_the_stop_exactly(run: dict, tokenizer, at: int, model_init: bool, tmp_path: Path) -> None:
    """From a checkpoint before the stop (the resumed run makes the same decision) and after it (it reads it), with a
    model or a model_init (whose fresh model must not bring a fresh training state on resume)."""
    full = run["trainer"]
    shutil.copytree(run["out"] / f"checkpoint-{at}", tmp_path / f"checkpoint-{at}")
    resumed = make_trainer(tokenizer, tmp_path, model_init=model_init)
    resumed.train(resume_from_checkpoint=str(tmp_path / f"checkpoint-{at}"))
    assert resumed.task_stops == full.task_stops
    assert resumed.trained == full.trained[at:]
    assert resumed.state.global_step == full.state.global_step
    assert max_difference(params(resumed.model), params(full.model)) == 0.0


def test_training_ends_when_every_task_has_stopped(tokenizer, tmp_path: Path, capsys) -> None:
    """At learning rate 0 no metric moves: both tasks run out of patience at the same evaluation."""
    trainer = make_trainer(tokenizer, tmp_path, learning_rate=0.0, save_strategy="no")
    trainer.train()
    assert set(trainer.task_stops) == {"topic", "ner"}
    assert trainer.state.global_step == NER_STOP_STEP
    out = capsys.readouterr().out
    assert "Task 'ner' stops at step 18" in out and "no task is left: training ends" in out
    assert "training ends at step 18: every task has stopped early" in out


def test_a_second_train_draws_every_task_again(run: dict, tokenizer, tmp_path: Path) -> None:
    trainer = make_trainer(tokenizer, tmp_path, num_train_epochs=1, save_strategy="no", eval_steps=100)
    trainer.task_stops = dict(run["trainer"].task_stops)  # as left by an earlier train()
    trainer.train()
    assert trainer.task_stops == {} and trainer.seen_tasks.count("ner") == GROUPS


def test_it_needs_evaluations_of_every_task(tokenizer, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="task_early_stopping_patience must be a positive integer, got 0"):
        run_args(tmp_path, task_early_stopping_patience=0)
    with pytest.raises(ValueError, match="counts evaluations without improvement: set --eval_strategy"):
        make_trainer(tokenizer, tmp_path, eval_strategy="no", save_strategy="no")
    with pytest.raises(ValueError, match="needs evaluation data for every task; the task.s. ner have none"):
        MultiTaskTrainer(model=make_model(tokenizer.vocab_size), args=run_args(tmp_path),
                         train_dataset=tokenized(tokenizer, 8),
                         eval_dataset={"topic": tokenized(tokenizer, 8)["topic"]}, processing_class=tokenizer)


def test_a_stop_in_the_middle_of_an_epoch_replays_from_the_recorded_position() -> None:
    """The sampler alone: a stop made while an epoch is being drawn gives the same stream as a fresh sampler that
    knows the stop from the start (a resumed run), on every later epoch too; the stream ends after max_passes."""
    sizes = {"a": 10, "b": 7, "c": 5}
    live = MultiTaskBatchSampler(sizes, batch_size=2, seed=3, max_passes=3, num_replicas=2)
    drawn = []
    live.set_epoch(1)
    for count, batch in enumerate(live):
        drawn.append(batch)
        if count == 5:  # three groups of two ranks' batches into epoch 1
            live.stop_task("b", live.generated)
    position = live.stops["b"]
    assert position == live.groups_per_pass + 3
    fresh = MultiTaskBatchSampler(sizes, batch_size=2, seed=3, max_passes=3, num_replicas=2)
    fresh.stop_task("b", position)
    fresh.set_epoch(1)
    assert list(fresh) == drawn
    # The groups of each rank-pair hold one task; b is gone after the stop; the stream ends after 3 passes.
    offsets = {"a": range(0, 10), "b": range(10, 17), "c": range(17, 22)}
    stream = []
    for epoch in range(4):
        fresh.set_epoch(epoch)
        stream += list(fresh)
    assert len(stream) == 2 * fresh.stream_length() < 2 * 3 * fresh.groups_per_pass

    def task_of(batch: list[int]) -> str:
        return next(name for name, rows in offsets.items() if batch[0] in rows)

    groups = [stream[i:i + 2] for i in range(0, len(stream), 2)]
    assert all(task_of(first) == task_of(second) for first, second in groups)
    assert "b" not in [task_of(group[0]) for group in groups[position:]]
    for name in ("a", "c"):  # every row once per pass (the last group wraps around to fill both ranks)
        rows = {row for group in groups if task_of(group[0]) == name for batch in group for row in batch}
        assert rows == set(offsets[name])
        assert sum(task_of(group[0]) == name for group in groups) == 3 * -(-sizes[name] // 4)


def test_two_ranks_stop_the_same_task_at_the_same_step(tmp_path: Path) -> None:
    reports = run_two_processes(tmp_path, "early_stopping", timeout=180)
    stops = [report["task_stops"] for report in reports]
    assert stops[0] == stops[1] and set(stops[0]) == {"ner"}
    position = stops[0]["ner"]["position"]
    trained = [report["trained"] for report in reports]
    assert [task for task, _ in trained[0]] == [task for task, _ in trained[1]]  # the same head at every step
    for rank in trained:
        after = [task for task, _ in rank[position:]]
        assert "ner" not in after and after.count("topic") > 0  # NER left both ranks' samplers, topic went on
        topic_rows = sorted(row for task, rows in rank if task == "topic" for row in rows)
        assert len(topic_rows) == 4 * EARLY_STOPPING_TRAIN_SIZE // 2  # each rank half of every topic pass
    assert reports[0]["steps"] == reports[1]["steps"] == len(trained[0])
    weights = [torch.load(tmp_path / f"weights{rank}.pt") for rank in (0, 1)]
    assert max(float((weights[0][k] - weights[1][k]).abs().max()) for k in weights[0]) == 0.0
    # --save_best_per_task in the same run: the main process wrote each task's best, once
    best = read_best(tmp_path / "run")
    assert (best["ner"]["step"], best["ner"]["format"], best["topic"]["format"]) == (6, "transformers", "multitask")
    during_training = reports[0]["evaluations"][:-1]  # the last one is the script's evaluate() after train()
    assert best["topic"]["value"] == max(e["eval_topic_accuracy"] for e in during_training)


class _NerStoppedFromTheStart(TrainerCallback):
    """A run in which NER has left the sampler before the first step, as a resumed run past its stop would have it."""

    def __init__(self, trainer: MultiTaskTrainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainer._train_batch_sampler.stop_task("ner", 0)
        self.trainer.task_stops["ner"] = {"step": 0, "epoch": 0.0, "position": 0, "metric": "f1", "best_value": None,
                                          "best_step": None}


@pytest.mark.parametrize(("epochs", "accumulation", "steps", "batches"), [
    (4, 1, 4 * GROUPS, 4 * GROUPS),  # the stream (topic's 4 passes) ends on an epoch's last step
    (3, 5, 5 + 2, 2 * GROUPS + 10),  # it ends inside a window: 24 batches in 5 steps, then 5 + 5, the last 2 not
])
def test_the_run_ends_where_the_shortened_stream_ends(tokenizer, tmp_path: Path, caplog, capsys, epochs: int,
                                                      accumulation: int, steps: int, batches: int) -> None:
    """Topic alone for `epochs` passes (GROUPS steps each) inside Trainer's epochs of 2 * GROUPS batches: training
    ends with the stream, and an accumulation window cut short by its end is not trained, since Trainer would never
    step the optimizer on it."""
    trainer = make_trainer(tokenizer, tmp_path, num_train_epochs=epochs, gradient_accumulation_steps=accumulation,
                           save_strategy="no", eval_steps=1000)
    trainer.add_callback(_NerStoppedFromTheStart(trainer))
    with caplog.at_level("WARNING", logger="mtl_hf"):
        trainer.train()
    assert trainer.seen_tasks == ["topic"] * batches
    assert trainer.state.global_step == steps
    cut = [record.getMessage() for record in caplog.records if "inside an accumulation window" in record.getMessage()]
    assert len(cut) == (accumulation > 1)
    if cut:
        assert "its 2 batch(es) (of 5) are not trained" in cut[0]
    assert f"training ends at step {steps}: the remaining tasks have had their passes" in capsys.readouterr().out


def test_every_task_type_trains_with_balancing_best_states_and_early_stopping(tokenizer, tmp_path: Path) -> None:
    """A pair classification, a regression, a multilabel and an extractive QA task in one run with the three options
    of training dynamics together: each type's loss is balanced (the regression form halves its weight), each keeps
    its best state in the form its type allows, and each stops on its own main metric."""
    train = {**tokenized_types(tokenizer, 16, seed=0), "where": tokenized_qa(tokenizer, 16, seed=0)["where"]}
    dev = {**tokenized_types(tokenizer, 8, seed=40), "where": tokenized_qa(tokenizer, 8, seed=40)["where"]}
    trainer = RecordingTrainer(
        model=make_model(tokenizer.vocab_size, specs=(SAME, MOOD, TOPIC_SET, WHERE)),
        args=args(tmp_path, num_train_epochs=6, learning_rate=1e-2, eval_strategy="steps", eval_steps=4,
                  loss_balancing="uncertainty", save_best_per_task=True, task_early_stopping_patience=1),
        train_dataset=train, eval_dataset=dev, processing_class=tokenizer)
    trainer.train()
    first = next(entry for entry in trainer.state.log_history if "weight_mood" in entry)
    assert first["weight_mood"] == pytest.approx(0.5, abs=0.05)  # exp(-s) / 2 for a regression task, s near 0
    assert all(first[f"weight_{task}"] == pytest.approx(1.0, abs=0.1) for task in ("same", "topics", "where"))
    best = read_best(tmp_path)
    assert {task: record["format"] for task, record in best.items()} == {
        "same": "multitask", "mood": "multitask", "topics": "multitask", "where": "transformers"}  # QA exports
    assert {task: record["metric"] for task, record in best.items()} == {
        "same": "accuracy", "mood": "pearson", "topics": "micro_f1", "where": "f1"}
    assert trainer.task_stops  # patience 1 over 6 epochs of toy data: some task stops
    for task, stop in trainer.task_stops.items():
        assert stop["metric"] == best[task]["metric"]
        assert task not in [name for name, _ in trainer.trained[stop["position"]:]]


def test_resume_does_not_count_eval_on_start_twice(tokenizer, tmp_path: Path) -> None:
    """Trainer evaluates on start on resume too, at the checkpoint's step: that evaluation was counted before the
    checkpoint and must not be counted again (it would stop NER a step early, at a stream position already trained)."""
    full = make_trainer(tokenizer, tmp_path / "full", eval_on_start=True)
    full.train()
    stop = full.task_stops["ner"]
    assert stop["step"] == NER_STOP_STEP - EVAL_STEPS  # the step-0 evaluation is NER's best
    at = stop["step"] - EVAL_STEPS
    resumed = make_trainer(tokenizer, tmp_path / "full", eval_on_start=True)
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / f"checkpoint-{at}"))
    assert resumed.task_stops == full.task_stops
    assert max_difference(params(resumed.model), params(full.model)) == 0.0


def test_a_task_without_training_data_never_stops_nor_holds_training(tokenizer, tmp_path: Path) -> None:
    """An evaluated task that is not trained (its regression labels constant, so its Pearson never improves) has no
    place in the sampler: it does not stop, and the trained tasks' stops alone end training."""
    dev = tokenized_unlearnable_ner(tokenizer, 16, seed=100)
    mood = tokenized_types(tokenizer, 8, seed=3)["mood"]
    dev["mood"] = mood.map(lambda row: {"labels": 0.0})
    trainer = RecordingTrainer(model=make_model(tokenizer.vocab_size, specs=(TOPIC, NER, MOOD)),
                               args=run_args(tmp_path, learning_rate=0.0, save_strategy="no"),
                               train_dataset=tokenized(tokenizer, ROWS, seed=0), eval_dataset=dev,
                               processing_class=tokenizer)
    trainer.train()
    assert set(trainer.task_stops) == {"topic", "ner"} and trainer.state.global_step == NER_STOP_STEP


def test_a_starved_remaining_task_is_an_error_not_a_hang() -> None:
    """Temperature sampling that practically never draws the task left once the big one stopped: with no end of
    stream (max_steps), the sampler says so instead of searching forever."""
    sampler = MultiTaskBatchSampler({"big": 1000, "small": 10}, batch_size=10, strategy="temperature",
                                    temperature=0.05, seed=0)
    sampler.stop_task("big", 0)
    with pytest.raises(RuntimeError, match="temperature sampling drew none of the remaining task.s. small in 100 "
                                           "passes in a row, now that big stopped"):
        next(iter(sampler))
