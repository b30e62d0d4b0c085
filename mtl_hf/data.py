"""Loading, validating and tokenizing the data of every task, and collating task-homogeneous batches.

Everything that touches rows goes through ``datasets`` (its builders, ``Dataset.from_generator`` and batched
``Dataset.map``) so that results are cached on disk and a second run does not re-tokenize. What is written by hand
here is only what those libraries do not do: the CoNLL reader, the checks that turn bad rows into errors naming task,
split, row, file line and column, NER tag-scheme detection (with IOB1 -> IOB2 conversion), the word-to-sub-token
label alignment, and the truncation accounting. Text is encoded the one way ``mtl_hf.tokenization`` defines, which
the pipeline uses too.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import dataclasses
import json
import logging
import os
import re
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import datasets
import huggingface_hub
import torch
import yaml
from datasets.exceptions import DatasetGenerationError
from transformers import (
    AutoTokenizer,
    DataCollatorForTokenClassification,
    DataCollatorWithPadding,
    PreTrainedConfig,
    PreTrainedTokenizerBase,
)

from .configuration_multitask import OUTSIDE_TAG, MultiTaskConfig, TaskSpec, check_distinct_names
from .task_types import get_task_type
from .task_types.base import SplitContext
from .tokenization import max_input_length, prepare_tokenizer

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
TASK_FILE_KEYS = ("tasks", "card")
# The task file's optional `card` section: the model card's Hub metadata (`license`: one identifier such as
# apache-2.0; `language`, `tags`, `datasets`: one string or a list of strings; `datasets` are Hub dataset ids, added to
# those of tasks loaded with `dataset_name`).
CARD_KEYS = ("license", "language", "tags", "datasets")
IGNORE_INDEX = -100
# Column names the pipeline adds; the collator keeps only the tokenizer's model inputs and `labels` from a row.
TASK_COLUMN = "task"
WORD_IDS_COLUMN = "word_ids"
NUM_WORDS_COLUMN = "num_words"
_TRUNCATED_COLUMN = "_truncated"
_CONVERTED_COLUMN = "_converted"


# --------------------------------------------------------------------------------------------------------------------
# Task files
# --------------------------------------------------------------------------------------------------------------------


def load_task_file(path: str | os.PathLike) -> list[TaskSpec]:
    """Read a YAML (``.yaml``/``.yml``) or JSON task file whose top-level key ``tasks`` lists the task specs.

    Relative data paths (``train_file``, ``validation_file``, ``test_file``, and ``dataset_name`` when it names an
    existing folder next to the task file) are resolved against the task file's folder, so a task file and its data
    can be moved together and the run started from any working directory. Every problem is a ``ValueError`` whose
    first line names the file and, where there is one, the task entry (``task #N``) or the line and column.
    """
    path = Path(path)
    entries = task_file_entries(path)
    lines = _entry_lines(path)
    specs: list[TaskSpec] = []
    for position, entry in enumerate(entries):
        where = f"Task file {str(path)!r}, task #{position + 1}"
        if lines is not None and len(lines) == len(entries):
            where += f" (line {lines[position]})"
        try:
            spec = TaskSpec.from_dict(_resolve_paths(entry, path.parent))
        except (ValueError, TypeError, KeyError) as err:
            raise ValueError(f"{where}: {err}") from err
        specs.append(spec)
        try:
            check_distinct_names([known.name for known in specs])
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
    return specs


def _entry_lines(path: Path) -> list[int] | None:
    """The 1-based line where each task entry of a YAML task file starts (``None`` for JSON, or if unsure)."""
    if path.suffix.lower() == ".json":
        return None
    try:
        root = yaml.compose(path.read_bytes().decode("utf-8-sig"), Loader=yaml.SafeLoader)
    except (OSError, ValueError, yaml.YAMLError):
        return None
    if not isinstance(root, yaml.MappingNode):
        return None
    for key, value in root.value:
        if isinstance(key, yaml.ScalarNode) and key.value == "tasks" and isinstance(value, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return None


def task_file_entries(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The task entries of a task file as written (mappings, before defaults and path resolution), checked as far
    as the file's structure goes: readable UTF-8, valid YAML/JSON, a mapping whose ``tasks`` is a non-empty list of
    mappings. ``load_task_file`` builds the specs from them; what an entry sets itself (rather than leaves to the
    defaults) can be read here."""
    return _task_file_content(Path(path))["tasks"]


def task_file_card(path: str | os.PathLike) -> dict[str, Any]:
    """The task file's ``card`` section (see ``CARD_KEYS``), as keyword arguments of
    ``MultiTaskTrainer.create_model_card``: ``license`` a string, ``language``, ``tags`` and ``datasets`` lists of
    strings; ``{}`` without one. A ``ValueError`` names the file and the key of anything else."""
    path = Path(path)
    card = _task_file_content(path).get("card")
    where = f"Task file {str(path)!r}, section 'card'"
    if card is None:
        return {}
    if not isinstance(card, dict):
        raise ValueError(f"{where}: expected a mapping with the keys {', '.join(CARD_KEYS)}, found a {_kind_of(card)}")
    unknown = sorted(map(str, set(card) - set(CARD_KEYS)))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(CARD_KEYS)}")
    out: dict[str, Any] = {}
    for key, value in card.items():
        values = [value] if isinstance(value, str) and key != "license" else value
        if key == "license":
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{where}: 'license' must be one license identifier (such as apache-2.0), got "
                                 f"{_kind_of(value)} {value!r}")
        elif not isinstance(values, list) or not all(isinstance(item, str) and item.strip() for item in values):
            raise ValueError(f"{where}: {key!r} must be a string or a list of non-empty strings, got "
                             f"{_kind_of(value)} {value!r}")
        out[key] = values
    return out


def _task_file_content(path: Path) -> dict[str, Any]:
    """A task file's top-level mapping, checked as ``task_file_entries`` says."""
    where = f"Task file {str(path)!r}"
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise ValueError(f"{where}: expected a .yaml, .yml or .json file")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ValueError(f"{where} cannot be read: {err.strerror or err}") from err
    text = _decode_utf8(data, where)
    if not text.strip():
        raise ValueError(f"{where} is empty; it must list the tasks under the top-level key 'tasks'")
    try:
        content = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{where} is not valid JSON: line {err.lineno}, column {err.colno}: {err.msg}") from err
    except yaml.YAMLError as err:
        raise ValueError(f"{where} is not valid YAML: {_yaml_problem(err)}") from err
    if content is None:
        raise ValueError(f"{where} is empty; it must list the tasks under the top-level key 'tasks'")
    if not isinstance(content, dict) or "tasks" not in content:
        found = f"a mapping with the keys {', '.join(map(str, content))}" if isinstance(content, dict) else (
            f"a {_kind_of(content)}")
        raise ValueError(f"{where}: expected a mapping with the top-level key 'tasks', found {found}")
    unknown = sorted(map(str, set(content) - set(TASK_FILE_KEYS)))
    if unknown:
        raise ValueError(f"{where}: unknown top-level key(s) {', '.join(unknown)}")
    entries = content["tasks"]
    if not isinstance(entries, list) or not entries:
        got = {"[]": "an empty list", "None": "nothing"}.get(repr(entries), f"{_kind_of(entries)} {entries!r}"[:80])
        raise ValueError(f"{where}: 'tasks' must be a non-empty list of task entries, got {got}")
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: task #{position + 1} is not a mapping: {entry!r}")
    return content


def _kind_of(value: Any) -> str:
    """How a YAML/JSON value reads to a user: mapping, list, string, number, ..."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, list):
        return "list"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


def _decode_utf8(data: bytes, where: str) -> str:
    """``data`` as text (a UTF-8 byte-order mark dropped), or a ``ValueError`` naming the line and column of the
    first byte that is not UTF-8 (and saying so for UTF-16, which Windows editors call "Unicode")."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ValueError(f"{where} is UTF-16 encoded (it starts with a UTF-16 byte-order mark); save it as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise ValueError(
            f"{where}, line {line}, column {column}: not valid UTF-8 (byte 0x{data[err.start]:02x}); save the file "
            "as UTF-8"
        ) from None


def _yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error on one line, starting with its 1-based line and column (PyYAML puts them on lines of their own)."""
    if not isinstance(err, yaml.MarkedYAMLError):
        return " ".join(str(err).split())
    mark = err.problem_mark or err.context_mark
    parts = []
    if mark is not None:
        parts.append(f"line {mark.line + 1}, column {mark.column + 1}:")
    parts.append(" ".join(str(err.problem or err.context or "syntax error").split()))
    if err.context and err.problem:
        context = " ".join(err.context.split())
        if err.context_mark is not None:
            context += f" at line {err.context_mark.line + 1}, column {err.context_mark.column + 1}"
        parts.append(f"({context})")
    return " ".join(parts)


def _resolve_paths(entry: dict[str, Any], base: Path) -> dict[str, Any]:
    resolved = dict(entry)
    for key in ("train_file", "validation_file", "test_file"):
        if isinstance(resolved.get(key), str) and resolved[key].strip():
            resolved[key] = str(base / Path(resolved[key]).expanduser())
    dataset_name = resolved.get("dataset_name")
    if (
        isinstance(dataset_name, str) and dataset_name.strip() and not Path(dataset_name).is_absolute()
        and (base / dataset_name).is_dir()
    ):
        resolved["dataset_name"] = str(base / dataset_name)
    return resolved


# --------------------------------------------------------------------------------------------------------------------
# Raw data
# --------------------------------------------------------------------------------------------------------------------


def _conll_sentences(path: str) -> Iterator[tuple[int, list[str], list[str]]]:
    """``(first line, words, tags)`` of every sentence of a CoNLL column file (see :func:`read_conll`)."""
    words: list[str] = []
    tags: list[str] = []
    first_line = 0
    with open(path, encoding="utf-8-sig") as handle:  # a byte-order mark must not glue onto the first word
        for line_number, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            columns = [c.strip() for c in line.split("\t")] if "\t" in line else line.split()
            if not line.strip() or columns[0] == "-DOCSTART-":
                if words:
                    yield first_line, words, tags
                words, tags = [], []
                continue
            if len(columns) < 2 or not columns[0] or not columns[-1]:
                raise ValueError(
                    f"{path}, line {line_number}: expected at least two columns (word ... tag), got {line!r}"
                )
            if not words:
                first_line = line_number
            words.append(columns[0])
            tags.append(columns[-1])
    if words:
        yield first_line, words, tags


def read_conll(path: str, mtime_ns: int, size: int, text_column: str, label_column: str) -> Iterator[dict]:
    """Yield one ``{text_column: words, label_column: tags}`` example per sentence of a CoNLL column file.

    The first column is the word and the last column the tag; columns are separated by tabs if the line has one
    (so words may hold spaces), else by whitespace. A blank line ends a sentence and ``-DOCSTART-`` lines are skipped.
    ``mtime_ns`` and ``size`` are unused here: they are part of ``gen_kwargs`` only so that datasets' cache key changes
    when the file does.
    """
    sentences = 0
    for _, words, tags in _conll_sentences(path):
        sentences += 1
        yield {text_column: words, label_column: tags}
    if not sentences:
        raise ValueError(f"{path}: no sentences in the file")


@dataclass(frozen=True)
class DataSource:
    """The file a split was read from, so that errors about its rows can name the file and the line.

    ``dataset`` is the split exactly as it was read: only while a split is that very object are its rows in file
    order (``select``, ``filter``, ``shuffle`` and the like return new objects), so only then are lines looked up.
    """

    path: str
    kind: str  # "conll", "json", "csv", "tsv" or "document" (a layout its task type reads; rows are not lines)
    dataset: datasets.Dataset


def _file_line(path: str, kind: str, num_rows: int, row: int) -> int | None:
    """The 1-based line of ``path`` where row ``row`` starts, or ``None`` where that is not certain.

    Read from the file again, so it costs nothing until an error needs it. CSV/TSV: the header is line 1, blank lines
    are skipped (as datasets' pandas reader skips them) and a quoted field may span lines; JSON lines: blank lines are
    skipped, as datasets' reader skips them; CoNLL: the line of the sentence's first word. A line is given only when
    the file holds exactly ``num_rows`` rows, so a file read differently from what is assumed here never gets a
    wrong line.
    """
    if kind == "document":
        return None  # rows of a nested document (SQuAD JSON) do not start on lines of their own
    if kind == "conll":
        starts = [first_line for first_line, _, _ in _conll_sentences(path)]
    elif kind == "json":
        with open(path, encoding="utf-8-sig", errors="replace") as handle:
            lines = [(number, line) for number, line in enumerate(handle, start=1) if line.strip()]
        if lines and lines[0][1].lstrip().startswith("["):
            return None  # one JSON document (an array of rows): rows and lines need not correspond
        starts = [number for number, _ in lines]
    else:
        starts = [line for line, _ in _csv_records(path, kind)][1:]  # the first record is the header
    return starts[row] if len(starts) == num_rows and 0 <= row < num_rows else None


class _CsvRecordError(ValueError):
    """A CSV/TSV record the reader refuses, with the line it starts on."""

    def __init__(self, line: int, error: csv.Error) -> None:
        super().__init__(str(error))
        self.line = line


def _csv_records(path: str, kind: str, strict: bool = False) -> Iterator[tuple[int, list[str]]]:
    """``(first line, fields)`` of every record of a CSV/TSV file, read as datasets' pandas reader reads it: TSV
    fields unquoted, blank lines skipped, a quoted CSV field may span lines. With ``strict``, a malformed record
    raises :class:`_CsvRecordError` naming the line it starts on."""
    dialect: dict[str, Any] = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if kind == "tsv" else {}
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as handle:
        reader = csv.reader(handle, strict=strict, **dialect)
        first_line = 1
        try:
            for record in reader:
                if len(record) > 1 or (record and record[0].strip()):
                    yield first_line, record
                first_line = reader.line_num + 1
        except csv.Error as err:
            raise _CsvRecordError(first_line, err) from err


class RawDatasetDict(datasets.DatasetDict):
    """The splits of one task as read by :func:`load_raw_datasets`, plus ``sources``: the :class:`DataSource` of each
    split read from a file (none for ``dataset_name`` data), used to name the file and line of a bad row."""

    sources: dict[str, DataSource]


def load_raw_datasets(spec: TaskSpec, cache_dir: str | None = None) -> RawDatasetDict:
    """Load the splits of one task (those of ``train``/``validation``/``test`` that exist) as a ``DatasetDict``
    (a :class:`RawDatasetDict`, whose ``sources`` let :func:`preprocess_task` name the file line of a bad row).

    A ``dataset_name`` goes to ``datasets.load_dataset`` (a hub name or a local folder); files go to the ``json`` and
    ``csv`` builders, or to :func:`read_conll` through ``Dataset.from_generator``, so every split lives in datasets'
    on-disk cache and later ``map`` calls are cached too. CoNLL columns are named after the task's
    ``text_column_name``/``label_column_name`` (``tokens``/``ner_tags`` by default).
    """
    files = {split: getattr(spec, f"{split}_file") for split in SPLITS if getattr(spec, f"{split}_file")}
    if spec.dataset_name and files:
        raise ValueError(f"Task {spec.name!r}: give either 'dataset_name' or data files, not both")
    raw = RawDatasetDict()
    raw.sources = {}
    if spec.dataset_name:
        loaded = _load_named_dataset(spec, cache_dir)
        raw.update({split: loaded[split] for split in SPLITS if split in loaded})
        if not raw:
            raise ValueError(
                f"Task {spec.name!r}: dataset {spec.dataset_name!r} has none of the splits {', '.join(SPLITS)} "
                f"(it has {', '.join(loaded)})"
            )
    elif files:
        for split, path in files.items():
            raw[split], kind = _load_file(spec, split, path, cache_dir)
            raw.sources[split] = DataSource(path, kind, raw[split])
    else:
        raise ValueError(
            f"Task {spec.name!r}: no data; set 'dataset_name' or 'train_file'/'validation_file'/'test_file'"
        )
    for split, dataset in raw.items():
        if len(dataset) == 0:
            where = f" ({raw.sources[split].path})" if split in raw.sources else ""
            raise ValueError(f"Task {spec.name!r}, split {split!r}: the data has no rows{where}")
    return raw


def _hub_unreachable() -> bool:
    """Whether the Hub's host name cannot even be resolved (no network), so that a download would only retry.

    Behind a proxy the host need not resolve locally, so then the answer is always ``False``.
    """
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")):
        return False
    host = urlparse(huggingface_hub.constants.ENDPOINT).hostname
    try:
        socket.getaddrinfo(host, 443)
    except (OSError, UnicodeError):
        return True
    return False


def _load_named_dataset(spec: TaskSpec, cache_dir: str | None) -> datasets.DatasetDict:
    """``datasets.load_dataset(dataset_name)``, with any failure turned into one line naming the task and dataset.

    Offline (``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE``) datasets fails fast by itself; without a network, a Hub name
    is refused at once instead of after datasets' retries (a cached copy then needs ``HF_DATASETS_OFFLINE=1``).
    """
    described = repr(spec.dataset_name)
    if spec.dataset_config_name:
        described += f" (config {spec.dataset_config_name!r})"
    if not datasets.config.HF_HUB_OFFLINE and not os.path.exists(spec.dataset_name) and _hub_unreachable():
        raise ValueError(
            f"Task {spec.name!r}: cannot load dataset {described}: the Hugging Face Hub "
            f"({huggingface_hub.constants.ENDPOINT}) cannot be reached; to use a copy already in the datasets "
            "cache, set HF_DATASETS_OFFLINE=1"
        )
    try:
        return datasets.load_dataset(spec.dataset_name, spec.dataset_config_name, cache_dir=cache_dir)
    except Exception as err:  # whatever datasets raised (no network, unknown name, bad config): one line
        message = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
        raise ValueError(
            f"Task {spec.name!r}: cannot load dataset {described}: {type(err).__name__}: {message}"
        ) from err


def _load_file(spec: TaskSpec, split: str, path: str, cache_dir: str | None) -> tuple[datasets.Dataset, str]:
    """One split's file as a dataset, and its kind for :func:`_file_line` ("conll", "json", "csv", "tsv", or
    "document" for a layout the task type reads itself, whose rows are not lines)."""
    where = f"Task {spec.name!r}, split {split!r}"
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{where}: file {path!r} not found")
    if os.path.getsize(path) == 0:
        raise ValueError(f"{where}: file {path!r} is empty")
    suffix = Path(path).suffix.lower()
    if suffix in CONLL_EXTENSIONS and spec.info.head != "token":
        raise ValueError(f"{where}: {path!r} is a CoNLL column file, which holds NER data only")
    if suffix not in FILE_BUILDERS and suffix not in CONLL_EXTENSIONS:
        known = ", ".join([*FILE_BUILDERS, *CONLL_EXTENSIONS])
        raise ValueError(f"{where}: unsupported file type {suffix or '(none)'!r} of {path!r}; expected one of {known}")
    _check_utf8(path, where)
    if suffix in CONLL_EXTENSIONS:
        return _load_conll(spec, where, path, cache_dir), "conll"
    own = get_task_type(spec).load_file(spec, where, path, cache_dir)
    if own is not None:
        return own, "document"
    builder, kwargs = FILE_BUILDERS[suffix]
    kind = {".jsonl": "json", ".tsv": "tsv"}.get(suffix, suffix[1:])
    try:
        with _quiet_datasets_readers():
            dataset = datasets.load_dataset(builder, data_files={split: path}, split=split, cache_dir=cache_dir,
                                            **kwargs)
        return dataset, kind
    except DatasetGenerationError as err:
        # datasets wraps the parser's error; name the file's line where we can find it ourselves: the parsers count
        # rows within a block of the file ("in row 2212" of a later block), not lines of the file.
        cause = err.__cause__ or err
        bad = _first_bad_json_line(path) if builder == "json" else _first_bad_csv_record(path, suffix[1:])
        if bad:
            raise ValueError(f"{where}: could not read {path!r}, line {bad[0]}: {bad[1]}") from cause
        problem = re.sub(r"\s*\bin row \d+", "", " ".join(str(cause).split()))
        raise ValueError(f"{where}: could not read {path!r} ({type(cause).__name__}: {problem})") from cause
    except ValueError as err:
        if "corresponds to no data" in str(err):  # only blank lines, or a CSV header without rows
            raise ValueError(f"{where}: file {path!r} has no rows") from err
        # datasets reads a JSON lines column whose values differ in type (a number among strings) with a fallback
        # that fails on blank lines, naming nothing: name the line where the types first differ.
        bad = (_first_bad_json_line(path) or _first_mixed_json_types(path)) if builder == "json" else None
        if bad:
            raise ValueError(f"{where}: could not read {path!r}, line {bad[0]}: {bad[1]}") from err
        raise ValueError(f"{where}: could not read {path!r}: {' '.join(str(err).split())}") from err


@contextlib.contextmanager
def _quiet_datasets_readers() -> Iterator[None]:
    """datasets' JSON and CSV readers log a parse failure at ERROR before raising it; the raised error is reported
    (as one line naming file and line), so their multi-line log record would only repeat it."""
    loggers = [logging.getLogger(f"datasets.packaged_modules.{name}.{name}") for name in ("json", "csv")]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for log, level in zip(loggers, levels):
            log.setLevel(level)


def _check_utf8(path: str, where: str) -> None:
    """Data files must be UTF-8 (a UTF-8 byte-order mark is fine): else a ``ValueError`` naming the 1-based line and
    column of the first bad byte. pyarrow's JSON reader would store such bytes and fail only when a row is read,
    without a file or line; the CSV and CoNLL readers would fail without a line."""
    with open(path, "rb") as handle:
        head = handle.read(2)
        if head in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
            raise ValueError(
                f"{where}: file {path!r} is UTF-16 encoded (it starts with a UTF-16 byte-order mark); save it as UTF-8"
            )
        handle.seek(0)
        decoder = codecs.getincrementaldecoder("utf-8")()
        try:  # fast path: the whole file in large blocks
            for block in iter(lambda: handle.read(1 << 20), b""):
                decoder.decode(block)
            decoder.decode(b"", final=True)
            return
        except UnicodeDecodeError:
            pass
        handle.seek(0)
        for number, line in enumerate(handle, start=1):  # slow path, only for a bad file: find the line
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as err:
                raise ValueError(
                    f"{where}: file {path!r}, line {number}, column {err.start + 1}: not valid UTF-8 "
                    f"(byte 0x{line[err.start]:02x}); save the file as UTF-8"
                ) from None


def _first_bad_json_line(path: str) -> tuple[int, str] | None:
    """``(line, problem)`` of the first problem of a JSON file: for a JSON document (a file that starts with ``[``),
    where it stops being valid JSON; for JSON lines, the first non-blank line that is not a JSON object."""
    with open(path, encoding="utf-8-sig", errors="replace") as handle:
        text = handle.read()
    if text.lstrip().startswith("["):
        try:
            json.loads(text)
        except json.JSONDecodeError as err:
            return err.lineno, f"not valid JSON ({err.msg}, column {err.colno})"
        return None
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            return number, f"not valid JSON ({err.msg}, column {err.colno})"
        if not isinstance(record, dict):
            return number, f"expected a JSON object, got {type(record).__name__}"
    return None


def _first_mixed_json_types(path: str) -> tuple[int, str] | None:
    """``(line, problem)`` of the first JSON line where a field's value has another type (string, number, boolean,
    list, object; null goes with any) than on an earlier line."""
    first_seen: dict[str, tuple[str, int]] = {}
    with open(path, encoding="utf-8-sig", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                record = json.loads(line) if line.strip() else None
            except json.JSONDecodeError:
                return None
            for key, value in (record.items() if isinstance(record, dict) else ()):
                if value is None:
                    continue
                kind = _json_type(value)
                seen, seen_line = first_seen.setdefault(key, (kind, number))
                if seen != kind:
                    return number, (
                        f"field {key!r} is {kind} {value!r}"[:120] + f", but {seen} on line {seen_line}; give every "
                        "row the same type"
                    )
    return None


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return {str: "a string", list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def _first_bad_csv_record(path: str, kind: str) -> tuple[int, str] | None:
    """``(line, problem)`` of the first record of a CSV/TSV file that the reader refuses: more fields than the header
    has, or (CSV) a quoted field that is never closed."""
    width = None
    try:
        for line, record in _csv_records(path, kind, strict=True):
            if width is None:
                width = len(record)
            elif len(record) > width:
                return line, f"{len(record)} fields, but the header has {width}"
    except _CsvRecordError as err:
        return err.line, f"{err} (a quoted field that is not closed?)"
    return None


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
# Labels and tag schemes
# --------------------------------------------------------------------------------------------------------------------

# A tag with a scheme prefix: B-/I- (IOB), E-/S- (IOBES), L-/U- (BILOU), then the entity type.
_PREFIXED_TAG = re.compile(r"^([BIESLU])-(.+)$")


def _class_label_names(feature: Any) -> list[str] | None:
    """The names of a ``ClassLabel`` column, or of a column of lists of ``ClassLabel`` (tags), else ``None``."""
    if isinstance(feature, (datasets.Sequence, datasets.LargeList, datasets.List)):
        feature = feature.feature
    return list(feature.names) if isinstance(feature, datasets.ClassLabel) else None


def resolve_labels(spec: TaskSpec, raw: datasets.DatasetDict) -> TaskSpec:
    """Return ``spec`` with what its type reads from the data filled in: ``labels`` (and, for NER, ``tag_scheme``).

    The label order fixes the label ids stored in the model config. It comes from, by priority: the spec's own
    ``labels``; the names of a ``ClassLabel`` feature; the sorted set of string labels seen in the train split.
    Integer labels carry no names, so they need one of the first two. For NER the tag scheme is detected from the
    labelled data (see :func:`detect_tag_scheme`); IOB1 data gets the B- labels its conversion to IOB2 needs. A
    ``main_metric`` the task's type does not report is refused here.
    """
    task_type = get_task_type(spec)
    spec = task_type.resolve_labels(spec, raw)
    task_type.check_main_metric(spec)
    return spec


def _resolve_label_list(
    spec: TaskSpec,
    raw: datasets.DatasetDict,
    class_names: Callable[[Any], list[str] | None],
    labels_of: Callable[[Any], list[Any]],
) -> tuple[list[str], bool]:
    """The task's labels, and whether they were derived from the data (rather than given or named by ClassLabel).

    ``class_names(feature)``: the label names a column's feature declares; ``labels_of(value)``: the labels in one
    row's label value (one label, a tag per word, a set of labels), raising ``_LabelError`` for a malformed value.
    """
    if spec.labels:
        return list(spec.labels), False
    column = spec.label_column_name
    labelled = [split for split in SPLITS if split in raw and column in raw[split].column_names]
    for split in labelled:
        names = class_names(raw[split].features[column])
        if names:
            return names, False
    if "train" in raw and "train" not in labelled:
        raise ValueError(
            f"Task {spec.name!r}, split 'train' ({_origin(spec, raw, 'train')}): no 'labels' given and no column "
            f"{column!r} to take them from; columns: {', '.join(raw['train'].column_names)}"
        )
    if "train" not in labelled:
        raise ValueError(
            f"Task {spec.name!r}: no 'labels' given and no train split with column {column!r} to take them from"
        )
    values = raw["train"][column]
    rows = _rows_of(spec, raw, "train")
    seen: set[str] = set()
    for row, value in enumerate(values):
        try:
            tags = labels_of(value)
        except _LabelError as err:
            raise rows.error(row, column, str(err)) from None
        for tag in tags:
            # Anything but strings and numbers (missing or malformed labels) is reported by preprocess_task.
            if _is_number(tag):
                raise rows.error(
                    row, column, f"labels are numbers (e.g. {tag!r}); integer labels need the task's 'labels' list "
                    "or a ClassLabel feature to name them"
                )
            if isinstance(tag, str) and tag.strip():
                seen.add(tag)
    if not seen:
        raise ValueError(f"Task {spec.name!r}, split 'train' ({_origin(spec, raw, 'train')}), column {column!r}: "
                         "no row has a label")
    return sorted(seen), True


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _rows_of(spec: TaskSpec, raw: datasets.DatasetDict, split: str) -> _Rows:
    """How to name the rows of ``raw[split]``: with the file and line while the split is the file's rows in order,
    with the dataset for ``dataset_name`` data, else by row index alone."""
    source = getattr(raw, "sources", {}).get(split)
    dataset = raw[split]
    if source is not None and source.dataset is dataset:
        return _Rows(spec.name, split, source.path, source.kind, len(dataset))
    if spec.dataset_name and source is None and isinstance(raw, RawDatasetDict):
        return _Rows(spec.name, split, origin=f"dataset {spec.dataset_name!r}")
    return _Rows(spec.name, split)


def _origin(spec: TaskSpec, raw: datasets.DatasetDict, split: str) -> str:
    """Where a split's rows come from, for a message: its file, else the dataset, else ``split <name>``."""
    source = getattr(raw, "sources", {}).get(split)
    if source is not None:
        return source.path
    return f"dataset {spec.dataset_name!r}" if spec.dataset_name else f"split {split!r}"


@dataclass
class _TagEvidence:
    """What the tags of a NER task show about their scheme (see :func:`_detect_tag_scheme`)."""

    prefixes: set[str] = dataclasses.field(default_factory=set)  # scheme prefixes used: "B", "I", "E", ...
    prefixed_example: str | None = None
    plain_example: str | None = None  # a tag other than "O" without a prefix
    begin_opens_entity: bool = False  # some B-X follows a word that is not X: IOB2 (in IOB1, B- only splits X from X)
    inside_opens: set[str] = dataclasses.field(default_factory=set)  # types X with an I-X that starts an entity
    # Where each prefix and the examples were first seen ("in 'labels'", or a sentence given to `add_sentence`), so
    # that an error can point at them.
    seen_at: dict[str, Any] = dataclasses.field(default_factory=dict)
    where: Any = "in 'labels'"  # a string, or (rows, row) for a sentence, named by `_place` only for an error

    def add_name(self, tag: str) -> str | None:
        """Record one tag's form; return its entity type if it has a scheme prefix."""
        match = _PREFIXED_TAG.match(tag) if tag != OUTSIDE_TAG else None
        if match is None:
            if tag != OUTSIDE_TAG and self.plain_example is None:
                self.plain_example = tag
                self.seen_at["plain"] = self.where
            return None
        self.seen_at.setdefault(match.group(1), self.where)
        self.prefixes.add(match.group(1))
        if self.prefixed_example is None:
            self.prefixed_example = tag
            self.seen_at["prefixed"] = self.where
        return match.group(2)

    def add_sentence(self, tags: Sequence[str | None], where: Any = None) -> None:
        """Record one sentence's tags (``None`` for a value that is no valid label; preprocess_task reports it)."""
        if where is not None:
            self.where = where
        previous_type: str | None = None
        for tag in tags:
            entity_type = self.add_name(tag) if tag else None
            if entity_type is not None and entity_type != previous_type:
                if tag[0] == "B":
                    self.begin_opens_entity = True
                elif tag[0] == "I":
                    self.inside_opens.add(entity_type)
            previous_type = entity_type


def _place(where: Any) -> str:
    """A place recorded in :class:`_TagEvidence`, for a message: ``in 'labels'`` or ``in split 'train', row 3 (file,
    line 9)`` (the line looked up only now, as it reads the file again)."""
    if isinstance(where, tuple):
        rows, row = where
        return "in " + rows.where(row).removeprefix(f"Task {rows.task!r}, ")
    return str(where)


def _detect_tag_scheme(task: str, evidence: _TagEvidence) -> str:
    """The tag scheme of a NER task: "IOB1", "IOB2", "IOBES", "BILOU" or "IO".

    No prefixes (every tag but "O" is a bare type or a POS tag): IO. Any E-/S-: IOBES; any L-/U-: BILOU. B-/I- only:
    IOB1 if some I-X starts an entity and no B-X ever follows a word that is not X (IOB1 uses B- only between two
    adjacent entities of one type), else IOB2. Prefixed and prefix-less tags together are an error, as are the
    IOBES and BILOU prefixes together.
    """
    seen_at = {key: _place(where) for key, where in evidence.seen_at.items()}
    if evidence.plain_example and evidence.prefixes:
        raise ValueError(
            f"Task {task!r}: the tags mix scheme prefixes (e.g. {evidence.prefixed_example!r} "
            f"{seen_at.get('prefixed')}) with tags without one (e.g. {evidence.plain_example!r} "
            f"{seen_at.get('plain')}); use B-/I- (or E-/S-, L-/U-) prefixes on every tag but 'O', or none"
        )
    if not evidence.prefixes:
        return "IO" if evidence.plain_example else "IOB2"
    if evidence.prefixes & {"E", "S"} and evidence.prefixes & {"L", "U"}:
        iobes = next(prefix for prefix in "ES" if prefix in evidence.prefixes)
        bilou = next(prefix for prefix in "LU" if prefix in evidence.prefixes)
        raise ValueError(
            f"Task {task!r}: the tags mix IOBES prefixes (E-, S-; {iobes}- {seen_at.get(iobes)}) with BILOU prefixes "
            f"(L-, U-; {bilou}- {seen_at.get(bilou)}); use one scheme"
        )
    if evidence.prefixes & {"E", "S"}:
        return "IOBES"
    if evidence.prefixes & {"L", "U"}:
        return "BILOU"
    return "IOB1" if evidence.inside_opens and not evidence.begin_opens_entity else "IOB2"


def _with_tag_scheme(spec: TaskSpec, raw: datasets.DatasetDict, labels_derived: bool) -> TaskSpec:
    """``spec`` with the tag scheme detected from its label names and the tags of every labelled split, and with
    the B- labels needed where an I- tag starts an entity (preprocess_task turns those into B- tags: IOB2)."""
    evidence = _TagEvidence()
    if not labels_derived:  # derived labels are the data's tags, which are recorded with their rows below
        for label in spec.labels:
            evidence.add_name(label)
    column = spec.label_column_name
    for split, dataset in raw.items():
        if column not in dataset.column_names:
            continue
        names = _class_label_names(dataset.features[column]) or spec.labels
        rows = _rows_of(spec, raw, split)
        row = 0
        for batch in dataset.select_columns([column]).iter(batch_size=1000):
            for tags in batch[column]:
                if isinstance(tags, list):
                    evidence.add_sentence([_tag_name(tag, names) for tag in tags], where=(rows, row))
                row += 1
    scheme = _detect_tag_scheme(spec.name, evidence)
    stored = "IOB2" if scheme == "IOB1" else scheme
    if spec.tag_scheme is not None and spec.tag_scheme != stored:
        origins = ", ".join(_origin(spec, raw, split) for split in raw if column in raw[split].column_names)
        raise ValueError(
            f"Task {spec.name!r}: field 'tag_scheme' is {spec.tag_scheme!r}, but the tags are {scheme} (in "
            f"{origins})"
        )
    labels = list(spec.labels)
    if stored != "IOB2" or not evidence.inside_opens:
        return dataclasses.replace(spec, tag_scheme=stored)
    if scheme == "IOB1":
        logger.warning(
            "Task %r: the tags are IOB1 (an entity starts with I-); they are converted to IOB2 as the data is "
            "preprocessed, and the model learns and predicts IOB2", spec.name,
        )
    else:
        logger.warning(
            "Task %r: the tags are IOB2, but some I- tags start an entity (types %s); they are read as B- tags, "
            "as conlleval reads them", spec.name, ", ".join(sorted(evidence.inside_opens)),
        )
    missing = [f"B-{entity_type}" for entity_type in sorted(evidence.inside_opens) if f"B-{entity_type}" not in labels]
    if missing and labels_derived:
        labels = sorted(labels + missing)
    elif missing:
        labels += missing
        logger.warning(
            "Task %r: added the labels %s after the given ones, for the I- tags that start an entity and become B- "
            "tags", spec.name, ", ".join(missing),
        )
    return dataclasses.replace(spec, labels=labels, tag_scheme=stored)


def _tag_name(tag: Any, names: Sequence[str] | None) -> str | None:
    """A tag as a label name: ints index ``names``; anything invalid becomes ``None`` (preprocess_task reports it)."""
    if isinstance(tag, str):
        return tag
    if isinstance(tag, int) and not isinstance(tag, bool) and names and 0 <= tag < len(names):
        return names[tag]
    return None


def continuation_label_ids(labels: Sequence[str]) -> list[int]:
    """For ``label_all_tokens``: the id a word's non-first sub-tokens get.

    As in transformers' ``run_ner.py``, a B-X word's later sub-tokens get I-X (they continue the entity the first one
    begins) and every other tag keeps its own id. So does every tag of IOBES and BILOU: the later sub-tokens of an
    E-X, S-X, L-X or U-X word keep that tag (no sub-token tag would be right for both the word's first sub-token,
    which carries the word's tag, and the rest). Only first sub-tokens are ever scored, so this choice touches
    training only. A B- tag without an I- form keeps its own id, as do prefix-less (IO) tags.
    """
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


def _iob2_begin_ids(labels: Sequence[str]) -> tuple[list[str | None], dict[int, int]]:
    """For turning I- tags that start an entity into B- tags: the entity type of every label id (``None`` for tags
    outside IOB) and the B-X id of every I-X id whose B-X is a label."""
    label2id = {label: i for i, label in enumerate(labels)}
    types: list[str | None] = []
    begin_of_inside: dict[int, int] = {}
    for i, label in enumerate(labels):
        match = _PREFIXED_TAG.match(label)
        types.append(match.group(2) if match and match.group(1) in "BI" else None)
        if match and match.group(1) == "I" and f"B-{match.group(2)}" in label2id:
            begin_of_inside[i] = label2id[f"B-{match.group(2)}"]
    return types, begin_of_inside


def _to_iob2(tag_ids: list[int], types: Sequence[str | None], begin_of_inside: dict[int, int]) -> int:
    """Turn, in place, every I-X that starts an entity (after a word that is not X) into B-X; return how many changed.

    This converts IOB1 to IOB2 (IOB1's B-X, used only between two adjacent X entities, is already right in IOB2) and
    leaves valid IOB2 unchanged. ``types`` and ``begin_of_inside`` come from :func:`_iob2_begin_ids`.
    """
    changed = 0
    previous_type: str | None = None
    for position, tag_id in enumerate(tag_ids):
        entity_type = types[tag_id]
        if tag_id in begin_of_inside and entity_type != previous_type:
            tag_ids[position] = begin_of_inside[tag_id]
            changed += 1
        previous_type = entity_type
    return changed


class _LabelError(ValueError):
    """A bad label value; the caller adds where it is."""


def _label_id(value: Any, label2id: dict[str, int], class_names: list[str] | None) -> int:
    """Validate one label and return its id; ints index the ClassLabel names if the column has them, else the
    task's label list."""
    if value is None or (isinstance(value, float) and value != value) or (isinstance(value, str) and not value.strip()):
        raise _LabelError("missing label")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        names = class_names if class_names is not None else list(label2id)
        if not 0 <= value < len(names):
            raise _LabelError(f"label id {value} is out of range for {len(names)} labels")
        if class_names is None and str(value) in label2id and names[value] != str(value):
            # labels ["1", ..., "5"] and the number 3: the label named "3" or the one with id 3 ("4")?
            raise _LabelError(
                f"label {value} is a number: as a label id it means {names[value]!r}, but the task also has the "
                f"label {str(value)!r}; write the labels as strings in the data"
            )
        value = names[value]
        if value not in label2id:
            raise _LabelError(f"label {value!r} (ClassLabel id) is not one of the task's labels")
        return label2id[value]
    if not isinstance(value, str):
        raise _LabelError(f"expected a string or integer label, got {type(value).__name__} {value!r}")
    if value not in label2id:
        known = ", ".join(list(label2id)[:20]) + (", ..." if len(label2id) > 20 else "")
        raise _LabelError(f"unknown label {value!r}; the task's labels are {known}")
    return label2id[value]


# --------------------------------------------------------------------------------------------------------------------
# Tokenization
# --------------------------------------------------------------------------------------------------------------------


def load_tokenizer(name_or_path: str | os.PathLike, **kwargs: Any) -> PreTrainedTokenizerBase:
    """Load a fast tokenizer set up to encode pre-split words (``is_split_into_words=True``) correctly.

    The set-up is :func:`mtl_hf.tokenization.prepare_tokenizer`, the one the pipeline uses: byte-level BPE tokenizers
    (RoBERTa, GPT-2 style) get ``add_prefix_space=True``, so that every word is encoded as if it followed a space.
    """
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
    if not tokenizer.is_fast:
        raise ValueError(
            f"Tokenizer {str(name_or_path)!r} is not a fast tokenizer; the data pipeline needs the word ids that only "
            "fast (tokenizers-backed) tokenizers provide"
        )
    return prepare_tokenizer(tokenizer)


@dataclass(frozen=True)
class _Rows:
    """Where the rows being encoded come from, to name a bad row: task, split and, for a file in its original row
    order, the file (``kind`` and ``num_rows`` as :func:`_file_line` needs them)."""

    task: str
    split: str
    path: str | None = None
    kind: str | None = None
    num_rows: int = 0
    origin: str | None = None  # for rows that come from no file: the dataset they come from

    def where(self, row: int) -> str:
        """``Task 't', split 's', row N (file, line L)``: the row's 1-based file line where it is certain."""
        where = f"Task {self.task!r}, split {self.split!r}, row {row}"
        if self.path is not None:
            line = _file_line(self.path, self.kind, self.num_rows, row)
            where += f" ({self.path}, line {line})" if line is not None else f" ({self.path})"
        elif self.origin is not None:
            where += f" ({self.origin})"
        return where

    def error(self, row: int, column: str, problem: str, word: int | None = None) -> ValueError:
        """The error for a bad value in ``column`` of row ``row`` (index in the split), word ``word`` for NER."""
        where = self.where(row) + f", column {column!r}" + (f", word {word}" if word is not None else "")
        return ValueError(f"{where}: {problem}")


def map_split(
    context: SplitContext,
    dataset: datasets.Dataset,
    encode: Callable[..., dict[str, list]],
    fn_kwargs: dict[str, Any],
    columns: dict[str, Any],
    label_feature: Any,
) -> tuple[datasets.Dataset, int]:
    """Run a task type's batched ``encode(batch, indices, **fn_kwargs)`` over one split with cached
    ``Dataset.map``, and count the rows truncation cut.

    The output schema is fixed up front (so that a batch whose rows were all skipped still fits): the tokenizer's
    model inputs, ``task``, the type's own ``columns``, ``labels`` as ``label_feature`` where the split is labelled,
    and the ``_truncated`` flag every ``encode`` sets per row, which is counted and dropped here.
    """
    ids = datasets.List(datasets.Value("int64"))
    features = {name: ids for name in context.tokenizer.model_input_names}
    features.update({TASK_COLUMN: datasets.Value("string"), _TRUNCATED_COLUMN: datasets.Value("bool"), **columns})
    if context.label_column is not None:
        features["labels"] = label_feature
    encoded = dataset.map(
        encode,
        batched=True,
        with_indices=True,
        fn_kwargs=fn_kwargs,
        remove_columns=dataset.column_names,
        features=datasets.Features(features),
        num_proc=context.num_proc,
        load_from_cache_file=context.load_from_cache_file,
        desc=f"Tokenizing {context.spec.name}/{context.split}",
    )
    return encoded.remove_columns(_TRUNCATED_COLUMN), sum(encoded[_TRUNCATED_COLUMN])


class TaskDatasetDict(datasets.DatasetDict):
    """The tokenized splits of one task, plus what preprocessing had to cut or leave out.

    ``truncation_report`` maps every split to ``(rows truncated, rows)``: for NER the sentences that lost a word to
    ``max_seq_length`` (the lost words are not trained or scored), for the other types the texts (or pairs) whose end
    was cut. ``skipped_report`` maps each split of a classification, regression or multilabel task to ``(rows skipped
    for empty text, rows)``; only train skips them: in validation and test an empty text is kept (encoded as the
    special tokens alone), so that every input row gets a prediction. Both are also logged as warnings when non-zero. They describe the data as returned by
    :func:`preprocess_task`; further ``DatasetDict`` operations return plain ``DatasetDict`` objects without them.
    """

    truncation_report: dict[str, tuple[int, int]]
    skipped_report: dict[str, tuple[int, int]]


def _length_limit(
    max_seq_length: int, tokenizer: PreTrainedTokenizerBase, encoder_config: PreTrainedConfig | None, task: str
) -> int:
    """``max_seq_length``, capped (with a warning) by what the tokenizer and, when given, the encoder allow."""
    tokenizer_limit = tokenizer.model_max_length
    if encoder_config is not None:
        limit = max_input_length(tokenizer, encoder_config)
        allowed_by = (
            f"the tokenizer (model_max_length={tokenizer_limit}) and the encoder "
            f"({getattr(encoder_config, 'model_type', '?')}, "
            f"max_position_embeddings={getattr(encoder_config, 'max_position_embeddings', None)}) allow"
        )
    else:
        limit = tokenizer_limit
        allowed_by = f"the tokenizer's model_max_length={tokenizer_limit}"
    if max_seq_length <= limit:
        return max_seq_length
    logger.warning("task %r: max_seq_length=%d is longer than %s; using %d", task, max_seq_length, allowed_by, limit)
    return limit


def preprocess_task(
    spec: TaskSpec,
    raw: datasets.DatasetDict,
    tokenizer: PreTrainedTokenizerBase,
    max_seq_length: int = 128,
    label_all_tokens: bool = False,
    num_proc: int | None = None,
    load_from_cache_file: bool = True,
    encoder_config: PreTrainedConfig | None = None,
) -> TaskDatasetDict:
    """Validate and tokenize every split of one task with batched, cached ``Dataset.map``: the task's type
    (``mtl_hf.task_types``) encodes each split; this checks the columns and collects the reports.

    Text is encoded exactly as :class:`~mtl_hf.pipeline.MultiTaskPipeline` encodes it (``mtl_hf.tokenization``):
    texts are split into words with ``split_words`` (pairs: both texts, as the tokenizer's pair encoding with
    ``longest_first`` truncation), and words are encoded with
    ``is_split_into_words=True`` by the tokenizer as ``prepare_tokenizer`` sets it up (a byte-level BPE tokenizer
    without ``add_prefix_space`` is used through a prepared copy, never as it is). ``max_seq_length`` is capped by
    ``max_input_length(tokenizer, encoder_config)`` when the encoder's config is given (for a saved
    ``MultiTaskConfig``, its ``.encoder``), else by the tokenizer's ``model_max_length``.

    Output columns: the tokenizer's model inputs, ``labels`` (an id for classification, a float for regression, a
    multi-hot float vector for multilabel, one id per sub-token with -100 for NER), ``task`` and, for NER, ``word_ids`` (word index per sub-token, -1 for special tokens) and
    ``num_words`` (words in the input row, including any that yield no sub-token or were cut off). A split without
    the label column (unlabelled data to predict on) is only allowed as ``test`` and gets no ``labels``.
    ``label_all_tokens`` applies to the train split only, so that evaluation scores each word exactly once. NER tags
    in IOB2 (``spec.tag_scheme`` "IOB2", or ``None``) that start an entity with I- (IOB1) are turned into B- tags,
    in every split, with a warning that counts them. ``spec.labels`` must be set for a type with labels (see
    :func:`resolve_labels`).
    """
    if spec.info.has_labels and not spec.labels:
        raise ValueError(f"Task {spec.name!r}: labels are not set; call resolve_labels(spec, raw) first")
    if not tokenizer.is_fast:
        raise ValueError(f"Task {spec.name!r}: a fast tokenizer is needed (see load_tokenizer)")
    task_type = get_task_type(spec)
    tokenizer = prepare_tokenizer(tokenizer)
    if isinstance(encoder_config, MultiTaskConfig):
        encoder_config = encoder_config.encoder
    max_length = _length_limit(max_seq_length, tokenizer, encoder_config, spec.name)

    processed = TaskDatasetDict()
    processed.truncation_report = {}
    processed.skipped_report = {}
    for split, dataset in raw.items():
        rows = _rows_of(spec, raw, split)  # the file and line, while the split is the file's rows in order
        columns = dataset.column_names
        where = f"Task {spec.name!r}, split {split!r}" + (f" ({rows.path or rows.origin})" if rows.path or rows.origin
                                                            else "")
        for column in task_type.input_columns(spec):
            if column not in columns:
                raise ValueError(f"{where}: column {column!r} not found; columns: {', '.join(columns)}")
        label_column = spec.label_column if spec.label_column in columns else None
        if label_column is None and split != "test":
            raise ValueError(
                f"{where}: column {spec.label_column!r} not found; columns: {', '.join(columns)} "
                "(only a test split may be unlabelled)"
            )
        context = SplitContext(
            spec=spec, split=split, rows=rows, where=where, tokenizer=tokenizer, max_length=max_length,
            label_column=label_column, label_all_tokens=label_all_tokens, num_proc=num_proc,
            load_from_cache_file=load_from_cache_file,
        )
        encoding = task_type.encode_split(context, dataset)
        processed.truncation_report[split] = (encoding.truncated, len(encoding.dataset))
        if encoding.skipped is not None:
            processed.skipped_report[split] = (encoding.skipped, len(dataset))
        processed[split] = encoding.dataset
    return processed


def load_and_preprocess(
    specs: Sequence[TaskSpec],
    tokenizer: PreTrainedTokenizerBase,
    max_seq_length: int = 128,
    label_all_tokens: bool = False,
    num_proc: int | None = None,
    cache_dir: str | None = None,
    load_from_cache_file: bool = True,
    encoder_config: PreTrainedConfig | None = None,
) -> tuple[list[TaskSpec], dict[str, TaskDatasetDict]]:
    """Load, resolve labels (and NER tag schemes) for, and tokenize every task: the specs with labels (for the
    model config) and each task's tokenized splits, in the order of ``specs``. ``encoder_config`` caps
    ``max_seq_length`` (see :func:`preprocess_task`)."""
    resolved: list[TaskSpec] = []
    processed: dict[str, TaskDatasetDict] = {}
    for spec in specs:
        raw = load_raw_datasets(spec, cache_dir=cache_dir)
        spec = resolve_labels(spec, raw)
        resolved.append(spec)
        processed[spec.name] = preprocess_task(
            spec, raw, tokenizer, max_seq_length=max_seq_length, label_all_tokens=label_all_tokens,
            num_proc=num_proc, load_from_cache_file=load_from_cache_file, encoder_config=encoder_config,
        )
    return resolved, processed


# --------------------------------------------------------------------------------------------------------------------
# Collation
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class MultiTaskDataCollator:
    """Pad a task-homogeneous batch to its longest row and say which task it belongs to.

    Token columns are padded by the tokenizer (optionally to a multiple of ``pad_to_multiple_of``). Labels with one
    integer id per token (NER) are padded with ``label_pad_token_id`` to the same length; one label per row is
    stacked as it is: class ids become a ``LongTensor``, regression targets a ``FloatTensor``, multi-hot
    multilabel vectors a ``(batch, num_labels)`` ``FloatTensor`` and extractive QA's start and end positions a
    ``(batch, 2)`` ``LongTensor``, as transformers' collators treat them. The output's ``task``
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
        # Integer labels as long as the input are per token (NER), to be padded with it; any other labels (a class
        # id, a float, a multi-hot vector, extractive QA's start and end positions) are one per row, stacked.
        labels, input_ids = rows[0].get("labels"), rows[0].get(self.tokenizer.model_input_names[0])
        if isinstance(labels, torch.Tensor):
            token_level = labels.dim() > 0 and not labels.is_floating_point()
        else:
            token_level = isinstance(labels, (list, tuple)) and bool(labels) and isinstance(labels[0], int)
        token_level = token_level and input_ids is not None and len(labels) == len(input_ids)
        batch = dict((self._token_level if token_level else self._sequence_level)(rows))
        batch[TASK_COLUMN] = tasks.pop()
        return batch
