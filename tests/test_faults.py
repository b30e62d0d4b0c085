"""Faults (issue 10): checkpoints half-written by kill -9, two runs into one output_dir, a loss that turns non-finite.

A kill -9 at the exact moment of a save is hard to time, so the half-written checkpoints are made on disk as such a
kill leaves them: a complete checkpoint of a real run, copied and damaged. Trainer writes a checkpoint's weights
first, then optimizer, scheduler and RNG states, and trainer_state.json last.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

import run_mtl
from tests.bad_input import assert_one_line_error, run_cli
from tests.test_bad_input import base_args, copy_folder, train_in_process, write_workspace

REPO = Path(__file__).resolve().parents[1]
RUN = ("--do_train", "--max_steps", "4", "--save_steps", "2", "--logging_steps", "1")


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> dict[str, Path]:
    """The workspace and an uninterrupted run of 4 steps with checkpoints at steps 2 and 4."""
    levels = (transformers.utils.logging.get_verbosity(), datasets.utils.logging.get_verbosity())
    workspace = write_workspace(tmp_path_factory.mktemp("faults"), tokenizer_dir)
    finished = workspace["root"] / "finished"
    train_in_process(base_args(workspace, finished, *RUN), finished)
    transformers.utils.logging.set_verbosity(levels[0])
    transformers.utils.logging.reset_format()
    datasets.utils.logging.set_verbosity(levels[1])
    return {**workspace, "finished": finished}


def killed_after_checkpoint_2(ws: dict[str, Path], out: Path) -> Path:
    """output_dir as the run leaves it when killed after its checkpoint at step 2: that checkpoint only."""
    copy_folder(ws["finished"] / "checkpoint-2", out / "checkpoint-2")
    return out


def damage(checkpoint: Path, how: str) -> None:
    """Leave `checkpoint` as a kill -9 during its save would."""
    if how == "weights_without_trainer_state":  # killed while saving the optimizer
        for name in ("trainer_state.json", "optimizer.pt", "scheduler.pt", "rng_state.pth"):
            (checkpoint / name).unlink()
    elif how == "empty_optimizer":
        (checkpoint / "optimizer.pt").write_bytes(b"")
    elif how == "truncated_optimizer":
        optimizer = checkpoint / "optimizer.pt"
        optimizer.write_bytes(optimizer.read_bytes()[: optimizer.stat().st_size // 2])
    elif how == "only_the_remote_code_file":
        for path in checkpoint.iterdir():
            if path.name != "modeling_multitask.py":
                path.unlink()
    elif how == "truncated_trainer_state":
        state = checkpoint / "trainer_state.json"
        state.write_text(state.read_text()[:40])
    else:
        raise ValueError(how)


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]


@pytest.mark.parametrize("how, problem", [
    ("weights_without_trainer_state", "it has no trainer_state.json"),
    ("empty_optimizer", "optimizer.pt is empty"),
    ("truncated_optimizer", "optimizer.pt is truncated"),
    ("only_the_remote_code_file", "it has no trainer_state.json"),
    ("truncated_trainer_state", "its trainer_state.json is cut short"),
])
def test_a_half_written_checkpoint_is_skipped_and_the_last_complete_one_resumed_exactly(
    how: str, problem: str, ws: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Killed while saving checkpoint-4: the next run resumes checkpoint-2, says so, and ends exactly where the
    uninterrupted run ended (every tensor equal)."""
    out = killed_after_checkpoint_2(ws, tmp_path / "out")
    copy_folder(ws["finished"] / "checkpoint-4", out / "checkpoint-4")
    damage(out / "checkpoint-4", how)
    with caplog.at_level(logging.WARNING):
        outcome = run_cli(base_args(ws, out, *RUN), out)
    assert outcome.code == 0, outcome.stderr[-3000:]
    skipped = [m for m in warnings_of(caplog) if "skipped the incomplete checkpoint" in m]
    assert len(skipped) == 1 and f"checkpoint-4: {problem}" in skipped[0] and "resuming from checkpoint-2" in skipped[0]
    assert any("Resuming training from" in m and "checkpoint-2 at step 2 of 4" in m for m in warnings_of(caplog))
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 4 and [e["step"] for e in state["log_history"] if "loss" in e] == [1, 2, 3, 4]
    assert run_mtl.checkpoint_problem(out / "checkpoint-4") is None  # saved again, completely
    resumed, uninterrupted = load_file(out / "model.safetensors"), load_file(ws["finished"] / "model.safetensors")
    assert resumed.keys() == uninterrupted.keys()
    assert max((resumed[k] - uninterrupted[k]).abs().max().item() for k in resumed) == 0
    assert not (out / run_mtl.LOCK_NAME).exists()


def test_a_run_killed_during_its_first_save_trains_afresh(ws: dict[str, Path], tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "out"
    copy_folder(ws["finished"] / "checkpoint-2", out / "checkpoint-2")
    damage(out / "checkpoint-2", "weights_without_trainer_state")
    with caplog.at_level(logging.WARNING):
        outcome = run_cli(base_args(ws, out, *RUN), out)
    assert outcome.code == 0, outcome.stderr[-3000:]
    assert any("checkpoint-2: it has no trainer_state.json), training afresh" in m for m in warnings_of(caplog))
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 4


def test_corrupt_weights_in_the_checkpoint_to_resume_are_one_line_naming_the_file(ws: dict[str, Path],
                                                                                   tmp_path: Path) -> None:
    """checkpoint-4 is half-written (skipped); checkpoint-2, the one to resume, is complete but its weights are
    garbage: that is no interrupted save, so the run stops and names the file instead of skipping further back."""
    out = killed_after_checkpoint_2(ws, tmp_path / "out")
    copy_folder(ws["finished"] / "checkpoint-4", out / "checkpoint-4")
    damage(out / "checkpoint-4", "weights_without_trainer_state")
    (out / "checkpoint-2" / "model.safetensors").write_bytes(b"garbage" * 100)
    outcome = run_cli(base_args(ws, out, *RUN), out)
    assert_one_line_error(outcome, f"checkpoint {out / 'checkpoint-2'}: weights file "
                                   f"{out / 'checkpoint-2' / 'model.safetensors'} is corrupt or truncated")


def test_resuming_a_checkpoint_at_its_final_step_trains_no_further_step(ws: dict[str, Path], tmp_path: Path) -> None:
    out = copy_folder(ws["finished"], tmp_path / "out")
    outcome = run_cli(base_args(ws, out, "--do_train", "--max_steps", "4", "--resume_from_checkpoint",
                                str(out / "checkpoint-4")), out)
    assert outcome.code == 0, outcome.stderr[-3000:]
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 4
    final, checkpoint = load_file(out / "model.safetensors"), load_file(out / "checkpoint-4" / "model.safetensors")
    assert all(torch.equal(final[k], checkpoint[k]) for k in final)


# ---- two runs into one output_dir ---------------------------------------------------------------------------------

HOLD_LOCK = """
import sys
from pathlib import Path
import run_mtl
run_mtl.acquire_lock(Path(sys.argv[1]))
print("locked", flush=True)
sys.stdin.read()
"""


def test_a_second_run_into_an_output_dir_in_use_is_refused_and_a_dead_runs_lock_taken_over(
    ws: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], cwd=REPO, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        lock = json.loads((out / run_mtl.LOCK_NAME).read_text())
        assert (lock["pid"], lock["host"]) == (holder.pid, socket.gethostname())
        argv = base_args(ws, out, "--do_train", "--max_steps", "1")
        outcome = run_cli(argv, out)
        assert_one_line_error(outcome, f"output_dir {out} is in use by another run \\(pid {holder.pid} on host "
                                       f"{socket.gethostname()}, since .*lock file {out / run_mtl.LOCK_NAME}\\)")
    finally:
        holder.send_signal(signal.SIGKILL)  # as kill -9: its lock stays behind
        holder.wait(timeout=60)
    assert (out / run_mtl.LOCK_NAME).exists()
    with caplog.at_level(logging.WARNING):
        outcome = run_cli(argv, out)
    assert outcome.code == 0, outcome.stderr[-3000:]
    assert any(f"taking over the lock of an earlier run that is gone (pid {holder.pid} on host" in m
               for m in warnings_of(caplog))
    assert (out / "model.safetensors").is_file()
    assert not (out / run_mtl.LOCK_NAME).exists()  # released at the end


def test_the_lock_is_held_by_this_process_while_it_trains(ws: dict[str, Path], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    seen = []
    train = run_mtl.MultiTaskTrainer.train

    def recording_train(self, *args, **kwargs):
        seen.append(json.loads((out / run_mtl.LOCK_NAME).read_text()))
        return train(self, *args, **kwargs)

    monkeypatch.setattr(run_mtl.MultiTaskTrainer, "train", recording_train)
    outcome = run_cli(base_args(ws, out, "--do_train", "--max_steps", "1"), out)
    assert outcome.code == 0, outcome.stderr[-3000:]
    assert [(s["pid"], s["host"]) for s in seen] == [(os.getpid(), socket.gethostname())]
    assert not (out / run_mtl.LOCK_NAME).exists()


# ---- a training loss that turns non-finite ------------------------------------------------------------------------


def test_a_non_finite_loss_stops_in_one_line_and_saves_nothing(ws: dict[str, Path], tmp_path: Path) -> None:
    """A trained model whose heads' biases are infinite: the first step's loss is NaN; MultiTaskTrainer raises
    NonFiniteLossError, run_mtl reports it in one line, saves no model and leaves no lock or folder behind."""
    trained = tmp_path / "trained"
    train_in_process(base_args(ws, trained, "--do_train", "--max_steps", "1", "--save_strategy", "no"), trained)
    model = copy_folder(trained, tmp_path / "inf_model")
    weights = load_file(model / "model.safetensors")
    for key in weights:
        if key.startswith("heads.") and key.endswith(".bias"):
            weights[key] = torch.full_like(weights[key], float("inf"))
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    out = tmp_path / "out"
    outcome = run_cli(base_args(ws, out, "--do_train", "--max_steps", "2", model=model), out)
    assert_one_line_error(outcome, "training stopped: task '(topic|ner)': the training loss is nan at step 1",
                          "the model was not saved")
    assert not out.exists()
