"""Model card and training curves for a trained multi-task model.

The card is what a Hub visitor reads first: base model, every task with its label set, data and scores, the
hyper-parameters, and how to load and run the model. It is built from the trainer's state, so it is the same whether
written at the end of `run_mtl.py` or by `Trainer.push_to_hub`.

Its code snippets run as pasted, without a prompt: the first needs transformers alone (`trust_remote_code=True` for
the tokenizer too, because `AutoTokenizer` reads the model's config.json, whose `auto_map` points at the stored code),
the second needs mtl_hf.

The metadata is a `huggingface_hub.ModelCardData`: tags, license, language, base model, Hub datasets, and every
task's scores as `EvalResult`s, which the Hub renders in the model index (`ModelCard.load(path).data.eval_results`
reads them back).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.repocard_data import eval_results_to_model_index

from .configuration_multitask import TaskSpec
from .metrics import main_metric
from .task_selection import read_best
from .task_types import get_task_type

NOT_SCORES = ("_runtime", "_per_second", "_samples", "_preparation_time")
HYPERPARAMETERS = (
    "learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps", "num_train_epochs", "max_steps",
    "warmup_steps", "weight_decay", "lr_scheduler_type", "seed", "sampling_strategy", "sampling_temperature",
    "task_weights", "loss_balancing", "dwa_temperature", "loss_balancing_learning_rate", "task_early_stopping_patience",
    "bf16", "fp16",
)
SPLIT_FILES = (("train_file", "train"), ("validation_file", "validation"), ("test_file", "test"))
RESULT_SPLITS = (("eval", "validation"), ("test", "test"))  # metric key prefix -> the split the model index names
NOT_RESULTS = ("loss",)  # in the card's table, not in the model index: a loss is not a score to compare models by
METADATA_ORDER = ["library_name", "tags", "license", "language", "base_model", "datasets"]  # then the model index
EXAMPLE_TEXT = "Maria Keller joined Northwind Systems in Lyon."
EXAMPLE_PAIR = ("Maria Keller joined Northwind Systems in Lyon.", "Maria Keller works in France.")
EXAMPLE_QUESTION = {"question": "Where did Maria Keller join Northwind Systems?", "context": EXAMPLE_TEXT}


def scoring(spec: TaskSpec) -> str:
    """What a task's main metric measures, in words (as its type says)."""
    return get_task_type(spec).scoring(spec)


def is_hub_dataset(spec: TaskSpec) -> bool:
    """`dataset_name` names a Hub dataset, not a local folder (which the task file resolved to an existing path)."""
    return bool(spec.dataset_name) and not Path(spec.dataset_name).exists()


def describe_data(spec: TaskSpec) -> str | None:
    """One line of Markdown naming where a task's data came from (file names with their folder, not full local
    paths, which mean nothing to a reader elsewhere); None for a spec that names no data."""
    if spec.dataset_name:
        name = spec.dataset_name
        where = (f"the Hub dataset [{name}](https://huggingface.co/datasets/{name})" if is_hub_dataset(spec)
                 else f"the dataset folder `{Path(name).name}`")
        return where + (f" (configuration `{spec.dataset_config_name}`)" if spec.dataset_config_name else "")
    files = [f"`{Path(path).parent.name}/{Path(path).name}` ({split})"
             for attribute, split in SPLIT_FILES if (path := getattr(spec, attribute))]
    return "files " + ", ".join(files) if files else None


class MultiTaskCardMetadata(ModelCardData):
    """`ModelCardData` whose model index keeps each task's results apart. The library groups results by task type,
    dataset, configuration and split only, so two tasks of one type on one dataset (the NER and the POS tags of
    conll2003) would be listed as one, with every metric under the first task's name. Any `ModelCard` reads the
    index back (`data.eval_results`, one per task, split and metric)."""

    def _to_dict(self, data_dict: dict[str, Any]) -> None:
        super()._to_dict(data_dict)
        if self.eval_results:
            by_task: dict[str | None, list[EvalResult]] = {}
            for result in self.eval_results:
                by_task.setdefault(result.task_name, []).append(result)
            data_dict["model-index"] = [{"name": self.model_name, "results": [
                entry for results in by_task.values()
                for entry in eval_results_to_model_index(self.model_name, results)[0]["results"]]}]


class MultiTaskModelCard(ModelCard):
    """A `ModelCard` that writes its metadata back with each task's results apart (see `MultiTaskCardMetadata`)."""

    card_data_class = MultiTaskCardMetadata


@dataclass
class MultiTaskModelCardData:
    """Everything the card says; `render()` turns it into a Hub README with YAML metadata (`card_data()`), and
    `to_model_card()` into a `huggingface_hub.ModelCard`.

    `title` heads the card; `model_id` is what its snippets load (the Hub id, or the local folder's absolute path, so
    that they run as pasted on the machine that trained the model).
    """

    title: str
    model_id: str
    base_model: str | None
    tasks: list[TaskSpec]
    task_data: dict[str, TaskSpec] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    world_size: int = 1
    has_training_curves: bool = False
    license: str | None = None
    language: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    best_per_task: dict[str, dict[str, Any]] = field(default_factory=dict)
    early_stopped: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def base_model_is_on_hub(self) -> bool:
        """A local folder is not a Hub id: it must not go into the `base_model` metadata."""
        return bool(self.base_model) and not Path(self.base_model).exists() and not self.base_model.startswith("/")

    def _dataset_of(self, task: TaskSpec) -> tuple[str, str | None]:
        """The dataset a task's scores are reported on, for the model index: the Hub id and configuration, else (local
        files or folder, or data the card was not told) the task's name, as the index needs some name."""
        spec = self.task_data.get(task.name)
        if spec is not None and is_hub_dataset(spec):
            return spec.dataset_name, spec.dataset_config_name
        return task.name, None

    def eval_results(self) -> list[EvalResult]:
        """Every task's scores as the Hub's model index reports them: per task, split (`validation`, `test`) and
        metric, the main metric first; not the losses, the combined score (no single task or dataset) or a score
        that is not a finite number (YAML's `.nan`, which the Hub rejects)."""
        results = []
        for task in self.tasks:
            dataset, config = self._dataset_of(task)
            for split, split_name in RESULT_SPLITS:
                results += [EvalResult(task_type=get_task_type(task).pipeline_tag, task_name=task.name,
                                       dataset_type=dataset, dataset_name=dataset, dataset_config=config,
                                       dataset_split=split_name, metric_type=name, metric_value=float(value))
                            for name, value in self._scores(task, split)
                            if name not in NOT_RESULTS and math.isfinite(value)]
        return results

    def card_data(self) -> MultiTaskCardMetadata:
        """The card's metadata: library, tags (mtl_hf, multi-task, each task type's pipeline tag, then those given),
        license, language, base model (a Hub id only), the Hub datasets, and the model index of `eval_results()`."""
        pipeline_tags = sorted({get_task_type(task).pipeline_tag for task in self.tasks})
        hub_datasets = [*(spec.dataset_name for spec in self.task_data.values() if is_hub_dataset(spec)),
                        *self.datasets]
        results = self.eval_results()
        return MultiTaskCardMetadata(
            library_name="transformers",
            tags=list(dict.fromkeys(["mtl_hf", "multi-task", *pipeline_tags, *self.tags])),
            license=self.license or None,
            language=self.language or None,
            base_model=self.base_model if self.base_model_is_on_hub else None,
            datasets=list(dict.fromkeys(hub_datasets)) or None,
            model_name=self.title if results else None,  # the model index's name; without results, no key
            eval_results=results or None,
        )

    def _metadata(self) -> str:
        return f"---\n{self.card_data().to_yaml(original_order=METADATA_ORDER)}\n---"

    def _task_table(self) -> str:
        rows = ["| task | type | outputs | weight |", "|---|---|---|---|"]
        for task in self.tasks:
            kind = f"{task.type} (text pairs)" if task.takes_pairs else task.type
            rows.append(f"| {task.name} | {kind} | {get_task_type(task).card_labels(task)} | {task.weight:g} |")
        return "\n".join(rows)

    def _data_section(self) -> str:
        lines = []
        for task in self.tasks:
            data = describe_data(self.task_data[task.name]) if task.name in self.task_data else None
            if data is None:
                continue
            count = self.metrics.get(f"train_{task.name}_samples")
            examples = f"; {int(count)} training examples" if count is not None else ""
            lines.append(f"- **{task.name}**: {data}{examples}")
        return "\n## Training data\n\n" + "\n".join(lines) + "\n" if lines else ""

    def _task_of(self, key: str, split: str) -> TaskSpec | None:
        """The task a metric key belongs to; the longest name wins, so `ner_fine` is not read as `ner` + `fine_...`."""
        matches = [task for task in self.tasks if key.startswith(f"{split}_{task.name}_")]
        return max(matches, key=lambda task: len(task.name), default=None)

    def _scores(self, task: TaskSpec, split: str) -> list[tuple[str, float]]:
        """A task's metrics of one split (`eval`, `test`) by name: the main metric first, then alphabetically."""
        prefix, main = f"{split}_{task.name}_", main_metric(task)
        names = [key[len(prefix):] for key in self.metrics
                 if self._task_of(key, split) is task and not key.endswith(NOT_SCORES)]
        return [(name, self.metrics[prefix + name]) for name in sorted(names, key=lambda name: (name != main, name))]

    def _metrics_table(self) -> str:
        """Per task and split: the main metric first, then the others alphabetically; then the combined score."""
        rows = ["| task | split | metric | value |", "|---|---|---|---|"]
        for task in self.tasks:
            for split, _ in RESULT_SPLITS:
                rows += [f"| {task.name} | {split} | {name} | {value:.4f} |"
                         for name, value in self._scores(task, split)]
        for split, _ in RESULT_SPLITS:
            if f"{split}_combined_score" in self.metrics:
                rows.append(f"| all | {split} | combined_score | {self.metrics[f'{split}_combined_score']:.4f} |")
        return "\n".join(rows) if len(rows) > 2 else "No evaluation was run."

    def _best_table(self) -> str:
        """Each task's best evaluation (``--save_best_per_task``) next to the final model's value."""
        if not self.best_per_task:
            return ""
        rows = ["## Best state per task", "",
                "Each task's state at its best evaluation, kept in `best/<task>/` (`--save_best_per_task`): a plain "
                "transformers model of that task where it exports exactly, else the multi-task model at that step.",
                "", "| task | metric | best | at step | final model | saved as |", "|---|---|---|---|---|---|"]
        for task in self.tasks:
            best = self.best_per_task.get(task.name)
            if best is None:
                continue
            final = self.metrics.get(f"eval_{task.name}_{best['metric']}")
            kind = "transformers model" if best["format"] == "transformers" else "multi-task model"
            rows.append(f"| {task.name} | {best['metric']} | {best['value']:.4f} | {best['step']} | "
                        f"{'n/a' if final is None else f'{final:.4f}'} | `best/{task.name}` ({kind}) |")
        return "\n".join(rows) + "\n"

    def _early_stopping_table(self) -> str:
        """The tasks that left training early (``--task_early_stopping_patience``), with where and why."""
        if not self.early_stopped:
            return ""
        patience = self.hyperparameters.get("task_early_stopping_patience")
        rows = ["## Tasks stopped early", "",
                f"These tasks stopped being trained when their main metric had not improved for {patience} "
                "evaluation(s) (`--task_early_stopping_patience`); the other tasks went on. Their heads stopped "
                "training then (but for batches the data loader had already drawn); the shared encoder trained on.",
                "",
                "| task | stopped at step | epoch | metric | best | best at step |", "|---|---|---|---|---|---|"]
        for task in self.tasks:
            stop = self.early_stopped.get(task.name)
            if stop is None:
                continue
            best = "n/a" if stop.get("best_value") is None else f"{stop['best_value']:.4f}"
            rows.append(f"| {task.name} | {stop['step']} | {stop['epoch']:.2f} | {stop['metric']} | {best} | "
                        f"{stop.get('best_step')} |")
        return "\n".join(rows) + "\n"

    def _usage(self) -> str:
        kinds = {task.name: get_task_type(task).pipeline_input(task) for task in self.tasks}
        single, pairs, questions = ([task for task in self.tasks if kinds[task.name] == kind]
                                    for kind in ("text", "text_pair", "question"))
        blocks = []
        if single:
            blocks.append(f"""words = {json.dumps(EXAMPLE_TEXT.replace(".", " ."))}.split()  # one sentence, split into words as in training
inputs = tokenizer([words], is_split_into_words=True, truncation=True, max_length=model.config.max_seq_length,
                   return_tensors="pt")  # cut where training cut
with torch.no_grad():
    logits = model.forward_tasks(**inputs, tasks={json.dumps([task.name for task in single])})  # one encoder pass
first_piece = {{}}  # word -> position of its first sub-token, which carries the word's tag
for position, word in enumerate(inputs.word_ids(0)):
    if word is not None:
        first_piece.setdefault(word, position)
{self._snippet_lines(single)}""")
        if pairs:
            first, second = (text.replace(".", " .").split() for text in EXAMPLE_PAIR)
            blocks.append(f"""words, pair_words = {json.dumps(first)}, {json.dumps(second)}  # a text pair, as words
inputs = tokenizer([words], [pair_words], is_split_into_words=True, truncation=True,
                   max_length=model.config.max_seq_length, return_tensors="pt")
with torch.no_grad():
    logits = model.forward_tasks(**inputs, tasks={json.dumps([task.name for task in pairs])})
{self._snippet_lines(pairs)}""")
        if questions:
            blocks.append(f"""question, context = {json.dumps(EXAMPLE_QUESTION["question"])}, {json.dumps(EXAMPLE_QUESTION["context"])}
inputs = tokenizer(question, context, truncation="only_second", max_length=model.config.max_seq_length,
                   return_offsets_mapping=True, return_tensors="pt")  # the raw texts, as extractive QA trains
offsets = inputs.pop("offset_mapping")[0].tolist()  # each token's characters in its text
inside = torch.tensor([sequence == 1 for sequence in inputs.sequence_ids(0)])  # the context's tokens
allowed = (inside[:, None] & inside[None, :]).triu()  # answer spans: start <= end, both in the context
with torch.no_grad():
    logits = model.forward_tasks(**inputs, tasks={json.dumps([task.name for task in questions])})
{self._snippet_lines(questions)}""")
        calls = ([f"print(pipe({json.dumps(EXAMPLE_TEXT)}))"] if single else []) + (
            [f"print(pipe({json.dumps(dict(zip(('text', 'text_pair'), EXAMPLE_PAIR)))}))"] if pairs else []) + (
            [f"print(pipe({json.dumps(EXAMPLE_QUESTION)}))"] if questions else [])
        code = "\n".join(blocks)
        return f"""## Usage

With transformers alone (the model's code is stored next to its weights, hence `trust_remote_code=True`, which the
tokenizer needs as well because it reads the model's config); this works where mtl_hf is installed too:

```python
import torch
from transformers import AutoModel, AutoTokenizer

model_id = {json.dumps(self.model_id)}
model = AutoModel.from_pretrained(model_id, trust_remote_code=True).eval()
tokenizer = AutoTokenizer.from_pretrained(model_id, trust_remote_code=True)
{code}
```

With mtl_hf installed, `MultiTaskPipeline` splits raw text into words, runs every task (a text pair
`{{"text": ..., "text_pair": ...}}` for the tasks that read pairs, a question `{{"question": ..., "context": ...}}` for
question answering, over every window of a long context) and groups NER tags into entity spans with character
offsets; `import mtl_hf` also lets `AutoModel` load the model without remote code:

```python
from mtl_hf import MultiTaskPipeline

pipe = MultiTaskPipeline.from_pretrained({json.dumps(self.model_id)})
{chr(10).join(calls)}
```
"""

    @staticmethod
    def _snippet_lines(tasks: list[TaskSpec]) -> str:
        """Per task, the line that reads its prediction for the example from `logits` (see `TaskType.snippet`)."""
        lines = []
        for task in tasks:
            name = json.dumps(task.name)
            lines.append(f"task, out = model.config.get_task({name}), logits[{name}][0]")
            lines.append(f"print(task.name, {get_task_type(task).snippet(task)})")
        return "\n".join(lines)

    @staticmethod
    def _main_metric_words(task: TaskSpec) -> str:
        """What the main metric measures; one the task file chose is named as such, next to the type's default."""
        if task.main_metric is None:
            return scoring(task)
        default = dataclasses.replace(task, main_metric=None)
        return f"chosen in the task file instead of the type's `{main_metric(default)}` ({scoring(default)})"

    def to_model_card(self) -> MultiTaskModelCard:
        """The card as a `huggingface_hub.ModelCard` (parsing it checks the metadata); `.save(path)` writes it."""
        return MultiTaskModelCard(self.render())

    def render(self) -> str:
        """The card's text: the YAML metadata of `card_data()`, then the Markdown body."""
        if self.base_model_is_on_hub:
            base = f"[{self.base_model}](https://huggingface.co/{self.base_model})"
        else:
            base = f"the local checkpoint `{Path(self.base_model).name}`" if self.base_model else "a transformer"
        main_metrics = "\n".join(f"- {t.name}: `{main_metric(t)}`, {self._main_metric_words(t)}" for t in self.tasks)
        hyper = "\n".join(f"- {key}: {value}" for key, value in self.hyperparameters.items())
        curves = "\n![Training curves](training_curves.png)\n" if self.has_training_curves else ""
        return f"""{self._metadata()}

# {self.title}

A multi-task model trained with mtl_hf: one shared encoder, fine-tuned from {base}, with one head
per task. A single encoder pass serves every task.

## Tasks

{self._task_table()}
{self._data_section()}
## Results

Main metric per task (the first row of each task and split below):

{main_metrics}

`combined_score` is the mean of the main metrics.

{self._metrics_table()}
{self._best_table()}{self._early_stopping_table()}{curves}
{self._usage()}
## Training

Trained with `MultiTaskTrainer` (a `transformers.Trainer`) on {self.world_size} process(es).

{hyper}
"""


def build_model_card(
    trainer: Any,
    model_name: str | None = None,
    base_model: str | None = None,
    task_data: list[TaskSpec] | None = None,
    license: str | None = None,
    language: str | list[str] | None = None,
    tags: str | list[str] | None = None,
    datasets: str | list[str] | None = None,
) -> MultiTaskModelCardData:
    """Collect the card's data from a `MultiTaskTrainer`: the tasks (labels, weights trained with) from the model
    config, the latest metric of every key from the log history and the `*_results.json` files in the output folder,
    the hyper-parameters from args. `task_data`: the task specs as read from the task file, whose data fields (files,
    dataset name) the model config does not keep. `license`, `language` and `tags` go into the card's metadata (as
    `Trainer.push_to_hub` passes them), and so do `datasets` (Hub dataset ids, beside those of tasks loaded with
    `dataset_name`); `run_mtl.py` takes all four from the task file's `card` section.

    The title is `model_name`, else the Hub id, else the task names (an output folder's name such as `out` says
    nothing); the snippets load the Hub id, else the output folder's absolute path.
    """
    output_dir = Path(trainer.args.output_dir)
    metrics: dict[str, float] = {}
    for entry in trainer.state.log_history:
        metrics.update({k: v for k, v in entry.items() if k.startswith(("eval_", "test_")) and isinstance(v, float)})
    for name in ("train_results.json", "eval_results.json", "predict_results.json"):
        if (output_dir / name).exists():
            metrics.update(json.loads((output_dir / name).read_text()))
    metrics = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    model = trainer.accelerator.unwrap_model(trainer.model)
    args = trainer.args
    hyper = {key: getattr(args, key) for key in HYPERPARAMETERS if getattr(args, key, None) not in (None, False, -1)}
    hyper = {key: getattr(value, "value", value) for key, value in hyper.items()}  # enums by their value
    tasks = model.config.task_specs
    hub_id = getattr(trainer, "hub_model_id", None)
    return MultiTaskModelCardData(
        title=model_name or hub_id or f"mtl_hf multi-task model: {', '.join(task.name for task in tasks)}",
        model_id=hub_id or str(output_dir.resolve()),
        base_model=base_model or getattr(model.config.encoder, "_name_or_path", None) or None,
        tasks=tasks,
        task_data={spec.name: spec for spec in task_data or []},
        metrics=metrics,
        hyperparameters=hyper,
        world_size=args.world_size,
        has_training_curves=(output_dir / "training_curves.png").exists(),
        license=license,
        language=[language] if isinstance(language, str) else list(language or []),
        tags=[tags] if isinstance(tags, str) else list(tags or []),
        datasets=[datasets] if isinstance(datasets, str) else list(datasets or []),
        best_per_task=read_best(output_dir) if getattr(args, "save_best_per_task", False) else {},
        early_stopped=dict(getattr(trainer, "task_stops", {})),
    )


def training_curves_figure(log_history: list[dict[str, Any]], tasks: list[TaskSpec]) -> Any:
    """The figure of `plot_training_curves`, or None when the history holds neither per-task losses nor evaluations.

    Every point is drawn with a marker, so a series of one point (one log in the whole run) is visible too.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(key: str) -> list[tuple[int, float]]:
        return [(entry["step"], entry[key]) for entry in log_history if key in entry]

    losses = {f"{task.name} loss": series(f"loss_{task.name}") for task in tasks}
    eval_keys = [f"eval_{task.name}_{main_metric(task)}" for task in tasks] + ["eval_combined_score"]
    scores = {key.removeprefix("eval_"): series(key) for key in eval_keys}
    if not any(losses.values()) and not any(scores.values()):
        return None
    weights = {f"{task.name} weight": series(f"weight_{task.name}") for task in tasks}
    # The effective loss weights get a panel where they changed (--loss_balancing uncertainty or dwa); static
    # weights are the task weights, which the card lists.
    changing = any(len({value for _, value in points}) > 1 for points in weights.values())
    panels = [(losses, "Training loss per task", "loss", "lower --logging_steps"),
              (scores, "Evaluation (main metric per task)", "score", "evaluate more often: --eval_strategy")]
    if changing:
        panels.insert(1, (weights, "Effective loss weight per task", "weight", "lower --logging_steps"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4))
    for panel, (curves, title, ylabel, hint) in zip(axes, panels):
        for label, points in curves.items():
            if points:
                panel.plot(*zip(*points), "o-", markersize=4, label=label)
        most = max(len(points) for points in curves.values())
        if most == 1:
            title += f"\n(one point per series: {hint} for a curve)"
        panel.set(xlabel="step", ylabel=ylabel, title=title)
        if most:
            panel.legend()
        else:
            panel.text(0.5, 0.5, f"nothing logged ({hint})", ha="center", transform=panel.transAxes)
    fig.tight_layout()
    return fig


def plot_training_curves(log_history: list[dict[str, Any]], tasks: list[TaskSpec], path: str | Path) -> bool:
    """Per-task training loss (left), each task's effective loss weight where it changed (middle: `--loss_balancing
    uncertainty` or `dwa`) and each task's main eval metric plus the combined score (right) over steps, saved to
    `path`. Returns False (and writes nothing) when the history holds neither losses nor evaluations."""
    import matplotlib.pyplot as plt

    fig = training_curves_figure(log_history, tasks)
    if fig is None:
        return False
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
