"""How the task losses are weighted into one training loss (``--loss_balancing``).

Losses of different tasks are on different scales (a regression MSE is not a 13-way cross-entropy), so a fixed
weight per task is a guess. Three strategies, each a :class:`LossBalancer` that ``MultiTaskTrainer.compute_loss``
asks for the factor of a task's normalised loss (and, for ``uncertainty``, a term added to it):

* ``static`` (the default): the task weights (``weight`` in the task file, ``--task_weights``), as before.
* ``uncertainty`` (Kendall, Gal & Cipolla, 2018): one learned log-variance ``s_t`` per task, trained with the model
  (by the same optimizer, without weight decay), the task's loss becoming ``exp(-s_t) * L_t + s_t / 2`` for
  classification-like losses (cross-entropy, BCE, span) and ``exp(-s_t) * L_t / 2 + s_t / 2`` for regression (MSE),
  the paper's two forms (with ``s = log σ²``). A task with a noisy, large loss learns a large ``s_t`` and a small
  factor. The log-variances live in the trainer, not the model: inference does not need them; checkpoints keep them
  (``multitask_state.json``) so that a resumed run continues exactly.
* ``dwa``, dynamic weight average (Liu, Johns & Davison, 2019): from the third epoch on, task ``t`` gets the factor
  ``K * exp(r_t / T) / sum_i exp(r_i / T)`` with ``r_t = L_t(e-1) / L_t(e-2)`` the ratio of its mean training losses
  over the last two epochs (``K`` tasks, temperature ``T``, ``--dwa_temperature``, 2 in the paper); a task whose
  loss falls slowly gets more weight. Before that every factor is 1. The epoch losses are the same on every process
  (summed over processes) and kept in checkpoints.

Every factor multiplies the task weight, so ``--task_weights`` still applies; the effective factor is logged as
``weight_<task>`` next to ``loss_<task>``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from transformers.utils import ExplicitEnum

from .configuration_multitask import TaskSpec


class LossBalancing(ExplicitEnum):
    STATIC = "static"
    UNCERTAINTY = "uncertainty"
    DWA = "dwa"


class LossBalancer(nn.Module):
    """``static``: each task's loss times its task weight. Subclasses change :meth:`factor` and may add
    :meth:`regularizer`; their state (beyond parameters) goes through :meth:`state` / :meth:`load_state`."""

    strategy = LossBalancing.STATIC

    def __init__(self, specs: dict[str, TaskSpec], weights: dict[str, float]) -> None:
        super().__init__()
        self.tasks = list(specs)
        self.specs = specs
        self.weights = dict(weights)

    def factor(self, task: str) -> torch.Tensor | float:
        """What the task's normalised loss is multiplied by."""
        return self.weights[task]

    def regularizer(self, task: str) -> torch.Tensor | None:
        """A term added to the task's loss once per batch share of an optimizer step (``None``: nothing)."""
        return None

    def end_epoch(self, losses: dict[str, float]) -> None:
        """Called at each epoch's end with every task's mean training loss over it (the same on every process)."""

    def effective_weights(self) -> dict[str, float]:
        """``weight_<task>`` for the logs: each task's current factor."""
        with torch.no_grad():
            return {task: float(self.factor(task)) for task in self.tasks}

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps (JSON); parameters are stored by value."""
        return {"strategy": self.strategy.value}

    def load_state(self, state: dict[str, Any], where: str) -> None:
        if state.get("strategy") != self.strategy.value:
            raise ValueError(
                f"{where} was saved with --loss_balancing {state.get('strategy')}, this run uses "
                f"{self.strategy.value}: resume with the same strategy, or start afresh"
            )


class UncertaintyBalancer(LossBalancer):
    """Kendall et al.'s learned task uncertainty (see the module docstring)."""

    strategy = LossBalancing.UNCERTAINTY

    def __init__(self, specs: dict[str, TaskSpec], weights: dict[str, float]) -> None:
        super().__init__(specs, weights)
        # One parameter per task, not one vector: a step trains one task, and the others' entries must get no
        # gradient at all (rather than a zero one, which AdamW would still move them by, on their old momentum).
        self.log_variances = nn.ParameterDict({task: nn.Parameter(torch.zeros(())) for task in self.tasks})
        # Regression's form halves the precision term (1 / 2σ²); the classification form does not (1 / σ²).
        self.halved = {task: spec.info.loss == "mse" for task, spec in specs.items()}

    def _s(self, task: str) -> torch.Tensor:
        return self.log_variances[task]

    def factor(self, task: str) -> torch.Tensor:
        return self.weights[task] * torch.exp(-self._s(task)) * (0.5 if self.halved[task] else 1.0)

    def regularizer(self, task: str) -> torch.Tensor:
        return self._s(task) / 2

    def state(self) -> dict[str, Any]:
        # float32 -> Python float is exact, and back
        return {**super().state(), "log_variances": {task: self._s(task).item() for task in self.tasks}}

    def load_state(self, state: dict[str, Any], where: str) -> None:
        super().load_state(state, where)
        saved = state.get("log_variances", {})
        if set(saved) != set(self.tasks):
            raise ValueError(f"{where} holds log-variances of the tasks {', '.join(saved)}, this run trains "
                             f"{', '.join(self.tasks)}")
        with torch.no_grad():
            for task in self.tasks:
                self._s(task).fill_(saved[task])


class DynamicWeightAverage(LossBalancer):
    """Liu et al.'s dynamic weight average (see the module docstring)."""

    strategy = LossBalancing.DWA

    def __init__(self, specs: dict[str, TaskSpec], weights: dict[str, float], temperature: float) -> None:
        super().__init__(specs, weights)
        self.temperature = temperature
        self.history: list[dict[str, float]] = []  # the last two epochs' mean task losses, oldest first
        self.lambdas = dict.fromkeys(self.tasks, 1.0)

    def factor(self, task: str) -> float:
        return self.weights[task] * self.lambdas[task]

    def end_epoch(self, losses: dict[str, float]) -> None:
        self.history = [*self.history, dict(losses)][-2:]
        self._update()

    def _update(self) -> None:
        # Only the tasks trained in both epochs have a rate: a task without a batch in one of them (one that stopped
        # early, or a max_steps cut) keeps its factor, and the others share the softmax among themselves.
        rated = [task for task in self.tasks if all(task in epoch for epoch in self.history)]
        if len(self.history) < 2 or not rated:
            return
        before, last = self.history
        rates = {task: last[task] / before[task] if before[task] > 0 else 1.0 for task in rated}
        top = max(rates.values()) / self.temperature  # subtracted for a stable softmax
        exps = {task: math.exp(rate / self.temperature - top) for task, rate in rates.items()}
        total = sum(exps.values())
        self.lambdas = {**self.lambdas, **{task: len(rated) * value / total for task, value in exps.items()}}

    def state(self) -> dict[str, Any]:
        return {**super().state(), "temperature": self.temperature, "history": self.history,
                "lambdas": self.lambdas}

    def load_state(self, state: dict[str, Any], where: str) -> None:
        super().load_state(state, where)
        self.history = [dict(epoch) for epoch in state.get("history", [])]
        # The factors as they were (a stopped task's factor is no longer recomputable from the last two epochs).
        self.lambdas = {**dict.fromkeys(self.tasks, 1.0), **{task: float(value) for task, value in
                                                             state.get("lambdas", {}).items() if task in self.tasks}}
        self._update()


def build_balancer(strategy: LossBalancing | str, specs: dict[str, TaskSpec], weights: dict[str, float],
                   dwa_temperature: float | None) -> LossBalancer:
    """The balancer of ``strategy``; ``dwa_temperature`` (resolved by ``MultiTaskTrainingArguments``) is read by
    ``dwa`` only."""
    strategy = LossBalancing(strategy)
    if strategy == LossBalancing.UNCERTAINTY:
        return UncertaintyBalancer(specs, weights)
    if strategy == LossBalancing.DWA:
        return DynamicWeightAverage(specs, weights, dwa_temperature)
    return LossBalancer(specs, weights)
