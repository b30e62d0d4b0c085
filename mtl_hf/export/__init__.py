"""Export one task of a multi-task model as a plain transformers checkpoint.

A deployment that serves one task should not need mtl_hf, nor ``trust_remote_code``: ``export_task`` writes the
shared encoder and that task's head as the architecture's own task model (``BertForTokenClassification``,
``RobertaForQuestionAnswering``, ``DistilBertForSequenceClassification``, ...) with the task's label maps, its
``problem_type`` and the tokenizer, so that
``AutoModelForTokenClassification.from_pretrained(directory)`` and transformers' ``pipeline(...)`` load it as any hub
checkpoint. The export is exact: the exported model's logits are the multi-task model's for that task, which
``export_task`` checks on a probe input before it writes anything.

Command line (``__main__.py``; a package rather than a module, so that ``python -m`` does not run this code a second
time after ``import mtl_hf`` has imported it)::

    python -m mtl_hf.export MODEL_DIR TASK OUTPUT_DIR [--tokenizer PATH] [--overwrite]
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from ..configuration_multitask import MultiTaskConfig, TaskSpec
from ..modeling_multitask import MultiTaskModel, native_classifier
from ..task_types import get_task_type

# Encoder weights an exported model may leave out: BERT's and RoBERTa's pooler. Their token and QA models build the
# base model without it (`add_pooling_layer=False`), and neither mtl_hf's heads nor those models read it (BERT's
# sequence classifier does: its pooler is then the native head's dense layer, see `NativeClassifier`).
DROPPABLE_ENCODER_PREFIXES = ("pooler.",)
# How close the exported model's logits must be to the multi-task model's on the probe input. Both run the same
# modules on the same weights, so they agree to rounding; half precision rounds more coarsely.
ATOL = {torch.float32: 1e-5, torch.float64: 1e-5}
HALF_PRECISION_ATOL = 1e-2
PROBE_LENGTH = 8  # tokens of the probe input


class ExportError(ValueError):
    """A task that cannot be exported exactly (or bad arguments to the export): raised before anything is written."""


@dataclass(frozen=True)
class HeadExport:
    """How a task's head becomes a plain transformers model: the auto class that builds the architecture's task
    model, where each of the head's linear layers lives in it (``{head module: exported module}``), and the
    ``problem_type`` its config gets (the loss transformers' sequence classifiers compute; ``None`` for the token and
    question-answering models, which have one loss)."""

    auto_class: Any
    modules: dict[str, str]
    problem_type: str | None = None


def head_export(config: MultiTaskConfig, spec: TaskSpec) -> HeadExport:
    """How ``spec``'s head exports exactly, or an ``ExportError`` saying why it cannot. A token head (NER) is the
    architecture's token classifier (``classifier``), a span head (extractive QA) its question-answering model
    (``qa_outputs``); a sequence head (classification, regression, multilabel) exports only if it is the native
    classifier (``classifier: native``): mtl_hf's linear head (pooled vector -> dropout -> linear) is not BERT's
    (pooler -> dropout -> linear) nor RoBERTa's (dense -> tanh -> linear) sequence classifier."""
    if spec.info.head == "token":
        return HeadExport(AutoModelForTokenClassification, {"classifier": "classifier"})
    if spec.info.head == "span":
        return HeadExport(AutoModelForQuestionAnswering, {"classifier": "qa_outputs"})
    if spec.info.head == "sequence" and spec.classifier == "native":
        try:
            recipe = native_classifier(config.encoder, spec.name)
        except ValueError as error:
            raise ExportError(str(error)) from None
        return HeadExport(
            AutoModelForSequenceClassification,
            {"dense": recipe.dense_weights, "classifier": recipe.output_weights},
            get_task_type(spec).problem_type,
        )
    if spec.info.head == "sequence":
        raise ExportError(
            f"Task {spec.name!r} ({spec.type}) cannot be exported exactly: it has mtl_hf's linear head (pooled vector "
            "-> dropout -> linear), which is not the architecture's own sequence classifier (BERT's adds its pooler, "
            "RoBERTa's a dense layer and tanh). Train it with `classifier: native` in the task file: that head is "
            "the architecture's own and exports as its AutoModelForSequenceClassification"
        )
    raise ExportError(f"Task {spec.name!r} ({spec.type}) cannot be exported: mtl_hf knows no plain transformers "
                      f"model for its {spec.info.head} head")


def exportable_spec(config: MultiTaskConfig, task: str) -> TaskSpec:
    """The spec of ``task`` if its head shape can be exported exactly; an ``ExportError`` naming the task and what
    stands in the way otherwise (an unknown task lists the known ones). Needs the config only, so that the command
    line refuses bad input before it loads any weights."""
    try:
        spec = config.get_task(task)
    except ValueError as error:
        raise ExportError(str(error)) from None
    head_export(config, spec)
    return spec


def export_task(
    model: MultiTaskModel,
    task: str,
    directory: str | os.PathLike[str],
    tokenizer: PreTrainedTokenizerBase | str | os.PathLike[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``task`` of ``model`` to ``directory`` as a plain transformers model, loadable without mtl_hf and
    without ``trust_remote_code``; returns the directory.

    NER (any task with a token head) becomes ``AutoModelForTokenClassification`` of the encoder's architecture, with
    the task's ``id2label``/``label2id``; extractive QA (a span head) becomes ``AutoModelForQuestionAnswering``;
    classification (single texts or pairs), regression and multilabel tasks trained with ``classifier: native``
    become ``AutoModelForSequenceClassification`` with ``problem_type`` ``single_label_classification``,
    ``regression`` or ``multi_label_classification``. The exported logits equal the multi-task model's for the task
    (checked here on a probe input; for extractive QA on the input's own tokens: mtl_hf's span head puts padding
    positions at the lowest value, transformers' QA models do not). A sequence task with the linear head is refused
    (``ExportError``, a ``ValueError``): it has no exact counterpart (see :func:`head_export`).

    ``tokenizer``: a tokenizer or the folder/hub id of one, saved with the model so that ``pipeline(...)`` works on
    the export; by default the one in the folder ``model`` was loaded from (an error says so if there is none).

    Nothing is written unless the export succeeds: it is built in a temporary folder next to ``directory`` and moved
    into place. An existing non-empty ``directory`` is refused unless ``overwrite``.
    """
    directory = Path(directory)
    spec = exportable_spec(model.config, task)
    export = head_export(model.config, spec)
    _check_directory(directory, overwrite)
    tokenizer = _resolve_tokenizer(model, tokenizer)
    _check_tokenizer(tokenizer, model)
    with torch.random.fork_rng(devices=[]):  # building the task model draws its initial weights: keep the
        exported = _build(model, spec, export)  # caller's random stream (a training run's dropout) untouched

    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = _sibling(directory, "export")
    try:
        exported.save_pretrained(staging)  # safetensors, the default
        tokenizer.save_pretrained(staging)
        _move_into_place(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def _check_directory(directory: Path, overwrite: bool) -> None:
    """Refuse to export into a file, or into a folder holding files unless ``overwrite`` (an empty one is fine)."""
    if directory.exists() and (not directory.is_dir() or (any(directory.iterdir()) and not overwrite)):
        raise ExportError(f"{directory} exists and is not an empty folder; choose another or pass overwrite=True")


def _build(model: MultiTaskModel, spec: TaskSpec, export: HeadExport) -> PreTrainedModel:
    """The architecture's task model holding ``model``'s encoder and ``spec``'s head weights, checked to give the
    same logits."""
    head_state = model.heads[spec.name].state_dict()
    expected = {f"{module}.{name}" for module in export.modules for name in ("weight", "bias")}
    if set(head_state) != expected:
        raise ExportError(
            f"Task {spec.name!r} ({spec.type}) cannot be exported exactly: its head has the parameters "
            f"{', '.join(sorted(head_state))}, the architecture's {export.auto_class.__name__} "
            f"{', '.join(sorted(expected))}"
        )
    encoder = model.encoder
    config = copy.deepcopy(encoder.config)
    config.problem_type = export.problem_type  # replaces one the encoder's checkpoint may carry
    if spec.info.has_labels:
        config.id2label, config.label2id = spec.id2label, spec.label2id
    else:
        config.id2label = {i: f"LABEL_{i}" for i in range(spec.num_labels)}
        config.label2id = {label: i for i, label in config.id2label.items()}
    try:
        exported = export.auto_class.from_config(
            config, dtype=model.dtype, attn_implementation=encoder.config._attn_implementation
        )
    except ValueError as error:  # an architecture without such a task model
        raise ExportError(
            f"Task {spec.name!r} ({spec.type}) cannot be exported: transformers has no {export.auto_class.__name__} "
            f"for the encoder's architecture ({config.model_type}): {error}"
        ) from None
    if not type(exported).__module__.startswith("transformers."):
        raise ExportError(
            f"Task {spec.name!r} ({spec.type}) cannot be exported as a plain transformers model: the encoder's "
            f"{export.auto_class.__name__} is {type(exported).__module__}.{type(exported).__name__}, not a class of "
            "transformers itself (it would need that code to load)"
        )

    prefix = exported.base_model_prefix
    targets = exported.state_dict()
    sources = {f"{prefix}.{key}": value for key, value in encoder.state_dict().items()}
    for key, value in head_state.items():  # after the encoder's: BERT's native dense layer replaces its pooler
        module, name = key.rsplit(".", 1)
        sources[f"{export.modules[module]}.{name}"] = value
    missing = sorted(set(targets) - set(sources))
    unused = sorted(
        key for key in set(sources) - set(targets)
        if not key.startswith(tuple(f"{prefix}.{p}" for p in DROPPABLE_ENCODER_PREFIXES))
    )
    if missing or unused:
        raise ExportError(
            f"Task {spec.name!r} ({spec.type}) cannot be exported exactly as {type(exported).__name__}: "
            + "; ".join(part for part in (
                f"it has weights mtl_hf's model lacks: {', '.join(missing[:8])}" if missing else "",
                f"mtl_hf's model has weights it lacks: {', '.join(unused[:8])}" if unused else "",
            ) if part)
        )
    exported.load_state_dict({key: sources[key] for key in targets}, strict=True)
    _check_same_logits(model, exported, spec)
    return exported.eval()


@torch.no_grad()
def _check_same_logits(model: MultiTaskModel, exported: PreTrainedModel, spec: TaskSpec) -> None:
    """Run both models (in eval mode) on a probe input without padding; refuse the export unless the logits agree.
    Catches what matching weight names cannot: an architecture whose task model computes its head differently."""
    device = next(model.parameters()).device
    exported.to(device).eval()
    vocab_size = model.get_input_embeddings().weight.shape[0]
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, vocab_size, (2, PROBE_LENGTH), generator=generator).to(device)
    attention_mask = torch.ones_like(input_ids)
    was_training = model.training
    model.eval()
    try:
        # The class's own forward: a model trained with --bf16/--fp16 keeps accelerate's autocast wrapper on its
        # instance `forward`, and its half-precision logits are not what the exported float32 model computes.
        expected = type(model).forward(model, input_ids=input_ids, attention_mask=attention_mask,
                                       task=spec.name).logits
    finally:
        model.train(was_training)
    output = exported(input_ids=input_ids, attention_mask=attention_mask)
    if spec.info.head == "span":
        got = torch.stack([output.start_logits, output.end_logits], dim=-1)
    else:
        got = output.logits
    atol = ATOL.get(expected.dtype, HALF_PRECISION_ATOL)
    if got.shape != expected.shape or not torch.allclose(got.float(), expected.float(), rtol=0.0, atol=atol):
        gap = (got.float() - expected.float()).abs().max().item() if got.shape == expected.shape else "shape"
        raise ExportError(
            f"Task {spec.name!r} ({spec.type}) cannot be exported exactly as {type(exported).__name__}: its logits "
            f"differ from the multi-task model's (largest difference {gap}, allowed {atol})"
        )


def _resolve_tokenizer(
    model: MultiTaskModel | None, tokenizer: PreTrainedTokenizerBase | str | os.PathLike[str] | None
) -> PreTrainedTokenizerBase:
    """The tokenizer to save with the export: the one given (loaded if it is a path or hub id), else the one in the
    folder the model was loaded from."""
    if isinstance(tokenizer, PreTrainedTokenizerBase):
        return tokenizer
    source = tokenizer if tokenizer is not None or model is None else model.name_or_path
    if tokenizer is None and not (source and Path(source).is_dir()):
        raise ExportError(
            "Pass `tokenizer=`: the export saves the tokenizer with the model (pipelines need it), and this model "
            "was not loaded from a folder that could hold one"
        )
    if _looks_like_a_path(str(source)) and not Path(source).expanduser().is_dir():
        raise ExportError(f"No tokenizer at {str(source)!r}: there is no such folder")
    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError, TypeError) as error:
        raise ExportError(f"No tokenizer could be loaded from {str(source)!r}: {_one_line(error)}") from None


def _check_tokenizer(tokenizer: PreTrainedTokenizerBase, model: MultiTaskModel) -> None:
    """Refuse a tokenizer whose ids the encoder's embeddings cannot look up: it belongs to another model, and the
    exported pipeline would fail on the first rare word (or read the wrong embeddings)."""
    vocab_size = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > vocab_size:
        raise ExportError(
            f"The tokenizer has {len(tokenizer)} tokens, more than the encoder's {vocab_size} embeddings: it is not "
            "this model's tokenizer"
        )


def _move_into_place(staging: Path, directory: Path) -> None:
    """Rename the finished export to ``directory``; an existing one (empty, or replaced with ``overwrite``) is
    moved aside first and removed only once the new one is in place."""
    if not directory.exists():
        staging.rename(directory)
        return
    old = _sibling(directory, "old")
    old.rmdir()
    directory.rename(old)
    try:
        staging.rename(directory)
    except OSError:
        old.rename(directory)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _sibling(directory: Path, role: str) -> Path:
    """A new empty hidden folder next to ``directory`` (the same file system, so renames are atomic), made with the
    usual permissions (``tempfile.mkdtemp`` would make it private, and the export would stay so once renamed)."""
    while True:
        path = directory.parent / f".{directory.name}.{role}-{uuid.uuid4().hex[:12]}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def _looks_like_a_path(name: str) -> bool:
    """A name that can only be a local folder (a hub id is ``name`` or ``owner/name``): a missing one is reported as
    a missing folder, not as a malformed hub id."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or (os.sep != "/" and os.sep in name)


def _one_line(error: BaseException | str) -> str:
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip()) or type(error).__name__


class _ArgumentParser(argparse.ArgumentParser):
    """Usage errors on one line (and exit status 2), as the command's other refusals."""

    def error(self, message: str):  # argparse's hook: it would print the whole usage first
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def main(argv: list[str] | None = None) -> int:
    """``python -m mtl_hf.export MODEL_DIR TASK OUTPUT_DIR``: 0 once exported; 2, with a one-line error, on bad
    input (no multi-task model there, an unknown task, a task type that cannot be exported, an occupied output
    folder, no tokenizer)."""
    parser = _ArgumentParser(
        prog="python -m mtl_hf.export",
        description="Export one task of an mtl_hf multi-task model as a plain transformers model (token "
        "classification, question answering, or sequence classification for tasks trained with `classifier: "
        "native`), loadable without mtl_hf or trust_remote_code.",
    )
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="the multi-task model (a folder or hub id)")
    parser.add_argument("task", metavar="TASK", help="the task to export")
    parser.add_argument("output_dir", metavar="OUTPUT_DIR", help="the folder to write (must not hold files)")
    parser.add_argument("--tokenizer", help="the tokenizer to save with it (default: MODEL_DIR's)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUTPUT_DIR if it holds files")
    args = parser.parse_args(argv)

    def refuse(message: str) -> int:
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        return 2

    if _looks_like_a_path(args.model_dir) and not Path(args.model_dir).expanduser().is_dir():
        return refuse(f"no model at {args.model_dir!r}: there is no such folder")
    try:
        config = AutoConfig.from_pretrained(args.model_dir)
    except (OSError, ValueError) as error:
        return refuse(f"cannot read a model config from {args.model_dir!r}: {_one_line(error)}")
    if not isinstance(config, MultiTaskConfig):
        return refuse(f"{args.model_dir!r} holds a {config.model_type} model, not an mtl_hf multi-task model")
    try:
        # Everything that can be refused is refused before the weights are loaded.
        spec = exportable_spec(config, args.task)
        _check_directory(Path(args.output_dir), args.overwrite)
        tokenizer = _resolve_tokenizer(None, args.tokenizer or args.model_dir)
        model = MultiTaskModel.from_pretrained(args.model_dir, config=config)
        path = export_task(model, spec.name, args.output_dir, tokenizer=tokenizer, overwrite=args.overwrite)
    except ExportError as error:
        return refuse(_one_line(error))
    print(f"Exported task {spec.name!r} ({spec.type}) as {model.config.encoder.model_type} "
          f"{head_export(config, spec).auto_class.__name__} to {path}")
    return 0
