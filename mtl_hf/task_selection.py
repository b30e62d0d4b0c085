"""Per-task model selection (``--save_best_per_task``): every task's best moment, kept as it happened.

Tasks peak at different steps: a small task may overfit while a large one still learns, so the final model (or the
one ``load_best_model_at_end`` picks by one aggregate metric) is not every task's best. With ``save_best_per_task``,
whenever an evaluation improves a task's main metric (the one ``combined_score`` averages; all are higher-is-better),
that task's state is written to ``output_dir/best/<task>/``:

* as a plain transformers checkpoint of that task alone, through :func:`mtl_hf.export.export_task`, where the task
  exports exactly (NER, extractive QA, and sequence tasks with ``classifier: native``): loadable without mtl_hf;
* otherwise as the whole multi-task model (``MultiTaskModel.from_pretrained`` loads it; its other heads are as they
  were at that step);

with ``best_metric.json``: ``{"task", "step", "metric", "value", "format"}``. The folders live outside the
``checkpoint-*`` folders, so ``save_total_limit`` never deletes them; the best values so far are kept in each
checkpoint, so that a resumed run only replaces a task's best state when it beats it. The main process writes.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from .configuration_multitask import TaskSpec
from .metrics import main_metric

logger = logging.getLogger(__name__)

BEST_DIR = "best"
BEST_METRIC_FILE = "best_metric.json"


class TaskSelection:
    """The best main-metric value, and its step, of every task so far, and how many evaluations since then have not
    beaten it (``--task_early_stopping_patience`` counts these)."""

    def __init__(self, specs: dict[str, TaskSpec]) -> None:
        self.specs = specs
        self.best: dict[str, dict[str, Any]] = {}  # task -> {"step", "metric", "value"}
        self.since_best: dict[str, int] = {}  # task -> evaluations without improvement since its best
        self.last_step: int | None = None  # the step of the last evaluation counted

    def improved(self, metrics: dict[str, float], step: int, prefix: str = "eval") -> list[str]:
        """Record an evaluation's metrics; the tasks whose main metric beat their best (the first one counts). An
        evaluation at a step already counted (a resumed run's ``eval_on_start`` at its checkpoint's step, or the
        final evaluation at the step of the last one) is not counted again."""
        if step == self.last_step:
            return []
        self.last_step = step
        better = []
        for name, spec in self.specs.items():
            metric = main_metric(spec)
            value = metrics.get(f"{prefix}_{name}_{metric}")
            if value is None:
                continue
            if name not in self.best or value > self.best[name]["value"]:
                self.best[name] = {"step": step, "metric": metric, "value": float(value)}
                self.since_best[name] = 0
                better.append(name)
            else:
                self.since_best[name] = self.since_best.get(name, 0) + 1
        return better

    def state(self) -> dict[str, Any]:
        return {"best": self.best, "since_best": self.since_best, "last_step": self.last_step}

    def load_state(self, state: dict[str, Any]) -> None:
        self.best = {name: dict(record) for name, record in state.get("best", {}).items() if name in self.specs}
        self.since_best = {name: int(n) for name, n in state.get("since_best", {}).items() if name in self.specs}
        self.last_step = state.get("last_step")


def save_best(model: Any, task: str, record: dict[str, Any], output_dir: Path, tokenizer: Any) -> str:
    """Write ``task``'s state to ``output_dir/best/<task>/`` (replacing what is there) with ``best_metric.json``;
    returns the format written: ``"transformers"`` (the task's plain model) or ``"multitask"``."""
    from .export import ExportError, _move_into_place, _sibling, export_task, exportable_spec

    folder = output_dir / BEST_DIR / task
    kind = "multitask"
    try:
        exportable_spec(model.config, task)  # refuses by design (a linear sequence head): the multi-task model
    except ExportError:
        exportable = False
    else:
        exportable = True
    if exportable and tokenizer is None:
        logger.warning("task %r: kept as the whole multi-task model: the trainer has no tokenizer to export it with",
                       task)
    elif exportable:
        try:
            export_task(model, task, folder, tokenizer=tokenizer, overwrite=True)
            kind = "transformers"
        except ExportError as error:
            logger.warning("task %r: kept as the whole multi-task model, since its export failed: %s", task, error)
    if kind == "multitask":  # staged and moved into place as the export is, so a failure keeps the earlier best
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = _sibling(folder, "best")
        try:
            model.save_pretrained(staging)
            if tokenizer is not None:
                tokenizer.save_pretrained(staging)
            _move_into_place(staging, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    (folder / BEST_METRIC_FILE).write_text(json.dumps({"task": task, **record, "format": kind}, indent=2) + "\n")
    logger.info("task %r: %s %.4f at step %d is its best so far; saved to %s", task, record["metric"],
                record["value"], record["step"], folder)
    return kind


def read_best(output_dir: Path) -> dict[str, dict[str, Any]]:
    """``{task: best_metric.json}`` of the per-task best states in ``output_dir`` (empty without any)."""
    root = output_dir / BEST_DIR
    if not root.is_dir():
        return {}
    found = {}
    for path in sorted(root.glob(f"*/{BEST_METRIC_FILE}")):
        found[path.parent.name] = json.loads(path.read_text())
    return found
