"""Extractive question answering (`extractive_qa`, SQuAD style): the task spec, the loss against transformers' own
`BertForQuestionAnswering`, the windows a long context is cut into and their span labels, bad data, SQuAD's nested
JSON, how an answer is read from the windows' logits, SQuAD scoring, and training, evaluation, prediction and the
pipeline on the toy "where does X live ?" task of `trainer_fixtures`, on the tiny BERT of conftest.

Expected values are written out by hand or computed here with torch and numpy (and the tokenizer's own tokens), never
with the code under test.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import itertools
import json
import logging
import math
import re
from fractions import Fraction
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
import transformers

from mtl_hf import (
    MultiTaskConfig,
    MultiTaskDataCollator,
    MultiTaskModel,
    MultiTaskPipeline,
    MultiTaskTrainer,
    MultiTaskTrainingArguments,
    TaskSpec,
)
from mtl_hf.data import load_raw_datasets, preprocess_task
from mtl_hf.metrics import SquadMetric
from mtl_hf.modeling_multitask import LOSSES, span_loss
from mtl_hf.task_types import get_task_type
from mtl_hf.task_types.extractive_qa import best_answer, doc_stride
from tests.conftest import tiny_encoder_config
from tests.trainer_fixtures import NER, TOPIC, WHERE, make_model, ner_rows, qa_rows

QA = TaskSpec(name="qa", type="extractive_qa")


def raw(split: str = "train", **columns: list) -> datasets.DatasetDict:
    return datasets.DatasetDict({split: datasets.Dataset.from_dict(columns)})


def answer_of(rows: dict[str, list], i: int) -> tuple[str, int]:
    """The first answer of row ``i`` of ``qa_rows``: its text and character offset."""
    return rows["answers"][i]["text"][0], rows["answers"][i]["answer_start"][0]


# ---- 1. the task spec ----------------------------------------------------------------------------------------------


def test_a_qa_spec_has_run_qa_defaults_and_its_own_columns() -> None:
    spec = TaskSpec(name="qa", type="extractive_qa")
    # transformers' run_qa.py defaults; no head dropout, as transformers' QA heads have none. An unset doc_stride is
    # min(128, half the window), as transformers' QA pipeline sets it: run_qa.py's 128 fits its windows of 384 only.
    assert (spec.doc_stride, spec.max_answer_length, spec.n_best_size) == (None, 30, 20)
    assert [doc_stride(spec, length) for length in (384, 256, 128, 64)] == [128, 128, 64, 32]
    assert doc_stride(TaskSpec(name="qa", type="extractive_qa", doc_stride=100), 128) == 100
    assert spec.version_2_with_negative is False and spec.null_score_diff_threshold == 0.0
    assert spec.dropout == 0.0
    assert (spec.context_column_name, spec.question_column_name, spec.answers_column_name) == (
        "context", "question", "answers")
    assert spec.text_column_name is None and spec.label_column_name is None and spec.labels is None
    assert spec.label_column == "answers"
    assert spec.num_labels == 2  # start and end logits
    assert spec.pooling is None


@pytest.mark.parametrize(
    "fields, field_name",
    [
        ({"type": "extractive_qa", "text_column_name": "passage"}, "text_column_name"),
        ({"type": "extractive_qa", "label_column_name": "gold"}, "label_column_name"),
        ({"type": "classification", "labels": ["a", "b"], "context_column_name": "passage"}, "context_column_name"),
        ({"type": "classification", "labels": ["a", "b"], "doc_stride": 64}, "doc_stride"),
        ({"type": "ner", "labels": ["O"], "version_2_with_negative": True}, "version_2_with_negative"),
        ({"type": "extractive_qa", "doc_stride": -1}, "doc_stride"),
        ({"type": "extractive_qa", "doc_stride": 1.5}, "doc_stride"),
        ({"type": "extractive_qa", "n_best_size": 0}, "n_best_size"),
        ({"type": "extractive_qa", "max_answer_length": 0}, "max_answer_length"),
        ({"type": "extractive_qa", "max_answer_length": True}, "max_answer_length"),
        ({"type": "extractive_qa", "version_2_with_negative": "yes"}, "version_2_with_negative"),
        ({"type": "extractive_qa", "null_score_diff_threshold": float("nan")}, "null_score_diff_threshold"),
        ({"type": "extractive_qa", "labels": ["start", "end"]}, "labels"),
        ({"type": "extractive_qa", "question_column_name": "context"}, "context_column_name"),
    ],
)
def test_fields_that_do_not_fit_a_qa_task_are_refused_by_name(fields: dict, field_name: str) -> None:
    """A column field of another type, a QA field on another type, or a QA setting run_qa.py would not take, is an
    error naming the task and the field, when the spec is made (not at training time)."""
    with pytest.raises(ValueError, match=rf"Task 't': field '{field_name}'"):
        TaskSpec(name="t", **fields)


def test_config_dict_holds_the_qa_fields_and_no_column_names() -> None:
    spec = TaskSpec(name="qa", type="extractive_qa", doc_stride=64, max_answer_length=12, n_best_size=5,
                    version_2_with_negative=True, null_score_diff_threshold=1.5, context_column_name="passage",
                    train_file="train.json")
    assert spec.to_config_dict() == {
        "name": "qa", "type": "extractive_qa", "labels": None, "weight": 1.0, "dropout": 0.0, "doc_stride": 64,
        "max_answer_length": 12, "n_best_size": 5, "version_2_with_negative": True, "null_score_diff_threshold": 1.5,
    }
    # A classification task's config carries none of the QA fields.
    assert not {"doc_stride", "max_answer_length", "n_best_size", "version_2_with_negative",
                "null_score_diff_threshold"} & set(TOPIC.to_config_dict())


def test_multitask_config_round_trip_keeps_the_qa_fields(tmp_path: Path) -> None:
    spec = TaskSpec(name="qa", type="extractive_qa", doc_stride=64, max_answer_length=12, n_best_size=5,
                    version_2_with_negative=True, null_score_diff_threshold=-2.5, weight=2.0)
    config = MultiTaskConfig(encoder=tiny_encoder_config("bert", 100), tasks=[spec, TOPIC])
    for loaded in (MultiTaskConfig.from_dict(config.to_dict()), _saved_and_loaded(config, tmp_path)):
        qa = loaded.get_task("qa")
        assert (qa.doc_stride, qa.max_answer_length, qa.n_best_size) == (64, 12, 5)
        assert qa.version_2_with_negative is True and qa.null_score_diff_threshold == -2.5 and qa.weight == 2.0
        assert qa.num_labels == 2 and qa.context_column_name == "context"
        assert loaded.tasks == config.tasks
        assert loaded.get_task("topic").labels == TOPIC.labels


def _saved_and_loaded(config: MultiTaskConfig, folder: Path) -> MultiTaskConfig:
    config.save_pretrained(folder)
    return MultiTaskConfig.from_pretrained(folder)


# ---- 2. the loss ---------------------------------------------------------------------------------------------------


def _model_and_reference() -> tuple[MultiTaskModel, transformers.BertForQuestionAnswering]:
    """A tiny multi-task BERT with a QA head, and transformers' `BertForQuestionAnswering` with the same weights."""
    torch.manual_seed(0)
    encoder = tiny_encoder_config("bert", 120)
    model = MultiTaskModel(MultiTaskConfig(encoder=encoder, tasks=[QA, TOPIC])).eval()
    reference = transformers.BertForQuestionAnswering(encoder).eval()
    loaded = reference.bert.load_state_dict(model.encoder.state_dict(), strict=False)
    assert loaded.missing_keys == []
    assert sorted(loaded.unexpected_keys) == ["pooler.dense.bias", "pooler.dense.weight"]  # QA models have no pooler
    reference.qa_outputs.load_state_dict(model.heads["qa"].classifier.state_dict())
    return model, reference


def _inputs(lengths: list[int], width: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(5, 120, (len(lengths), width), generator=generator)
    attention_mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, length in enumerate(lengths):
        attention_mask[row, :length] = 1
        input_ids[row, length:] = 0
    token_type_ids = torch.zeros(len(lengths), width, dtype=torch.long)
    token_type_ids[:, 3:] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids * attention_mask}


def test_the_model_is_bert_for_question_answering_with_the_same_weights() -> None:
    """Unpadded, logits and loss equal transformers' QA model's when the weights are the same: the head is
    `qa_outputs`, the loss the mean of the start and end cross-entropies, positions beyond the sequence ignored."""
    model, reference = _model_and_reference()
    inputs = _inputs([10, 10, 10], 10)
    for labels in (torch.tensor([[3, 5], [0, 0], [2, 2]]), torch.tensor([[3, 5], [40, 2], [1, 99]])):
        ours = model(**inputs, task="qa", labels=labels)
        theirs = reference(**inputs, start_positions=labels[:, 0], end_positions=labels[:, 1])
        assert ours.logits.shape == (3, 10, 2)
        torch.testing.assert_close(ours.logits[..., 0], theirs.start_logits, atol=1e-6, rtol=0)
        torch.testing.assert_close(ours.logits[..., 1], theirs.end_logits, atol=1e-6, rtol=0)
        torch.testing.assert_close(ours.loss, theirs.loss, atol=1e-6, rtol=0)

    # Written out: mean over the rows of log-softmax at the gold positions, start and end averaged.
    labels = torch.tensor([[3, 5], [0, 0], [2, 2]])
    logits = model(**inputs, task="qa").logits
    by_hand = -(logits[..., 0].log_softmax(-1).gather(1, labels[:, :1]).mean()
                + logits[..., 1].log_softmax(-1).gather(1, labels[:, 1:]).mean()) / 2
    torch.testing.assert_close(span_loss(logits, labels), by_hand, atol=1e-6, rtol=0)
    # What gradient accumulation relies on: the sum over the batch's examples over their count is the mean.
    assert int(LOSSES["span"].count(labels)) == 3
    torch.testing.assert_close(span_loss(logits, labels, "sum") / LOSSES["span"].count(labels),
                               span_loss(logits, labels), atol=1e-6, rtol=0)


def test_padding_changes_neither_the_logits_of_real_tokens_nor_the_loss() -> None:
    """In a padded batch each row's logits and loss are those of the row alone (transformers' QA model on just its
    tokens): padding positions are masked out of the softmax, so the loss does not depend on how far a batch is
    padded."""
    model, reference = _model_and_reference()
    lengths = [10, 7, 4]
    inputs = _inputs(lengths, 10)
    labels = torch.tensor([[3, 5], [6, 6], [1, 3]])
    ours = model(**inputs, task="qa", labels=labels)
    alone = []
    for row, length in enumerate(lengths):
        row_inputs = {key: value[row:row + 1, :length] for key, value in inputs.items()}
        theirs = reference(**row_inputs, start_positions=labels[row:row + 1, 0], end_positions=labels[row:row + 1, 1])
        torch.testing.assert_close(ours.logits[row, :length, 0], theirs.start_logits[0], atol=1e-6, rtol=0)
        torch.testing.assert_close(ours.logits[row, :length, 1], theirs.end_logits[0], atol=1e-6, rtol=0)
        assert bool((ours.logits[row, length:] < -1e30).all())  # never an answer, nothing in the softmax
        alone.append(theirs.loss)
    torch.testing.assert_close(ours.loss, torch.stack(alone).mean(), atol=1e-6, rtol=0)
    # The same rows padded further (as another micro-batch or process would pad them) give the same loss.
    wider = {key: torch.nn.functional.pad(value, (0, 6)) for key, value in inputs.items()}
    torch.testing.assert_close(model(**wider, task="qa", labels=labels).loss, ours.loss, atol=1e-6, rtol=0)


# ---- 3. encoding: windows and span labels --------------------------------------------------------------------------


def _context_positions(window: dict) -> list[int]:
    """Positions of the context's tokens in an encoded BERT window: segment 1 but the final [SEP]."""
    return [i for i, segment in enumerate(window["token_type_ids"][:-1]) if segment == 1]


@pytest.mark.parametrize("max_length, doc_stride", [(32, 8), (24, 4)])
def test_a_long_context_is_cut_into_overlapping_windows_labelled_with_the_answer(
    bert_tokenizer, max_length: int, doc_stride: int
) -> None:
    spec = TaskSpec(name="where", type="extractive_qa", doc_stride=doc_stride)
    rows = qa_rows(12, seed=3, filler=(8, 20))
    data = preprocess_task(spec, raw(**rows), bert_tokenizer, max_seq_length=max_length)["train"]
    assert data.column_names[:3] == ["input_ids", "token_type_ids", "attention_mask"]
    assert {"labels", "task", "example_id", "id", "offset_mapping", "context", "answer_texts"} <= set(data.column_names)

    question_tokens = len(bert_tokenizer.tokenize(rows["question"][0]))  # 14: "where does X live ?" letter by letter
    room = max_length - 3 - question_tokens  # context tokens per window, after [CLS] question [SEP] ... [SEP]
    windows_of: dict[int, list[dict]] = {}
    for window in data:
        windows_of.setdefault(window["example_id"], []).append(window)
    assert sorted(windows_of) == list(range(12))
    assert data["example_id"] == sorted(data["example_id"])  # a row's windows are consecutive, in row order
    for row, windows in windows_of.items():
        context = rows["context"][row]
        text, start = answer_of(rows, row)
        context_tokens = len(bert_tokenizer.tokenize(context))
        # run_qa.py's windows: the first takes `room` tokens, each next one starts `doc_stride` tokens before the
        # previous one ended.
        expected = 1 + max(0, math.ceil((context_tokens - room) / (room - doc_stride)))
        assert len(windows) == expected and expected >= 2, (row, context_tokens)
        assert all(w["id"] == rows["id"][row] and w["context"] == context and w["answer_texts"] == [text]
                   and w["task"] == "where" for w in windows)
        holding = 0
        spans = []
        for window in windows:
            positions = _context_positions(window)
            offsets = window["offset_mapping"]
            assert len(offsets) == len(window["input_ids"]) <= max_length
            # Offsets outside the context ([CLS], the question, [SEP]) are [-1, -1]; inside, they read the token.
            assert all(offsets[i] == [-1, -1] for i in range(len(offsets)) if i not in positions)
            tokens = bert_tokenizer.convert_ids_to_tokens(window["input_ids"])
            for i in positions:
                assert context[offsets[i][0]:offsets[i][1]] == tokens[i].removeprefix("##"), (row, i)
            first_char, last_char = offsets[positions[0]][0], offsets[positions[-1]][1]
            spans.append([offsets[i] for i in positions])
            inside = first_char <= start and start + len(text) <= last_char
            label = window["labels"]
            if inside:
                holding += 1
                s, e = label
                assert positions[0] <= s <= e <= positions[-1]
                assert context[offsets[s][0]:offsets[e][1]] == text
            else:
                assert label == [0, 0], (row, label)
        assert holding >= 1
        # Together the windows cover the whole context; consecutive ones share `doc_stride` tokens of it, and every
        # window but the last is full.
        assert spans[0][0][0] == 0 and spans[-1][-1][1] == len(context)
        for previous, following in itertools.pairwise(spans):
            assert previous[-doc_stride:] == following[:doc_stride]
            assert len(previous) == room
    assert len(data) > 2 * len(rows["id"])  # contexts this long really need several windows


def test_the_split_id_column_is_optional_and_rows_are_numbered_then(bert_tokenizer) -> None:
    rows = qa_rows(3, seed=0, filler=(1, 2))
    del rows["id"]
    data = preprocess_task(WHERE, raw(**rows), bert_tokenizer, max_seq_length=32)["train"]
    assert data["id"] == ["0", "1", "2"] and data["example_id"] == [0, 1, 2]


def test_an_unlabelled_test_split_is_encoded_without_labels(bert_tokenizer) -> None:
    rows = qa_rows(4, seed=1, filler=(8, 12))
    del rows["answers"]
    data = preprocess_task(WHERE, raw("test", **rows), bert_tokenizer, max_seq_length=32)["test"]
    assert "labels" not in data.column_names and "answer_texts" not in data.column_names
    assert sorted(set(data["example_id"])) == [0, 1, 2, 3] and len(data) > 4


# ---- 4. bad data ---------------------------------------------------------------------------------------------------


def _with_row(rows: dict[str, list], row: int, **values) -> dict[str, list]:
    rows = {column: list(values_) for column, values_ in rows.items()}
    for column, value in values.items():
        rows[column][row] = value
    return rows


def test_an_answer_that_is_not_in_the_context_names_task_split_row_and_column(bert_tokenizer) -> None:
    rows = _with_row(qa_rows(4, seed=0), 2, answers={"text": ["tokyo"], "answer_start": [3]})
    with pytest.raises(ValueError, match=r"Task 'where', split 'validation', row 2, column 'answers': answer 0: "
                                         r"'tokyo' does not occur in the context"):
        preprocess_task(WHERE, raw("validation", **rows), bert_tokenizer, max_seq_length=32)


def test_answers_that_are_not_squad_answers_name_the_row(bert_tokenizer) -> None:
    rows = _with_row(qa_rows(4, seed=0), 1, answers=None)
    with pytest.raises(ValueError, match=r"Task 'where', split 'train', row 1, column 'answers': expected "
                                         r"\{\"text\": \[\.\.\.\], \"answer_start\": \[\.\.\.\]\} \(in CSV/TSV, as a JSON "
                                         r"object\), got NoneType"):
        preprocess_task(WHERE, raw(**rows), bert_tokenizer, max_seq_length=32)
    rows = qa_rows(3, seed=0)
    rows["answers"] = [answers["text"][0] for answers in rows["answers"]]  # plain strings
    with pytest.raises(ValueError, match=r"Task 'where', split 'train', row 0, column 'answers': expected .*got str"):
        preprocess_task(WHERE, raw(**rows), bert_tokenizer, max_seq_length=32)
    rows = _with_row(qa_rows(3, seed=0), 2, answers={"text": ["paris"], "answer_start": [1, 2]})
    with pytest.raises(ValueError, match=r"row 2, column 'answers': 'text' and 'answer_start' must be lists of the "
                                         r"same length"):
        preprocess_task(WHERE, raw(**rows), bert_tokenizer, max_seq_length=32)


def test_answers_without_text_and_answer_start_name_the_row(bert_tokenizer) -> None:
    """Answers in another layout (`{"answer", "start"}`, as a user's own data might hold them) are an error naming
    the row and the column, not a KeyError from inside the encoding."""
    rows = qa_rows(3, seed=0)
    rows["answers"] = [{"answer": a["text"][0], "start": a["answer_start"][0]} for a in rows["answers"]]
    with pytest.raises(ValueError, match=r"Task 'where', split 'train', row 0, column 'answers': expected "
                                         r"\{\"text\": \[\.\.\.\], \"answer_start\": \[\.\.\.\]\} \(in CSV/TSV, as a JSON "
                                         r"object\), got dict"):
        preprocess_task(WHERE, raw(**rows), bert_tokenizer, max_seq_length=32)


def test_an_empty_answer_needs_version_2_with_negative(bert_tokenizer) -> None:
    rows = _with_row(qa_rows(4, seed=0), 3, answers={"text": [], "answer_start": []})
    with pytest.raises(ValueError, match=r"Task 'where', split 'train', row 3, column 'answers': no answer; .*"
                                         r"version_2_with_negative"):
        preprocess_task(WHERE, raw(**rows), bert_tokenizer, max_seq_length=32)


def test_with_version_2_an_empty_answer_labels_every_window_with_cls(bert_tokenizer) -> None:
    spec = TaskSpec(name="where", type="extractive_qa", doc_stride=8, version_2_with_negative=True)
    rows = _with_row(qa_rows(4, seed=5, filler=(10, 16)), 1, answers={"text": [], "answer_start": []})
    data = preprocess_task(spec, raw(**rows), bert_tokenizer, max_seq_length=32)["train"]
    unanswerable = [w for w in data if w["example_id"] == 1]
    assert len(unanswerable) >= 2 and all(w["labels"] == [0, 0] for w in unanswerable)
    assert all(w["answer_texts"] == [] for w in unanswerable)
    for row in (0, 2, 3):  # the answerable rows still point at their answers
        text, _ = answer_of(rows, row)
        labelled = [w for w in data if w["example_id"] == row and w["labels"] != [0, 0]]
        assert labelled and all(
            w["context"][w["offset_mapping"][w["labels"][0]][0]:w["offset_mapping"][w["labels"][1]][1]] == text
            for w in labelled)


def test_a_wrong_answer_start_moves_to_the_nearest_occurrence_with_a_warning(bert_tokenizer, caplog) -> None:
    context = "john lives in paris and mary lives in paris today ."
    second = context.rindex("paris")  # 38
    rows = {
        "question": ["where does mary live ?", "where does john live ?", "where does mary live ?"],
        "context": [context, context, context],
        # Row 0: 3 characters after the second "paris" (nearest: the second); row 1: right; row 2: 4 before the first
        # one (nearest: the first).
        "answers": [{"text": ["paris"], "answer_start": [second + 3]},
                    {"text": ["paris"], "answer_start": [context.index("paris")]},
                    {"text": ["paris"], "answer_start": [context.index("paris") - 4]}],
    }
    with caplog.at_level(logging.WARNING, logger="mtl_hf"):
        data = preprocess_task(WHERE, raw(**rows), bert_tokenizer, max_seq_length=32)["train"]
    # [CLS], the question's 14 tokens and [SEP] come first: the context's words are one token each from position 16,
    # so the first "paris" (word 3) is position 19 and the second (word 8) position 24.
    assert [(w["example_id"], w["labels"]) for w in data] == [(0, [24, 24]), (1, [19, 19]), (2, [19, 19])]
    spans = [tuple(w["offset_mapping"][w["labels"][0]]) for w in data]
    assert spans == [(second, second + 5), (14, 19), (14, 19)]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith("mtl_hf")]
    assert len(warnings) == 1
    assert ("task 'where', split 'train': 2 answer_start offsets did not point at their answer text and were moved"
            in warnings[0].getMessage())


def test_a_question_that_leaves_little_room_gets_a_shorter_stride_and_one_that_fills_the_window_is_named(
        bert_tokenizer, caplog) -> None:
    """A window must hold new context beyond the stride (tokenizers panics otherwise): a question that leaves no
    more than doc_stride tokens for its context gets windows overlapping by half its room, counted in a warning; one
    that fills the whole window is an error naming the row and column."""
    rows = qa_rows(3, seed=0)
    # 14 tokens plus "in the c ##i ##t ##y": 20 + 3 special tokens leave 9 of 32 for the context, more than
    # doc_stride 8; 6 more words leave 3, so row 2's windows overlap by 1 token.
    rows = _with_row(rows, 1, question="where does john live in the city ?")
    rows = _with_row(rows, 2, question="the the the the the the where does john live in the city ?")
    with caplog.at_level(logging.WARNING, logger="mtl_hf"):
        data = preprocess_task(WHERE, raw(**rows), bert_tokenizer, max_seq_length=32)["train"]
    assert "1 questions leave no more than doc_stride=8 tokens for the context in windows of 32" in caplog.text
    windows = [window for window in data if window["example_id"] == 2]
    assert len(windows) > 1
    for first, second in zip(windows, windows[1:]):
        first_context = [tuple(span) for span in first["offset_mapping"] if span[0] >= 0]
        second_context = [tuple(span) for span in second["offset_mapping"] if span[0] >= 0]
        assert len(set(first_context) & set(second_context)) == 1
    # A question longer than the window itself: no tokenizers panic either.
    rows = _with_row(qa_rows(2, seed=0), 0, question=" ".join(["the"] * 40))
    with pytest.raises(ValueError, match=r"Task 'where', split 'train', row 0, column 'question': the question alone "
                                         r"fills the window of max_seq_length=32 tokens"):
        preprocess_task(WHERE, raw(**rows), bert_tokenizer, max_seq_length=32)


@pytest.mark.parametrize("column, value", [("question", "   "), ("context", "")])
def test_an_empty_question_or_context_names_the_row(bert_tokenizer, column: str, value: str) -> None:
    rows = _with_row(qa_rows(3, seed=0), 1, **{column: value})
    with pytest.raises(ValueError, match=rf"Task 'where', split 'train', row 1, column '{column}': expected a "
                                         r"non-empty string"):
        preprocess_task(WHERE, raw(**rows), bert_tokenizer, max_seq_length=32)


# ---- 5. SQuAD's nested JSON ----------------------------------------------------------------------------------------


SQUAD = {
    "version": "1.1",
    "data": [
        {"title": "People", "paragraphs": [
            {"context": "john lives in paris .", "qas": [
                {"id": "a1", "question": "where does john live ?",
                 "answers": [{"text": "paris", "answer_start": 14}, {"text": "in paris", "answer_start": 11}]},
                {"id": "a2", "question": "who lives in paris ?", "answers": [{"text": "john", "answer_start": 0}]},
            ]},
            {"context": "mary works in london .", "qas": [
                {"id": "b1", "question": "where does mary work ?",
                 "answers": [{"text": "london", "answer_start": 14}]},
            ]},
        ]},
        {"title": "Places", "paragraphs": [
            {"context": "rome is old .", "qas": [
                {"id": "c1", "question": "is rome new ?", "answers": [], "is_impossible": True},
            ]},
        ]},
    ],
}


def _squad_rows(context: str = "context", question: str = "question", answers: str = "answers") -> list[dict]:
    def row(id_, title, text, query, gold):
        return {"id": id_, "title": title, context: text, question: query,
                answers: {"text": [g[0] for g in gold], "answer_start": [g[1] for g in gold]}}

    return [
        row("a1", "People", "john lives in paris .", "where does john live ?", [("paris", 14), ("in paris", 11)]),
        row("a2", "People", "john lives in paris .", "who lives in paris ?", [("john", 0)]),
        row("b1", "People", "mary works in london .", "where does mary work ?", [("london", 14)]),
        row("c1", "Places", "rome is old .", "is rome new ?", []),
    ]


def test_a_squad_json_file_is_one_row_per_question_in_file_order(tmp_path: Path, bert_tokenizer) -> None:
    path = tmp_path / "train.json"
    path.write_text(json.dumps(SQUAD, indent=2))
    spec = TaskSpec(name="qa", type="extractive_qa", train_file=str(path), version_2_with_negative=True,
                    doc_stride=16)
    data = load_raw_datasets(spec)
    assert list(data) == ["train"]
    assert data["train"].to_list() == _squad_rows()
    assert data["train"].column_names == ["id", "title", "context", "question", "answers"]
    # The rows encode like any others: ids kept, the unanswerable question labelled [0, 0].
    encoded = preprocess_task(spec, data, bert_tokenizer, max_seq_length=48)["train"]
    assert encoded["id"] == ["a1", "a2", "b1", "c1"]
    assert encoded["answer_texts"] == [["paris", "in paris"], ["john"], ["london"], []]
    texts = [w["context"][w["offset_mapping"][w["labels"][0]][0]:w["offset_mapping"][w["labels"][1]][1]]
             for w in encoded.select(range(3))]
    assert texts == ["paris", "john", "london"]  # trained on the first answer
    assert encoded[3]["labels"] == [0, 0]


def test_json_lines_of_squad_articles_are_read_like_the_document(tmp_path: Path) -> None:
    """SQuAD's nested layout as JSON lines (one article per line) gives the rows the JSON document gives; JSON lines
    of flat rows stay flat rows."""
    nested = tmp_path / "articles.jsonl"
    nested.write_text("".join(json.dumps(article) + "\n" for article in SQUAD["data"]))
    spec = TaskSpec(name="qa", type="extractive_qa", train_file=str(nested), version_2_with_negative=True)
    assert load_raw_datasets(spec)["train"].to_list() == _squad_rows()
    flat = tmp_path / "flat.jsonl"
    flat.write_text("".join(json.dumps({key: value for key, value in row.items() if key != "title"}) + "\n"
                            for row in _squad_rows()))
    rows = load_raw_datasets(dataclasses.replace(spec, train_file=str(flat)))["train"].to_list()
    assert rows == [{key: value for key, value in row.items() if key != "title"} for row in _squad_rows()]


def test_a_squad_json_file_fills_the_columns_the_task_names(tmp_path: Path) -> None:
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(SQUAD))
    spec = TaskSpec(name="qa", type="extractive_qa", validation_file=str(path), context_column_name="passage",
                    question_column_name="query", answers_column_name="gold")
    data = load_raw_datasets(spec)["validation"]
    assert data.column_names == ["id", "title", "passage", "query", "gold"]
    assert data.to_list() == _squad_rows("passage", "query", "gold")


def test_a_malformed_squad_paragraph_names_the_file_and_its_place(tmp_path: Path) -> None:
    document = copy.deepcopy(SQUAD)
    del document["data"][0]["paragraphs"][1]["context"]
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(document))
    spec = TaskSpec(name="qa", type="extractive_qa", train_file=str(path))
    with pytest.raises(ValueError) as caught:
        load_raw_datasets(spec)
    message = str(caught.value)
    assert message.startswith("Task 'qa', split 'train'")
    assert f"{path}: data[0].paragraphs[1]: expected an object with a 'context' string" in message

    document = copy.deepcopy(SQUAD)
    document["data"][1]["paragraphs"][0]["qas"][0]["answers"] = [{"text": "rome"}]
    path = tmp_path / "broken_answer.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"data\[1\]\.paragraphs\[0\]\.qas\[0\]: 'answers' must be a list"):
        load_raw_datasets(TaskSpec(name="qa", type="extractive_qa", train_file=str(path)))


def test_a_squad_file_without_questions_names_the_task_split_and_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.json"
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": [
        {"context": "john lives in paris .", "qas": []}]}]}))
    with pytest.raises(ValueError, match=r"Task 'qa', split 'train'.*empty\.json.*no questions in the file"):
        load_raw_datasets(TaskSpec(name="qa", type="extractive_qa", train_file=str(path)))


def test_a_bad_row_of_a_squad_file_is_never_given_a_line_that_does_not_hold_it(tmp_path: Path, bert_tokenizer) -> None:
    """Rows of a nested SQuAD document are not lines: where an error about a row names a line of the file, that line
    must hold the row's question. Here the file has as many lines as questions (4), which a line count cannot tell
    apart from JSON lines."""
    document = copy.deepcopy(SQUAD)
    document["data"][0]["paragraphs"][0]["qas"][0]["answers"] = [{"text": "tokyo", "answer_start": 0}]
    people, places = document["data"]
    first, second = people["paragraphs"]
    questions = [json.dumps(qa) for qa in first["qas"]]
    lines = [
        '{"version": "1.1",',
        '"data": [{"title": "People", "paragraphs": [{"context": ' + json.dumps(first["context"]) + ', "qas": ['
        + questions[0] + ",",
        questions[1] + "]}, " + json.dumps(second) + "]},",
        json.dumps(places) + "]}",
    ]
    path = tmp_path / "train.json"
    path.write_text("\n".join(lines) + "\n")
    assert json.loads(path.read_text()) == document
    spec = TaskSpec(name="qa", type="extractive_qa", train_file=str(path), version_2_with_negative=True,
                    doc_stride=16)
    data = load_raw_datasets(spec)
    assert len(data["train"]) == len(lines) == 4
    with pytest.raises(ValueError) as caught:
        preprocess_task(spec, data, bert_tokenizer, max_seq_length=48)
    message = str(caught.value)
    assert message.startswith("Task 'qa', split 'train', row 0 (")
    assert str(path) in message and "column 'answers': answer 0: 'tokyo' does not occur in the context" in message
    for number in map(int, re.findall(r"line (\d+)", message)):
        assert "where does john live ?" in lines[number - 1], (number, lines[number - 1])


# ---- 6. reading an answer from the windows -------------------------------------------------------------------------


CONTEXT = "alpha beta gamma delta epsilon zeta"
WORD_SPANS = [(0, 5), (6, 10), (11, 16), (17, 22), (23, 30), (31, 35)]


def window(words: list[int | None], starts: dict[int, float], ends: dict[int, float],
           cls: tuple[float, float] = (50.0, 50.0), fill: float = -30.0) -> tuple[np.ndarray, np.ndarray]:
    """A window whose positions hold the given words of CONTEXT (``None``: a token outside the context, with offsets
    -1): logits ``fill`` but at the given positions; [CLS] (position 0) and every other position outside the context
    get very high logits, which must never make an answer."""
    logits = np.full((len(words), 2), fill, dtype=np.float32)
    offsets = np.array([WORD_SPANS[w] if w is not None else (-1, -1) for w in words])
    for i, w in enumerate(words):
        if w is None:
            logits[i] = (40.0, 40.0)
    logits[0] = cls
    for position, value in starts.items():
        logits[position, 0] = value
    for position, value in ends.items():
        logits[position, 1] = value
    return logits, offsets


W0_WORDS = [None, None, 0, 1, 2, 3, None]  # [CLS], a question token, words 0-3 of CONTEXT, [SEP]
W1_WORDS = [None, None, 2, 3, 4, 5, None]  # the next window: words 2-5


def test_the_best_span_over_all_windows_wins_by_start_plus_end_logit() -> None:
    # Window 0: "beta gamma" 6 + 2 = 8; window 1: "gamma ... zeta" 4 + 4.5 = 8.5. Window 0's start with window 1's
    # end (6 + 4.5) would beat both, but a span lies in one window.
    w0 = window(W0_WORDS, {3: 6.0}, {4: 2.0})
    w1 = window(W1_WORDS, {2: 4.0}, {5: 4.5})
    answer = best_answer(QA, CONTEXT, [w0, w1])
    assert (answer.text, answer.start, answer.end) == ("gamma delta epsilon zeta", 11, 35)
    assert answer.logit_score == pytest.approx(8.5)
    w0 = window(W0_WORDS, {3: 6.0}, {4: 3.0})  # now 6 + 3 = 9 beats 8.5
    answer = best_answer(QA, CONTEXT, [w0, w1])
    assert (answer.text, answer.start, answer.end, answer.logit_score) == ("beta gamma", 6, 16, pytest.approx(9.0))
    assert best_answer(QA, CONTEXT, [w1, w0]).text == "beta gamma"  # window order does not matter


def test_spans_too_long_or_ending_before_they_start_are_never_chosen() -> None:
    # Window 1's "gamma ... zeta" (4 tokens, 4 + 4.5) is the best unless at most 3 tokens are allowed; window 0's
    # "beta" start with the "alpha" end (6 + 20) ends before it starts.
    w0 = window(W0_WORDS, {3: 6.0}, {2: 20.0, 4: 2.0})
    w1 = window(W1_WORDS, {2: 4.0}, {5: 4.5})
    # Valid spans of window 0: alpha (-30 + 20 = -10), beta gamma (8); window 1: gamma..zeta (8.5, 4 tokens).
    assert best_answer(QA, CONTEXT, [w0, w1]).text == "gamma delta epsilon zeta"
    short = TaskSpec(name="qa", type="extractive_qa", max_answer_length=3)
    assert best_answer(short, CONTEXT, [w0, w1]).text == "beta gamma"
    single = TaskSpec(name="qa", type="extractive_qa", max_answer_length=1)
    # One token only: the best single-token span is window 1's gamma (4 + -30) vs window 0's alpha (-30 + 20).
    answer = best_answer(single, CONTEXT, [w0, w1])
    assert (answer.text, answer.logit_score) == ("alpha", pytest.approx(-10.0))


def test_only_the_n_best_starts_and_ends_of_a_window_are_paired() -> None:
    # Window 0: the best start (beta, 6) and end (alpha, 20) make no span; beta + gamma (6 + 3) is the best span.
    # Window 1: gamma + zeta (4 + 4.5 = 8.5).
    w0 = window(W0_WORDS, {3: 6.0}, {2: 20.0, 4: 3.0})
    w1 = window(W1_WORDS, {2: 4.0}, {5: 4.5})
    assert best_answer(QA, CONTEXT, [w0, w1]).text == "beta gamma"
    # With n_best_size 1 window 0 pairs only beta with alpha, which is no span: window 1's answer is left.
    one = TaskSpec(name="qa", type="extractive_qa", n_best_size=1)
    answer = best_answer(one, CONTEXT, [w0, w1])
    assert (answer.text, answer.logit_score) == ("gamma delta epsilon zeta", pytest.approx(8.5))
    # No window with a valid span at all: no answer, without version_2_with_negative too.
    assert best_answer(one, CONTEXT, [w0]).text == ""


def test_tokens_outside_the_context_are_never_an_answer() -> None:
    # [CLS], the question token and [SEP] have logits 40-50 against at most 1 inside the context.
    w0 = window(W0_WORDS, {5: 1.0}, {5: 1.0})
    answer = best_answer(QA, CONTEXT, [w0])
    assert (answer.text, answer.start, answer.end, answer.logit_score) == ("delta", 17, 22, pytest.approx(2.0))
    # Padding beyond the offsets (the logits are longer than the window's offsets) is not read either.
    logits, offsets = w0
    padded = np.vstack([logits, np.full((3, 2), 90.0, dtype=np.float32)])
    assert best_answer(QA, CONTEXT, [(padded, offsets)]).text == "delta"


def test_with_version_2_no_answer_wins_when_the_null_score_beats_the_best_span_by_the_threshold() -> None:
    def spec(threshold: float) -> TaskSpec:
        return TaskSpec(name="qa", type="extractive_qa", version_2_with_negative=True,
                        null_score_diff_threshold=threshold)

    # Best span: window 1's gamma..zeta 8.5; null scores: window 0 5 + 5 = 10, window 1 6 + 6 = 12; the lowest, 10,
    # counts: 10 - 8.5 = 1.5.
    w0 = window(W0_WORDS, {3: 6.0}, {4: 2.0}, cls=(5.0, 5.0))
    w1 = window(W1_WORDS, {2: 4.0}, {5: 4.5}, cls=(6.0, 6.0))
    for threshold, expected in ((0.0, ("", 0, 0)), (1.4, ("", 0, 0)), (1.5, ("gamma delta epsilon zeta", 11, 35)),
                                (2.0, ("gamma delta epsilon zeta", 11, 35))):
        answer = best_answer(spec(threshold), CONTEXT, [w0, w1])
        assert (answer.text, answer.start, answer.end) == expected, threshold
    null = best_answer(spec(0.0), CONTEXT, [w0, w1])
    assert null.logit_score == pytest.approx(10.0)
    # Without version_2_with_negative the span is the answer however high the null score.
    assert best_answer(QA, CONTEXT, [w0, w1]).text == "gamma delta epsilon zeta"
    # One window whose null score is below the span's: the span, even at threshold 0.
    w0_low = window(W0_WORDS, {3: 6.0}, {4: 2.0}, cls=(3.0, 4.0))
    assert best_answer(spec(0.0), CONTEXT, [w0_low, w1]).text == "gamma delta epsilon zeta"


def _softmax(values: list[float]) -> np.ndarray:
    exp = np.exp(np.array(values, dtype=np.float64) - max(values))
    return exp / exp.sum()


def test_the_probability_is_start_times_end_softmax_over_the_context_tokens() -> None:
    w0 = window(W0_WORDS, {2: 1.0, 3: 2.5, 4: 0.5, 5: -1.0}, {2: 0.0, 3: 1.0, 4: 3.0, 5: 0.25})
    answer = best_answer(QA, CONTEXT, [w0])
    assert answer.text == "beta gamma"  # start 3 (2.5) + end 4 (3.0)
    start = _softmax([1.0, 2.5, 0.5, -1.0])  # positions 2-5, the context's tokens
    end = _softmax([0.0, 1.0, 3.0, 0.25])
    assert answer.probability == pytest.approx(start[1] * end[2], rel=1e-6)
    # With unanswerable questions allowed, [CLS] joins the softmax (as transformers' pipeline scores it).
    v2 = TaskSpec(name="qa", type="extractive_qa", version_2_with_negative=True, null_score_diff_threshold=100.0)
    w0 = window(W0_WORDS, {2: 1.0, 3: 2.5, 4: 0.5, 5: -1.0}, {2: 0.0, 3: 1.0, 4: 3.0, 5: 0.25}, cls=(0.5, -0.5))
    answer = best_answer(v2, CONTEXT, [w0])
    start = _softmax([0.5, 1.0, 2.5, 0.5, -1.0])
    end = _softmax([-0.5, 0.0, 1.0, 3.0, 0.25])
    assert answer.text == "beta gamma" and answer.probability == pytest.approx(start[2] * end[3], rel=1e-6)
    v2_null = TaskSpec(name="qa", type="extractive_qa", version_2_with_negative=True)
    w0 = window(W0_WORDS, {2: 1.0, 3: 2.5, 4: 0.5, 5: -1.0}, {2: 0.0, 3: 1.0, 4: 3.0, 5: 0.25}, cls=(4.0, 3.0))
    answer = best_answer(v2_null, CONTEXT, [w0])
    start = _softmax([4.0, 1.0, 2.5, 0.5, -1.0])
    end = _softmax([3.0, 0.0, 1.0, 3.0, 0.25])
    assert answer.text == "" and answer.probability == pytest.approx(start[0] * end[0], rel=1e-6)


# ---- 7. SQuAD scores -----------------------------------------------------------------------------------------------


def test_squad_scores_follow_squads_normalisation_and_token_f1() -> None:
    predictions = ["The Eiffel Tower", "in paris", "a big red dog!", "", "berlin", "An apple.", "paris paris"]
    references = [["eiffel tower"], ["Paris", "in Paris, France"], ["the red dog"], [""], ["rome"], ["apple"],
                  ["paris"]]
    # By hand, after lower-casing and dropping punctuation and a/an/the:
    # 1. "eiffel tower" == "eiffel tower": exact, F1 1.
    # 2. [in, paris] vs [paris]: P 1/2, R 1 -> 2/3; vs [in, paris, france]: P 1, R 2/3 -> 4/5; the best: 4/5.
    # 3. [big, red, dog] vs [red, dog]: P 2/3, R 1 -> 4/5.
    # 4. "" vs "": exact, F1 1.   5. berlin vs rome: 0.   6. "apple" == "apple": exact.
    # 7. [paris, paris] vs [paris]: one common token, P 1/2, R 1 -> 2/3.
    f1 = [Fraction(1), Fraction(4, 5), Fraction(4, 5), Fraction(1), Fraction(0), Fraction(1), Fraction(2, 3)]
    scores = SquadMetric().compute(predictions=predictions, references=references)
    # torchmetrics adds the scores up in float32: equal to the fractions to float32's precision.
    assert scores == {"exact_match": pytest.approx(3 / 7, rel=1e-6), "f1": pytest.approx(float(sum(f1) / 7), rel=1e-6)}
    assert SquadMetric().compute(predictions=[""], references=[[""]]) == {"exact_match": 1.0, "f1": 1.0}
    assert SquadMetric().compute(predictions=["paris"], references=[[""]]) == {"exact_match": 0.0, "f1": 0.0}
    assert SquadMetric().compute(predictions=[""], references=[["paris"]]) == {"exact_match": 0.0, "f1": 0.0}


def test_compute_metrics_reads_one_answer_per_row_from_all_its_windows(bert_tokenizer) -> None:
    """Evaluation scores rows, not windows: logits that point at each window's label give every row its answer
    (and an unanswerable row no answer), whatever the windows without the answer say; the padding evaluation adds
    beyond a window's length is never read."""
    spec = TaskSpec(name="where", type="extractive_qa", doc_stride=8, version_2_with_negative=True)
    rows = _with_row(qa_rows(3, seed=9, filler=(10, 16)), 2, answers={"text": [], "answer_start": []})
    data = preprocess_task(spec, raw("validation", **rows), bert_tokenizer, max_seq_length=32)["validation"]
    assert len(data) > 3
    width = max(len(ids) for ids in data["input_ids"]) + 4
    logits = np.full((len(data), width, 2), -10.0, dtype=np.float32)
    for i, (ids, (start, end)) in enumerate(zip(data["input_ids"], data["labels"])):
        logits[i, start, 0] = logits[i, end, 1] = 10.0  # [CLS] (0, 0) where the window does not hold the answer
        logits[i, len(ids):] = 100.0  # padding, as evaluation pads windows of different lengths
    task_type = get_task_type(spec)
    assert task_type.predictions(spec, logits, data) == [answer_of(rows, 0)[0], answer_of(rows, 1)[0], ""]
    scores = task_type.compute_metrics(spec, logits, np.array(data["labels"]), data)
    assert scores == {"exact_match": pytest.approx(1.0), "f1": pytest.approx(1.0)}
    # Row 0 now says "no answer" in every window: 2 of 3 right.
    logits[np.array(data["example_id"]) == 0] = np.where(np.arange(width)[:, None] == 0, 10.0, -10.0)
    assert task_type.predictions(spec, logits, data)[0] == ""
    scores = task_type.compute_metrics(spec, logits, np.array(data["labels"]), data)
    assert scores == {"exact_match": pytest.approx(2 / 3, rel=1e-6), "f1": pytest.approx(2 / 3, rel=1e-6)}


# ---- 8. training, evaluation, prediction and the pipeline ----------------------------------------------------------


def far_answer_rows(n: int, seed: int) -> dict[str, list]:
    """Rows whose place sits far into a context much longer than a 32-token window."""
    return qa_rows(n, seed, filler=(28, 36))


@pytest.fixture(scope="module")
def trained(bert_tokenizer, tmp_path_factory: pytest.TempPathFactory):
    """The toy QA task trained for a few seconds: 32 rows (most of them in 2-3 windows of 32 tokens)."""
    train = preprocess_task(WHERE, raw(**qa_rows(32, seed=0)), bert_tokenizer, max_seq_length=32)["train"]
    model = make_model(bert_tokenizer.vocab_size, specs=(WHERE,), seed=0)
    args = MultiTaskTrainingArguments(
        str(tmp_path_factory.mktemp("qa_out")), use_cpu=True, report_to=[], save_strategy="no", disable_tqdm=True,
        learning_rate=1e-2, num_train_epochs=8, per_device_train_batch_size=16, per_device_eval_batch_size=16,
        seed=0, logging_strategy="no",
    )
    trainer = MultiTaskTrainer(model=model, args=args, processing_class=bert_tokenizer,
                               train_dataset={"where": train})
    trainer.train()
    model.eval()
    return trainer


def test_training_learns_the_toy_task_and_evaluation_scores_squad(trained, bert_tokenizer) -> None:
    rows = qa_rows(24, seed=100)
    dev = preprocess_task(WHERE, raw("validation", **rows), bert_tokenizer, max_seq_length=32)["validation"]
    assert len(dev) > len(rows["id"])  # several windows per row for some
    metrics = trained.evaluate({"where": dev})
    assert metrics["eval_where_f1"] >= 0.9 and metrics["eval_where_exact_match"] >= 0.9
    assert 0.0 <= metrics["eval_where_exact_match"] <= metrics["eval_where_f1"] <= 1.0
    assert metrics["eval_combined_score"] == metrics["eval_where_f1"]  # f1 is the main metric
    assert metrics["eval_where_loss"] < 0.5


def test_predict_gives_one_answer_per_question_and_an_id_to_answer_file(trained, bert_tokenizer, caplog) -> None:
    rows = qa_rows(16, seed=200, filler=(6, 24))
    test = preprocess_task(WHERE, raw("test", **rows), bert_tokenizer, max_seq_length=32)["test"]
    assert len(test) > 16
    output = trained.predict({"where": test})
    answers = output.predictions["where"]
    truth = [answer_of(rows, i)[0] for i in range(16)]
    assert len(answers) == 16
    assert sum(a == t for a, t in zip(answers, truth)) >= 14, list(zip(answers, truth))
    assert output.metrics["test_where_exact_match"] == pytest.approx(sum(a == t for a, t in zip(answers, truth)) / 16)
    text = get_task_type(WHERE).prediction_file(WHERE, answers, test)
    assert json.loads(text) == dict(zip(rows["id"], answers))
    assert list(json.loads(text)) == rows["id"]  # in row order

    # Ids that repeat would keep one answer per id in a JSON object: the file is keyed by row index instead.
    repeated = preprocess_task(WHERE, raw("test", **{**rows, "id": ["same"] * 16}), bert_tokenizer,
                               max_seq_length=32)["test"]
    with caplog.at_level(logging.WARNING, logger="mtl_hf"):
        text = get_task_type(WHERE).prediction_file(WHERE, answers, repeated)
    assert json.loads(text) == {str(i): answer for i, answer in enumerate(answers)}
    assert "the ids of 15 of 16 rows occur more than once" in caplog.text

    # Unlabelled: the same answers, and no scores.
    unlabelled = {key: value for key, value in rows.items() if key != "answers"}
    test = preprocess_task(WHERE, raw("test", **unlabelled), bert_tokenizer, max_seq_length=32)["test"]
    output = trained.predict({"where": test})
    assert output.predictions["where"] == answers
    assert not any(key.startswith("test_where_") and key != "test_where_loss" for key in output.metrics
                   if key.endswith(("_f1", "_exact_match")))


def test_the_pipeline_answers_a_long_context_with_character_offsets(trained, bert_tokenizer) -> None:
    pipe = MultiTaskPipeline(trained.model, bert_tokenizer, max_length=32)
    rows = far_answer_rows(6, seed=300)
    for i in range(6):
        context = rows["context"][i]
        place, start = answer_of(rows, i)
        assert len(bert_tokenizer.tokenize(context)) > 2 * 32 and start > len(context) / 3
        result = pipe({"question": rows["question"][i], "context": context})
        assert set(result) == {"where"}
        answer = result["where"]
        assert set(answer) == {"answer", "score", "start", "end"}
        assert (answer["answer"], answer["start"], answer["end"]) == (place, start, start + len(place)), i
        assert context[answer["start"]:answer["end"]] == answer["answer"]
        assert 0.0 < answer["score"] <= 1.0


def test_the_pipeline_gives_the_answers_predict_gives(trained, bert_tokenizer) -> None:
    """Train/serve consistency: the same rows encoded by preprocessing and by the pipeline give the same answers,
    however the pipeline batches them."""
    rows = qa_rows(10, seed=400, filler=(4, 30))
    test = preprocess_task(WHERE, raw("test", **rows), bert_tokenizer, max_seq_length=32)["test"]
    predicted = trained.predict({"where": test}).predictions["where"]
    items = [{"question": q, "context": c} for q, c in zip(rows["question"], rows["context"])]
    for batch_size in (8, 3, 1):
        pipe = MultiTaskPipeline(trained.model, bert_tokenizer, max_length=32, batch_size=batch_size)
        served = pipe(items)
        assert [result["where"]["answer"] for result in served] == predicted, batch_size
    assert sum(p == answer_of(rows, i)[0] for i, p in enumerate(predicted)) >= 9


def test_a_mixed_request_routes_strings_to_classification_and_questions_to_qa(trained, bert_tokenizer) -> None:
    qa_only = MultiTaskPipeline(trained.model, bert_tokenizer, max_length=32)
    question = {"question": "where does mary live ?", "context": "the old mary lives in berlin today ."}
    alone = qa_only(question)["where"]
    assert alone["answer"] == "berlin"
    with pytest.raises(ValueError, match=r"Input 0 is a text \(a string\), which no requested task reads"):
        qa_only("the market rose")
    with pytest.raises(ValueError, match=r"Input 1 is a text"):
        qa_only([question, "the market rose"])

    model = copy.deepcopy(trained.model)
    model.add_task(TOPIC)  # a fresh head: the encoder and the QA head are untouched
    mixed = MultiTaskPipeline(model, bert_tokenizer, max_length=32)
    results = mixed(["the market shares rose", question, "the team won the match"])
    assert [set(result) for result in results] == [{"topic"}, {"where"}, {"topic"}]
    assert results[1]["where"] == {**alone, "score": pytest.approx(alone["score"], rel=1e-6)}
    assert all(results[i]["topic"]["label"] in TOPIC.labels for i in (0, 2))
    assert mixed(question, tasks="where")["where"] == {**alone, "score": pytest.approx(alone["score"], rel=1e-6)}
    with pytest.raises(ValueError, match=r"Input 0 is a question"):
        mixed([question], tasks="topic")


def test_a_question_that_leaves_little_room_is_served_and_one_that_fills_the_window_refused(trained, bert_tokenizer):
    pipe = MultiTaskPipeline(trained.model, bert_tokenizer, max_length=32)
    context = "the old john lives in rome today and the new mary works in london ."
    # 14 + 12 tokens: 3 of 32 left for the context, fewer than doc_stride 8; the pipeline still answers it.
    long_question = "where does john live " + " ".join(["the"] * 12) + " ?"
    answer = pipe({"question": long_question, "context": context})["where"]
    assert context[answer["start"]:answer["end"]] == answer["answer"] and 0.0 < answer["score"] <= 1.0
    with pytest.raises(ValueError, match=r"the question alone fills the window of max_seq_length=32 tokens"):
        pipe({"question": " ".join(["the"] * 29) + " ?", "context": context})
    with pytest.raises(ValueError, match=r"the question and the context must not be empty"):
        pipe({"question": "where does john live ?", "context": "  "})


def _spans(results: list[dict]) -> list[tuple[str, int, int]]:
    return [(r["where"]["answer"], r["where"]["start"], r["where"]["end"]) for r in results]


def test_an_answer_does_not_depend_on_the_other_questions_of_its_batch(bert_tokenizer, tmp_path: Path) -> None:
    """A question's windows are its own: served in one batch with a long question (one that leaves fewer than
    doc_stride tokens for its context), questions over long contexts get the answers they get alone, which are the
    answers of training's windows. An untrained head, whose answers change with the windows, shows any difference."""
    model = make_model(bert_tokenizer.vocab_size, specs=(WHERE,), seed=1).eval()
    pipe = MultiTaskPipeline(model, bert_tokenizer, max_length=32)
    rows = far_answer_rows(8, seed=700)
    items = [{"question": q, "context": c} for q, c in zip(rows["question"], rows["context"])]
    long_question = {"question": "where does john live " + " ".join(["the"] * 12) + " ?",
                     "context": "john lives in rome ."}
    alone = pipe(items, batch_size=1)
    # Training's windows (doc_stride 8) give the answers served alone.
    test = preprocess_task(WHERE, raw("test", **rows), bert_tokenizer, max_seq_length=32)["test"]
    assert [answer for answer, _, _ in _spans(alone)] == _predict(model, bert_tokenizer, test, tmp_path)
    together = pipe([*items, long_question], batch_size=16)[:8]
    assert _spans(together) == _spans(alone)
    for mixed, single in zip(together, alone):
        assert mixed["where"]["score"] == pytest.approx(single["where"]["score"], rel=1e-5)


def _predict(model: MultiTaskModel, tokenizer, dataset: datasets.Dataset, folder: Path) -> list[str]:
    """`MultiTaskTrainer.predict`'s answers for a QA split, without training."""
    args = MultiTaskTrainingArguments(str(folder / "out"), use_cpu=True, report_to=[], save_strategy="no",
                                      disable_tqdm=True, per_device_eval_batch_size=8)
    trainer = MultiTaskTrainer(model=model, args=args, processing_class=tokenizer)
    return trainer.predict({"where": dataset}).predictions["where"]


def test_qa_tasks_with_different_doc_strides_are_each_served_their_own_windows(trained, bert_tokenizer) -> None:
    model = copy.deepcopy(trained.model)
    model.add_task(TaskSpec(name="where4", type="extractive_qa", doc_stride=4))
    model.heads["where4"].load_state_dict(model.heads["where"].state_dict())  # the same head, other windows
    rows = far_answer_rows(3, seed=600)
    items = [{"question": q, "context": c} for q, c in zip(rows["question"], rows["context"])]
    alone = MultiTaskPipeline(trained.model, bert_tokenizer, max_length=32)(items)
    both = MultiTaskPipeline(model, bert_tokenizer, max_length=32)(items)
    for i, result in enumerate(both):
        assert set(result) == {"where", "where4"}
        expected = alone[i]["where"]  # its own encoding, untouched by the other task's
        assert result["where"] == {**expected, "score": pytest.approx(expected["score"], rel=1e-6)}
        place, start = answer_of(rows, i)
        assert (result["where4"]["answer"], result["where4"]["start"]) == (place, start)


# ---- 9. collation --------------------------------------------------------------------------------------------------


def test_qa_labels_are_stacked_start_and_end_positions_not_padded(bert_tokenizer) -> None:
    data = preprocess_task(WHERE, raw(**qa_rows(6, seed=7, filler=(1, 20))), bert_tokenizer,
                           max_seq_length=32)["train"]
    features = [data[i] for i in range(6)]
    lengths = [len(f["input_ids"]) for f in features]
    assert len(set(lengths)) > 1  # the batch really needs padding
    batch = MultiTaskDataCollator(bert_tokenizer)(features)
    assert batch["labels"].dtype == torch.long and batch["labels"].shape == (6, 2)
    assert batch["labels"].tolist() == [f["labels"] for f in features]
    assert batch["input_ids"].shape == (6, max(lengths)) and batch["task"] == "where"
    assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "labels", "task"}
    # Padded to a multiple of 8 as well, the labels stay (6, 2).
    batch = MultiTaskDataCollator(bert_tokenizer, pad_to_multiple_of=8)(features)
    assert batch["labels"].shape == (6, 2) and batch["input_ids"].shape[1] % 8 == 0

    # NER rows in the same collator are still padded per token with -100.
    ner = preprocess_task(NER, raw(**ner_rows(4, seed=1)), bert_tokenizer, max_seq_length=32)["train"]
    rows = [ner[i] for i in range(4)]
    batch = MultiTaskDataCollator(bert_tokenizer)(rows)
    width = max(len(r["input_ids"]) for r in rows)
    assert batch["labels"].shape == (4, width)
    for row, labels in zip(rows, batch["labels"].tolist()):
        assert labels == row["labels"] + [-100] * (width - len(row["labels"]))


# ---- review fixes ----------------------------------------------------------------------------------------------------


def test_a_byte_level_tokenizer_gives_offsets_that_start_with_the_context(roberta_tokenizer_dir: Path) -> None:
    """RoBERTa-style tokenizers get add_prefix_space for pre-split words; their post-processor trims offsets with the
    same setting, else the first context token's offsets start a character late: an answer at the very start of the
    context would be trained as "no answer" and a predicted span there would lose its first character."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(roberta_tokenizer_dir)
    rows = {"question": ["where does john live ?"], "context": ["john lives in paris ."],
            "answers": [{"text": ["john"], "answer_start": [0]}]}
    window = preprocess_task(QA, raw(**rows), tokenizer, max_seq_length=48)["train"][0]
    start, end = window["labels"]
    assert start > 0
    offsets = window["offset_mapping"]
    assert window["context"][offsets[start][0]:offsets[end][1]] == "john"
    first_context_token = next(span for span in offsets if span[0] >= 0)
    assert first_context_token[0] == 0

    torch.manual_seed(0)
    model = MultiTaskModel(MultiTaskConfig(encoder=tiny_encoder_config("roberta", len(tokenizer)), tasks=[QA])).eval()
    with torch.no_grad():  # a head that points at the first context token for both start and end
        model.heads["qa"].classifier.weight.zero_()
        model.heads["qa"].classifier.bias.zero_()
    pipe = MultiTaskPipeline(model, tokenizer, max_length=48)
    [(encoded, windows)] = get_task_type(QA).pipeline_encode(QA, pipe.tokenizer, [
        {"question": rows["question"][0], "context": rows["context"][0]}], 48)
    logits = np.zeros((len(windows[0][1]), 2))
    logits[start] = 5.0
    assert best_answer(QA, rows["context"][0], [(logits, windows[0][1])]).text == "john"


def test_label_smoothing_spreads_over_the_inputs_own_positions(bert_tokenizer, tmp_path: Path) -> None:
    """Cross-entropy's label smoothing spreads ε over every class: over the masked padding positions it would be
    infinite. Smoothed, a padded row's loss is the unpadded row's, and without padding it is torch's own."""
    torch.manual_seed(0)
    logits = torch.randn(3, 7, 2)
    labels = torch.tensor([[1, 2], [0, 0], [3, 5]])
    expected = sum(torch.nn.functional.cross_entropy(logits[..., k], labels[:, k], label_smoothing=0.1)
                   for k in (0, 1)) / 2
    assert span_loss(logits, labels, label_smoothing=0.1).item() == pytest.approx(expected.item(), rel=1e-6)
    padded = torch.cat([logits, torch.randn(3, 4, 2)], dim=1)
    padded[:, 7:] = torch.finfo(padded.dtype).min  # as SpanHead masks padding
    assert span_loss(padded, labels, label_smoothing=0.1).item() == pytest.approx(expected.item(), rel=1e-6)

    data = preprocess_task(WHERE, raw(**qa_rows(16, seed=3, filler=(1, 12))), bert_tokenizer, max_seq_length=48)
    trainer = MultiTaskTrainer(
        model=make_model(bert_tokenizer.vocab_size, specs=(WHERE,)),
        args=MultiTaskTrainingArguments(str(tmp_path / "out"), use_cpu=True, report_to=[], save_strategy="no",
                                        disable_tqdm=True, max_steps=2, per_device_train_batch_size=8,
                                        label_smoothing_factor=0.1),
        train_dataset={"where": data["train"]}, eval_dataset={"where": data["train"]}, processing_class=bert_tokenizer)
    trainer.train()
    assert math.isfinite(trainer.evaluate()["eval_where_loss"])


def test_a_squad_file_without_answers_is_unlabelled_and_one_with_some_names_the_question(tmp_path: Path) -> None:
    document = json.loads(json.dumps(SQUAD))
    for article in document["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                del qa["answers"]
    path = tmp_path / "test.json"
    path.write_text(json.dumps(document))
    test = load_raw_datasets(TaskSpec(name="qa", type="extractive_qa", test_file=str(path)))["test"]
    assert test.column_names == ["id", "title", "context", "question"]
    assert test["id"] == ["a1", "a2", "b1", "c1"]
    document["data"][0]["paragraphs"][1]["qas"][0]["answers"] = [{"text": "london", "answer_start": 14}]
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"Task 'qa', split 'test'.*test\.json: data\[0\]\.paragraphs\[0\]\.qas\[0\]: "
                                         r"no 'answers', which other questions of the file have"):
        load_raw_datasets(TaskSpec(name="qa", type="extractive_qa", test_file=str(path)))


def test_the_first_rows_of_a_split_are_whole_questions(bert_tokenizer) -> None:
    """--max_eval_samples N keeps N questions with all their windows, not N windows (which would cut a question's
    context short)."""
    data = preprocess_task(WHERE, raw(**qa_rows(6, seed=4, filler=(4, 30))), bert_tokenizer, max_seq_length=32)["train"]
    first = get_task_type(WHERE).first_rows(WHERE, data, 3)
    assert sorted(set(first["example_id"])) == [0, 1, 2]
    assert len(first) == sum(example < 3 for example in data["example_id"]) > 3


def test_answers_that_fit_in_no_window_are_counted(bert_tokenizer, caplog) -> None:
    rows = qa_rows(3, seed=5)
    context = "john lives in " + " ".join(["paris"] * 20) + " ."
    rows = _with_row(rows, 1, context=context,
                     answers={"text": [" ".join(["paris"] * 20)], "answer_start": [len("john lives in ")]})
    with caplog.at_level(logging.WARNING, logger="mtl_hf"):
        data = preprocess_task(WHERE, raw(**rows), bert_tokenizer, max_seq_length=32)["train"]
    assert "the answer of 1 of 3 questions is wholly inside none of their windows" in caplog.text
    assert all(labels == [0, 0] for labels, example in zip(data["labels"], data["example_id"]) if example == 1)


def test_answers_in_a_csv_cell_are_a_json_object(bert_tokenizer, tmp_path: Path) -> None:
    rows = qa_rows(3, seed=6)
    path = tmp_path / "train.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question", "context", "answers"])
        for question, context, answers in zip(rows["question"], rows["context"], rows["answers"]):
            writer.writerow([question, context, json.dumps(answers)])
        writer.writerow([rows["question"][0], rows["context"][0], "paris"])
    spec = TaskSpec(name="where", type="extractive_qa", train_file=str(path))
    with pytest.raises(ValueError, match=r"row 3 \(.*train\.csv, line 5\), column 'answers': expected "
                                         r"\{\"text\": \[...\], \"answer_start\": \[...\]\} \(in CSV/TSV, as a JSON "
                                         r"object\), got str 'paris'"):
        preprocess_task(spec, load_raw_datasets(spec), bert_tokenizer, max_seq_length=48)
    path.write_text("\n".join(path.read_text().splitlines()[:-1]) + "\n")
    data = preprocess_task(spec, load_raw_datasets(spec), bert_tokenizer, max_seq_length=48)["train"]
    assert data["answer_texts"] == [answers["text"] for answers in rows["answers"]]


def test_a_requested_task_without_an_input_of_its_kind_is_refused(bert_tokenizer) -> None:
    model = make_model(bert_tokenizer.vocab_size, specs=(WHERE, TOPIC)).eval()
    pipe = MultiTaskPipeline(model, bert_tokenizer, max_length=48)
    question = {"question": "where does john live ?", "context": "john lives in rome ."}
    with pytest.raises(ValueError, match=r"Task\(s\) topic read a text \(a string\), and no input of the request is "
                                         "one"):
        pipe(question, tasks=["topic", "where"])
    assert set(pipe(question)) == {"where"}  # all tasks: each input gets those of its kind


def test_a_tokenizer_that_pads_on_the_left_is_refused_naming_the_task(bert_tokenizer) -> None:
    tokenizer = copy.deepcopy(bert_tokenizer)
    tokenizer.padding_side = "left"
    with pytest.raises(ValueError, match=r"Task 'where', split 'train'.*pads on the right.*pads on the left"):
        preprocess_task(WHERE, raw(**qa_rows(2, seed=0)), tokenizer, max_seq_length=48)


def test_continuing_a_squad_1_head_on_squad_2_keeps_it(bert_tokenizer, tmp_path: Path, caplog) -> None:
    """The no-answer target is the first token with or without version_2_with_negative: the trained head keeps its
    meaning, so a task file may turn it on (with a warning), as it may change the other QA settings."""
    import run_mtl

    model_dir = tmp_path / "trained"
    MultiTaskModel(MultiTaskConfig(encoder=tiny_encoder_config("bert", bert_tokenizer.vocab_size),
                                   tasks=[WHERE])).save_pretrained(model_dir)
    config = transformers.AutoConfig.from_pretrained(model_dir)
    spec = TaskSpec(name="where", type="extractive_qa", version_2_with_negative=True, null_score_diff_threshold=1.5)
    given = {"where": {"name", "type", "version_2_with_negative", "null_score_diff_threshold"}}
    with caplog.at_level(logging.WARNING):
        [spec] = run_mtl.continue_trained_tasks(config, [spec], given, tmp_path / "tasks.yaml")
    assert spec.version_2_with_negative is True and spec.doc_stride == 8 and spec.null_score_diff_threshold == 1.5
    assert "version_2_with_negative True from the task file replaces the trained model's False" in caplog.text
