"""`MultiTaskTrainer`: Hugging Face `Trainer` with task-homogeneous batches, task-routed weighted losses and
per-task metrics.

Everything else (mixed precision, gradient accumulation, checkpoints and resume, logging integrations, DDP/FSDP/
DeepSpeed through `accelerate`) is Trainer's own; this class only overrides the hooks that must know about tasks.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader
from accelerate.utils import broadcast_object_list
from tqdm.auto import tqdm
from transformers import EvalPrediction, Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint, seed_worker, speed_metrics

from .configuration_multitask import TaskSpec
from .data import MultiTaskDataCollator
from .loss_balancing import LossBalancer, build_balancer
from .metrics import main_metric
from .model_card import build_model_card, plot_training_curves
from .modeling_multitask import task_loss
from .sampler import MultiTaskBatchSampler, SamplingStrategy
from .task_selection import TaskSelection, save_best
from .task_types import get_task_type

logger = logging.getLogger(__name__)

# In each checkpoint folder: what a resumed run needs beyond Trainer's own state (the loss balancer, the epoch's loss
# tally so far, each task's best evaluation).
STATE_FILE = "multitask_state.json"


@dataclass
class TaskLossNormalizer:
    """What `compute_loss` needs to normalise one accumulation window (the batches of one optimizer step).

    Each task's loss is summed over its items (examples, or labelled words for NER) and divided by that task's item
    count over the whole window and all processes (with `average_tokens_across_devices=False`: this process's count,
    `num_processes` 1), then weighted by the task's share of the window's batches. For a window of one task this is
    exactly the loss of one big batch, whatever the split into micro-batches and ranks.
    """

    items: dict[str, float]
    batches: dict[str, int]
    num_batches: int
    num_processes: int

    def scale(self, task: str) -> float:
        share = self.batches[task] / self.num_batches
        return share * self.num_processes / max(self.items[task], 1.0)


class NonFiniteLossError(RuntimeError):
    """A task's training loss, or the model's weights, became NaN or infinite: training stops, and nothing is saved."""


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

    def epoch_tally(self, reduce: Callable[[torch.Tensor], torch.Tensor]) -> list[list[float]]:
        """The epoch's tally so far, summed over processes (for a checkpoint)."""
        if self.since_epoch is None:
            return [[0.0] * len(self.task_names), [0.0] * len(self.task_names)]
        return reduce(self.since_epoch.clone()).tolist()

    def restore_epoch_tally(self, tally: list[list[float]], device: torch.device, keep: bool) -> None:
        """Continue the epoch's tally from a checkpoint: ``keep`` on one process only, so that the sum over
        processes at the epoch's end counts it once."""
        self.since_log = torch.zeros(2, len(self.task_names), device=device, dtype=torch.float64)
        self.since_epoch = (torch.tensor(tally, device=device, dtype=torch.float64) if keep
                            else torch.zeros_like(self.since_log))

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
        if losses:  # an epoch without a batch (none should be) must not enter dwa's history
            self.trainer.loss_balancer.end_epoch(losses)
        line = f"Epoch {self.epoch + 1}/{state.num_train_epochs} - " + ", ".join(
            f"{task} loss: {value:.4f}" for task, value in losses.items()
        )
        sampler = self.trainer._train_batch_sampler
        if sampler is not None and sampler.stops and set(sampler.stops) >= set(sampler.task_names):
            line += f" (training ends at step {state.global_step}: every task has stopped early)"
        elif self.trainer._stream_ends_by(self.epoch + 1):
            # Early-stopped tasks shortened the passes: the remaining tasks' last pass ends here (or ended inside
            # this epoch); a next epoch would have nothing to draw. As at max_steps, the end is evaluated and saved.
            control.should_training_stop = True
            if args.eval_strategy != "no" and self.trainer.task_selection.last_step != state.global_step:
                control.should_evaluate = True
            if args.save_strategy not in ("no", "best"):
                control.should_save = True
            line += (f" (training ends at step {state.global_step}: the remaining tasks have had their passes over "
                     "the data; early-stopped tasks shortened them)")
        elif state.epoch is not None and state.epoch < self.epoch + 1 - 1e-6:
            # Training stopped inside the epoch (max_steps, or a callback): say how far it got instead of claiming a
            # whole epoch.
            line += f" (stopped at epoch {state.epoch:.2f}, step {state.global_step}"
            line += f": max_steps={state.max_steps})" if state.global_step >= state.max_steps else ")"
        if state.is_world_process_zero:
            # tqdm.write prints above the progress bar instead of into its line (as Trainer's own log lines do).
            tqdm.write(line)
        logger.debug(line)

    def on_pre_optimizer_step(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        # The balancer's parameters are not the model's, so DDP does not average their gradients: do it here, as it
        # does for the model's (their sum over processes / the number of processes).
        self.trainer._average_balancer_gradients()

    def on_optimizer_step(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        # Trainer clears the model's gradients after each step (`model.zero_grad()`), not the balancer's.
        self.trainer.loss_balancer.zero_grad(set_to_none=True)

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        # A checkpoint at an epoch's last step is saved before the epoch ends (`on_epoch_end` comes after it), and a run
        # resumed from it starts the next epoch: it must end the finished one itself.
        complete = bool(state.epoch) and abs(state.epoch - round(state.epoch)) < 1e-9
        self.trainer._save_multitask_state(Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}",
                                           epoch_complete=complete)

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    metrics: dict[str, float] | None = None, **kwargs):
        # Only the evaluations of training select and stop: one the user runs afterwards (on whatever data) does not.
        if metrics and self.trainer.is_in_train:
            self.trainer._after_training_evaluation(metrics, control)


class MultiTaskTrainer(Trainer):
    """A `Trainer` over several tasks sharing one encoder.

    `train_dataset`, `eval_dataset` and `predict`'s dataset are dicts `{task_name: datasets.Dataset}` of the
    tokenized splits made by `mtl_hf.data` (columns `input_ids`, `attention_mask`, `labels`, `task`, and `word_ids`
    and `num_words` for NER). Training batches come from a `MultiTaskBatchSampler` (one task per batch, and the same
    task on every process at every step); evaluation runs per task and reports `eval_<task>_<metric>`,
    `eval_combined_score` and `eval_loss` in one evaluation event; `predict` gives one prediction per input row (NER:
    per input word).

    `compute_metrics`, if given, is called as `compute_metrics(task_name, eval_prediction)` and its results are
    added to the built-in ones of each task's type (`mtl_hf.task_types`: accuracy/macro-F1 for classification,
    seqeval on words for NER, correlations for regression, F1 for multilabel); `eval_prediction.predictions` are what
    the type keeps of the logits (class ids, values, or 0/1 label decisions).
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
        if kwargs.get("compute_loss_func") is not None:
            raise ValueError(
                "MultiTaskTrainer does not take `compute_loss_func`: each batch's loss comes from its task's head and "
                "is normalised over the accumulation window per task. Override `compute_loss` in a subclass instead."
            )
        if data_collator is None:
            if processing_class is None:
                raise ValueError("Pass `processing_class=tokenizer` (or a `data_collator`) so batches can be padded.")
            data_collator = MultiTaskDataCollator(processing_class)
        kwargs.setdefault("preprocess_logits_for_metrics", self._logits_for_metrics)
        # The model comes from `model` or from `model_init`, which Trainer calls; the task list is read from it after.
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            **kwargs,
        )
        self._refuse_unsupported_arguments()
        config = self.model.config
        self.task_specs: dict[str, TaskSpec] = {spec.name: spec for spec in config.task_specs}
        for spec in self.task_specs.values():  # combined_score must not silently leave a task out
            get_task_type(spec).check_main_metric(spec)
        self.train_dataset = self._task_datasets("train_dataset", train_dataset)
        self.eval_dataset = self._task_datasets("eval_dataset", eval_dataset)
        self.user_compute_metrics = compute_metrics
        # Set after Trainer's init: a non-None compute_metrics makes evaluation keep predictions and labels.
        self.compute_metrics = self._compute_task_metrics
        self.task_weights = {name: spec.weight for name, spec in self.task_specs.items()}
        for name, weight in (getattr(self.args, "task_weights", None) or {}).items():
            self._check_task_name("task_weights", name)
            self.task_weights[name] = weight
        self._record_task_weights(config)
        self._start_training_state()
        self._refuse_under_sharding()
        if getattr(self.args, "save_best_per_task", False) and self.args.eval_strategy == "no":
            raise ValueError("--save_best_per_task keeps each task's state at its best evaluation: set --eval_strategy "
                             "steps or epoch (and give evaluation data)")
        self._check_early_stopping_has_evaluations()
        self._check_every_task_gets_batches()
        self._check_best_model_direction()
        self._warn_unsmoothed_tasks()
        self._current_task: str | None = None
        self._current_dataset: Any = None
        self._train_batch_sampler: MultiTaskBatchSampler | None = None
        self.add_callback(_MultiTaskCallback(self))

    def _record_task_weights(self, config: Any) -> None:
        """The weights trained with are the model's: config.json and the model card must say what was used."""
        config.tasks = [{**task, "weight": self.task_weights[task["name"]]} for task in config.tasks]

    def call_model_init(self, trial: Any = None) -> nn.Module:
        """Trainer calls `model_init` again when training starts: the fresh model gets the task weights too."""
        model = super().call_model_init(trial)
        if hasattr(self, "task_weights"):  # not yet during Trainer.__init__, which __init__ above covers
            self._record_task_weights(model.config)
            self._start_training_state()  # a fresh model (a new trial) starts with a fresh balancer and bests
            if getattr(self, "_resuming_from", None):  # ... unless train() is resuming: then the checkpoint's
                self._restore_multitask_state(self._resuming_from)
        return model

    def _refuse_under_sharding(self) -> None:
        """DeepSpeed builds its optimizer from the model's parameters only (the balancer's would never train) and
        steps inside `backward`; FSDP and ZeRO-3 shard the weights that `--save_best_per_task` saves from the main
        process alone: both are refused rather than silently wrong."""
        sharded = "DeepSpeed" if self.is_deepspeed_enabled else "FSDP" if self.is_fsdp_enabled else None
        if sharded is None:
            return
        if self.loss_balancer.strategy.value != "static":
            raise ValueError(f"--loss_balancing {self.loss_balancer.strategy.value} is not supported with {sharded}: "
                             "use --loss_balancing static")
        if getattr(self.args, "save_best_per_task", False):
            raise ValueError(f"--save_best_per_task is not supported with {sharded}")

    def _check_early_stopping_has_evaluations(self) -> None:
        """Per-task early stopping counts training's evaluations of each task: without them no task would stop."""
        if getattr(self.args, "task_early_stopping_patience", None) is None:
            return
        if self.args.eval_strategy == "no":
            raise ValueError("--task_early_stopping_patience counts evaluations without improvement: set "
                             "--eval_strategy steps or epoch (and give evaluation data for every task)")
        missing = [name for name in (self.train_dataset or self.task_specs) if name not in (self.eval_dataset or {})]
        if missing:
            raise ValueError(f"--task_early_stopping_patience needs evaluation data for every task; the task(s) "
                             f"{', '.join(missing)} have none, so they could never stop")

    def _start_training_state(self) -> None:
        """mtl_hf's own training state, from the arguments: the loss balancer, each task's best evaluation, the
        running task losses, the early-stopped tasks."""
        self.loss_balancer: LossBalancer = build_balancer(
            getattr(self.args, "loss_balancing", "static"), self.task_specs, self.task_weights,
            getattr(self.args, "dwa_temperature", None),
        )
        self.task_selection = TaskSelection(self.task_specs)
        self._loss_tracker = _TaskLossTracker(list(self.task_specs))
        # task -> {"step", "epoch", "position", "metric", "best_value", "best_step"}: where it left the sampler
        self.task_stops: dict[str, dict[str, Any]] = {}

    def _refuse_unsupported_arguments(self) -> None:
        """Refuse, at construction, the `TrainingArguments` that cannot apply to task-routed training, instead of
        silently ignoring them."""
        args = self.args
        if args.batch_eval_metrics:
            raise ValueError(
                "MultiTaskTrainer does not support `batch_eval_metrics=True`: its metrics (seqeval on whole sentences, "
                "per-task scores, combined_score) are computed once over each task's complete evaluation set."
            )
        if args.prediction_loss_only:
            raise ValueError(
                "MultiTaskTrainer does not support `prediction_loss_only=True`: every task's metrics and predictions "
                "(and combined_score) need the model's predictions."
            )
        if not args.eval_do_concat_batches:
            raise ValueError(
                "MultiTaskTrainer does not support `eval_do_concat_batches=False`: metrics and predictions are computed "
                "over each task's whole evaluation set."
            )
        if not args.skip_memory_metrics:
            logger.warning("skip_memory_metrics=False: MultiTaskTrainer reports memory metrics for training only, not "
                           "for evaluate() or predict()")
        if args.train_sampling_strategy not in ("random", "sequential", "group_by_length"):
            raise ValueError(
                f"MultiTaskTrainer does not support train_sampling_strategy={args.train_sampling_strategy!r}: batches "
                "are drawn per task by MultiTaskBatchSampler (use random, sequential or group_by_length, and "
                "`sampling_strategy` for how tasks are mixed)."
            )

    def _warn_unsmoothed_tasks(self) -> None:
        """`label_smoothing_factor` smooths class targets (cross-entropy, and each label of a multilabel task); a
        regression target has nothing to smooth: say so instead of leaving it silently unapplied."""
        if not self.args.label_smoothing_factor:
            return
        plain = [name for name, spec in self.task_specs.items() if spec.info.loss == "mse"]
        if plain:
            logger.warning("label_smoothing_factor=%g applies to classification, multilabel and NER tasks; not to "
                           "the regression task(s) %s", self.args.label_smoothing_factor, ", ".join(plain))

    def _check_best_model_direction(self) -> None:
        """Trainer takes any `metric_for_best_model` not ending in `loss` as higher-is-better: a task metric that is
        better when lower (a regression task's `mse`) would silently keep the worst checkpoint."""
        metric, args = self.args.metric_for_best_model, self.args
        if not metric or not args.greater_is_better:
            return
        name = metric.removeprefix("eval_")
        for spec in self.task_specs.values():
            if any(name == f"{spec.name}_{lower}" for lower in get_task_type(spec).lower_is_better):
                raise ValueError(
                    f"metric_for_best_model={metric!r} is better when lower, but greater_is_better is True (Trainer's "
                    "default for a name that does not end in 'loss'): pass greater_is_better=False "
                    "(--greater_is_better False)"
                )

    def _check_every_task_gets_batches(self) -> None:
        """With `dataloader_drop_last`, a task smaller than one step (batch size x processes) would never be trained."""
        if not self.args.dataloader_drop_last or not self.train_dataset:
            return
        step = self._train_batch_size * self.args.world_size
        small = {name: len(ds) for name, ds in self.train_dataset.items() if len(ds) < step}
        if small:
            sizes = ", ".join(f"{name!r} has {size}" for name, size in small.items())
            raise ValueError(
                f"dataloader_drop_last=True and a training step takes {step} examples per task (batch size "
                f"{self._train_batch_size} x {self.args.world_size} process(es)), but task {sizes} training "
                "example(s): it would get no batch at all. Lower the batch size or turn off dataloader_drop_last."
            )

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

    @staticmethod
    def _with_task_column(name: str, dataset: Any) -> Any:
        """The collator reads each row's task; add the column to datasets that were made without it."""
        if "task" in dataset.column_names:
            return dataset
        return dataset.add_column("task", [name] * len(dataset))

    def _task_datasets(self, role: str, datasets_: Any) -> dict[str, Any] | None:
        """Check a `{task_name: dataset}` dict and give every dataset its `task` column."""
        self._check_task_dict(role, datasets_)
        if datasets_ is None:
            return None
        return {name: self._with_task_column(name, ds) for name, ds in datasets_.items()}

    def get_train_dataloader(self) -> DataLoader:
        """Concatenate the task datasets and draw task-homogeneous batches from a `MultiTaskBatchSampler`."""
        if self.train_dataset is None:
            raise ValueError("MultiTaskTrainer: training requires a train_dataset.")
        datasets_ = self.train_dataset
        args = self.args
        lengths = None
        if args.train_sampling_strategy == "group_by_length":
            lengths = {name: self._lengths(ds) for name, ds in datasets_.items()}
        sampler = MultiTaskBatchSampler(
            task_sizes={name: len(ds) for name, ds in datasets_.items()},
            batch_size=self._train_batch_size,
            strategy=getattr(args, "sampling_strategy", SamplingStrategy.PROPORTIONAL),
            temperature=getattr(args, "sampling_temperature", 1.0),
            seed=args.data_seed if args.data_seed is not None else args.seed,
            drop_last=args.dataloader_drop_last,
            num_replicas=args.world_size,
            lengths=lengths,
            shuffle=args.train_sampling_strategy != "sequential",
            # Once tasks stop early, passes get shorter: an epoch-limited run ends after its passes over the data.
            max_passes=math.ceil(args.num_train_epochs) if args.max_steps <= 0 else None,
        )
        for task, stop in self.task_stops.items():  # a resumed run replays the stops it was saved with
            sampler.stop_task(task, stop["position"])
        # The collator keeps only the model inputs, `labels` and `task` of each row, so no column needs removing.
        dataloader = DataLoader(
            ConcatDataset(list(datasets_.values())),
            batch_sampler=sampler,
            collate_fn=self.data_collator,
            num_workers=args.dataloader_num_workers,
            pin_memory=args.dataloader_pin_memory,
            persistent_workers=args.dataloader_persistent_workers and args.dataloader_num_workers > 0,
            prefetch_factor=args.dataloader_prefetch_factor,
            multiprocessing_context=args.dataloader_multiprocessing_context if args.dataloader_num_workers else None,
            in_order=args.dataloader_in_order,
            worker_init_fn=partial(seed_worker, num_workers=args.dataloader_num_workers, rank=args.process_index),
        )
        # accelerate wraps the sampler in BatchSamplerShard, which hands batch i to rank i % world_size: the sampler
        # emits its batches in same-task groups of world_size, so all ranks train the same task at every step.
        dataloader = self.accelerator.prepare(dataloader)
        self._train_batch_sampler = sampler
        return dataloader

    def _lengths(self, dataset: Any) -> list[int]:
        """Example lengths for `group_by_length`: the `length_column_name` column if the dataset has it (as
        Trainer reads it), else the number of input ids."""
        column = self.args.length_column_name
        if column in dataset.column_names:
            return [int(length) for length in dataset[column]]
        return [len(ids) for ids in dataset["input_ids"]]

    # ---- loss ---------------------------------------------------------------------------------------------

    def get_batch_samples(
        self, epoch_iterator: Iterator, num_batches: int, device: torch.device
    ) -> tuple[list[dict[str, Any]], TaskLossNormalizer]:
        """Fetch one accumulation window and count, per task, its batches and labelled items on all processes.

        A run resumed from a checkpoint at its final step gets no window at all: Trainer (5.x) would otherwise train
        one step past `max_steps` before it checks the limit.
        """
        batch_samples: list[dict[str, Any]] = []
        if 0 < self.state.max_steps <= self.state.global_step:
            self.control.should_training_stop = True
            num_batches = 0
        for _ in range(num_batches):
            try:
                batch_samples.append(next(epoch_iterator))
            except StopIteration:
                if self.task_stops:
                    batch_samples = self._end_of_stream(batch_samples, num_batches)
                break
        names = list(self.task_specs)
        items = torch.zeros(len(names), dtype=torch.float64, device=device)
        batches = dict.fromkeys(names, 0)
        for batch in batch_samples:
            items[names.index(batch["task"])] += task_loss(self.task_specs[batch["task"]]).count(batch["labels"]).item()
            batches[batch["task"]] += 1
        num_processes = self.accelerator.num_processes
        if self.args.average_tokens_across_devices:
            items = self._sum_over_processes(items)
        else:
            # Each process normalises by its own item counts and DDP averages the processes' gradients.
            num_processes = 1
        normalizer = TaskLossNormalizer(
            items=dict(zip(names, items.tolist())),
            batches=batches,
            num_batches=max(len(batch_samples), 1),
            num_processes=num_processes,
        )
        return batch_samples, normalizer

    def _end_of_stream(self, batch_samples: list[dict[str, Any]], num_batches: int) -> list[dict[str, Any]]:
        """The epoch's batches ran out before Trainer's count of a full epoch: early-stopped tasks shortened the
        passes and the stream has ended. Training stops; a partial accumulation window is not trained, since Trainer
        would never step the optimizer on it (it syncs on whole windows and on the full epoch's last batch)."""
        self.control.should_training_stop = True
        if batch_samples:
            logger.warning(
                "The remaining tasks' last pass ended inside an accumulation window: its %d batch(es) (of %d) are not "
                "trained, since the optimizer only steps on whole windows (gradient_accumulation_steps=%d).",
                len(batch_samples), num_batches, self.args.gradient_accumulation_steps)
        return []

    def _stream_ends_by(self, epochs: int) -> bool:
        """Whether the sampler's stream (shortened by early-stopped tasks) ends within the first ``epochs`` epochs."""
        sampler = self._train_batch_sampler
        if sampler is None or not sampler.stops:
            return False
        length = sampler.stream_length()
        return length is not None and length <= epochs * sampler.groups_per_pass

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
        normalised over the accumulation window (`TaskLossNormalizer`); in evaluation it is the plain mean over the
        batch's labelled items. `label_smoothing_factor` applies to both, as in Trainer."""
        task = inputs["task"]
        labels = inputs.get("labels")
        outputs = model(**{k: v for k, v in inputs.items() if k != "labels"})
        smoothing = self.args.label_smoothing_factor
        loss_fn = task_loss(self.task_specs[task])
        if not isinstance(num_items_in_batch, TaskLossNormalizer):
            loss = None if labels is None else loss_fn.fn(outputs.logits, labels, label_smoothing=smoothing)
            return (loss, outputs) if return_outputs else loss
        summed = loss_fn.fn(outputs.logits, labels, reduction="sum", label_smoothing=smoothing)
        if not torch.isfinite(summed):
            # Trainer's nan/inf log filter would hide this and report a 0.0 loss; a NaN model must not be saved.
            raise NonFiniteLossError(
                f"task {task!r}: the training loss is {summed.item()} at step {self.state.global_step + 1} (epoch "
                f"{self.state.epoch or 0:.2f}); lower the learning rate, check the task's data and weight, or use "
                "--max_grad_norm"
            )
        local_items = loss_fn.count(labels).clamp(min=1)
        self._loss_tracker.add(task, summed / local_items)
        loss = summed * (self.loss_balancer.factor(task) * num_items_in_batch.scale(task))
        regularizer = self.loss_balancer.regularizer(task)
        if regularizer is not None:  # once per optimizer step and task, in shares of the window's batches
            loss = loss + regularizer / num_items_in_batch.num_batches
        return (loss, outputs) if return_outputs else loss

    # ---- loss balancing: its parameters in the optimizer, its state in checkpoints -----------------------------

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """Trainer's optimizer, plus the loss balancer's parameters (``uncertainty``'s log-variances) in a group of
        their own without weight decay (a decay would pull every task's variance towards 1 whatever its loss) and at
        ``loss_balancing_learning_rate``: the scheduler scales it as it scales the model's rate."""
        given = self.optimizer is not None
        optimizer = super().create_optimizer(model)
        balancing = [p for p in self.loss_balancer.parameters() if p.requires_grad]
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        if balancing and not all(id(p) in held for p in balancing):  # a second train() reuses the optimizer
            if given:
                raise ValueError(
                    f"--loss_balancing {self.loss_balancer.strategy.value} learns parameters that the optimizer must "
                    "train: let MultiTaskTrainer create the optimizer (do not pass `optimizers=`), or use "
                    "`optimizer_cls_and_kwargs`"
                )
            optimizer.add_param_group({"params": balancing, "weight_decay": 0.0,
                                       "lr": self.args.loss_balancing_learning_rate})
        return optimizer

    def _average_balancer_gradients(self) -> None:
        if self.accelerator.num_processes == 1:
            return
        for parameter in self.loss_balancer.parameters():
            if parameter.grad is not None:
                parameter.grad.copy_(self._sum_over_processes(parameter.grad) / self.accelerator.num_processes)

    def _save_multitask_state(self, checkpoint: Path, epoch_complete: bool = False) -> None:
        """``multitask_state.json`` in a checkpoint: the loss balancer's state, the epoch's loss tally so far (summed
        over processes; every process takes part in the sum, the main one writes), whether that epoch is complete,
        and each task's best evaluation."""
        tally = self._loss_tracker.epoch_tally(self._sum_over_processes)
        if self.args.should_save and checkpoint.is_dir():
            state = {"loss_balancing": self.loss_balancer.state(), "epoch_loss_tally": tally,
                     "epoch_complete": epoch_complete, "task_selection": self.task_selection.state(),
                     "task_stops": self.task_stops}
            (checkpoint / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")

    def _restore_multitask_state(self, checkpoint: str) -> None:
        path = Path(checkpoint) / STATE_FILE
        if not path.is_file():
            if self.loss_balancer.strategy.value != "static":
                raise ValueError(
                    f"{checkpoint} has no {STATE_FILE}: it was saved without --loss_balancing "
                    f"{self.loss_balancer.strategy.value} (or by an earlier mtl_hf); resume with the strategy it was "
                    "trained with, or start afresh"
                )
            return
        state = json.loads(path.read_text())
        self.loss_balancer.load_state(state["loss_balancing"], str(path))
        tally = state["epoch_loss_tally"]
        if state.get("epoch_complete"):
            # The checkpoint's epoch had ended but not yet been closed: close it (its tally is complete and global).
            self.loss_balancer.end_epoch({task: total / count for task, total, count in
                                          zip(self.task_specs, *tally) if count > 0})
            tally = [[0.0] * len(self.task_specs), [0.0] * len(self.task_specs)]
        self._loss_tracker.restore_epoch_tally(tally, self.args.device, keep=self.is_world_process_zero())
        self.task_selection.load_state(state.get("task_selection", {}))
        self.task_stops = {task: dict(stop) for task, stop in state.get("task_stops", {}).items()
                           if task in self.task_specs}

    def _after_training_evaluation(self, metrics: dict[str, float], control: TrainerControl) -> None:
        """After one of training's evaluations: every task whose main metric improved gets its state saved
        (``--save_best_per_task``, ``mtl_hf.task_selection``; every process records the same bests, the main one
        writes), and the tasks out of patience leave the sampler (``--task_early_stopping_patience``)."""
        keep_best = getattr(self.args, "save_best_per_task", False)
        patience = getattr(self.args, "task_early_stopping_patience", None)
        if not keep_best and patience is None:
            return
        improved = self.task_selection.improved(metrics, self.state.global_step)
        if keep_best and improved and self.is_world_process_zero():
            model = self.accelerator.unwrap_model(self.model)
            for task in improved:
                save_best(model, task, self.task_selection.best[task], Path(self.args.output_dir),
                          self.processing_class)
        if patience is not None:
            self._stop_tasks_out_of_patience(patience, control)

    def _stop_tasks_out_of_patience(self, patience: int, control: TrainerControl) -> None:
        """Take every task whose main metric has not improved for ``patience`` evaluations out of the sampler, at the
        same stream position on every process (the furthest any process's sampler has drawn: the data loader draws
        ahead of training, so the batches it already holds still train); stop training when no task is left."""
        if control.should_training_stop:  # training ends here anyway (max_steps, the data's end): no task stops early
            return
        sampler = self._train_batch_sampler
        trained = sampler.task_names if sampler is not None else []  # a task without training data has no stop
        due = [task for task in trained
               if task not in self.task_stops and self.task_selection.since_best.get(task, 0) >= patience]
        if self.accelerator.num_processes > 1:  # one decision for all ranks: the main process's
            due = broadcast_object_list([due])[0]
        if not due:
            return
        position = sampler.generated
        if self.accelerator.num_processes > 1:
            drawn = torch.tensor([position], device=self.accelerator.device)
            position = int(self.accelerator.gather(drawn).max().item())
        for task in due:
            sampler.stop_task(task, position)
            best = self.task_selection.best.get(task, {})
            self.task_stops[task] = {"step": self.state.global_step, "epoch": round(self.state.epoch or 0.0, 4),
                                     "position": position, "best_step": best.get("step"),
                                     "metric": best.get("metric", main_metric(self.task_specs[task])),
                                     "best_value": best.get("value")}
        left = [name for name in trained if name not in self.task_stops]
        for task in due:
            stop = self.task_stops[task]
            line = (f"Task {task!r} stops at step {stop['step']} (epoch {stop['epoch']:.2f}): its {stop['metric']} "
                    f"has not improved for {patience} evaluation(s) (best {stop['best_value']:.4f} at step "
                    f"{stop['best_step']}); "
                    + (f"training goes on with {', '.join(left)}" if left else "no task is left: training ends"))
            logger.info(line)
            if self.is_world_process_zero():
                tqdm.write(line)
        length = sampler.stream_length()
        if not left or (length is not None and length <= position):  # `position`: the same number on every rank
            # No task left, or the stops end the stream with what is already drawn (at an epoch's end, say): a next
            # epoch would have nothing to train.
            control.should_training_stop = True

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any) -> Any:
        """Trainer's ``train``; a resumed run first takes mtl_hf's own state from the checkpoint (the loss balancer,
        the epoch's losses so far, each task's best evaluation)."""
        self.loss_balancer.to(self.args.device)
        checkpoint = resume_from_checkpoint
        if isinstance(checkpoint, bool):
            checkpoint = get_last_checkpoint(self.args.output_dir) if checkpoint else None
        if checkpoint:
            self._restore_multitask_state(os.fspath(checkpoint))
        else:  # a fresh run draws every task again, with fresh patience (the bests so far stand)
            self.task_stops = {}
            self.task_selection.since_best = {}
            self.task_selection.last_step = None
        self._resuming_from = os.fspath(checkpoint) if checkpoint else None  # for call_model_init
        try:
            return super().train(resume_from_checkpoint, *args, **kwargs)
        finally:
            self._resuming_from = None

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Trainer's `save_model` (final model and every checkpoint), refusing weights that are no longer finite: a
        blow-up in the last optimizer step is never seen by the loss check, which runs before each update."""
        model = self.accelerator.unwrap_model(self.model)
        broken = [name for name, tensor in model.state_dict().items()
                  if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
        if broken:
            raise NonFiniteLossError(
                f"the model's weights are not finite after step {self.state.global_step} ({len(broken)} tensors, e.g. "
                f"{broken[0]}); not saving them: lower the learning rate or use --max_grad_norm"
            )
        super().save_model(output_dir, _internal_call=_internal_call)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the running per-task losses (`loss_<task>`) to every training log."""
        if "loss" in logs and "train_runtime" not in logs:
            for task, value in self._loss_tracker.pop("since_log", self._sum_over_processes).items():
                logs[f"loss_{task}"] = round(value, 6)
            for task, value in self.loss_balancer.effective_weights().items():
                logs[f"weight_{task}"] = round(value, 6)
        super().log(logs, start_time)

    # ---- evaluation and prediction ------------------------------------------------------------------------

    def _logits_for_metrics(self, logits: torch.Tensor | tuple, labels: torch.Tensor) -> torch.Tensor:
        """What evaluation keeps of each batch's logits, as the task's type says (class ids rather than NER logits of
        a whole eval set, which would not fit in memory)."""
        if isinstance(logits, tuple):
            logits = logits[0]
        spec = self.task_specs[self._current_task]
        return get_task_type(spec).logits_for_metrics(spec, logits)

    def _compute_task_metrics(self, eval_prediction: EvalPrediction) -> dict[str, float]:
        task = self._current_task
        spec = self.task_specs[task]
        metrics = get_task_type(spec).compute_metrics(
            spec, np.asarray(eval_prediction.predictions), np.asarray(eval_prediction.label_ids), self._current_dataset
        )
        if self.user_compute_metrics is not None:
            metrics.update(self.user_compute_metrics(task, eval_prediction))
        return metrics

    def _add_combined_metrics(self, metrics: dict[str, float], prefix: str) -> None:
        """`<prefix>_combined_score`: the mean of the tasks' main metrics (`mtl_hf.metrics.main_metric`); and
        `<prefix>_loss`: the tasks' losses averaged with the task weights used in training (a plain mean when all
        weights are equal), so that `load_best_model_at_end` and `ReduceLROnPlateau` work without
        `metric_for_best_model`, on the objective that static loss balancing minimises (with `uncertainty` or `dwa`
        the training loss weighs the tasks otherwise; `eval_loss` keeps the task weights, comparable across
        strategies)."""
        scores = [
            metrics[key]
            for name, spec in self.task_specs.items()
            if (key := f"{prefix}_{name}_{main_metric(spec)}") in metrics
        ]
        if scores:
            metrics[f"{prefix}_combined_score"] = float(np.mean(scores))
        losses = {name: metrics[key] for name in self.task_specs if (key := f"{prefix}_{name}_loss") in metrics}
        if losses:
            total_weight = sum(self.task_weights[name] for name in losses)
            metrics[f"{prefix}_loss"] = sum(self.task_weights[name] * loss for name, loss in losses.items()) / total_weight

    @contextmanager
    def _every_row_in_order(self) -> Iterator[None]:
        """Evaluate and predict on every row, in the datasets' order: `dataloader_drop_last` and `group_by_length` are
        about training batches, but Trainer applies them to evaluation loaders too, where a dropped or reordered row
        would shift every prediction after it."""
        args = self.args
        saved = args.dataloader_drop_last, args.train_sampling_strategy
        args.dataloader_drop_last = False
        if args.train_sampling_strategy == "group_by_length":
            args.train_sampling_strategy = "random"
        try:
            yield
        finally:
            args.dataloader_drop_last, args.train_sampling_strategy = saved

    def evaluate(
        self,
        eval_dataset: str | dict[str, Any] | None = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> dict[str, float]:
        """Evaluate every task (or the task named by `eval_dataset`, or the tasks of a `{task: dataset}` dict).

        Metrics are `<prefix>_<task>_<name>`, plus `<prefix>_combined_score` (mean of the main metrics, usable as
        `metric_for_best_model="combined_score"`) and `<prefix>_loss` (see `_add_combined_metrics`). All of them are
        logged and passed to the callbacks' `on_evaluate` in ONE event, so early stopping, best-model tracking and
        plateau scheduling see the combined numbers. The evaluation sets given at construction are read through
        Trainer's `get_eval_dataloader(task_name)`, so each task's loader is cached under its own name with
        `dataloader_persistent_workers`; ad-hoc datasets get a fresh loader every call.
        """
        if isinstance(eval_dataset, str):
            self._check_task_name("evaluate", eval_dataset)
            if not self.eval_dataset or eval_dataset not in self.eval_dataset:
                raise ValueError(f"evaluate({eval_dataset!r}): no evaluation set for that task was given")
            names, given = [eval_dataset], None
        else:
            given = self._task_datasets("eval_dataset", eval_dataset)
            names = list(given or self.eval_dataset or {})
        if not names:
            raise ValueError("MultiTaskTrainer: evaluation needs a dict {task_name: dataset} of evaluation sets.")
        loaders = {name: (lambda name=name: self.get_test_dataloader(given[name]) if given
                          else self.get_eval_dataloader(name)) for name in names}
        datasets_ = {name: (given or self.eval_dataset)[name] for name in names}
        metrics, _ = self._run_tasks(loaders, datasets_, "Evaluation", ignore_keys, metric_key_prefix)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def predict(
        self, test_dataset: dict[str, Any], ignore_keys: list[str] | None = None, metric_key_prefix: str = "test"
    ) -> MultiTaskPredictionOutput:
        """Predict every task, one prediction per input row, in label space as the task's type gives it:
        classification a label, regression a float, multilabel a list of labels, NER one tag per input word (a word
        without a prediction, because it yields no sub-token or truncation cut it off, gets `O`), extractive QA one
        answer text per question (`""`: no answer), read from all windows of its context. Metrics are computed where the datasets have labels and reach the callbacks' `on_predict` in one
        event, with `<prefix>_combined_score`."""
        datasets_ = self._task_datasets("test_dataset", test_dataset)
        if not datasets_:
            raise ValueError("MultiTaskTrainer: predict needs a dict {task_name: dataset}.")
        loaders = {name: (lambda dataset=dataset: self.get_test_dataloader(dataset)) for name, dataset in datasets_.items()}
        metrics, outputs = self._run_tasks(loaders, datasets_, "Prediction", ignore_keys, metric_key_prefix)
        predictions = {
            name: self._to_label_space(self.task_specs[name], output.predictions, datasets_[name])
            for name, output in outputs.items()
        }
        self.control = self.callback_handler.on_predict(self.args, self.state, self.control, metrics)
        return MultiTaskPredictionOutput(predictions=predictions, metrics=metrics)

    def _run_tasks(
        self, loaders: dict[str, Callable[[], DataLoader]], datasets_: dict[str, Any], description: str,
        ignore_keys: list[str] | None, prefix: str,
    ) -> tuple[dict[str, float], dict[str, Any]]:
        """Trainer's `evaluation_loop` over each task's loader, every row in order; the tasks' metrics (each computed
        with its dataset at hand, for types that score inputs made of several rows) plus the combined ones and the
        speed of the whole pass."""
        start_time = time.time()
        metrics: dict[str, float] = {}
        outputs: dict[str, Any] = {}
        num_samples = num_steps = 0
        with self._every_row_in_order():
            for name, make_loader in loaders.items():
                self._current_task, self._current_dataset = name, datasets_[name]
                output = self.evaluation_loop(
                    make_loader(), description=f"{description} ({name})", ignore_keys=ignore_keys,
                    metric_key_prefix=f"{prefix}_{name}",
                )
                outputs[name] = output
                metrics.update(output.metrics)
                num_samples += output.num_samples
                num_steps += math.ceil(output.num_samples / (self.args.eval_batch_size * self.args.world_size))
        self._current_task = self._current_dataset = None
        self._add_combined_metrics(metrics, prefix)
        metrics.update(speed_metrics(prefix, start_time, num_samples=num_samples, num_steps=num_steps))
        return metrics, outputs

    @staticmethod
    def _to_label_space(spec: TaskSpec, outputs: np.ndarray, dataset: Any) -> list[Any]:
        """What evaluation kept of the logits of every row of `dataset` -> predictions in label space (see
        `TaskType.predictions`): one per row, or per input row for extractive QA, whose inputs span windows."""
        if len(outputs) != len(dataset):
            raise RuntimeError(f"Task {spec.name!r}: {len(outputs)} outputs for {len(dataset)} rows")
        return get_task_type(spec).predictions(spec, outputs, dataset)

    # ---- model card ---------------------------------------------------------------------------------------

    def create_model_card(
        self,
        model_name: str | None = None,
        finetuned_from: str | None = None,
        task_data: list[TaskSpec] | None = None,
        license: str | None = None,
        language: str | list[str] | None = None,
        tags: str | list[str] | None = None,
        datasets: str | list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """Write the multi-task model card (`README.md`) and `training_curves.png` into `output_dir`.

        `task_data`: the task specs as read from the task file, so the card can name each task's data (the model
        config keeps only what the model needs); `license`, `language`, `tags` and `datasets` (Hub dataset ids) go
        into the card's metadata. Trainer
        calls this from `push_to_hub` with the keyword arguments given there, so the card and the curves are uploaded
        with the model. Trainer's single-task card arguments (`tasks`, `dataset_tags`, `dataset`, ...) describe one
        task and one data set; the task specs describe them here, so those are not used.
        """
        if not self.is_world_process_zero():
            return
        output_dir = Path(self.args.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        plot_training_curves(self.state.log_history, list(self.task_specs.values()), output_dir / "training_curves.png")
        card = build_model_card(self, model_name=getattr(self, "hub_model_id", None) or model_name,
                                base_model=finetuned_from, task_data=task_data, license=license, language=language,
                                tags=tags, datasets=datasets)
        card.to_model_card().save(output_dir / "README.md")  # parsed by huggingface_hub, so its metadata is valid
