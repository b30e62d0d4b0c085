"""The ONNX backend (`mtl_hf.onnx_backend`): one graph with every task's logits, equal to PyTorch's for every task
type and encoder family; `MultiTaskPipeline.from_pretrained(..., backend="onnx")` gives the PyTorch pipeline's
predictions, exports on first use and reuses the file; int8 quantization; and the errors (missing extra, read-only
folder, a file of another model, no CUDA provider)."""

from __future__ import annotations

import dataclasses
import errno
import importlib.util
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

import onnxruntime
import pytest
import torch
import transformers

from mtl_hf import MultiTaskConfig, MultiTaskModel, MultiTaskPipeline
from mtl_hf import onnx_backend
from mtl_hf.onnx_backend import ONNX_FILE, ONNX_INT8_FILE, OnnxMultiTaskModel, export_onnx, output_name
from tests.conftest import ENCODER_FAMILIES, tiny_encoder_config
from tests.trainer_fixtures import MOOD, NER, SAME, TOPIC, TOPIC_SET, WHERE

# Every task type, and a classification task on pairs: texts feed ner, topic, mood and topics, pairs feed same,
# questions feed where (extractive QA).
SPECS = (NER, WHERE, TOPIC, SAME, MOOD, TOPIC_SET)
ATOL = 1e-4
FAMILIES = ENCODER_FAMILIES  # bert, roberta, distilbert, electra, deberta-v2: one export each
TEXTS = ["john lives in paris", "mary visited the old market in london today", "",
         "the team won the cup and peter smith signed for the big league club in madrid " * 4]
PAIRS = [{"text": "john lives in rome", "text_pair": "the market is old"},
         {"text": "the match was won", "text_pair": "the team won the cup today"}]
QUESTIONS = [{"question": "where does john live ?", "context": "the team said john lives in rome today ."},
             {"question": "where does mary live ?", "context": "mary lives in london ."}]
# The family whose folder `from_pretrained(..., backend="onnx")` exports on first use (in the fixture; the others
# are exported with `export_onnx`).
FAMILY_EXPORTED_ON_FIRST_USE = "bert"


def tokenizer_for(family: str, bert_dir: Path, roberta_dir: Path) -> transformers.PreTrainedTokenizerBase:
    return transformers.AutoTokenizer.from_pretrained(roberta_dir if family == "roberta" else bert_dir)


def make_model(family: str, vocab_size: int, specs: tuple = SPECS) -> MultiTaskModel:
    """A tiny model whose heads are scaled up (random heads give logits of about +-0.1, which would leave every
    prediction a near tie): predictions vary from token to token and text to text, with clear margins."""
    torch.manual_seed(0)
    model = MultiTaskModel(MultiTaskConfig(encoder=tiny_encoder_config(family, vocab_size), tasks=list(specs)))
    with torch.no_grad():
        for head in model.heads.values():
            head.classifier.weight.mul_(30.0)
    return model.eval()


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path, roberta_tokenizer_dir: Path) -> dict:
    """A saved model folder per encoder family with its ONNX export: exported with `export_onnx`, except bert's, which
    `MultiTaskPipeline.from_pretrained(..., backend="onnx")` exported on first use (recorded under "first_use")."""
    root = tmp_path_factory.mktemp("onnx")
    out: dict = {}
    for family in FAMILIES:
        tokenizer = tokenizer_for(family, tokenizer_dir, roberta_tokenizer_dir)
        model = make_model(family, len(tokenizer))
        folder = root / family
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        if family != FAMILY_EXPORTED_ON_FIRST_USE:
            assert export_onnx(model.train(), folder) == folder / ONNX_FILE
            assert model.training  # the export ran in eval mode and put the mode back
        out[family] = {"folder": folder, "model": model.eval(), "tokenizer": tokenizer}
    folder = out[FAMILY_EXPORTED_ON_FIRST_USE]["folder"]
    before = sorted(path.name for path in folder.iterdir())
    exports: list[Path] = []
    with pytest.MonkeyPatch.context() as patch:
        real = onnx_backend._export
        patch.setattr(onnx_backend, "_export", lambda model, target: (exports.append(target), real(model, target)))
        pipe = MultiTaskPipeline.from_pretrained(str(folder), backend="onnx")
    out["first_use"] = {"before": before, "exports": exports, "pipe": pipe,
                        "mtime": (folder / ONNX_FILE).stat().st_mtime_ns}
    return out


def no_export(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(onnx_backend, "_export", fail)


def close(a, b, atol: float = ATOL) -> bool:
    """Equal structure, strings, labels and offsets; floats (scores) equal up to `atol`."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(close(a[k], b[k], atol) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(close(x, y, atol) for x, y in zip(a, b))
    if isinstance(a, float):
        return isinstance(b, float) and a == pytest.approx(b, abs=atol)
    return a == b


# ---- the graph ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_onnx_logits_equal_pytorch_for_every_task_type(folders: dict, family: str) -> None:
    entry = folders[family]
    model, tokenizer = entry["model"], entry["tokenizer"]
    runtime = OnnxMultiTaskModel.from_pretrained(entry["folder"])
    names = model.config.task_names
    assert [node.name for node in runtime.session.get_outputs()] == [output_name(task) for task in names]
    takes_types = family != "distilbert"
    assert runtime.input_names == ["input_ids", "attention_mask"] + (["token_type_ids"] if takes_types else [])
    # Not the export's sample (2 x 8): three padded pairs (token types 0 and 1 where the encoder has them), and one
    # unpadded text, a batch of one.
    batches = [tokenizer([text for text in TEXTS[:2]] + ["the cup"], [pair["text_pair"] for pair in PAIRS] + ["a"],
                         padding=True, return_tensors="pt"),
               tokenizer(TEXTS[3:], truncation=True, return_tensors="pt")]
    assert batches[0]["input_ids"].shape[0] == 3 and batches[0]["attention_mask"].min() == 0
    assert batches[0]["input_ids"].shape[1] not in (8, batches[1]["input_ids"].shape[1])
    for encoded in batches:
        inputs = {key: encoded[key] for key in ("input_ids", "attention_mask", "token_type_ids") if key in encoded}
        with torch.no_grad():
            expected = model.forward_tasks(**inputs)
        got = runtime.forward_tasks(**inputs)
        assert list(got) == names
        for task in names:
            assert got[task].dtype == torch.float32 and got[task].device.type == "cpu"
            torch.testing.assert_close(got[task], expected[task], rtol=0, atol=ATOL)
        padding = inputs["attention_mask"] == 0
        assert (got["where"][padding] == torch.finfo(torch.float32).min).all()  # QA padding at the float minimum
    shapes = {task: tuple(got[task].shape) for task in names}
    length = batches[1]["input_ids"].shape[1]
    assert shapes == {"ner": (1, length, len(NER.labels)), "where": (1, length, 2), "topic": (1, 3), "same": (1, 2),
                      "mood": (1, 1), "topics": (1, 3)}
    subset = runtime.forward_tasks(inputs["input_ids"], tasks=["mood", "ner"])  # no mask: nothing is padding
    assert list(subset) == ["mood", "ner"]
    torch.testing.assert_close(subset["ner"], got["ner"], rtol=0, atol=ATOL)
    with pytest.raises(ValueError, match="Unknown task 'nope'"):
        runtime.forward_tasks(inputs["input_ids"], tasks=["nope"])


# ---- the pipeline -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["bert", "distilbert", "roberta"])
def test_onnx_pipeline_gives_the_pytorch_pipelines_predictions(folders: dict, family: str) -> None:
    folder = folders[family]["folder"]
    reference = MultiTaskPipeline.from_pretrained(str(folder))
    pipe = MultiTaskPipeline.from_pretrained(str(folder), backend="onnx", batch_size=3)
    assert isinstance(pipe.model, OnnxMultiTaskModel) and pipe.device == torch.device("cpu")
    inputs = TEXTS + PAIRS + QUESTIONS
    expected, got = reference(inputs), pipe(inputs)
    assert close(got, expected), (got, expected)
    assert expected[3]["topic"]["windows"] > 1  # the long text went through several windows
    assert {entity["entity_group"] for result in expected[:4] for entity in result["ner"]} >= {"PER", "LOC"}
    assert all(result["where"]["answer"] for result in expected[-2:]) and set(expected[4]) == {"same"}
    assert close(pipe(TEXTS, tasks=["topics"], all_scores=True), reference(TEXTS, tasks=["topics"], all_scores=True))


def test_first_use_exports_into_the_folder_and_later_loads_reuse_it(folders: dict, monkeypatch: pytest.MonkeyPatch,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    first = folders["first_use"]
    folder = folders[FAMILY_EXPORTED_ON_FIRST_USE]["folder"]
    assert "onnx" not in first["before"]
    assert first["exports"] == [folder / ONNX_FILE]
    assert sorted(path.name for path in (folder / "onnx").iterdir()) == ["model.onnx"]  # no staging files left
    no_export(monkeypatch)
    again = MultiTaskPipeline.from_pretrained(str(folder), backend="onnx")
    assert (folder / ONNX_FILE).stat().st_mtime_ns == first["mtime"]
    assert again(TEXTS[:2]) == first["pipe"](TEXTS[:2])
    assert not [record for record in caplog.records if "newer than" in record.getMessage()]
    # The model saved again after the export (trained again into the same folder): the old export is not silently
    # taken for the new weights.
    weights = folder / "model.safetensors"
    os.utime(weights, ns=(first["mtime"] + 10**9, first["mtime"] + 10**9))
    with caplog.at_level(logging.WARNING, logger="mtl_hf.onnx_backend"):
        OnnxMultiTaskModel.from_pretrained(folder)
    assert any("newer than" in record.getMessage() and "export_onnx" in record.getMessage()
               for record in caplog.records)
    os.utime(weights, ns=(first["mtime"] - 10**9, first["mtime"] - 10**9))


def test_int8_is_made_on_first_use_from_the_float_export_and_mostly_agrees(folders: dict,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    folder = folders["roberta"]["folder"]
    no_export(monkeypatch)  # the float export is there: quantizing it needs no new export
    fp32 = MultiTaskPipeline.from_pretrained(str(folder), backend="onnx")
    int8 = MultiTaskPipeline.from_pretrained(str(folder), backend="onnx", quantize=True)
    file = folder / ONNX_INT8_FILE
    assert int8.model.onnx_file == file and file.is_file()
    # int8 weights: a quarter of the float ones (MiniLM: 23 of 90 MB); a tiny model's graph and scales weigh more
    assert file.stat().st_size < 0.75 * (folder / ONNX_FILE).stat().st_size
    mtime = file.stat().st_mtime_ns
    monkeypatch.setattr(onnx_backend, "quantize_onnx", lambda *args: pytest.fail("quantized again"))
    assert MultiTaskPipeline.from_pretrained(str(folder), backend="onnx", quantize=True).model.onnx_file == file
    assert file.stat().st_mtime_ns == mtime

    tokenizer = folders["roberta"]["tokenizer"]
    encoded = tokenizer(TEXTS + [q["context"] for q in QUESTIONS], padding=True, truncation=True, return_tensors="pt")
    inputs = {key: encoded[key] for key in ("input_ids", "attention_mask")}
    a, b = fp32.model.forward_tasks(**inputs), int8.model.forward_tasks(**inputs)
    kept = inputs["attention_mask"].bool()
    token_agreement = (a["ner"].argmax(-1) == b["ner"].argmax(-1))[kept].float().mean()
    assert token_agreement >= 0.9, token_agreement
    assert (a["topic"].argmax(-1) == b["topic"].argmax(-1)).float().mean() >= 0.8
    assert not torch.equal(a["ner"], b["ner"])  # it really is another graph
    spread = a["ner"][kept].std()
    assert (a["ner"] - b["ner"])[kept].abs().mean() < 0.2 * spread
    results = int8(TEXTS + PAIRS + QUESTIONS)
    assert len(results) == len(TEXTS + PAIRS + QUESTIONS) and set(results[0]) == {"ner", "topic", "mood", "topics"}


# ---- errors and options -------------------------------------------------------------------------------------------


def test_missing_extra_says_how_to_install(folders: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = folders["bert"]["folder"]
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r'pip install "mtl_hf\[onnx\]"'):
        MultiTaskPipeline.from_pretrained(str(folder), backend="onnx")
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(ImportError, match=r'onnxscript: pip install "mtl_hf\[onnx\]"'):
        export_onnx(folders["bert"]["model"], folder)


def test_the_module_imports_without_the_onnx_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    """`import mtl_hf` imports `mtl_hf.onnx_backend` (through the pipeline): it must not need the extra. A fresh copy
    of the module is executed with the three packages made unimportable."""
    for name in ("onnx", "onnxruntime", "onnxscript"):
        monkeypatch.setitem(sys.modules, name, None)
    spec = importlib.util.spec_from_file_location("mtl_hf._onnx_backend_probe", onnx_backend.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.output_name("ner") == "logits_ner"


def test_read_only_folder_is_refused_before_loading(folders: dict, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "model"
    shutil.copytree(folders["distilbert"]["folder"], folder, ignore=shutil.ignore_patterns("onnx"))
    folder.chmod(0o555)
    try:
        if os.geteuid() == 0:  # root writes into any folder: refuse as the kernel does for everyone else
            def refuse(*args, **kwargs):
                raise PermissionError(errno.EACCES, "Permission denied")

            monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
        monkeypatch.setattr(MultiTaskModel, "from_pretrained", lambda *a, **k: pytest.fail("loaded the model"))
        with pytest.raises(PermissionError, match=r"Cannot write the ONNX export to .*model/onnx .*export_onnx"):
            MultiTaskPipeline.from_pretrained(str(folder), backend="onnx")
        assert not (folder / "onnx").exists()
        # an export made elsewhere runs from the read-only folder's config and tokenizer
        pipe = MultiTaskPipeline.from_pretrained(
            str(folder), backend="onnx", model_kwargs={"onnx_file": folders["distilbert"]["folder"] / ONNX_FILE})
        assert pipe(TEXTS[0])["topic"]["label"] in TOPIC.labels
    finally:
        folder.chmod(0o755)


def test_an_export_of_other_tasks_is_refused(folders: dict, tmp_path: Path) -> None:
    entry = folders["roberta"]
    other = make_model("roberta", len(entry["tokenizer"]), specs=(TOPIC, NER))
    other.save_pretrained(tmp_path)
    (tmp_path / "onnx").mkdir()
    shutil.copy(entry["folder"] / ONNX_FILE, tmp_path / ONNX_FILE)
    with pytest.raises(ValueError, match=r"does not fit this model: it serves the tasks \['ner', 'where'"):
        OnnxMultiTaskModel.from_pretrained(tmp_path)
    relabelled = dataclasses.replace(TOPIC, labels=["business", "sport", "tech", "politics"])
    make_model("roberta", len(entry["tokenizer"]), specs=(NER, WHERE, relabelled, SAME, MOOD, TOPIC_SET)
               ).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="does not fit this model"):  # same names, another number of labels
        OnnxMultiTaskModel.from_pretrained(tmp_path)


def test_backend_options(folders: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = str(folders["distilbert"]["folder"])
    pipe = MultiTaskPipeline.from_pretrained(folder, backend="onnx", device="cpu",
                                             model_kwargs={"intra_op_num_threads": 1})
    options = pipe.model.session.get_session_options()
    assert options.intra_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"  # the backend's default
    given = onnxruntime.SessionOptions()
    given.inter_op_num_threads = 1
    runtime = OnnxMultiTaskModel.from_pretrained(folder, session_options=given)
    assert runtime.session_options is given and runtime.session.get_session_options().inter_op_num_threads == 1
    assert pipe.device == torch.device("cpu")
    with pytest.raises(ValueError, match='quantize=True needs backend="onnx"'):
        MultiTaskPipeline.from_pretrained(folder, quantize=True)
    with pytest.raises(ValueError, match="Unknown backend 'tensorrt'"):
        MultiTaskPipeline.from_pretrained(folder, backend="tensorrt")
    with pytest.raises(ValueError, match="either onnx_file= or quantize=True"):
        OnnxMultiTaskModel.from_pretrained(folder, quantize=True, onnx_file=ONNX_FILE)
    with pytest.raises(FileNotFoundError, match="No ONNX file"):
        OnnxMultiTaskModel.from_pretrained(folder, onnx_file="onnx/other.onnx")
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(RuntimeError, match="no CUDAExecutionProvider.*onnxruntime-gpu"):
        MultiTaskPipeline.from_pretrained(folder, backend="onnx", device=0)
    with pytest.raises(ValueError, match="CPU or a CUDA device"):
        pipe.model.to("meta")
    assert pipe.model.to("cpu") is pipe.model
