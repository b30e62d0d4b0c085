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
                     "dropout": None, "pooling": "mean"}
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


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"type": "ner", "pooling": "mean"}, "field 'pooling' is 'mean'; it applies to classification tasks only"),
        ({"type": "classification", "tag_scheme": "IOB2"}, "field 'tag_scheme' is 'IOB2'; it applies to ner tasks"),
        ({"type": "ner", "tag_scheme": "IOB1"}, "field 'tag_scheme' is 'IOB1'; expected one of IOB2, IOBES, BILOU, IO"),
        ({"type": "ner", "tag_scheme": "BIO"}, "field 'tag_scheme' is 'BIO'"),
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
