"""MultiTaskTrainer's evaluation, prediction and TrainingArguments: every path a user takes gives the right numbers,
and every Trainer option is honoured or refused at construction (issue: trust on every path)."""

from __future__ import annotations

import warnings
from pathlib import Path

import datasets
import pytest
import torch
from transformers import EarlyStoppingCallback, TrainerCallback
from transformers.trainer_pt_utils import LabelSmoother

from mtl_hf import MultiTaskTrainer, MultiTaskTrainingArguments, TaskSpec
from mtl_hf.data import preprocess_task
from tests.trainer_fixtures import NER, make_model, make_tokenizer, tokenized


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    return make_tokenizer(tmp_path_factory.mktemp("tok"))


def args(output_dir: Path, **overrides) -> MultiTaskTrainingArguments:
    defaults = dict(
        use_cpu=True, report_to=[], learning_rate=1e-3, per_device_train_batch_size=4, per_device_eval_batch_size=8,
        logging_steps=1, save_strategy="no", seed=7, disable_tqdm=True,
    )
    defaults.update(overrides)
    return MultiTaskTrainingArguments(str(output_dir), **defaults)


def trainer_for(tokenizer, tmp_path: Path, train: int = 16, dev: int = 8, **overrides) -> MultiTaskTrainer:
    return MultiTaskTrainer(
        model=make_model(tokenizer.vocab_size),
        args=args(tmp_path, **overrides),
        train_dataset=tokenized(tokenizer, train) if train else None,
        eval_dataset=tokenized(tokenizer, dev, seed=40) if dev else None,
        processing_class=tokenizer,
    )


class EvaluateEvents(TrainerCallback):
    def __init__(self) -> None:
        self.events: list[dict[str, float]] = []

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self.events.append(dict(metrics))


# ---- evaluation: the right data, one event with every metric --------------------------------------------------


def test_persistent_workers_evaluate_each_task_on_its_own_data(tokenizer, tmp_path: Path) -> None:
    """Trainer caches one eval loader per key with persistent workers; each task must get its own."""
    plain = trainer_for(tokenizer, tmp_path / "plain", train=0).evaluate()
    persistent = trainer_for(
        tokenizer, tmp_path / "persistent", train=0, dataloader_num_workers=1, dataloader_persistent_workers=True
    )
    for _ in range(2):  # the second call is the one that reads the cached loaders
        metrics = persistent.evaluate()
        for key in ("eval_topic_loss", "eval_ner_loss", "eval_ner_f1", "eval_topic_accuracy"):
            assert metrics[key] == pytest.approx(plain[key], rel=1e-5), key
    assert metrics["eval_topic_loss"] != pytest.approx(metrics["eval_ner_loss"])


def test_one_evaluation_event_carries_every_task_and_the_combined_metrics(tokenizer, tmp_path: Path) -> None:
    trainer = trainer_for(tokenizer, tmp_path, task_weights={"ner": 3.0})
    recorder = EvaluateEvents()
    trainer.add_callback(recorder)
    metrics = trainer.evaluate()
    assert len(recorder.events) == 1
    event = recorder.events[0]
    assert event == metrics
    assert {"eval_topic_accuracy", "eval_ner_f1", "eval_combined_score", "eval_loss", "eval_runtime"} <= set(event)
    assert event["eval_combined_score"] == pytest.approx((event["eval_topic_accuracy"] + event["eval_ner_f1"]) / 2)
    # eval_loss: the task losses averaged with the training weights (topic 1, ner 3).
    assert event["eval_loss"] == pytest.approx((event["eval_topic_loss"] + 3 * event["eval_ner_loss"]) / 4)
    logged = [log for log in trainer.state.log_history if "eval_combined_score" in log]
    assert len(logged) == 1 and "eval_ner_f1" in logged[0] and "eval_topic_accuracy" in logged[0]


def test_evaluate_takes_a_task_name_or_a_dict_like_trainer(tokenizer, tmp_path: Path) -> None:
    trainer = trainer_for(tokenizer, tmp_path)
    full = trainer.evaluate()
    only_ner = trainer.evaluate("ner")
    assert only_ner["eval_ner_f1"] == pytest.approx(full["eval_ner_f1"])
    assert not any(key.startswith("eval_topic") for key in only_ner)
    adhoc = trainer.evaluate({"topic": tokenized(tokenizer, 8, seed=40)["topic"]}, metric_key_prefix="dev")
    assert adhoc["dev_topic_accuracy"] == pytest.approx(full["eval_topic_accuracy"])
    assert adhoc["dev_combined_score"] == pytest.approx(adhoc["dev_topic_accuracy"])
    with pytest.raises(ValueError, match="unknown task 'pos'"):
        trainer.evaluate("pos")


def test_early_stopping_counts_patience_on_combined_score(tokenizer, tmp_path: Path) -> None:
    # learning_rate 0: the score never improves, so patience 1 stops training after the second evaluation.
    trainer = trainer_for(
        tokenizer, tmp_path, learning_rate=0.0, num_train_epochs=6, eval_strategy="epoch", save_strategy="epoch",
        metric_for_best_model="combined_score", load_best_model_at_end=True,
    )
    trainer.add_callback(EarlyStoppingCallback(early_stopping_patience=1))
    trainer.train()
    evaluations = [log for log in trainer.state.log_history if "eval_combined_score" in log]
    assert len(evaluations) == 2
    assert trainer.state.epoch == pytest.approx(2.0)


def test_best_model_and_plateau_scheduling_work_without_metric_for_best_model(tokenizer, tmp_path: Path) -> None:
    trainer = trainer_for(
        tokenizer, tmp_path, num_train_epochs=2, eval_strategy="epoch", save_strategy="epoch",
        load_best_model_at_end=True, lr_scheduler_type="reduce_lr_on_plateau",
    )
    trainer.train()
    losses = [log["eval_loss"] for log in trainer.state.log_history if "eval_loss" in log]
    assert len(losses) == 2
    assert trainer.state.best_metric == pytest.approx(min(losses))


def test_options_that_cannot_apply_are_refused_at_construction(tokenizer, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="batch_eval_metrics"):
        trainer_for(tokenizer, tmp_path, batch_eval_metrics=True)
    with pytest.raises(ValueError, match="batch_rebalance"):
        trainer_for(tokenizer, tmp_path, train_sampling_strategy="batch_rebalance")
    with pytest.raises(ValueError, match="prediction_loss_only"):
        trainer_for(tokenizer, tmp_path, prediction_loss_only=True)
    with pytest.raises(ValueError, match="eval_do_concat_batches"):
        trainer_for(tokenizer, tmp_path, eval_do_concat_batches=False)
    with pytest.raises(ValueError, match="compute_loss_func"):
        MultiTaskTrainer(model=make_model(tokenizer.vocab_size), args=args(tmp_path), processing_class=tokenizer,
                         train_dataset=tokenized(tokenizer, 4), compute_loss_func=lambda *a, **k: 0)


# ---- TrainingArguments that used to be ignored ----------------------------------------------------------------


@pytest.mark.parametrize("task", ["topic", "ner"])
def test_label_smoothing_factor_is_applied(task: str, tokenizer, tmp_path: Path) -> None:
    trainer = trainer_for(tokenizer, tmp_path, label_smoothing_factor=0.2)
    model = trainer.model.eval()
    dev = tokenized(tokenizer, 8, seed=40)[task]
    batch = trainer.data_collator([dev[i] for i in range(len(dev))])
    with torch.no_grad():
        loss = trainer.compute_loss(model, batch)
        outputs = model(**{k: v for k, v in batch.items() if k != "labels"})
        expected = LabelSmoother(epsilon=0.2)(outputs, batch["labels"])
        unsmoothed = model(**batch).loss
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert loss.item() != pytest.approx(unsmoothed.item(), rel=1e-3)
    # In training too: the summed, window-normalised loss of one batch is the smoothed mean.
    samples, normalizer = trainer.get_batch_samples(iter([batch]), 1, torch.device("cpu"))
    with torch.no_grad():
        train_loss = trainer.compute_loss(model, samples[0], num_items_in_batch=normalizer)
    assert train_loss.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("average", [True, False])
def test_average_tokens_across_devices(average: bool, tokenizer, tmp_path: Path, monkeypatch) -> None:
    """Pretend to be one of two identical processes: with averaging, item counts are summed over both and the
    loss scaled back by 2 (DDP averages gradients); without, each process normalises by its own counts."""
    trainer = trainer_for(tokenizer, tmp_path, average_tokens_across_devices=average)
    monkeypatch.setattr(type(trainer.accelerator), "num_processes", property(lambda self: 2))
    monkeypatch.setattr(trainer, "_sum_over_processes", lambda tensor: tensor * 2)
    batch = next(iter(trainer.get_train_dataloader()))
    _, normalizer = trainer.get_batch_samples(iter([batch]), 1, torch.device("cpu"))
    local_items = float((batch["labels"] != -100).sum())
    task = batch["task"]
    assert normalizer.items[task] == (2 * local_items if average else local_items)
    assert normalizer.scale(task) == pytest.approx(1 / local_items)  # the same per-process loss either way
    assert normalizer.num_processes == (2 if average else 1)


def test_sequential_sampling_keeps_each_task_in_dataset_order(tokenizer, tmp_path: Path) -> None:
    trainer = trainer_for(tokenizer, tmp_path, train=12, train_sampling_strategy="sequential",
                          sampling_strategy="round_robin")
    seen: dict[str, list[list[int]]] = {"topic": [], "ner": []}
    for batch in trainer.get_train_dataloader():
        seen[batch["task"]].extend(row[row != 0].tolist() for row in batch["input_ids"])
    for task, dataset in trainer.train_dataset.items():
        assert seen[task] == dataset["input_ids"]


def test_group_by_length_reads_length_column_name(tokenizer, tmp_path: Path) -> None:
    data = tokenized(tokenizer, 12)
    data = {name: ds.add_column("n_tokens", list(range(100, 100 + len(ds)))) for name, ds in data.items()}
    trainer = MultiTaskTrainer(
        model=make_model(tokenizer.vocab_size), processing_class=tokenizer, train_dataset=data,
        args=args(tmp_path, train_sampling_strategy="group_by_length", length_column_name="n_tokens"),
    )
    trainer.get_train_dataloader()
    assert trainer._train_batch_sampler.lengths == [list(range(100, 112))] * 2


def test_dataloader_in_order_and_multiprocessing_context_reach_the_train_loader(tokenizer, tmp_path: Path) -> None:
    trainer = trainer_for(tokenizer, tmp_path, dataloader_num_workers=1, dataloader_in_order=False,
                          dataloader_multiprocessing_context="spawn")
    loader = trainer.get_train_dataloader()
    assert loader.in_order is False
    assert loader.multiprocessing_context.get_start_method() == "spawn"


def test_small_task_with_drop_last_is_an_error_naming_it(tokenizer, tmp_path: Path) -> None:
    data = tokenized(tokenizer, 12)
    data["ner"] = data["ner"].select(range(3))
    with pytest.raises(ValueError, match=r"task 'ner' has 3 training example\(s\): it would get no batch"):
        MultiTaskTrainer(model=make_model(tokenizer.vocab_size), args=args(tmp_path, dataloader_drop_last=True),
                         train_dataset=data, processing_class=tokenizer)


def test_model_init_is_supported(tokenizer, tmp_path: Path) -> None:
    trainer = MultiTaskTrainer(
        model_init=lambda: make_model(tokenizer.vocab_size), args=args(tmp_path, max_steps=2),
        train_dataset=tokenized(tokenizer, 8), eval_dataset=tokenized(tokenizer, 4, seed=40),
        processing_class=tokenizer,
    )
    assert list(trainer.task_specs) == ["topic", "ner"]
    trainer.args.task_weights = {"ner": 3.0}
    trainer.task_weights["ner"] = 3.0
    assert trainer.train().global_step == 2
    # Trainer built a fresh model from model_init for training: it carries the weights trained with too.
    assert {task["name"]: task["weight"] for task in trainer.model.config.tasks} == {"topic": 1.0, "ner": 3.0}
    assert "eval_combined_score" in trainer.evaluate()


def test_task_weights_are_written_into_the_model_config(tokenizer, tmp_path: Path) -> None:
    trainer = trainer_for(tokenizer, tmp_path, task_weights={"ner": 2.0})
    assert {task["name"]: task["weight"] for task in trainer.model.config.tasks} == {"topic": 1.0, "ner": 2.0}


def test_a_cpu_run_warns_nothing_about_pin_memory(tokenizer, tmp_path: Path) -> None:
    # Without `use_cpu` (as run_mtl.py runs on a machine without an accelerator), pin_memory stays on by default.
    trainer = trainer_for(tokenizer, tmp_path, max_steps=2, eval_strategy="steps", eval_steps=1, use_cpu=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
        trainer.evaluate()
    assert not [w for w in caught if "pin_memory" in str(w.message)]


def test_epoch_line_says_where_max_steps_stopped(tokenizer, tmp_path: Path, capsys) -> None:
    trainer = trainer_for(tokenizer, tmp_path, train=40, max_steps=2)
    trainer.train()
    out = capsys.readouterr().out
    assert "Epoch 1/1 - topic loss" in out or "Epoch 1/1 - ner loss" in out
    assert "(stopped at epoch 0.1" in out and "step 2: max_steps=2)" in out


# ---- prediction: one per input ----------------------------------------------------------------------------------


def test_predict_gives_one_tag_per_input_word(tokenizer, tmp_path: Path) -> None:
    """A word that yields no sub-token (a zero-width space) and words cut off by truncation still get a tag."""
    sentences = [["john", "\u200b", "lives", "in", "paris"], ["mary"] + ["the"] * 40 + ["rome"]]
    tags = [["B-PER", "O", "O", "O", "B-LOC"], ["B-PER"] + ["O"] * 40 + ["B-LOC"]]
    raw = datasets.DatasetDict({"test": datasets.Dataset.from_dict({"tokens": sentences, "ner_tags": tags})})
    test = preprocess_task(NER, raw, tokenizer, max_seq_length=16)["test"]
    trainer = MultiTaskTrainer(model=make_model(tokenizer.vocab_size), args=args(tmp_path),
                               processing_class=tokenizer)
    predictions = trainer.predict({"ner": test}).predictions["ner"]
    assert [len(p) for p in predictions] == [5, 42]
    assert predictions[0][1] == "O"  # the zero-width word: no sub-token, no prediction
    assert predictions[1][-1] == "O"  # cut off by max_seq_length


def test_predict_keeps_every_classification_row(tokenizer, tmp_path: Path) -> None:
    topic = TaskSpec(name="topic", type="classification", labels=["business", "sport", "tech"])
    raw = datasets.DatasetDict({"test": datasets.Dataset.from_dict({"text": ["market shares rose", "", "goal"]})})
    test = preprocess_task(topic, raw, tokenizer, max_seq_length=16)["test"]
    trainer = MultiTaskTrainer(model=make_model(tokenizer.vocab_size), args=args(tmp_path, dataloader_drop_last=True,
                               per_device_eval_batch_size=2), processing_class=tokenizer)
    predictions = trainer.predict({"topic": test}).predictions["topic"]
    assert len(predictions) == 3 and set(predictions) <= {"business", "sport", "tech"}


# ---- a loss that turns non-finite stops training ------------------------------------------------------------------


def test_a_non_finite_loss_stops_training_naming_task_and_step(tokenizer, tmp_path: Path) -> None:
    from mtl_hf import NonFiniteLossError

    model = make_model(tokenizer.vocab_size)
    with torch.no_grad():
        model.heads["ner"].classifier.bias[1] = float("inf")
    trainer = MultiTaskTrainer(model=model, args=args(tmp_path, max_steps=3, sampling_strategy="round_robin"),
                               train_dataset=tokenized(tokenizer, 8), processing_class=tokenizer)
    with pytest.raises(NonFiniteLossError, match=r"task 'ner': the training loss is nan at step 2 "):
        trainer.train()


@pytest.mark.parametrize("weight", [float("nan"), float("inf"), 0.0, -1.0, "heavy"])
def test_task_weights_must_be_finite_and_positive(weight, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"task_weights: the weight of task 'ner' (must be a finite number > 0|is not a number)"):
        args(tmp_path, task_weights={"ner": weight})


def test_predictions_keep_input_order_with_group_by_length(tokenizer, tmp_path: Path) -> None:
    """Trainer's evaluation sampler groups by length under `group_by_length`; predictions must still line up."""
    test = tokenized(tokenizer, 24, seed=11)
    results = {}
    for strategy in ("random", "group_by_length"):
        trainer = trainer_for(tokenizer, tmp_path / strategy, train=0, dev=0, train_sampling_strategy=strategy,
                              per_device_eval_batch_size=4)
        results[strategy] = trainer.predict(test)
    assert results["group_by_length"].predictions == results["random"].predictions
    for task, words in (("ner", test["ner"]["num_words"]),):
        assert [len(tags) for tags in results["group_by_length"].predictions[task]] == words


def test_predict_reaches_callbacks_once_with_every_task(tokenizer, tmp_path: Path) -> None:
    class PredictEvents(TrainerCallback):
        events: list[dict[str, float]] = []

        def on_predict(self, args, state, control, metrics=None, **kwargs):
            self.events.append(dict(metrics))

    trainer = trainer_for(tokenizer, tmp_path, train=0, dev=0)
    recorder = PredictEvents()
    trainer.add_callback(recorder)
    output = trainer.predict(tokenized(tokenizer, 8, seed=3))
    assert recorder.events == [output.metrics]
    assert {"test_topic_accuracy", "test_ner_f1", "test_combined_score", "test_loss"} <= set(output.metrics)


@pytest.mark.parametrize(
    "labels, tags, main",
    [
        (["O", "S-PER", "B-LOC", "E-LOC"], [["S-PER", "O", "B-LOC", "E-LOC"], ["O", "S-PER", "O", "O"]], "f1"),
        (["NN", "VB", "DT"], [["DT", "NN", "VB", "NN"], ["NN", "VB", "DT", "NN"]], "token_accuracy"),
    ],
    ids=["iobes", "pos"],
)
def test_evaluate_and_predict_other_tag_schemes(labels, tags, main, tokenizer, tmp_path: Path) -> None:
    """The trainer scores and predicts BIOES and prefix-less (part-of-speech) tag sets, each with its main metric."""
    from mtl_hf import MultiTaskConfig, MultiTaskModel
    from mtl_hf.data import resolve_labels
    from tests.conftest import tiny_encoder_config

    words = [["john", "met", "new", "york"], ["the", "mary", "said", "it"]]
    raw = datasets.DatasetDict({
        split: datasets.Dataset.from_dict({"tokens": words * 4, "ner_tags": tags * 4}) for split in ("train", "test")
    })
    spec = resolve_labels(TaskSpec(name="tags", type="ner", labels=labels), raw)
    data = preprocess_task(spec, raw, tokenizer, max_seq_length=16)
    torch.manual_seed(0)
    model = MultiTaskModel(MultiTaskConfig(encoder=tiny_encoder_config("bert", tokenizer.vocab_size), tasks=[spec]))
    trainer = MultiTaskTrainer(model=model, args=args(tmp_path, num_train_epochs=30, learning_rate=1e-2),
                               train_dataset={"tags": data["train"]}, eval_dataset={"tags": data["test"]},
                               processing_class=tokenizer)
    trainer.train()
    metrics = trainer.evaluate()
    assert metrics[f"eval_tags_{main}"] == pytest.approx(1.0)
    assert metrics["eval_combined_score"] == metrics[f"eval_tags_{main}"]
    assert trainer.predict({"tags": data["test"]}).predictions["tags"] == tags * 4


def test_model_card_metadata_takes_license_language_and_tags(tokenizer, tmp_path: Path) -> None:
    """What `push_to_hub(license=..., language=..., tags=...)` passes reaches the card's metadata."""
    trainer = trainer_for(tokenizer, tmp_path, train=0, dev=0)
    trainer.create_model_card(license="apache-2.0", language="en", tags=["news", "mtl_hf"])
    metadata = (tmp_path / "README.md").read_text().split("---")[1]
    assert "license: apache-2.0" in metadata and "language:\n- en" in metadata
    assert metadata.count("- news") == 1 and metadata.count("- mtl_hf") == 1


def test_lower_is_better_metric_for_best_model_needs_greater_is_better_false(tokenizer, tmp_path: Path) -> None:
    """Trainer reads any metric name not ending in `loss` as higher-is-better: keeping the checkpoint with the highest
    regression MSE would be silently wrong, so that combination is refused and the explicit direction accepted."""
    from mtl_hf import MultiTaskConfig, MultiTaskModel
    from tests.conftest import tiny_encoder_config

    config = MultiTaskConfig(encoder=tiny_encoder_config("bert", tokenizer.vocab_size),
                             tasks=[TaskSpec(name="score", type="regression")])
    model = MultiTaskModel(config)
    raw = datasets.DatasetDict({"validation": datasets.Dataset.from_dict({"text": ["good", "bad"], "label": [1, -1]})})
    dev = {"score": preprocess_task(config.get_task("score"), raw, tokenizer, max_seq_length=16)["validation"]}
    chosen = dict(eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True,
                  metric_for_best_model="eval_score_mse")

    def build(**overrides) -> MultiTaskTrainer:
        return MultiTaskTrainer(model=model, args=args(tmp_path, **{**chosen, **overrides}), eval_dataset=dev,
                                processing_class=tokenizer)

    with pytest.raises(ValueError, match="'eval_score_mse' is better when lower.*greater_is_better=False"):
        build()
    assert build(greater_is_better=False).args.greater_is_better is False
    # A higher-is-better metric of the same task is accepted with Trainer's default direction.
    assert build(metric_for_best_model="score_pearson").args.greater_is_better is True
