"""Per-task metrics as `evaluate` metrics that ship with the package.

`evaluate.load("seqeval")` fetches its script from the Hub, which fails offline and pins us to whatever the Hub
serves; these classes implement the same `evaluate.Metric` API (`add_batch`, `compute`, distributed caching) and are
instantiated directly.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import datasets
import evaluate
from seqeval.metrics import accuracy_score, classification_report
from seqeval.scheme import BILOU, IOB2, IOBES
from sklearn.metrics import f1_score

from .configuration_multitask import OUTSIDE_TAG, TAG_SCHEMES, TaskSpec

_CLASSIFICATION_DESCRIPTION = "Accuracy and macro-averaged F1 of single-label classification."
_SEQEVAL_DESCRIPTION = (
    "Over word-level tag sequences: for tags that mark spans (IOB2, IOBES, BILOU), entity-level precision, recall "
    "and F1 (seqeval in strict mode with the task's scheme: an entity is right only if its type and its exact span "
    "are right) and word-level accuracy; for prefix-less tags (IO), word-level accuracy and per-tag F1."
)
# seqeval's scheme classes for the tag schemes that delimit entities; "IO" tags are scored per word instead.
_SEQEVAL_SCHEMES = {"IOB2": IOB2, "IOBES": IOBES, "BILOU": BILOU}


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
    """Word-level tag sequences scored according to the task's tag scheme (``compute(..., scheme=...)``).

    ``scheme`` "IOB2" (the default; ``None``, as stored by models saved before schemes were recorded, means the same),
    "IOBES" or "BILOU": seqeval in strict mode with that scheme gives ``precision``, ``recall``, ``f1`` (micro over
    entities) and ``<TYPE>_f1`` for every entity type in the references or predictions, plus ``token_accuracy``.
    "IO" (tags without prefixes, e.g. POS tags): ``token_accuracy``, and ``<TAG>_f1`` for every tag but "O" in the
    references or predictions, whose unweighted mean is ``macro_f1``; there are no spans, so no entity scores.
    """

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_SEQEVAL_DESCRIPTION,
            citation="",
            inputs_description="predictions and references: one list of tags per sentence, one tag per word.",
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("string")),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
        )

    def _compute(
        self, predictions: list[list[str]], references: list[list[str]], scheme: str | None = "IOB2"
    ) -> dict[str, float]:
        scheme = scheme or "IOB2"
        if scheme not in TAG_SCHEMES:
            raise ValueError(f"SeqevalMetric: unknown tag scheme {scheme!r}; expected one of {', '.join(TAG_SCHEMES)}")
        if scheme == "IO":
            return _per_tag_scores(predictions, references)
        report = classification_report(
            references, predictions, mode="strict", scheme=_SEQEVAL_SCHEMES[scheme], output_dict=True,
            zero_division=0,
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


def _per_tag_scores(predictions: list[list[str]], references: list[list[str]]) -> dict[str, float]:
    """Word-level scores of prefix-less tags: accuracy over all words, F1 per tag (one-vs-rest over words) for every
    tag but "O" seen in references or predictions, and their unweighted mean."""
    predicted = [tag for sentence in predictions for tag in sentence]
    gold = [tag for sentence in references for tag in sentence]
    if len(predicted) != len(gold):
        raise ValueError(f"SeqevalMetric: {len(predicted)} predicted tags for {len(gold)} reference tags")
    tags = sorted((set(gold) | set(predicted)) - {OUTSIDE_TAG})
    scores = {"token_accuracy": sum(p == g for p, g in zip(predicted, gold)) / len(gold) if gold else 0.0}
    per_tag = f1_score(gold, predicted, labels=tags, average=None, zero_division=0) if tags else []
    scores["macro_f1"] = float(sum(per_tag) / len(tags)) if tags else 0.0
    scores.update({f"{tag}_f1": float(value) for tag, value in zip(tags, per_tag)})
    return scores


def main_metric(spec: TaskSpec) -> str:
    """The metric that stands for a task in ``combined_score``, model selection and the model card: ``accuracy`` for
    classification, entity ``f1`` for NER, ``token_accuracy`` for prefix-less tag sets (which delimit no entities)."""
    if spec.type == "classification":
        return "accuracy"
    return "token_accuracy" if spec.tag_scheme == "IO" else "f1"


# A tag that carries a scheme prefix (B-, I-, E-, S-, L-, U-), as seqeval reads it.
_SCHEME_PREFIX = re.compile(r"^[BIESLU]-")


def metric_names(spec: TaskSpec) -> list[str]:
    """Every metric that evaluating task ``spec`` can report, without the ``<prefix>_<task>_`` of the reported key
    (``eval_ner_PER_f1`` -> ``PER_f1``): ``loss`` and the scores of :class:`ClassificationMetric` (``accuracy``,
    ``macro_f1``) or :class:`SeqevalMetric`. Per-type (span schemes) or per-tag (IO) ``<X>_f1`` scores are reported
    only for the types seen in an evaluation's references or predictions; this lists every one the task's labels
    allow, so it is the set of names that CAN appear (what ``metric_for_best_model`` may name). Keys that a user's
    ``compute_metrics`` adds are not included. For NER, ``spec.labels`` must be set (see ``resolve_labels``).
    """
    if spec.type == "classification":
        return ["loss", "accuracy", "macro_f1"]
    if not spec.labels:
        raise ValueError(f"Task {spec.name!r}: labels are not set; the per-type metrics of a NER task follow them")
    if spec.tag_scheme == "IO":
        per_type = sorted(set(spec.labels) - {OUTSIDE_TAG})
        names = ["loss", "token_accuracy", "macro_f1"]
    else:
        # seqeval's entity type of a tag: what follows the prefix letter, without the '-' around it.
        per_type = sorted({label[1:].strip("-") or "_" for label in spec.labels if _SCHEME_PREFIX.match(label)})
        names = ["loss", "precision", "recall", "f1", "token_accuracy"]
    return list(dict.fromkeys(names + [f"{name}_f1" for name in per_type]))
