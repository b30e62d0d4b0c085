"""Per-task metrics as `evaluate` metrics that ship with the package.

`evaluate.load("seqeval")` fetches its script from the Hub, which fails offline and pins us to whatever the Hub
serves; these classes implement the same `evaluate.Metric` API (`add_batch`, `compute`, distributed caching) and are
instantiated directly.
"""

from __future__ import annotations

from collections.abc import Sequence

import datasets
import evaluate
from seqeval.metrics import accuracy_score, classification_report
from seqeval.scheme import IOB2
from sklearn.metrics import f1_score

_CLASSIFICATION_DESCRIPTION = "Accuracy and macro-averaged F1 of single-label classification."
_SEQEVAL_DESCRIPTION = (
    "Entity-level precision, recall and F1 (seqeval, strict IOB2: an entity is right only if its type and its exact "
    "span are right) and word-level accuracy, over word-level tag sequences."
)


class ClassificationMetric(evaluate.Metric):
    """`accuracy` and `macro_f1` (unweighted mean of per-class F1 over the classes seen in labels or predictions)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_CLASSIFICATION_DESCRIPTION,
            citation="",
            inputs_description="predictions and references: class ids (int).",
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions: Sequence[int], references: Sequence[int]) -> dict[str, float]:
        correct = sum(int(p == r) for p, r in zip(predictions, references))
        return {
            "accuracy": correct / len(references) if references else 0.0,
            "macro_f1": float(f1_score(references, predictions, average="macro", zero_division=0)),
        }


class SeqevalMetric(evaluate.Metric):
    """seqeval on words: `precision`, `recall`, `f1` (micro over entities), `token_accuracy` (per word) and
    `<TYPE>_f1` for every entity type present in the references or predictions."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_SEQEVAL_DESCRIPTION,
            citation="",
            inputs_description="predictions and references: one list of IOB2 tags per sentence, one tag per word.",
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("string")),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
        )

    def _compute(self, predictions: list[list[str]], references: list[list[str]]) -> dict[str, float]:
        report = classification_report(
            references, predictions, mode="strict", scheme=IOB2, output_dict=True, zero_division=0
        )
        micro = report.pop("micro avg")
        for key in ("macro avg", "weighted avg"):
            report.pop(key, None)
        scores = {
            "precision": float(micro["precision"]),
            "recall": float(micro["recall"]),
            "f1": float(micro["f1-score"]),
            "token_accuracy": float(accuracy_score(references, predictions)),
        }
        for entity_type, values in sorted(report.items()):
            scores[f"{entity_type}_f1"] = float(values["f1-score"])
        return scores
