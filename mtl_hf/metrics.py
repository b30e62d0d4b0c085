"""Per-task metrics as `evaluate` metrics that ship with the package.

`evaluate.load("seqeval")` fetches its script from the Hub, which fails offline and pins us to whatever the Hub
serves; these classes implement the same `evaluate.Metric` API (`add_batch`, `compute`, distributed caching) and are
instantiated directly.
"""

from __future__ import annotations

from collections.abc import Sequence

import datasets
import evaluate
import numpy as np
from seqeval.metrics import accuracy_score, classification_report
from seqeval.scheme import BILOU, IOB2, IOBES
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import f1_score
from torchmetrics.functional.text import squad

from .configuration_multitask import OUTSIDE_TAG, TAG_SCHEMES, TaskSpec
from .task_types import get_task_type

_CLASSIFICATION_DESCRIPTION = "Accuracy and macro-averaged F1 of single-label classification."
_REGRESSION_DESCRIPTION = "Pearson and Spearman correlation and mean squared error of predicted scores."
_MULTILABEL_DESCRIPTION = (
    "Micro- and macro-averaged F1 over per-label decisions, and subset accuracy (every label of an example right)."
)
_SEQEVAL_DESCRIPTION = (
    "Over word-level tag sequences: for tags that mark spans (IOB2, IOBES, BILOU), entity-level precision, recall "
    "and F1 (seqeval in strict mode with the task's scheme: an entity is right only if its type and its exact span "
    "are right) and word-level accuracy; for prefix-less tags (IO), word-level accuracy and per-tag F1."
)
_SQUAD_DESCRIPTION = (
    "SQuAD's exact match and F1 of predicted answer texts against each question's reference answers (the best "
    "over the references), after SQuAD's normalisation (lower case; punctuation, articles and extra whitespace "
    "removed); an empty text is no answer (SQuAD 2.0). As fractions in [0, 1] like every mtl_hf metric."
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


class RegressionMetric(evaluate.Metric):
    """`pearson`, `spearmanr` (correlations of predictions with references; 0.0 where either is constant, for which
    a correlation is undefined) and `mse`."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_REGRESSION_DESCRIPTION,
            citation="",
            inputs_description="predictions and references: one float per example.",
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
        )

    def _compute(self, predictions: Sequence[float], references: Sequence[float]) -> dict[str, float]:
        predicted, gold = np.asarray(predictions, dtype=np.float64), np.asarray(references, dtype=np.float64)
        if len(gold) == 0:
            return {"pearson": 0.0, "spearmanr": 0.0, "mse": 0.0}
        varies = len(gold) > 1 and np.ptp(predicted) > 0 and np.ptp(gold) > 0
        return {
            "pearson": float(pearsonr(predicted, gold)[0]) if varies else 0.0,
            "spearmanr": float(spearmanr(predicted, gold)[0]) if varies else 0.0,
            "mse": float(np.mean((predicted - gold) ** 2)),
        }


class MultiLabelMetric(evaluate.Metric):
    """`micro_f1` (F1 over all example x label decisions), `macro_f1` (unweighted mean of per-label F1 over the
    labels seen in references or predictions) and `subset_accuracy` (share of examples whose whole label set is
    right), from multi-hot 0/1 vectors."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_MULTILABEL_DESCRIPTION,
            citation="",
            inputs_description="predictions and references: one multi-hot 0/1 vector per example.",
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("int64")),
                    "references": datasets.Sequence(datasets.Value("int64")),
                }
            ),
        )

    def _compute(self, predictions: list[list[int]], references: list[list[int]]) -> dict[str, float]:
        predicted, gold = np.asarray(predictions, dtype=np.int64), np.asarray(references, dtype=np.int64)
        if gold.size == 0:
            return {"micro_f1": 0.0, "macro_f1": 0.0, "subset_accuracy": 0.0}
        seen = (predicted.sum(axis=0) + gold.sum(axis=0)) > 0
        per_label = f1_score(gold, predicted, average=None, zero_division=0)
        return {
            "micro_f1": float(f1_score(gold, predicted, average="micro", zero_division=0)),
            "macro_f1": float(per_label[seen].mean()) if seen.any() else 0.0,
            "subset_accuracy": float((predicted == gold).all(axis=1).mean()),
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


class SquadMetric(evaluate.Metric):
    """SQuAD ``exact_match`` and ``f1`` of answer texts (``predictions``: one text per question; ``references``: its
    reference answer texts, ``[""]`` for a question without an answer), computed by torchmetrics' implementation of
    the official SQuAD script, as fractions."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_SQUAD_DESCRIPTION,
            citation="",
            inputs_description="predictions: one answer text per question; references: its reference answer texts.",
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}
            ),
        )

    def _compute(self, predictions: list[str], references: list[list[str]]) -> dict[str, float]:
        if not predictions:
            return {"exact_match": 0.0, "f1": 0.0}
        scores = squad(
            [{"prediction_text": text, "id": str(i)} for i, text in enumerate(predictions)],
            [{"answers": {"text": list(answers), "answer_start": [0] * len(answers)}, "id": str(i)}
             for i, answers in enumerate(references)],
        )
        return {"exact_match": float(scores["exact_match"]) / 100, "f1": float(scores["f1"]) / 100}


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
    """The metric that stands for a task in ``combined_score``, model selection and the model card: the task's
    ``main_metric`` if the task file names one, else its type's default (``accuracy`` for classification, entity
    ``f1`` for NER, ``token_accuracy`` for prefix-less tag sets, ``pearson`` for regression, ``micro_f1`` for
    multilabel, ``f1`` for extractive QA)."""
    return get_task_type(spec).main_metric(spec)


def metric_names(spec: TaskSpec) -> list[str]:
    """Every metric that evaluating task ``spec`` can report, without the ``<prefix>_<task>_`` of the reported key
    (``eval_ner_PER_f1`` -> ``PER_f1``), ``loss`` included: the set of names ``metric_for_best_model`` may name.
    Per-type NER scores are listed for every type the task's labels allow, so ``spec.labels`` must be set for NER.
    Keys that a user's ``compute_metrics`` adds are not included."""
    return get_task_type(spec).metric_names(spec)
