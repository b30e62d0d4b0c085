"""MultiTaskTrainer: the hard parts proven on tiny encoders against independent references (gradient accumulation
within one task and across tasks, resume, two processes against one, gradient checkpointing, learning, bf16), plus
routing, logs and the exact metric keys."""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import datasets
import pytest
import torch
import transformers
from seqeval.metrics import classification_report
from seqeval.scheme import IOB2
from transformers.modeling_layers import GradientCheckpointingLayer

from mtl_hf import MultiTaskTrainer, MultiTaskTrainingArguments
from mtl_hf.data import MultiTaskDataCollator
from tests.trainer_fixtures import (
    MULTIPROCESS_ARGS,
    MULTIPROCESS_DEV_SEED,
    MULTIPROCESS_DEV_SIZE,
    MULTIPROCESS_TRAIN_SEED,
    MULTIPROCESS_TRAIN_SIZE,
    RecordingTrainer,
    make_model,
    make_tokenizer,
    ner_rows,
    tokenized,
    topic_rows,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    return make_tokenizer(tmp_path_factory.mktemp("tok"))


def args(output_dir: Path, **overrides) -> MultiTaskTrainingArguments:
    defaults = dict(
        use_cpu=True,
        report_to=[],
        learning_rate=1e-3,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=8,
        logging_steps=1,
        save_strategy="no",
        seed=7,
        disable_tqdm=True,
    )
    defaults.update(overrides)
    return MultiTaskTrainingArguments(str(output_dir), **defaults)


def params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """The largest absolute difference between two sets of the same named tensors."""
    assert a.keys() == b.keys()
    return max((a[key] - b[key]).abs().max().item() for key in a)


def sgd_on_batches(
    model: torch.nn.Module,
    data: dict[str, datasets.Dataset],
    tokenizer: transformers.PreTrainedTokenizerBase,
    batches: list[tuple[str, list[int]]],
    lr: float,
) -> None:
    """The one-process reference: one plain SGD step per `(task, row ids)` batch on the model's own mean loss."""
    collate = MultiTaskDataCollator(tokenizer)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    model.train()
    for task, rows in batches:
        optimizer.zero_grad(set_to_none=True)
        model(**collate([data[task][i] for i in rows])).loss.backward()
        optimizer.step()


# ---- 1. gradient accumulation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["topic", "ner"])
def test_one_step_of_8_equals_two_accumulated_steps_of_4(task: str, tokenizer, tmp_path: Path) -> None:
    data = {task: tokenized(tokenizer, 8, seed=3)[task]}
    if task == "ner":  # the trap: micro-batches with different numbers of labelled words
        counts = [sum(label != -100 for label in row) for row in data[task]["labels"]]
        assert len(set(counts)) > 1
    base = make_model(tokenizer.vocab_size)
    results = []
    for batch_size, accumulation in ((8, 1), (4, 2)):
        model = copy.deepcopy(base)
        trainer = MultiTaskTrainer(
            model=model,
            args=args(tmp_path / f"{batch_size}", per_device_train_batch_size=batch_size,
                      gradient_accumulation_steps=accumulation, max_steps=1, optim="sgd", learning_rate=1.0,
                      max_grad_norm=0.0, lr_scheduler_type="constant"),
            train_dataset=data,
            processing_class=tokenizer,
        )
        trainer.train()
        results.append(params(model))
    start = params(base)
    moved = max((results[0][k] - start[k]).abs().max().item() for k in start)
    assert moved > 1e-3  # the step really changed the weights
    for key in start:
        assert torch.allclose(results[0][key], results[1][key], atol=1e-5), key


@pytest.mark.parametrize("accumulation", [3, 4])
def test_a_window_mixing_tasks_is_one_step_on_the_weighted_task_means(
    accumulation: int, tokenizer, tmp_path: Path
) -> None:
    """What `TaskLossNormalizer` promises for an accumulation window that holds batches of several tasks: the
    accumulated update is ONE step on

        sum over tasks t of  w_t * (b_t / B) * (mean loss of task t over all its items in the window)

    where b_t of the window's B batches are task t's, w_t is the task weight and NER items are labelled words. Each
    task's part is exactly its big-batch mean, however its items fall into micro-batches; the tasks are mixed by
    their share of the window's batches (as if each batch were its own step), not by pooling the items of different
    tasks, whose losses are not on one scale. Round-robin sampling with batches of 2 makes the window topic, ner,
    topic (3: shares 2/3 and 1/3) or topic, ner, topic, ner (4: two NER batches with different word counts)."""
    data = tokenized(tokenizer, 4, seed=3)
    weights = {"topic": 1.0, "ner": 2.5}
    base = make_model(tokenizer.vocab_size)
    trainer = RecordingTrainer(
        model=copy.deepcopy(base),
        args=args(tmp_path, per_device_train_batch_size=2, gradient_accumulation_steps=accumulation, max_steps=1,
                  sampling_strategy="round_robin", task_weights=weights, optim="sgd", learning_rate=1.0,
                  max_grad_norm=0.0, lr_scheduler_type="constant"),
        train_dataset=data,
        processing_class=tokenizer,
    )
    trainer.train()
    window = trainer.trained  # the window's batches, as trained
    assert [task for task, _ in window] == ["topic", "ner", "topic", "ner"][:accumulation]
    batches = Counter(task for task, _ in window)
    rows = {task: [row for name, batch in window if name == task for row in batch] for task in weights}
    if accumulation == 4:  # the trap: NER micro-batches with different numbers of labelled words
        words = [sum(label != -100 for i in batch for label in data["ner"][i]["labels"])
                 for name, batch in window if name == "ner"]
        assert len(set(words)) == 2, words

    reference = copy.deepcopy(base).train()
    collate = MultiTaskDataCollator(tokenizer)
    loss = sum(
        weights[task] * batches[task] / len(window) * reference(**collate([data[task][i] for i in task_rows])).loss
        for task, task_rows in rows.items()
    )
    loss.backward()
    torch.optim.SGD(reference.parameters(), lr=1.0).step()
    expected = params(reference)
    assert max_difference(expected, params(base)) > 1e-3  # the step really moved the weights
    # float32 rounding only (the sums run in another order): at most 2e-7 here. Dropping the share b_t / B, pooling
    # the items of both tasks, or averaging per micro-batch (window of 4) is off by 2e-2 or more.
    assert max_difference(params(trainer.model), expected) < 1e-6


# ---- 2. resume ------------------------------------------------------------------------------------------------


def test_resume_replays_task_order_and_reaches_same_weights(tokenizer, tmp_path: Path) -> None:
    data = tokenized(tokenizer, 8)  # 2 + 2 batches of 4 per epoch: 10 steps cross two epoch boundaries
    base = make_model(tokenizer.vocab_size, dropout=0.1)
    common = dict(max_steps=10, save_strategy="steps", save_steps=5, learning_rate=5e-3)

    straight = RecordingTrainer(model=copy.deepcopy(base), args=args(tmp_path / "a", **common),
                                train_dataset=data, processing_class=tokenizer)
    straight.train()
    checkpoint = tmp_path / "a" / "checkpoint-5"
    assert (checkpoint / "model.safetensors").exists()

    resumed = RecordingTrainer(model=copy.deepcopy(base), args=args(tmp_path / "b", **common),
                               train_dataset=data, processing_class=tokenizer)
    resumed.train(resume_from_checkpoint=str(checkpoint))

    assert resumed.seen_tasks == straight.seen_tasks[5:]
    assert set(straight.seen_tasks) == {"topic", "ner"}
    final_a, final_b = params(straight.model), params(resumed.model)
    for key in final_a:
        assert torch.allclose(final_a[key], final_b[key], atol=1e-6), key


# ---- 3. two processes -----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_two_processes(tmp_path: Path, *suite: str, timeout: int = 240) -> list[dict]:
    """tests/multiprocess_train.py (with `suite`) on two gloo ranks under `accelerate launch`: each rank's report,
    after checking that both ran and saw a world of two."""
    accelerate = shutil.which("accelerate") or str(Path(sys.executable).with_name("accelerate"))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
         str(REPO / "tests" / "multiprocess_train.py"), str(tmp_path), *suite],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    reports = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["world_size"] for r in reports] == [2, 2]
    return reports


def test_two_processes_train_like_one_process_on_the_global_batch(tokenizer, tmp_path: Path) -> None:
    """Two ranks must end where ONE process ends after training the same global batches (each step: rank 0's
    rows + rank 1's rows), each step's loss being the model's own mean over the global batch. That the ranks agree
    with each other proves nothing: DDP makes them agree even if both are wrong."""
    reports = run_two_processes(tmp_path, timeout=180)  # ~20 s; ranks out of step hang

    # What each rank trained, as its batches reached training_step: per epoch and task ceil(13 / 4) = 4 steps.
    epochs, size = MULTIPROCESS_ARGS["num_train_epochs"], MULTIPROCESS_TRAIN_SIZE
    steps_per_epoch = 2 * math.ceil(size / 4)
    trained = [report["trained"] for report in reports]
    assert reports[0]["steps"] == reports[1]["steps"] == len(trained[0]) == len(trained[1]) == epochs * steps_per_epoch
    for (task_0, rows_0), (task_1, rows_1) in zip(*trained):
        assert task_0 == task_1  # the same head on both ranks at every step
        assert len(rows_0) == len(rows_1) == 2 and not set(rows_0) & set(rows_1)  # each rank its own shard
    for epoch in range(epochs):
        for task in ("topic", "ner"):
            rows = [row for rank in trained for name, batch in rank[epoch * steps_per_epoch:][:steps_per_epoch]
                    if name == task for row in batch]
            # Every row once; the last step is completed by wrapping around (accelerate's even_batches rule), so
            # 16 - 13 = 3 rows come twice and nothing else repeats.
            assert sorted(set(rows)) == list(range(size)) and len(rows) == 16, (epoch, task, rows)

    weights = [torch.load(tmp_path / f"weights{rank}.pt") for rank in (0, 1)]
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key
    data = tokenized(tokenizer, size, seed=MULTIPROCESS_TRAIN_SEED)
    start = make_model(tokenizer.vocab_size)
    reference = copy.deepcopy(start)
    global_batches = [(task, rows_0 + rows_1) for (task, rows_0), (_, rows_1) in zip(*trained)]
    sgd_on_batches(reference, data, tokenizer, global_batches, lr=MULTIPROCESS_ARGS["learning_rate"])
    expected = reference.state_dict()
    assert max_difference(expected, start.state_dict()) > 0.05  # training moved the weights
    # Equal up to float32 rounding: the runs add the same terms in another order (per-rank sums, then the
    # all-reduce, vs one batch padded to another length), which left at most 1.2e-7 (one ulp of a weight near 1)
    # after the 16 steps; 1e-6 allows for that. Each rank normalising by its own item count (DDP's plain averaging
    # of per-rank means) is off by 1e-2, a missing factor of the number of processes by 7e-2.
    assert max_difference(weights[0], expected) < 1e-6

    dev_topic = topic_rows(MULTIPROCESS_DEV_SIZE, MULTIPROCESS_DEV_SEED)["label"]
    dev_ner = ner_rows(MULTIPROCESS_DEV_SIZE, MULTIPROCESS_DEV_SEED + 1)["ner_tags"]
    for report in reports:
        # predict() over an odd-sized eval set: every example exactly once, in order, equal to a one-process pass.
        predicted = report["predictions"]
        assert len(predicted["topic"]) == len(predicted["ner"]) == MULTIPROCESS_DEV_SIZE
        assert report["predictions_match_single_process"] is True
        assert predicted == reports[0]["predictions"]
        # The evaluation metrics (gathered from both ranks) are those of these predictions...
        metrics = report["metrics"]
        accuracy = sum(p == label for p, label in zip(predicted["topic"], dev_topic)) / MULTIPROCESS_DEV_SIZE
        assert metrics["eval_topic_accuracy"] == pytest.approx(accuracy)
        report_ner = classification_report(dev_ner, predicted["ner"], mode="strict", scheme=IOB2, output_dict=True)
        assert metrics["eval_ner_f1"] == pytest.approx(report_ner["micro avg"]["f1-score"])
        for entity in ("PER", "LOC"):
            assert metrics[f"eval_ner_{entity}_f1"] == pytest.approx(report_ner[entity]["f1-score"])
        # ... and the combined score is the mean of the tasks' main metrics (accuracy; entity F1 for NER).
        assert metrics["eval_combined_score"] == pytest.approx(
            (metrics["eval_topic_accuracy"] + metrics["eval_ner_f1"]) / 2
        )


# ---- 4. learning ----------------------------------------------------------------------------------------------


def test_both_tasks_learn_well_above_chance(tokenizer, tmp_path: Path, capsys) -> None:
    train, dev = tokenized(tokenizer, 96, seed=0), tokenized(tokenizer, 30, seed=100)
    trainer = MultiTaskTrainer(
        model=make_model(tokenizer.vocab_size, dropout=0.1),
        args=args(tmp_path, num_train_epochs=6, learning_rate=3e-3, per_device_train_batch_size=8,
                  logging_steps=10, eval_strategy="epoch", warmup_steps=5),
        train_dataset=train,
        eval_dataset=dev,
        processing_class=tokenizer,
    )
    trainer.train()
    metrics = trainer.evaluate()
    assert metrics["eval_topic_accuracy"] >= 0.8  # chance: 1/3
    assert metrics["eval_ner_f1"] >= 0.7  # chance: ~0
    printed = capsys.readouterr().out
    assert "Epoch 6/6 - topic loss: " in printed and ", ner loss: " in printed
    # The per-task running losses are in the log history, and they fall.
    train_logs = [log for log in trainer.state.log_history if "loss" in log]
    assert all("loss_topic" in log or "loss_ner" in log for log in train_logs)
    first_ner = next(log["loss_ner"] for log in train_logs if "loss_ner" in log)
    last_ner = [log["loss_ner"] for log in train_logs if "loss_ner" in log][-1]
    assert last_ner < first_ner / 2
    eval_logs = [log for log in trainer.state.log_history if "eval_combined_score" in log]
    assert len(eval_logs) == 7  # one per epoch, plus the final evaluate()


# ---- 5. bf16 --------------------------------------------------------------------------------------------------


def test_bf16_on_cpu_runs(tokenizer, tmp_path: Path) -> None:
    trainer = MultiTaskTrainer(
        model=make_model(tokenizer.vocab_size),
        args=args(tmp_path, bf16=True, max_steps=4),
        train_dataset=tokenized(tokenizer, 8),
        eval_dataset=tokenized(tokenizer, 4, seed=9),
        processing_class=tokenizer,
    )
    result = trainer.train()
    assert torch.isfinite(torch.tensor(result.training_loss))
    assert trainer.accelerator.mixed_precision == "bf16"
    assert "eval_ner_f1" in trainer.evaluate()


# ---- gradient checkpointing -----------------------------------------------------------------------------------


def test_gradient_checkpointing_recomputes_the_encoder_layers(tokenizer, tmp_path: Path) -> None:
    """`activation_checkpointing=True` (transformers 5's name for `gradient_checkpointing`) must reach the encoder:
    each layer then keeps only its input in the forward pass and runs again in backward, so the modules inside a
    layer run twice per trained batch (once without). The gradients, hence the weights after the steps, must stay
    those of plain training."""
    data = tokenized(tokenizer, 8)
    base = make_model(tokenizer.vocab_size)
    weights, runs_per_batch = {}, {}
    for checkpointing in (False, True):
        model = copy.deepcopy(base)
        layers = [module for module in model.encoder.modules() if isinstance(module, GradientCheckpointingLayer)]
        assert len(layers) == model.config.encoder.num_hidden_layers
        runs: list[str] = []
        for layer in layers:  # a module inside the layer: it runs again when backward recomputes the layer
            next(layer.children()).register_forward_hook(lambda *_, runs=runs: runs.append("run"))
        trainer = RecordingTrainer(
            model=model,
            args=args(tmp_path / str(checkpointing), activation_checkpointing=checkpointing, max_steps=3, optim="sgd",
                      learning_rate=0.1, max_grad_norm=0.0),
            train_dataset=data,
            processing_class=tokenizer,
        )
        trainer.train()
        assert model.encoder.is_activation_checkpointing is checkpointing
        runs_per_batch[checkpointing] = len(runs) / (len(trainer.trained) * len(layers))
        weights[checkpointing] = params(model)
    assert runs_per_batch == {False: 1, True: 2}
    assert max_difference(weights[True], params(base)) > 1e-3
    assert max_difference(weights[True], weights[False]) < 1e-6


# ---- routing, metric keys, prediction ------------------------------------------------------------------------


def test_metric_keys_weights_and_prediction(tokenizer, tmp_path: Path) -> None:
    model = make_model(tokenizer.vocab_size)
    dev = tokenized(tokenizer, 6, seed=5)
    trainer = MultiTaskTrainer(
        model=model,
        args=args(tmp_path, task_weights="ner=2.5", max_steps=2, remove_unused_columns=True),
        train_dataset=tokenized(tokenizer, 8),
        eval_dataset=dev,
        processing_class=tokenizer,
    )
    assert trainer.task_weights == {"topic": 1.0, "ner": 2.5}
    assert trainer.label_names == ["labels"]
    metrics = trainer.evaluate()
    # Exactly these task metrics (Trainer's timing keys aside): the dev set has PER and LOC entities, so both
    # per-type F1 keys must be there, and no other type.
    timing = ("_runtime", "_samples_per_second", "_steps_per_second", "_model_preparation_time")
    assert {k for k in metrics if k.startswith(("eval_topic_", "eval_ner_")) and not k.endswith(timing)} == {
        "eval_topic_loss", "eval_topic_accuracy", "eval_topic_macro_f1",
        "eval_ner_loss", "eval_ner_precision", "eval_ner_recall", "eval_ner_f1", "eval_ner_token_accuracy",
        "eval_ner_PER_f1", "eval_ner_LOC_f1",
    }
    assert metrics["eval_combined_score"] == pytest.approx(
        (metrics["eval_topic_accuracy"] + metrics["eval_ner_f1"]) / 2
    )
    # The loss is the model's own mean cross-entropy, for both task types.
    for task in ("topic", "ner"):
        batch = trainer.data_collator([dev[task][i] for i in range(len(dev[task]))])
        with torch.no_grad():
            expected_loss = model.eval()(**batch).loss.item()
        assert metrics[f"eval_{task}_loss"] == pytest.approx(expected_loss, rel=1e-4)

    output = trainer.predict(dev)
    assert output.predictions["topic"] and set(output.predictions["topic"]) <= {"business", "sport", "tech"}
    words = dev["ner"]["word_ids"]
    for tags, word_ids in zip(output.predictions["ner"], words):
        assert len(tags) == max(word_ids) + 1
        assert set(tags) <= {"O", "B-PER", "I-PER", "B-LOC", "I-LOC"}
    assert "test_combined_score" in output.metrics


def test_task_weight_scales_the_gradient(tokenizer, tmp_path: Path) -> None:
    data = {"ner": tokenized(tokenizer, 4)["ner"]}
    grads = {}
    for weight in (1.0, 3.0):
        model = make_model(tokenizer.vocab_size)
        trainer = MultiTaskTrainer(model=model, args=args(tmp_path, task_weights={"ner": weight}),
                                   train_dataset=data, processing_class=tokenizer)
        batch_samples, normalizer = trainer.get_batch_samples(iter(trainer.get_train_dataloader()), 1, "cpu")
        trainer.compute_loss(model.train(), batch_samples[0], num_items_in_batch=normalizer).backward()
        grads[weight] = model.heads["ner"].classifier.weight.grad.clone()
    assert torch.allclose(grads[3.0], 3 * grads[1.0], atol=1e-6)


def test_datasets_must_be_keyed_by_known_tasks(tokenizer, tmp_path: Path) -> None:
    data = tokenized(tokenizer, 4)
    with pytest.raises(ValueError, match="unknown task 'pos'.*topic, ner"):
        MultiTaskTrainer(model=make_model(tokenizer.vocab_size), args=args(tmp_path),
                         train_dataset={"pos": data["ner"]}, processing_class=tokenizer)
    with pytest.raises(TypeError, match="dict"):
        MultiTaskTrainer(model=make_model(tokenizer.vocab_size), args=args(tmp_path),
                         train_dataset=data["ner"], processing_class=tokenizer)


def test_combined_score_selects_the_best_model(tokenizer, tmp_path: Path) -> None:
    trainer = MultiTaskTrainer(
        model=make_model(tokenizer.vocab_size),
        args=args(tmp_path, num_train_epochs=3, learning_rate=3e-3, per_device_train_batch_size=8,
                  eval_strategy="epoch", save_strategy="epoch", metric_for_best_model="combined_score",
                  load_best_model_at_end=True, save_total_limit=2, logging_steps=10),
        train_dataset=tokenized(tokenizer, 96),
        eval_dataset=tokenized(tokenizer, 12, seed=40),
        processing_class=tokenizer,
    )
    trainer.train()
    evals = [(log["step"], log["eval_combined_score"]) for log in trainer.state.log_history
             if "eval_combined_score" in log]
    scores = [score for _, score in evals]
    assert len(scores) == 3 and len(set(scores)) > 1  # the scores moved, so the choice means something
    assert trainer.state.best_metric == pytest.approx(max(scores))
    best_step = evals[scores.index(max(scores))][0]
    assert trainer.state.best_model_checkpoint.endswith(f"checkpoint-{best_step}")
    # The weights in memory are the best checkpoint's: evaluating again gives the best score.
    assert trainer.evaluate()["eval_combined_score"] == pytest.approx(max(scores))
