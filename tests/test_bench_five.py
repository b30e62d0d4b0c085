"""bench/common.py's five-task suite pieces that need no training: the scoring of each task type, the targets judged
on seed means, and the docs section (rendered from a results file the test writes, and spliced into a page)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))  # as quality.py imports it: a sibling module
import common  # noqa: E402

SCORES = {
    "topic": {"accuracy": 80.0, "macro_f1": 78.0},
    "ner": {"f1": 60.0, "precision": 58.0, "recall": 62.0},
    "vitaminc": {"accuracy": 51.0, "macro_f1": 23.0},
    "vader": {"pearson": 0.5, "spearmanr": 0.48, "mse": 2.0},
    "qtype": {"micro_f1": 40.0, "macro_f1": 20.0, "subset_accuracy": 10.0},
}


def _run(seed: int, shift: dict[str, float], examples_per_s: float) -> dict:
    """One contender's results of one seed: SCORES moved by ``shift`` per task (on every metric) and by the seed."""
    scores = {task: {metric: value + shift.get(task, 0.0) + 0.1 * seed for metric, value in metrics.items()}
              for task, metrics in SCORES.items()}
    return {"models": 1, "scores": scores, "parameters": 100, "train_seconds": 10.0,
            "loop_seconds": 1000 / examples_per_s, "train_examples": 1000, "train_steps": 60,
            "trainer_metrics": {"test_topic_accuracy": scores["topic"]["accuracy"] / 100}}


def _results(mtl_shift: dict[str, float], mtl_rate: float = 50.0) -> dict:
    runs = []
    for seed in (0, 1, 2):
        single = _run(seed, {}, 50.0)
        single.update(models=5, parameters=480,
                      tasks={t: {"train_examples": 200, "loop_seconds": 4.0, "parameters": 96} for t in SCORES})
        runs.append({"seed": seed, "order": ["mtl", "single"] if seed % 2 == 0 else ["single", "mtl"],
                     "mtl": _run(seed, mtl_shift, mtl_rate), "single": single})
    machine = {"cpu": "test CPU", "cores": 2, "memory_gib": 8, "torch_threads": 2, "python": "3", "torch": "2",
               "transformers": "5", "datasets": "4", "accelerate": "1", "date": "today"}
    config = dict(common.HPARAMS, num_train_epochs=2, max_train_samples=1000, max_test_samples=1000, seeds=[0, 1, 2])
    return {"suite": "five", "machine": machine, "config": config, "quick": False, "runs": runs,
            "train_rows": {t: 1000 for t in SCORES}, "test_rows": {t: 1000 for t in SCORES},
            "trivial_baselines": {"topic": {"majority_accuracy": 23.0}, "vader": {"mean_mse": 3.2}},
            "total_seconds": 2400.0}


def test_regression_scores():
    assert common.regression_scores([1.0, 2.0, 3.0], [2.0, 4.0, 6.0]) == {"pearson": 1.0, "spearmanr": 1.0,
                                                                        "mse": pytest.approx(14 / 3, abs=1e-4)}
    constant = common.regression_scores([0.5, 0.5, 0.5], [1.0, 2.0, 3.0])
    assert constant["pearson"] == 0.0 and constant["spearmanr"] == 0.0


def test_multilabel_scores():
    scores = common.multilabel_scores([["a"], ["a", "b"], []], [["a"], ["b"], ["c"]], ["a", "b", "c"])
    # decisions: tp = a, b; fp = a (row 2); fn = c -> micro F1 = 2*2 / (2*2 + 1 + 1)
    assert scores["micro_f1"] == pytest.approx(100 * 4 / 6, abs=0.01)
    # per label F1: a 2/3, b 1, c 0 -> macro over every label
    assert scores["macro_f1"] == pytest.approx(100 * (2 / 3 + 1) / 3, abs=0.01)
    assert scores["subset_accuracy"] == pytest.approx(100 / 3, abs=0.01)


def test_classification_scores():
    assert common.classification_scores(["x", "y", "x", "x"], ["x", "y", "y", "x"]) == {"accuracy": 75.0,
                                                                                        "macro_f1": 73.33}


def test_targets_on_seed_means():
    results = _results({"topic": -0.05, "ner": -5.0, "qtype": +1.0}, mtl_rate=45.0)
    rows = {row["key"]: row for row in common.evaluate_five_targets(results)}
    # The seeds spread by 0.1 per seed (std 0.1): -0.05 is within one std and inside the noise, -5 is neither.
    assert rows["five_topic"]["met"] and rows["five_topic"]["noise"] == "inside the noise"
    assert not rows["five_ner"]["met"] and rows["five_ner"]["noise"] == "outside the noise"
    assert rows["five_qtype"]["met"]
    assert rows["five_parameters"]["met"]  # 100 vs 480
    assert not rows["five_throughput"]["met"]  # 45 vs 50 examples/s = 0.9x
    assert common.five_summary(results)["throughput_ratio"] == pytest.approx(0.9)


def test_five_section_is_spliced_into_an_existing_page(tmp_path):
    results_dir = tmp_path / "results"
    results_dir.mkdir()
    (results_dir / common.QUALITY_FIVE_JSON).write_text(json.dumps(_results({"ner": -5.0})))
    page = tmp_path / "benchmarks.md"
    png = tmp_path / "benchmarks.png"
    page.write_text("# Benchmarks\n\n## Quality\n\nold quality\n\n## Speed\n\nold speed\n\n## Method notes\n\n- x\n")
    png.write_bytes(b"old plot")
    common.render_docs(results_dir, page, png)
    text = page.read_text()
    assert text.index("## Quality") < text.index(common.FIVE_HEADING) < text.index("## Speed")
    assert "old quality" in text and "old speed" in text and png.read_bytes() == b"old plot"
    assert "| CoNLL-2003 NER | **f1** |" in text and "**missed**" in text and "outside the noise" in text
    common.render_docs(results_dir, page, png)  # a rerun replaces the section, it does not add a second one
    assert page.read_text() == text


def _speed_five() -> dict:
    """A ``speed.py --five_training`` result: (a) at 40, (b) at 42 examples/s over three timed rounds."""
    machine = {"cpu": "test CPU", "cores": 2, "memory_gib": 8, "torch_threads": 2, "python": "3", "torch": "2",
               "transformers": "5", "datasets": "4", "accelerate": "1", "date": "today"}
    rates = {"median": 40.0, "min": 39.0, "max": 41.0, "rounds": [39.0, 40.0, 41.0]}
    return {"machine": machine, "quick": False, "total_seconds": 600.0,
            "config": {"rows_per_task": 160, "batch_size": 16, "learning_rate": 1e-4, "max_seq_length": 128,
                       "rounds": 3, "warmup_rounds": 1, "num_threads": 2},
            "rows": {t: 160 for t in SCORES},
            "contenders": {"mtl_trainer": {"examples_per_s": rates, "examples_per_round": 800, "steps_per_round": 50},
                           "single_trainers": {"examples_per_s": dict(rates, median=42.0), "examples_per_round": 800,
                                               "steps_per_round": 50}},
            "single_by_task": {t: rates for t in SCORES}, "ratio": 0.952,
            "per_round_ratios": [0.95, 0.96, 0.94], "first_per_round": ["single_trainers", "mtl_trainer",
                                                                        "single_trainers"],
            "mean_subtokens": {t: 20.0 for t in SCORES}}


def test_speed_five_subsection_is_spliced_into_the_speed_section(tmp_path):
    results_dir = tmp_path / "results"
    results_dir.mkdir()
    (results_dir / common.SPEED_FIVE_JSON).write_text(json.dumps(_speed_five()))
    page = tmp_path / "benchmarks.md"
    png = tmp_path / "benchmarks.png"
    page.write_text("# Benchmarks\n\n## Quality\n\nold quality\n\n## Speed\n\nintro\n\n### Training throughput\n\n"
                    "```bash\n# not a heading\n```\n\nold training\n\n### Inference\n\nold inference\n\n"
                    "## Method notes\n\n- x\n")
    png.write_bytes(b"old plot")
    common.render_docs(results_dir, page, png)
    text = page.read_text()
    assert (text.index("old training") < text.index(common.SPEED_FIVE_HEADING) < text.index("### Inference")
            < text.index("## Method notes"))
    assert "old quality" in text and "old inference" in text and png.read_bytes() == b"old plot"
    assert "| **40.0** [39.0-41.0] | 1 |" in text and "| **42.0** [39.0-41.0] | **0.952** |" in text
    assert "0.952x, **met**" in text and "0.960 (a first)" in text and "1 of 3 below 0.95x" in text
    common.render_docs(results_dir, page, png)  # a rerun replaces the subsection, it does not add a second one
    assert page.read_text() == text


def test_speed_five_subsection_brings_its_speed_section(tmp_path):
    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n\n## Quality\n\nold quality\n\n## Method notes\n\n- x\n")
    common.splice_speed_five_section(page, dict(_speed_five(), ratio=0.9))
    text = page.read_text()
    assert text.index("old quality") < text.index("## Speed\n\n" + common.SPEED_FIVE_HEADING) < text.index(
        "## Method notes")
    assert "0.900x, **missed**" in text


def test_training_loop_timer_restarts_with_each_train_call(monkeypatch):
    clock = iter([0.0, 1.0, 10.0, 12.0])  # epoch begin and last step end of two train() calls: 1 s, then 2 s
    monkeypatch.setattr(common.time, "perf_counter", lambda: next(clock))
    timer = common.TrainingLoopTimer()
    seconds = []
    for _ in range(2):  # speed.py calls train() on the same Trainer once per round
        timer.on_train_begin(None, None, None)
        timer.on_epoch_begin(None, None, None)
        timer.on_step_end(None, None, None)
        timer.on_epoch_end(None, None, None)
        seconds.append(timer.seconds)
    assert seconds == [1.0, 2.0]
