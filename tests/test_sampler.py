"""Tests of the task-homogeneous batch sampler: strategies, determinism, length grouping, and sharding over two
ranks through accelerate's own wrappers."""

from __future__ import annotations

import statistics
from collections import Counter
from itertools import chain

import pytest
import torch
from accelerate.data_loader import BatchSamplerShard, SkipBatchSampler, prepare_data_loader
from torch.utils.data import BatchSampler, ConcatDataset, DataLoader, Dataset

from mtl_hf.sampler import MultiTaskBatchSampler, SamplingStrategy

STRATEGIES = [strategy.value for strategy in SamplingStrategy]


def task_of(index: int, sampler: MultiTaskBatchSampler) -> str:
    for name, offset, size in zip(sampler.task_names, sampler.offsets, sampler.task_sizes):
        if offset <= index < offset + size:
            return name
    raise AssertionError(f"index {index} is outside every task")


def batch_task(batch: list[int], sampler: MultiTaskBatchSampler) -> str:
    tasks = {task_of(index, sampler) for index in batch}
    assert len(tasks) == 1, f"batch mixes tasks {tasks}"
    return tasks.pop()


def test_is_a_batch_sampler_with_the_attributes_accelerate_reads() -> None:
    sampler = MultiTaskBatchSampler({"a": 10, "b": 3}, batch_size=4, drop_last=True)
    assert isinstance(sampler, BatchSampler)
    assert sampler.batch_size == 4 and sampler.drop_last is True
    assert sampler.offsets == [0, 10]


def test_proportional_covers_each_example_once_per_epoch() -> None:
    sizes = {"a": 10, "b": 7, "c": 3}
    sampler = MultiTaskBatchSampler(sizes, batch_size=4, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 3 + 2 + 1
    assert sorted(chain.from_iterable(batches)) == list(range(20))
    per_task = Counter(batch_task(batch, sampler) for batch in batches)
    assert per_task == {"a": 3, "b": 2, "c": 1}
    # Only each task's last batch is short (one process: the usual last-batch rule of a DataLoader).
    assert sorted(len(batch) for batch in batches) == [2, 3, 3, 4, 4, 4]


def test_proportional_interleaves_tasks_at_random_in_proportion() -> None:
    sampler = MultiTaskBatchSampler({"big": 3000, "small": 1000}, batch_size=1, seed=0)
    tasks = [batch_task(batch, sampler) for batch in sampler]
    assert Counter(tasks) == {"big": 3000, "small": 1000}
    for part in (tasks[:1000], tasks[1000:2000], tasks[-1000:]):
        assert part.count("small") / len(part) == pytest.approx(0.25, abs=0.04)
    switches = sum(a != b for a, b in zip(tasks, tasks[1:]))
    assert switches > 1000  # interleaved, not task after task (2 p (1 - p) n = 1500 expected)


@pytest.mark.parametrize(
    ("strategy", "temperature", "expected"),
    [
        ("temperature", 1.0, [0.9, 0.1]),
        ("temperature", 2.0, [0.75, 0.25]),  # sqrt(900) : sqrt(100) = 30 : 10
        ("temperature", 100.0, [0.511, 0.489]),
        ("uniform", 1.0, [0.5, 0.5]),
    ],
)
def test_sampled_strategies_match_their_task_probabilities(strategy: str, temperature: float, expected) -> None:
    sizes = {"big": 900, "small": 100}
    sampler = MultiTaskBatchSampler(sizes, batch_size=1, strategy=strategy, temperature=temperature)
    assert len(sampler) == 1000  # as many steps as a proportional epoch
    draws: list[str] = []
    for epoch in range(4):
        sampler.set_epoch(epoch)
        draws += [batch_task(batch, sampler) for batch in sampler]
    assert len(draws) == 4000
    assert draws.count("big") / len(draws) == pytest.approx(expected[0], abs=0.025)
    assert draws.count("small") / len(draws) == pytest.approx(expected[1], abs=0.025)


def test_temperature_cycles_through_fresh_permutations() -> None:
    sampler = MultiTaskBatchSampler({"big": 1000, "small": 7}, batch_size=4, strategy="uniform", seed=5)
    batches = list(sampler)
    assert all(len(batch) == 4 for batch in batches)  # never short: the stream of examples has no end
    small = Counter(index for batch in batches if batch_task(batch, sampler) == "small" for index in batch)
    assert set(small) == set(range(1000, 1007))
    assert max(small.values()) - min(small.values()) <= 1  # each pass uses every example once


def test_round_robin_order() -> None:
    sampler = MultiTaskBatchSampler({"a": 12, "b": 8, "c": 4}, batch_size=4, strategy="round_robin")
    batches = list(sampler)
    assert [batch_task(batch, sampler) for batch in batches] == ["a", "b", "c", "a", "b", "a"]
    assert sorted(chain.from_iterable(batches)) == list(range(24))
    assert len(sampler) == 6


def test_drop_last_drops_each_tasks_incomplete_batch() -> None:
    sampler = MultiTaskBatchSampler({"a": 10, "b": 3, "c": 8}, batch_size=4, drop_last=True)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 2 + 0 + 2
    assert all(len(batch) == 4 for batch in batches)
    assert Counter(batch_task(batch, sampler) for batch in batches) == {"a": 2, "c": 2}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_same_seed_and_epoch_replay_the_same_order(strategy: str) -> None:
    def batches(seed: int, epoch: int) -> list[list[int]]:
        sampler = MultiTaskBatchSampler({"a": 50, "b": 20}, batch_size=4, strategy=strategy, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert batches(seed=1, epoch=2) == batches(seed=1, epoch=2)
    assert batches(seed=1, epoch=2) != batches(seed=1, epoch=3)
    assert batches(seed=1, epoch=2) != batches(seed=2, epoch=2)

    # A run resumed at step 5 (accelerate's skip_first_batches) sees exactly the rest of the epoch.
    sampler = MultiTaskBatchSampler({"a": 50, "b": 20}, batch_size=4, strategy=strategy, seed=1)
    sampler.set_epoch(2)
    assert list(SkipBatchSampler(sampler, skip_batches=5)) == batches(seed=1, epoch=2)[5:]


def spread(batches: list[list[int]], lengths: list[int]) -> float:
    return statistics.mean(max(lengths[i] for i in batch) - min(lengths[i] for i in batch) for batch in batches)


def test_length_grouping_groups_similar_lengths_inside_each_task() -> None:
    generator = torch.Generator().manual_seed(0)
    lengths = {
        "a": torch.randint(1, 200, (800,), generator=generator).tolist(),
        "b": torch.randint(1, 50, (300,), generator=generator).tolist(),
    }
    flat = lengths["a"] + lengths["b"]
    sizes = {name: len(values) for name, values in lengths.items()}
    grouped = MultiTaskBatchSampler(sizes, batch_size=8, lengths=lengths, seed=1)
    plain = MultiTaskBatchSampler(sizes, batch_size=8, seed=1)
    grouped_batches, plain_batches = list(grouped), list(plain)
    assert sorted(chain.from_iterable(grouped_batches)) == list(range(1100))
    assert all(len({task_of(i, grouped) for i in batch}) == 1 for batch in grouped_batches)
    assert spread(grouped_batches, flat) < 0.25 * spread(plain_batches, flat)
    # Still random: a different epoch gives other batches.
    grouped.set_epoch(1)
    assert list(grouped) != grouped_batches


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="at least one task"):
        MultiTaskBatchSampler({}, batch_size=2)
    with pytest.raises(ValueError, match="Task 'b': size must be a positive integer"):
        MultiTaskBatchSampler({"a": 3, "b": 0}, batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        MultiTaskBatchSampler({"a": 3}, batch_size=0)
    with pytest.raises(ValueError, match="'random' is not a valid SamplingStrategy"):
        MultiTaskBatchSampler({"a": 3}, batch_size=2, strategy="random")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        MultiTaskBatchSampler({"a": 3}, batch_size=2, strategy="temperature", temperature=0)
    with pytest.raises(ValueError, match="Task 'a': 2 lengths for 3 examples"):
        MultiTaskBatchSampler({"a": 3}, batch_size=2, lengths={"a": [1, 2]})


# --------------------------------------------------------------------------------------------------------------------
# Several processes: what each rank gets through accelerate
# --------------------------------------------------------------------------------------------------------------------

SHARD_SIZES = {"a": 11, "b": 5, "c": 16, "d": 2}  # with batch 3 on 2 ranks: groups of 6, three tasks with a rest


def assert_one_step(sampler: MultiTaskBatchSampler, batch0: list[int], batch1: list[int], step: int) -> None:
    """Both ranks train the same task on full batches of different examples. Only a task smaller than one step
    (here "d" with 2 and "b" with 5 examples for 2 x 3 slots) must repeat examples, and then uses all of them."""
    task = batch_task(batch0, sampler)
    assert batch_task(batch1, sampler) == task, f"step {step}"
    assert len(batch0) == len(batch1) == sampler.batch_size
    size = sampler.task_sizes[sampler.task_names.index(task)]
    if size >= sampler.group_size:
        assert not set(batch0) & set(batch1), f"step {step}: ranks share examples"
    else:
        assert len(set(batch0) | set(batch1)) == size, f"step {step}"


def shards(sampler: MultiTaskBatchSampler, world_size: int = 2) -> list[list[list[int]]]:
    return [
        list(BatchSamplerShard(sampler, num_processes=world_size, process_index=rank)) for rank in range(world_size)
    ]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_ranks_train_the_same_task_at_every_step_on_disjoint_examples(strategy: str) -> None:
    sampler = MultiTaskBatchSampler(SHARD_SIZES, batch_size=3, strategy=strategy, num_replicas=2, seed=7)
    assert len(sampler) % 2 == 0
    for epoch in range(5):  # several epochs, so that sampled strategies cross from one pass of a task to the next
        sampler.set_epoch(epoch)
        rank0, rank1 = shards(sampler)
        assert len(rank0) == len(rank1) == len(sampler) // 2 == len(BatchSamplerShard(sampler, 2, 0))
        for step, (batch0, batch1) in enumerate(zip(rank0, rank1)):
            assert_one_step(sampler, batch0, batch1, step)


def test_sharded_proportional_epoch_covers_every_example() -> None:
    sampler = MultiTaskBatchSampler(SHARD_SIZES, batch_size=3, num_replicas=2, seed=7)
    rank0, rank1 = shards(sampler)
    seen = Counter(chain.from_iterable(rank0 + rank1))
    assert set(seen) == set(range(34))  # nothing dropped
    for name, offset, size in zip(sampler.task_names, sampler.offsets, sampler.task_sizes):
        counts = [seen[offset + i] for i in range(size)]
        groups = -(-size // 6)
        # Duplicates only from wrapping the task's last group around: exactly enough to fill it.
        assert sum(counts) == groups * 6, name
        assert sum(c - 1 for c in counts) == groups * 6 - size, name
    # Task "d" (2 examples) still gives each rank a full batch.
    assert Counter(batch_task(b, sampler) for b in rank0) == {"a": 2, "b": 1, "c": 3, "d": 1}


def test_sharded_drop_last_drops_only_incomplete_groups() -> None:
    sampler = MultiTaskBatchSampler(SHARD_SIZES, batch_size=3, num_replicas=2, drop_last=True, seed=7)
    rank0, rank1 = shards(sampler)
    assert len(rank0) == len(rank1) == len(sampler) // 2 == 1 + 0 + 2 + 0
    seen = Counter(chain.from_iterable(rank0 + rank1))
    assert max(seen.values()) == 1
    assert len(seen) == 6 + 12  # one full group of "a", two of "c"


def test_prepare_data_loader_shards_the_batch_sampler() -> None:
    """The path the Trainer takes: a DataLoader with our batch sampler, wrapped by accelerate for each rank."""

    class Indexed(Dataset):
        """Rows that are their own global index, so a batch shows which examples it holds."""

        def __init__(self, offset: int, size: int) -> None:
            self.offset, self.size = offset, size

        def __len__(self) -> int:
            return self.size

        def __getitem__(self, index: int) -> int:
            return self.offset + index

    sampler = MultiTaskBatchSampler(SHARD_SIZES, batch_size=3, num_replicas=2, seed=7)
    concat = ConcatDataset([Indexed(offset, size) for offset, size in zip(sampler.offsets, sampler.task_sizes)])
    per_rank = []
    for rank in range(2):
        loader = prepare_data_loader(
            DataLoader(concat, batch_sampler=sampler), num_processes=2, process_index=rank, put_on_device=False
        )
        assert isinstance(loader.batch_sampler, BatchSamplerShard)
        assert len(loader) == len(sampler) // 2
        assert loader.total_batch_size == 6
        per_rank.append([batch.tolist() for batch in loader])
    assert per_rank[0] == shards(sampler)[0] and per_rank[1] == shards(sampler)[1]
    steps = list(zip(*per_rank))
    assert len(steps) == len(per_rank[0]) == len(per_rank[1])
    for step, (batch0, batch1) in enumerate(steps):
        assert_one_step(sampler, batch0, batch1, step)
    assert set(chain.from_iterable(per_rank[0] + per_rank[1])) == set(range(34))
