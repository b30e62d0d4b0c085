"""``classification``: one label per text or text pair (topics, sentiment, NLI, paraphrase)."""

from __future__ import annotations

import dataclasses
from typing import Any

import datasets
import numpy as np
import torch

from ..configuration_multitask import TaskSpec
from ..data import _label_id, _resolve_label_list
from ..metrics import ClassificationMetric
from . import register_task_type
from .sequence import SequenceTaskType


@register_task_type
class ClassificationTaskType(SequenceTaskType):
    """Single-label classification: softmax over the labels, cross-entropy loss; scored by ``accuracy`` (main) and
    ``macro_f1``; ``predict`` gives the label's name; the pipeline ``{"label", "score"}`` (the label's probability,
    with ``"windows": n`` for a text that needed several windows)."""

    name = "classification"
    problem_type = "single_label_classification"
    metrics = ("accuracy", "macro_f1")
    default_main_metric = "accuracy"

    def resolve_labels(self, spec: TaskSpec, raw: datasets.DatasetDict) -> TaskSpec:
        labels, _ = _resolve_label_list(spec, raw, self.class_names, lambda value: [value])
        return dataclasses.replace(spec, labels=labels)

    def encode_label(self, spec: TaskSpec, value: Any, class_names: list[str] | None) -> int:
        return _label_id(value, spec.label2id, class_names)

    def label_feature(self, spec: TaskSpec) -> Any:
        return datasets.Value("int64")

    def compute_metrics(
        self, spec: TaskSpec, predictions: np.ndarray, label_ids: np.ndarray, dataset: datasets.Dataset
    ) -> dict[str, float]:
        return ClassificationMetric().compute(predictions=predictions.tolist(), references=label_ids.tolist())

    def predictions(self, spec: TaskSpec, outputs: np.ndarray, dataset: datasets.Dataset) -> list[str]:
        return [spec.id2label[int(i)] for i in outputs]

    def pipeline_result(self, spec: TaskSpec, scores: torch.Tensor, windows: int, **options: Any) -> dict[str, Any]:
        index = int(scores.argmax())
        result: dict[str, Any] = {"label": spec.id2label[index], "score": float(scores[index])}
        if windows > 1:
            result["windows"] = windows
        return result

    def scoring(self, spec: TaskSpec) -> str:
        return "the share of examples given the right label (macro-F1 is reported as well)"

    def snippet(self, spec: TaskSpec) -> str:
        return "task.id2label[out.argmax(-1).item()]"

