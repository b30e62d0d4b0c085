"""`MultiTaskTrainer`: Hugging Face `Trainer` with task-homogeneous batches, task-routed weighted losses and
per-task metrics.

Everything else (mixed precision, gradient accumulation, checkpoints and resume, logging integrations, DDP/FSDP/
DeepSpeed through `accelerate`) is Trainer's own; this class only overrides the hooks that must know about tasks.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader
from transformers import EvalPrediction, Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_utils import seed_worker

from .configuration_multitask import TaskSpec
from .data import MultiTaskDataCollator
from .metrics import ClassificationMetric, SeqevalMetric
from .model_card import MAIN_METRIC, build_model_card, plot_training_curves
from .modeling_multitask import cross_entropy_loss
from .sampler import MultiTaskBatchSampler, SamplingStrategy

logger = logging.getLogger(__name__)


@dataclass
class TaskLossNormalizer:
    """What `compute_loss` needs to normalise one accumulation window (the batches of one optimizer step).

    Each task's loss is summed over its items (examples, or labelled words for NER) and divided by that task's item
    count over the whole window and all processes, then weighted by the task's share of the window's batches. For a
    window of one task this is exactly the loss of one big batch, whatever the split into micro-batches and ranks.
    """

    items: dict[str, float]
    batches: dict[str, int]
    num_batches: int
    num_processes: int

    def scale(self, task: str) -> float:
        share = self.batches[task] / self.num_batches
        return share * self.num_processes / max(self.items[task], 1.0)


@dataclass
class MultiTaskPredictionOutput:
    """`predict` results: per task, predictions in label space (NER: one tag list per sentence, one tag per word)."""

    predictions: dict[str, list[Any]]
    metrics: dict[str, float] = field(default_factory=dict)


class _TaskLossTracker:
    """Running per-task mean of the training batch losses, since the last log and since the epoch began."""

    def __init__(self, task_names: list[str]) -> None:
        self.task_names = task_names
        self.since_log: torch.Tensor | None = None  # (2, n_tasks): summed batch losses, batch counts
        self.since_epoch: torch.Tensor | None = None

    def add(self, task: str, loss: torch.Tensor) -> None:
        if self.since_log is None:
            self.since_log = torch.zeros(2, len(self.task_names), device=loss.device, dtype=torch.float64)
            self.since_epoch = torch.zeros_like(self.since_log)
        column = self.task_names.index(task)
        for tally in (self.since_log, self.since_epoch):
            tally[0, column] += loss.detach().to(torch.float64)
            tally[1, column] += 1

    def pop(self, which: str, reduce: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, float]:
        """Means per task (summed over processes first, so every rank gets the same numbers); resets the tally."""
        tally = getattr(self, which)
        if tally is None:
            return {}
        total = reduce(tally.clone())
        tally.zero_()
        return {
            task: (total[0, i] / total[1, i]).item()
            for i, task in enumerate(self.task_names)
            if total[1, i] > 0
        }


class _MultiTaskCallback(TrainerCallback):
    """Keeps the sampler's epoch in step with the training loop and prints the per-task loss line at epoch end.

    Trainer forwards `set_epoch` to a custom batch sampler, but not through the wrappers accelerate adds on a resumed
    multi-process run; setting it here from the trainer state covers every path.
    """

    def __init__(self, trainer: "MultiTaskTrainer") -> None:
        self.trainer = trainer
        self.epoch = 0

    def on_epoch_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self.epoch = math.floor(state.epoch + 1e-6) if state.epoch else 0
        if self.trainer._train_batch_sampler is not None:
            self.trainer._train_batch_sampler.set_epoch(self.epoch)

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        losses = self.trainer._loss_tracker.pop("since_epoch", self.trainer._sum_over_processes)
        line = f"Epoch {self.epoch + 1}/{state.num_train_epochs} - " + ", ".join(
            f"{task} loss: {value:.4f}" for task, value in losses.items()
        )
        if state.is_world_process_zero:
            print(line, flush=True)
        logger.info(line)


def _argmax_logits(logits: torch.Tensor | tuple, labels: torch.Tensor) -> torch.Tensor:
    """Keep only predicted ids during evaluation: NER logits of a whole eval set would not fit in memory."""
    if isinstance(logits, tuple):
        logits = logits[0]
    return logits.argmax(dim=-1)


class MultiTaskTrainer(Trainer):
    """A `Trainer` over several tasks sharing one encoder.

    `train_dataset`, `eval_dataset` and `predict`'s dataset are dicts `{task_name: datasets.Dataset}` of the
    tokenized splits made by `mtl_hf.data` (columns `input_ids`, `attention_mask`, `labels`, `task`, and `word_ids`
    for NER). Training batches come from a `MultiTaskBatchSampler` (one task per batch, and the same task on every
    process at every step); evaluation runs per task and reports `eval_<task>_<metric>` plus `eval_combined_score`.

    `compute_metrics`, if given, is called as `compute_metrics(task_name, eval_prediction)` and its results are
    added to the built-in ones (accuracy/macro-F1 for classification, seqeval on words for NER).
    """

    # compute_loss normalises over the whole accumulation window itself (see TaskLossNormalizer).
    loss_is_scaled_for_ga = True

    def __init__(
        self,
        model: nn.Module | None = None,
        args: TrainingArguments | None = None,
        train_dataset: dict[str, Any] | None = None,
        eval_dataset: dict[str, Any] | None = None,
        data_collator: Callable | None = None,
        processing_class: Any = None,
        compute_metrics: Callable[[str, EvalPrediction], dict[str, float]] | None = None,
        **kwargs: Any,
    ) -> None:
        if model is None:
            raise ValueError("MultiTaskTrainer needs a model (a MultiTaskModel).")
        self.task_specs: dict[str, TaskSpec] = {spec.name: spec for spec in model.config.task_specs}
        for role, datasets_ in (("train_dataset", train_dataset), ("eval_dataset", eval_dataset)):
            self._check_task_dict(role, datasets_)
        if data_collator is None:
            if processing_class is None:
                raise ValueError("Pass `processing_class=tokenizer` (or a `data_collator`) so batches can be padded.")
            data_collator = MultiTaskDataCollator(processing_class)
        kwargs.setdefault("preprocess_logits_for_metrics", _argmax_logits)
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            **kwargs,
        )
        self.user_compute_metrics = compute_metrics
        # Set after Trainer's init: a non-None compute_metrics makes evaluation keep predictions and labels.
        self.compute_metrics = self._compute_task_metrics
        self.task_weights = {name: spec.weight for name, spec in self.task_specs.items()}
        for name, weight in (getattr(self.args, "task_weights", None) or {}).items():
            self._check_task_name("task_weights", name)
            self.task_weights[name] = weight
        self._current_task: str | None = None
        self._train_batch_sampler: MultiTaskBatchSampler | None = None
        self._loss_tracker = _TaskLossTracker(list(self.task_specs))
        self.add_callback(_MultiTaskCallback(self))

    # ---- inputs -------------------------------------------------------------------------------------------

    def _check_task_name(self, role: str, name: str) -> None:
        if name not in self.task_specs:
            raise ValueError(f"{role}: unknown task {name!r}; the model's tasks are {', '.join(self.task_specs)}")

    def _check_task_dict(self, role: str, datasets_: Any) -> None:
        if datasets_ is None:
            return
        if not isinstance(datasets_, dict):
            raise TypeError(f"{role} must be a dict {{task_name: dataset}}, got {type(datasets_).__name__}")
        for name, dataset in datasets_.items():
            self._check_task_name(role, name)
            if "task" in dataset.column_names and len(dataset) and dataset[0]["task"] != name:
                raise ValueError(f"{role}[{name!r}] holds rows of task {dataset[0]['task']!r}")

    def _with_task_column(self, name: str, dataset: Any) -> Any:
        """The collator reads each row's task; add the column to datasets that were made without it."""
        if "task" in dataset.column_names:
            return dataset
        return dataset.add_column("task", [name] * len(dataset))

    def get_train_dataloader(self) -> DataLoader:
        """Concatenate the task datasets and draw task-homogeneous batches from a `MultiTaskBatchSampler`."""
        if self.train_dataset is None:
            raise ValueError("MultiTaskTrainer: training requires a train_dataset.")
        datasets_ = {
            name: self._remove_unused_columns(self._with_task_column(name, ds), description="training")
            for name, ds in self.train_dataset.items()
        }
        lengths = None
        if getattr(self.args, "train_sampling_strategy", None) == "group_by_length":
            lengths = {name: [len(ids) for ids in ds["input_ids"]] for name, ds in datasets_.items()}
        sampler = MultiTaskBatchSampler(
            task_sizes={name: len(ds) for name, ds in datasets_.items()},
            batch_size=self._train_batch_size,
            strategy=getattr(self.args, "sampling_strategy", SamplingStrategy.PROPORTIONAL),
            temperature=getattr(self.args, "sampling_temperature", 1.0),
            seed=self.args.data_seed if self.args.data_seed is not None else self.args.seed,
            drop_last=self.args.dataloader_drop_last,
            num_replicas=self.args.world_size,
            lengths=lengths,
        )
        dataloader = DataLoader(
            ConcatDataset(list(datasets_.values())),
            batch_sampler=sampler,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
            persistent_workers=self.args.dataloader_persistent_workers and self.args.dataloader_num_workers > 0,
            prefetch_factor=self.args.dataloader_prefetch_factor,
            worker_init_fn=partial(
                seed_worker, num_workers=self.args.dataloader_num_workers, rank=self.args.process_index
            ),
        )
        # accelerate wraps the sampler in BatchSamplerShard, which hands batch i to rank i % world_size: the sampler
        # emits its batches in same-task groups of world_size, so all ranks train the same task at every step.
        dataloader = self.accelerator.prepare(dataloader)
        self._train_batch_sampler = sampler
        return dataloader

    # ---- loss ---------------------------------------------------------------------------------------------

    def get_batch_samples(
        self, epoch_iterator: Iterator, num_batches: int, device: torch.device
    ) -> tuple[list[dict[str, Any]], TaskLossNormalizer]:
        """Fetch one accumulation window and count, per task, its batches and labelled items on all processes."""
        batch_samples: list[dict[str, Any]] = []
        for _ in range(num_batches):
            try:
                batch_samples.append(next(epoch_iterator))
            except StopIteration:
                break
        names = list(self.task_specs)
        items = torch.zeros(len(names), dtype=torch.float64, device=device)
        batches = dict.fromkeys(names, 0)
        for batch in batch_samples:
            items[names.index(batch["task"])] += (batch["labels"] != -100).sum().item()
            batches[batch["task"]] += 1
        items = self._sum_over_processes(items)
        normalizer = TaskLossNormalizer(
            items=dict(zip(names, items.tolist())),
            batches=batches,
            num_batches=max(len(batch_samples), 1),
            num_processes=self.accelerator.num_processes,
        )
        return batch_samples, normalizer

    def _sum_over_processes(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.accelerator.num_processes == 1:
            return tensor
        return self.accelerator.reduce(tensor.to(self.accelerator.device), reduction="sum")

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: TaskLossNormalizer | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """Route the batch to its task's head. In training, the loss is the task-weighted sum of per-item losses
        normalised over the accumulation window (`TaskLossNormalizer`); in evaluation it is the plain batch mean."""
        task = inputs["task"]
        if not isinstance(num_items_in_batch, TaskLossNormalizer):
            outputs = model(**inputs)
            return (outputs.loss, outputs) if return_outputs else outputs.loss
        labels = inputs["labels"]
        outputs = model(**{k: v for k, v in inputs.items() if k != "labels"})
        summed = cross_entropy_loss(outputs.logits, labels, reduction="sum")
        local_items = (labels != -100).sum().clamp(min=1)
        self._loss_tracker.add(task, summed / local_items)
        loss = summed * (self.task_weights[task] * num_items_in_batch.scale(task))
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the running per-task losses (`loss_<task>`) to every training log."""
        if "loss" in logs and "train_runtime" not in logs:
            for task, value in self._loss_tracker.pop("since_log", self._sum_over_processes).items():
                logs[f"loss_{task}"] = round(value, 6)
        super().log(logs, start_time)

    # ---- evaluation and prediction ------------------------------------------------------------------------

    def _compute_task_metrics(self, eval_prediction: EvalPrediction) -> dict[str, float]:
        task = self._current_task
        spec = self.task_specs[task]
        predictions = np.asarray(eval_prediction.predictions)
        label_ids = np.asarray(eval_prediction.label_ids)
        if spec.type == "classification":
            metrics = ClassificationMetric().compute(predictions=predictions.tolist(), references=label_ids.tolist())
        else:
            id2label = spec.id2label
            keep = label_ids != -100
            references = [[id2label[int(i)] for i in row[mask]] for row, mask in zip(label_ids, keep)]
            predicted = [[id2label[int(i)] for i in row[mask]] for row, mask in zip(predictions, keep)]
            metrics = SeqevalMetric().compute(predictions=predicted, references=references)
        if self.user_compute_metrics is not None:
            metrics.update(self.user_compute_metrics(task, eval_prediction))
        return metrics

    def _task_datasets(self, role: str, datasets_: Any) -> dict[str, Any]:
        self._check_task_dict(role, datasets_)
        if not datasets_:
            raise ValueError(f"MultiTaskTrainer: {role} needs a dict {{task_name: dataset}}.")
        return {name: self._with_task_column(name, ds) for name, ds in datasets_.items()}

    def _add_combined_score(self, metrics: dict[str, float], prefix: str) -> None:
        """`<prefix>_combined_score`: mean of each task's main metric (accuracy, or entity F1 for NER)."""
        scores = [
            metrics[key]
            for name, spec in self.task_specs.items()
            if (key := f"{prefix}_{name}_{MAIN_METRIC[spec.type]}") in metrics
        ]
        if scores:
            metrics[f"{prefix}_combined_score"] = float(np.mean(scores))

    def evaluate(
        self,
        eval_dataset: dict[str, Any] | None = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> dict[str, float]:
        """Evaluate every task; metrics are `<prefix>_<task>_<name>` plus `<prefix>_combined_score`, which works as
        `metric_for_best_model="combined_score"`."""
        datasets_ = self._task_datasets("eval_dataset", eval_dataset if eval_dataset is not None else self.eval_dataset)
        metrics: dict[str, float] = {}
        for name, dataset in datasets_.items():
            self._current_task = name
            metrics.update(super().evaluate(dataset, ignore_keys, f"{metric_key_prefix}_{name}"))
        self._current_task = None
        self._add_combined_score(metrics, metric_key_prefix)
        if f"{metric_key_prefix}_combined_score" in metrics:
            self.log({f"{metric_key_prefix}_combined_score": metrics[f"{metric_key_prefix}_combined_score"]})
        return metrics

    def predict(
        self, test_dataset: dict[str, Any], ignore_keys: list[str] | None = None, metric_key_prefix: str = "test"
    ) -> MultiTaskPredictionOutput:
        """Predict every task; classification gives a label per example, NER a tag per word of each sentence (words
        cut off by `max_seq_length` have no prediction). Metrics are computed where the datasets have labels."""
        datasets_ = self._task_datasets("test_dataset", test_dataset)
        predictions: dict[str, list[Any]] = {}
        metrics: dict[str, float] = {}
        for name, dataset in datasets_.items():
            self._current_task = name
            output = super().predict(dataset, ignore_keys, f"{metric_key_prefix}_{name}")
            predictions[name] = self._to_label_space(self.task_specs[name], output.predictions, dataset)
            metrics.update(output.metrics or {})
        self._current_task = None
        self._add_combined_score(metrics, metric_key_prefix)
        return MultiTaskPredictionOutput(predictions=predictions, metrics=metrics)

    @staticmethod
    def _to_label_space(spec: TaskSpec, predicted_ids: np.ndarray, dataset: Any) -> list[Any]:
        id2label = spec.id2label
        if spec.type == "classification":
            return [id2label[int(i)] for i in predicted_ids]
        tags_per_sentence = []
        for row, word_ids in zip(predicted_ids, dataset["word_ids"]):
            tags, previous = [], -1
            for position, word in enumerate(word_ids):
                if word >= 0 and word != previous:  # the first sub-token of each word carries its tag
                    tags.append(id2label[int(row[position])])
                previous = word
            tags_per_sentence.append(tags)
        return tags_per_sentence

    # ---- model card ---------------------------------------------------------------------------------------

    def create_model_card(self, model_name: str | None = None, finetuned_from: str | None = None, **kwargs: Any) -> None:
        """Write the multi-task model card (`README.md`) and `training_curves.png` into `output_dir`.

        Trainer calls this from `push_to_hub`, so both files are uploaded with the model. Trainer's single-task card
        arguments (`tasks`, `dataset`, ...) do not apply and are ignored.
        """
        if not self.is_world_process_zero():
            return
        output_dir = Path(self.args.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        plot_training_curves(self.state.log_history, list(self.task_specs.values()), output_dir / "training_curves.png")
        card = build_model_card(self, model_name=getattr(self, "hub_model_id", None) or model_name,
                                base_model=finetuned_from)
        (output_dir / "README.md").write_text(card.render(), encoding="utf-8")
