"""``regression``: one float per text or text pair (sentiment intensity, semantic similarity).

Targets are used as they are in the data, not scaled: the head is trained with MSE on the data's own scale and
predicts on it (as transformers' ``problem_type="regression"`` heads and run_glue.py's STS-B do).
"""

from __future__ import annotations

import math
from typing import Any

import datasets
import numpy as np
import torch

from ..configuration_multitask import TaskSpec
from ..data import _LabelError
from ..metrics import RegressionMetric
from . import register_task_type
from .sequence import SequenceTaskType


@register_task_type
class RegressionTaskType(SequenceTaskType):
    """One output, MSE loss; scored by ``pearson`` (main), ``spearmanr`` and ``mse``; ``predict`` gives the float;
    the pipeline ``{"score": float}`` (the mean over windows for a text that needed several, with ``"windows"``)."""

    name = "regression"
    problem_type = "regression"
    metrics = ("pearson", "spearmanr", "mse")
    default_main_metric = "pearson"
    lower_is_better = frozenset({"mse"})

    def class_names(self, feature: Any) -> list[str] | None:
        return None

    def encode_label(self, spec: TaskSpec, value: Any, class_names: list[str] | None) -> float:
        if value is None or (isinstance(value, str) and not value.strip()):
            raise _LabelError("missing label")
        if isinstance(value, str):
            # One bad cell makes a CSV reader keep the whole column as strings: the numbers in it are still numbers,
            # so that only the bad row is named.
            try:
                value = float(value)
            except ValueError:
                raise _LabelError(f"expected a number (a regression target), got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _LabelError(f"expected a number (a regression target), got {type(value).__name__} {value!r}")
        if not math.isfinite(value):
            raise _LabelError(f"the target {value!r} is not a finite number")
        return float(value)

    def label_feature(self, spec: TaskSpec) -> Any:
        return datasets.Value("float32")

    def logits_for_metrics(self, spec: TaskSpec, logits: torch.Tensor) -> torch.Tensor:
        return logits.float().squeeze(-1)

    def compute_metrics(
        self, spec: TaskSpec, predictions: np.ndarray, label_ids: np.ndarray, dataset: datasets.Dataset
    ) -> dict[str, float]:
        return RegressionMetric().compute(predictions=predictions.reshape(-1).tolist(),
                                          references=label_ids.reshape(-1).tolist())

    def predictions(self, spec: TaskSpec, outputs: np.ndarray, dataset: datasets.Dataset) -> list[float]:
        return [float(value) for value in outputs.reshape(-1)]

    def pipeline_scores(self, spec: TaskSpec, logits: torch.Tensor) -> torch.Tensor:
        return logits.float()

    def pipeline_result(self, spec: TaskSpec, scores: torch.Tensor, windows: int, **options: Any) -> dict[str, Any]:
        result: dict[str, Any] = {"score": float(scores[0])}
        if windows > 1:
            result["windows"] = windows
        return result

    def card_labels(self, spec: TaskSpec) -> str:
        return "one score (targets as in the data, not scaled)"

    def scoring(self, spec: TaskSpec) -> str:
        return ("Pearson's correlation of the predicted with the true scores (Spearman's and the MSE are reported as "
                "well)")

    def snippet(self, spec: TaskSpec) -> str:
        return "out.item()"
