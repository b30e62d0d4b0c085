"""Training arguments: Trainer's own, plus how tasks are mixed and weighted."""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments

from .loss_balancing import LossBalancing
from .sampler import SamplingStrategy

logger = logging.getLogger(__name__)


@dataclass
class MultiTaskTrainingArguments(TrainingArguments):
    r"""[`~transformers.TrainingArguments`] plus the multi-task settings.

    Args:
        sampling_strategy (`SamplingStrategy` or `str`, defaults to `"proportional"`):
            How batches of the tasks are mixed: `proportional` (every batch of every task once per epoch, interleaved
            at random), `temperature` (task t drawn with p ∝ n_t^(1/T)), `round_robin` or `uniform`.
        sampling_temperature (`float`, defaults to 1.0):
            T for the `temperature` strategy; 1 is proportional to data size, larger values flatten towards uniform.
        task_weights (`dict[str, float]` or `str`, *optional*):
            Loss weight per task, overriding the weights in the model config. From the command line as JSON
            (`'{"ner": 2.0}'`) or `ner=2.0,topic=1`.
        loss_balancing (`LossBalancing` or `str`, defaults to `"static"`):
            How the task losses are weighted: `static` (the task weights), `uncertainty` (learned log-variances,
            Kendall et al. 2018) or `dwa` (dynamic weight average, Liu et al. 2019); see `mtl_hf.loss_balancing`.
        dwa_temperature (`float`, *optional*, defaults to 2.0 with `dwa`):
            T of `dwa`: larger values spread the weights less. Refused with another strategy.
        loss_balancing_learning_rate (`float`, *optional*, defaults to 0.01 with `uncertainty`):
            The learning rate of `uncertainty`'s log-variances (their own optimizer group, on the same schedule).
            They are numbers of order 1 that should settle near the log of each task's loss: at a fine-tuning rate
            (1e-5 to 1e-4) they would move by hundredths in a few thousand steps and weigh nothing. Refused with
            another strategy.
        save_best_per_task (`bool`, defaults to `False`):
            Keep every task's state at its best evaluation in `output_dir/best/<task>/` (see `mtl_hf.task_selection`).
        task_early_stopping_patience (`int`, *optional*):
            A task whose main metric has not improved for this many of training's evaluations leaves the sampler: its
            examples stop being drawn and each later pass over the remaining tasks is shorter (on every process
            alike). Training ends when every task has stopped, or at the usual limit (`num_train_epochs` passes over
            the data still trained, or `max_steps`). Needs evaluations and evaluation data for every task.

    `dataloader_pin_memory` is turned off on a machine without an accelerator (pinning only helps copies to one).
    `ddp_find_unused_parameters` defaults to `True`: in every step only one task's head gets gradients, which
    `DistributedDataParallel` must be told about. Launched as several processes on a machine without accelerators
    (`accelerate launch --multi_gpu` or `torchrun` on CPUs), `use_cpu` turns on so the processes form one gloo group.
    """

    _VALID_DICT_FIELDS = [*TrainingArguments._VALID_DICT_FIELDS, "task_weights"]

    sampling_strategy: SamplingStrategy | str = field(
        default=SamplingStrategy.PROPORTIONAL,
        metadata={
            "help": "How task batches are mixed: proportional, temperature, round_robin or uniform.",
            "choices": [s.value for s in SamplingStrategy],
        },
    )
    sampling_temperature: float = field(
        default=1.0, metadata={"help": "Temperature T of the 'temperature' strategy: p(task) ∝ n_task^(1/T)."}
    )
    task_weights: dict | str | None = field(
        default=None,
        metadata={"help": "Loss weight per task, as JSON ('{\"ner\": 2}') or 'ner=2,topic=1'; overrides the model config."},
    )

    loss_balancing: LossBalancing | str = field(
        default=LossBalancing.STATIC,
        metadata={
            "help": "How the task losses are weighted: static (the task weights), uncertainty (learned per-task "
                    "log-variances, Kendall et al. 2018) or dwa (dynamic weight average, Liu et al. 2019).",
            "choices": [s.value for s in LossBalancing],
        },
    )
    dwa_temperature: float | None = field(
        default=None, metadata={"help": "Temperature T of --loss_balancing dwa (default 2, as in Liu et al.)."}
    )
    loss_balancing_learning_rate: float | None = field(
        default=None,
        metadata={"help": "Learning rate of --loss_balancing uncertainty's log-variances (default 0.01; at a "
                          "fine-tuning learning rate they would barely move)."},
    )

    save_best_per_task: bool = field(
        default=False,
        metadata={"help": "Whenever a task's main metric improves at an evaluation, keep that task's state in "
                          "output_dir/best/<task>/ (a plain transformers model where the task exports, else the "
                          "multi-task model) with best_metric.json."},
    )

    task_early_stopping_patience: int | None = field(
        default=None,
        metadata={"help": "Stop drawing a task's examples once its main metric has not improved for this many "
                          "evaluations; training ends when every task has stopped (or at the usual limit)."},
    )

    def _resolve_balancing_options(self) -> None:
        """Each strategy's own option gets its default with that strategy and is refused with another one, so that a
        value given for a strategy that is not used is never silently dropped."""
        options = {"dwa_temperature": (LossBalancing.DWA, 2.0),
                   "loss_balancing_learning_rate": (LossBalancing.UNCERTAINTY, 0.01)}
        for name, (strategy, default) in options.items():
            value = getattr(self, name)
            if self.loss_balancing != strategy:
                if value is not None:
                    raise ValueError(f"--{name} applies to --loss_balancing {strategy.value} only; this run uses "
                                     f"--loss_balancing {self.loss_balancing.value}")
                continue
            if value is None:
                setattr(self, name, default)
            elif not (isinstance(value, (int, float)) and value > 0):  # NaN too
                raise ValueError(f"{name} must be > 0, got {value}")

    def __post_init__(self) -> None:
        if isinstance(self.task_weights, str) and self.task_weights.strip().startswith("{"):
            # Parsed here rather than by TrainingArguments, whose JSON error would not name the argument.
            try:
                self.task_weights = json.loads(self.task_weights)
            except ValueError as err:
                raise ValueError(f"task_weights: not valid JSON ({err}): {self.task_weights!r}") from None
        elif isinstance(self.task_weights, str):
            pairs = [item.split("=", 1) for item in self.task_weights.split(",") if item.strip()]
            if any(len(pair) != 2 for pair in pairs):
                raise ValueError(f"task_weights: expected 'task=weight,...' or JSON, got {self.task_weights!r}")
            self.task_weights = {name.strip(): value for name, value in pairs}
        if not self.use_cpu and int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.accelerator.is_available():
            # Launched as several processes on a machine without accelerators: without `use_cpu`, accelerate would
            # silently run independent single-process trainings; with it, the processes form one gloo group.
            logger.info("Several processes and no accelerator: training on the CPU (use_cpu=True), gloo backend.")
            self.use_cpu = True
        super().__post_init__()
        if self.dataloader_pin_memory and not torch.accelerator.is_available():
            # Pinned memory only speeds up copies to an accelerator; without one, torch warns at every DataLoader
            # (train and each evaluation), so a CPU run would print the same warning again and again.
            self.dataloader_pin_memory = False
        self.sampling_strategy = SamplingStrategy(self.sampling_strategy)
        self.loss_balancing = LossBalancing(self.loss_balancing)
        self._resolve_balancing_options()
        patience = self.task_early_stopping_patience
        if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int) or patience < 1):
            raise ValueError(f"task_early_stopping_patience must be a positive integer, got {patience!r}")
        if not self.sampling_temperature > 0:  # NaN too
            raise ValueError(f"sampling_temperature must be > 0, got {self.sampling_temperature}")
        if self.task_weights is not None:
            if not isinstance(self.task_weights, dict):
                raise ValueError(f"task_weights: expected a mapping of task names to weights, got {self.task_weights!r}")
            weights = {}
            for name, value in self.task_weights.items():
                try:
                    if isinstance(value, bool):
                        raise TypeError
                    weights[str(name)] = float(value)
                except (TypeError, ValueError):
                    raise ValueError(f"task_weights: the weight of task {name!r} is not a number: {value!r}") from None
                if not math.isfinite(weights[str(name)]) or weights[str(name)] <= 0:
                    raise ValueError(f"task_weights: the weight of task {name!r} must be a finite number > 0, got {value!r}")
            self.task_weights = weights
        if self.ddp_find_unused_parameters is None:
            self.ddp_find_unused_parameters = True
