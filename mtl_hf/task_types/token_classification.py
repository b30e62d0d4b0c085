"""``ner``: one tag per word (named entities in any tag scheme, or prefix-less tags such as part-of-speech).

Rows are pre-split words with one tag each (a JSON list, or a CoNLL column file). Each word's tag is trained and
read at its first sub-token; the tag scheme (IOB2, IOBES, BILOU, or IO for prefix-less tags) is detected from the
data when it is loaded, IOB1 is converted to IOB2, and tasks are scored with seqeval on words (entity F1), or per
word (IO). The pipeline groups the words' tags into spans with character offsets.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from typing import Any

import datasets
import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from ..configuration_multitask import OUTSIDE_TAG, TAG_SCHEMES, TaskSpec
from ..data import (
    _CONVERTED_COLUMN,
    _TRUNCATED_COLUMN,
    NUM_WORDS_COLUMN,
    TASK_COLUMN,
    WORD_IDS_COLUMN,
    _class_label_names,
    _iob2_begin_ids,
    _label_id,
    _LabelError,
    _resolve_label_list,
    map_split,
    _Rows,
    _to_iob2,
    _with_tag_scheme,
    align_labels_with_tokens,
    continuation_label_ids,
)
from ..metrics import SeqevalMetric
from ..pipeline import _check_scheme, _parse_tag, group_entities
from ..tokenization import encode_words
from . import register_task_type
from .base import PipelineState, SplitContext, SplitEncoding, TaskType

logger = logging.getLogger(__name__)

# What `predict` gives a word that has no prediction (it yields no sub-token, or truncation cut it off).
UNPREDICTED_TAG = OUTSIDE_TAG
# A tag that carries a scheme prefix (B-, I-, E-, S-, L-, U-), as seqeval reads it.
_SCHEME_PREFIX = re.compile(r"^[BIESLU]-")


@register_task_type
class TokenClassificationTaskType(TaskType):
    """Token classification: softmax over the tags at every word's first sub-token, cross-entropy loss; entity
    ``f1`` (main; ``token_accuracy`` for IO tags), precision, recall and per-type F1; ``predict`` gives one tag per
    input word; the pipeline a list of entity spans ``{"entity_group", "score", "word", "start", "end"}``."""

    name = "ner"
    metrics = ("precision", "recall", "f1", "token_accuracy")
    default_main_metric = "f1"
    pipeline_tag = "token-classification"

    # ---- labels and data ------------------------------------------------------------------------------------------

    def resolve_labels(self, spec: TaskSpec, raw: datasets.DatasetDict) -> TaskSpec:
        labels, derived = _resolve_label_list(
            spec, raw, _class_label_names, lambda value: value if isinstance(value, list) else [value]
        )
        return _with_tag_scheme(dataclasses.replace(spec, labels=labels), raw, labels_derived=derived)

    def encode_split(self, context: SplitContext, dataset: datasets.Dataset) -> SplitEncoding:
        spec, split, label_column = context.spec, context.split, context.label_column
        ids = datasets.List(datasets.Value("int64"))
        use_continuation = context.label_all_tokens and split == "train"
        encoded, truncated = map_split(
            context,
            dataset,
            _encode_ner,
            {
                "tokenizer": context.tokenizer,
                "rows": context.rows,
                "text_column": spec.text_column_name,
                "label_column": label_column,
                "label2id": spec.label2id,
                "class_names": _class_label_names(dataset.features[label_column]) if label_column else None,
                "max_length": context.max_length,
                "continuation": continuation_label_ids(spec.labels) if use_continuation else None,
                "iob2": _iob2_begin_ids(spec.labels) if spec.tag_scheme in (None, "IOB2") else None,
            },
            columns={WORD_IDS_COLUMN: ids, NUM_WORDS_COLUMN: datasets.Value("int64"),
                     _CONVERTED_COLUMN: datasets.Value("int64")},
            label_feature=ids,
        )
        if truncated:
            logger.warning(
                "task %r, split %r: %d of %d sentences truncated to max_seq_length=%d "
                "(their cut-off words are not trained or scored)",
                spec.name, split, truncated, len(encoded), context.max_length,
            )
        converted = sum(encoded[_CONVERTED_COLUMN])
        if converted:
            logger.warning(
                "task %r, split %r: converted IOB1 to IOB2: %d of %d tags changed from I- to B- "
                "(an I- tag that starts an entity)",
                spec.name, split, converted, sum(encoded[NUM_WORDS_COLUMN]),
            )
        return SplitEncoding(encoded.remove_columns(_CONVERTED_COLUMN), truncated)

    # ---- metrics --------------------------------------------------------------------------------------------------

    def metric_names(self, spec: TaskSpec) -> list[str]:
        """Per-type (span schemes) or per-tag (IO) ``<X>_f1`` scores are reported only for the types seen in an
        evaluation's references or predictions; this lists every one the task's labels allow."""
        if not spec.labels:
            raise ValueError(f"Task {spec.name!r}: labels are not set; the per-type metrics of a NER task follow them")
        if spec.tag_scheme == "IO":
            per_type = sorted(set(spec.labels) - {OUTSIDE_TAG})
            names = ["loss", "token_accuracy", "macro_f1"]
        else:
            # seqeval's entity type of a tag: what follows the prefix letter, without the '-' around it.
            per_type = sorted({label[1:].strip("-") or "_" for label in spec.labels if _SCHEME_PREFIX.match(label)})
            names = ["loss", *self.metrics]
        return list(dict.fromkeys(names + [f"{name}_f1" for name in per_type]))

    def main_metric(self, spec: TaskSpec) -> str:
        """Entity ``f1``; ``token_accuracy`` for prefix-less tag sets, which delimit no entities."""
        return spec.main_metric or ("token_accuracy" if spec.tag_scheme == "IO" else self.default_main_metric)

    def compute_metrics(
        self, spec: TaskSpec, predictions: np.ndarray, label_ids: np.ndarray, dataset: datasets.Dataset
    ) -> dict[str, float]:
        id2label = spec.id2label
        keep = label_ids != -100
        references = [[id2label[int(i)] for i in row[mask]] for row, mask in zip(label_ids, keep)]
        predicted = [[id2label[int(i)] for i in row[mask]] for row, mask in zip(predictions, keep)]
        return SeqevalMetric().compute(predictions=predicted, references=references, scheme=spec.tag_scheme or "IOB2")

    # ---- predictions ----------------------------------------------------------------------------------------------

    def predictions(self, spec: TaskSpec, outputs: np.ndarray, dataset: datasets.Dataset) -> list[list[str]]:
        """One tag per input word, read at its first sub-token; a word without a prediction (it yields no
        sub-token, or truncation cut it off) gets ``O``."""
        id2label = spec.id2label
        word_ids_per_row = dataset[WORD_IDS_COLUMN]
        if NUM_WORDS_COLUMN in dataset.column_names:
            num_words = dataset[NUM_WORDS_COLUMN]
        else:  # data made before the column existed: words after the last predicted one are unknown
            num_words = [max(word_ids, default=-1) + 1 for word_ids in word_ids_per_row]
        tags_per_sentence = []
        for row, word_ids, count in zip(outputs, word_ids_per_row, num_words):
            tags = [UNPREDICTED_TAG] * count
            previous = -1
            for position, word in enumerate(word_ids):
                if word >= 0 and word != previous:  # the first sub-token of each word carries its tag
                    tags[word] = id2label[int(row[position])]
                previous = word
            tags_per_sentence.append(tags)
        return tags_per_sentence

    def prediction_file(self, spec: TaskSpec, predictions: list[list[str]], dataset: datasets.Dataset) -> str:
        """One line of space-separated tags per sentence, as run_ner.py writes them."""
        return "".join(" ".join(tags) + "\n" for tags in predictions)

    # ---- pipeline -------------------------------------------------------------------------------------------------

    def check_servable(self, spec: TaskSpec) -> None:
        """The pipeline groups tags into spans by the task's scheme: labels that do not fit it are refused."""
        try:
            scheme = _check_scheme(spec.tag_scheme)
            for label in spec.labels:
                _parse_tag(label, scheme)
        except ValueError as err:
            raise ValueError(
                f"Task {spec.name!r}: {err}. Set the task's 'tag_scheme' in config.json to the scheme of its "
                f"labels ({', '.join(TAG_SCHEMES)})"
            ) from err

    def pipeline_state(self, spec: TaskSpec) -> PipelineState:
        return _WordPredictions(spec)

    # ---- model card -----------------------------------------------------------------------------------------------

    def scoring(self, spec: TaskSpec) -> str:
        scheme = spec.tag_scheme or "IOB2"  # models saved before tag schemes were recorded are IOB2
        if scheme == "IO":
            return ("the share of words given the right tag: the tags have no B-/I- prefixes, so there are no entity "
                    "spans to score (per-tag F1 is reported as well)")
        return (f"entity-level F1 with seqeval on words, strict {scheme}: an entity counts only with its exact span "
                "and type (per-type F1 is reported as well)")

    def snippet(self, spec: TaskSpec) -> str:
        return "[task.id2label[out[first_piece[w]].argmax(-1).item()] for w in range(len(words))]"


class _WordPredictions(PipelineState):
    """Per word of a text: the prediction of the window that gives it the most context (distance to the nearest cut
    window edge; on a tie, the earlier window), read at the word's first sub-token."""

    def __init__(self, spec: TaskSpec) -> None:
        self.spec = spec
        self.words: list[tuple[float, int, float] | None] | None = None  # (rank, label id, probability)

    def add(self, scores: torch.Tensor, word_ids: list[int | None], window: tuple[int, int], num_words: int) -> None:
        if self.words is None:
            self.words = [None] * num_words
        start, end = window
        positions: list[int] = []
        word_indices: list[int] = []
        ranks: list[float] = []
        seen: set[int] = set()
        for position, word_id in enumerate(word_ids):
            if word_id is None or word_id in seen:
                continue
            seen.add(word_id)
            index = start + word_id
            left = index - start if start > 0 else math.inf
            right = end - 1 - index if end < num_words else math.inf
            positions.append(position)
            word_indices.append(index)
            ranks.append(min(left, right))
        if not positions:
            return
        best, labels = scores[positions].max(dim=-1)
        for index, rank, label, score in zip(word_indices, ranks, labels.tolist(), best.tolist()):
            current = self.words[index]
            if current is None or rank > current[0]:
                self.words[index] = (rank, label, score)

    def result(self, text: str, words: list[tuple[str, int, int]], **options: Any) -> list[dict[str, Any]]:
        labels, scores = [], []
        for prediction in self.words or [None] * len(words):
            if prediction is None:  # cannot happen with a consistent tokenizer; be safe: outside entities
                labels.append(OUTSIDE_TAG)
                scores.append(0.0)
            else:
                labels.append(self.spec.id2label[prediction[1]])
                scores.append(prediction[2])
        return group_entities(text, words, labels, scores, self.spec.tag_scheme)


def _lost_words(kept_word_ids: list[int | None], overflowing: list[Any]) -> bool:
    """Whether truncation cut off a word entirely (so it is neither trained nor scored).

    The fast tokenizer keeps what truncation removed as overflowing encodings. A word whose first sub-token was kept
    still has its label, so only words absent from the kept part count; words that yield no sub-token at all appear
    in neither part and rightly do not count.
    """
    kept = set(kept_word_ids)
    return any(w is not None and w not in kept for part in overflowing for w in part.word_ids)


def _encode_ner(
    batch: dict[str, list],
    indices: list[int],
    *,
    tokenizer: PreTrainedTokenizerBase,
    rows: _Rows,
    text_column: str,
    label_column: str | None,
    label2id: dict[str, int],
    class_names: list[str] | None,
    continuation: list[int] | None,
    iob2: tuple[list[str | None], dict[int, int]] | None,
    max_length: int,
) -> dict[str, list]:
    """Validate and tokenize a batch of pre-split sentences, aligning word tags to sub-tokens.

    With ``iob2`` (see :func:`_iob2_begin_ids`), I- tags that start an entity become B- tags (IOB1 -> IOB2); the
    number changed per sentence goes to the ``_converted`` column for the caller's count.
    """
    sentences: list[list[str]] = []
    sentence_labels: list[list[int]] = []
    converted: list[int] = []
    for position, row in enumerate(indices):
        words = batch[text_column][position]
        if words is None:
            raise rows.error(row, text_column, "missing tokens")
        if not isinstance(words, list):
            raise rows.error(row, text_column, f"expected a list of words, got {type(words).__name__} {words!r}")
        if not words:
            raise rows.error(row, text_column, "empty token list")
        for word_index, word in enumerate(words):
            if not isinstance(word, str):
                raise rows.error(row, text_column, f"word {word_index} is {type(word).__name__} {word!r}, not a string")
        sentences.append(words)
        if label_column is None:
            converted.append(0)
            continue
        tags = batch[label_column][position]
        if tags is None:
            raise rows.error(row, label_column, "missing label")
        if not isinstance(tags, list):
            raise rows.error(row, label_column, f"expected a list of tags, got {type(tags).__name__} {tags!r}")
        if len(tags) != len(words):
            raise rows.error(row, label_column, f"{len(tags)} tags for {len(words)} tokens")
        tag_ids: list[int] = []
        for word_index, tag in enumerate(tags):
            try:
                tag_ids.append(_label_id(tag, label2id, class_names))
            except _LabelError as err:
                raise rows.error(row, label_column, str(err), word=word_index) from None
        converted.append(_to_iob2(tag_ids, *iob2) if iob2 else 0)
        sentence_labels.append(tag_ids)

    encoding = encode_words(tokenizer, sentences, truncation=True, max_length=max_length)
    output = dict(encoding)
    output[TASK_COLUMN] = [rows.task] * len(sentences)
    all_word_ids = [encoding.word_ids(i) for i in range(len(sentences))]
    output[WORD_IDS_COLUMN] = [[-1 if w is None else w for w in word_ids] for word_ids in all_word_ids]
    output[NUM_WORDS_COLUMN] = [len(words) for words in sentences]
    output[_TRUNCATED_COLUMN] = [
        _lost_words(word_ids, encoding.encodings[i].overflowing) for i, word_ids in enumerate(all_word_ids)
    ]
    output[_CONVERTED_COLUMN] = converted
    if label_column is not None:
        output["labels"] = [
            align_labels_with_tokens(word_ids, labels, continuation)
            for word_ids, labels in zip(all_word_ids, sentence_labels)
        ]
    return output


