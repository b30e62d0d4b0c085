"""The shipped evaluate metrics, on hand-checked examples."""

from __future__ import annotations

from pathlib import Path

import evaluate
import pytest
from transformers import TrainerCallback

from mtl_hf import MultiTaskTrainer, MultiTaskTrainingArguments
from mtl_hf.configuration_multitask import TaskSpec
from mtl_hf.data import load_raw_datasets, preprocess_task, resolve_labels
from mtl_hf.metrics import ClassificationMetric, SeqevalMetric, main_metric, metric_names
from tests.trainer_fixtures import NER, TOPIC, make_model, make_tokenizer, tokenized


def test_metrics_are_evaluate_metrics_usable_offline() -> None:
    assert isinstance(SeqevalMetric(), evaluate.Metric) and isinstance(ClassificationMetric(), evaluate.Metric)


def test_classification_accuracy_and_macro_f1() -> None:
    metric = ClassificationMetric()
    metric.add_batch(predictions=[0, 1, 1], references=[0, 1, 2])
    metric.add_batch(predictions=[2], references=[2])
    scores = metric.compute()
    assert scores["accuracy"] == pytest.approx(0.75)
    # per class F1: class 0 = 1, class 1 = 2/3 (p=1/2, r=1), class 2 = 2/3 (p=1, r=1/2)
    assert scores["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)


def test_seqeval_is_entity_level_strict_iob2_on_words() -> None:
    references = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "I-ORG", "O"]]
    predictions = [
        ["B-PER", "I-PER", "O", "B-PER"],  # PER right; LOC predicted as PER
        ["O", "I-ORG", "I-ORG", "O"],  # no B-: not an entity under strict IOB2
    ]
    scores = SeqevalMetric().compute(predictions=predictions, references=references)
    # predicted entities: PER(0-1), PER(3) -> 1 correct of 2; gold entities: PER, LOC, ORG -> 1 of 3 found
    assert scores["precision"] == pytest.approx(0.5)
    assert scores["recall"] == pytest.approx(1 / 3)
    assert scores["f1"] == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))
    assert scores["token_accuracy"] == pytest.approx(6 / 8)
    assert scores["PER_f1"] == pytest.approx(2 / 3)  # p = 1/2, r = 1
    assert scores["LOC_f1"] == 0.0 and scores["ORG_f1"] == 0.0


def test_seqeval_iobes_and_bilou_are_scored_with_their_own_scheme() -> None:
    references = [["B-PER", "E-PER", "O", "S-LOC"], ["S-ORG", "O"]]
    predictions = [["B-PER", "E-PER", "O", "B-LOC"], ["S-ORG", "O"]]  # B-LOC without E-LOC: no entity in IOBES
    scores = SeqevalMetric().compute(predictions=predictions, references=references, scheme="IOBES")
    # predicted entities: PER, ORG (both right); gold: PER, LOC, ORG
    assert scores == pytest.approx(
        {"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "token_accuracy": 5 / 6, "LOC_f1": 0.0, "ORG_f1": 1.0,
         "PER_f1": 1.0}
    )
    # The same sentences in BILOU spelling score the same.
    bilou_references, bilou_predictions = (
        [[tag.replace("E-", "L-").replace("S-", "U-") for tag in sentence] for sentence in sentences]
        for sentences in (references, predictions)
    )
    assert SeqevalMetric().compute(
        predictions=bilou_predictions, references=bilou_references, scheme="BILOU"
    ) == pytest.approx(scores)


def test_seqeval_io_tags_get_token_accuracy_and_per_tag_f1() -> None:
    references = [["PER", "PER", "O", "LOC"], ["NN", "O"]]
    predictions = [["PER", "O", "O", "PER"], ["NN", "NN"]]
    scores = SeqevalMetric().compute(predictions=predictions, references=references, scheme="IO")
    # PER: precision 1/2, recall 1/2; LOC: 0; NN: precision 1/2, recall 1 -> 2/3. "O" is not a tag of its own.
    assert scores == pytest.approx(
        {"token_accuracy": 3 / 6, "macro_f1": (0.5 + 0.0 + 2 / 3) / 3, "LOC_f1": 0.0, "NN_f1": 2 / 3, "PER_f1": 0.5}
    )


def test_seqeval_scheme_defaults_to_iob2_and_unknown_schemes_are_refused() -> None:
    references, predictions = [["B-PER", "I-PER", "O"]], [["B-PER", "I-PER", "O"]]
    expected = SeqevalMetric().compute(predictions=predictions, references=references, scheme="IOB2")
    # None is what a model saved before schemes were recorded stores: it means IOB2.
    assert SeqevalMetric().compute(predictions=predictions, references=references, scheme=None) == expected
    assert SeqevalMetric().compute(predictions=predictions, references=references) == expected
    with pytest.raises(ValueError, match="unknown tag scheme 'IOB1'"):
        SeqevalMetric().compute(predictions=predictions, references=references, scheme="IOB1")


def test_iob1_references_are_scored_right_after_conversion(tmp_path: Path, bert_tokenizer) -> None:
    """Raw CoNLL-2003 files are IOB1. Read as strict IOB2, their I-started entities do not exist, so a prediction
    that misses every PER and LOC scored F1 = 1.0; converted to IOB2 by the data pipeline, they count."""
    sentence = [("John", "I-PER"), ("Smith", "I-PER"), ("visited", "O"), ("Paris", "I-LOC"), ("Acme", "I-ORG"),
                ("Google", "B-ORG")]
    path = tmp_path / "test.conll"
    path.write_text("\n".join(f"{word} {tag}" for word, tag in sentence) + "\n")
    spec = TaskSpec(name="ner", type="ner", test_file=str(path),
                    labels=["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"])
    raw = load_raw_datasets(spec, cache_dir=str(tmp_path / "cache"))
    spec = resolve_labels(spec, raw)
    example = preprocess_task(spec, raw, bert_tokenizer, max_seq_length=16)["test"][0]
    references = [[spec.labels[label] for label in example["labels"] if label != -100]]
    assert references == [["B-PER", "I-PER", "O", "B-LOC", "B-ORG", "B-ORG"]]
    predictions = [["O", "O", "O", "O", "O", "B-ORG"]]  # only the last ORG found

    naive = SeqevalMetric().compute(predictions=predictions, references=[[tag for _, tag in sentence]])
    assert naive["f1"] == 1.0  # the defect: the raw IOB1 references hide PER, LOC and the first ORG
    scores = SeqevalMetric().compute(predictions=predictions, references=references, scheme=spec.tag_scheme)
    # gold: PER, LOC, ORG, ORG; predicted: the second ORG -> precision 1, recall 1/4; words 3 and 6 right
    assert scores == pytest.approx(
        {"precision": 1.0, "recall": 0.25, "f1": 0.4, "token_accuracy": 2 / 6, "LOC_f1": 0.0, "ORG_f1": 2 / 3,
         "PER_f1": 0.0}
    )


@pytest.mark.parametrize(
    ("spec", "metric"),
    [
        (TaskSpec(name="topic", type="classification", labels=["a", "b"]), "accuracy"),
        (TaskSpec(name="ner", type="ner", labels=["O", "B-PER"], tag_scheme="IOB2"), "f1"),
        (TaskSpec(name="ner", type="ner", labels=["O", "S-PER"], tag_scheme="IOBES"), "f1"),
        (TaskSpec(name="ner", type="ner", labels=["O", "B-PER"]), "f1"),  # saved before schemes were recorded
        (TaskSpec(name="pos", type="ner", labels=["NN", "VB"], tag_scheme="IO"), "token_accuracy"),
    ],
)
def test_main_metric(spec: TaskSpec, metric: str) -> None:
    assert main_metric(spec) == metric


# --------------------------------------------------------------------------------------------------------------------
# metric_names: what evaluation can report, checked against what it does report
# --------------------------------------------------------------------------------------------------------------------


def test_metric_names_are_the_keys_a_real_evaluation_reports(tmp_path: Path) -> None:
    """The evaluations during training (what `metric_for_best_model` is looked up in), on data whose references hold
    every entity type: their `eval_<task>_*` keys are exactly metric_names(spec), for a classification and a NER
    task. (An evaluate() before any training also reports Trainer's `<task>_model_preparation_time`, a timing.)"""
    tokenizer = make_tokenizer(tmp_path / "tok")
    events = []

    class Events(TrainerCallback):
        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            events.append(dict(metrics))

    trainer = MultiTaskTrainer(
        model=make_model(tokenizer.vocab_size),
        args=MultiTaskTrainingArguments(str(tmp_path / "out"), use_cpu=True, report_to=[], save_strategy="no",
                                        disable_tqdm=True, per_device_train_batch_size=4, per_device_eval_batch_size=8,
                                        max_steps=2, eval_strategy="steps", eval_steps=1),
        train_dataset=tokenized(tokenizer, 8),
        eval_dataset=tokenized(tokenizer, 8, seed=40),
        processing_class=tokenizer,
        callbacks=[Events()],
    )
    trainer.train()
    assert len(events) == 2
    for spec in (TOPIC, NER):
        prefix = f"eval_{spec.name}_"
        for metrics in events:
            reported = {key.removeprefix(prefix) for key in metrics if key.startswith(prefix)}
            assert reported == set(metric_names(spec)), spec.name
    assert metric_names(NER) == ["loss", "precision", "recall", "f1", "token_accuracy", "LOC_f1", "PER_f1"]
    assert metric_names(TOPIC) == ["loss", "accuracy", "macro_f1"]


@pytest.mark.parametrize(
    ("scheme", "labels", "sentences"),
    [
        ("IOB2", ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-MISC"],
         [["B-PER", "I-PER", "O", "B-LOC", "I-LOC"], ["B-MISC", "O"]]),
        ("IOBES", ["O", "B-PER", "E-PER", "S-LOC", "S-ORG"], [["B-PER", "E-PER", "O", "S-LOC"], ["S-ORG"]]),
        ("BILOU", ["O", "B-PER", "L-PER", "U-LOC", "U-ORG"], [["B-PER", "L-PER", "O", "U-LOC"], ["U-ORG"]]),
        ("IO", ["O", "NN", "VB", "JJ"], [["NN", "VB", "O"], ["JJ"]]),
    ],
)
def test_metric_names_match_seqeval_when_every_type_appears(scheme: str, labels: list[str], sentences) -> None:
    spec = TaskSpec(name="tags", type="ner", labels=labels, tag_scheme=scheme)
    scores = SeqevalMetric().compute(predictions=sentences, references=sentences, scheme=scheme)
    assert {"loss", *scores} == set(metric_names(spec))
    # With some types absent from references and predictions, fewer keys appear, never others.
    partial = [[tag if i == 0 else "O" for i, tag in enumerate(sentence)] for sentence in sentences]
    scores = SeqevalMetric().compute(predictions=partial, references=partial, scheme=scheme)
    assert {"loss", *scores} < set(metric_names(spec))


def test_metric_names_of_a_ner_task_need_its_labels() -> None:
    with pytest.raises(ValueError, match="Task 'ner': labels are not set"):
        metric_names(TaskSpec(name="ner", type="ner"))
    assert metric_names(TaskSpec(name="topic", type="classification")) == ["loss", "accuracy", "macro_f1"]
