"""Loading, validating and tokenizing the data of every task, and collating task-homogeneous batches.

Everything that touches rows goes through ``datasets`` (its builders, ``Dataset.from_generator`` and batched
``Dataset.map``) so that results are cached on disk and a second run does not re-tokenize. What is written by hand
here is only what those libraries do not do: the CoNLL reader, the checks that turn bad rows into errors naming task,
split, row, file line and column, NER tag-scheme detection (with IOB1 -> IOB2 conversion), the word-to-sub-token
label alignment, and the truncation accounting. Text is encoded the one way ``mtl_hf.tokenization`` defines, which
the pipeline uses too.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import re
import socket
from collections.abc import Iterator, Sequence
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

from .configuration_multitask import OUTSIDE_TAG, MultiTaskConfig, TaskSpec
from .tokenization import (
    encode_texts,
    encode_words,
    max_input_length,
    prepare_tokenizer,
)

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


def _conll_sentences(path: str) -> Iterator[tuple[int, list[str], list[str]]]:
    """``(first line, words, tags)`` of every sentence of a CoNLL column file (see :func:`read_conll`)."""
    words: list[str] = []
    tags: list[str] = []
    first_line = 0
    with open(path, encoding="utf-8") as handle:
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
    kind: str  # "conll", "json", "csv" or "tsv"
    dataset: datasets.Dataset


def _file_line(path: str, kind: str, num_rows: int, row: int) -> int | None:
    """The 1-based line of ``path`` where row ``row`` starts, or ``None`` where that is not certain.

    Read from the file again, so it costs nothing until an error needs it. CSV/TSV: the header is line 1, blank lines
    are skipped (as datasets' pandas reader skips them) and a quoted field may span lines; JSON lines: blank lines are
    skipped, as datasets' reader skips them; CoNLL: the line of the sentence's first word. A line is given only when
    the file holds exactly ``num_rows`` rows, so a file read differently from what is assumed here never gets a
    wrong line.
    """
    if kind == "conll":
        starts = [first_line for first_line, _, _ in _conll_sentences(path)]
    elif kind == "json":
        with open(path, encoding="utf-8", errors="replace") as handle:
            starts = [number for number, line in enumerate(handle, start=1) if line.strip()]
    else:
        starts = _csv_record_lines(path, kind)[1:]  # the first record is the header
    return starts[row] if len(starts) == num_rows and 0 <= row < num_rows else None


def _csv_record_lines(path: str, kind: str) -> list[int]:
    """The first line of every record of a CSV/TSV file, skipping blank lines as pandas (datasets' reader) does."""
    dialect: dict[str, Any] = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if kind == "tsv" else {}
    starts: list[int] = []
    with open(path, encoding="utf-8", errors="replace", newline="") as handle:
        reader = csv.reader(handle, **dialect)
        first_line = 1
        for record in reader:
            if len(record) > 1 or (record and record[0].strip()):
                starts.append(first_line)
            first_line = reader.line_num + 1
    return starts


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
            raw[split] = _load_file(spec, split, path, cache_dir)
            suffix = Path(path).suffix.lower()
            kind = "conll" if suffix in CONLL_EXTENSIONS else {".jsonl": "json", ".tsv": "tsv"}.get(suffix, suffix[1:])
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
        # datasets wraps the parser's error; surface the real cause together with task, split, file and line.
        cause = err.__cause__ or err
        bad_line = _first_bad_json_line(path) if builder == "json" else None
        at = f", line {bad_line[0]}: {bad_line[1]}" if bad_line else ""
        raise ValueError(f"{where}: could not read {path!r}{at} ({type(cause).__name__}: {cause})") from cause
    except ValueError as err:  # e.g. a CSV file with a header but no rows
        raise ValueError(f"{where}: could not read {path!r}: {err}") from err


def _first_bad_json_line(path: str) -> tuple[int, str] | None:
    """``(line, problem)`` of the first non-blank line of a JSON lines file that is not a JSON object, if any."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                return number, f"not valid JSON ({err.msg})"
            if not isinstance(record, dict):
                return number, f"expected a JSON object, got {type(record).__name__}"
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


def _class_label_names(feature: Any, task_type: str) -> list[str] | None:
    """The names of a ``ClassLabel`` column (for NER: of a list of ``ClassLabel``), else ``None``."""
    if task_type == "ner" and isinstance(feature, (datasets.Sequence, datasets.LargeList)):
        feature = feature.feature
    return list(feature.names) if isinstance(feature, datasets.ClassLabel) else None


def resolve_labels(spec: TaskSpec, raw: datasets.DatasetDict) -> TaskSpec:
    """Return ``spec`` with ``labels`` (and, for NER, ``tag_scheme``) filled in.

    The label order fixes the label ids stored in the model config. It comes from, by priority: the spec's own
    ``labels``; the names of a ``ClassLabel`` feature; the sorted set of string labels seen in the train split.
    Integer labels carry no names, so they need one of the first two. For NER the tag scheme is detected from the
    labelled data (see :func:`detect_tag_scheme`); IOB1 data gets the B- labels its conversion to IOB2 needs.
    """
    labels, derived = _resolve_label_list(spec, raw)
    spec = dataclasses.replace(spec, labels=labels)
    return _with_tag_scheme(spec, raw, labels_derived=derived) if spec.type == "ner" else spec


def _resolve_label_list(spec: TaskSpec, raw: datasets.DatasetDict) -> tuple[list[str], bool]:
    """The task's labels, and whether they were derived from the data (rather than given or named by ClassLabel)."""
    if spec.labels:
        return list(spec.labels), False
    column = spec.label_column_name
    labelled = [split for split in SPLITS if split in raw and column in raw[split].column_names]
    for split in labelled:
        names = _class_label_names(raw[split].features[column], spec.type)
        if names:
            return names, False
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
    return sorted(seen), True


@dataclass
class _TagEvidence:
    """What the tags of a NER task show about their scheme (see :func:`_detect_tag_scheme`)."""

    prefixes: set[str] = dataclasses.field(default_factory=set)  # scheme prefixes used: "B", "I", "E", ...
    prefixed_example: str | None = None
    plain_example: str | None = None  # a tag other than "O" without a prefix
    begin_opens_entity: bool = False  # some B-X follows a word that is not X: IOB2 (in IOB1, B- only splits X from X)
    inside_opens: set[str] = dataclasses.field(default_factory=set)  # types X with an I-X that starts an entity

    def add_name(self, tag: str) -> str | None:
        """Record one tag's form; return its entity type if it has a scheme prefix."""
        match = _PREFIXED_TAG.match(tag) if tag != OUTSIDE_TAG else None
        if match is None:
            if tag != OUTSIDE_TAG and self.plain_example is None:
                self.plain_example = tag
            return None
        self.prefixes.add(match.group(1))
        self.prefixed_example = self.prefixed_example or tag
        return match.group(2)

    def add_sentence(self, tags: Sequence[str | None]) -> None:
        """Record one sentence's tags (``None`` for a value that is no valid label; preprocess_task reports it)."""
        previous_type: str | None = None
        for tag in tags:
            entity_type = self.add_name(tag) if tag else None
            if entity_type is not None and entity_type != previous_type:
                if tag[0] == "B":
                    self.begin_opens_entity = True
                elif tag[0] == "I":
                    self.inside_opens.add(entity_type)
            previous_type = entity_type


def _detect_tag_scheme(task: str, evidence: _TagEvidence) -> str:
    """The tag scheme of a NER task: "IOB1", "IOB2", "IOBES", "BILOU" or "IO".

    No prefixes (every tag but "O" is a bare type or a POS tag): IO. Any E-/S-: IOBES; any L-/U-: BILOU. B-/I- only:
    IOB1 if some I-X starts an entity and no B-X ever follows a word that is not X (IOB1 uses B- only between two
    adjacent entities of one type), else IOB2. Prefixed and prefix-less tags together are an error, as are the
    IOBES and BILOU prefixes together.
    """
    if evidence.plain_example and evidence.prefixes:
        raise ValueError(
            f"Task {task!r}: the tags mix scheme prefixes (e.g. {evidence.prefixed_example!r}) with tags without one "
            f"(e.g. {evidence.plain_example!r}); use B-/I- (or E-/S-, L-/U-) prefixes on every tag but 'O', or none"
        )
    if not evidence.prefixes:
        return "IO" if evidence.plain_example else "IOB2"
    if evidence.prefixes & {"E", "S"} and evidence.prefixes & {"L", "U"}:
        raise ValueError(
            f"Task {task!r}: the tags mix IOBES prefixes (E-, S-) with BILOU prefixes (L-, U-); use one scheme"
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
    for label in spec.labels:
        evidence.add_name(label)
    column = spec.label_column_name
    for dataset in raw.values():
        if column not in dataset.column_names:
            continue
        names = _class_label_names(dataset.features[column], spec.type) or spec.labels
        for batch in dataset.select_columns([column]).iter(batch_size=1000):
            for tags in batch[column]:
                if isinstance(tags, list):
                    evidence.add_sentence([_tag_name(tag, names) for tag in tags])
    scheme = _detect_tag_scheme(spec.name, evidence)
    stored = "IOB2" if scheme == "IOB1" else scheme
    if spec.tag_scheme is not None and spec.tag_scheme != stored:
        raise ValueError(f"Task {spec.name!r}: field 'tag_scheme' is {spec.tag_scheme!r}, but the tags are {scheme}")
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

    def error(self, row: int, column: str, problem: str, word: int | None = None) -> ValueError:
        """The error for a bad value in ``column`` of row ``row`` (index in the split), word ``word`` for NER."""
        where = f"Task {self.task!r}, split {self.split!r}, row {row}"
        if self.path is not None:
            line = _file_line(self.path, self.kind, self.num_rows, row)
            where += f" ({self.path}, line {line})" if line is not None else f" ({self.path})"
        where += f", column {column!r}" + (f", word {word}" if word is not None else "")
        return ValueError(f"{where}: {problem}")


def _output_features(tokenizer: PreTrainedTokenizerBase, task_type: str, with_labels: bool) -> datasets.Features:
    """The schema of a tokenized split, fixed up front so that a batch whose rows were all skipped still fits."""
    ids = datasets.List(datasets.Value("int64"))
    features = {name: ids for name in tokenizer.model_input_names}
    features[TASK_COLUMN] = datasets.Value("string")
    features[_TRUNCATED_COLUMN] = datasets.Value("bool")
    if task_type == "ner":
        features[WORD_IDS_COLUMN] = ids
        features[NUM_WORDS_COLUMN] = datasets.Value("int64")
        features[_CONVERTED_COLUMN] = datasets.Value("int64")
    if with_labels:
        features["labels"] = ids if task_type == "ner" else datasets.Value("int64")
    return datasets.Features(features)


def _encode_classification(
    batch: dict[str, list],
    indices: list[int],
    *,
    tokenizer: PreTrainedTokenizerBase,
    rows: _Rows,
    text_column: str,
    label_column: str | None,
    label2id: dict[str, int],
    class_names: list[str] | None,
    max_length: int,
    skip_empty: bool,
) -> dict[str, list]:
    """Validate and tokenize a batch of classification rows as the pipeline encodes a text (``encode_texts``).

    With ``skip_empty`` (train) rows whose text is empty are left out (counted by the caller from the change in
    length); otherwise such a row is kept and encoded as the special tokens alone, so that it gets a prediction.
    """
    texts: list[str] = []
    labels: list[int] = []
    for position, row in enumerate(indices):
        text = batch[text_column][position]
        if text is None:
            raise rows.error(row, text_column, "missing text")
        if not isinstance(text, str):
            raise rows.error(row, text_column, f"expected a string, got {type(text).__name__} {text!r}")
        if skip_empty and not text.strip():
            continue
        texts.append(text)
        if label_column is not None:
            try:
                labels.append(_label_id(batch[label_column][position], label2id, class_names))
            except _LabelError as err:
                raise rows.error(row, label_column, str(err)) from None
    if texts:
        encoding = encode_texts(tokenizer, texts, truncation=True, max_length=max_length)
        output = dict(encoding)
        output[_TRUNCATED_COLUMN] = [bool(part.overflowing) for part in encoding.encodings]
    else:
        output = {name: [] for name in tokenizer.model_input_names}
        output[_TRUNCATED_COLUMN] = []
    output[TASK_COLUMN] = [rows.task] * len(texts)
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


class TaskDatasetDict(datasets.DatasetDict):
    """The tokenized splits of one task, plus what preprocessing had to cut or leave out.

    ``truncation_report`` maps every split to ``(rows truncated, rows)``: for NER the sentences that lost a word to
    ``max_seq_length`` (the lost words are not trained or scored), for classification the texts whose end was cut.
    ``skipped_report`` maps each classification split to ``(rows skipped for empty text, rows)``; only train skips
    them: in validation and test an empty text is kept (encoded as the special tokens alone), so that every input row
    gets a prediction. Both are also logged as warnings when non-zero. They describe the data as returned by
    :func:`preprocess_task`; further ``DatasetDict`` operations return plain ``DatasetDict`` objects without them.
    """

    truncation_report: dict[str, tuple[int, int]]
    skipped_report: dict[str, tuple[int, int]]


def _length_limit(
    max_seq_length: int, tokenizer: PreTrainedTokenizerBase, encoder_config: PreTrainedConfig | None
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
    logger.warning("max_seq_length=%d is longer than %s; using %d", max_seq_length, allowed_by, limit)
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
    """Validate and tokenize every split of one task with batched, cached ``Dataset.map``.

    Text is encoded exactly as :class:`~mtl_hf.pipeline.MultiTaskPipeline` encodes it (``mtl_hf.tokenization``):
    classification texts are split into words with ``split_words``, and words are encoded with
    ``is_split_into_words=True`` by the tokenizer as ``prepare_tokenizer`` sets it up (a byte-level BPE tokenizer
    without ``add_prefix_space`` is used through a prepared copy, never as it is). ``max_seq_length`` is capped by
    ``max_input_length(tokenizer, encoder_config)`` when the encoder's config is given (for a saved
    ``MultiTaskConfig``, its ``.encoder``), else by the tokenizer's ``model_max_length``.

    Output columns: the tokenizer's model inputs, ``labels`` (an id for classification, one id per sub-token with
    -100 for NER), ``task`` and, for NER, ``word_ids`` (word index per sub-token, -1 for special tokens) and
    ``num_words`` (words in the input row, including any that yield no sub-token or were cut off). A split without
    the label column (unlabelled data to predict on) is only allowed as ``test`` and gets no ``labels``.
    ``label_all_tokens`` applies to the train split only, so that evaluation scores each word exactly once. NER tags
    in IOB2 (``spec.tag_scheme`` "IOB2", or ``None``) that start an entity with I- (IOB1) are turned into B- tags,
    in every split, with a warning that counts them. ``spec.labels`` must be set (see :func:`resolve_labels`).
    """
    if not spec.labels:
        raise ValueError(f"Task {spec.name!r}: labels are not set; call resolve_labels(spec, raw) first")
    if not tokenizer.is_fast:
        raise ValueError(f"Task {spec.name!r}: a fast tokenizer is needed (see load_tokenizer)")
    tokenizer = prepare_tokenizer(tokenizer)
    if isinstance(encoder_config, MultiTaskConfig):
        encoder_config = encoder_config.encoder
    max_length = _length_limit(max_seq_length, tokenizer, encoder_config)
    sources: dict[str, DataSource] = getattr(raw, "sources", {})

    processed = TaskDatasetDict()
    processed.truncation_report = {}
    processed.skipped_report = {}
    for split, dataset in raw.items():
        source = sources.get(split)
        if source is not None and source.dataset is dataset:  # the file's rows, in order: lines can be named
            rows = _Rows(spec.name, split, source.path, source.kind, len(dataset))
        else:
            rows = _Rows(spec.name, split)
        columns = dataset.column_names
        where = f"Task {spec.name!r}, split {split!r}" + (f" ({rows.path})" if rows.path else "")
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
            "rows": rows,
            "text_column": spec.text_column_name,
            "label_column": label_column,
            "label2id": spec.label2id,
            "class_names": class_names,
            "max_length": max_length,
        }
        if spec.type == "ner":
            use_continuation = label_all_tokens and split == "train"
            fn_kwargs["continuation"] = continuation_label_ids(spec.labels) if use_continuation else None
            fn_kwargs["iob2"] = _iob2_begin_ids(spec.labels) if spec.tag_scheme in (None, "IOB2") else None
        else:
            fn_kwargs["skip_empty"] = split == "train"
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
        truncated = sum(encoded[_TRUNCATED_COLUMN])
        processed.truncation_report[split] = (truncated, len(encoded))
        encoded = encoded.remove_columns(_TRUNCATED_COLUMN)
        if spec.type == "ner":
            if truncated:
                logger.warning(
                    "task %r, split %r: %d of %d sentences truncated to max_seq_length=%d "
                    "(their cut-off words are not trained or scored)",
                    spec.name, split, truncated, len(encoded), max_length,
                )
            converted = sum(encoded[_CONVERTED_COLUMN])
            if converted:
                logger.warning(
                    "task %r, split %r: converted IOB1 to IOB2: %d of %d tags changed from I- to B- "
                    "(an I- tag that starts an entity)",
                    spec.name, split, converted, sum(encoded[NUM_WORDS_COLUMN]),
                )
            encoded = encoded.remove_columns(_CONVERTED_COLUMN)
        else:
            if truncated:
                logger.warning(
                    "task %r, split %r: %d of %d texts truncated to max_seq_length=%d "
                    "(the model sees only their first %d tokens)",
                    spec.name, split, truncated, len(encoded), max_length, max_length,
                )
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
