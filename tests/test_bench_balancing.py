"""bench/quality.py's balancing suite pieces that need no training: its docs section (the tables of final and
per-task-best scores against the single-task baselines, the verdict counted outside the seed noise only) rendered
from results the test writes, and spliced into a page without touching the rest."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))  # as quality.py imports common: a sibling
import quality  # noqa: E402

MAIN = {"topic": ("accuracy", 80.0), "ner": ("f1", 40.0), "vitaminc": ("accuracy", 50.0), "vader": ("pearson", 0.7),
        "qtype": ("micro_f1", 10.0)}


def _scores(shift: dict[str, float], seed: int) -> dict[str, dict[str, float]]:
    return {task: {metric: value + shift.get(task, 0.0) + (0.01 if metric == "pearson" else 1.0) * seed}
            for task, (metric, value) in MAIN.items()}


def _balanced(shift: dict[str, float], best_shift: dict[str, float], seed: int) -> dict:
    """Final scores moved by ``shift``; the best states ``best_shift`` above them, plus half a point per seed."""
    best = _scores({t: shift.get(t, 0.0) + best_shift.get(t, 0.0) + (0.5 * seed if t in best_shift else 0.0)
                    for t in MAIN}, seed)
    return {"scores": _scores(shift, seed),
            "best": {t: {"scores": best[t], "step": 100 + seed, "format": "multitask", "dev_value": 0.5} for t in MAIN},
            "final_weights": {t: 1.0 + 0.1 * i for i, t in enumerate(MAIN)}, "train_steps": 375}


def _results() -> dict:
    runs = []
    for seed in (0, 1, 2):
        runs.append({"seed": seed, "order": ["static", "uncertainty", "dwa", "single"],
                     "static": _balanced({}, {"vitaminc": 2.0}, seed),
                     "uncertainty": _balanced({"ner": 5.0, "topic": -0.5}, {}, seed),
                     "dwa": _balanced({"qtype": -6.0}, {}, seed),
                     "single": {"scores": _scores({"ner": -10.0}, seed)}})
    config = dict(quality.HPARAMS, **quality.FIVE_HPARAMS, num_train_epochs=3, max_train_samples=400, dev_rows=100,
                  max_test_samples=1000, seeds=[0, 1, 2], max_seq_length=64, evaluations_per_epoch=2)
    return {"suite": "balancing", "config": config, "runs": runs, "train_rows": {t: 400 for t in MAIN},
            "dev_rows": {t: 100 for t in MAIN}, "test_rows": {t: 1000 for t in MAIN}}


def test_the_section_reports_means_spreads_and_a_verdict_outside_the_noise() -> None:
    text = "\n".join(quality.render_balancing(_results()))
    assert text.startswith(quality.BALANCING_HEADING + "\n")
    # seeds add 0, 1, 2: mean + 1, std 1 (0.01 for pearson)
    assert "| CoNLL-2003 NER | f1 | 31.00 ± 1.00 | 41.00 ± 1.00 | 46.00 ± 1.00 | 41.00 ± 1.00 | 0.00 | 0.00 | 1.00 |" \
        in text
    assert "| VADER intensity | pearson | 0.710 ± 0.010 | 0.710 ± 0.010 | 0.710 ± 0.010 | 0.710 ± 0.010 |" in text
    # best - final: 2, 2.5, 3 in the three seeds; the paired test sees that the best state is above in every seed
    assert "| VitaminC pairs | static | 51.00 ± 1.00 | 53.50 ± 1.50 | +2.50 | 0.01 | 100, 101, 102 |" in text
    assert "| VitaminC pairs | uncertainty | 51.00 ± 1.00 | 51.00 ± 1.00 | +0.00 | n/a |" in text
    assert "| uncertainty | 1.00 | 1.10 | 1.20 | 1.30 | 1.40 |" in text
    assert "- **`uncertainty`**: better on CoNLL-2003 NER (+5, p = 0.00); worse on no task" in text
    assert "- **`dwa`**: better on no task; worse on Question typing (-6, p = 0.00)" in text
    assert "- **Per-task best states** beat the final model outside the seed noise on VitaminC pairs with static." \
        in text
    assert "a learned balancing wins on some task" in text
    assert "the first 400 train rows of every task, 3 epochs" in text and "next 100 train rows" in text


def test_the_section_is_spliced_before_the_speed_section(tmp_path: Path, monkeypatch) -> None:
    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n\n## Quality\n\nold quality\n\n## Speed\n\nold speed\n\n## Method notes\n\n- x\n")
    monkeypatch.setattr(quality, "DOCS_MD", page)
    quality.splice_balancing_section(_results())
    text = page.read_text()
    assert text.index("old quality") < text.index(quality.BALANCING_HEADING) < text.index("## Speed")
    quality.splice_balancing_section(_results())  # a rerun replaces the section
    assert page.read_text() == text and text.count(quality.BALANCING_HEADING) == 1
