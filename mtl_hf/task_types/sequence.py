"""Shared behaviour of the types with one output vector per input (classification, regression, multilabel).

They read a text, or a pair of texts (``text_pair_column_name``), encode it the way the pipeline does (words from
``split_words``; pairs with the tokenizer's pair encoding and ``longest_first`` truncation), and differ only in what
a label is, how outputs are scored and what the pipeline returns: a subclass implements :meth:`encode_label`,
:meth:`label_feature`, the metrics and predictions, and :meth:`pipeline_result`.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import datasets
import torch
from transformers import PreTrainedTokenizerBase

from ..configuration_multitask import TaskSpec
from ..data import _TRUNCATED_COLUMN, TASK_COLUMN, _LabelError, _Rows, map_split
from ..tokenization import encode_text_pairs, encode_texts
from .base import PipelineState, SplitContext, SplitEncoding, TaskType

logger = logging.getLogger(__name__)


class SequenceTaskType(TaskType):
    """A task with one output vector per input (text or text pair), read from the pooled encoder output."""

    def input_columns(self, spec: TaskSpec) -> list[str]:
        return [spec.text_column_name] + ([spec.text_pair_column_name] if spec.takes_pairs else [])

    def encode_label(self, spec: TaskSpec, value: Any, class_names: list[str] | None) -> Any:
        """One row's label as the model's target (raise ``_LabelError`` saying what is wrong with it)."""
        raise NotImplementedError

    def label_feature(self, spec: TaskSpec) -> Any:
        """The ``datasets`` feature of the encoded ``labels`` column."""
        raise NotImplementedError

    def class_names(self, feature: Any) -> list[str] | None:
        """The names of a ``ClassLabel`` label column (integer labels index them), else ``None``."""
        return list(feature.names) if isinstance(feature, datasets.ClassLabel) else None

    def encode_split(self, context: SplitContext, dataset: datasets.Dataset) -> SplitEncoding:
        spec, label_column = context.spec, context.label_column
        class_names = self.class_names(dataset.features[label_column]) if label_column else None
        encoded, truncated = map_split(
            context,
            dataset,
            _encode_rows,
            {
                "tokenizer": context.tokenizer,
                "rows": context.rows,
                "text_columns": self.input_columns(spec),
                "label_column": label_column,
                "to_label": functools.partial(self.encode_label, spec, class_names=class_names),
                "max_length": context.max_length,
                "skip_empty": context.split == "train",
            },
            columns={},
            label_feature=self.label_feature(spec),
        )
        what = "text pairs" if spec.takes_pairs else "texts"
        if truncated:
            logger.warning(
                "task %r, split %r: %d of %d %s truncated to max_seq_length=%d (the model sees only their first %d "
                "tokens%s)", spec.name, context.split, truncated, len(encoded), what, context.max_length,
                context.max_length, ", the longer text of a pair cut first" if spec.takes_pairs else "",
            )
        skipped = len(dataset) - len(encoded)
        columns = " or ".join(repr(column) for column in self.input_columns(spec))
        if skipped and not len(encoded):
            raise ValueError(
                f"{context.where}: the text (column {columns}) of every one of the {len(dataset)} rows is empty: "
                "nothing to train on"
            )
        if skipped:
            logger.warning("task %r, split %r: skipped %d of %d rows whose text (column %s) is empty",
                           spec.name, context.split, skipped, len(dataset), columns)
        return SplitEncoding(encoded, truncated, skipped)

    # ---- pipeline -------------------------------------------------------------------------------------------------

    def pipeline_state(self, spec: TaskSpec) -> PipelineState:
        return _MeanOverWindows(self, spec)

    def pipeline_result(self, spec: TaskSpec, scores: torch.Tensor, windows: int, **options: Any) -> Any:
        """The answer for a text from its windows' mean scores (``windows``: how many; 1 for a short text or a
        pair)."""
        raise NotImplementedError


class _MeanOverWindows(PipelineState):
    """A text's scores: the mean of its windows' score vectors (each window counts once)."""

    def __init__(self, task_type: SequenceTaskType, spec: TaskSpec) -> None:
        self.task_type, self.spec = task_type, spec
        self.total: torch.Tensor | None = None
        self.windows = 0

    def add(self, scores: torch.Tensor, word_ids: list[int | None], window: tuple[int, int], num_words: int) -> None:
        scores = scores.double()
        self.total = scores if self.total is None else self.total + scores
        self.windows += 1

    def result(self, text: str, words: list[tuple[str, int, int]], **options: Any) -> Any:
        return self.task_type.pipeline_result(self.spec, self.total / self.windows, self.windows, **options)


def _encode_rows(
    batch: dict[str, list],
    indices: list[int],
    *,
    tokenizer: PreTrainedTokenizerBase,
    rows: _Rows,
    text_columns: list[str],
    label_column: str | None,
    to_label: Any,
    max_length: int,
    skip_empty: bool,
) -> dict[str, list]:
    """Validate and tokenize a batch of rows as the pipeline encodes a text (``encode_texts``) or a pair
    (``encode_text_pairs``, truncating the longer text first).

    With ``skip_empty`` (train) rows with an empty text are left out (counted by the caller from the change in
    length); otherwise such a row is kept and encoded as the special tokens (and its other text) alone, so that it
    gets a prediction.
    """
    texts: list[list[str]] = [[] for _ in text_columns]
    labels: list[Any] = []
    for position, row in enumerate(indices):
        values = []
        for column in text_columns:
            text = batch[column][position]
            if text is None:
                raise rows.error(row, column, "missing text")
            if not isinstance(text, str):
                raise rows.error(row, column, f"expected a string, got {type(text).__name__} {text!r}")
            values.append(text)
        if skip_empty and not all(text.strip() for text in values):
            continue
        for column_texts, text in zip(texts, values):
            column_texts.append(text)
        if label_column is not None:
            try:
                labels.append(to_label(batch[label_column][position]))
            except _LabelError as err:
                raise rows.error(row, label_column, str(err)) from None
    if texts[0]:
        if len(texts) == 2:
            encoding = encode_text_pairs(tokenizer, texts[0], texts[1], truncation="longest_first",
                                         max_length=max_length)
        else:
            encoding = encode_texts(tokenizer, texts[0], truncation=True, max_length=max_length)
        output = dict(encoding)
        output[_TRUNCATED_COLUMN] = [bool(part.overflowing) for part in encoding.encodings]
    else:
        output = {name: [] for name in tokenizer.model_input_names}
        output[_TRUNCATED_COLUMN] = []
    output[TASK_COLUMN] = [rows.task] * len(texts[0])
    if label_column is not None:
        output["labels"] = labels
    return output
