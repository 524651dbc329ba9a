"""Padding-free packing: group samples into packs that fill a token budget, one packed row per micro-batch.

:class:`PackedBatchSampler` is a ``batch_sampler`` for the training ``DataLoader``. For every epoch it

1. shuffles the sample indices with a generator seeded by ``(seed, epoch)``;
2. cuts the shuffled order into windows of ``window`` samples and packs each window by first-fit
   decreasing (FFD) on the samples' token lengths (``SupervisedDataset.lengths``), so that no pack exceeds
   ``max_tokens``;
3. brings the number of packs to a constant ``num_packs`` (see below) by splitting the fullest packs in two;
4. deals the packs to ranks in rounds of ``num_replicas * packs_per_batch``: the packs are sorted by tokens,
   cut into rounds of similar packs, and inside a round the samples are split between the ranks with token
   sums as equal as possible (longest sample to the lightest rank); the rounds are then shuffled. In every
   micro-step all ranks therefore process about the same number of tokens and none waits on another;
5. yields this rank's batches: the ``packs_per_batch`` packs of each round concatenated into one list of
   sample indices, which :class:`~qwenvl.data.collator.PackedCollator` turns into one row.

Every sample appears exactly once per epoch, and the batches are a pure function of (lengths, budget, seed,
epoch, ranks), so a resumed run that skips the batches it already trained sees the same packs as the run it
continues.

The number of packs per epoch must not change between epochs (the Trainer computes the steps per epoch once).
It is fixed from the lengths alone: ``G`` (the FFD pack count of all samples sorted, which does not depend on
the order) plus one pack per extra window, rounded up to a multiple of ``num_replicas * packs_per_batch``.
An epoch whose windows happen to need more packs than that falls back to FFD over all samples (exactly ``G``
packs, equal lengths shuffled), and an epoch that cannot be split to the target (fewer samples than packs,
e.g. a tiny dataset on many ranks) is completed with empty packs, which the collator turns into a
one-token placeholder that supervises nothing.
"""

from __future__ import annotations

import heapq
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, Dataset, Sampler
from transformers import TrainerCallback

logger = logging.getLogger(__name__)

DEFAULT_WINDOW = 4096


class _FirstFit:
    """First-fit bin packing in O(log bins) per item: a max segment tree over the bins' free space."""

    def __init__(self, capacity: int, max_bins: int) -> None:
        self.capacity = capacity
        self.size = 1 << max(0, (max_bins - 1).bit_length())
        self.free = [0] * (2 * self.size)
        self.bins: list[list[int]] = []

    def _set(self, leaf: int, value: int) -> None:
        node = leaf + self.size
        self.free[node] = value
        node //= 2
        while node:
            self.free[node] = max(self.free[2 * node], self.free[2 * node + 1])
            node //= 2

    def add(self, item: int, length: int) -> None:
        """Put ``item`` into the first bin with room for ``length`` tokens, opening a new bin if none has."""
        if self.free[1] >= length:
            node = 1
            while node < self.size:
                node = 2 * node if self.free[2 * node] >= length else 2 * node + 1
            leaf = node - self.size
            self.bins[leaf].append(item)
            self._set(leaf, self.free[node] - length)
            return
        self.bins.append([item])
        self._set(len(self.bins) - 1, self.capacity - length)


def first_fit_decreasing(indices: Sequence[int], lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Pack ``indices`` into lists whose summed ``lengths[i]`` is at most ``max_tokens``.

    Items are taken longest first; equal lengths keep their order in ``indices`` (so a shuffled input gives
    shuffled packs). Raises ``ValueError`` for an item longer than ``max_tokens``."""
    if not indices:
        return []
    order = sorted(indices, key=lambda i: -lengths[i])  # stable: ties keep the input order
    if lengths[order[0]] > max_tokens:
        raise ValueError(
            f"sample {order[0]} has {lengths[order[0]]} tokens, more than the pack budget of {max_tokens}; "
            "raise --packing_max_tokens to at least --model_max_length"
        )
    packer = _FirstFit(max_tokens, len(order))
    for i in order:
        packer.add(i, lengths[i])
    return packer.bins


def _split(pack: list[int], lengths: Sequence[int]) -> tuple[list[int], list[int]]:
    """Two non-empty halves of a pack with token sums as equal as possible (longest first, to the lighter)."""
    halves: tuple[list[int], list[int]] = ([], [])
    sums = [0, 0]
    for i in sorted(pack, key=lambda i: -lengths[i]):
        side = 0 if sums[0] <= sums[1] else 1
        halves[side].append(i)
        sums[side] += lengths[i]
    return halves


def split_to_count(packs: list[list[int]], lengths: Sequence[int], target: int) -> list[list[int]]:
    """Split the fullest packs (of two or more samples) until there are ``target`` packs, then add empty packs
    if no pack can be split any more. ``packs`` with more than ``target`` entries is an error."""
    if len(packs) > target:
        raise ValueError(f"{len(packs)} packs cannot be brought down to {target} by splitting")
    tokens = [sum(lengths[i] for i in p) for p in packs]
    heap = [(-t, k) for k, t in enumerate(tokens) if len(packs[k]) > 1]
    heapq.heapify(heap)
    out = list(packs)
    while len(out) < target and heap:
        _, k = heapq.heappop(heap)
        first, second = _split(out[k], lengths)
        out[k] = first
        out.append(second)
        for j in (k, len(out) - 1):
            if len(out[j]) > 1:
                heapq.heappush(heap, (-sum(lengths[i] for i in out[j]), j))
    out.extend([] for _ in range(target - len(out)))
    return out


def _deal_packs(packs: list[list[int]], tokens: list[int], ranks: int, per_rank: int) -> list[list[int]]:
    """Give each rank ``per_rank`` of the round's packs, largest pack to the rank with the fewest tokens."""
    loads = [0] * ranks
    shares: list[list[int]] = [[] for _ in range(ranks)]
    for k in sorted(range(len(packs)), key=lambda k: -tokens[k]):
        rank = min((r for r in range(ranks) if len(shares[r]) < per_rank), key=lambda r: (loads[r], r))
        shares[rank].extend(packs[k])
        loads[rank] += tokens[k]
    return shares


def _deal_round(
    packs: list[list[int]], lengths: Sequence[int], ranks: int, per_rank: int, max_tokens: int
) -> list[list[int]]:
    """Split one round's samples between ranks with token sums as equal as possible.

    The round's samples are re-dealt one by one, longest first, to the rank with the fewest tokens that
    still has room for it within its budget (``per_rank * max_tokens``); this evens out both the rounds of
    full packs and the half-empty ones at the end of an epoch. If some sample finds no room, the round's
    packs are dealt whole instead."""
    if ranks == 1:
        return [[i for p in packs for i in p]]
    budget = per_rank * max_tokens
    loads = [0] * ranks
    shares: list[list[int]] = [[] for _ in range(ranks)]
    for i in sorted((i for p in packs for i in p), key=lambda i: -lengths[i]):
        fits = [r for r in range(ranks) if loads[r] + lengths[i] <= budget]
        if not fits:
            return _deal_packs(packs, [sum(lengths[i] for i in p) for p in packs], ranks, per_rank)
        rank = min(fits, key=lambda r: (loads[r], r))
        shares[rank].append(i)
        loads[rank] += lengths[i]
    return shares


@dataclass(frozen=True)
class PackingSummary:
    """What one epoch's packing looks like (for the training log and the benchmark)."""

    num_samples: int
    num_packs: int
    num_empty_packs: int
    batches_per_rank: int
    packs_per_batch: int
    tokens: int
    max_tokens: int
    fill: float  # tokens / (num_packs * max_tokens)
    samples_per_pack: float
    rank_wait_share: float  # sum over steps of (heaviest rank - mean rank) / sum of heaviest, in tokens

    def describe(self) -> str:
        return (
            f"{self.num_samples} samples ({self.tokens:,} tokens) -> {self.num_packs} packs of <= "
            f"{self.max_tokens} tokens ({self.samples_per_pack:.1f} samples and {self.fill:.1%} of the "
            f"budget per pack on average, {self.num_empty_packs} empty); {self.batches_per_rank} batches of "
            f"{self.packs_per_batch} pack(s) per rank, {self.rank_wait_share:.2%} of rank time spent waiting "
            "for a heavier rank"
        )


class PackedBatchSampler(Sampler[list[int]]):
    """Token-budget packs of sample indices, balanced across ranks, deterministic for (seed, epoch).

    Args:
        lengths: token length of every sample (``SupervisedDataset.lengths``).
        max_tokens: most tokens in one pack.
        packs_per_batch: packs per micro-batch and rank (``--per_device_train_batch_size``); they are
            concatenated into one row of at most ``packs_per_batch * max_tokens`` tokens.
        num_replicas, rank: data-parallel world size and this process's rank.
        seed: base seed; epoch ``e`` uses the generator seeded with ``(seed, e)``.
        window: samples per FFD window (smaller: more random packs; larger: fuller packs).
    """

    def __init__(
        self,
        lengths: Sequence[int],
        max_tokens: int,
        packs_per_batch: int = 1,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        window: int = DEFAULT_WINDOW,
    ) -> None:
        if max_tokens < 1 or packs_per_batch < 1 or num_replicas < 1 or window < 1:
            raise ValueError("max_tokens, packs_per_batch, num_replicas and window must be positive")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside 0..{num_replicas - 1}")
        self.lengths = [int(x) for x in lengths]
        if not self.lengths:
            raise ValueError("no samples to pack")
        self.max_tokens = int(max_tokens)
        self.packs_per_batch = int(packs_per_batch)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.seed = int(seed)
        self.window = int(window)
        self.epoch = 0
        everything = first_fit_decreasing(range(len(self.lengths)), self.lengths, self.max_tokens)
        self.base_packs = len(everything)  # G: independent of the order
        windows = math.ceil(len(self.lengths) / self.window)
        round_size = self.num_replicas * self.packs_per_batch
        self.num_packs = math.ceil((self.base_packs + windows - 1) / round_size) * round_size

    # -- the epoch's plan ------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _rng(self, epoch: int, stream: int = 0) -> np.random.Generator:
        """The generator of ``epoch``: stream 0 shuffles the samples, stream 1 the order of the rounds."""
        return np.random.default_rng([self.seed, epoch, stream])

    def packs(self, epoch: int) -> list[list[int]]:
        """All ``num_packs`` packs of ``epoch`` (empty ones last), before they are dealt to ranks."""
        order = self._rng(epoch).permutation(len(self.lengths)).tolist()
        packs: list[list[int]] = []
        for start in range(0, len(order), self.window):
            packs.extend(
                first_fit_decreasing(order[start : start + self.window], self.lengths, self.max_tokens)
            )
        if len(packs) > self.num_packs:
            logger.info(
                "epoch %d: windowed packing needs %d packs > %d; packing all samples at once",
                epoch,
                len(packs),
                self.num_packs,
            )
            packs = first_fit_decreasing(order, self.lengths, self.max_tokens)
        return split_to_count(packs, self.lengths, self.num_packs)

    def rounds(self, epoch: int) -> list[list[list[int]]]:
        """``rounds[r][k]``: the sample indices rank ``k`` trains on in micro-step ``r`` of ``epoch``."""
        packs = self.packs(epoch)
        tokens = [sum(self.lengths[i] for i in p) for p in packs]
        by_size = sorted(range(len(packs)), key=lambda k: (-tokens[k], k))
        size = self.num_replicas * self.packs_per_batch
        rounds = [
            _deal_round(
                [packs[k] for k in by_size[start : start + size]],
                self.lengths,
                self.num_replicas,
                self.packs_per_batch,
                self.max_tokens,
            )
            for start in range(0, len(by_size), size)
        ]
        shuffle = self._rng(epoch, stream=1).permutation(len(rounds)).tolist()
        return [rounds[r] for r in shuffle]

    def batches(self, epoch: int, rank: int | None = None) -> list[list[int]]:
        """The batches (lists of sample indices) ``rank`` (default: this sampler's) trains on in ``epoch``."""
        rank = self.rank if rank is None else rank
        return [r[rank] for r in self.rounds(epoch)]

    def summary(self, epoch: int = 0) -> PackingSummary:
        rounds = self.rounds(epoch)
        packs = self.packs(epoch)
        total = sum(self.lengths)
        waiting = heaviest = 0.0
        for r in rounds:
            loads = [sum(self.lengths[i] for i in share) for share in r]
            waiting += max(loads) - sum(loads) / len(loads)
            heaviest += max(loads)
        return PackingSummary(
            num_samples=len(self.lengths),
            num_packs=len(packs),
            num_empty_packs=sum(1 for p in packs if not p),
            batches_per_rank=len(rounds),
            packs_per_batch=self.packs_per_batch,
            tokens=total,
            max_tokens=self.max_tokens,
            fill=total / (len(packs) * self.max_tokens),
            samples_per_pack=len(self.lengths) / len(packs),
            rank_wait_share=waiting / heaviest if heaviest else 0.0,
        )

    # -- Sampler protocol -------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches(self.epoch)

    def __len__(self) -> int:
        return self.num_packs // (self.num_replicas * self.packs_per_batch)


# ------------------------------------------------------------------------------------ Trainer wiring
class PackedEpochCallback(TrainerCallback):
    """Tells the sampler which epoch starts, counted as the Trainer counts it (``global_step // steps per
    epoch``), before the epoch's dataloader iterator is created. The Trainer's own ``set_epoch`` calls do not
    reach a batch sampler in every case (e.g. a resumed run whose dataloader skips batches on several ranks),
    so a resumed run relies on this to rebuild the epoch's packs."""

    def __init__(self, sampler: PackedBatchSampler, steps_per_epoch: int) -> None:
        self.sampler = sampler
        self.steps_per_epoch = max(int(steps_per_epoch), 1)

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.sampler.set_epoch(state.global_step // self.steps_per_epoch)


def packed_dataloader(
    dataset: Dataset,
    sampler: PackedBatchSampler,
    collate_fn: Any,
    args: Any,
) -> DataLoader:
    """A ``DataLoader`` over ``dataset`` whose batches come from ``sampler``, with the Trainer's worker
    settings (``args`` is a ``TrainingArguments``)."""
    from transformers.trainer_utils import seed_worker

    workers = int(args.dataloader_num_workers)
    params: dict[str, Any] = {
        "batch_sampler": sampler,
        "collate_fn": collate_fn,
        "num_workers": workers,
        "pin_memory": args.dataloader_pin_memory,
        "worker_init_fn": partial(seed_worker, num_workers=workers, rank=args.process_index),
    }
    if workers > 0:
        params["persistent_workers"] = args.dataloader_persistent_workers
        if args.dataloader_prefetch_factor is not None:
            params["prefetch_factor"] = args.dataloader_prefetch_factor
    return DataLoader(dataset, **params)


def unshard(loader: Any, sampler: PackedBatchSampler) -> None:
    """``accelerator.prepare`` wraps a batch sampler in ``BatchSamplerShard``, which would deal every
    ``world_size``-th batch to each rank; the packed sampler already yields this rank's batches only, so the
    wrapper is made a pass-through (as the Trainer does for its own rank-aware batch sampler)."""
    shard = getattr(loader, "batch_sampler", None)
    if shard is not sampler and getattr(shard, "batch_sampler", None) is sampler:
        shard.num_processes = 1
        shard.process_index = 0


__all__ = [
    "DEFAULT_WINDOW",
    "PackedBatchSampler",
    "PackedEpochCallback",
    "PackingSummary",
    "first_fit_decreasing",
    "packed_dataloader",
    "split_to_count",
    "unshard",
]
