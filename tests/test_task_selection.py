"""`--save_best_per_task`: each task's state at its best evaluation, as a plain transformers model where the task
exports, else the multi-task model; the values in checkpoints, the table in the card."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from seqeval.metrics import f1_score
from seqeval.scheme import IOB2

from mtl_hf import MultiTaskModel, MultiTaskTrainer
from mtl_hf.data import MultiTaskDataCollator
from tests.test_trainer import args
from tests.trainer_fixtures import make_model, make_tokenizer, tokenized


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    return make_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> dict:
    """4 epochs of topic + NER, evaluated and checkpointed every epoch, keeping one checkpoint."""
    out = tmp_path_factory.mktemp("best")
    train, dev = tokenized(tokenizer, 48, seed=0), tokenized(tokenizer, 16, seed=100, split="validation")
    trainer = MultiTaskTrainer(
        model=make_model(tokenizer.vocab_size, dropout=0.1),
        args=args(out, num_train_epochs=4, eval_strategy="epoch", save_strategy="epoch", save_total_limit=1,
                  learning_rate=1e-2, save_best_per_task=True),
        train_dataset=train, eval_dataset=dev, processing_class=tokenizer,
    )
    trainer.train()
    trainer.create_model_card()
    return {"out": out, "trainer": trainer, "dev": dev}


def evaluations(trainer: MultiTaskTrainer, key: str) -> list[tuple[int, float]]:
    return [(entry["step"], entry[key]) for entry in trainer.state.log_history if key in entry]


@pytest.mark.parametrize(("task", "metric", "kind"), [("topic", "accuracy", "multitask"), ("ner", "f1", "transformers")])
def test_each_tasks_best_evaluation_is_kept_with_its_state(run: dict, tokenizer, task: str, metric: str,
                                                           kind: str) -> None:
    history = evaluations(run["trainer"], f"eval_{task}_{metric}")
    assert len(history) == 4
    best_value = max(value for _, value in history)
    best_step = next(step for step, value in history if value == best_value)  # the first evaluation reaching it
    folder = run["out"] / "best" / task
    record = json.loads((folder / "best_metric.json").read_text())
    assert record == {"task": task, "step": best_step, "metric": metric, "value": best_value, "format": kind}
    dev = run["dev"][task]
    batch = MultiTaskDataCollator(tokenizer)([dev[i] for i in range(len(dev))])
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    if kind == "multitask":
        # the whole model as it was at that step: evaluating it gives the recorded value again
        model = MultiTaskModel.from_pretrained(folder)
        trainer = MultiTaskTrainer(model=model, args=args(run["out"] / "re-eval"), processing_class=tokenizer)
        assert trainer.evaluate({task: dev})[f"eval_{task}_{metric}"] == pytest.approx(best_value)
    else:
        # a plain token classifier, whose tags on the dev set's words score the recorded entity F1
        model = transformers.AutoModelForTokenClassification.from_pretrained(folder).eval()
        with torch.no_grad():
            predicted = model(**inputs).logits.argmax(-1)
        labels = batch["labels"]
        tag = model.config.id2label
        gold = [[tag[int(i)] for i in row[row != -100]] for row in labels]
        tags = [[tag[int(i)] for i in p[row != -100]] for p, row in zip(predicted, labels)]
        assert f1_score(gold, tags, mode="strict", scheme=IOB2) == pytest.approx(best_value)
        # kept at its step, not overwritten by the final model (which reached the same F1 later)
        assert best_step < history[-1][0]
        final = run["trainer"].model.eval()
        with torch.no_grad():
            gap = (final(**inputs, task=task).logits - model(**inputs).logits).abs().max().item()
        assert gap > 1e-3
    assert len(list(run["out"].glob("checkpoint-*"))) == 1  # save_total_limit rotates checkpoints, never best/


def test_checkpoints_keep_the_best_values_for_a_resumed_run(run: dict, tokenizer) -> None:
    checkpoint = next(run["out"].glob("checkpoint-*"))
    state = json.loads((checkpoint / "multitask_state.json").read_text())
    bests = {task: json.loads((run["out"] / "best" / task / "best_metric.json").read_text()) for task in ("topic", "ner")}
    assert {task: record["value"] for task, record in state["task_selection"]["best"].items()} == {
        task: record["value"] for task, record in bests.items()}
    resumed = MultiTaskTrainer(model=make_model(tokenizer.vocab_size), args=args(run["out"] / "x",
                               save_best_per_task=True, eval_strategy="epoch"),
                               train_dataset=tokenized(tokenizer, 4), eval_dataset=run["dev"],
                               processing_class=tokenizer)
    resumed._restore_multitask_state(str(checkpoint))
    assert resumed.task_selection.best == state["task_selection"]["best"]


def test_the_card_lists_each_tasks_best_next_to_the_final_value(run: dict) -> None:
    card = (run["out"] / "README.md").read_text()
    assert "## Best state per task" in card
    final = {task: run["trainer"].state.log_history[-2].get(f"eval_{task}_{metric}")
             for task, metric in (("topic", "accuracy"), ("ner", "f1"))}
    for task, metric, kind in (("topic", "accuracy", "multi-task model"), ("ner", "f1", "transformers model")):
        record = json.loads((run["out"] / "best" / task / "best_metric.json").read_text())
        row = (f"| {task} | {metric} | {record['value']:.4f} | {record['step']} | {final[task]:.4f} | "
               f"`best/{task}` ({kind}) |")
        assert row in card, card


def test_it_needs_evaluations(tokenizer, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--save_best_per_task keeps each task's state at its best evaluation: set "
                                         "--eval_strategy"):
        MultiTaskTrainer(model=make_model(tokenizer.vocab_size), args=args(tmp_path, save_best_per_task=True),
                         train_dataset=tokenized(tokenizer, 4), processing_class=tokenizer)


def test_an_evaluation_after_training_selects_nothing(run: dict, tokenizer) -> None:
    """Only training's evaluations select: evaluating the final model afterwards (here on other data) leaves best/
    as it was."""
    before = {path: path.read_bytes() for path in (run["out"] / "best").rglob("*") if path.is_file()}
    run["trainer"].evaluate(tokenized(tokenizer, 8, seed=7, split="validation"))
    after = {path: path.read_bytes() for path in (run["out"] / "best").rglob("*") if path.is_file()}
    assert after == before


def test_the_card_reads_best_only_for_a_run_that_keeps_it(run: dict, tokenizer, tmp_path: Path) -> None:
    """A later run into the same folder without --save_best_per_task does not show the earlier run's table."""
    import shutil

    shutil.copytree(run["out"] / "best", tmp_path / "best")
    trainer = MultiTaskTrainer(model=make_model(tokenizer.vocab_size), args=args(tmp_path, max_steps=1),
                               train_dataset=tokenized(tokenizer, 4), processing_class=tokenizer)
    trainer.train()
    trainer.create_model_card()
    assert "## Best state per task" not in (tmp_path / "README.md").read_text()
