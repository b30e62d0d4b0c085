"""MultiTaskTrainer: the hard parts proven on tiny encoders (gradient accumulation, resume, two processes,
learning, bf16), plus routing, logs and the exact metric keys."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mtl_hf import MultiTaskTrainer, MultiTaskTrainingArguments
from tests.trainer_fixtures import RecordingTrainer, make_model, make_tokenizer, tokenized

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


def test_two_processes_agree_on_tasks_and_weights(tmp_path: Path) -> None:
    accelerate = shutil.which("accelerate") or str(Path(sys.executable).with_name("accelerate"))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29533",
         str(REPO / "tests" / "multiprocess_train.py"), str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    reports = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["world_size"] for r in reports] == [2, 2]
    assert reports[0]["tasks"] == reports[1]["tasks"]
    assert set(reports[0]["tasks"]) == {"topic", "ner"} and len(reports[0]["tasks"]) == reports[0]["steps"]
    # Each rank trained on its own shard: no example index is shared between the two ranks at any step.
    assert len(reports[0]["indices"]) == len(reports[1]["indices"]) == reports[0]["steps"]
    for step_a, step_b in zip(reports[0]["indices"], reports[1]["indices"]):
        assert step_a and step_b and not set(step_a) & set(step_b)
    # 13 examples per task; per epoch each task's last group is completed by wrapping around (accelerate's
    # even_batches rule), so every example is trained and only the padding repeats.
    seen = [i for step in reports[0]["indices"] + reports[1]["indices"] for i in step]
    assert set(seen) == set(range(26))
    weights = [torch.load(tmp_path / f"weights{rank}.pt") for rank in (0, 1)]
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key
    for report in reports:
        # predict() over an odd-sized eval set: every example exactly once, in order, equal to a one-process pass.
        assert report["eval_sizes"] == {"topic": 11, "ner": 11}
        assert report["predictions_match_single_process"] is True
        assert report["metrics"]["eval_combined_score"] >= 0.0


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
    expected = {
        "eval_topic_loss", "eval_topic_accuracy", "eval_topic_macro_f1",
        "eval_ner_loss", "eval_ner_precision", "eval_ner_recall", "eval_ner_f1", "eval_ner_token_accuracy",
        "eval_combined_score",
    }
    assert expected <= set(metrics)
    assert {k for k in metrics if k.startswith("eval_ner_") and k.endswith("_f1")} - {"eval_ner_f1"} <= {
        "eval_ner_PER_f1", "eval_ner_LOC_f1"
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
