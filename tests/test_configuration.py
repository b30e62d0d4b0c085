"""TaskSpec and MultiTaskConfig as stored in config.json: type-specific fields, old configs, nested encoder config,
and the remote-code files that go next to the weights (public transformers API only)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch
import transformers

import mtl_hf
from mtl_hf import MultiTaskConfig, MultiTaskModel, TaskSpec
from mtl_hf.configuration_multitask import MAX_TASK_NAME_LENGTH, reserved_task_names
from mtl_hf.metrics import main_metric
from tests.conftest import tiny_encoder_config

TASKS = [
    TaskSpec(name="topic", type="classification", labels=["business", "sport"], pooling="mean"),
    TaskSpec(name="ner", type="ner", labels=["O", "B-PER", "E-PER", "S-PER"], tag_scheme="IOBES"),
]
# The remote-code files save_pretrained copies next to the weights.
REMOTE_CODE = ("configuration_multitask.py", "modeling_multitask.py")


def test_fields_of_one_task_type_are_stored_for_that_type_only(tmp_path: Path) -> None:
    MultiTaskConfig(encoder=tiny_encoder_config("bert", 100), tasks=TASKS).save_pretrained(tmp_path)
    topic, ner = json.loads((tmp_path / "config.json").read_text())["tasks"]
    assert topic == {"name": "topic", "type": "classification", "labels": ["business", "sport"], "weight": 1.0,
                     "dropout": None, "pooling": "mean", "classifier": "linear"}
    assert ner == {"name": "ner", "type": "ner", "labels": ["O", "B-PER", "E-PER", "S-PER"], "weight": 1.0,
                   "dropout": None, "tag_scheme": "IOBES"}
    loaded = MultiTaskConfig.from_pretrained(tmp_path)
    assert loaded.get_task("ner").tag_scheme == "IOBES" and loaded.get_task("ner").pooling is None
    assert loaded.get_task("topic").pooling == "mean" and loaded.get_task("topic").tag_scheme is None


def test_configs_saved_before_tag_schemes_still_load(tmp_path: Path) -> None:
    """Older config.json files: `pooling: cls` on every task, NER included, and no `tag_scheme` (meaning IOB2)."""
    old = {
        "model_type": "mtl_hf_multitask",
        "encoder": tiny_encoder_config("bert", 100).to_diff_dict(),
        "tasks": [
            {"name": "topic", "type": "classification", "labels": ["a", "b"], "weight": 1.0, "dropout": None,
             "pooling": "cls"},
            {"name": "ner", "type": "ner", "labels": ["O", "B-PER", "I-PER"], "weight": 1.0, "dropout": None,
             "pooling": "cls"},
            # pooling was stored (and ignored) on NER tasks whatever the task file said
            {"name": "pos", "type": "ner", "labels": ["NN", "VB"], "weight": 1.0, "dropout": None, "pooling": "mean"},
        ],
    }
    (tmp_path / "config.json").write_text(json.dumps(old))
    loaded = MultiTaskConfig.from_pretrained(tmp_path)
    ner = loaded.get_task("ner")
    assert (ner.tag_scheme, ner.pooling) == (None, None)
    assert main_metric(ner) == "f1"
    assert loaded.get_task("pos").pooling is None
    assert loaded.get_task("topic").pooling == "cls"
    assert loaded.tasks[0]["pooling"] == "cls" and "pooling" not in loaded.tasks[1] and "pooling" not in loaded.tasks[2]
    # saved before `classifier` existed: a linear head, whatever today's default
    assert loaded.get_task("topic").classifier == "linear" and "classifier" not in loaded.tasks[1]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"type": "ner", "pooling": "mean"}, "field 'pooling' is 'mean'; it applies to classification, regression and multilabel tasks only"),
        ({"type": "classification", "tag_scheme": "IOB2"}, "field 'tag_scheme' is 'IOB2'; it applies to ner tasks"),
        ({"type": "ner", "tag_scheme": "IOB1"}, "field 'tag_scheme' is 'IOB1'; expected one of IOB2, IOBES, BILOU, IO"),
        ({"type": "ner", "tag_scheme": "BIO"}, "field 'tag_scheme' is 'BIO'"),
        ({"type": "ner", "classifier": "native"},
         "field 'classifier' is 'native'; it applies to classification, regression and multilabel tasks only"),
        ({"type": "classification", "classifier": "pooler"},
         "field 'classifier' is 'pooler'; expected one of linear, native"),
        ({"type": "multilabel", "classifier": "native", "pooling": "mean"},
         "field 'pooling' is 'mean', but the native classifier reads the first token"),
    ],
)
def test_type_specific_fields_are_checked(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=f"Task 'x': {message}"):
        TaskSpec(name="x", labels=["O"], **fields)


def test_encoder_config_nests_as_its_own_class_and_gets_loading_options(tmp_path: Path) -> None:
    """The encoder is built with the public AutoConfig from a dict (as read from config.json), and transformers
    still treats it as a sub-config: a dtype given to from_pretrained reaches it."""
    encoder = tiny_encoder_config("roberta", 100).to_dict()
    config = MultiTaskConfig(encoder=encoder, tasks=TASKS)
    assert isinstance(config.encoder, transformers.RobertaConfig) and config.encoder.hidden_size == 32
    assert isinstance(MultiTaskConfig().encoder, transformers.BertConfig)  # the default, as in EncoderDecoderConfig
    MultiTaskModel(config).save_pretrained(tmp_path)
    loaded = MultiTaskModel.from_pretrained(tmp_path, dtype=torch.float16)
    assert loaded.config.encoder.dtype == torch.float16
    assert next(loaded.encoder.parameters()).dtype == torch.float16


def test_saved_config_carries_no_meaningless_label_maps(tmp_path: Path) -> None:
    """Labels live in each task; a top-level (or encoder) `id2label` would be transformers' LABEL_0/LABEL_1."""
    model = MultiTaskModel(MultiTaskConfig(encoder=tiny_encoder_config("bert", 100), tasks=TASKS))
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    for section in (saved, saved["encoder"]):
        assert not {"id2label", "label2id", "num_labels"} & set(section)


def transformers_imports(path: Path) -> list[tuple[int, str, str]]:
    """``(line, module, name)`` of every import from transformers in a Python file (``name`` empty for
    ``import transformers...``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module.split(".")[0] == "transformers":
            found += [(node.lineno, node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name, "") for a in node.names if a.name.split(".")[0] == "transformers"]
    return found


@pytest.mark.parametrize("filename", REMOTE_CODE)
def test_remote_code_imports_only_public_transformers_api(filename: str) -> None:
    """The files written next to the weights must keep loading as transformers changes its internals.

    Allowed: ``import transformers``, ``from transformers import X`` for a top-level name, and
    ``from transformers.utils import X`` for a public name there: ``transformers.utils`` is the documented home of
    ``ModelOutput`` (which transformers does not export at top level). Any other submodule
    (``transformers.configuration_utils``, ``transformers.models...``) is internal: names move between them.
    """
    path = Path(mtl_hf.__file__).parent / filename
    imports = transformers_imports(path)
    assert imports, f"{filename} imports nothing from transformers: the test would check nothing"
    for line, module, name in imports:
        where = f"{filename}, line {line}: {module} {name}"
        if module == "transformers":
            assert not name or (not name.startswith("_") and hasattr(transformers, name)), where
        elif module == "transformers.utils":
            assert name and not name.startswith("_") and hasattr(transformers.utils, name), where
        else:
            pytest.fail(f"{where}: imports from the internal module {module}")


# --------------------------------------------------------------------------------------------------------------------
# Task names and field types
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["topic", "news-topic", "ner_2", "A", "sst2", "x" * MAX_TASK_NAME_LENGTH])
def test_safe_task_names_are_accepted_and_work_as_head_keys(name: str) -> None:
    spec = TaskSpec(name=name, type="classification", labels=["a", "b"])
    heads = torch.nn.ModuleDict({spec.name: torch.nn.Linear(2, 2)})
    assert list(heads) == [name]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("a.b", "Task name 'a.b' (field 'name') is not allowed: use letters, digits, '_' and '-', starting with a "
                "letter"),
        ("news/topic", "Task name 'news/topic' (field 'name') is not allowed"),
        ("my task", "Task name 'my task' (field 'name') is not allowed"),
        ("-x", "Task name '-x' (field 'name') is not allowed"),
        ("2nd", "Task name '2nd' (field 'name') is not allowed"),
        ("_private", "Task name '_private' (field 'name') is not allowed"),
        ("x" * (MAX_TASK_NAME_LENGTH + 1), f"is {MAX_TASK_NAME_LENGTH + 1} characters long; at most"),
        ("", "Task name must be a non-empty string, got ''"),
        (7, "Task name must be a non-empty string, got 7"),
        (None, "Task name must be a non-empty string, got None"),
        ("keys", "Task name 'keys' (field 'name') is reserved: it is an attribute of torch.nn.ModuleDict"),
        ("type", "Task name 'type' (field 'name') is reserved"),
    ],
)
def test_unsafe_task_names_are_refused(name: object, message: str) -> None:
    with pytest.raises(ValueError) as info:
        TaskSpec(name=name, type="ner")
    assert message in str(info.value)


def test_reserved_task_names_are_those_the_heads_moduledict_refuses() -> None:
    """Every name that passes the pattern but is an attribute of ModuleDict makes ModuleDict raise (the crash the
    rule prevents); the rule is read from torch, so it is exactly that set."""
    reserved = reserved_task_names()
    assert {"keys", "items", "values", "update", "pop", "train", "eval", "forward", "training", "to"} <= reserved
    for name in reserved:
        with pytest.raises(KeyError):
            torch.nn.ModuleDict({name: torch.nn.Linear(1, 1)})
        with pytest.raises(ValueError, match="is reserved"):
            TaskSpec(name=name, type="ner")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"labels": "sport"}, "field 'labels' must be a list of label names, got str 'sport'"),
        ({"labels": {"a": 0}}, "field 'labels' must be a list of label names, got dict"),
        ({"labels": ["a", True]}, "field 'labels' item 2 is bool True, not a string"),
        ({"labels": [1, 2]}, "field 'labels' item 1 is int 1, not a string"),
        ({"labels": ["a", " "]}, "field 'labels' item 2 is blank"),
        ({"labels": ["a", "a"]}, "field 'labels' has the duplicate label 'a'"),
        ({"labels": []}, "field 'labels' is empty"),
        ({"weight": float("nan")}, "field 'weight' must be a finite number > 0, got nan"),
        ({"weight": float("inf")}, "field 'weight' must be a finite number > 0, got inf"),
        ({"weight": 0}, "field 'weight' must be a finite number > 0, got 0"),
        ({"weight": True}, "field 'weight' must be a finite number > 0, got True"),
        ({"weight": "2"}, "field 'weight' must be a finite number > 0, got '2'"),
        ({"dropout": "0.1"}, "field 'dropout' must be a number in [0, 1), got '0.1'"),
        ({"dropout": float("nan")}, "field 'dropout' must be a number in [0, 1), got nan"),
        ({"dropout": 1}, "field 'dropout' must be a number in [0, 1), got 1"),
        ({"train_file": 123}, "field 'train_file' must be a non-empty string, got int 123"),
        ({"validation_file": ["a", "b"]}, "field 'validation_file' must be one string, got list ['a', 'b']"),
        ({"dataset_name": ""}, "field 'dataset_name' must be a non-empty string, got str ''"),
        ({"label_column_name": 3}, "field 'label_column_name' must be a non-empty string, got int 3"),
    ],
)
def test_field_types_are_checked(fields: dict, message: str) -> None:
    with pytest.raises(ValueError) as info:
        TaskSpec(name="x", type="classification", **fields)
    assert str(info.value).startswith(f"Task 'x': {message}")


def test_good_field_values_keep_their_meaning() -> None:
    spec = TaskSpec(name="x", type="classification", labels=("a", "b"), weight=2, dropout=0)
    assert spec.labels == ["a", "b"] and spec.weight == 2.0 and isinstance(spec.weight, float) and spec.dropout == 0


def test_task_names_must_differ_in_more_than_case() -> None:
    tasks = [TaskSpec(name="ner", type="ner", labels=["O"]), TaskSpec(name="NER", type="ner", labels=["O"])]
    with pytest.raises(ValueError, match="Task 'NER': field 'name' differs from task 'ner' in letter case only"):
        MultiTaskConfig(encoder=tiny_encoder_config("bert", 100), tasks=tasks)
    config = MultiTaskConfig(encoder=tiny_encoder_config("bert", 100), tasks=tasks[:1])
    with pytest.raises(ValueError, match="Task 'NER': field 'name' differs from task 'ner'"):
        config.add_task(tasks[1])
    with pytest.raises(ValueError, match="Task 'ner': field 'name' is used by more than one task"):
        config.add_task(tasks[0])
