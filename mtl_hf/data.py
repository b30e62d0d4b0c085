"""Loading, validating and tokenizing the data of every task, and collating task-homogeneous batches.

Everything that touches rows goes through ``datasets`` (its builders, ``Dataset.from_generator`` and batched
``Dataset.map``) so that results are cached on disk and a second run does not re-tokenize. What is written by hand
here is only what those libraries do not do: the CoNLL reader, the checks that turn bad rows into errors naming task,
split, row and column, the word-to-sub-token label alignment, and the truncation accounting.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import torch
import yaml
from datasets.exceptions import DatasetGenerationError
from tokenizers import Tokenizer
from transformers import (
    AutoTokenizer,
    DataCollatorForTokenClassification,
    DataCollatorWithPadding,
    PreTrainedTokenizerBase,
)

from .configuration_multitask import TaskSpec

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
CONLL_EXTENSIONS = (".conll", ".txt", ".iob", ".bio")
# Extension -> (datasets builder, extra builder kwargs). `keep_default_na=False` keeps texts such as "NA" or "null"
# as strings instead of turning them into missing values; TSV fields are never quoted (as in GLUE's files).
FILE_BUILDERS: dict[str, tuple[str, dict[str, Any]]] = {
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".csv": ("csv", {"keep_default_na": False}),
    ".tsv": ("csv", {"delimiter": "\t", "keep_default_na": False, "quoting": 3}),
}
TASK_FILE_KEYS = ("tasks",)
IGNORE_INDEX = -100
# Column names the pipeline adds; the collator keeps only the tokenizer's model inputs and `labels` from a row.
TASK_COLUMN = "task"
WORD_IDS_COLUMN = "word_ids"
_TRUNCATED_COLUMN = "_truncated"


# --------------------------------------------------------------------------------------------------------------------
# Task files
# --------------------------------------------------------------------------------------------------------------------


def load_task_file(path: str | os.PathLike) -> list[TaskSpec]:
    """Read a YAML (``.yaml``/``.yml``) or JSON task file whose top-level key ``tasks`` lists the task specs.

    Relative data paths (``train_file``, ``validation_file``, ``test_file``, and ``dataset_name`` when it names an
    existing folder next to the task file) are resolved against the task file's folder, so a task file and its data
    can be moved together and the run started from any working directory.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise ValueError(f"Task file {str(path)!r}: expected a .yaml, .yml or .json file")
    try:
        text = path.read_text(encoding="utf-8")
        content = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ValueError(f"Task file {str(path)!r} is not valid {suffix[1:].upper()}: {err}") from err
    if not isinstance(content, dict) or "tasks" not in content:
        raise ValueError(f"Task file {str(path)!r}: expected a mapping with the top-level key 'tasks'")
    unknown = sorted(set(content) - set(TASK_FILE_KEYS))
    if unknown:
        raise ValueError(f"Task file {str(path)!r}: unknown top-level key(s) {', '.join(map(str, unknown))}")
    entries = content["tasks"]
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"Task file {str(path)!r}: 'tasks' must be a non-empty list of task entries")

    specs: list[TaskSpec] = []
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ValueError(f"Task file {str(path)!r}: task #{position + 1} is not a mapping: {entry!r}")
        try:
            spec = TaskSpec.from_dict(_resolve_paths(entry, path.parent))
        except (ValueError, TypeError, KeyError) as err:
            raise ValueError(f"Task file {str(path)!r}, task #{position + 1}: {err}") from err
        if spec.name in {known.name for known in specs}:
            raise ValueError(f"Task file {str(path)!r}: task name {spec.name!r} is used by more than one task")
        specs.append(spec)
    return specs


def _resolve_paths(entry: dict[str, Any], base: Path) -> dict[str, Any]:
    resolved = dict(entry)
    for key in ("train_file", "validation_file", "test_file"):
        if isinstance(resolved.get(key), str):
            resolved[key] = str(base / Path(resolved[key]).expanduser())
    dataset_name = resolved.get("dataset_name")
    if isinstance(dataset_name, str) and not Path(dataset_name).is_absolute() and (base / dataset_name).is_dir():
        resolved["dataset_name"] = str(base / dataset_name)
    return resolved


# --------------------------------------------------------------------------------------------------------------------
# Raw data
# --------------------------------------------------------------------------------------------------------------------


def read_conll(path: str, mtime_ns: int, size: int, text_column: str, label_column: str) -> Iterator[dict]:
    """Yield one ``{text_column: words, label_column: tags}`` example per sentence of a CoNLL column file.

    The first column is the word and the last column the tag; columns are separated by tabs if the line has one
    (so words may hold spaces), else by whitespace. A blank line ends a sentence and ``-DOCSTART-`` lines are skipped.
    ``mtime_ns`` and ``size`` are unused here: they are part of ``gen_kwargs`` only so that datasets' cache key changes
    when the file does.
    """
    words: list[str] = []
    tags: list[str] = []
    sentences = 0
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            columns = [c.strip() for c in line.split("\t")] if "\t" in line else line.split()
            if not line.strip() or columns[0] == "-DOCSTART-":
                if words:
                    sentences += 1
                    yield {text_column: words, label_column: tags}
                words, tags = [], []
                continue
            if len(columns) < 2 or not columns[0] or not columns[-1]:
                raise ValueError(
                    f"{path}, line {line_number}: expected at least two columns (word ... tag), got {line!r}"
                )
            words.append(columns[0])
            tags.append(columns[-1])
    if words:
        yield {text_column: words, label_column: tags}
    elif not sentences:
        raise ValueError(f"{path}: no sentences in the file")


def load_raw_datasets(spec: TaskSpec, cache_dir: str | None = None) -> datasets.DatasetDict:
    """Load the splits of one task (those of ``train``/``validation``/``test`` that exist) as a ``DatasetDict``.

    A ``dataset_name`` goes to ``datasets.load_dataset`` (a hub name or a local folder); files go to the ``json`` and
    ``csv`` builders, or to :func:`read_conll` through ``Dataset.from_generator``, so every split lives in datasets'
    on-disk cache and later ``map`` calls are cached too. CoNLL columns are named after the task's
    ``text_column_name``/``label_column_name`` (``tokens``/``ner_tags`` by default).
    """
    files = {split: getattr(spec, f"{split}_file") for split in SPLITS if getattr(spec, f"{split}_file")}
    if spec.dataset_name and files:
        raise ValueError(f"Task {spec.name!r}: give either 'dataset_name' or data files, not both")
    if spec.dataset_name:
        loaded = datasets.load_dataset(spec.dataset_name, spec.dataset_config_name, cache_dir=cache_dir)
        raw = datasets.DatasetDict({split: loaded[split] for split in SPLITS if split in loaded})
        if not raw:
            raise ValueError(
                f"Task {spec.name!r}: dataset {spec.dataset_name!r} has none of the splits {', '.join(SPLITS)} "
                f"(it has {', '.join(loaded)})"
            )
    elif files:
        raw = datasets.DatasetDict({split: _load_file(spec, split, path, cache_dir) for split, path in files.items()})
    else:
        raise ValueError(
            f"Task {spec.name!r}: no data; set 'dataset_name' or 'train_file'/'validation_file'/'test_file'"
        )
    for split, dataset in raw.items():
        if len(dataset) == 0:
            raise ValueError(f"Task {spec.name!r}, split {split!r}: the data has no rows")
    return raw


def _load_file(spec: TaskSpec, split: str, path: str, cache_dir: str | None) -> datasets.Dataset:
    where = f"Task {spec.name!r}, split {split!r}"
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{where}: file {path!r} not found")
    if os.path.getsize(path) == 0:
        raise ValueError(f"{where}: file {path!r} is empty")
    suffix = Path(path).suffix.lower()
    if suffix in CONLL_EXTENSIONS:
        if spec.type != "ner":
            raise ValueError(f"{where}: {path!r} is a CoNLL column file, which holds NER data only")
        return _load_conll(spec, where, path, cache_dir)
    if suffix not in FILE_BUILDERS:
        known = ", ".join([*FILE_BUILDERS, *CONLL_EXTENSIONS])
        raise ValueError(f"{where}: unsupported file type {suffix or '(none)'!r} of {path!r}; expected one of {known}")
    builder, kwargs = FILE_BUILDERS[suffix]
    try:
        return datasets.load_dataset(builder, data_files={split: path}, split=split, cache_dir=cache_dir, **kwargs)
    except DatasetGenerationError as err:
        # datasets wraps the parser's error; surface the real cause together with task, split and file.
        cause = err.__cause__ or err
        raise ValueError(f"{where}: could not read {path!r}: {type(cause).__name__}: {cause}") from cause
    except ValueError as err:  # e.g. a CSV file with a header but no rows
        raise ValueError(f"{where}: could not read {path!r}: {err}") from err


def _load_conll(spec: TaskSpec, where: str, path: str, cache_dir: str | None) -> datasets.Dataset:
    stat = os.stat(path)
    features = datasets.Features(
        {
            spec.text_column_name: datasets.List(datasets.Value("string")),
            spec.label_column_name: datasets.List(datasets.Value("string")),
        }
    )
    try:
        return datasets.Dataset.from_generator(
            read_conll,
            features=features,
            cache_dir=cache_dir,
            gen_kwargs={
                "path": os.path.abspath(path),
                "mtime_ns": stat.st_mtime_ns,
                "size": stat.st_size,
                "text_column": spec.text_column_name,
                "label_column": spec.label_column_name,
            },
        )
    except DatasetGenerationError as err:
        # datasets wraps what read_conll raised; its ValueError already names the file and line.
        cause = err.__cause__ or err
        raise ValueError(f"{where}: {cause}") from cause


# --------------------------------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------------------------------


def _class_label_names(feature: Any, task_type: str) -> list[str] | None:
    """The names of a ``ClassLabel`` column (for NER: of a list of ``ClassLabel``), else ``None``."""
    if task_type == "ner" and isinstance(feature, (datasets.Sequence, datasets.LargeList)):
        feature = feature.feature
    return list(feature.names) if isinstance(feature, datasets.ClassLabel) else None


def resolve_labels(spec: TaskSpec, raw: datasets.DatasetDict) -> TaskSpec:
    """Return ``spec`` with ``labels`` filled in, in the order that fixes the label ids stored in the model config.

    The order comes from, by priority: the spec's own ``labels``; the names of a ``ClassLabel`` feature; the sorted
    set of string labels seen in the train split. Integer labels carry no names, so they need one of the first two.
    """
    if spec.labels:
        return spec
    column = spec.label_column_name
    labelled = [split for split in SPLITS if split in raw and column in raw[split].column_names]
    for split in labelled:
        names = _class_label_names(raw[split].features[column], spec.type)
        if names:
            return dataclasses.replace(spec, labels=names)
    if "train" not in labelled:
        raise ValueError(
            f"Task {spec.name!r}: no 'labels' given and no train split with column {column!r} to take them from"
        )
    values = raw["train"][column]
    if spec.type == "ner":
        values = [tag for tags in values if isinstance(tags, list) for tag in tags]
    # Anything but strings and numbers (missing or malformed labels) is reported with its row by preprocess_task.
    numbers = [value for value in values if isinstance(value, (int, float)) and not isinstance(value, bool)]
    if numbers:
        raise ValueError(
            f"Task {spec.name!r}, column {column!r}: labels are numbers (e.g. {numbers[0]!r}); integer labels need "
            "the task's 'labels' list or a ClassLabel feature to name them"
        )
    seen = {value for value in values if isinstance(value, str) and value.strip()}
    if not seen:
        raise ValueError(f"Task {spec.name!r}, column {column!r}: the train split has no labels")
    return dataclasses.replace(spec, labels=sorted(seen))


def continuation_label_ids(labels: Sequence[str]) -> list[int]:
    """For ``label_all_tokens``: the id a word's non-first sub-tokens get, i.e. the I- form of a B- tag (as in
    transformers' ``run_ner.py``); any other tag, or a B- tag without an I- form, keeps its own id."""
    label2id = {label: i for i, label in enumerate(labels)}
    return [label2id.get("I-" + label[2:], i) if label.startswith("B-") else i for i, label in enumerate(labels)]


def align_labels_with_tokens(
    word_ids: Sequence[int | None], word_labels: Sequence[int], continuation: Sequence[int] | None = None
) -> list[int]:
    """Spread word-level label ids over sub-tokens.

    The first sub-token of each word gets the word's label; special tokens (``None``) get -100, and so do a word's
    other sub-tokens unless ``continuation`` (see :func:`continuation_label_ids`) maps them to a label. Words that
    produced no sub-token are simply absent from ``word_ids``, so they cannot shift the labels of later words.
    """
    aligned: list[int] = []
    previous: int | None = None
    for word_id in word_ids:
        if word_id is None:
            aligned.append(IGNORE_INDEX)
        elif word_id != previous:
            aligned.append(word_labels[word_id])
        else:
            aligned.append(IGNORE_INDEX if continuation is None else continuation[word_labels[word_id]])
        previous = word_id
    return aligned


def _label_id(value: Any, where: str, label2id: dict[str, int], class_names: list[str] | None) -> int:
    """Validate one label and return its id; ints index the ClassLabel names if the column has them, else the
    task's label list."""
    if value is None or (isinstance(value, float) and value != value) or (isinstance(value, str) and not value.strip()):
        raise ValueError(f"{where}: missing label")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        names = class_names if class_names is not None else list(label2id)
        if not 0 <= value < len(names):
            raise ValueError(f"{where}: label id {value} is out of range for {len(names)} labels")
        value = names[value]
        if value not in label2id:
            raise ValueError(f"{where}: label {value!r} (ClassLabel id) is not one of the task's labels")
        return label2id[value]
    if not isinstance(value, str):
        raise ValueError(f"{where}: expected a string or integer label, got {type(value).__name__} {value!r}")
    if value not in label2id:
        known = ", ".join(list(label2id)[:20]) + (", ..." if len(label2id) > 20 else "")
        raise ValueError(f"{where}: unknown label {value!r}; the task's labels are {known}")
    return label2id[value]


# --------------------------------------------------------------------------------------------------------------------
# Tokenization
# --------------------------------------------------------------------------------------------------------------------


def _byte_level_without_prefix_space(component: Any) -> bool:
    """Whether a serialized pre-tokenizer contains a ByteLevel step that does not add a prefix space."""
    if isinstance(component, dict):
        if component.get("type") == "ByteLevel" and not component.get("add_prefix_space", False):
            return True
        return any(_byte_level_without_prefix_space(value) for value in component.values())
    if isinstance(component, list):
        return any(_byte_level_without_prefix_space(value) for value in component)
    return False


def load_tokenizer(name_or_path: str | os.PathLike, **kwargs: Any) -> PreTrainedTokenizerBase:
    """Load a fast tokenizer that can encode pre-split words (``is_split_into_words=True``) correctly.

    Byte-level BPE tokenizers (RoBERTa, GPT-2 style) encode a word differently at the start of a text than after a
    space; for pre-split words every word must be encoded as if it followed a space, which needs
    ``add_prefix_space=True``. This is detected from the backend pre-tokenizer itself rather than from a list of model
    types, and fixed on the backend (the only place every tokenizer class honours it) and in the init kwargs (so
    ``save_pretrained`` records it).
    """
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
    if not tokenizer.is_fast:
        raise ValueError(
            f"Tokenizer {str(name_or_path)!r} is not a fast tokenizer; the data pipeline needs the word ids that only "
            "fast (tokenizers-backed) tokenizers provide"
        )
    backend = tokenizer.backend_tokenizer
    serialized = json.loads(backend.to_str())
    if _byte_level_without_prefix_space(serialized.get("pre_tokenizer")):
        serialized["pre_tokenizer"] = _with_prefix_space(serialized["pre_tokenizer"])
        backend.pre_tokenizer = Tokenizer.from_str(json.dumps(serialized)).pre_tokenizer
        tokenizer.add_prefix_space = True
        tokenizer.init_kwargs["add_prefix_space"] = True
    return tokenizer


def _with_prefix_space(component: Any) -> Any:
    if isinstance(component, dict):
        updated = {key: _with_prefix_space(value) for key, value in component.items()}
        if updated.get("type") == "ByteLevel":
            updated["add_prefix_space"] = True
        return updated
    if isinstance(component, list):
        return [_with_prefix_space(value) for value in component]
    return component


def _output_features(tokenizer: PreTrainedTokenizerBase, task_type: str, with_labels: bool) -> datasets.Features:
    """The schema of a tokenized split, fixed up front so that a batch whose rows were all skipped still fits."""
    ids = datasets.List(datasets.Value("int64"))
    features = {name: ids for name in tokenizer.model_input_names}
    features[TASK_COLUMN] = datasets.Value("string")
    if task_type == "ner":
        features[WORD_IDS_COLUMN] = ids
        features[_TRUNCATED_COLUMN] = datasets.Value("bool")
    if with_labels:
        features["labels"] = ids if task_type == "ner" else datasets.Value("int64")
    return datasets.Features(features)


def _encode_classification(
    batch: dict[str, list],
    indices: list[int],
    *,
    tokenizer: PreTrainedTokenizerBase,
    task: str,
    split: str,
    text_column: str,
    label_column: str | None,
    label2id: dict[str, int],
    class_names: list[str] | None,
    max_length: int,
) -> dict[str, list]:
    """Validate and tokenize a batch of classification rows; rows with empty text are left out (counted by the
    caller from the change in length)."""
    texts: list[str] = []
    labels: list[int] = []
    for position, row in enumerate(indices):
        text = batch[text_column][position]
        where = f"Task {task!r}, split {split!r}, row {row}, column {text_column!r}"
        if text is None:
            raise ValueError(f"{where}: missing text")
        if not isinstance(text, str):
            raise ValueError(f"{where}: expected a string, got {type(text).__name__} {text!r}")
        if not text.strip():
            continue
        texts.append(text)
        if label_column is not None:
            where = f"Task {task!r}, split {split!r}, row {row}, column {label_column!r}"
            labels.append(_label_id(batch[label_column][position], where, label2id, class_names))
    if texts:
        output = dict(tokenizer(texts, truncation=True, max_length=max_length))
    else:
        output = {name: [] for name in tokenizer.model_input_names}
    output[TASK_COLUMN] = [task] * len(texts)
    if label_column is not None:
        output["labels"] = labels
    return output


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
    task: str,
    split: str,
    text_column: str,
    label_column: str | None,
    label2id: dict[str, int],
    class_names: list[str] | None,
    continuation: list[int] | None,
    max_length: int,
) -> dict[str, list]:
    """Validate and tokenize a batch of pre-split sentences, aligning word tags to sub-tokens."""
    sentences: list[list[str]] = []
    sentence_labels: list[list[int]] = []
    for position, row in enumerate(indices):
        words = batch[text_column][position]
        where = f"Task {task!r}, split {split!r}, row {row}, column {text_column!r}"
        if words is None:
            raise ValueError(f"{where}: missing tokens")
        if not isinstance(words, list):
            raise ValueError(f"{where}: expected a list of words, got {type(words).__name__} {words!r}")
        if not words:
            raise ValueError(f"{where}: empty token list")
        for word_index, word in enumerate(words):
            if not isinstance(word, str):
                raise ValueError(f"{where}: word {word_index} is {type(word).__name__} {word!r}, not a string")
        sentences.append(words)
        if label_column is None:
            continue
        tags = batch[label_column][position]
        where = f"Task {task!r}, split {split!r}, row {row}, column {label_column!r}"
        if tags is None:
            raise ValueError(f"{where}: missing label")
        if not isinstance(tags, list):
            raise ValueError(f"{where}: expected a list of tags, got {type(tags).__name__} {tags!r}")
        if len(tags) != len(words):
            raise ValueError(f"{where}: {len(tags)} tags for {len(words)} tokens")
        sentence_labels.append(
            [_label_id(tag, f"{where}, word {i}", label2id, class_names) for i, tag in enumerate(tags)]
        )

    encoding = tokenizer(sentences, is_split_into_words=True, truncation=True, max_length=max_length)
    output = dict(encoding)
    output[TASK_COLUMN] = [task] * len(sentences)
    all_word_ids = [encoding.word_ids(i) for i in range(len(sentences))]
    output[WORD_IDS_COLUMN] = [[-1 if w is None else w for w in word_ids] for word_ids in all_word_ids]
    output[_TRUNCATED_COLUMN] = [
        _lost_words(word_ids, encoding.encodings[i].overflowing) for i, word_ids in enumerate(all_word_ids)
    ]
    if label_column is not None:
        output["labels"] = [
            align_labels_with_tokens(word_ids, labels, continuation)
            for word_ids, labels in zip(all_word_ids, sentence_labels)
        ]
    return output


class TaskDatasetDict(datasets.DatasetDict):
    """The tokenized splits of one task, plus what preprocessing had to leave out.

    ``truncation_report`` maps each NER split to ``(sentences truncated, sentences)``; ``skipped_report`` maps each
    classification split to ``(rows skipped for empty text, rows)``. Both are also logged as warnings when non-zero.
    They describe the data as returned by :func:`preprocess_task`; further ``DatasetDict`` operations return plain
    ``DatasetDict`` objects without them.
    """

    truncation_report: dict[str, tuple[int, int]]
    skipped_report: dict[str, tuple[int, int]]


def preprocess_task(
    spec: TaskSpec,
    raw: datasets.DatasetDict,
    tokenizer: PreTrainedTokenizerBase,
    max_seq_length: int = 128,
    label_all_tokens: bool = False,
    num_proc: int | None = None,
    load_from_cache_file: bool = True,
) -> TaskDatasetDict:
    """Validate and tokenize every split of one task with batched, cached ``Dataset.map``.

    Output columns: the tokenizer's model inputs, ``labels`` (an id for classification, one id per sub-token with
    -100 for NER), ``task`` and, for NER, ``word_ids`` (word index per sub-token, -1 for special tokens). A split
    without the label column (unlabelled data to predict on) is only allowed as ``test`` and gets no ``labels``.
    ``label_all_tokens`` applies to the train split only, so that evaluation scores each word exactly once.
    ``spec.labels`` must be set (see :func:`resolve_labels`).
    """
    if not spec.labels:
        raise ValueError(f"Task {spec.name!r}: labels are not set; call resolve_labels(spec, raw) first")
    if not tokenizer.is_fast:
        raise ValueError(f"Task {spec.name!r}: a fast tokenizer is needed (see load_tokenizer)")
    max_length = max_seq_length
    if max_seq_length > tokenizer.model_max_length:
        max_length = tokenizer.model_max_length
        logger.warning(
            "max_seq_length=%d is longer than the tokenizer's model_max_length=%d; using %d",
            max_seq_length, max_length, max_length,
        )

    processed = TaskDatasetDict()
    processed.truncation_report = {}
    processed.skipped_report = {}
    for split, dataset in raw.items():
        columns = dataset.column_names
        where = f"Task {spec.name!r}, split {split!r}"
        if spec.text_column_name not in columns:
            raise ValueError(f"{where}: column {spec.text_column_name!r} not found; columns: {', '.join(columns)}")
        label_column = spec.label_column_name if spec.label_column_name in columns else None
        if label_column is None and split != "test":
            raise ValueError(
                f"{where}: column {spec.label_column_name!r} not found; columns: {', '.join(columns)} "
                "(only a test split may be unlabelled)"
            )
        class_names = _class_label_names(dataset.features[label_column], spec.type) if label_column else None
        fn_kwargs: dict[str, Any] = {
            "tokenizer": tokenizer,
            "task": spec.name,
            "split": split,
            "text_column": spec.text_column_name,
            "label_column": label_column,
            "label2id": spec.label2id,
            "class_names": class_names,
            "max_length": max_length,
        }
        if spec.type == "ner":
            use_continuation = label_all_tokens and split == "train"
            fn_kwargs["continuation"] = continuation_label_ids(spec.labels) if use_continuation else None
        encoded = dataset.map(
            _encode_ner if spec.type == "ner" else _encode_classification,
            batched=True,
            with_indices=True,
            fn_kwargs=fn_kwargs,
            remove_columns=columns,
            features=_output_features(tokenizer, spec.type, label_column is not None),
            num_proc=num_proc,
            load_from_cache_file=load_from_cache_file,
            desc=f"Tokenizing {spec.name}/{split}",
        )
        if spec.type == "ner":
            truncated = sum(encoded[_TRUNCATED_COLUMN])
            processed.truncation_report[split] = (truncated, len(encoded))
            if truncated:
                logger.warning(
                    "task %r, split %r: %d of %d sentences truncated to max_seq_length=%d "
                    "(their cut-off words are not trained or scored)",
                    spec.name, split, truncated, len(encoded), max_length,
                )
            encoded = encoded.remove_columns(_TRUNCATED_COLUMN)
        else:
            skipped = len(dataset) - len(encoded)
            processed.skipped_report[split] = (skipped, len(dataset))
            if skipped:
                logger.warning(
                    "task %r, split %r: skipped %d of %d rows whose text (column %r) is empty",
                    spec.name, split, skipped, len(dataset), spec.text_column_name,
                )
        processed[split] = encoded
    return processed


def load_and_preprocess(
    specs: Sequence[TaskSpec],
    tokenizer: PreTrainedTokenizerBase,
    max_seq_length: int = 128,
    label_all_tokens: bool = False,
    num_proc: int | None = None,
    cache_dir: str | None = None,
    load_from_cache_file: bool = True,
) -> tuple[list[TaskSpec], dict[str, TaskDatasetDict]]:
    """Load, resolve labels for, and tokenize every task: the specs with labels (for the model config) and each
    task's tokenized splits, in the order of ``specs``."""
    resolved: list[TaskSpec] = []
    processed: dict[str, TaskDatasetDict] = {}
    for spec in specs:
        raw = load_raw_datasets(spec, cache_dir=cache_dir)
        spec = resolve_labels(spec, raw)
        resolved.append(spec)
        processed[spec.name] = preprocess_task(
            spec, raw, tokenizer, max_seq_length=max_seq_length, label_all_tokens=label_all_tokens,
            num_proc=num_proc, load_from_cache_file=load_from_cache_file,
        )
    return resolved, processed


# --------------------------------------------------------------------------------------------------------------------
# Collation
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class MultiTaskDataCollator:
    """Pad a task-homogeneous batch to its longest row and say which task it belongs to.

    Token columns are padded by the tokenizer (optionally to a multiple of ``pad_to_multiple_of``), NER labels with
    ``label_pad_token_id`` to the same length, classification labels become a ``LongTensor``. The output's ``task``
    is the batch's task name, which the model uses to pick the head; other bookkeeping columns (``word_ids``) are
    dropped. Rows without ``labels`` (unlabelled data) are padded the same way, without labels.
    """

    tokenizer: PreTrainedTokenizerBase
    pad_to_multiple_of: int | None = None
    label_pad_token_id: int = IGNORE_INDEX

    def __post_init__(self) -> None:
        # transformers' collators do the padding; this class only routes a batch to the right one.
        self._token_level = DataCollatorForTokenClassification(
            self.tokenizer, pad_to_multiple_of=self.pad_to_multiple_of, label_pad_token_id=self.label_pad_token_id
        )
        self._sequence_level = DataCollatorWithPadding(self.tokenizer, pad_to_multiple_of=self.pad_to_multiple_of)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        tasks = {feature.get(TASK_COLUMN) for feature in features}
        if None in tasks:
            raise ValueError(f"Every row of a batch needs a {TASK_COLUMN!r} column")
        if len(tasks) != 1:
            raise ValueError(f"A batch must hold rows of a single task, got {', '.join(sorted(tasks))}")
        if len({"labels" in feature for feature in features}) != 1:
            raise ValueError("Either all rows of a batch have 'labels' or none does")
        keep = set(self.tokenizer.model_input_names) | {"labels"}
        rows = [{key: value for key, value in feature.items() if key in keep} for feature in features]
        labels = rows[0].get("labels")
        token_level = isinstance(labels, (list, tuple)) or (isinstance(labels, torch.Tensor) and labels.dim() > 0)
        batch = dict((self._token_level if token_level else self._sequence_level)(rows))
        batch[TASK_COLUMN] = tasks.pop()
        return batch
