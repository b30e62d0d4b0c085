"""ONNX export of a whole multi-task model, and an ONNX Runtime backend for :class:`~mtl_hf.MultiTaskPipeline`.

Why: serving is where a multi-task model pays off (one encoder pass answers every task), and a deployment often wants
it without PyTorch in the loop: ONNX Runtime runs the graph on a CPU or a GPU, and int8 dynamic quantization makes it
four times smaller and faster on a CPU (whether the float graph beats eager PyTorch depends on the CPU: on the
benchmark's, PyTorch 2.13 is faster; see docs/benchmarks.md, "ONNX backend"). Exporting each task on its own
(``mtl_hf.export_task``) would give up the shared pass, so the export here is ONE graph whose outputs are every
task's logits from one encoder pass, what :meth:`MultiTaskModel.forward_tasks` computes.

The graph
---------
* inputs: ``input_ids`` and ``attention_mask`` (int64, ``(batch, sequence)``), and ``token_type_ids`` only where the
  encoder takes them (DistilBERT does not); batch and sequence are dynamic axes;
* outputs: one per task, named ``logits_<task>`` (:func:`output_name`), in ``config.task_names`` order: ``(batch,
  num_labels)`` for classification and multilabel, ``(batch, 1)`` for regression, ``(batch, sequence, num_labels)``
  for NER, ``(batch, sequence, 2)`` start and end logits for extractive QA (padding positions at the float minimum);
* metadata ``mtl_hf.tasks``: the task names as a JSON list, checked against the config when the file is loaded.

Files
-----
The export lives in the model's folder: ``<folder>/onnx/model.onnx`` (float32) and ``<folder>/onnx/model_int8.onnx``
(int8 weights, ``onnxruntime.quantization.quantize_dynamic`` with ``QInt8`` per-channel weights; activations are
quantized on the fly, so no calibration data is needed). :meth:`OnnxMultiTaskModel.from_pretrained` (and
``MultiTaskPipeline.from_pretrained(folder, backend="onnx")``) exports on first use and reuses the files afterwards,
as sentence-transformers' ``backend="onnx"`` does; :func:`export_onnx` (re)writes them explicitly. Files are written
to a staging folder next to their destination and moved into place, so an interrupted export leaves no partial file.
The config and tokenizer are read from the model folder, not from the ONNX file.

The exporter is ``torch.onnx.export(..., dynamo=True)`` (``torch.export`` + onnxscript). The TorchScript exporter
(``dynamo=False``, deprecated) traces transformers' attention-mask code with the sample's shapes baked in: its graphs
give wrong logits for any other batch size or length, so it is not used.

onnx, onnxscript and onnxruntime are optional (``pip install "mtl_hf[onnx]"``) and imported only when used.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from .configuration_multitask import MultiTaskConfig
from .modeling_multitask import MultiTaskModel

__all__ = ["ONNX_FILE", "ONNX_INT8_FILE", "OnnxMultiTaskModel", "export_onnx", "output_name", "quantize_onnx"]

logger = logging.getLogger(__name__)

ONNX_DIR = "onnx"
ONNX_FILE = f"{ONNX_DIR}/model.onnx"
ONNX_INT8_FILE = f"{ONNX_DIR}/model_int8.onnx"
TASKS_METADATA = "mtl_hf.tasks"
INSTALL_HINT = 'pip install "mtl_hf[onnx]"'
# The export's sample input: two rows (torch.export specialises axes of size 0 and 1), the second one padded.
_SAMPLE_SHAPE = (2, 8)


def output_name(task: str) -> str:
    """The ONNX output that holds ``task``'s logits."""
    return f"logits_{task}"


def _require(*names: str) -> list[ModuleType]:
    """Import the optional ONNX packages ``names``, or raise an ``ImportError`` that says how to install them."""
    try:
        return [importlib.import_module(name) for name in names]
    except ImportError as err:
        raise ImportError(f"mtl_hf's ONNX backend needs {', '.join(names)}: {INSTALL_HINT}") from err


def _as_device(device: str | int | torch.device | None) -> torch.device:
    """A device as the pipeline takes it (an int is a GPU index, a negative one the CPU; ``None`` the CPU)."""
    if device is None:
        return torch.device("cpu")
    if isinstance(device, int):
        return torch.device("cuda", device) if device >= 0 else torch.device("cpu")
    return torch.device(device)


def _check_writable(folder: Path) -> None:
    """Fail early, before any model is loaded, where ``folder`` (or, before it exists, its parent) cannot be written."""
    probe = folder if folder.is_dir() else folder.parent
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as err:
        raise PermissionError(
            f"Cannot write the ONNX export to {folder} ({err.strerror or err}). Export it into a folder you can write "
            f"with `mtl_hf.export_onnx(model, folder)` and pass `onnx_file=<folder>/{ONNX_FILE}`, or load the model "
            "from a writable copy of its folder"
        ) from err


def _move_into(staging: Path, folder: Path) -> None:
    """Move every file of ``staging`` into ``folder`` (an ONNX file last, after any external data it names)."""
    for path in sorted(staging.iterdir(), key=lambda path: path.suffix == ".onnx"):
        os.replace(path, folder / path.name)


class _AllTasks(nn.Module):
    """What is exported: every task's logits from one encoder pass, as a tuple in ``config.task_names`` order."""

    def __init__(self, model: MultiTaskModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        logits = self.model.forward_tasks(input_ids, attention_mask, token_type_ids=token_type_ids)
        return tuple(logits[task] for task in self.model.task_names)


def input_names(model: MultiTaskModel) -> list[str]:
    """The graph's inputs: ``token_type_ids`` only where the encoder takes them (as ``MultiTaskModel._encode``)."""
    takes_types = "token_type_ids" in inspect.signature(model.encoder.forward).parameters
    return ["input_ids", "attention_mask"] + (["token_type_ids"] if takes_types else [])


def _export(model: MultiTaskModel, target: Path) -> None:
    """Write ``model``'s all-task graph to ``target`` (the model runs in eval mode; its mode is put back)."""
    names = input_names(model)
    device = next(model.parameters()).device
    input_ids = torch.full(_SAMPLE_SHAPE, min(5, model.config.encoder.vocab_size - 1), device=device)
    attention_mask = torch.ones(_SAMPLE_SHAPE, dtype=torch.long, device=device)
    attention_mask[1, -3:] = 0
    sample = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": torch.zeros_like(input_ids)}
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    training = model.training
    model.eval()
    try:
        with warnings.catch_warnings():
            # The exporter notes that the inputs share their axes' names, which is what they are meant to do.
            warnings.filterwarnings("ignore", message=".*will not be used, since it shares the same shape")
            program = torch.onnx.export(
                _AllTasks(model).eval(), tuple(sample[name] for name in names), input_names=names,
                output_names=[output_name(task) for task in model.task_names],
                dynamic_shapes={name: {0: batch, 1: sequence} for name in names}, dynamo=True, verbose=False,
            )
    finally:
        model.train(training)
    program.model.metadata_props[TASKS_METADATA] = json.dumps(model.task_names)
    with tempfile.TemporaryDirectory(dir=target.parent) as staging:
        program.save(Path(staging) / target.name)  # weights over 2 GB go to an external data file beside it
        _move_into(Path(staging), target.parent)


def quantize_onnx(source: str | Path, target: str | Path) -> Path:
    """Write ``source``'s graph with int8 weights to ``target``: ONNX Runtime's dynamic quantization (``QInt8``
    weights, one scale per output channel; activations quantized at run time, no calibration data)."""
    _require("onnx", "onnxruntime")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source, target = Path(source), Path(target)
    with tempfile.TemporaryDirectory(dir=target.parent) as staging:
        quantize_dynamic(source, Path(staging) / target.name, weight_type=QuantType.QInt8, per_channel=True)
        _move_into(Path(staging), target.parent)
    return target


def export_onnx(model: MultiTaskModel, directory: str | Path, quantize: bool = False) -> Path:
    """Export ``model`` into the model folder ``directory``, (re)writing ``directory/onnx/model.onnx``, and with
    ``quantize=True`` also ``directory/onnx/model_int8.onnx``; returns the file written last (the int8 one when
    ``quantize``). ``directory`` is the folder the model was (or will be) saved in with ``save_pretrained``: the
    ONNX backend reads the config and the tokenizer from there. See the module docstring for the graph."""
    _require("onnx", "onnxscript", *(["onnxruntime"] if quantize else []))
    folder = Path(directory) / ONNX_DIR
    _check_writable(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = Path(directory) / ONNX_FILE
    _export(model, target)
    logger.info("Exported %s's tasks %s to %s", type(model).__name__, ", ".join(model.task_names), target)
    if quantize:
        target = quantize_onnx(target, Path(directory) / ONNX_INT8_FILE)
    return target


class OnnxMultiTaskModel:
    """A multi-task model's ONNX export run by ONNX Runtime, in place of the :class:`MultiTaskModel` it was exported
    from: what :class:`~mtl_hf.MultiTaskPipeline` uses of a model (``config``, ``device``, ``eval()``, ``to()`` and
    ``forward_tasks``), so the pipeline runs either.

    Args:
        onnx_file: an export of :func:`export_onnx` (its outputs are checked against ``config``'s tasks).
        config: the model's :class:`MultiTaskConfig`.
        device: ``"cpu"`` (default: ONNX Runtime's CPU execution provider) or a CUDA device (its CUDA execution
            provider, which needs ``onnxruntime-gpu``).
        intra_op_num_threads: threads per operator (ONNX Runtime's default, one per physical core, where ``None``).
        session_options: an ``onnxruntime.SessionOptions`` to use as given (``intra_op_num_threads`` is set on it
            where given). By default: ONNX Runtime's defaults, except that idle worker threads do not spin-wait for
            the next run (``session.intra_op.allow_spinning`` 0): the pipeline tokenizes and reads results between
            runs, and spinning workers take the CPU from that work (on 2 busy cores the pipeline ran 1.3x to 1.4x
            faster without spinning).
    """

    def __init__(
        self,
        onnx_file: str | Path,
        config: MultiTaskConfig,
        device: str | int | torch.device | None = None,
        intra_op_num_threads: int | None = None,
        session_options: Any = None,
    ) -> None:
        (self._ort,) = _require("onnxruntime")
        self.onnx_file = Path(onnx_file)
        self.config = config
        if session_options is None:
            session_options = self._ort.SessionOptions()
            session_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session_options = session_options
        if intra_op_num_threads is not None:
            self.session_options.intra_op_num_threads = intra_op_num_threads
        self.device = _as_device(device)
        self.session = self._session(self.device)
        self._check_outputs()
        self.input_names = [node.name for node in self.session.get_inputs()]

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        quantize: bool = False,
        onnx_file: str | Path | None = None,
        device: str | int | torch.device | None = None,
        intra_op_num_threads: int | None = None,
        session_options: Any = None,
    ) -> "OnnxMultiTaskModel":
        """The ONNX export of the model saved in the folder ``path``: ``path/onnx/model.onnx``, or
        ``path/onnx/model_int8.onnx`` with ``quantize=True``, exported (and quantized) on first use and reused
        afterwards; ``onnx_file``: another export to run instead (relative to ``path``, or absolute), which must
        exist. Export on first use needs ``path`` to be writable (a ``PermissionError`` says what to do otherwise).
        The other arguments go to the constructor."""
        _require("onnxruntime")
        folder = Path(path)
        if not folder.is_dir():
            raise ValueError(f"backend='onnx' needs a local model folder; {path!r} is not one (download it first, "
                             "e.g. with huggingface_hub.snapshot_download)")
        if onnx_file is not None:
            if quantize:
                raise ValueError("Pass either onnx_file= or quantize=True, not both")
            file = folder / onnx_file
            if not file.is_file():
                raise FileNotFoundError(f"No ONNX file at {file}")
        else:
            file = folder / (ONNX_INT8_FILE if quantize else ONNX_FILE)
            if not file.is_file():
                _create(folder, quantize)
            _warn_if_stale(folder, file)
        return cls(file, MultiTaskConfig.from_pretrained(folder), device=device,
                   intra_op_num_threads=intra_op_num_threads, session_options=session_options)

    # ---- what the pipeline uses of a model ------------------------------------------------------------------------

    @property
    def task_names(self) -> list[str]:
        return self.config.task_names

    def eval(self) -> "OnnxMultiTaskModel":
        """A no-op (an ONNX graph is always in inference mode), for the pipeline, which puts its model in eval mode."""
        return self

    def to(self, device: str | int | torch.device) -> "OnnxMultiTaskModel":
        """Run on ``device`` from now on (a new session with that device's execution provider); returns ``self``."""
        device = _as_device(device)
        if device != self.device:
            self.session = self._session(device)
            self.device = device
        return self

    def forward_tasks(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        tasks: list[str] | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Logits of several tasks (default: all) from one run of the graph, as :meth:`MultiTaskModel.forward_tasks`
        gives them: ``{task: logits}``, float32 CPU tensors. A missing ``attention_mask`` means no padding, missing
        ``token_type_ids`` are zeros; token types are dropped where the graph does not take them."""
        names = [self.config.get_task(name).name for name in (tasks or self.task_names)]
        inputs = {"input_ids": input_ids,
                  "attention_mask": torch.ones_like(input_ids) if attention_mask is None else attention_mask,
                  "token_type_ids": torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids}
        feed = {name: inputs[name].detach().to("cpu", torch.int64).numpy() for name in self.input_names}
        outputs = self.session.run([output_name(name) for name in names], feed)
        return {name: torch.from_numpy(output) for name, output in zip(names, outputs)}

    # ---- internals -------------------------------------------------------------------------------------------------

    def _session(self, device: torch.device) -> Any:
        kind = device.type  # a device kind, not a task type
        if kind == "cpu":
            providers: list[Any] = ["CPUExecutionProvider"]
        elif kind == "cuda":
            if "CUDAExecutionProvider" not in self._ort.get_available_providers():
                raise RuntimeError(
                    f"device={str(device)!r}: this onnxruntime has no CUDAExecutionProvider (available: "
                    f"{', '.join(self._ort.get_available_providers())}); install onnxruntime-gpu instead of "
                    "onnxruntime, or run on the CPU"
                )
            providers = [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
        else:
            raise ValueError(f"The ONNX backend runs on the CPU or a CUDA device, not {str(device)!r}")
        return self._ort.InferenceSession(str(self.onnx_file), self.session_options, providers=providers)

    def _check_outputs(self) -> None:
        """The file must serve exactly the config's tasks, with their numbers of labels."""
        metadata = self.session.get_modelmeta().custom_metadata_map
        exported = json.loads(metadata[TASKS_METADATA]) if TASKS_METADATA in metadata else None
        outputs = {node.name: node.shape for node in self.session.get_outputs()}
        expected = {output_name(spec.name): spec.num_labels for spec in self.config.task_specs}
        if exported != self.task_names or set(outputs) != set(expected) or any(
                outputs[name][-1] != size for name, size in expected.items()):
            raise ValueError(
                f"{self.onnx_file} does not fit this model: it serves the tasks {exported} with outputs "
                f"{ {name: shape[-1] for name, shape in outputs.items()} }, the config has {self.task_names} with "
                f"{expected}. It was exported from another model (or before the model changed): delete it to have it "
                "exported again on first use, or export again with mtl_hf.export_onnx"
            )


def _warn_if_stale(folder: Path, file: Path) -> None:
    """The ONNX file's tasks are checked when it is loaded, but not its weights: warn where the folder's weights are
    newer than it (the model was saved again, e.g. trained again into the same folder, after the export)."""
    weights = [path for pattern in ("*.safetensors", "*.bin") for path in folder.glob(pattern)]
    if any(path.stat().st_mtime > file.stat().st_mtime for path in weights):
        logger.warning(
            "The weights in %s are newer than %s: if the model was saved again after the export, the ONNX file holds "
            "the old weights; delete the folder's onnx/ subfolder (it is exported again on first use) or call "
            "mtl_hf.export_onnx(model, folder)", folder, file,
        )


def _create(folder: Path, quantize: bool) -> None:
    """First use: export the model saved in ``folder`` (unless only the int8 file is missing) and quantize it."""
    onnx_folder = folder / ONNX_DIR
    _check_writable(onnx_folder)
    fp32 = folder / ONNX_FILE
    if quantize and fp32.is_file():
        logger.info("Quantizing %s to int8 (first use)", fp32)
        quantize_onnx(fp32, folder / ONNX_INT8_FILE)
        return
    logger.warning("No ONNX export in %s: exporting the model (first use; later loads reuse it)", onnx_folder)
    model = MultiTaskModel.from_pretrained(folder, dtype=torch.float32)
    export_onnx(model, folder, quantize=quantize)
