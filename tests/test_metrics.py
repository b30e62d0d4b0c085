"""The shipped evaluate metrics, on hand-checked examples."""

from __future__ import annotations

import evaluate
import pytest

from mtl_hf.metrics import ClassificationMetric, SeqevalMetric


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
