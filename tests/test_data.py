"""Tests of the data pipeline: task files, loading (CoNLL, JSONL, CSV, TSV, local dataset folders), label
resolution, tokenization with label alignment, the bad-input errors, caching and the collator."""

from __future__ import annotations

import codecs
import json
import logging
import os
import socket
import time
from pathlib import Path

import datasets
import pytest
import torch
from tokenizers import Tokenizer
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from mtl_hf.configuration_multitask import MultiTaskConfig, TaskSpec
from mtl_hf.data import (
    MultiTaskDataCollator,
    align_labels_with_tokens,
    continuation_label_ids,
    load_and_preprocess,
    load_raw_datasets,
    load_task_file,
    load_tokenizer,
    preprocess_task,
    read_conll,
    resolve_labels,
    task_file_card,
    task_file_entries,
)
from mtl_hf.metrics import SeqevalMetric
from tests.conftest import tiny_encoder_config

NER_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
NER_IDS = {label: i for i, label in enumerate(NER_LABELS)}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_conll(path: Path, sentences: list[list[tuple[str, str]]], docstart: bool = True) -> Path:
    lines = ["-DOCSTART- -X- -X- O", ""] if docstart else []
    for sentence in sentences:
        lines += [f"{word} NNP I-NP {tag}" for word, tag in sentence] + [""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def ner_spec(tmp_path: Path, rows: list[dict], split: str = "train", **kwargs) -> TaskSpec:
    path = write_jsonl(tmp_path / f"ner_{split}.jsonl", rows)
    kwargs.setdefault("labels", NER_LABELS)
    return TaskSpec(name="ner", type="ner", **{f"{split}_file": str(path)}, **kwargs)


def topic_spec(tmp_path: Path, rows: list[dict], split: str = "train", **kwargs) -> TaskSpec:
    path = write_jsonl(tmp_path / f"topic_{split}.jsonl", rows)
    kwargs.setdefault("labels", ["business", "sport"])
    return TaskSpec(name="topic", type="classification", **{f"{split}_file": str(path)}, **kwargs)


def process(spec: TaskSpec, tokenizer, tmp_path: Path, **kwargs) -> datasets.DatasetDict:
    raw = load_raw_datasets(spec, cache_dir=str(tmp_path / "cache"))
    return preprocess_task(resolve_labels(spec, raw), raw, tokenizer, **kwargs)


def old_padding_scheme(word_labels: list[int], num_tokens: int) -> list[int]:
    """The original design: word labels padded to the sub-token length."""
    return word_labels + [-100] * (num_tokens - len(word_labels))


def word_tags(example: dict, labels: list[str]) -> list[str]:
    """The word-level tags of a tokenized NER row: the labels of the words' first sub-tokens."""
    return [labels[label] for label in example["labels"] if label != -100]


def conll_task(tmp_path: Path, splits: dict[str, list[list[tuple[str, str]]]], **kwargs) -> TaskSpec:
    files = {
        f"{split}_file": str(write_conll(tmp_path / f"{split}.conll", sentences)) for split, sentences in splits.items()
    }
    return TaskSpec(name="ner", type="ner", **files, **kwargs)


# --------------------------------------------------------------------------------------------------------------------
# Task files
# --------------------------------------------------------------------------------------------------------------------


def test_load_task_file_yaml_resolves_paths_relative_to_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "config"
    (folder / "local_hub").mkdir(parents=True)
    (folder / "tasks.yaml").write_text(
        "tasks:\n"
        "  - name: topic\n"
        "    type: classification\n"
        "    train_file: data/topic/train.jsonl\n"
        "    validation_file: /abs/dev.jsonl\n"
        "  - name: ner\n"
        "    type: ner\n"
        "    dataset_name: local_hub\n"
        "    weight: 2\n"
        "    labels: [O, B-PER, I-PER]\n"
        "  - name: hub\n"
        "    type: ner\n"
        "    dataset_name: conll2003\n"
    )
    topic, ner, hub = load_task_file(folder / "tasks.yaml")
    assert topic.train_file == str(folder / "data/topic/train.jsonl")
    assert topic.validation_file == "/abs/dev.jsonl"
    assert (topic.text_column_name, topic.label_column_name) == ("text", "label")
    assert ner.dataset_name == str(folder / "local_hub")
    assert ner.labels == ["O", "B-PER", "I-PER"] and ner.weight == 2.0
    assert (ner.text_column_name, ner.label_column_name) == ("tokens", "ner_tags")
    assert hub.dataset_name == "conll2003"  # not a folder next to the file: a hub name


def test_load_task_file_json(tmp_path: Path) -> None:
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps({"tasks": [{"name": "ner", "type": "ner", "train_file": "train.conll"}]}))
    (spec,) = load_task_file(path)
    assert spec.train_file == str(tmp_path / "train.conll")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.yaml", "tasks: [name: x\n", "is not valid YAML"),
        ("bad.json", "{tasks: }", "is not valid JSON"),
        ("none.yaml", "other: 1\n", "top-level key 'tasks'"),
        ("extra.yaml", "tasks: [{name: a, type: ner}]\nseed: 1\n", "unknown top-level key(s) seed"),
        ("empty.yaml", "tasks: []\n", "non-empty list"),
        ("scalar.yaml", "tasks: [3]\n", "task #1 is not a mapping"),
        ("field.yaml", "tasks:\n  - {name: a, type: ner, colour: red}\n",
         "task #1 (line 2): Task 'a': unknown field(s) colour"),
        ("type.yaml", "tasks:\n  - {name: a, type: sentiment}\n", "task #1 (line 2): Task 'a': field 'type'"),
        ("noname.yaml", "tasks:\n  - {type: ner}\n", "missing required field 'name'"),
        ("twice.yaml", "tasks:\n  - {name: a, type: ner}\n  - {name: a, type: ner}\n", "used by more than one"),
        ("tasks.txt", "tasks: []\n", "expected a .yaml, .yml or .json file"),
    ],
)
def test_load_task_file_errors_name_the_file(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ValueError, match="Task file") as info:
        load_task_file(path)
    assert str(path) in str(info.value) and message in str(info.value)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("latin1.yaml", "tasks:\n  - name: caf\xe9\n".encode("latin-1"),
         "', line 2, column 14: not valid UTF-8 (byte 0xe9); save the file as UTF-8"),
        ("utf16.yaml", "tasks: []\n".encode("utf-16"), "' is UTF-16 encoded"),
        ("empty.yaml", b"", "' is empty"),
        ("comments.yaml", b"# later\n", "' is empty"),
        # PyYAML puts the line and column on lines of their own: they must be on the first.
        ("indent.yaml", b"tasks:\n  - name: a\n    type: ner\n  - name: b\n     type: ner\n",
         "' is not valid YAML: line 5, column 10: mapping values are not allowed here"),
        ("flow.yaml", b"tasks: [\n  {name: a, type: ner\n",
         "' is not valid YAML: line 3, column 1: expected ',' or '}', but got '<stream end>' (while parsing a flow "
         "mapping at line 2, column 3)"),
        ("trailing.json", b'{"tasks": [\n  {"name": "a",}\n]}',
         "' is not valid JSON: line 2, column 16: Expecting property name enclosed in double quotes"),
        ("null.yaml", b"tasks:\n", "': 'tasks' must be a non-empty list of task entries, got nothing"),
        ("mapping.yaml", b"tasks: {a: 1}\n", "': 'tasks' must be a non-empty list of task entries, got mapping"),
        ("list.yaml", b"- name: a\n", "': expected a mapping with the top-level key 'tasks', found a list"),
        ("intkey.yaml", b"tasks:\n  - {name: a, type: ner, 1: x}\n",
         "', task #1 (line 2): Task 'a': unknown field(s) 1;"),
        ("case.yaml", b"tasks:\n  - name: ner\n    type: ner\n  - name: NER\n    type: ner\n",
         "', task #2 (line 4): Task 'NER': field 'name' differs from task 'ner' in letter case only"),
        ("dotname.json", b'{"tasks": [{"name": "a.b", "type": "ner"}]}', "', task #1: Task name 'a.b' (field 'name')"),
    ],
)
def test_task_file_errors_are_one_line_naming_file_and_place(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError) as info:
        load_task_file(path)
    assert str(info.value).startswith(f"Task file '{path}") and message in str(info.value)
    assert "\n" not in str(info.value)


def test_task_file_card_section_gives_the_cards_metadata(tmp_path: Path) -> None:
    path = tmp_path / "tasks.yaml"
    path.write_text("card:\n  license: mit\n  language: [en, de]\n  tags: news\n  datasets: conll2003\n"
                    "tasks:\n  - {name: ner, type: ner, train_file: a.conll}\n")
    assert task_file_card(path) == {"license": "mit", "language": ["en", "de"], "tags": ["news"],
                                    "datasets": ["conll2003"]}
    assert len(load_task_file(path)) == 1
    path.write_text("tasks:\n  - {name: ner, type: ner}\n")
    assert task_file_card(path) == {}


@pytest.mark.parametrize(("card", "message"), [
    ("card: apache-2.0", "section 'card': expected a mapping with the keys license, language, tags, datasets, found "
                         "a string"),
    ("card: {licence: mit}", "section 'card': unknown key(s) licence; known keys: license, language, tags, datasets"),
    ("card: {license: [mit]}", "section 'card': 'license' must be one license identifier (such as apache-2.0), got "
                               "list ['mit']"),
    ("card: {tags: [news, 3]}", "section 'card': 'tags' must be a string or a list of non-empty strings, got list "
                                "['news', 3]"),
])
def test_a_bad_card_section_names_the_file_and_the_key(tmp_path: Path, card: str, message: str) -> None:
    path = tmp_path / "tasks.yaml"
    path.write_text(f"{card}\ntasks:\n  - {{name: ner, type: ner}}\n")
    with pytest.raises(ValueError) as info:
        task_file_card(path)
    assert str(info.value) == f"Task file '{path}', {message}"


def test_task_file_with_utf8_bom_and_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "tasks.json").write_bytes(codecs.BOM_UTF8 + b'{"tasks": [{"name": "ner", "type": "ner", '
                                          b'"train_file": "train.conll"}]}')
    (tmp_path / "tasks.yaml").write_bytes(
        codecs.BOM_UTF8 + b"tasks:\n  - {name: ner, type: ner, train_file: a.conll}\n"
    )
    assert load_task_file(tmp_path / "tasks.json")[0].train_file == str(tmp_path / "train.conll")
    assert load_task_file(tmp_path / "tasks.yaml")[0].train_file == str(tmp_path / "a.conll")
    assert task_file_entries(tmp_path / "tasks.yaml") == [{"name": "ner", "type": "ner", "train_file": "a.conll"}]


def test_blank_data_paths_are_not_resolved_to_the_task_file_folder(tmp_path: Path) -> None:
    (tmp_path / "tasks.yaml").write_text("tasks:\n  - {name: ner, type: ner, train_file: ' '}\n")
    with pytest.raises(ValueError, match=r"task #1 \(line 2\): Task 'ner': field 'train_file' must be a non-empty"):
        load_task_file(tmp_path / "tasks.yaml")


# --------------------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------------------


def test_read_conll_columns_docstart_and_sentences(tmp_path: Path) -> None:
    path = tmp_path / "mixed.conll"
    path.write_text(
        "-DOCSTART- -X- O O\n\n"
        "John NNP B-NP B-PER\nlives VBZ B-VP O\n\n\n"  # several blank lines: still one boundary
        "New York\tNNP\tB-LOC\n"  # tab-separated: the word may hold a space
        "-DOCSTART- -X- O O\n"  # a document break also ends a sentence
        "Paris B-LOC"  # last sentence without a final newline
    )
    examples = list(read_conll(str(path), 0, 0, "tokens", "ner_tags"))
    assert examples == [
        {"tokens": ["John", "lives"], "ner_tags": ["B-PER", "O"]},
        {"tokens": ["New York"], "ner_tags": ["B-LOC"]},
        {"tokens": ["Paris"], "ner_tags": ["B-LOC"]},
    ]


def test_load_conll_splits_with_custom_column_names(tmp_path: Path) -> None:
    train = write_conll(tmp_path / "train.conll", [[("John", "B-PER"), ("lives", "O")], [("Paris", "B-LOC")]])
    dev = write_conll(tmp_path / "dev.txt", [[("Mary", "B-PER")]], docstart=False)
    test = write_conll(tmp_path / "test.iob", [[("Rome", "B-LOC")]])
    spec = TaskSpec(
        name="ner", type="ner", train_file=str(train), validation_file=str(dev), test_file=str(test),
        text_column_name="words", label_column_name="tags",
    )
    raw = load_raw_datasets(spec, cache_dir=str(tmp_path / "cache"))
    assert list(raw) == ["train", "validation", "test"]
    assert raw["train"][:] == {"words": [["John", "lives"], ["Paris"]], "tags": [["B-PER", "O"], ["B-LOC"]]}
    assert raw["validation"]["words"][:] == [["Mary"]]
    assert raw["train"].cache_files, "CoNLL data must live in datasets' on-disk cache so that map results are cached"


def test_conll_line_without_tag_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "train.conll"
    path.write_text("John B-PER\nlives O\n\nParis\n")
    spec = TaskSpec(name="ner", type="ner", train_file=str(path))
    with pytest.raises(ValueError) as info:
        load_raw_datasets(spec, cache_dir=str(tmp_path / "cache"))
    message = str(info.value)
    assert "Task 'ner', split 'train'" in message and f"{path}, line 4" in message and "two columns" in message
    assert not isinstance(info.value, datasets.exceptions.DatasetGenerationError)


def test_utf8_byte_order_marks_are_dropped(tmp_path: Path, bert_tokenizer) -> None:
    """Windows editors start UTF-8 files with a BOM: it must not glue onto `-DOCSTART-` (which then became a
    sentence of its own), a JSON key or a CSV column name, nor shift the lines that errors name."""
    conll = tmp_path / "train.conll"
    conll.write_bytes(codecs.BOM_UTF8 + b"-DOCSTART- -X- O O\n\nJohn B-PER\nlives O\n\nParis B-LOC\n")
    jsonl = tmp_path / "dev.jsonl"
    jsonl.write_bytes(codecs.BOM_UTF8 + b'{"tokens": ["Mary"], "ner_tags": ["B-PER"]}\n')
    spec = TaskSpec(name="ner", type="ner", train_file=str(conll), validation_file=str(jsonl))
    raw = load_raw_datasets(spec, cache_dir=str(tmp_path / "cache"))
    assert raw["train"][:] == {"tokens": [["John", "lives"], ["Paris"]], "ner_tags": [["B-PER", "O"], ["B-LOC"]]}
    assert raw["validation"][:] == {"tokens": [["Mary"]], "ner_tags": [["B-PER"]]}

    csv_path = tmp_path / "train.csv"
    csv_path.write_bytes(codecs.BOM_UTF8 + b"text,label\nstocks rose,business\nteam won,weather\n")
    topic = TaskSpec(name="topic", type="classification", labels=["business", "sport"], train_file=str(csv_path))
    raw = load_raw_datasets(topic, cache_dir=str(tmp_path / "cache"))
    assert raw["train"].column_names == ["text", "label"]
    with pytest.raises(ValueError) as info:
        preprocess_task(topic, raw, bert_tokenizer, max_seq_length=16)
    assert str(info.value).startswith(f"Task 'topic', split 'train', row 1 ({csv_path}, line 3), column 'label'")

    broken = tmp_path / "broken.jsonl"
    broken.write_bytes(codecs.BOM_UTF8 + b'{"text": "a", "label": "b"}\n{"text": \n')
    with pytest.raises(ValueError) as info:
        load_raw_datasets(TaskSpec(name="x", type="classification", train_file=str(broken)), cache_dir=str(tmp_path))
    assert f"could not read {str(broken)!r}, line 2: not valid JSON" in str(info.value)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".conll"])
def test_invalid_utf8_names_file_line_and_column(tmp_path: Path, suffix: str) -> None:
    """Checked in blocks of 1 MiB: a character split across two blocks is fine, and a bad byte after the first
    block is still named by its line and column."""
    row = {".jsonl": '{"tokens": ["a"], "ner_tags": ["O"]}\n', ".csv": "tokens,ner_tags\n", ".conll": "a O\n"}[suffix]
    lines = [row.encode()] * ((1 << 20) // len(row) - 1)
    body = b"".join(lines)
    path = tmp_path / f"train{suffix}"
    if suffix == ".conll":  # "é" (2 bytes) starts on the last byte of the first block
        path.write_bytes(body + b"a" * ((1 << 20) - 1 - len(body)) + "\u00e9 O\n".encode())
        raw = load_raw_datasets(TaskSpec(name="x", type="ner", train_file=str(path)), cache_dir=str(tmp_path / "c"))
        assert raw["train"][0]["tokens"][-1] == "a" * ((1 << 20) - 1 - len(body)) + "\u00e9"
    path.write_bytes(body + row.encode() + b"caf\xe9" + row.encode())
    with pytest.raises(ValueError) as info:
        load_raw_datasets(TaskSpec(name="x", type="ner", train_file=str(path)), cache_dir=str(tmp_path / "cache"))
    assert str(info.value) == (
        f"Task 'x', split 'train': file {str(path)!r}, line {len(lines) + 2}, column 4: not valid UTF-8 (byte 0xe9); "
        "save the file as UTF-8"
    )


def test_a_json_document_error_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "train.json"
    path.write_text('[\n  {"text": "a", "label": "b"},\n  {"text": "c" "label": "d"}\n]\n')
    with pytest.raises(ValueError) as info:
        load_raw_datasets(TaskSpec(name="x", type="classification", train_file=str(path)), cache_dir=str(tmp_path))
    assert str(info.value).startswith(f"Task 'x', split 'train': could not read {str(path)!r}, line 3: not valid JSON")


def test_conll_cache_follows_file_changes(tmp_path: Path) -> None:
    path = write_conll(tmp_path / "train.conll", [[("John", "B-PER")]])
    spec = TaskSpec(name="ner", type="ner", train_file=str(path))
    first = load_raw_datasets(spec, cache_dir=str(tmp_path / "cache"))["train"]
    assert first["tokens"][:] == [["John"]]
    write_conll(path, [[("Mary", "B-PER"), ("smiled", "O")]])
    second = load_raw_datasets(spec, cache_dir=str(tmp_path / "cache"))["train"]
    assert second["tokens"][:] == [["Mary", "smiled"]]


def test_load_jsonl_csv_and_tsv_splits(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": "stocks rose", "label": "business"}])
    (tmp_path / "dev.csv").write_text('text,label\n"team won, again",sport\nNA,business\n')
    (tmp_path / "test.tsv").write_text('text\tlabel\n"quoted" text\tsport\n')
    spec = TaskSpec(
        name="topic", type="classification", train_file=str(train),
        validation_file=str(tmp_path / "dev.csv"), test_file=str(tmp_path / "test.tsv"),
    )
    raw = load_raw_datasets(spec, cache_dir=str(tmp_path / "cache"))
    assert raw["train"][:] == {"text": ["stocks rose"], "label": ["business"]}
    # "NA" is a text, not a missing value; TSV quotes are literal.
    assert raw["validation"][:] == {"text": ["team won, again", "NA"], "label": ["sport", "business"]}
    assert raw["test"][:] == {"text": ['"quoted" text'], "label": ["sport"]}


def test_load_local_dataset_folder_with_classlabel_features(tmp_path: Path) -> None:
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    features = datasets.Features(
        {
            "tokens": datasets.List(datasets.Value("string")),
            "ner_tags": datasets.List(datasets.ClassLabel(names=["O", "B-PER", "I-PER"])),
        }
    )
    rows = {"tokens": [["john", "smith"], ["mary"]], "ner_tags": [[1, 2], [1]]}
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(folder / "train.parquet"))
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(folder / "validation.parquet"))
    spec = TaskSpec(name="ner", type="ner", dataset_name=str(folder))
    raw = load_raw_datasets(spec, cache_dir=str(tmp_path / "cache"))
    assert set(raw) == {"train", "validation"}
    assert resolve_labels(spec, raw).labels == ["O", "B-PER", "I-PER"]


def test_load_errors(tmp_path: Path) -> None:
    cache = str(tmp_path / "cache")
    with pytest.raises(ValueError, match="Task 'x': no data"):
        load_raw_datasets(TaskSpec(name="x", type="ner"), cache_dir=cache)
    with pytest.raises(ValueError, match="either 'dataset_name' or data files"):
        load_raw_datasets(TaskSpec(name="x", type="ner", dataset_name="d", train_file="t.conll"), cache_dir=cache)
    with pytest.raises(FileNotFoundError, match="Task 'x', split 'validation': file .*missing.jsonl"):
        load_raw_datasets(TaskSpec(name="x", type="ner", validation_file=str(tmp_path / "missing.jsonl")))
    (tmp_path / "a.xml").write_text("<a/>")
    with pytest.raises(ValueError, match="unsupported file type '.xml'"):
        load_raw_datasets(TaskSpec(name="x", type="ner", train_file=str(tmp_path / "a.xml")), cache_dir=cache)
    conll = write_conll(tmp_path / "a.conll", [[("a", "O")]])
    with pytest.raises(ValueError, match="CoNLL column file, which holds NER data only"):
        load_raw_datasets(TaskSpec(name="x", type="classification", train_file=str(conll)), cache_dir=cache)
    (tmp_path / "empty.conll").write_text("-DOCSTART- -X- O O\n\n")
    with pytest.raises(ValueError, match="Task 'x', split 'train': .*empty.conll: no sentences"):
        load_raw_datasets(TaskSpec(name="x", type="ner", train_file=str(tmp_path / "empty.conll")), cache_dir=cache)


def test_dataset_name_that_cannot_be_loaded_is_a_one_line_error(tmp_path: Path) -> None:
    # conftest sets HF_HUB_OFFLINE/HF_DATASETS_OFFLINE: datasets refuses at once with a ConnectionError.
    spec = TaskSpec(name="ner", type="ner", dataset_name="no-such-user/no_such_dataset")
    start = time.monotonic()
    with pytest.raises(ValueError) as info:
        load_raw_datasets(spec, cache_dir=str(tmp_path / "cache"))
    message = str(info.value)
    assert message.startswith("Task 'ner': cannot load dataset 'no-such-user/no_such_dataset': ConnectionError: ")
    assert "\n" not in message and time.monotonic() - start < 30


def test_dataset_name_without_network_fails_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Online mode with no network: refused before datasets' retries (about 40 s) even begin."""
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)

    def no_dns(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    def no_download(*args, **kwargs):
        raise AssertionError("load_dataset must not be tried without a network")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setattr(datasets, "load_dataset", no_download)
    spec = TaskSpec(name="ner", type="ner", dataset_name="conll2003")
    with pytest.raises(ValueError) as info:
        load_raw_datasets(spec, cache_dir=str(tmp_path / "cache"))
    message = str(info.value)
    assert message.startswith("Task 'ner': cannot load dataset 'conll2003': the Hugging Face Hub (")
    assert "cannot be reached" in message and "HF_DATASETS_OFFLINE=1" in message


# --------------------------------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------------------------------


def test_resolve_labels_priority(tmp_path: Path) -> None:
    rows = [{"text": "a", "label": "sport"}, {"text": "b", "label": "business"}, {"text": "c", "label": "sport"}]
    spec = topic_spec(tmp_path, rows, labels=None)
    raw = load_raw_datasets(spec, cache_dir=str(tmp_path / "cache"))
    assert resolve_labels(spec, raw).labels == ["business", "sport"]  # sorted set of the train labels
    fixed = TaskSpec(**{**spec.__dict__, "labels": ["sport", "business"]})
    assert resolve_labels(fixed, raw).labels == ["sport", "business"]  # given order wins

    ner = ner_spec(tmp_path, [{"tokens": ["a", "b"], "ner_tags": ["O", "B-PER"]}], labels=None)
    assert resolve_labels(ner, load_raw_datasets(ner, cache_dir=str(tmp_path / "cache"))).labels == ["B-PER", "O"]


def test_int_labels_need_a_label_list(tmp_path: Path, bert_tokenizer) -> None:
    rows = [{"text": "stocks rose", "label": 0}, {"text": "team won", "label": 1}]
    spec = topic_spec(tmp_path, rows, labels=None)
    raw = load_raw_datasets(spec, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError) as info:
        resolve_labels(spec, raw)
    assert str(info.value).startswith(
        f"Task 'topic', split 'train', row 0 ({tmp_path / 'topic_train.jsonl'}, line 1), column 'label': labels are "
        "numbers (e.g. 0)"
    )
    with_list = TaskSpec(**{**spec.__dict__, "labels": ["business", "sport"]})
    out = preprocess_task(resolve_labels(with_list, raw), raw, bert_tokenizer, max_seq_length=16)
    assert out["train"]["labels"][:] == [0, 1]


def test_classlabel_ints_are_mapped_by_name_when_labels_reorder_them(tmp_path: Path, bert_tokenizer) -> None:
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])})
    folder = tmp_path / "sentiment"
    folder.mkdir()
    datasets.Dataset.from_dict({"text": ["good", "bad"], "label": [1, 0]}, features=features).to_parquet(
        str(folder / "train.parquet")
    )
    spec = TaskSpec(name="sentiment", type="classification", dataset_name=str(folder), labels=["pos", "neg"])
    out = process(spec, bert_tokenizer, tmp_path, max_seq_length=16)
    assert out["train"]["labels"][:] == [0, 1]  # "pos" is id 0 in the task's own order


# Raw CoNLL-2003 style IOB1: an entity starts with I-; B- only separates two adjacent entities of one type.
IOB1_TRAIN = [
    [("John", "I-PER"), ("Smith", "I-PER"), ("visited", "O"), ("Paris", "I-LOC")],
    [("Acme", "I-ORG"), ("Google", "B-ORG"), ("won", "O")],
]
IOB1_VALIDATION = [[("Mary", "I-PER"), ("Rome", "I-LOC")]]


def test_iob1_is_detected_and_converted_to_iob2_in_every_split(tmp_path: Path, bert_tokenizer, caplog) -> None:
    spec = conll_task(tmp_path, {"train": IOB1_TRAIN, "validation": IOB1_VALIDATION})
    raw = load_raw_datasets(spec, cache_dir=str(tmp_path / "cache"))
    with caplog.at_level(logging.WARNING, logger="mtl_hf.data"):
        resolved = resolve_labels(spec, raw)
        out = preprocess_task(resolved, raw, bert_tokenizer, max_seq_length=32)
    assert resolved.tag_scheme == "IOB2"
    # The B- forms the conversion needs join the sorted labels (B-ORG was in the data already).
    assert resolved.labels == ["B-LOC", "B-ORG", "B-PER", "I-LOC", "I-ORG", "I-PER", "O"]
    assert word_tags(out["train"][0], resolved.labels) == ["B-PER", "I-PER", "O", "B-LOC"]
    assert word_tags(out["train"][1], resolved.labels) == ["B-ORG", "B-ORG", "O"]
    assert word_tags(out["validation"][0], resolved.labels) == ["B-PER", "B-LOC"]  # a new type starts an entity
    assert "Task 'ner': the tags are IOB1" in caplog.text
    assert "task 'ner', split 'train': converted IOB1 to IOB2: 3 of 7 tags changed from I- to B-" in caplog.text
    assert "task 'ner', split 'validation': converted IOB1 to IOB2: 2 of 2 tags changed" in caplog.text


def test_given_labels_keep_their_order_and_gain_the_b_labels_iob1_needs(tmp_path: Path, caplog) -> None:
    spec = conll_task(tmp_path, {"train": IOB1_TRAIN}, labels=["O", "I-PER", "I-LOC", "I-ORG", "B-ORG"])
    raw = load_raw_datasets(spec, cache_dir=str(tmp_path / "cache"))
    with caplog.at_level(logging.WARNING, logger="mtl_hf.data"):
        resolved = resolve_labels(spec, raw)
    assert resolved.labels == ["O", "I-PER", "I-LOC", "I-ORG", "B-ORG", "B-LOC", "B-PER"]
    assert "Task 'ner': added the labels B-LOC, B-PER after the given ones" in caplog.text


def test_iob1_classlabel_ids_are_converted_by_name(tmp_path: Path, bert_tokenizer) -> None:
    folder = tmp_path / "iob1_dataset"
    folder.mkdir()
    features = datasets.Features(
        {
            "tokens": datasets.List(datasets.Value("string")),
            "ner_tags": datasets.List(datasets.ClassLabel(names=["O", "I-PER", "B-PER"])),
        }
    )
    rows = {"tokens": [["john", "smith", "mary"], ["anna"]], "ner_tags": [[1, 1, 2], [1]]}
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(folder / "train.parquet"))
    spec = TaskSpec(name="ner", type="ner", dataset_name=str(folder))
    raw = load_raw_datasets(spec, cache_dir=str(tmp_path / "cache"))
    resolved = resolve_labels(spec, raw)
    assert (resolved.tag_scheme, resolved.labels) == ("IOB2", ["O", "I-PER", "B-PER"])
    out = preprocess_task(resolved, raw, bert_tokenizer, max_seq_length=16)["train"]
    assert word_tags(out[0], resolved.labels) == ["B-PER", "I-PER", "B-PER"]
    assert word_tags(out[1], resolved.labels) == ["B-PER"]


def test_iob2_data_is_left_as_it_is(tmp_path: Path, bert_tokenizer, caplog) -> None:
    sentences = [[("John", "B-PER"), ("Smith", "I-PER"), ("met", "O"), ("Mary", "B-PER")], [("Paris", "B-LOC")]]
    spec = conll_task(tmp_path, {"train": sentences})
    raw = load_raw_datasets(spec, cache_dir=str(tmp_path / "cache"))
    with caplog.at_level(logging.WARNING, logger="mtl_hf.data"):
        resolved = resolve_labels(spec, raw)
        out = preprocess_task(resolved, raw, bert_tokenizer, max_seq_length=16)["train"]
    assert (resolved.tag_scheme, resolved.labels) == ("IOB2", ["B-LOC", "B-PER", "I-PER", "O"])
    assert word_tags(out[0], resolved.labels) == ["B-PER", "I-PER", "O", "B-PER"]
    assert "IOB1" not in caplog.text


def test_bioes_tags_are_detected_preprocessed_and_scored(tmp_path: Path, bert_tokenizer) -> None:
    sentences = [
        [("John", "B-PER"), ("Smith", "E-PER"), ("visited", "O"), ("Paris", "S-LOC")],
        [("Johnson", "S-PER"), ("won", "O")],  # john ##son
    ]
    spec = conll_task(tmp_path, {"train": sentences, "validation": sentences})
    raw = load_raw_datasets(spec, cache_dir=str(tmp_path / "cache"))
    resolved = resolve_labels(spec, raw)
    assert (resolved.tag_scheme, resolved.labels) == ("IOBES", ["B-PER", "E-PER", "O", "S-LOC", "S-PER"])
    out = preprocess_task(resolved, raw, bert_tokenizer, max_seq_length=16, label_all_tokens=True)
    S_PER = resolved.labels.index("S-PER")
    assert out["train"][1]["labels"] == [-100, S_PER, S_PER, resolved.labels.index("O"), -100]  # as run_ner.py
    references = [word_tags(example, resolved.labels) for example in out["validation"]]
    assert references == [[tag for _, tag in sentence] for sentence in sentences]
    predictions = [["B-PER", "E-PER", "O", "O"], ["B-PER", "O"]]  # LOC missed; PER of row 2 has no end: no entity
    scores = SeqevalMetric().compute(predictions=predictions, references=references, scheme=resolved.tag_scheme)
    # gold: PER, LOC, PER; predicted: PER (right) -> precision 1, recall 1/3
    assert scores == pytest.approx(
        {"precision": 1.0, "recall": 1 / 3, "f1": 0.5, "token_accuracy": 4 / 6, "LOC_f1": 0.0, "PER_f1": 2 / 3}
    )


def test_pos_tags_are_prefix_less_io_tags_scored_per_word(tmp_path: Path, bert_tokenizer) -> None:
    sentences = [[("the", "DT"), ("team", "NN"), ("won", "VBD")], [("John", "NNP"), ("played", "VBD")]]
    spec = conll_task(tmp_path, {"train": sentences, "validation": sentences})
    raw = load_raw_datasets(spec, cache_dir=str(tmp_path / "cache"))
    resolved = resolve_labels(spec, raw)
    assert (resolved.tag_scheme, resolved.labels) == ("IO", ["DT", "NN", "NNP", "VBD"])
    out = preprocess_task(resolved, raw, bert_tokenizer, max_seq_length=16)
    references = [word_tags(example, resolved.labels) for example in out["validation"]]
    assert references == [["DT", "NN", "VBD"], ["NNP", "VBD"]]
    predictions = [["DT", "NN", "NN"], ["NNP", "VBD"]]
    scores = SeqevalMetric().compute(predictions=predictions, references=references, scheme=resolved.tag_scheme)
    # NN: precision 1/2, recall 1 -> 2/3; VBD: precision 1, recall 1/2 -> 2/3; DT and NNP: 1
    assert scores == pytest.approx(
        {"token_accuracy": 4 / 5, "macro_f1": (1 + 2 / 3 + 1 + 2 / 3) / 4, "DT_f1": 1.0, "NN_f1": 2 / 3,
         "NNP_f1": 1.0, "VBD_f1": 2 / 3}
    )


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        (["B-PER", "PER"], "the tags mix scheme prefixes (e.g. 'B-PER' in split 'train', row 0 ({path}, line 3)) "
                           "with tags without one (e.g. 'PER' in split 'train', row 1 ({path}, line 6))"),
        (["S-PER", "U-LOC"], "the tags mix IOBES prefixes (E-, S-; S- in split 'train', row 0 ({path}, line 3)) with "
                             "BILOU prefixes (L-, U-; U- in split 'train', row 1 ({path}, line 6))"),
    ],
)
def test_mixed_tag_schemes_are_an_error_naming_the_task(tmp_path: Path, tags: list[str], message: str) -> None:
    spec = conll_task(tmp_path, {"train": [[("john", tags[0]), ("lives", "O")], [("paris", tags[1])]]})
    with pytest.raises(ValueError) as info:
        resolve_labels(spec, load_raw_datasets(spec, cache_dir=str(tmp_path / "cache")))
    assert str(info.value).startswith(f"Task 'ner': {message.format(path=tmp_path / 'train.conll')}")


def test_a_given_tag_scheme_must_match_the_data(tmp_path: Path) -> None:
    spec = conll_task(tmp_path, {"train": [[("john", "U-PER"), ("lives", "O")]]}, tag_scheme="IOBES")
    with pytest.raises(ValueError) as info:
        resolve_labels(spec, load_raw_datasets(spec, cache_dir=str(tmp_path / "cache")))
    assert str(info.value) == (
        f"Task 'ner': field 'tag_scheme' is 'IOBES', but the tags are BILOU (in {tmp_path / 'train.conll'})"
    )


# --------------------------------------------------------------------------------------------------------------------
# Alignment
# --------------------------------------------------------------------------------------------------------------------


def test_alignment_first_subtoken_gets_the_tag(tmp_path: Path, bert_tokenizer) -> None:
    """'johnson' -> john ##son and 'londoner' -> london ##er; the original scheme (word labels padded to the
    sub-token length) would put B-PER on [CLS] and shift every later tag by one or two positions."""
    rows = [
        {"tokens": ["Johnson", "lives", "in", "London"], "ner_tags": ["B-PER", "O", "O", "B-LOC"]},
        # "\u200b" (zero-width space) yields no sub-token: it must not shift the tags after it.
        {"tokens": ["the", "londoner", "\u200b", "met", "Peter"], "ner_tags": ["O", "B-PER", "O", "O", "B-PER"]},
    ]
    out = process(ner_spec(tmp_path, rows), bert_tokenizer, tmp_path, max_seq_length=32)["train"]
    first, second = out[0], out[1]
    assert bert_tokenizer.convert_ids_to_tokens(first["input_ids"]) == [
        "[CLS]", "john", "##son", "lives", "in", "london", "[SEP]"
    ]
    O, B_PER, B_LOC = NER_IDS["O"], NER_IDS["B-PER"], NER_IDS["B-LOC"]
    assert first["labels"] == [-100, B_PER, -100, O, O, B_LOC, -100]
    assert first["word_ids"] == [-1, 0, 0, 1, 2, 3, -1]
    assert bert_tokenizer.convert_ids_to_tokens(second["input_ids"]) == [
        "[CLS]", "the", "london", "##er", "met", "peter", "[SEP]"
    ]
    assert second["labels"] == [-100, O, B_PER, -100, O, B_PER, -100]
    assert second["word_ids"] == [-1, 0, 1, 1, 3, 4, -1]
    # Every input word is counted, the one without a sub-token too, so predictions line up with the input's words.
    assert (first["num_words"], second["num_words"]) == (4, 5)
    assert first["task"] == "ner"
    assert set(out.column_names) == {
        "input_ids", "token_type_ids", "attention_mask", "labels", "task", "word_ids", "num_words"
    }

    # The original padding scheme fails on exactly these sentences.
    for row, example in zip(rows, (first, second)):
        word_labels = [NER_IDS[tag] for tag in row["ner_tags"]]
        assert old_padding_scheme(word_labels, len(example["input_ids"])) != example["labels"]


def test_align_labels_with_tokens_unit() -> None:
    word_ids = [None, 0, 0, 0, 1, 3, 3, None]  # word 2 produced no sub-token
    word_labels = [NER_IDS["B-PER"], NER_IDS["O"], NER_IDS["O"], NER_IDS["B-LOC"]]
    assert align_labels_with_tokens(word_ids, word_labels) == [-100, 1, -100, -100, 0, 3, -100, -100]
    continuation = continuation_label_ids(NER_LABELS)
    assert continuation == [0, 2, 2, 4, 4]
    assert align_labels_with_tokens(word_ids, word_labels, continuation) == [-100, 1, 2, 2, 0, 3, 4, -100]
    assert continuation_label_ids(["O", "B-MISC"]) == [0, 1]  # no I- form: the B- tag is kept
    # IOBES and BILOU as run_ner.py treats them: only B- continues as I-; E-/S-/L-/U- keep their own id.
    assert continuation_label_ids(["O", "B-PER", "I-PER", "E-PER", "S-PER"]) == [0, 2, 2, 3, 4]
    assert continuation_label_ids(["O", "B-PER", "I-PER", "L-PER", "U-PER"]) == [0, 2, 2, 3, 4]
    assert continuation_label_ids(["NN", "VB"]) == [0, 1]


def test_label_all_tokens_only_on_train(tmp_path: Path, bert_tokenizer) -> None:
    row = {"tokens": ["Johnson", "smiths"], "ner_tags": ["B-PER", "I-PER"]}  # john ##son, smith ##s
    train = write_jsonl(tmp_path / "train.jsonl", [row])
    dev = write_jsonl(tmp_path / "dev.jsonl", [row])
    spec = TaskSpec(name="ner", type="ner", labels=NER_LABELS, train_file=str(train), validation_file=str(dev))
    out = process(spec, bert_tokenizer, tmp_path, max_seq_length=32, label_all_tokens=True)
    B, I = NER_IDS["B-PER"], NER_IDS["I-PER"]
    assert out["train"][0]["labels"] == [-100, B, I, I, I, -100]
    assert out["validation"][0]["labels"] == [-100, B, -100, I, -100, -100]


def test_roberta_tokenizer_gets_prefix_space_and_aligns(tmp_path: Path, roberta_tokenizer_dir: Path) -> None:
    tokenizer = load_tokenizer(roberta_tokenizer_dir)
    assert tokenizer.add_prefix_space
    words = ["johnson", "lives", "in", "london"]
    encoded = tokenizer(words, is_split_into_words=True)
    # Every pre-split word is encoded as it would be after a space in running text.
    assert encoded.tokens() == tokenizer(" " + " ".join(words)).tokens()
    rows = [{"tokens": words, "ner_tags": ["B-PER", "O", "O", "B-LOC"]}]
    example = process(ner_spec(tmp_path, rows), tokenizer, tmp_path, max_seq_length=32)["train"][0]
    firsts = [i for i, w in enumerate(example["word_ids"]) if w >= 0 and w != example["word_ids"][i - 1]]
    assert [example["labels"][i] for i in firsts] == [NER_IDS[t] for t in rows[0]["ner_tags"]]
    assert sum(label != -100 for label in example["labels"]) == len(words)
    assert "token_type_ids" not in example

    saved = tmp_path / "saved"
    tokenizer.save_pretrained(saved)
    assert load_tokenizer(saved)(words, is_split_into_words=True).tokens() == encoded.tokens()


def test_generic_byte_level_tokenizer_gets_prefix_space(tmp_path: Path, roberta_tokenizer_dir: Path) -> None:
    """A tokenizer saved as a bare tokenizer.json (no model-specific class) is fixed on its backend."""
    backend = Tokenizer.from_file(str(roberta_tokenizer_dir / "tokenizer.json"))
    PreTrainedTokenizerFast(tokenizer_object=backend).save_pretrained(tmp_path / "generic")
    plain = AutoTokenizer.from_pretrained(tmp_path / "generic")
    fixed = load_tokenizer(tmp_path / "generic")
    words = ["johnson", "lives"]
    assert plain(words, is_split_into_words=True).tokens()[1] == "john"  # the problem: no word-start marker
    assert fixed(words, is_split_into_words=True).tokens()[1] == "Ġjohn"


def test_bert_tokenizer_is_left_as_is(tokenizer_dir: Path) -> None:
    tokenizer = load_tokenizer(tokenizer_dir)
    assert tokenizer.is_fast and "add_prefix_space" not in tokenizer.init_kwargs


def prefixed_word_tokens(tokenizer, words: list[str]) -> list[str]:
    """Each word encoded on its own after a space, as a byte-level BPE tokenizer sees a word in running text."""
    return [token for word in words for token in tokenizer(" " + word, add_special_tokens=False).tokens()]


def test_classification_is_encoded_as_the_pipeline_encodes_it(tmp_path: Path, roberta_tokenizer_dir: Path) -> None:
    """Words as split_words splits them, is_split_into_words=True, and the tokenizer set up for it even when it was
    loaded without add_prefix_space: "john" keeps its word-start marker, and "," is a word of its own, as in
    MultiTaskPipeline (tokenizer(text) gave "john" and "," without it)."""
    plain = AutoTokenizer.from_pretrained(roberta_tokenizer_dir)
    assert plain("john lives").tokens()[1] == "john"  # as loaded: no marker on the first word
    text = "john lives, today"
    example = process(topic_spec(tmp_path, [{"text": text, "label": "sport"}]), plain, tmp_path)["train"][0]
    expected = ["<s>", *prefixed_word_tokens(plain, ["john", "lives", ",", "today"]), "</s>"]
    assert plain.convert_ids_to_tokens(example["input_ids"]) == expected


def test_ner_with_an_unprepared_byte_level_tokenizer_is_encoded_as_prepared(
    tmp_path: Path, roberta_tokenizer_dir: Path
) -> None:
    plain = AutoTokenizer.from_pretrained(roberta_tokenizer_dir)
    rows = [{"tokens": ["john", "lives"], "ner_tags": ["B-PER", "O"]}]
    example = process(ner_spec(tmp_path, rows), plain, tmp_path, max_seq_length=32)["train"][0]
    assert plain.convert_ids_to_tokens(example["input_ids"]) == [
        "<s>", *prefixed_word_tokens(plain, ["john", "lives"]), "</s>"
    ]


# --------------------------------------------------------------------------------------------------------------------
# Truncation, skipped rows, caching
# --------------------------------------------------------------------------------------------------------------------


def test_ner_truncation_is_counted_and_reported(tmp_path: Path, bert_tokenizer, caplog) -> None:
    rows = [
        {"tokens": ["a", "b", "c"], "ner_tags": ["O", "O", "O"]},  # 5 tokens with [CLS]/[SEP]: fits in 6
        {"tokens": ["a", "b", "c", "d", "e"], "ner_tags": ["O"] * 5},  # words d, e lost
        {"tokens": ["a", "b", "c", "smiths"], "ner_tags": ["O"] * 4},  # smith kept, ##s cut: no word lost
    ]
    with caplog.at_level(logging.WARNING, logger="mtl_hf.data"):
        out = process(ner_spec(tmp_path, rows), bert_tokenizer, tmp_path, max_seq_length=6)
    assert out.truncation_report == {"train": (1, 3)}
    assert "task 'ner', split 'train': 1 of 3 sentences truncated to max_seq_length=6" in caplog.text
    assert "_truncated" not in out["train"].column_names
    assert [len(ids) for ids in out["train"]["input_ids"]] == [5, 6, 6]


def test_classification_truncation_is_counted_and_reported(tmp_path: Path, bert_tokenizer, caplog) -> None:
    train = [{"text": "stocks rose", "label": "business"}, {"text": "the team won the cup today", "label": "sport"}]
    dev = [{"text": "the coach said the team will win", "label": "sport"}]
    spec = TaskSpec(
        name="topic", type="classification", labels=["business", "sport"],
        train_file=str(write_jsonl(tmp_path / "train.jsonl", train)),
        validation_file=str(write_jsonl(tmp_path / "dev.jsonl", dev)),
    )
    with caplog.at_level(logging.WARNING, logger="mtl_hf.data"):
        out = process(spec, bert_tokenizer, tmp_path, max_seq_length=6)
    assert out.truncation_report == {"train": (1, 2), "validation": (1, 1)}
    assert "task 'topic', split 'train': 1 of 2 texts truncated to max_seq_length=6" in caplog.text
    assert [len(ids) for ids in out["train"]["input_ids"]] == [4, 6]
    assert "_truncated" not in out["train"].column_names


def test_max_seq_length_is_capped_by_the_encoder(tmp_path: Path, bert_tokenizer, caplog) -> None:
    rows = [{"tokens": ["a"] * 100, "ner_tags": ["O"] * 100}]
    encoder = tiny_encoder_config("bert", 100, max_position_embeddings=16)
    with caplog.at_level(logging.WARNING, logger="mtl_hf.data"):
        out = process(ner_spec(tmp_path, rows), bert_tokenizer, tmp_path, max_seq_length=128, encoder_config=encoder)
    assert len(out["train"][0]["input_ids"]) == 16
    assert "max_seq_length=128 is longer than" in caplog.text and "max_position_embeddings=16) allow" in caplog.text

    # RoBERTa's positions start after the padding index: 12 positions hold 10 tokens. A saved model's config
    # (MultiTaskConfig) is read through its encoder.
    roberta = MultiTaskConfig(encoder=tiny_encoder_config("roberta", 100, max_position_embeddings=12), tasks=[])
    topic = topic_spec(tmp_path, [{"text": "the coach said the team will win the cup today", "label": "sport"}])
    _, processed = load_and_preprocess(
        [topic], bert_tokenizer, max_seq_length=32, cache_dir=str(tmp_path / "cache"), encoder_config=roberta
    )
    assert len(processed["topic"]["train"][0]["input_ids"]) == 10
    assert processed["topic"].truncation_report == {"train": (1, 1)}


def test_max_seq_length_is_capped_by_the_tokenizer(tmp_path: Path, bert_tokenizer, caplog) -> None:
    rows = [{"tokens": ["a"] * 100, "ner_tags": ["O"] * 100}]
    with caplog.at_level(logging.WARNING, logger="mtl_hf.data"):
        out = process(ner_spec(tmp_path, rows), bert_tokenizer, tmp_path, max_seq_length=512)
    assert len(out["train"][0]["input_ids"]) == bert_tokenizer.model_max_length == 64
    assert "model_max_length=64" in caplog.text and "1 of 1 sentences truncated to max_seq_length=64" in caplog.text


EMPTY_TEXT_ROWS = [
    {"text": "", "label": "sport"},
    {"text": "stocks rose", "label": "business"},
    {"text": "   ", "label": "sport"},
    {"text": "team won", "label": "sport"},
]


def test_empty_train_texts_are_skipped_and_counted_with_original_row_numbers(
    tmp_path: Path, bert_tokenizer, caplog
) -> None:
    with caplog.at_level(logging.WARNING, logger="mtl_hf.data"):
        out = process(topic_spec(tmp_path, EMPTY_TEXT_ROWS), bert_tokenizer, tmp_path, max_seq_length=16)
    assert out["train"]["labels"][:] == [0, 1]
    assert out["train"]["task"][:] == ["topic", "topic"]
    assert out.skipped_report == {"train": (2, 4)}
    assert "task 'topic', split 'train': skipped 2 of 4 rows whose text (column 'text') is empty" in caplog.text

    # Error rows are named by their index (and line) in the file, not in the filtered data.
    bad = EMPTY_TEXT_ROWS + [{"text": "a", "label": "weather"}]
    with pytest.raises(ValueError, match=r"row 4 \(.*topic_train.jsonl, line 5\), column 'label': unknown label"):
        process(topic_spec(tmp_path, bad), bert_tokenizer, tmp_path, max_seq_length=16)


@pytest.mark.parametrize("split", ["validation", "test"])
def test_empty_eval_texts_are_kept_so_every_row_gets_a_prediction(tmp_path: Path, bert_tokenizer, split: str) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", [GOOD_TOPIC])
    path = write_jsonl(tmp_path / f"{split}.jsonl", EMPTY_TEXT_ROWS)
    spec = TaskSpec(
        name="topic", type="classification", labels=["business", "sport"], train_file=str(train),
        **{f"{split}_file": str(path)},
    )
    out = process(spec, bert_tokenizer, tmp_path, max_seq_length=16)
    assert len(out[split]) == 4 and out[split]["labels"][:] == [1, 0, 1, 1]
    assert [bert_tokenizer.convert_ids_to_tokens(ids) for ids in out[split]["input_ids"]] == [
        ["[CLS]", "[SEP]"], ["[CLS]", "stocks", "rose", "[SEP]"], ["[CLS]", "[SEP]"], ["[CLS]", "team", "won", "[SEP]"]
    ]
    assert out.skipped_report == {"train": (0, 1), split: (0, 4)}


def test_second_run_is_served_from_the_cache(tmp_path: Path, tokenizer_dir: Path) -> None:
    conll = write_conll(tmp_path / "train.conll", [[("Johnson", "B-PER"), ("lives", "O")]] * 5)
    spec = TaskSpec(name="ner", type="ner", labels=NER_LABELS, train_file=str(conll))

    def run() -> datasets.Dataset:
        # Everything rebuilt from scratch, as in a new process.
        raw = load_raw_datasets(spec, cache_dir=str(tmp_path / "cache"))
        return preprocess_task(spec, raw, load_tokenizer(tokenizer_dir), max_seq_length=16)["train"]

    first = run()
    files = [entry["filename"] for entry in first.cache_files]
    assert files and all(os.path.dirname(f).startswith(str(tmp_path / "cache")) for f in files)
    stamps = {f: os.stat(f).st_mtime_ns for f in files}
    second = run()
    assert [entry["filename"] for entry in second.cache_files] == files
    assert {f: os.stat(f).st_mtime_ns for f in files} == stamps  # not rewritten: the map was not re-run
    assert second[:] == first[:]

    # A different setting is a different cache entry.
    raw = load_raw_datasets(spec, cache_dir=str(tmp_path / "cache"))
    other = preprocess_task(spec, raw, load_tokenizer(tokenizer_dir), max_seq_length=16, label_all_tokens=True)
    assert other["train"].cache_files[0]["filename"] not in files


def test_num_proc_gives_the_same_result(tmp_path: Path, bert_tokenizer) -> None:
    rows = [{"tokens": ["Johnson", "lives", "in", "London"], "ner_tags": ["B-PER", "O", "O", "B-LOC"]}] * 8
    spec = ner_spec(tmp_path, rows)
    single = process(spec, bert_tokenizer, tmp_path, max_seq_length=16)["train"]
    multi = process(spec, bert_tokenizer, tmp_path, max_seq_length=16, num_proc=2, load_from_cache_file=False)
    assert multi["train"][:] == single[:]


def test_load_and_preprocess_returns_specs_with_labels(tmp_path: Path, bert_tokenizer) -> None:
    ner = ner_spec(tmp_path, [{"tokens": ["John"], "ner_tags": ["B-PER"]}], labels=None)
    topic = topic_spec(tmp_path, [{"text": "team won", "label": "sport"}], labels=None)
    specs, processed = load_and_preprocess(
        [ner, topic], bert_tokenizer, max_seq_length=16, cache_dir=str(tmp_path / "cache")
    )
    assert [(s.name, s.labels) for s in specs] == [("ner", ["B-PER"]), ("topic", ["sport"])]
    assert list(processed) == ["ner", "topic"]
    assert processed["topic"]["train"][0]["labels"] == 0


def test_unlabelled_test_split_is_allowed(tmp_path: Path, bert_tokenizer) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", [{"tokens": ["John"], "ner_tags": ["B-PER"]}])
    test = write_jsonl(tmp_path / "test.jsonl", [{"tokens": ["Mary", "smiths"]}])
    spec = TaskSpec(name="ner", type="ner", train_file=str(train), test_file=str(test))
    out = process(spec, bert_tokenizer, tmp_path, max_seq_length=16)
    assert "labels" not in out["test"].column_names
    assert out["test"][0]["word_ids"] == [-1, 0, 1, 1, -1]


# --------------------------------------------------------------------------------------------------------------------
# Bad data: one test per error, each naming task, split, row and column
# --------------------------------------------------------------------------------------------------------------------

GOOD_NER = {"tokens": ["John", "lives"], "ner_tags": ["B-PER", "O"]}
GOOD_TOPIC = {"text": "stocks rose", "label": "business"}


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        ({"tokens": ["John", "lives", "here"], "ner_tags": ["B-PER", "O"]}, "column 'ner_tags': 2 tags for 3 tokens"),
        ({"tokens": [], "ner_tags": []}, "column 'tokens': empty token list"),
        (
            {"tokens": ["John", "lives"], "ner_tags": ["B-PER", "B-ORG"]},
            "column 'ner_tags', word 1: unknown label 'B-ORG'",
        ),
        ({"tokens": ["John", "lives"], "ner_tags": ["B-PER", None]}, "column 'ner_tags', word 1: missing label"),
        ({"tokens": ["John", "lives"], "ner_tags": None}, "column 'ner_tags': missing label"),
        ({"tokens": ["John", "lives"], "ner_tags": [1, 9]}, "column 'ner_tags', word 1: label id 9 is out of range"),
        ({"tokens": None, "ner_tags": ["O"]}, "column 'tokens': missing tokens"),
        ({"tokens": "John lives", "ner_tags": ["B-PER", "O"]}, "column 'tokens': expected a list of words"),
        ({"tokens": ["John", 7], "ner_tags": ["B-PER", "O"]}, "column 'tokens': word 1 is int 7, not a string"),
    ],
)
def test_bad_ner_rows(tmp_path: Path, bert_tokenizer, bad_row: dict, message: str) -> None:
    spec = ner_spec(tmp_path, [GOOD_NER, GOOD_NER, bad_row], split="validation")
    with pytest.raises(ValueError) as info:
        process(spec, bert_tokenizer, tmp_path, max_seq_length=16)
    path = tmp_path / "ner_validation.jsonl"
    assert f"Task 'ner', split 'validation', row 2 ({path}, line 3), {message}" in str(info.value)


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        ({"text": "team won", "label": "weather"}, "column 'label': unknown label 'weather'"),
        ({"text": "team won", "label": None}, "column 'label': missing label"),
        ({"text": "team won"}, "column 'label': missing label"),
        ({"text": "team won", "label": 5}, "column 'label': label id 5 is out of range for 2 labels"),
        ({"text": "team won", "label": ["sport"]}, "column 'label': expected a string or integer label"),
        ({"text": None, "label": "sport"}, "column 'text': missing text"),
        ({"text": 42, "label": "sport"}, "column 'text': expected a string, got int 42"),
        ({"label": "sport"}, "column 'text': missing text"),
    ],
)
def test_bad_classification_rows(tmp_path: Path, bert_tokenizer, bad_row: dict, message: str) -> None:
    spec = topic_spec(tmp_path, [GOOD_TOPIC, bad_row, GOOD_TOPIC])
    with pytest.raises(ValueError) as info:
        process(spec, bert_tokenizer, tmp_path, max_seq_length=16)
    path = tmp_path / "topic_train.jsonl"
    assert f"Task 'topic', split 'train', row 1 ({path}, line 2), {message}" in str(info.value)


def test_bad_csv_label(tmp_path: Path, bert_tokenizer) -> None:
    (tmp_path / "train.csv").write_text("text,label\nstocks rose,business\nteam won,\n")
    spec = TaskSpec(
        name="topic", type="classification", labels=["business", "sport"], train_file=str(tmp_path / "train.csv")
    )
    with pytest.raises(ValueError) as info:
        process(spec, bert_tokenizer, tmp_path, max_seq_length=16)
    path = tmp_path / "train.csv"
    assert f"Task 'topic', split 'train', row 1 ({path}, line 3), column 'label': missing label" in str(info.value)


@pytest.mark.parametrize(
    ("name", "content", "line"),
    [
        # JSON lines: blank and blank-looking lines are skipped by the reader, so the row index alone is not the line.
        (
            "train.jsonl",
            '{"text": "stocks rose", "label": "business"}\n\n\n{"text": "team won", "label": "sport"}\n'
            '   \n{"text": "bad", "label": "weather"}\n',
            6,
        ),
        # CSV: the header is line 1, a quoted field spans two lines and a blank line is skipped.
        ("train.csv", 'text,label\n"stocks\nrose",business\n\nteam won,sport\nbad,weather\n', 6),
        ("train.tsv", "text\tlabel\nstocks rose\tbusiness\n\nteam won\tsport\nbad\tweather\n", 5),
    ],
)
def test_bad_rows_name_the_file_and_line(tmp_path: Path, bert_tokenizer, name: str, content: str, line: int) -> None:
    (tmp_path / name).write_text(content)
    spec = TaskSpec(name="topic", type="classification", labels=["business", "sport"], train_file=str(tmp_path / name))
    with pytest.raises(ValueError) as info:
        process(spec, bert_tokenizer, tmp_path, max_seq_length=16)
    assert str(info.value).startswith(
        f"Task 'topic', split 'train', row 2 ({tmp_path / name}, line {line}), column 'label': unknown label 'weather'"
    )


def test_bad_conll_rows_name_the_line_where_the_sentence_starts(tmp_path: Path, bert_tokenizer) -> None:
    path = tmp_path / "dev.conll"
    path.write_text("-DOCSTART- -X- O O\n\nJohn B-PER\nlives O\n\n\nMary B-PER\n\nParis B-LOC\nrocks B-ORG\n")
    spec = TaskSpec(name="ner", type="ner", labels=["O", "B-PER", "I-PER", "B-LOC"], validation_file=str(path))
    with pytest.raises(ValueError) as info:
        process(spec, bert_tokenizer, tmp_path, max_seq_length=16)
    assert str(info.value).startswith(
        f"Task 'ner', split 'validation', row 2 ({path}, line 9), column 'ner_tags', word 1: unknown label 'B-ORG'"
    )


def test_rows_of_a_json_array_file_are_named_by_row_only(tmp_path: Path, bert_tokenizer) -> None:
    """A .json file holding one array of rows: its rows and lines need not correspond, so no line is given."""
    path = tmp_path / "train.json"
    path.write_text('[{"text": "a b", "label": "business"}, {"text": "c d", "label": "weather"},\n'
                    ' {"text": "e", "label": "sport"}\n]\n')
    spec = TaskSpec(name="topic", type="classification", labels=["business", "sport"], train_file=str(path))
    with pytest.raises(ValueError) as info:
        process(spec, bert_tokenizer, tmp_path, max_seq_length=16)
    assert str(info.value).startswith(f"Task 'topic', split 'train', row 1 ({path}), column 'label': unknown label")


def test_rows_out_of_file_order_are_named_by_row_only(tmp_path: Path, bert_tokenizer) -> None:
    """A split that is no longer the file's rows in order (select, shuffle, filter) gets no line: never a wrong one."""
    spec = topic_spec(tmp_path, [GOOD_TOPIC, {"text": "a", "label": "weather"}])
    raw = load_raw_datasets(spec, cache_dir=str(tmp_path / "cache"))
    raw["train"] = raw["train"].select([1, 0])
    with pytest.raises(ValueError) as info:
        preprocess_task(spec, raw, bert_tokenizer, max_seq_length=16)
    assert str(info.value).startswith("Task 'topic', split 'train', row 0, column 'label': unknown label 'weather'")


@pytest.mark.parametrize(("column", "split"), [("text", "train"), ("label", "train"), ("label", "validation")])
def test_missing_column(tmp_path: Path, bert_tokenizer, column: str, split: str) -> None:
    row = {key: value for key, value in GOOD_TOPIC.items() if key != column}
    spec = topic_spec(tmp_path, [row, row], split=split)
    with pytest.raises(ValueError) as info:
        process(spec, bert_tokenizer, tmp_path, max_seq_length=16)
    path = tmp_path / f"topic_{split}.jsonl"
    assert f"Task 'topic', split '{split}' ({path}): column '{column}' not found" in str(info.value)


def test_missing_ner_column(tmp_path: Path, bert_tokenizer) -> None:
    spec = ner_spec(tmp_path, [{"words": ["John"], "ner_tags": ["B-PER"]}])
    with pytest.raises(ValueError) as info:
        process(spec, bert_tokenizer, tmp_path, max_seq_length=16)
    path = tmp_path / "ner_train.jsonl"
    assert f"Task 'ner', split 'train' ({path}): column 'tokens' not found; columns: words" in str(info.value)


def test_labels_must_be_resolved_first(tmp_path: Path, bert_tokenizer) -> None:
    spec = topic_spec(tmp_path, [GOOD_TOPIC], labels=None)
    raw = load_raw_datasets(spec, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="call resolve_labels"):
        preprocess_task(spec, raw, bert_tokenizer)


# --------------------------------------------------------------------------------------------------------------------
# Collator
# --------------------------------------------------------------------------------------------------------------------


def test_collator_pads_each_batch_dynamically(tmp_path: Path, bert_tokenizer) -> None:
    ner_rows = [
        {"tokens": ["John"], "ner_tags": ["B-PER"]},
        {"tokens": ["Johnson", "lives", "in", "London"], "ner_tags": ["B-PER", "O", "O", "B-LOC"]},
    ]
    ner = process(ner_spec(tmp_path, ner_rows), bert_tokenizer, tmp_path, max_seq_length=32)["train"]
    collator = MultiTaskDataCollator(bert_tokenizer)

    batch = collator([ner[0], ner[1]])
    assert batch["task"] == "ner"
    assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "labels", "task"}
    assert batch["input_ids"].shape == batch["labels"].shape == (2, 7)  # the longest row, not max_seq_length
    assert batch["labels"].dtype == torch.long
    assert batch["labels"][0].tolist() == [-100, NER_IDS["B-PER"], -100, -100, -100, -100, -100]
    assert batch["attention_mask"][0].tolist() == [1, 1, 1, 0, 0, 0, 0]
    assert collator([ner[0]])["input_ids"].shape == (1, 3)

    padded = MultiTaskDataCollator(bert_tokenizer, pad_to_multiple_of=8)([ner[0], ner[1]])
    assert padded["input_ids"].shape == padded["labels"].shape == (2, 8)

    topic_rows = [{"text": "stocks rose", "label": "business"}, {"text": "the team won the cup", "label": "sport"}]
    topic = process(topic_spec(tmp_path, topic_rows), bert_tokenizer, tmp_path, max_seq_length=32)["train"]
    batch = collator([topic[0], topic[1]])
    assert batch["task"] == "topic" and batch["labels"].tolist() == [0, 1] and batch["labels"].dtype == torch.long
    assert batch["input_ids"].shape == (2, 7)

    with pytest.raises(ValueError, match="single task, got ner, topic"):
        collator([ner[0], topic[0]])


def test_collator_without_labels(tmp_path: Path, bert_tokenizer) -> None:
    rows = [{"tokens": ["Mary"]}, {"tokens": ["Johnson", "lives"]}]
    train = write_jsonl(tmp_path / "train.jsonl", [{"tokens": ["John"], "ner_tags": ["B-PER"]}])
    test = write_jsonl(tmp_path / "test.jsonl", rows)
    spec = TaskSpec(name="ner", type="ner", labels=NER_LABELS, train_file=str(train), test_file=str(test))
    data = process(spec, bert_tokenizer, tmp_path, max_seq_length=16)["test"]
    batch = MultiTaskDataCollator(bert_tokenizer)([data[0], data[1]])
    assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "task"}
    assert batch["input_ids"].shape == (2, 5)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.jsonl", "", "is empty"),
        ("header.csv", "text,label\n", "header.csv' has no rows"),
        ("blank.jsonl", "\n  \n\n", "blank.jsonl' has no rows"),
        ("broken.jsonl", '{"text": "a", "label": "b"}\n\n{"text": \n', "broken.jsonl', line 3: not valid JSON"),
        ("list.jsonl", '{"text": "a", "label": "b"}\n["a", "b"]\n', "list.jsonl', line 2: expected a JSON object"),
    ],
)
def test_unreadable_files(tmp_path: Path, name: str, content: str, message: str) -> None:
    (tmp_path / name).write_text(content)
    spec = TaskSpec(name="x", type="classification", train_file=str(tmp_path / name))
    with pytest.raises(ValueError, match="Task 'x', split 'train': ") as info:
        load_raw_datasets(spec, cache_dir=str(tmp_path / "cache"))
    assert name in str(info.value) and message in str(info.value)
