"""``multilabel``: any number of labels per text (topics, question types, tags).

A row's labels are a list of label names (JSON), or one string of names separated by the task's
``label_delimiter`` (default ``,``; for CSV and TSV files); an empty list or string means no label. Each label gets
its own sigmoid output; a label is predicted when its probability reaches the task's ``threshold`` (default 0.5).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import datasets
import numpy as np
import torch

from ..configuration_multitask import TaskSpec
from ..data import _LabelError, _resolve_label_list
from ..metrics import MultiLabelMetric
from . import register_task_type
from .sequence import SequenceTaskType


def _number_name(value: int | float) -> str:
    """The label name a number read from a CSV cell stands for (``3`` and ``3.0`` -> ``"3"``)."""
    return str(int(value)) if float(value).is_integer() else str(value)


@register_task_type
class MultiLabelTaskType(SequenceTaskType):
    """One sigmoid per label, binary cross-entropy loss; scored by ``micro_f1`` (main), ``macro_f1`` and
    ``subset_accuracy`` at the task's threshold; ``predict`` gives the list of predicted labels; the pipeline a list
    of ``{"label", "score"}`` for the labels whose probability reaches the threshold, highest first (every label,
    each with ``"passed"``, with ``all_scores=True``)."""

    name = "multilabel"
    problem_type = "multi_label_classification"
    metrics = ("micro_f1", "macro_f1", "subset_accuracy")
    default_main_metric = "micro_f1"
    pipeline_options = frozenset({"all_scores"})

    def class_names(self, feature: Any) -> list[str] | None:
        if isinstance(feature, (datasets.Sequence, datasets.LargeList, datasets.List)):
            feature = feature.feature
        return list(feature.names) if isinstance(feature, datasets.ClassLabel) else None

    def _names(self, spec: TaskSpec, value: Any) -> list[Any]:
        """A row's labels as a list: a delimiter-separated string is split (blank parts dropped). A string written
        like a list (``'["a", "b"]'``, as a JSON or pandas list saved into a text cell) is refused: split at the
        delimiter it would give label names such as ``["a"``."""
        if isinstance(value, str):
            if value.strip().startswith("[") and value.strip().endswith("]"):
                raise _LabelError(
                    f"the labels {value!r} are a list written as a string; give a JSON list, or the names separated "
                    f"by the task's label_delimiter ({spec.label_delimiter!r})"
                )
            return [part.strip() for part in value.split(spec.label_delimiter) if part.strip()]
        return value

    def resolve_labels(self, spec: TaskSpec, raw: datasets.DatasetDict) -> TaskSpec:
        labels, _ = _resolve_label_list(
            spec, raw, self.class_names,
            lambda value: self._names(spec, value) if isinstance(value, (str, list)) else [value],
        )
        return dataclasses.replace(spec, labels=labels)

    def encode_label(self, spec: TaskSpec, value: Any, class_names: list[str] | None) -> list[float]:
        if value is None:
            raise _LabelError("missing labels (use [] or an empty string for a row without labels)")
        names = self._names(spec, value)
        if isinstance(names, (int, float)) and not isinstance(names, bool) and class_names is None:
            names = [names]  # a CSV column of label names that are all numbers ("3") is read as numbers
        if not isinstance(names, list):
            raise _LabelError(
                f"expected a list of labels or a {spec.label_delimiter!r}-separated string, got "
                f"{type(value).__name__} {value!r}"
            )
        target = [0.0] * spec.num_labels
        for name in names:
            if isinstance(name, int) and not isinstance(name, bool) and class_names is not None:
                if not 0 <= name < len(class_names):
                    raise _LabelError(f"label id {name} is out of range for {len(class_names)} labels")
                name = class_names[name]
            elif isinstance(name, (int, float)) and not isinstance(name, bool) and _number_name(name) in spec.label2id:
                name = _number_name(name)
            if not isinstance(name, str):
                raise _LabelError(f"expected label names (strings), got {type(name).__name__} {name!r}")
            if name not in spec.label2id:
                known = ", ".join(spec.labels[:20]) + (", ..." if spec.num_labels > 20 else "")
                raise _LabelError(f"unknown label {name!r}; the task's labels are {known}")
            target[spec.label2id[name]] = 1.0
        return target

    def label_feature(self, spec: TaskSpec) -> Any:
        return datasets.List(datasets.Value("float32"))

    def logits_for_metrics(self, spec: TaskSpec, logits: torch.Tensor) -> torch.Tensor:
        return (logits.float().sigmoid() >= spec.threshold).long()

    def compute_metrics(
        self, spec: TaskSpec, predictions: np.ndarray, label_ids: np.ndarray, dataset: datasets.Dataset
    ) -> dict[str, float]:
        return MultiLabelMetric().compute(predictions=predictions.astype(np.int64).tolist(),
                                          references=(label_ids > 0.5).astype(np.int64).tolist())

    def predictions(self, spec: TaskSpec, outputs: np.ndarray, dataset: datasets.Dataset) -> list[list[str]]:
        return [[spec.id2label[int(i)] for i in np.flatnonzero(row)] for row in outputs]

    def prediction_file(self, spec: TaskSpec, predictions: list[list[str]], dataset: datasets.Dataset) -> str:
        """``index<TAB>labels`` with the labels joined by the task's delimiter (empty when none passed)."""
        joined = [spec.label_delimiter.join(labels) for labels in predictions]
        return super().prediction_file(spec, joined, dataset)

    def pipeline_scores(self, spec: TaskSpec, logits: torch.Tensor) -> torch.Tensor:
        return logits.float().sigmoid()

    def pipeline_result(
        self, spec: TaskSpec, scores: torch.Tensor, windows: int, all_scores: bool = False, **options: Any
    ) -> list[dict[str, Any]]:
        ranked = sorted(((float(score), spec.id2label[i]) for i, score in enumerate(scores.tolist())), reverse=True)
        if all_scores:
            return [{"label": label, "score": score, "passed": score >= spec.threshold} for score, label in ranked]
        return [{"label": label, "score": score} for score, label in ranked if score >= spec.threshold]

    def card_labels(self, spec: TaskSpec) -> str:
        return super().card_labels(spec) + f" (any number per example; threshold {spec.threshold:g})"

    def scoring(self, spec: TaskSpec) -> str:
        return (f"micro-averaged F1 over all example x label decisions at probability threshold {spec.threshold:g} "
                "(macro-F1 and subset accuracy, every label of an example right, are reported as well)")

    def snippet(self, spec: TaskSpec) -> str:
        return "[task.id2label[i] for i, p in enumerate(out.sigmoid().tolist()) if p >= task.threshold]"
