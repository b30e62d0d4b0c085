"""The bad-input table of run_mtl.py (issue 10): the command line, argument files, models, tokenizers and output_dir.

Every row runs `run_mtl.cli(argv)` in this interpreter (tests/bad_input.py) and asserts its promise: exit code 2, ONE
`run_mtl.py: error:` line that names what is wrong and where, no traceback, and nothing new or changed in output_dir.
The rows of the task file and the data files live in tests/test_bad_input_data.py. Every row fails before the first
training step, most before the data is even read: the whole table takes seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import datasets
import pytest
import torch
import transformers
import yaml

import run_mtl
from tests.bad_input import assert_one_line_error, run_cli
from tests.conftest import save_tiny_bert, tiny_encoder_config
from tests.trainer_fixtures import NER, write_task_files


def write_workspace(root: Path, tokenizer_dir: Path) -> dict[str, Path]:
    """A tiny pretrained-looking BERT folder, JSONL + CoNLL data and a task file with absolute paths."""
    encoder_dir = save_tiny_bert(root / "tiny-bert", tokenizer_dir)
    data = root / "data"
    write_task_files(data)
    topic = {"name": "topic", "type": "classification", "train_file": str(data / "topic_train.jsonl"),
             "validation_file": str(data / "topic_dev.jsonl"), "test_file": str(data / "topic_test.jsonl"),
             "text_column_name": "sentence", "label_column_name": "category"}
    ner = {"name": "ner", "type": "ner", "train_file": str(data / "ner_train.conll"),
           "validation_file": str(data / "ner_dev.conll"), "test_file": str(data / "ner_test.conll"),
           "labels": NER.labels, "weight": 2.0}
    (root / "tasks.yaml").write_text(yaml.safe_dump({"tasks": [topic, ner]}))
    (root / "topic_only.yaml").write_text(yaml.safe_dump({"tasks": [{**topic, "validation_file": None,
                                                                      "test_file": None}]}))
    return {"root": root, "encoder": encoder_dir, "tasks": root / "tasks.yaml", "topic_only": root / "topic_only.yaml"}


def base_args(ws: dict[str, Path], out: Path, *extra: str, model: Path | str | None = None,
              tasks: Path | None = None) -> list[str]:
    return ["--model_name_or_path", str(model or ws["encoder"]), "--tasks", str(tasks or ws["tasks"]),
            "--output_dir", str(out), "--per_device_train_batch_size", "4", "--max_seq_length", "32",
            "--report_to", "none", "--use_cpu", "--log_level", "warning", *extra]


def train_in_process(argv: list[str], out: Path) -> None:
    outcome = run_cli(argv, out)
    assert outcome.code == 0, outcome.stderr[-3000:]


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> dict[str, Path]:
    """The workspace, a trained mtl_hf model (2 steps) and a finished run with checkpoints at steps 2 and 4 of 4."""
    levels = (transformers.utils.logging.get_verbosity(), datasets.utils.logging.get_verbosity())
    workspace = write_workspace(tmp_path_factory.mktemp("bad_input"), tokenizer_dir)
    trained = workspace["root"] / "trained"
    train_in_process(base_args(workspace, trained, "--do_train", "--max_steps", "2", "--save_strategy", "no"),
                     trained)
    finished = workspace["root"] / "finished"
    train_in_process(base_args(workspace, finished, "--do_train", "--max_steps", "4", "--save_steps", "2"), finished)
    transformers.utils.logging.set_verbosity(levels[0])
    transformers.utils.logging.reset_format()
    datasets.utils.logging.set_verbosity(levels[1])
    return {**workspace, "trained": trained, "finished": finished}


# ---- the table ----------------------------------------------------------------------------------------------------


@dataclass
class Case:
    argv: list[str]
    out: Path
    patterns: tuple[str, ...]


def copy_folder(source: Path, target: Path, without: tuple[str, ...] = ()) -> Path:
    shutil.copytree(source, target)
    for name in without:
        path = target / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return target


def tasks_with(ws: dict[str, Path], tmp: Path, **changes: dict) -> Path:
    content = yaml.safe_load(ws["tasks"].read_text())
    for task in content["tasks"]:
        task.update(changes.get(task["name"], {}))
    path = tmp / "tasks_changed.yaml"
    path.write_text(yaml.safe_dump(content))
    return path


def cli_case(*extra: str, patterns: tuple[str, ...]) -> Callable[[dict[str, Path], Path], Case]:
    """A row that only changes the command line (plus the workspace's model, task file and a fresh output_dir)."""
    def build(ws: dict[str, Path], tmp: Path) -> Case:
        out = tmp / "out"
        return Case(base_args(ws, out, *extra), out, patterns)
    return build


def args_file_case(content: str, *patterns: str, name: str = "args.yaml") -> Callable[[dict[str, Path], Path], Case]:
    """A row run as `run_mtl.py args.yaml`: the file's text is `content` plus the workspace's model and tasks."""
    def build(ws: dict[str, Path], tmp: Path) -> Case:
        out = tmp / "out"
        path = tmp / name
        if content is not None:
            head = yaml.safe_dump({"model_name_or_path": str(ws["encoder"]), "tasks": str(ws["tasks"]),
                                   "output_dir": str(out), "report_to": "none", "use_cpu": True})
            path.write_text(head + content)
        return Case([str(path)], out, tuple(p.replace("{file}", str(path)) for p in patterns))
    return build


def args_file_not_a_mapping(ws: dict[str, Path], tmp: Path) -> Case:
    path = tmp / "args.json"
    path.write_text(json.dumps(["--output_dir", str(tmp / "out")]))
    return Case([str(path)], tmp / "out", ("malformed argument file .*args.json: expected a mapping", "got list"))


def model_case(make: Callable[[dict[str, Path], Path], Path], *patterns: str, extra: tuple[str, ...] = ()):
    """A row whose --model_name_or_path is a folder that `make` builds from the workspace's (e.g. damaged)."""
    def build(ws: dict[str, Path], tmp: Path) -> Case:
        model = make(ws, tmp)
        out = tmp / "out"
        return Case(base_args(ws, out, *extra, model=model), out,
                    tuple(p.replace("{model}", str(model)) for p in patterns))
    return build


def encoder_copy(ws: dict[str, Path], tmp: Path, without: tuple[str, ...] = ()) -> Path:
    return copy_folder(ws["encoder"], tmp / "model", without)


def garbage_weights(source: str) -> Callable[[dict[str, Path], Path], Path]:
    def make(ws: dict[str, Path], tmp: Path) -> Path:
        model = copy_folder(ws[source], tmp / "model")
        (model / "model.safetensors").write_bytes(b"this is not a safetensors file" * 4)
        return model
    return make


def truncated_weights(ws: dict[str, Path], tmp: Path) -> Path:
    model = encoder_copy(ws, tmp)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return model


def garbage_config(ws: dict[str, Path], tmp: Path) -> Path:
    model = encoder_copy(ws, tmp)
    (model / "config.json").write_text('{"model_type": "bert", "hidden_size": ')
    return model


def without_tokenizer(ws: dict[str, Path], tmp: Path) -> Path:
    return encoder_copy(ws, tmp, without=("tokenizer.json", "tokenizer_config.json"))


def small_vocabulary(ws: dict[str, Path], tmp: Path) -> Path:
    """An encoder with embeddings for 50 tokens and the workspace's tokenizer of 155."""
    model = tmp / "model"
    transformers.AutoModel.from_config(tiny_encoder_config("bert", 50)).save_pretrained(model)
    transformers.AutoTokenizer.from_pretrained(ws["encoder"]).save_pretrained(model)
    return model


def output_case(prepare: Callable[[dict[str, Path], Path], Path], *patterns: str, extra: tuple[str, ...] = (),
                tasks: Callable[[dict[str, Path], Path], Path] | None = None):
    """A row whose output_dir is what `prepare` makes of it."""
    def build(ws: dict[str, Path], tmp: Path) -> Case:
        out = prepare(ws, tmp)
        task_file = tasks(ws, tmp) if tasks else None
        argv = base_args(ws, out, "--do_train", "--max_steps", "4", "--save_steps", "2", *extra, tasks=task_file)
        return Case(argv, out, tuple(p.replace("{out}", str(out)) for p in patterns))
    return build


def a_file(ws: dict[str, Path], tmp: Path) -> Path:
    path = tmp / "out"
    path.write_text("not a folder\n")
    return path


def under_a_file(ws: dict[str, Path], tmp: Path) -> Path:
    (tmp / "parent").write_text("not a folder\n")
    return tmp / "parent" / "out"


def not_writable(ws: dict[str, Path], tmp: Path) -> Path:
    if os.geteuid() == 0:  # root writes into any folder of mode 555; /sys refuses root too
        try:
            tempfile.TemporaryFile(dir="/sys").close()
        except OSError:
            return Path("/sys/mtl_hf_bad_input_out")
        pytest.skip("running as root, and /sys is writable: no folder to test a refused write in")
    folder = tmp / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder / "out"


def finished_run(ws: dict[str, Path], tmp: Path) -> Path:
    return copy_folder(ws["finished"], tmp / "out")


def results_only(ws: dict[str, Path], tmp: Path) -> Path:
    return copy_folder(ws["finished"], tmp / "out", without=("checkpoint-2", "checkpoint-4"))


def unfinished_run(ws: dict[str, Path], tmp: Path) -> Path:
    """A run killed after its checkpoint at step 2: no final model or results."""
    out = copy_folder(ws["finished"], tmp / "out")
    for path in out.iterdir():
        if path.name != "checkpoint-2":
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    return out


def corrupt_checkpoint_weights(ws: dict[str, Path], tmp: Path) -> Path:
    out = unfinished_run(ws, tmp)
    (out / "checkpoint-2" / "model.safetensors").write_bytes(b"\0" * 64)
    return out


def locked_by_a_running_process(ws: dict[str, Path], tmp: Path) -> Path:
    """output_dir held by a process that is running: this test's parent process (not this one)."""
    out = tmp / "out"
    out.mkdir()
    (out / run_mtl.LOCK_NAME).write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(),
                                                     "since": "2024-01-01 00:00:00"}))
    return out


def other_ner_labels(ws: dict[str, Path], tmp: Path) -> Path:
    return tasks_with(ws, tmp, ner={"labels": [*NER.labels, "B-ORG", "I-ORG"]})


def resume_case(checkpoint: Callable[[dict[str, Path], Path], Path], *patterns: str, extra: tuple[str, ...] = ()):
    def build(ws: dict[str, Path], tmp: Path) -> Case:
        out = unfinished_run(ws, tmp)
        path = checkpoint(ws, tmp)
        argv = base_args(ws, out, "--do_train", "--max_steps", "4", "--resume_from_checkpoint", str(path), *extra)
        return Case(argv, out, tuple(p.replace("{checkpoint}", str(path)) for p in patterns))
    return build


def half_written_checkpoint(ws: dict[str, Path], tmp: Path) -> Path:
    return copy_folder(ws["finished"] / "checkpoint-4", tmp / "out" / "checkpoint-4", without=("trainer_state.json",))


def continue_case(tasks: Callable[[dict[str, Path], Path], Path], *patterns: str):
    def build(ws: dict[str, Path], tmp: Path) -> Case:
        out = tmp / "out"
        return Case(base_args(ws, out, "--do_train", "--max_steps", "1", model=ws["trained"], tasks=tasks(ws, tmp)),
                    out, patterns)
    return build


def one_task_case(*extra: str, patterns: tuple[str, ...]):
    def build(ws: dict[str, Path], tmp: Path) -> Case:
        out = tmp / "out"
        return Case(base_args(ws, out, "--do_train", *extra, tasks=ws["topic_only"]), out, patterns)
    return build


def task_file_is_a_folder(ws: dict[str, Path], tmp: Path) -> Case:
    out = tmp / "out"
    return Case(base_args(ws, out, tasks=ws["root"] / "data"), out, ("task file .*data is a folder",))


def empty_output_dir(ws: dict[str, Path], tmp: Path) -> Case:
    argv = base_args(ws, tmp / "out", "--do_train")
    argv[argv.index("--output_dir") + 1] = ""
    return Case(argv, tmp / "out", ("--output_dir is empty",))


ROWS: dict[str, Callable[[dict[str, Path], Path], Case]] = {
    # -- the command line: argparse and unknown flags, one line instead of a usage dump ---------------------------
    "unknown_flag": cli_case("--no_such_flag", "1", patterns=("unrecognized arguments: --no_such_flag 1",)),
    "misspelled_flag": cli_case("--lerning_rate", "0.1",
                                patterns=("unrecognized arguments: --lerning_rate 0.1",
                                          "did you mean --learning_rate")),
    "int_flag_not_a_number": cli_case("--max_steps", "abc", patterns=("--max_steps", "invalid int value: 'abc'")),
    "float_flag_not_a_number": cli_case("--learning_rate", "fast",
                                        patterns=("--learning_rate", "invalid float value: 'fast'")),
    "unknown_sampling_strategy": cli_case("--sampling_strategy", "bogus",
                                          patterns=("--sampling_strategy", "invalid choice: 'bogus'")),
    "unknown_scheduler": cli_case("--lr_scheduler_type", "sometimes",
                                  patterns=("--lr_scheduler_type", "invalid choice: 'sometimes'")),
    "flag_without_value": cli_case("--max_steps", patterns=("--max_steps", "expected one argument")),
    # -- values the argument classes accept but that cannot work --------------------------------------------------
    "max_seq_length_zero": cli_case("--max_seq_length", "0", patterns=("--max_seq_length must be a positive", "got 0")),
    "max_seq_length_negative": cli_case("--max_seq_length", "-5", patterns=("--max_seq_length", "got -5")),
    "max_seq_length_no_room_for_text": cli_case("--max_seq_length", "2",
                                                patterns=("--max_seq_length 2 leaves no room for text", "2 special")),
    "task_weights_not_json": cli_case("--task_weights", '{"topic": ',
                                      patterns=("task_weights: not valid JSON", "line 1 column 11")),
    "task_weights_unknown_task": cli_case("--task_weights", '{"sport": 2}',
                                          patterns=("--task_weights: unknown task 'sport'", "ner, topic")),
    "task_weights_nan": cli_case("--task_weights", '{"topic": NaN}',
                                 patterns=("weight of task 'topic' must be a finite number > 0", "nan")),
    "task_weights_inf": cli_case("--task_weights", "ner=inf", patterns=("weight of task 'ner' must be a finite",)),
    "task_weights_zero": cli_case("--task_weights", "topic=0", patterns=("weight of task 'topic' must be .* > 0",)),
    "task_weights_negative": cli_case("--task_weights", '{"ner": -1}', patterns=("weight of task 'ner' must be",)),
    "task_weights_not_a_number": cli_case("--task_weights", "topic=heavy",
                                          patterns=("weight of task 'topic' is not a number: 'heavy'",)),
    "task_weights_boolean": cli_case("--task_weights", '{"topic": true}',
                                     patterns=("weight of task 'topic' is not a number: True",)),
    "task_weights_malformed_pairs": cli_case("--task_weights", "topic:2",
                                             patterns=("task_weights: expected 'task=weight,...' or JSON",)),
    "sampling_temperature_zero": cli_case("--sampling_temperature", "0",
                                          patterns=("sampling_temperature must be > 0, got 0",)),
    "sampling_temperature_nan": cli_case("--sampling_temperature", "nan",
                                         patterns=("sampling_temperature must be > 0, got nan",)),
    "train_batch_size_zero": cli_case("--per_device_train_batch_size", "0",
                                      patterns=("--per_device_train_batch_size must be at least 1, got 0",)),
    "eval_batch_size_zero": cli_case("--do_eval", "--per_device_eval_batch_size", "0",
                                     patterns=("--per_device_eval_batch_size must be at least 1, got 0",)),
    "gradient_accumulation_zero": cli_case("--gradient_accumulation_steps", "0",
                                           patterns=("--gradient_accumulation_steps must be at least 1",)),
    "learning_rate_negative": cli_case("--learning_rate", "-0.1", patterns=("--learning_rate must be .*got -0.1",)),
    "learning_rate_nan": cli_case("--learning_rate", "nan", patterns=("--learning_rate must be a finite", "nan")),
    "preprocessing_workers_zero": cli_case("--preprocessing_num_workers", "0",
                                           patterns=("--preprocessing_num_workers must be at least 1",)),
    "load_best_without_evaluation": cli_case("--load_best_model_at_end",
                                             patterns=("--load_best_model_at_end requires the save and eval strategy",
                                                       "Save strategy")),
    "metric_for_best_model_unknown": cli_case(
        "--eval_strategy", "steps", "--eval_steps", "1", "--metric_for_best_model", "accuracy",
        patterns=("--metric_for_best_model 'accuracy' names no evaluation metric", "topic_accuracy",
                  "ner_f1")),
    "metric_for_best_model_of_another_task_type": cli_case(
        "--metric_for_best_model", "eval_topic_f1",
        patterns=("'eval_topic_f1' names no evaluation metric", "did you mean topic_macro_f1")),
    "metric_for_best_model_unknown_entity_type": cli_case(
        "--metric_for_best_model", "ner_ORG_f1", patterns=("'ner_ORG_f1' names no", "ner_LOC_f1, ner_PER_f1")),
    # -- runs that would train nothing ---------------------------------------------------------------------------
    "max_steps_zero": cli_case("--do_train", "--max_steps", "0", patterns=("--max_steps 0 trains nothing",)),
    "no_epochs": cli_case("--do_train", "--max_steps", "-1", "--num_train_epochs", "0",
                          patterns=("--num_train_epochs 0.0 with --max_steps -1 trains nothing",)),
    "negative_epochs": cli_case("--do_train", "--max_steps", "-1", "--num_train_epochs", "-1",
                                patterns=("--num_train_epochs -1.0 .* trains nothing",)),
    "max_train_samples_zero": cli_case("--max_train_samples", "0",
                                       patterns=("--max_train_samples must be at least 1, got 0",)),
    "max_eval_samples_zero": cli_case("--do_eval", "--max_eval_samples", "0",
                                      patterns=("--max_eval_samples must be at least 1, got 0",)),
    "only_task_gets_no_batch": one_task_case(
        "--dataloader_drop_last", "--per_device_train_batch_size", "64",
        patterns=("dataloader_drop_last=True", "task 'topic' has 24 training example", "no batch")),
    # -- an argument file instead of the command line -----------------------------------------------------------
    "args_file_missing": args_file_case(None, "argument file not found: .*missing.yaml", name="missing.yaml"),
    "args_file_yaml_error": args_file_case("max_steps: 4\nsave_steps: : 2\n",  # the file's lines 6 and 7
                                           "malformed argument file .*args.yaml: line 7, column 13: mapping values "
                                           "are not allowed here"),
    "args_file_unknown_key": args_file_case("max_stpes: 3\n", "argument file .*args.yaml", "max_stpes"),
    "args_file_value_not_a_number": args_file_case("max_steps: many\n", "args.yaml: max_steps: invalid int value"),
    "args_file_invalid_choice": args_file_case("sampling_strategy: bogus\n", "sampling_strategy: invalid choice"),
    "args_file_refused_value": args_file_case("max_seq_length: 0\n", "--max_seq_length must be a positive"),
    "args_file_not_a_mapping": args_file_not_a_mapping,
    # -- the model and its tokenizer ----------------------------------------------------------------------------
    "model_is_a_file": lambda ws, tmp: Case(base_args(ws, tmp / "out", model=ws["tasks"]), tmp / "out",
                                            ("--model_name_or_path .*tasks.yaml is a file",)),
    "model_folder_missing": lambda ws, tmp: Case(
        base_args(ws, tmp / "out", model=tmp / "no-such-model"), tmp / "out",
        ("model not found or not loadable: .*no-such-model \\(--model_name_or_path: no such folder\\)",)),
    "model_config_not_json": model_case(garbage_config, "model not found or not loadable: {model}"),
    "model_weights_garbage": model_case(garbage_weights("encoder"),
                                        "weights file {model}/model.safetensors is corrupt or truncated"),
    "model_weights_truncated": model_case(truncated_weights,
                                          "weights file {model}/model.safetensors is corrupt or truncated"),
    "trained_model_weights_garbage": model_case(garbage_weights("trained"),
                                                "weights file {model}/model.safetensors is corrupt"),
    "model_without_tokenizer_files": model_case(without_tokenizer,
                                                "encodes ordinary words .* as the unknown token '\\[UNK\\]'",
                                                "{model} has no usable tokenizer files", "--tokenizer_name"),
    "tokenizer_larger_than_embeddings": model_case(small_vocabulary, "has 155 tokens", "embeddings for 50"),
    "tokenizer_name_missing": cli_case("--tokenizer_name", "/no/such/tokenizer",
                                       patterns=("tokenizer not found: --tokenizer_name /no/such/tokenizer",)),
    "tokenizer_name_without_tokenizer_files": lambda ws, tmp: Case(
        base_args(ws, tmp / "out", "--tokenizer_name", str(ws["root"] / "data")), tmp / "out",
        ("tokenizer not found or not loadable: --tokenizer_name .*data",)),
    "continued_task_with_other_labels": continue_case(
        other_ner_labels, "task 'ner': field 'labels' lists another label set", "added B-ORG, I-ORG"),
    "task_file_is_a_folder": task_file_is_a_folder,
    # -- output_dir ---------------------------------------------------------------------------------------------
    "output_dir_is_a_file": output_case(a_file, "output_dir {out} is a file, not a folder"),
    "output_dir_under_a_file": output_case(under_a_file, "output_dir {out} cannot be created: .*parent is a file"),
    "output_dir_not_writable": output_case(not_writable, "output_dir {out} is not writable"),
    "output_dir_holds_a_finished_run": output_case(finished_run, "output_dir {out} holds a finished run",
                                                   "--overwrite_output_dir"),
    "output_dir_holds_results_and_no_checkpoint": output_case(results_only, "holds the results of an earlier run",
                                                              "no checkpoint to resume"),
    "output_dir_in_use_by_a_running_process": output_case(
        locked_by_a_running_process, f"output_dir {{out}} is in use by another run \\(pid {os.getppid()} on host "),
    "resume_with_other_labels": output_case(unfinished_run, "checkpoint-2 was trained with other tasks",
                                            "task 'ner' field 'labels'", tasks=other_ner_labels),
    "checkpoint_weights_corrupt": output_case(corrupt_checkpoint_weights,
                                              "checkpoint {out}/checkpoint-2: weights file .*model.safetensors is "
                                              "corrupt", "delete the checkpoint folder"),
    "resume_from_missing_checkpoint": resume_case(lambda ws, tmp: tmp / "nope",
                                                  "--resume_from_checkpoint {checkpoint}: no such checkpoint"),
    "resume_from_half_written_checkpoint": resume_case(half_written_checkpoint,
                                                       "checkpoint {checkpoint} cannot be resumed: it has no "
                                                       "trainer_state.json"),
    "seed_out_of_range": cli_case("--seed", "-1", patterns=(r"--seed must be between 0 and 2\*\*32 - 1, got -1",)),
    "output_dir_empty": empty_output_dir,
    "negative_dataloader_workers": cli_case("--dataloader_num_workers", "-1",
                                            patterns=("--dataloader_num_workers must be 0 or more, got -1",)),
    "max_grad_norm_nan": cli_case("--do_train", "--max_grad_norm", "nan",
                                  patterns=("--max_grad_norm must be a finite number",)),
    "report_to_an_integration_not_installed": cli_case("--do_train", "--report_to", "wandb",
                                                       patterns=("wandb",)),
    "weights_blow_up_in_the_last_step": cli_case("--do_train", "--max_steps", "1", "--learning_rate", "1e39",
                                                 "--save_strategy", "no",
                                                 patterns=("training stopped: the model's weights are not finite "
                                                           "after step 1",)),
    "resume_and_overwrite": resume_case(lambda ws, tmp: tmp / "out" / "checkpoint-2",
                                        "--overwrite_output_dir starts afresh and --resume_from_checkpoint",
                                        extra=("--overwrite_output_dir",)),
}


def test_the_table_has_the_rows_it_should() -> None:
    assert len(ROWS) >= 40


@pytest.mark.parametrize("row", list(ROWS))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(row: str, ws: dict[str, Path], tmp_path: Path) -> None:
    case = ROWS[row](ws, tmp_path)
    outcome = run_cli(case.argv, case.out)
    assert_one_line_error(outcome, *case.patterns)  # nothing new in output_dir, not even an empty folder


def test_valid_weights_folders_are_not_refused(ws: dict[str, Path], tmp_path: Path) -> None:
    """A legacy (pre-zip) pytorch_model.bin loads in transformers, and a .bin beside safetensors is never read: neither
    is a weights problem. A .bin that is neither format is."""
    state = {"weight": torch.ones(2)}
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    torch.save(state, legacy / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    assert run_mtl.weights_problem(legacy) is None
    both = copy_folder(ws["encoder"], tmp_path / "both")
    (both / "pytorch_model.bin").write_bytes(b"stale")
    assert run_mtl.weights_problem(both) is None
    only_bin = tmp_path / "only_bin"
    only_bin.mkdir()
    (only_bin / "pytorch_model.bin").write_bytes(b"garbage")
    assert "pytorch_model.bin is corrupt or truncated" in run_mtl.weights_problem(only_bin)


def test_under_several_processes_only_rank_0_prints_the_error(ws: dict[str, Path], tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Every rank finds the same bad input; the user gets one line, not one per process."""
    argv = base_args(ws, tmp_path / "out", "--seed", "-1")
    monkeypatch.setenv("RANK", "1")
    outcome = run_cli(argv, tmp_path / "out")
    assert outcome.code == 2 and outcome.errors == []
    monkeypatch.setenv("RANK", "0")
    assert_one_line_error(run_cli(argv, tmp_path / "out"), "--seed")
