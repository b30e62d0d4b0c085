"""Task-homogeneous batch sampling over the concatenation of all tasks' training sets.

Every batch holds rows of one task (each task has its own head and loss), and under N processes every rank must train
the same task at the same step, or the ranks would run different heads and disagree on the gradients to all-reduce.
accelerate's ``BatchSamplerShard`` (``split_batches=False``, ``even_batches=True``) hands batch ``i`` of a batch
sampler to rank ``i % N``, so the sampler below emits *steps*: groups of ``num_replicas`` consecutive batches of the
same task holding disjoint examples.

``BatchSamplerShard`` only yields a group once the group's last batch is full (``len(batch) == batch_size``); a
short group is dropped in mid-epoch and, at the end, completed for some ranks only, so that ranks disagree on the step
count. With ``num_replicas > 1`` every batch is therefore full: a task's last, incomplete group is filled by wrapping
around to the start of that task's order, the same last-batch rule ``even_batches`` and ``DistributedSampler`` apply.

Per-task early stopping (``stop_task``) makes the sampler a *stream* of passes over the data: a stopped task's groups
are left out from a given stream position on, so every later pass over the remaining tasks is shorter. Trainer counts
its epochs as fixed slices of ``len(sampler)`` batches (its step and resume arithmetic, and its learning-rate
schedule, are computed from that length once), so Trainer epoch ``e`` is the stream's groups ``[e * G, (e + 1) * G)``
for ``G`` groups of a full pass, whichever passes they belong to; the stream ends after ``max_passes`` passes. Without
stops, pass ``e`` is exactly Trainer epoch ``e``. Stop positions are stream positions, so a resumed run that knows them
replays the same stream, and every rank, given the same positions, draws the same tasks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from enum import Enum
from itertools import accumulate

import torch
from torch.utils.data import BatchSampler
from transformers.trainer_pt_utils import get_length_grouped_indices


# After this many passes in a row without a group of any remaining task, the stream gives up (see _check_not_starved).
MAX_EMPTY_PASSES = 100


class SamplingStrategy(str, Enum):
    """How the tasks take turns.

    - ``proportional`` (default): every group of every task once per epoch, in a random interleaving, so a task is
      seen in proportion to its size and every example once.
    - ``temperature``: each step draws task ``t`` with probability proportional to ``n_t ** (1 / temperature)``;
      ``temperature > 1`` up-samples small tasks. An epoch has as many steps as a proportional one.
    - ``round_robin``: tasks in their given order, one group each in turn; a task that has run out drops out.
    - ``uniform``: like ``temperature`` with equal probabilities.
    """

    PROPORTIONAL = "proportional"
    TEMPERATURE = "temperature"
    ROUND_ROBIN = "round_robin"
    UNIFORM = "uniform"


class MultiTaskBatchSampler(BatchSampler):
    """Yield task-homogeneous batches of global indices into the concatenation of the tasks' datasets.

    Args:
        task_sizes: number of examples per task, in the order of the datasets in the ``ConcatDataset``; task ``k``'s
            local index ``i`` is yielded as ``offset_k + i``.
        batch_size: examples per batch per process.
        strategy: a :class:`SamplingStrategy` (or its value).
        temperature: for ``temperature`` sampling.
        seed: base seed; all randomness of an epoch comes from ``torch.Generator().manual_seed(seed + epoch)``, so a
            resumed run replays the same order (accelerate's ``skip_first_batches`` then skips what was trained).
        drop_last: drop each task's incomplete last group instead of completing it.
        num_replicas: number of processes; batches come in groups of this many, one per rank.
        lengths: optional per-task example lengths; examples of similar length are then batched together inside each
            task (transformers' length grouping: random mega-batches of about 50 groups, sorted by length).
        shuffle: draw each task's examples in a random order (default); ``False`` keeps every task's dataset order
            (Trainer's ``train_sampling_strategy="sequential"``). How the tasks take turns still follows ``strategy``.
        max_passes: the stream ends after this many passes over the data (``None``: it never ends, for a run limited
            by ``max_steps``). Only matters once a task has stopped: until then every epoch is one full pass.
    """

    def __init__(
        self,
        task_sizes: dict[str, int],
        batch_size: int,
        strategy: SamplingStrategy | str = SamplingStrategy.PROPORTIONAL,
        temperature: float = 1.0,
        seed: int = 0,
        drop_last: bool = False,
        num_replicas: int = 1,
        lengths: dict[str, Sequence[int]] | None = None,
        shuffle: bool = True,
        max_passes: int | None = None,
    ) -> None:
        # BatchSampler.__init__ wants a sampler over one dataset; this class draws its own indices, so it only
        # shares the interface (accelerate and the Trainer check isinstance and read batch_size / drop_last).
        if not task_sizes:
            raise ValueError("task_sizes must name at least one task")
        for name, size in task_sizes.items():
            if not isinstance(size, int) or size <= 0:
                raise ValueError(f"Task {name!r}: size must be a positive integer, got {size!r}")
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not isinstance(num_replicas, int) or num_replicas <= 0:
            raise ValueError(f"num_replicas must be a positive integer, got {num_replicas!r}")
        self.strategy = SamplingStrategy(strategy)
        if self.strategy is SamplingStrategy.TEMPERATURE and not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        if lengths is not None:
            if set(lengths) != set(task_sizes):
                raise ValueError(f"lengths must have the tasks {', '.join(task_sizes)}, got {', '.join(lengths)}")
            for name, task_lengths in lengths.items():
                if len(task_lengths) != task_sizes[name]:
                    raise ValueError(f"Task {name!r}: {len(task_lengths)} lengths for {task_sizes[name]} examples")
        self.task_names = list(task_sizes)
        self.task_sizes = [task_sizes[name] for name in self.task_names]
        self.offsets = [0, *accumulate(self.task_sizes)][:-1]
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.num_replicas = num_replicas
        self.temperature = temperature
        self.seed = seed
        self.lengths = None if lengths is None else [list(lengths[name]) for name in self.task_names]
        if lengths is not None and not shuffle:
            raise ValueError("length grouping (lengths) and shuffle=False exclude each other")
        self.shuffle = shuffle
        if max_passes is not None and (not isinstance(max_passes, int) or max_passes <= 0):
            raise ValueError(f"max_passes must be a positive integer or None, got {max_passes!r}")
        self.max_passes = max_passes
        self.epoch = 0
        self.stops: dict[str, int] = {}  # task -> stream position (in groups) from which its groups are left out
        self.generated = 0  # stream position of the next group this sampler's current iteration draws

    def set_epoch(self, epoch: int) -> None:
        """Called by the Trainer at the start of each epoch: the epoch's order depends on ``seed + epoch`` only."""
        self.epoch = epoch

    @property
    def group_size(self) -> int:
        """Examples per step: one batch for each process."""
        return self.batch_size * self.num_replicas

    def _num_groups(self, size: int) -> int:
        return size // self.group_size if self.drop_last else math.ceil(size / self.group_size)

    @property
    def groups_per_pass(self) -> int:
        """Groups (steps) of one full pass over every task: one Trainer epoch."""
        return sum(self._num_groups(size) for size in self.task_sizes)

    def __len__(self) -> int:
        """Batches of a full pass (Trainer's epoch length), whatever tasks have stopped: see the module docstring."""
        return self.groups_per_pass * self.num_replicas

    def stop_task(self, task: str, position: int) -> None:
        """Leave ``task``'s groups out of the stream from ``position`` (a stream position in groups, at or after the
        groups this sampler has already drawn) on."""
        if task not in self.task_names:
            raise ValueError(f"unknown task {task!r}; the sampler's tasks are {', '.join(self.task_names)}")
        self.stops[task] = min(self.stops.get(task, position), position)

    def stream_length(self) -> int | None:
        """Groups in the whole stream under the stops made so far (``None``: endless, without ``max_passes``)."""
        if self.max_passes is None:
            return None
        position = 0
        for number in range(self.max_passes):
            position += self._pass_length(number, position)
        return position

    def _stopped(self, task: int, position: int) -> bool:
        stop = self.stops.get(self.task_names[task])
        return stop is not None and position >= stop

    def _pass_length(self, number: int, start: int) -> int:
        """Groups that pass ``number``, beginning at stream position ``start``, keeps under the stops (a task's
        entries from its stop position on are left out)."""
        position = start
        for task in self._pass_schedule(number)[0]:
            if not self._stopped(task, position):
                position += 1
        return position - start

    def _beyond_last_pass(self, number: int) -> bool:
        return self.max_passes is not None and number >= self.max_passes

    def _all_stopped(self, position: int) -> bool:
        return all(self._stopped(task, position) for task in range(len(self.task_names)))

    def _order(self, task: int, generator: torch.Generator) -> list[int]:
        """One pass over a task's examples: a random permutation, a length-grouped one, or the dataset order."""
        if not self.shuffle:
            return list(range(self.task_sizes[task]))
        if self.lengths is None:
            return torch.randperm(self.task_sizes[task], generator=generator).tolist()
        return get_length_grouped_indices(self.lengths[task], self.group_size, generator=generator)

    def _schedule(self, generator: torch.Generator) -> list[int]:
        """The task of every step of the epoch."""
        groups = [self._num_groups(size) for size in self.task_sizes]
        if self.strategy is SamplingStrategy.PROPORTIONAL:
            steps = torch.tensor([task for task, count in enumerate(groups) for _ in range(count)], dtype=torch.long)
            return steps[torch.randperm(len(steps), generator=generator)].tolist()
        if self.strategy is SamplingStrategy.ROUND_ROBIN:
            return [task for turn in range(max(groups)) for task, count in enumerate(groups) if turn < count]
        num_steps = sum(groups)
        if num_steps == 0:
            return []
        if self.strategy is SamplingStrategy.UNIFORM:
            weights = torch.ones(len(self.task_sizes), dtype=torch.double)
        else:
            weights = torch.tensor(self.task_sizes, dtype=torch.double) ** (1.0 / self.temperature)
        return torch.multinomial(weights, num_steps, replacement=True, generator=generator).tolist()

    def _epoch_groups(self, task: int, generator: torch.Generator) -> list[list[int]]:
        """All groups of one task for proportional / round-robin: one pass, the last group completed (or dropped)."""
        order = self._order(task, generator)
        groups = [order[start : start + self.group_size] for start in range(0, len(order), self.group_size)]
        if groups and len(groups[-1]) < self.group_size:
            if self.drop_last:
                groups.pop()
            elif self.num_replicas > 1:
                missing = self.group_size - len(groups[-1])
                groups[-1] += [order[i % len(order)] for i in range(missing)]
        return groups

    def _endless_groups(self, task: int, generator: torch.Generator) -> Iterator[list[int]]:
        """Full groups of one task for temperature / uniform, cycling through fresh passes when one is used up.

        A group that straddles two passes takes from the new pass first the examples it does not already hold, so
        ranks share an example within a step only when the task is smaller than one step.
        """
        buffer: list[int] = []
        while True:
            while len(buffer) < self.group_size:
                fresh = self._order(task, generator)
                pending = set(buffer)
                buffer += [i for i in fresh if i not in pending] + [i for i in fresh if i in pending]
            yield buffer[: self.group_size]
            buffer = buffer[self.group_size :]

    def _pass_schedule(self, number: int) -> tuple[list[int], torch.Generator]:
        """Pass ``number``'s task schedule and its generator, positioned to draw the pass's groups next."""
        generator = torch.Generator().manual_seed(self.seed + number)
        return self._schedule(generator), generator

    def _locate(self, position: int) -> tuple[int, int]:
        """``(pass, stream position at that pass's start)`` of the pass holding stream position ``position``. Without
        stops pass ``e`` starts at ``e * groups_per_pass``; with them the shorter passes are counted."""
        if not self.stops:
            return divmod(position, self.groups_per_pass)[0], position - position % self.groups_per_pass
        number, start, empty = 0, 0, 0
        while True:
            if self._all_stopped(start) or self._beyond_last_pass(number):
                return number, start
            length = self._pass_length(number, start)
            if start + length > position:
                return number, start
            empty = empty + 1 if length == 0 else 0
            self._check_not_starved(empty)
            number, start = number + 1, start + length

    def _check_not_starved(self, empty_passes: int) -> None:
        """Temperature or uniform sampling can leave the remaining tasks without a single draw in a pass, and (with
        ``max_passes=None``) the stream would then search for one forever."""
        if empty_passes >= MAX_EMPTY_PASSES:
            left = [name for name in self.task_names if name not in self.stops]
            raise RuntimeError(
                f"{self.strategy.value} sampling drew none of the remaining task(s) {', '.join(left)} in "
                f"{MAX_EMPTY_PASSES} passes in a row, now that {', '.join(self.stops)} stopped: raise "
                "sampling_temperature or use proportional sampling"
            )

    def __iter__(self) -> Iterator[list[int]]:
        """The batches of Trainer epoch ``self.epoch``: the stream's groups from ``epoch * groups_per_pass`` on, for
        at most ``groups_per_pass`` groups."""
        begin = self.epoch * self.groups_per_pass
        end = begin + self.groups_per_pass
        number, position = self._locate(begin)
        self.generated = begin
        empty = 0
        while position < end and not self._all_stopped(position):
            if self._beyond_last_pass(number):
                return
            schedule, generator = self._pass_schedule(number)
            pass_start = position
            if self.strategy in (SamplingStrategy.PROPORTIONAL, SamplingStrategy.ROUND_ROBIN):
                sources = [iter(self._epoch_groups(task, generator)) for task in range(len(self.task_sizes))]
            else:
                sources = [self._endless_groups(task, generator) for task in range(len(self.task_sizes))]
            for task in schedule:
                if self._stopped(task, position):
                    continue  # a stopped task's groups are not drawn (nor their examples, for temperature / uniform)
                group = next(sources[task])
                position += 1
                if position <= begin:
                    continue  # the pass started before this epoch: replay it up to the epoch's first group
                self.generated = position
                offset = self.offsets[task]
                # Consecutive slices, one per rank: with length grouping, each batch then holds similar lengths.
                for start in range(0, self.group_size, self.batch_size):
                    yield [offset + index for index in group[start : start + self.batch_size]]
                if position >= end:
                    return
            empty = empty + 1 if position == pass_start else 0
            self._check_not_starved(empty)
            number += 1
