"""Configuration of a multi-task model: one nested encoder config plus an ordered list of task specs.

This module is copied next to the weights by ``save_pretrained`` so that ``trust_remote_code=True`` can load the
model where ``mtl_hf`` is not installed: it must import nothing but the standard library and transformers.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from dataclasses import dataclass
from typing import Any

from transformers import AutoConfig, PreTrainedConfig

POOLING_MODES = ("cls", "mean")
# The head of a sequence task (classification, regression, multilabel). `linear`: the pooled vector -> dropout ->
# linear. `native`: the encoder architecture's own sequence classifier (BERT's pooler, RoBERTa's and ELECTRA's dense
# layer, DistilBERT's pre-classifier, DeBERTa's context pooler, each with its activation, before the output layer),
# so that the task exports exactly as that architecture's `*ForSequenceClassification`. See `NATIVE_CLASSIFIERS` in
# `modeling_multitask`.
CLASSIFIER_HEADS = ("linear", "native")
DEFAULT_CLASSIFIER = "linear"
# How the tags of a NER task mark entities. IOB2: B-X begins an entity, I-X continues it; IOBES (BIOES) adds E-X (end)
# and S-X (single-word entity); BILOU names them L-X (last) and U-X (unit); IO: tags without prefixes (`PER`, or POS
# tags such as `NN`), scored per word since they delimit no spans. IOB1 data is converted to IOB2 when it is loaded.
TAG_SCHEMES = ("IOB2", "IOBES", "BILOU", "IO")
OUTSIDE_TAG = "O"  # the tag of a word outside any entity
DEFAULT_THRESHOLD = 0.5  # multilabel: a label is predicted when its probability reaches this
DEFAULT_LABEL_DELIMITER = ","  # multilabel: what separates the labels of a row given as one string (CSV)
# The columns a task reads, by the field that names each one, with its default column name.
TEXT_COLUMNS = (("text_column_name", "text"), ("label_column_name", "label"))


@dataclass(frozen=True)
class TaskTypeInfo:
    """What a saved model must know of a task type to load and run: the shape of its head (``sequence``: one output
    vector per input; ``token``: one per token; ``span``: start and end logits per token, padding masked), its loss (see ``modeling_multitask.LOSSES``), whether it has named
    labels, and the task fields that apply to this type only. It lives here, in a file that ``save_pretrained``
    copies for ``trust_remote_code``, so that a model loads where mtl_hf is not installed; everything else about a
    type (reading and encoding rows, metrics, predictions, pipeline output, card) is its module in
    ``mtl_hf.task_types``, which registers itself here with one entry.

    ``outputs``: the head's number of outputs where the type fixes it (2 for extractive QA: start and end), else one
    per label (1 for a type without labels). ``defaults``: values of fields a task of this type leaves unset
    (``pooling`` defaults to ``cls`` wherever it applies). ``columns``: the fields that name the columns a task of this type reads, with their default column names;
    ``label_field`` is the one holding the targets (a split without that column is unlabelled)."""

    head: str
    loss: str
    has_labels: bool = True
    fields: tuple[str, ...] = ()
    defaults: tuple[tuple[str, Any], ...] = ()
    columns: tuple[tuple[str, str], ...] = TEXT_COLUMNS
    label_field: str = "label_column_name"
    outputs: int | None = None


# Extractive QA: the defaults of transformers' run_qa.py. `dropout` 0: transformers' QA heads apply none. An unset
# `doc_stride` is min(128, half the window), as transformers' QA pipeline sets it (run_qa.py's 128 assumes windows
# of 384), resolved where the window length is known.
QA_DEFAULTS = (
    ("max_answer_length", 30), ("n_best_size", 20), ("version_2_with_negative", False),
    ("null_score_diff_threshold", 0.0), ("dropout", 0.0),
)
TASK_TYPES: dict[str, TaskTypeInfo] = {
    "classification": TaskTypeInfo(
        "sequence", "cross_entropy", fields=("pooling", "classifier", "text_pair_column_name"),
        defaults=(("classifier", DEFAULT_CLASSIFIER),),
    ),
    "regression": TaskTypeInfo(
        "sequence", "mse", has_labels=False, fields=("pooling", "classifier", "text_pair_column_name"), outputs=1,
        defaults=(("classifier", DEFAULT_CLASSIFIER),),
    ),
    "multilabel": TaskTypeInfo(
        "sequence", "bce", fields=("pooling", "classifier", "threshold", "label_delimiter"),
        defaults=(("classifier", DEFAULT_CLASSIFIER), ("threshold", DEFAULT_THRESHOLD),
                  ("label_delimiter", DEFAULT_LABEL_DELIMITER)),
        columns=(("text_column_name", "text"), ("label_column_name", "labels")),
    ),
    "ner": TaskTypeInfo(
        "token", "cross_entropy", fields=("tag_scheme",),
        columns=(("text_column_name", "tokens"), ("label_column_name", "ner_tags")),
    ),
    "extractive_qa": TaskTypeInfo(
        "span", "span", has_labels=False, outputs=2,
        fields=("doc_stride", *(name for name, _ in QA_DEFAULTS if name != "dropout")), defaults=QA_DEFAULTS,
        columns=(("context_column_name", "context"), ("question_column_name", "question"),
                 ("answers_column_name", "answers")),
        label_field="answers_column_name",
    ),
}
# Every field that names a column; a task may set only those its type reads (`TaskTypeInfo.columns`).
COLUMN_FIELDS = (
    "text_column_name", "label_column_name", "context_column_name", "question_column_name", "answers_column_name",
)
# The fields of a task that shape the model or how its outputs are read; the rest of TaskSpec only says where the
# task's data lives. Type-specific ones are written to config.json only for the types they apply to.
MODEL_FIELDS = (
    "name", "type", "labels", "weight", "dropout", "main_metric", "pooling", "classifier", "tag_scheme", "threshold",
    "text_pair_column_name", "doc_stride", "max_answer_length", "n_best_size", "version_2_with_negative",
    "null_score_diff_threshold",
)
# The encoder of a config built without one (as in EncoderDecoderConfig), e.g. by `AutoConfig.for_model`.
DEFAULT_ENCODER_TYPE = "bert"
# A task name keys the model's heads (a torch ModuleDict), the metrics (`eval_<task>_f1`) and file names
# (`predict_results_<task>.txt`): letters, digits, `_` and `-`, starting with a letter, so that it is safe in all three
# (no `.`, which ModuleDict refuses, no `/` or space, which break or mangle file names, nothing that looks like a
# command-line flag or a number), and short enough for a file name.
TASK_NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
MAX_TASK_NAME_LENGTH = 64
# Fields that hold a path or a column or dataset name: a string when given.
STRING_FIELDS = (
    "train_file", "validation_file", "test_file", "dataset_name", "dataset_config_name", "text_column_name",
    "text_pair_column_name", "label_column_name", "context_column_name", "question_column_name", "answers_column_name",
    "main_metric",
)


@functools.cache
def reserved_task_names() -> frozenset[str]:
    """Names a task cannot have because the heads' ``torch.nn.ModuleDict`` has an attribute of that name (``keys``,
    ``items``, ``update``, ``train``, ``type``, ...): it refuses such a key. Read from torch itself, so that every name
    the installed torch would refuse is refused here, before any training; empty where torch is not installed."""
    try:
        from torch.nn import ModuleDict
    except ImportError:  # a config can be read without torch; no heads are built then
        return frozenset()
    return frozenset(name for name in dir(ModuleDict()) if TASK_NAME_PATTERN.fullmatch(name))


def check_task_name(name: Any) -> None:
    """Raise ``ValueError`` unless ``name`` is a usable task name (see ``TASK_NAME_PATTERN``)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"Task name must be a non-empty string, got {name!r} (field 'name')")
    if not TASK_NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"Task name {name!r} (field 'name') is not allowed: use letters, digits, '_' and '-', starting with a "
            "letter (the name keys the task's head, its metrics and its prediction file)"
        )
    if len(name) > MAX_TASK_NAME_LENGTH:
        raise ValueError(
            f"Task name {name[:20]!r}... (field 'name') is {len(name)} characters long; at most "
            f"{MAX_TASK_NAME_LENGTH} are allowed (it is part of file names)"
        )
    if name in reserved_task_names():
        raise ValueError(
            f"Task name {name!r} (field 'name') is reserved: it is an attribute of torch.nn.ModuleDict, which holds "
            "the heads by task name; choose another name"
        )


def check_distinct_names(names: list[str]) -> None:
    """Task names must differ in more than letter case: each names a file (``predict_results_<task>.txt``), and
    ``NER`` and ``ner`` are one file on case-insensitive file systems (macOS, Windows)."""
    seen: dict[str, str] = {}
    for name in names:
        other = seen.setdefault(name.lower(), name)
        if other == name and names.count(name) > 1:
            raise ValueError(f"Task {name!r}: field 'name' is used by more than one task")
        if other != name:
            raise ValueError(
                f"Task {name!r}: field 'name' differs from task {other!r} in letter case only; task names must differ "
                "in more than case (each names a file, and case-insensitive file systems would mix them up)"
            )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class TaskSpec:
    """One task: what the model needs (name, type, labels, head settings) and, optionally, where its data is.

    The same object describes a task in a YAML/JSON task file, in Python, and (model fields only) in the model's
    ``config.json``. ``labels`` may be left out while reading data; the data pipeline fills it in before a model is
    built from the spec.
    """

    name: str
    type: str
    labels: list[str] | None = None
    weight: float = 1.0
    dropout: float | None = None
    main_metric: str | None = None
    pooling: str | None = None
    classifier: str | None = None
    tag_scheme: str | None = None
    threshold: float | None = None
    train_file: str | None = None
    validation_file: str | None = None
    test_file: str | None = None
    dataset_name: str | None = None
    dataset_config_name: str | None = None
    text_column_name: str | None = None
    text_pair_column_name: str | None = None
    label_column_name: str | None = None
    label_delimiter: str | None = None
    context_column_name: str | None = None
    question_column_name: str | None = None
    answers_column_name: str | None = None
    doc_stride: int | None = None
    max_answer_length: int | None = None
    n_best_size: int | None = None
    version_2_with_negative: bool | None = None
    null_score_diff_threshold: float | None = None

    def __post_init__(self) -> None:
        info = TASK_TYPES.get(self.type)
        if info is not None and "pooling" in info.fields and self.pooling is None:
            self.pooling = "cls"
        elif info is not None and "pooling" not in info.fields and self.pooling == "cls":
            # `cls`, the former default for every task, is what earlier config.json files and task entries carry on
            # NER tasks, where pooling means nothing.
            self.pooling = None
        if info is not None:
            for name, default in (*info.defaults, *info.columns):
                if getattr(self, name) is None:
                    setattr(self, name, default)
        self.validate(require_labels=False)
        if self.labels is not None:
            self.labels = list(self.labels)
        self.weight = float(self.weight)
        if self.threshold is not None:
            self.threshold = float(self.threshold)
        if self.null_score_diff_threshold is not None:
            self.null_score_diff_threshold = float(self.null_score_diff_threshold)

    @property
    def info(self) -> TaskTypeInfo:
        """What the model knows of this task's type (head shape, loss, labels, fields)."""
        return TASK_TYPES[self.type]

    @property
    def label_column(self) -> str:
        """The column holding the task's targets (labels, or answers for extractive QA)."""
        return getattr(self, self.info.label_field)

    @property
    def takes_pairs(self) -> bool:
        """Whether each input is a pair of texts (``text_pair_column_name`` is set)."""
        return self.text_pair_column_name is not None

    def _error(self, field_name: str, problem: str) -> ValueError:
        return ValueError(f"Task {self.name!r}: field {field_name!r} {problem}")

    def validate(self, require_labels: bool = True) -> None:
        """Raise ``ValueError`` naming the task and the field for any invalid setting."""
        check_task_name(self.name)
        if self.type not in TASK_TYPES:
            raise self._error("type", f"is {self.type!r}; expected one of {', '.join(TASK_TYPES)}")
        if not self.info.has_labels and self.labels is not None:
            raise self._error("labels", f"is {self.labels!r}; {self.type} tasks have no labels")
        if self.info.has_labels and (self.labels is not None or require_labels):
            self._check_labels()
        if not _is_number(self.weight) or not math.isfinite(self.weight) or self.weight <= 0:
            raise self._error("weight", f"must be a finite number > 0, got {self.weight!r}")
        if self.dropout is not None and (
            not _is_number(self.dropout) or not math.isfinite(self.dropout) or not 0.0 <= self.dropout < 1.0
        ):
            raise self._error("dropout", f"must be a number in [0, 1), got {self.dropout!r}")
        for name in STRING_FIELDS:
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                what = "one string" if isinstance(value, (list, tuple)) else "a non-empty string"
                raise self._error(name, f"must be {what}, got {type(value).__name__} {value!r}")
        columns = dict(self.info.columns)
        for name in COLUMN_FIELDS:
            if getattr(self, name) is not None and name not in columns:
                raise self._error(name, f"is {getattr(self, name)!r}; {self.type} tasks read the columns named by "
                                  f"{', '.join(columns)}")
        self._check_qa_fields()
        if self.label_delimiter is not None and (not isinstance(self.label_delimiter, str) or not self.label_delimiter):
            raise self._error("label_delimiter", f"must be a non-empty string, got {self.label_delimiter!r}")
        for name, applies_to in _type_fields().items():
            if getattr(self, name) is not None and self.type not in applies_to:
                kinds = " and ".join([", ".join(applies_to[:-1]), applies_to[-1]] if len(applies_to) > 1 else applies_to)
                raise self._error(name, f"is {getattr(self, name)!r}; it applies to {kinds} tasks only")
        if self.pooling is not None and self.pooling not in POOLING_MODES:
            raise self._error("pooling", f"is {self.pooling!r}; expected one of {', '.join(POOLING_MODES)}")
        if self.classifier is not None and self.classifier not in CLASSIFIER_HEADS:
            raise self._error("classifier", f"is {self.classifier!r}; expected one of {', '.join(CLASSIFIER_HEADS)}")
        if self.classifier == "native" and self.pooling == "mean":
            raise self._error("pooling", "is 'mean', but the native classifier reads the first token, as the "
                              "architecture's own sequence classifier does; use pooling: cls (the default) or "
                              "classifier: linear")
        if self.tag_scheme not in (None, *TAG_SCHEMES):
            raise self._error(
                "tag_scheme", f"is {self.tag_scheme!r}; expected one of {', '.join(TAG_SCHEMES)} (IOB1 data is "
                "converted to IOB2 when it is loaded)"
            )
        if self.threshold is not None and (
            not _is_number(self.threshold) or not math.isfinite(self.threshold) or not 0.0 < self.threshold < 1.0
        ):
            raise self._error("threshold", f"must be a number in (0, 1), got {self.threshold!r}")
        for other in ("text_column_name", "label_column_name"):
            if self.text_pair_column_name is not None and self.text_pair_column_name == getattr(self, other):
                raise self._error("text_pair_column_name", f"is {self.text_pair_column_name!r}, the same column as "
                                  f"{other}")
        named = [name for name in columns if getattr(self, name) is not None]
        for position, name in enumerate(named):
            for other in named[position + 1:]:
                if getattr(self, name) == getattr(self, other):
                    raise self._error(name, f"is {getattr(self, name)!r}, the same column as {other}")

    def _check_qa_fields(self) -> None:
        """Extractive QA's settings (``None`` where the type does not use them): whole numbers where run_qa.py takes
        them, a boolean for ``version_2_with_negative``."""
        for name, lowest in (("doc_stride", 0), ("max_answer_length", 1), ("n_best_size", 1)):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < lowest):
                raise self._error(name, f"must be a whole number >= {lowest}, got {value!r}")
        if self.version_2_with_negative is not None and not isinstance(self.version_2_with_negative, bool):
            raise self._error("version_2_with_negative", f"must be true or false, got {self.version_2_with_negative!r}")
        value = self.null_score_diff_threshold
        if value is not None and (not _is_number(value) or not math.isfinite(value)):
            raise self._error("null_score_diff_threshold", f"must be a finite number, got {value!r}")

    def _check_labels(self) -> None:
        """``labels``: a non-empty list of distinct, non-blank strings. A bare string would be read as its
        characters and a mapping as its keys; YAML turns unquoted ``yes``/``no``/``on``/``off`` into booleans and
        ``1`` into a number, which would then silently become other label names."""
        if not isinstance(self.labels, (list, tuple)):
            raise self._error(
                "labels", f"must be a list of label names, got {type(self.labels).__name__} {self.labels!r}"
            )
        if not self.labels:
            raise self._error("labels", "is empty; a task needs at least one label")
        seen: set[str] = set()
        for position, label in enumerate(self.labels):
            if not isinstance(label, str):
                raise self._error(
                    "labels", f"item {position + 1} is {type(label).__name__} {label!r}, not a string (in YAML, quote "
                    "labels such as 'yes', 'no', 'on', 'off', 'null' or numbers)"
                )
            if not label.strip():
                raise self._error("labels", f"item {position + 1} is blank")
            if label in seen:
                raise self._error("labels", f"has the duplicate label {label!r}")
            seen.add(label)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TaskSpec":
        """Build a spec from a task-file entry, naming unknown keys instead of ignoring them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(map(str, set(data) - known))
        if unknown:
            raise ValueError(
                f"Task {data.get('name')!r}: unknown field(s) {', '.join(unknown)}; known fields: {', '.join(sorted(known))}"
            )
        for required in ("name", "type"):
            if required not in data:
                raise ValueError(f"Task {data.get('name')!r}: missing required field {required!r}")
        return cls(**data)

    def to_config_dict(self) -> dict[str, Any]:
        """The model-relevant fields, as stored in ``config.json``: without those of other task types, and without
        optional ones that are not set (so configs stay readable by earlier versions where nothing new is used)."""
        applies = _type_fields()
        return {
            key: getattr(self, key)
            for key in MODEL_FIELDS
            if self.type in applies.get(key, (self.type,))
            and not (key in _OPTIONAL_MODEL_FIELDS and getattr(self, key) is None)
        }

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.labels or []))

    @property
    def label2id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels or [])}

    @property
    def num_labels(self) -> int:
        """The head's number of outputs: one per label, or what the type fixes (1 for regression, as in
        transformers' ``num_labels``; 2 for extractive QA's start and end logits)."""
        if self.info.outputs is not None:
            return self.info.outputs
        return len(self.labels or []) if self.info.has_labels else 1


def _type_fields() -> dict[str, tuple[str, ...]]:
    """field -> the task types it applies to (from ``TASK_TYPES``); set on another type, it is an error."""
    applies: dict[str, tuple[str, ...]] = {}
    for name, info in TASK_TYPES.items():
        for field_name in info.fields:
            applies[field_name] = (*applies.get(field_name, ()), name)
    return applies


# Model fields left out of config.json while unset.
_OPTIONAL_MODEL_FIELDS = ("main_metric", "text_pair_column_name", "doc_stride")


def _spec_from_config(task: dict[str, Any]) -> TaskSpec:
    """A task as stored in config.json. Configs saved before ``pooling`` was limited to classification carry it on
    NER tasks too (``cls``, or whatever the task file said), where it never did anything: it is dropped there.
    Configs saved before ``classifier`` existed have linear heads, whatever today's default is."""
    task = dict(task)
    info = TASK_TYPES.get(task.get("type"))
    if info is not None and "pooling" not in info.fields:
        task.pop("pooling", None)
    if info is not None and "classifier" in info.fields:
        task.setdefault("classifier", "linear")
    return TaskSpec.from_dict(task)


class MultiTaskConfig(PreTrainedConfig):
    r"""Configuration of a [`MultiTaskModel`].

    Holds the encoder's own configuration nested under ``encoder`` (as ``EncoderDecoderConfig`` does), so that any
    architecture ``AutoModel`` knows can serve as the shared encoder, and ``tasks``: the ordered list of task specs
    (name, type, labels, loss weight, head dropout, classification pooling). Per-task label maps are derived from it.
    ``max_seq_length``: the input length (sub-tokens, special tokens included) the model was trained with, if known;
    ``MultiTaskPipeline`` cuts its windows to it by default, so serving sees inputs of the length training saw.
    """

    model_type = "mtl_hf_multitask"
    # Declares `encoder` a nested config, so that transformers serialises it as one (a diff against its own class's
    # defaults) and passes `dtype` and the attention implementation on to it. The declared class is only the base
    # class: `__post_init__` builds the encoder's actual config class (BertConfig, RobertaConfig, ...) itself, with
    # the public `AutoConfig.for_model`, before transformers looks at the field.
    sub_configs_defaults = {"encoder": PreTrainedConfig}

    encoder: PreTrainedConfig | dict | None = None
    tasks: list[dict] | None = None
    max_seq_length: int | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        if not isinstance(self.encoder, PreTrainedConfig):
            encoder = dict(self.encoder or {})
            self.encoder = AutoConfig.for_model(encoder.pop("model_type", DEFAULT_ENCODER_TYPE), **encoder)
        super().__post_init__(**kwargs)
        specs = [t if isinstance(t, TaskSpec) else _spec_from_config(t) for t in (self.tasks or [])]
        for spec in specs:
            spec.validate(require_labels=True)
        check_distinct_names([spec.name for spec in specs])
        self.tasks = [spec.to_config_dict() for spec in specs]

    @property
    def task_specs(self) -> list[TaskSpec]:
        return [TaskSpec.from_dict(task) for task in self.tasks]

    @property
    def task_names(self) -> list[str]:
        return [task["name"] for task in self.tasks]

    def get_task(self, name: str) -> TaskSpec:
        """The spec of task ``name``; a ``ValueError`` lists the known tasks otherwise."""
        for task in self.tasks:
            if task["name"] == name:
                return TaskSpec.from_dict(task)
        raise ValueError(f"Unknown task {name!r}; this model knows: {', '.join(self.task_names) or '(no tasks)'}")

    def add_task(self, spec: TaskSpec) -> None:
        spec.validate(require_labels=True)
        check_distinct_names([*self.task_names, spec.name])
        self.tasks = [*self.tasks, spec.to_config_dict()]

    def get_text_config(self, *args: Any, **kwargs: Any) -> PreTrainedConfig:
        # Embedding resizing and similar utilities must act on the encoder's config (vocab_size lives there).
        return self.encoder
