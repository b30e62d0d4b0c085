"""``extractive_qa``: the answer to a question is a span of its context (SQuAD; SQuAD 2.0 with unanswerable
questions through ``version_2_with_negative``), as transformers' ``run_qa.py`` and question-answering pipeline do it.

Rows hold a question, a context and (where labelled) SQuAD-style answers ``{"text": [...], "answer_start": [...]}``.
Each row is encoded as the raw question and context pair (:func:`mtl_hf.tokenization.encode_questions`), the context
cut into windows that overlap by ``doc_stride`` tokens (:func:`doc_stride`; half the room a long question leaves,
where that room is not more than the stride: :func:`_stride_groups`); a window is trained on the token positions of
the row's first answer, or on the first token (the CLS position) where the answer is not wholly inside it (counted
where no window holds it). A given ``answer_start``
that does not point at the answer's text is moved to the nearest place where the text occurs (counted in a warning);
an answer that does not occur in the context is an error naming the row.

Evaluation, ``predict`` and the pipeline read an answer the same way (:func:`best_answer`): over every window of a
row, the ``n_best_size`` best start and end positions inside the context, spans of at most ``max_answer_length``
tokens, the span with the highest start + end logit, mapped back to character offsets of the raw context; with
``version_2_with_negative``, no answer when the lowest null (CLS) score beats that span's by more than
``null_score_diff_threshold``. Scores: SQuAD's ``exact_match`` and ``f1`` (main), in [0, 1] like every other metric.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np
import torch
from datasets.exceptions import DatasetGenerationError
from transformers import PreTrainedTokenizerBase

from ..configuration_multitask import TaskSpec
from ..data import _TRUNCATED_COLUMN, TASK_COLUMN, _Rows, map_split
from ..metrics import SquadMetric
from ..tokenization import encode_questions
from . import register_task_type
from .base import SplitContext, SplitEncoding, TaskType

logger = logging.getLogger(__name__)

# Columns of an encoded split, one row per window: the input row it comes from (its index in the split and its `id`,
# the split's `id` column where it has one), each token's character span in the context ([-1, -1] outside the
# context), the context, and (labelled splits) the row's answer texts, which evaluation scores against.
EXAMPLE_ID_COLUMN = "example_id"
ID_COLUMN = "id"
OFFSETS_COLUMN = "offset_mapping"
CONTEXT_COLUMN = "context"
ANSWERS_COLUMN = "answer_texts"
_CORRECTED_COLUMN = "_corrected"
_SHORT_STRIDE_COLUMN = "_short_stride"
_UNPLACED_COLUMN = "_unplaced"
NO_ANSWER = ""


@dataclass
class Answer:
    """An answer read from a row's windows: character offsets into the context (``start == end == 0`` and an empty
    text for no answer), the start + end logit it won with, and its probability (start x end softmax over the
    window's context tokens, and CLS where questions may have no answer, as transformers' pipeline scores it)."""

    text: str
    start: int
    end: int
    logit_score: float
    probability: float


def _softmax(scores: np.ndarray, keep: np.ndarray) -> np.ndarray:
    masked = np.where(keep, scores, -np.inf)
    exp = np.exp(masked - masked.max())
    return exp / exp.sum()


def best_answer(spec: TaskSpec, context: str, windows: list[tuple[np.ndarray, np.ndarray]]) -> Answer:
    """The answer to one row from all its windows: ``(logits (positions, 2), offsets (positions, 2))`` each, offsets
    ``-1`` outside the context (see the module docstring for the search)."""
    best: tuple[float, int, int, int] | None = None  # (score, window, start token, end token)
    null: tuple[float, int] | None = None  # (lowest CLS score, window)
    for index, (logits, offsets) in enumerate(windows):
        logits = logits[: len(offsets)].astype(np.float64)
        start, end = logits[:, 0], logits[:, 1]
        inside = offsets[:, 0] >= 0
        cls_score = start[0] + end[0]
        if null is None or cls_score < null[0]:
            null = (cls_score, index)
        if not inside.any():
            continue
        k = min(spec.n_best_size, int(inside.sum()))
        starts = np.argsort(np.where(inside, start, -np.inf))[::-1][:k]
        ends = np.argsort(np.where(inside, end, -np.inf))[::-1][:k]
        length = ends[None, :] - starts[:, None] + 1
        scores = np.where((length >= 1) & (length <= spec.max_answer_length),
                          start[starts][:, None] + end[ends][None, :], -np.inf)
        i, j = np.unravel_index(int(np.argmax(scores)), scores.shape)
        if np.isfinite(scores[i, j]) and (best is None or scores[i, j] > best[0]):
            best = (float(scores[i, j]), index, int(starts[i]), int(ends[j]))
    allow_null = bool(spec.version_2_with_negative)
    if best is None or (allow_null and null is not None and null[0] - best[0] > spec.null_score_diff_threshold):
        if null is None:
            return Answer(NO_ANSWER, 0, 0, float("-inf"), 0.0)
        logits, offsets = windows[null[1]]
        keep = (offsets[:, 0] >= 0) | (np.arange(len(offsets)) == 0)
        probability = _softmax(logits[: len(offsets), 0], keep)[0] * _softmax(logits[: len(offsets), 1], keep)[0]
        return Answer(NO_ANSWER, 0, 0, float(null[0]), float(probability))
    score, index, first, last = best
    logits, offsets = windows[index]
    keep = offsets[:, 0] >= 0
    if allow_null:
        keep = keep | (np.arange(len(offsets)) == 0)
    probability = (_softmax(logits[: len(offsets), 0].astype(np.float64), keep)[first]
                   * _softmax(logits[: len(offsets), 1].astype(np.float64), keep)[last])
    start_char, end_char = int(offsets[first][0]), int(offsets[last][1])
    return Answer(context[start_char:end_char], start_char, end_char, score, float(probability))


def doc_stride(spec: TaskSpec, max_length: int) -> int:
    """The tokens consecutive windows of ``max_length`` share: the task's ``doc_stride``, or where it is unset
    min(128, half the window), as transformers' QA pipeline chooses it."""
    return spec.doc_stride if spec.doc_stride is not None else min(128, max_length // 2)


def _windows_per_row(dataset: datasets.Dataset) -> list[list[int]]:
    """The windows (rows of the encoded split) of each input row, in the split's order."""
    grouped: dict[int, list[int]] = {}
    for window, example in enumerate(dataset[EXAMPLE_ID_COLUMN]):
        grouped.setdefault(example, []).append(window)
    return [grouped[example] for example in sorted(grouped)]


@register_task_type
class ExtractiveQATaskType(TaskType):
    """Extractive question answering: start and end logits per token, the mean of the start and end cross-entropy
    (transformers' QA loss), SQuAD ``exact_match`` and ``f1``; ``predict`` gives one answer text per input row and
    writes ``predict_results_<task>.json`` (id -> answer, as run_qa.py); the pipeline takes
    ``{"question", "context"}`` and returns ``{"answer", "score", "start", "end"}``."""

    name = "extractive_qa"
    metrics = ("exact_match", "f1")
    default_main_metric = "f1"
    pipeline_tag = "question-answering"
    prediction_suffix = ".json"

    # ---- data -----------------------------------------------------------------------------------------------------

    def input_columns(self, spec: TaskSpec) -> list[str]:
        return [spec.question_column_name, spec.context_column_name]

    def load_file(self, spec: TaskSpec, where: str, path: str, cache_dir: str | None) -> datasets.Dataset | None:
        """A JSON document in SQuAD's nested layout (``{"data": [{"title", "paragraphs": [{"context", "qas": [{"id",
        "question", "answers"}]}]}]}``), or JSON lines of such articles, is read as one row per question, in the
        columns the task names; without the answers column where no question has ``answers`` (unlabelled data)."""
        articles = squad_articles(path) if path.lower().endswith((".json", ".jsonl")) else None
        if articles is None:
            return None
        # A file whose questions carry no "answers" at all is unlabelled (data to predict on).
        labelled = any(isinstance(qa, dict) and "answers" in qa for article in articles
                       for paragraph in article.get("paragraphs") or [] if isinstance(paragraph, dict)
                       for qa in paragraph.get("qas") or [])
        stat = os.stat(path)
        features = {
            ID_COLUMN: datasets.Value("string"), "title": datasets.Value("string"),
            spec.context_column_name: datasets.Value("string"), spec.question_column_name: datasets.Value("string"),
        }
        if labelled:
            features[spec.answers_column_name] = {"text": datasets.List(datasets.Value("string")),
                                                  "answer_start": datasets.List(datasets.Value("int64"))}
        try:
            return datasets.Dataset.from_generator(
                read_squad, features=datasets.Features(features), cache_dir=cache_dir,
                gen_kwargs={"path": os.path.abspath(path), "mtime_ns": stat.st_mtime_ns, "size": stat.st_size,
                            "columns": (spec.context_column_name, spec.question_column_name,
                                        spec.answers_column_name if labelled else None)},
            )
        except DatasetGenerationError as err:
            cause = err.__cause__ or err  # read_squad's ValueError names the file and the place in it
            raise ValueError(f"{where}: {cause}") from cause

    def encode_split(self, context: SplitContext, dataset: datasets.Dataset) -> SplitEncoding:
        spec, split = context.spec, context.split
        if context.tokenizer.padding_side != "right":
            raise ValueError(f"{context.where}: extractive QA needs a tokenizer that pads on the right (its first "
                             f"token is the no-answer position); this one pads on the {context.tokenizer.padding_side}")
        labelled = context.label_column is not None
        ids = datasets.List(datasets.Value("int64"))
        columns: dict[str, Any] = {
            EXAMPLE_ID_COLUMN: datasets.Value("int64"),
            ID_COLUMN: datasets.Value("string"),
            OFFSETS_COLUMN: datasets.List(ids),
            CONTEXT_COLUMN: datasets.Value("string"),
            _CORRECTED_COLUMN: datasets.Value("int64"),
            _SHORT_STRIDE_COLUMN: datasets.Value("bool"),
            _UNPLACED_COLUMN: datasets.Value("bool"),
        }
        if labelled:
            columns[ANSWERS_COLUMN] = datasets.List(datasets.Value("string"))
        encoded, _ = map_split(
            context,
            dataset,
            _encode_qa,
            {
                "tokenizer": context.tokenizer,
                "rows": context.rows,
                "spec": spec,
                "answers_column": context.label_column,
                "id_column": ID_COLUMN if ID_COLUMN in dataset.column_names else None,
                "max_length": context.max_length,
            },
            columns=columns,
            label_feature=ids,
        )
        corrected = sum(encoded[_CORRECTED_COLUMN])
        if corrected:
            logger.warning(
                "task %r, split %r: %d answer_start offsets did not point at their answer text and were moved to the "
                "nearest place where the text occurs in the context", spec.name, split, corrected,
            )
        short = sum(encoded[_SHORT_STRIDE_COLUMN])
        if short:
            logger.warning(
                "task %r, split %r: %d questions leave no more than doc_stride=%d tokens for the context in windows "
                "of %d; their windows overlap by half the room they leave instead", spec.name, split, short,
                doc_stride(spec, context.max_length), context.max_length,
            )
        if len(encoded) > len(dataset):
            logger.info("task %r, split %r: %d rows make %d windows of at most %d tokens (doc_stride %d)",
                        spec.name, split, len(dataset), len(encoded), context.max_length,
                        doc_stride(spec, context.max_length))
        # No row is truncated: a context that does not fit is cut into windows, every one of which is kept.
        unplaced = sum(encoded[_UNPLACED_COLUMN])
        if unplaced:
            logger.warning(
                "task %r, split %r: the answer of %d of %d questions is wholly inside none of their windows (it is "
                "longer than the room a window of %d leaves for the context): every window of theirs is trained as "
                "'no answer' (the first token), as run_qa.py does", spec.name, split, unplaced, len(dataset),
                context.max_length,
            )
        return SplitEncoding(encoded.remove_columns([_CORRECTED_COLUMN, _SHORT_STRIDE_COLUMN, _UNPLACED_COLUMN]), 0)

    def first_rows(self, spec: TaskSpec, dataset: datasets.Dataset, count: int) -> datasets.Dataset:
        """Every window of the first ``count`` questions (run_qa.py's ``max_*_samples`` count examples too)."""
        return dataset.select([window for windows in _windows_per_row(dataset)[:count] for window in windows])

    # ---- metrics --------------------------------------------------------------------------------------------------

    def logits_for_metrics(self, spec: TaskSpec, logits: torch.Tensor) -> torch.Tensor:
        """The start and end logits themselves: answers are searched over all windows of a row once evaluation has
        gathered them (from every process)."""
        return logits.float()

    def compute_metrics(
        self, spec: TaskSpec, predictions: np.ndarray, label_ids: np.ndarray, dataset: datasets.Dataset
    ) -> dict[str, float]:
        answers = self.predictions(spec, predictions, dataset)
        gold_texts = dataset[ANSWERS_COLUMN]
        references = [gold_texts[windows[0]] or [NO_ANSWER] for windows in _windows_per_row(dataset)]
        return SquadMetric().compute(predictions=answers, references=references)

    # ---- predictions ----------------------------------------------------------------------------------------------

    def predictions(self, spec: TaskSpec, outputs: np.ndarray, dataset: datasets.Dataset) -> list[str]:
        """One answer text per input row (``""``: no answer), from ``outputs``: the logits of every window."""
        if len(outputs) != len(dataset):
            raise RuntimeError(f"Task {spec.name!r}: {len(outputs)} outputs for {len(dataset)} windows")
        offsets, contexts = dataset[OFFSETS_COLUMN], dataset[CONTEXT_COLUMN]
        answers = []
        for windows in _windows_per_row(dataset):
            read = [(np.asarray(outputs[window]), np.asarray(offsets[window]).reshape(-1, 2)) for window in windows]
            answers.append(best_answer(spec, contexts[windows[0]], read).text)
        return answers

    def prediction_file(self, spec: TaskSpec, predictions: list[str], dataset: datasets.Dataset) -> str:
        """``{id: answer}`` as run_qa.py's ``predict_predictions.json``: ids from the split's ``id`` column, else
        the row's index (also where ids repeat, with a warning: a JSON object would keep one answer per id)."""
        ids = dataset[ID_COLUMN]
        keys = [ids[windows[0]] for windows in _windows_per_row(dataset)]
        if len(set(keys)) < len(keys):
            logger.warning("task %r: the ids of %d of %d rows occur more than once; predict_results_%s.json is keyed "
                           "by row index instead", spec.name, len(keys) - len(set(keys)), len(keys), spec.name)
            keys = [str(row) for row in sorted(set(dataset[EXAMPLE_ID_COLUMN]))]
        return json.dumps(dict(zip(keys, predictions)), ensure_ascii=False, indent=2) + "\n"

    # ---- pipeline -------------------------------------------------------------------------------------------------

    def pipeline_input(self, spec: TaskSpec) -> str:
        return "question"

    def pipeline_scores(self, spec: TaskSpec, logits: torch.Tensor) -> torch.Tensor:
        return logits.float()

    def pipeline_answer(self, spec: TaskSpec, item: dict[str, str], windows: list[tuple[np.ndarray, np.ndarray]],
                        **options: Any) -> dict[str, Any]:
        """The pipeline's result for one ``{"question", "context"}`` input from its windows' ``(scores,
        offsets)``."""
        answer = best_answer(spec, item["context"], windows)
        return {"answer": answer.text, "score": answer.probability, "start": answer.start, "end": answer.end}

    def encoding_key(self, spec: TaskSpec) -> Any:
        """Tasks with the same key encode an input the same way, so one encoder pass serves them all."""
        return spec.doc_stride

    def pipeline_encode(
        self, spec: TaskSpec, tokenizer: PreTrainedTokenizerBase, items: list[dict[str, str]], max_length: int
    ) -> list[tuple[Any, list[tuple[int, np.ndarray]]]]:
        """The pipeline's encoding of ``{"question", "context"}`` inputs, as training encodes them: ``(encoding,
        windows)`` parts (padded tensors; per window, the input it belongs to and its offsets into the context, ``-1``
        outside the context, as long as the window without its padding), one part per window stride (see
        :func:`_stride_groups`, as in training), so that no input's windows depend on the others of the batch."""
        questions = [item["question"] for item in items]
        contexts = [item["context"] for item in items]
        for question, text in zip(questions, contexts):
            if not question.strip() or not text.strip():
                raise ValueError(f"Question {question[:80]!r}: the question and the context must not be empty")
        try:
            by_stride = _stride_groups(spec, tokenizer, questions, max_length)
        except _NoRoom as err:
            raise ValueError(f"Question {questions[err.position][:80]!r}: {err}") from None
        parts = []
        for part_stride, positions in by_stride.items():
            encoding = encode_questions(tokenizer, [questions[i] for i in positions], [contexts[i] for i in positions],
                                        max_length, part_stride, padding=True, return_tensors="pt")
            windows = []
            for window, source in enumerate(encoding["overflow_to_sample_mapping"].tolist()):
                inside = np.array([sequence == 1 for sequence in encoding.sequence_ids(window)])
                offsets = np.where(inside[:, None], encoding["offset_mapping"][window].numpy(), -1)
                windows.append((positions[source], offsets[: int(encoding["attention_mask"][window].sum())]))
            parts.append((encoding, windows))
        return parts

    # ---- model card -----------------------------------------------------------------------------------------------

    def card_labels(self, spec: TaskSpec) -> str:
        unanswerable = ", or no answer" if spec.version_2_with_negative else ""
        return f"a span of the context{unanswerable}"

    def scoring(self, spec: TaskSpec) -> str:
        return ("SQuAD F1: word overlap of the predicted answer with the best-matching reference answer, after "
                "SQuAD's normalisation (lower case, no punctuation, articles or extra spaces; `exact_match` too)")

    def snippet(self, spec: TaskSpec) -> str:
        """The best start + end over ``allowed`` spans (the card defines it: start <= end, both in the context), at
        most ``max_answer_length`` tokens long: one window's answer, without the n-best search over windows."""
        return ("(lambda i: context[offsets[i // len(offsets)][0]:offsets[i % len(offsets)][1]])(int((out[:, 0, None] "
                "+ out[None, :, 1]).masked_fill(~allowed | allowed.triu(task.max_answer_length), float('-inf'))"
                ".argmax()))")


def squad_articles(path: str) -> list[Any] | None:
    """The articles of a file in SQuAD's nested layout, or ``None`` for any other file: a JSON document ``{"data":
    [articles]}`` (SQuAD's own files), or JSON lines of one article each; an article is an object with
    ``paragraphs``. A JSON lines file of flat rows, or a file that is not valid JSON, is ``None`` (datasets' reader
    reads it, or says what is wrong)."""
    with open(path, encoding="utf-8-sig") as handle:
        text = handle.read()
    if not text.lstrip().startswith("{"):
        return None
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        try:
            articles = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError:
            return None
    else:
        articles = document.get("data") if isinstance(document, dict) else None
    is_nested = isinstance(articles, list) and bool(articles) and all(
        isinstance(article, dict) and "paragraphs" in article for article in articles)
    return articles if is_nested else None


def read_squad(path: str, mtime_ns: int, size: int, columns: tuple[str, str, str | None]
               ) -> Iterator[dict[str, Any]]:
    """One row per question of a file of SQuAD articles (:func:`squad_articles`): ``id``, ``title`` and the context,
    question and answers columns (``columns``; no answers column for unlabelled data, where it is ``None``); an
    unanswerable SQuAD 2.0 question has no answers. ``mtime_ns`` and ``size`` only key datasets'
    cache to the file's state."""
    context_column, question_column, answers_column = columns
    articles = squad_articles(path) or []
    if not any(paragraph.get("qas") for article in articles for paragraph in article.get("paragraphs") or []
               if isinstance(paragraph, dict)):
        raise ValueError(f"{path}: no questions in the file")
    for a, article in enumerate(articles):
        for p, paragraph in enumerate(article.get("paragraphs") or []):
            where = f"{path}: data[{a}].paragraphs[{p}]"
            if not isinstance(paragraph, dict) or not isinstance(paragraph.get("context"), str):
                raise ValueError(f"{where}: expected an object with a 'context' string")
            for q, qa in enumerate(paragraph.get("qas") or []):
                if not isinstance(qa, dict) or not isinstance(qa.get("question"), str):
                    raise ValueError(f"{where}.qas[{q}]: expected an object with a 'question' string")
                row = {
                    ID_COLUMN: str(qa.get("id", f"{a}.{p}.{q}")),
                    "title": str(article.get("title", "")),
                    context_column: paragraph["context"],
                    question_column: qa["question"],
                }
                if answers_column is None:  # unlabelled
                    yield row
                    continue
                if "answers" not in qa:
                    raise ValueError(f"{where}.qas[{q}]: no 'answers', which other questions of the file have (give "
                                     "unanswerable questions an empty list)")
                answers = qa["answers"] or []
                if not isinstance(answers, list) or not all(
                        isinstance(answer, dict) and {"text", "answer_start"} <= set(answer) for answer in answers):
                    raise ValueError(f"{where}.qas[{q}]: 'answers' must be a list of {{\"text\", \"answer_start\"}}")
                try:
                    starts = [int(answer["answer_start"]) for answer in answers]
                except (TypeError, ValueError):
                    raise ValueError(f"{where}.qas[{q}]: an answer_start is not a whole number") from None
                row[answers_column] = {"text": [str(answer["text"]) for answer in answers], "answer_start": starts}
                yield row


def _context_room(tokenizer: PreTrainedTokenizerBase, questions: list[str], max_length: int) -> list[int]:
    """Per question, the tokens a window of ``max_length`` leaves for the context."""
    special = tokenizer.num_special_tokens_to_add(pair=True)
    lengths = [len(ids) for ids in tokenizer([q.lstrip() for q in questions], add_special_tokens=False)["input_ids"]]
    return [max_length - special - length for length in lengths]


class _NoRoom(ValueError):
    """A question that leaves no room for its context in a window; ``position`` is its index in the batch."""

    def __init__(self, position: int, message: str) -> None:
        super().__init__(message)
        self.position = position


def _stride_groups(spec: TaskSpec, tokenizer: PreTrainedTokenizerBase, questions: list[str],
                   max_length: int) -> dict[int, list[int]]:
    """The questions of a batch grouped by the stride of their windows: the task's (:func:`doc_stride`), or half the
    room a question leaves for its context where that room is not larger than the stride (a longer stride would
    leave no new context to a window). Raises :class:`_NoRoom` for a question that fills a whole window."""
    stride = doc_stride(spec, max_length)
    groups: dict[int, list[int]] = {}
    for position, room in enumerate(_context_room(tokenizer, questions, max_length)):
        if room <= 0:
            raise _NoRoom(position, f"the question alone fills the window of max_seq_length={max_length} tokens; "
                                    "shorten it or raise max_seq_length")
        groups.setdefault(stride if room > stride else room // 2, []).append(position)
    return groups


def _answer_span(context: str, text: str, start: int) -> tuple[int, bool]:
    """The answer's start in ``context``: ``start`` where the text is there, else the nearest place where it occurs
    (``True``: corrected); ``-1`` where the text does not occur at all."""
    if context[start:start + len(text)] == text:
        return start, False
    found, position = [], context.find(text)
    while position >= 0:
        found.append(position)
        position = context.find(text, position + 1)
    if not found:
        return -1, False
    return min(found, key=lambda place: abs(place - start)), True


def _read_answers(value: Any, context: str) -> tuple[list[tuple[str, int]], int, str | None]:
    """``([(text, start)], corrected count, problem)`` of one row's SQuAD-style answers (in a CSV/TSV cell, written
    as a JSON object)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass
    if not isinstance(value, dict) or not {"text", "answer_start"} <= set(value):
        return [], 0, (f'expected {{"text": [...], "answer_start": [...]}} (in CSV/TSV, as a JSON object), got '
                       f"{type(value).__name__} {value!r}")[:200]
    texts, starts = value["text"], value["answer_start"]
    if not isinstance(texts, list) or not isinstance(starts, list) or len(texts) != len(starts):
        return [], 0, f"'text' and 'answer_start' must be lists of the same length, got {texts!r} and {starts!r}"[:200]
    answers, corrected = [], 0
    for number, (text, start) in enumerate(zip(texts, starts)):
        if not isinstance(text, str) or not text.strip():
            return [], 0, f"answer {number}: text {text!r} is not a non-empty string"
        if not isinstance(start, int) or isinstance(start, bool):
            return [], 0, f"answer {number}: answer_start {start!r} is not a whole number"
        place, moved = _answer_span(context, text, start)
        if place < 0:
            return [], 0, f"answer {number}: {text!r} does not occur in the context"
        corrected += moved
        answers.append((text, place))
    return answers, corrected, None


def _token_span(offsets: list[tuple[int, int]], sequence_ids: list[int | None], start_char: int,
                end_char: int) -> tuple[int, int] | None:
    """The first and last token of the characters ``[start_char, end_char)`` in one window, or ``None`` where the
    window does not hold all of them."""
    inside = [i for i, sequence in enumerate(sequence_ids) if sequence == 1]
    if not inside or offsets[inside[0]][0] > start_char or offsets[inside[-1]][1] < end_char:
        return None
    first = next(i for i in inside if offsets[i][1] > start_char)
    last = next(i for i in reversed(inside) if offsets[i][0] < end_char)
    return first, last


def _encode_qa(
    batch: dict[str, list],
    indices: list[int],
    *,
    tokenizer: PreTrainedTokenizerBase,
    rows: _Rows,
    spec: TaskSpec,
    answers_column: str | None,
    id_column: str | None,
    max_length: int,
) -> dict[str, list]:
    """Validate and encode a batch of rows into windows (see the module docstring), naming any bad row; each row's
    windows follow each other, in row order."""
    question_column, context_column = spec.question_column_name, spec.context_column_name
    questions, contexts, answers, corrected = [], [], [], []
    for position, row in enumerate(indices):
        for column in (question_column, context_column):
            value = batch[column][position]
            if not isinstance(value, str) or not value.strip():
                raise rows.error(row, column, f"expected a non-empty string, got {type(value).__name__} {value!r}"[:200])
        questions.append(batch[question_column][position])
        contexts.append(batch[context_column][position])
        if answers_column is None:
            continue
        found, moved, problem = _read_answers(batch[answers_column][position], contexts[-1])
        if problem is None and not found and not spec.version_2_with_negative:
            problem = ("no answer; for questions without an answer in the context set the task's "
                       "version_2_with_negative: true")
        if problem is not None:
            raise rows.error(row, answers_column, problem)
        answers.append(found)
        corrected.append(moved)
    try:
        groups = _stride_groups(spec, tokenizer, questions, max_length)
    except _NoRoom as err:
        raise rows.error(indices[err.position], question_column, str(err)) from None

    stride = doc_stride(spec, max_length)
    short = {position for part_stride, positions in groups.items() if part_stride != stride for position in positions}
    windows: dict[int, list[dict[str, Any]]] = {}
    for part_stride, positions in groups.items():
        encoding = encode_questions(tokenizer, [questions[i] for i in positions], [contexts[i] for i in positions],
                                    max_length, part_stride)
        for window, local in enumerate(encoding["overflow_to_sample_mapping"]):
            source = positions[local]
            sequence_ids, offsets = encoding.sequence_ids(window), encoding["offset_mapping"][window]
            record = {name: encoding[name][window] for name in tokenizer.model_input_names}
            record[OFFSETS_COLUMN] = [list(span) if sequence == 1 else [-1, -1]
                                      for span, sequence in zip(offsets, sequence_ids)]
            if answers_column is not None:
                span = None
                if answers[source]:
                    text, start_char = answers[source][0]  # run_qa.py trains on the first answer
                    span = _token_span(offsets, sequence_ids, start_char, start_char + len(text))
                record["labels"] = list(span) if span is not None else [0, 0]
            windows.setdefault(source, []).append(record)

    unplaced = {source for source, records in windows.items()
                if answers_column is not None and answers[source] and all(r["labels"] == [0, 0] for r in records)}
    output: dict[str, list] = {name: [] for name in (*tokenizer.model_input_names, OFFSETS_COLUMN, TASK_COLUMN,
                                                     _TRUNCATED_COLUMN, EXAMPLE_ID_COLUMN, ID_COLUMN, CONTEXT_COLUMN,
                                                     _CORRECTED_COLUMN, _SHORT_STRIDE_COLUMN, _UNPLACED_COLUMN)}
    if answers_column is not None:
        output["labels"], output[ANSWERS_COLUMN] = [], []
    for source in range(len(questions)):
        for number, record in enumerate(windows[source]):
            for name, value in record.items():
                output[name].append(value)
            output[TASK_COLUMN].append(rows.task)
            output[_TRUNCATED_COLUMN].append(False)  # a context that does not fit is cut into windows, all kept
            output[EXAMPLE_ID_COLUMN].append(indices[source])
            output[ID_COLUMN].append(str(batch[id_column][source]) if id_column else str(indices[source]))
            output[CONTEXT_COLUMN].append(contexts[source])
            # Each row's corrections are counted once, on its first window.
            output[_CORRECTED_COLUMN].append(corrected[source] if answers_column is not None and number == 0 else 0)
            output[_SHORT_STRIDE_COLUMN].append(number == 0 and source in short)
            output[_UNPLACED_COLUMN].append(number == 0 and source in unplaced)
            if answers_column is not None:
                output[ANSWERS_COLUMN].append([text for text, _ in answers[source]])
    return output
