"""Model card and training curves for a trained multi-task model.

The card is what a Hub visitor reads first: base model, every task with its label set and scores, the
hyper-parameters, and how to load and run the model. It is built from the trainer's state, so it is the same whether
written at the end of `run_mtl.py` or by `Trainer.push_to_hub`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .configuration_multitask import TaskSpec

MAIN_METRIC = {"classification": "accuracy", "ner": "f1"}
NOT_SCORES = ("_runtime", "_per_second", "_samples", "_preparation_time")
HYPERPARAMETERS = (
    "learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "num_train_epochs", "max_steps",
    "warmup_steps", "weight_decay", "lr_scheduler_type", "seed", "sampling_strategy", "sampling_temperature",
    "task_weights", "bf16", "fp16",
)


@dataclass
class MultiTaskModelCardData:
    """Everything the card says; `render()` turns it into a Hub README with YAML metadata."""

    model_name: str
    base_model: str | None
    tasks: list[TaskSpec]
    metrics: dict[str, float] = field(default_factory=dict)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    world_size: int = 1
    has_training_curves: bool = False

    @property
    def base_model_is_on_hub(self) -> bool:
        """A local folder is not a Hub id: it must not go into the `base_model` metadata."""
        return bool(self.base_model) and not Path(self.base_model).exists() and not self.base_model.startswith("/")

    def _metadata(self) -> str:
        pipeline_tags = sorted({"text-classification" if t.type == "classification" else "token-classification"
                                for t in self.tasks})
        lines = ["---", "library_name: transformers", "tags:", "- mtl_hf", "- multi-task"]
        lines += [f"- {tag}" for tag in pipeline_tags]
        if self.base_model_is_on_hub:
            lines += [f"base_model: {self.base_model}"]
        lines += ["---"]
        return "\n".join(lines)

    def _task_table(self) -> str:
        rows = ["| task | type | labels | weight |", "|---|---|---|---|"]
        for task in self.tasks:
            labels = ", ".join(f"`{label}`" for label in task.labels or [])
            rows.append(f"| {task.name} | {task.type} | {labels} | {task.weight:g} |")
        return "\n".join(rows)

    def _metrics_table(self) -> str:
        rows = ["| task | split | metric | value |", "|---|---|---|---|"]
        for key, value in sorted(self.metrics.items()):
            for task in self.tasks:
                for split in ("eval", "test"):
                    prefix = f"{split}_{task.name}_"
                    if key.startswith(prefix) and not key.endswith(NOT_SCORES):
                        rows.append(f"| {task.name} | {split} | {key[len(prefix):]} | {value:.4f} |")
        for split in ("eval", "test"):
            if f"{split}_combined_score" in self.metrics:
                rows.append(f"| all | {split} | combined_score | {self.metrics[f'{split}_combined_score']:.4f} |")
        return "\n".join(rows) if len(rows) > 2 else "No evaluation was run."

    def render(self) -> str:
        if self.base_model_is_on_hub:
            base = f"[{self.base_model}](https://huggingface.co/{self.base_model})"
        else:
            base = f"the local checkpoint `{Path(self.base_model).name}`" if self.base_model else "a transformer"
        main_metrics = ", ".join(f"{t.name}: {MAIN_METRIC[t.type]}" for t in self.tasks)
        hyper = "\n".join(f"- {key}: {value}" for key, value in self.hyperparameters.items())
        curves = "\n![Training curves](training_curves.png)\n" if self.has_training_curves else ""
        first = self.tasks[0].name
        return f"""{self._metadata()}

# {self.model_name}

A multi-task model trained with mtl_hf: one shared encoder, fine-tuned from {base}, with one head
per task. A single encoder pass serves every task.

## Tasks

{self._task_table()}

## Results

Main metric per task ({main_metrics}; NER is scored with seqeval on words, strict IOB2, entity level).
`combined_score` is the mean of the main metrics.

{self._metrics_table()}
{curves}
## Usage

```python
import mtl_hf  # registers the architecture; without it use trust_remote_code=True
from transformers import AutoModel, AutoTokenizer
from mtl_hf import MultiTaskPipeline

model = AutoModel.from_pretrained("{self.model_name}")          # or trust_remote_code=True without mtl_hf
tokenizer = AutoTokenizer.from_pretrained("{self.model_name}")
inputs = tokenizer(["An example sentence."], return_tensors="pt")
logits = model(**inputs, task="{first}").logits

pipe = MultiTaskPipeline.from_pretrained("{self.model_name}")
print(pipe("An example sentence."))                              # every task from one encoder pass
```

## Training

Trained with `MultiTaskTrainer` (a `transformers.Trainer`) on {self.world_size} process(es).

{hyper}
"""


def build_model_card(trainer: Any, model_name: str | None = None, base_model: str | None = None) -> MultiTaskModelCardData:
    """Collect the card's data from a `MultiTaskTrainer`: the tasks from the model config, the latest metric of every
    key from the log history and the `*_results.json` files in the output folder, the hyper-parameters from args."""
    output_dir = Path(trainer.args.output_dir)
    metrics: dict[str, float] = {}
    for entry in trainer.state.log_history:
        metrics.update({k: v for k, v in entry.items() if k.startswith(("eval_", "test_")) and isinstance(v, float)})
    for name in ("eval_results.json", "predict_results.json"):
        if (output_dir / name).exists():
            metrics.update(json.loads((output_dir / name).read_text()))
    metrics = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    model = trainer.accelerator.unwrap_model(trainer.model)
    args = trainer.args
    hyper = {key: getattr(args, key) for key in HYPERPARAMETERS if getattr(args, key, None) not in (None, False, -1)}
    hyper = {key: getattr(value, "value", value) for key, value in hyper.items()}  # enums by their value
    return MultiTaskModelCardData(
        model_name=model_name or output_dir.name,
        base_model=base_model or getattr(model.config.encoder, "_name_or_path", None) or None,
        tasks=model.config.task_specs,
        metrics=metrics,
        hyperparameters=hyper,
        world_size=args.world_size,
        has_training_curves=(output_dir / "training_curves.png").exists(),
    )


def plot_training_curves(log_history: list[dict[str, Any]], tasks: list[TaskSpec], path: str | Path) -> bool:
    """Per-task training loss (left) and each task's main eval metric plus the combined score (right) over steps.

    Returns False (and writes nothing) when the history holds neither per-task losses nor evaluations.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(key: str) -> list[tuple[int, float]]:
        return [(entry["step"], entry[key]) for entry in log_history if key in entry]

    losses = {task.name: series(f"loss_{task.name}") for task in tasks}
    eval_keys = [f"eval_{task.name}_{MAIN_METRIC[task.type]}" for task in tasks] + ["eval_combined_score"]
    scores = {key.removeprefix("eval_"): series(key) for key in eval_keys}
    if not any(losses.values()) and not any(scores.values()):
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for panel, curves, style, title, ylabel in (
        (left, {f"{name} loss": points for name, points in losses.items()}, "-", "Training loss per task", "loss"),
        (right, scores, "o-", "Evaluation (main metric per task)", "score"),
    ):
        for label, points in curves.items():
            if points:
                panel.plot(*zip(*points), style, label=label)
        panel.set(xlabel="step", ylabel=ylabel, title=title)
        if any(curves.values()):
            panel.legend()
        else:
            panel.text(0.5, 0.5, "nothing logged (see logging_steps / eval_strategy)", ha="center",
                       transform=panel.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
