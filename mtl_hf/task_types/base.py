"""The interface every task type implements (see :mod:`mtl_hf.task_types`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from ..configuration_multitask import TaskSpec

if TYPE_CHECKING:  # the data module imports this package; only type hints need it here
    import datasets
    from transformers import PreTrainedTokenizerBase

    from ..data import _Rows


@dataclass
class SplitEncoding:
    """What encoding one split gives back: the tokenized rows (columns: the tokenizer's model inputs, ``task``,
    ``labels`` where the split is labelled, and any type-specific bookkeeping), how many rows truncation cut, and how
    many input rows were left out (``None`` where the type never leaves rows out)."""

    dataset: "datasets.Dataset"
    truncated: int
    skipped: int | None = None


@dataclass
class SplitContext:
    """Everything a type needs to encode one split of a task (see :meth:`TaskType.encode_split`)."""

    spec: TaskSpec
    split: str
    rows: "_Rows"  # names a bad row with its file and line
    where: str  # "Task 't', split 's' (file)" for errors about the whole split
    tokenizer: "PreTrainedTokenizerBase"  # prepared (mtl_hf.tokenization.prepare_tokenizer)
    max_length: int
    label_column: str | None  # None: the split is unlabelled (only a test split may be)
    label_all_tokens: bool
    num_proc: int | None
    load_from_cache_file: bool


class PipelineState:
    """One text's predictions of one task, gathered window by window in ``MultiTaskPipeline``."""

    def add(self, scores: torch.Tensor, word_ids: list[int | None], window: tuple[int, int], num_words: int) -> None:
        """Add a window's scores (this task's ``pipeline_scores`` row for the window: ``(num_labels,)`` for a
        sequence head, ``(seq_len, num_labels)`` for a token head); ``word_ids`` map its positions to the window's
        words, which are words ``window[0]:window[1]`` of the text's ``num_words``."""
        raise NotImplementedError

    def result(self, text: str, words: list[tuple[str, int, int]], **options: Any) -> Any:
        """The pipeline's answer for the text (``words``: the text's words with character offsets)."""
        raise NotImplementedError


class TaskType:
    """One kind of task. Subclasses set the class attributes and implement the methods that raise here.

    ``name`` is the ``type`` of a task spec; ``metrics`` the names of the scores ``compute_metrics`` returns (beyond
    any that depend on the labels, see ``metric_names``); ``default_main_metric`` the one that stands for the task in
    ``combined_score`` unless the task file names another (``main_metric``); ``lower_is_better`` the metrics that
    cannot be a main metric, since ``combined_score`` is a mean of higher-is-better scores; ``pipeline_tag`` the
    Hub pipeline tag of the task in the model card; ``pipeline_options`` the keyword options its pipeline results
    take (``MultiTaskPipeline.__call__`` refuses any other); ``prediction_suffix`` the extension of its
    ``predict_results_<task>`` file; ``problem_type`` the ``problem_type`` of transformers' sequence classifiers
    that computes this type's loss (``mtl_hf.export`` writes it into an exported model's config), ``None`` for types
    without a sequence head.
    """

    name: ClassVar[str]
    metrics: ClassVar[tuple[str, ...]]
    default_main_metric: ClassVar[str]
    lower_is_better: ClassVar[frozenset[str]] = frozenset()
    pipeline_tag: ClassVar[str] = "text-classification"
    pipeline_options: ClassVar[frozenset[str]] = frozenset()
    prediction_suffix: ClassVar[str] = ".txt"
    problem_type: ClassVar[str | None] = None

    # ---- labels and data ------------------------------------------------------------------------------------------

    def resolve_labels(self, spec: TaskSpec, raw: "datasets.DatasetDict") -> TaskSpec:
        """``spec`` with whatever the data decides filled in (label names, tag scheme); by default unchanged."""
        return spec

    def input_columns(self, spec: TaskSpec) -> list[str]:
        """The columns every split needs besides the label column."""
        return [spec.text_column_name]

    def load_file(self, spec: TaskSpec, where: str, path: str, cache_dir: str | None) -> "datasets.Dataset | None":
        """Read a data file in a layout of this type's own (SQuAD's nested JSON for extractive QA), or ``None`` to
        leave it to datasets' JSON/CSV builders."""
        return None

    def encode_split(self, context: SplitContext, dataset: "datasets.Dataset") -> SplitEncoding:
        """Validate and tokenize one split with ``Dataset.map`` (batched, cached), naming any bad row."""
        raise NotImplementedError

    def first_rows(self, spec: TaskSpec, dataset: "datasets.Dataset", count: int) -> "datasets.Dataset":
        """The encoded rows of the split's first ``count`` input rows (``--max_*_samples``): by default the first
        ``count`` rows, one per input row."""
        return dataset.select(range(min(count, len(dataset))))

    # ---- metrics --------------------------------------------------------------------------------------------------

    def metric_names(self, spec: TaskSpec) -> list[str]:
        """Every metric evaluating the task can report (without the ``<prefix>_<task>_`` of the reported key)."""
        return ["loss", *self.metrics]

    def main_metric(self, spec: TaskSpec) -> str:
        """The metric that stands for the task in ``combined_score``, model selection and the card."""
        return spec.main_metric or self.default_main_metric

    def check_main_metric(self, spec: TaskSpec) -> None:
        """Refuse a ``main_metric`` that evaluation never reports or that is better when lower."""
        if spec.main_metric is None:
            return
        allowed = [name for name in self.metric_names(spec) if name != "loss" and name not in self.lower_is_better]
        if spec.main_metric not in allowed:
            raise ValueError(
                f"Task {spec.name!r}: field 'main_metric' is {spec.main_metric!r}; a {spec.type} task's main metric "
                f"is one of {', '.join(allowed)} (combined_score averages main metrics, so they must be "
                "higher-is-better)"
            )

    def logits_for_metrics(self, spec: TaskSpec, logits: torch.Tensor) -> torch.Tensor:
        """What evaluation keeps of a batch's logits (``preprocess_logits_for_metrics``): by default the arg-max id,
        so that no eval set's logits must fit in memory."""
        return logits.argmax(dim=-1)

    def compute_metrics(
        self, spec: TaskSpec, predictions: np.ndarray, label_ids: np.ndarray, dataset: "datasets.Dataset"
    ) -> dict[str, float]:
        """The task's scores from what ``logits_for_metrics`` kept and the collated labels, over a whole eval set
        (``dataset``, the encoded rows in the same order, for types that score whole inputs made of several rows)."""
        raise NotImplementedError

    # ---- predictions ----------------------------------------------------------------------------------------------

    def predictions(self, spec: TaskSpec, outputs: np.ndarray, dataset: "datasets.Dataset") -> list[Any]:
        """What ``logits_for_metrics`` kept, in label space: one prediction per row of ``dataset``, in order."""
        raise NotImplementedError

    def prediction_file(self, spec: TaskSpec, predictions: list[Any], dataset: "datasets.Dataset") -> str:
        """The text of ``predict_results_<task><prediction_suffix>`` for the predictions of ``dataset``'s rows: by
        default ``index<TAB>prediction`` per row, as run_glue.py writes it."""
        return "index\tprediction\n" + "".join(f"{i}\t{value}\n" for i, value in enumerate(predictions))

    # ---- pipeline -------------------------------------------------------------------------------------------------

    def pipeline_input(self, spec: TaskSpec) -> str:
        """What one pipeline input of this task is: ``"text"`` (a string), ``"text_pair"`` (``{"text",
        "text_pair"}``) or ``"question"`` (``{"question", "context"}``)."""
        return "text_pair" if spec.takes_pairs else "text"

    def pipeline_scores(self, spec: TaskSpec, logits: torch.Tensor) -> torch.Tensor:
        """A batch's logits as the scores the pipeline gathers (probabilities, or values for regression)."""
        return logits.float().softmax(dim=-1)

    def pipeline_state(self, spec: TaskSpec) -> PipelineState:
        """A fresh :class:`PipelineState` for one text."""
        raise NotImplementedError

    def check_servable(self, spec: TaskSpec) -> None:
        """Raise ``ValueError`` if the pipeline cannot serve this task as configured (checked when it is built)."""

    # ---- model card -----------------------------------------------------------------------------------------------

    def card_labels(self, spec: TaskSpec) -> str:
        """The task's outputs, for the card's task table."""
        return ", ".join(f"`{label}`" for label in spec.labels or [])

    def scoring(self, spec: TaskSpec) -> str:
        """What the task's main metric measures, in words."""
        raise NotImplementedError

    def snippet(self, spec: TaskSpec) -> str:
        """A Python expression for the card's transformers-only example that reads the prediction for one input
        from ``out`` (the task's logits for it) and ``task`` (its ``TaskSpec``); ``words`` are the input's words and
        ``first_piece[w]`` the position of word ``w``'s first sub-token."""
        raise NotImplementedError
