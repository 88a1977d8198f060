"""Which sources take part in each training step, and which records each rank draws for them.

Everything here is a pure function of a seed shared by all ranks and of the step index, so every
rank sees the same sources at a given step (lockstep), ranks draw disjoint records, and a run
resumed at step k produces exactly the steps an uninterrupted run would have produced from k on.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

__all__ = ["SampleKey", "SourceSchedule", "SourceStream", "MultiSourceSampler"]

# Seed domains, so that schedule, permutations and per-sample seeds never share a random stream.
_SCHEDULE, _PERMUTATION, _SAMPLE = 1, 2, 3


@dataclass(frozen=True)
class SampleKey:
    """One sample to map: record ``record`` of source ``source``, with randomness from ``seed``."""

    source: int
    record: int
    seed: int


class SourceSchedule:
    """Source ``s`` takes part in step ``t`` when ``u[t, s] < ratios[s]``, with ``u`` uniform draws
    made in blocks of :attr:`BLOCK` steps from a generator seeded by ``(seed, t // BLOCK)``.

    A step in which no source is drawn takes one source, picked with probability proportional to
    its ratio, so that every step trains; a source's share of steps is then
    ``r + P(no source) * r / sum(r)`` (exactly ``r`` as soon as one source has ratio 1).

    Args:
        ratios: sampling ratio per source, in (0, 1].
        seed: shared by all ranks.
    """

    BLOCK = 1024

    def __init__(self, ratios: Sequence[float], seed: int):
        self.ratios = np.asarray(ratios, dtype=np.float64)
        if len(self.ratios) == 0 or not np.all((self.ratios > 0) & (self.ratios <= 1)):
            raise ValueError(f"sampling ratios must be in (0, 1], got {list(ratios)}")
        self.seed = seed
        self._cached: tuple[int, np.ndarray] | None = None

    def block(self, index: int) -> np.ndarray:
        """(BLOCK, S) bool: which sources take part in steps ``index * BLOCK ...``."""
        if self._cached is not None and self._cached[0] == index:
            return self._cached[1]
        draws = np.random.default_rng([self.seed, _SCHEDULE, index]).random((self.BLOCK, len(self.ratios) + 1))
        taken = draws[:, :-1] < self.ratios
        empty = ~taken.any(axis=1)
        cumulative = np.cumsum(self.ratios) / self.ratios.sum()
        fallback = np.minimum(np.searchsorted(cumulative, draws[:, -1], side="right"), len(self.ratios) - 1)
        taken[empty, fallback[empty]] = True
        self._cached = (index, taken)
        return taken

    def sources_at(self, step: int) -> np.ndarray:
        """Indices of the sources taking part in ``step``."""
        return np.flatnonzero(self.block(step // self.BLOCK)[step % self.BLOCK])

    def counts_before(self, step: int) -> np.ndarray:
        """(S,) int: in how many of the steps ``0 .. step-1`` each source took part."""
        counts = np.zeros(len(self.ratios), dtype=np.int64)
        full, rest = divmod(step, self.BLOCK)
        for index in range(full):
            counts += self.block(index).sum(axis=0)
        if rest:
            counts += self.block(full)[:rest].sum(axis=0)
        return counts

    def expected_share(self) -> np.ndarray:
        """(S,) the long-run fraction of steps each source takes part in."""
        p_empty = np.prod(1 - self.ratios)
        return self.ratios + p_empty * self.ratios / self.ratios.sum()


class SourceStream:
    """The infinite record stream of one source: epoch ``e`` is a permutation of the records drawn
    from ``(seed, source, e)``; position ``p`` of the stream is record ``perm_{p // N}[p % N]``.

    Args:
        num_records: records of the source (N).
        source: index of the source (part of the seeds).
        seed: shared by all ranks.
    """

    def __init__(self, num_records: int, source: int, seed: int):
        if num_records <= 0:
            raise ValueError(f"source {source} has no records")
        self.num_records = num_records
        self.source = source
        self.seed = seed
        self._permutations: dict[int, np.ndarray] = {}

    def record(self, position: int) -> int:
        epoch, offset = divmod(position, self.num_records)
        if epoch not in self._permutations:
            if len(self._permutations) >= 2:  # positions only move forward: keep this epoch and the last
                del self._permutations[min(self._permutations)]
            rng = np.random.default_rng([self.seed, _PERMUTATION, self.source, epoch])
            self._permutations[epoch] = rng.permutation(self.num_records)
        return int(self._permutations[epoch][offset])

    def key(self, position: int) -> SampleKey:
        sample_seed = np.random.SeedSequence([self.seed, _SAMPLE, self.source, position]).generate_state(1)[0]
        return SampleKey(self.source, self.record(position), int(sample_seed))

    def batch(self, count: int, rank: int, world_size: int, size: int) -> list[SampleKey]:
        """The keys of rank ``rank``'s batch in the ``count``-th step of this source: positions
        ``[count * W * B, (count + 1) * W * B)`` of the stream, rank ``r`` taking the ``r``-th run of ``B``.
        (Streaming sources plug in a stream with the same method: see :mod:`sca.data.streaming`.)"""
        first = (count * world_size + rank) * size
        return [self.key(p) for p in range(first, first + size)]


class MultiSourceSampler(Sampler):
    """Batch sampler of this rank's per-source batches, step after step from ``start_iter`` on:
    for each step, one list of ``batch_sizes[s]`` :class:`SampleKey` per source ``s`` scheduled at
    that step, in source order (:meth:`steps` gives the same lists grouped by step).

    The ``c``-th step in which source ``s`` takes part uses stream positions
    ``[c * W * B, (c + 1) * W * B)`` (``W`` ranks, ``B = batch_sizes[s]``), and rank ``r`` takes the
    ``r``-th run of ``B`` of them: ranks never share a position, and the positions a step uses
    depend only on the step index, not on what ran before in this process.

    Args:
        num_records: records per source.
        batch_sizes: images per rank per step, per source.
        ratios: sampling ratio per source.
        seed: shared by all ranks.
        rank, world_size: this process and the number of processes.
        start_iter: the first step to produce.
        streams: per source, the object whose ``batch(count, rank, world_size, size)`` gives the
            keys (``None`` or absent: a :class:`SourceStream` over ``num_records``).
    """

    def __init__(
        self,
        num_records: Sequence[int],
        batch_sizes: Sequence[int],
        ratios: Sequence[float],
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start_iter: int = 0,
        streams: Sequence | None = None,
    ):
        if not len(num_records) == len(batch_sizes) == len(ratios):
            raise ValueError("num_records, batch_sizes and ratios must have one entry per source")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.schedule = SourceSchedule(ratios, seed)
        streams = streams or [None] * len(num_records)
        self.streams = [stream or SourceStream(n, s, seed) for s, (n, stream) in enumerate(zip(num_records, streams))]
        self.batch_sizes = list(batch_sizes)
        self.rank = rank
        self.world_size = world_size
        self.start_iter = start_iter

    def steps(self) -> Iterator[list[list[SampleKey]]]:
        """For each step from ``start_iter`` on, the key lists of its sources."""
        counts = self.schedule.counts_before(self.start_iter)
        for step in itertools.count(self.start_iter):
            batches = []
            for source in self.schedule.sources_at(step):
                batches.append(self.streams[source].batch(counts[source], self.rank, self.world_size, self.batch_sizes[source]))
                counts[source] += 1
            yield batches

    def __iter__(self) -> Iterator[list[SampleKey]]:
        for batches in self.steps():
            yield from batches
