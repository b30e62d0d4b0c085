"""`--loss_balancing`: the uncertainty and DWA factors against their formulas, one accumulated step against an
independent reference, exact resume, the logged weights, and two processes against one."""

from __future__ import annotations

import copy
import json
import math
from collections import Counter
from pathlib import Path

import pytest
import torch

from mtl_hf import MultiTaskTrainer, MultiTaskTrainingArguments
from mtl_hf.data import MultiTaskDataCollator
from mtl_hf.loss_balancing import DynamicWeightAverage, LossBalancing, UncertaintyBalancer
from tests.test_trainer import args, max_difference, params, run_two_processes
from tests.trainer_fixtures import (
    MOOD,
    MULTIPROCESS_ARGS,
    MULTIPROCESS_TRAIN_SEED,
    MULTIPROCESS_TRAIN_SIZE,
    NER,
    TOPIC,
    RecordingTrainer,
    make_model,
    make_tokenizer,
    tokenized,
)


def set_log_variances(balancer: UncertaintyBalancer, values: dict[str, float]) -> None:
    with torch.no_grad():
        for task, value in values.items():
            balancer.log_variances[task].fill_(value)


def log_variances(balancer: UncertaintyBalancer) -> list[float]:
    return [balancer.log_variances[task].item() for task in balancer.tasks]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    return make_tokenizer(tmp_path_factory.mktemp("tok"))


def test_uncertainty_has_kendalls_classification_and_regression_forms() -> None:
    balancer = UncertaintyBalancer({"topic": TOPIC, "mood": MOOD}, {"topic": 2.0, "mood": 1.0})
    set_log_variances(balancer, {"topic": 0.5, "mood": -1.0})
    # classification: exp(-s) L + s/2; regression: exp(-s) L / 2 + s/2; times the task weight
    assert balancer.factor("topic").item() == pytest.approx(2.0 * math.exp(-0.5))
    assert balancer.factor("mood").item() == pytest.approx(0.5 * math.exp(1.0))
    assert balancer.regularizer("topic").item() == pytest.approx(0.25)
    assert balancer.effective_weights() == pytest.approx({"topic": 2.0 * math.exp(-0.5), "mood": 0.5 * math.e})
    state = json.loads(json.dumps(balancer.state()))
    other = UncertaintyBalancer({"topic": TOPIC, "mood": MOOD}, {"topic": 2.0, "mood": 1.0})
    other.load_state(state, "checkpoint")
    assert log_variances(other) == log_variances(balancer) == pytest.approx([0.5, -1.0])
    with pytest.raises(ValueError, match="saved with --loss_balancing uncertainty, this run uses dwa"):
        DynamicWeightAverage({"topic": TOPIC}, {"topic": 1.0}, 2.0).load_state(state, "checkpoint")


def test_dwa_weights_follow_the_last_two_epochs_loss_ratios() -> None:
    balancer = DynamicWeightAverage({"topic": TOPIC, "ner": NER}, {"topic": 1.0, "ner": 3.0}, temperature=2.0)
    balancer.end_epoch({"topic": 1.0, "ner": 2.0})
    assert balancer.effective_weights() == {"topic": 1.0, "ner": 3.0}  # one epoch: no ratio yet
    balancer.end_epoch({"topic": 0.5, "ner": 1.8})  # topic fell to 0.5 of its loss, ner only to 0.9
    topic, ner = math.exp(0.5 / 2), math.exp(0.9 / 2)
    expected = {"topic": 2 * topic / (topic + ner), "ner": 3.0 * 2 * ner / (topic + ner)}
    assert balancer.effective_weights() == pytest.approx(expected)
    assert sum(balancer.lambdas.values()) == pytest.approx(2.0)  # K times a softmax
    balancer.end_epoch({"topic": 0.5, "ner": 1.8})  # the oldest epoch drops out: equal rates, equal factors
    assert balancer.lambdas == pytest.approx({"topic": 1.0, "ner": 1.0})


def test_dwa_rates_only_the_tasks_trained_in_both_epochs() -> None:
    """A task that stopped early (no loss in the last epoch) keeps its factor; the others share the softmax."""
    specs = {"topic": TOPIC, "ner": NER, "mood": MOOD}
    balancer = DynamicWeightAverage(specs, dict.fromkeys(specs, 1.0), temperature=2.0)
    balancer.end_epoch({"topic": 1.0, "ner": 1.0, "mood": 1.0})
    balancer.end_epoch({"topic": 1.0, "ner": 1.0, "mood": 0.5})
    mood = balancer.lambdas["mood"]
    assert mood < 1.0
    balancer.end_epoch({"topic": 0.5, "ner": 1.0})  # mood has stopped
    topic, ner = math.exp(0.5 / 2), math.exp(1.0 / 2)
    assert balancer.lambdas == pytest.approx({"topic": 2 * topic / (topic + ner), "ner": 2 * ner / (topic + ner),
                                              "mood": mood})


def test_arguments_take_the_strategy_and_refuse_a_bad_temperature(tmp_path: Path) -> None:
    dwa = MultiTaskTrainingArguments(str(tmp_path), loss_balancing="dwa")
    assert dwa.loss_balancing is LossBalancing.DWA and dwa.dwa_temperature == 2.0
    assert dwa.loss_balancing_learning_rate is None
    with pytest.raises(ValueError, match="softmax is not a valid LossBalancing"):
        MultiTaskTrainingArguments(str(tmp_path), loss_balancing="softmax")
    with pytest.raises(ValueError, match="dwa_temperature must be > 0, got 0"):
        MultiTaskTrainingArguments(str(tmp_path), loss_balancing="dwa", dwa_temperature=0)
    with pytest.raises(ValueError, match="loss_balancing_learning_rate must be > 0, got nan"):
        MultiTaskTrainingArguments(str(tmp_path), loss_balancing="uncertainty", loss_balancing_learning_rate=math.nan)


@pytest.mark.parametrize(("option", "value", "strategy"), [
    ("dwa_temperature", 2.0, "static"), ("dwa_temperature", 1.0, "uncertainty"),
    ("loss_balancing_learning_rate", 0.01, "static"), ("loss_balancing_learning_rate", 0.1, "dwa")])
def test_a_strategys_option_is_refused_with_another_strategy(option: str, value: float, strategy: str,
                                                             tmp_path: Path) -> None:
    """Not silently dropped: an option given for a strategy that is not used is an error, even at its default."""
    with pytest.raises(ValueError, match=f"--{option} applies to --loss_balancing .* only; this run uses "
                                         f"--loss_balancing {strategy}"):
        MultiTaskTrainingArguments(str(tmp_path), loss_balancing=strategy, **{option: value})


def test_uncertaintys_log_variances_learn_at_their_own_rate_on_the_schedule(tokenizer, tmp_path: Path) -> None:
    """At a fine-tuning learning rate the log-variances would not move; they get loss_balancing_learning_rate
    (0.01 unless given), scaled by the same schedule as the model's rate."""
    trainer = MultiTaskTrainer(model=make_model(tokenizer.vocab_size), train_dataset=tokenized(tokenizer, 8),
                               processing_class=tokenizer,
                               args=args(tmp_path, max_steps=4, loss_balancing="uncertainty", learning_rate=1e-5,
                                         lr_scheduler_type="linear"))
    assert trainer.args.loss_balancing_learning_rate == 0.01
    trainer.train()
    groups = trainer.optimizer.param_groups
    at = next(i for i, g in enumerate(groups) if any(p is q for p in trainer.loss_balancer.parameters()
                                                     for q in g["params"]))
    assert groups[at]["initial_lr"] == pytest.approx(0.01) and groups[at]["weight_decay"] == 0.0
    assert all(g["initial_lr"] == pytest.approx(1e-5) for i, g in enumerate(groups) if i != at)
    assert trainer.lr_scheduler.base_lrs[at] == pytest.approx(0.01)
    assert groups[at]["lr"] == pytest.approx(0.0)  # the linear schedule took it to 0 with the model's rate
    moved = [abs(p.item()) for p in trainer.loss_balancer.parameters()]
    assert min(moved) > 1e-3  # at 1e-5 four Adam steps would leave them within 4e-5 of 0


@pytest.mark.parametrize("accumulation", [3, 4])
def test_an_uncertainty_window_is_one_step_on_the_balanced_task_means(accumulation: int, tokenizer,
                                                                      tmp_path: Path) -> None:
    """The accumulated update of a window mixing tasks is ONE step on

        sum over tasks t of  (b_t / B) * (w_t exp(-s_t) * mean loss of t over the window + s_t / 2)

    for the model's weights and the log-variances alike (computed here with plain torch)."""
    data = tokenized(tokenizer, 4, seed=3)
    weights = {"topic": 1.0, "ner": 2.5}
    start = {"topic": 0.3, "ner": -0.4}
    base = make_model(tokenizer.vocab_size)
    trainer = RecordingTrainer(
        model=copy.deepcopy(base),
        args=args(tmp_path, per_device_train_batch_size=2, gradient_accumulation_steps=accumulation, max_steps=1,
                  sampling_strategy="round_robin", task_weights=weights, optim="sgd", learning_rate=1.0,
                  loss_balancing_learning_rate=1.0,
                  max_grad_norm=0.0, lr_scheduler_type="constant", loss_balancing="uncertainty", weight_decay=0.5),
        train_dataset=data,
        processing_class=tokenizer,
    )
    set_log_variances(trainer.loss_balancer, start)
    trainer.train()
    window = trainer.trained
    batches = Counter(task for task, _ in window)
    rows = {task: [row for name, batch in window if name == task for row in batch] for task in weights}

    reference = copy.deepcopy(base).train()
    s = {task: torch.tensor(value, requires_grad=True) for task, value in start.items()}
    collate = MultiTaskDataCollator(tokenizer)
    loss = sum(
        batches[task] / len(window) * (weights[task] * torch.exp(-s[task])
                                       * reference(**collate([data[task][i] for i in task_rows])).loss + s[task] / 2)
        for task, task_rows in rows.items()
    )
    loss.backward()
    # Trainer's SGD decays the model's weights (0.5 here), never the log-variances.
    optimizer = torch.optim.SGD([{"params": [p for n, p in reference.named_parameters()
                                             if not n.endswith("bias") and "LayerNorm" not in n],
                                  "weight_decay": 0.5},
                                 {"params": [p for n, p in reference.named_parameters()
                                             if n.endswith("bias") or "LayerNorm" in n], "weight_decay": 0.0},
                                 {"params": list(s.values()), "weight_decay": 0.0}], lr=1.0)
    optimizer.step()
    learned = torch.tensor(log_variances(trainer.loss_balancer))
    expected = torch.tensor([s["topic"].item(), s["ner"].item()])
    assert (expected - torch.tensor([start["topic"], start["ner"]])).abs().min() > 1e-3  # s moved
    torch.testing.assert_close(learned, expected, rtol=0, atol=1e-6)
    assert max_difference(params(trainer.model), params(reference)) < 1e-6


@pytest.mark.parametrize("at", [5, 4])
@pytest.mark.parametrize("strategy", ["uncertainty", "dwa"])
def test_resume_with_a_balancer_reaches_the_same_weights(strategy: str, at: int, tokenizer, tmp_path: Path) -> None:
    """10 steps of 2 + 2 batches per epoch, resumed at step 5 (inside epoch 2) or 4 (the checkpoint of epoch 1's last
    step, saved before the epoch ends): the resumed run must reach the straight run's model and balancer. DWA's
    factors from epoch 3 on depend on the losses of epochs 1 and 2."""
    data = tokenized(tokenizer, 8)
    base = make_model(tokenizer.vocab_size, dropout=0.1)
    common = dict(max_steps=10, save_strategy="steps", save_steps=at, learning_rate=5e-2, loss_balancing=strategy,
                  logging_steps=1)

    straight = RecordingTrainer(model=copy.deepcopy(base), args=args(tmp_path / "a", **common),
                                train_dataset=data, processing_class=tokenizer)
    straight.train()
    checkpoint = tmp_path / "a" / f"checkpoint-{at}"
    saved = json.loads((checkpoint / "multitask_state.json").read_text())
    assert saved["loss_balancing"]["strategy"] == strategy

    resumed = RecordingTrainer(model=copy.deepcopy(base), args=args(tmp_path / "b", **common),
                               train_dataset=data, processing_class=tokenizer)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert saved["epoch_complete"] is (at == 4)
    assert resumed.seen_tasks == straight.seen_tasks[at:]
    assert max_difference(params(straight.model), params(resumed.model)) < 1e-6
    weights = [{k: v for k, v in entry.items() if k.startswith("weight_")} for entry in straight.state.log_history
               if "loss" in entry]
    resumed_weights = [{k: v for k, v in entry.items() if k.startswith("weight_")}
                       for entry in resumed.state.log_history if "loss" in entry]
    assert resumed_weights == weights  # the resumed history continues the checkpoint's
    if strategy == "uncertainty":
        moved = torch.tensor(log_variances(straight.loss_balancer))
        assert moved.abs().min() > 1e-4  # learned away from 0
        torch.testing.assert_close(torch.tensor(log_variances(resumed.loss_balancer)), moved, rtol=0, atol=1e-7)
    else:
        assert len(resumed.loss_balancer.history) == 2
        for ours, theirs in zip(resumed.loss_balancer.history, straight.loss_balancer.history):
            assert ours == pytest.approx(theirs, rel=1e-6)
        assert weights[8] != {"weight_topic": 1.0, "weight_ner": 1.0}  # epoch 3 (steps 9, 10): DWA at work
        assert weights[7] == {"weight_topic": 1.0, "weight_ner": 1.0}


def test_resuming_with_another_strategy_is_refused(tokenizer, tmp_path: Path) -> None:
    data = tokenized(tokenizer, 8)
    common = dict(max_steps=4, save_strategy="steps", save_steps=2)
    trained = RecordingTrainer(model=make_model(tokenizer.vocab_size), args=args(tmp_path / "a", **common),
                               train_dataset=data, processing_class=tokenizer)
    trained.train()
    other = RecordingTrainer(model=make_model(tokenizer.vocab_size),
                             args=args(tmp_path / "b", loss_balancing="uncertainty", **common),
                             train_dataset=data, processing_class=tokenizer)
    with pytest.raises(ValueError, match="saved with --loss_balancing static, this run uses uncertainty"):
        other.train(resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-2"))


def test_two_processes_learn_the_log_variances_of_one_process_on_the_global_batch(tokenizer, tmp_path: Path) -> None:
    """Both ranks end with the log-variances (and weights) of ONE process stepping on each global batch's balanced
    loss: without averaging their gradients over the ranks, each rank would learn its own."""
    reports = run_two_processes(tmp_path, "uncertainty", timeout=180)
    assert reports[0]["log_variances"] == reports[1]["log_variances"]
    trained = [report["trained"] for report in reports]
    data = tokenized(tokenizer, MULTIPROCESS_TRAIN_SIZE, seed=MULTIPROCESS_TRAIN_SEED)
    reference = make_model(tokenizer.vocab_size).train()
    s = torch.zeros(2, requires_grad=True)
    optimizer = torch.optim.SGD([*reference.parameters(), s], lr=MULTIPROCESS_ARGS["learning_rate"])
    collate = MultiTaskDataCollator(tokenizer)
    for (task, rows_0), (_, rows_1) in zip(*trained):
        optimizer.zero_grad(set_to_none=True)
        index = ["topic", "ner"].index(task)
        loss = reference(**collate([data[task][i] for i in rows_0 + rows_1])).loss
        (torch.exp(-s[index]) * loss + s[index] / 2).backward()
        optimizer.step()
    learned = reports[0]["log_variances"]
    torch.testing.assert_close(torch.tensor([learned["topic"], learned["ner"]]), s.detach(), rtol=0, atol=1e-6)
    assert s.detach().abs().min() > 1e-3
    weights = torch.load(tmp_path / "weights0.pt")
    assert max_difference(weights, reference.state_dict()) < 1e-5


def test_adamw_leaves_the_log_variance_of_a_task_without_a_batch_alone(tokenizer, tmp_path: Path) -> None:
    """A step trains one task: the other tasks' log-variances get no gradient, so AdamW (Trainer's default) does not
    move them on their momentum."""
    trainer = RecordingTrainer(
        model=make_model(tokenizer.vocab_size), train_dataset=tokenized(tokenizer, 4), processing_class=tokenizer,
        args=args(tmp_path, per_device_train_batch_size=4, max_steps=3, sampling_strategy="round_robin",
                  loss_balancing="uncertainty", learning_rate=0.1, logging_steps=1),
    )
    trainer.train()
    assert trainer.seen_tasks == ["topic", "ner", "topic"]
    weights = [entry["weight_topic"] for entry in trainer.state.log_history if "weight_topic" in entry]
    assert weights[0] != 1.0 and weights[1] == weights[0] != weights[2]  # topic's moved on its own steps only


def test_training_twice_keeps_the_balancer_in_the_optimizer(tokenizer, tmp_path: Path) -> None:
    trainer = RecordingTrainer(model=make_model(tokenizer.vocab_size), train_dataset=tokenized(tokenizer, 4),
                               processing_class=tokenizer,
                               args=args(tmp_path, max_steps=2, loss_balancing="uncertainty", learning_rate=0.1))
    trainer.train()
    first = log_variances(trainer.loss_balancer)
    trainer.train()  # continues with the same optimizer, which already holds the log-variances
    assert log_variances(trainer.loss_balancer) != first


def test_balancing_is_refused_under_deepspeed_and_fsdp(tokenizer, tmp_path: Path) -> None:
    trainer = RecordingTrainer(model=make_model(tokenizer.vocab_size), train_dataset=tokenized(tokenizer, 4),
                               processing_class=tokenizer, args=args(tmp_path, loss_balancing="dwa"))
    trainer.is_fsdp_enabled = True
    with pytest.raises(ValueError, match="--loss_balancing dwa is not supported with FSDP"):
        trainer._refuse_under_sharding()


def test_each_model_init_trial_starts_with_a_fresh_balancer(tokenizer, tmp_path: Path) -> None:
    """With `model_init` (hyper-parameter search), every `train()` builds a fresh model and so a fresh balancer: the
    second trial learns what the first did instead of continuing its log-variances."""
    trainer = RecordingTrainer(model_init=lambda: make_model(tokenizer.vocab_size),
                               train_dataset=tokenized(tokenizer, 4), processing_class=tokenizer,
                               args=args(tmp_path, max_steps=2, loss_balancing="uncertainty", learning_rate=0.1))
    trainer.train()
    first = log_variances(trainer.loss_balancer)
    trainer.train()
    assert first != [0.0, 0.0] and log_variances(trainer.loss_balancer) == pytest.approx(first, abs=1e-7)
