"""The order in which a streaming source's samples reach each rank: shards split across ranks,
shard order reseeded every epoch, shuffling within a bounded window.

Epoch ``e`` of a source permutes its shards with a generator seeded by ``(seed, source, e)`` and
lays their samples end to end (``T`` in all). Rank ``r`` of ``W`` takes the contiguous run
``[r T / W, (r + 1) T / W)`` of that sequence: each rank reads its own shards (a shard on a
boundary is shared by two neighbouring ranks), and the ranks' epochs differ by at most one sample
however unevenly samples fall into shards. Within the run, consecutive windows of
``shuffle_buffer`` samples are each permuted (seeded by ``(seed, source, rank, e, window)``):
the shuffle of a webdataset buffer of that size, while a worker's reads stay within the one or
two shards the window covers. Each rank's stream is infinite — it enters its next epoch as soon
as it has used its run — so every rank delivers a full batch at every step (lockstep), and within
an epoch no sample is used twice and none is left out.

Loader workers serve whole batches of keys (one worker per batch), so workers split the rank's
samples without ever sharing one. Everything is a pure function of the seed and the position in
the rank's stream, so batches do not depend on the number of workers and a resumed run continues
exactly (see :class:`~sca.data.source_schedule.MultiSourceSampler`).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from sca.data.source_schedule import SampleKey

__all__ = ["ShardedStream"]

# Seed domains, distinct from those of the catalog sources' streams.
_SHARD_ORDER, _WINDOW, _SAMPLE = 11, 12, 13


class ShardedStream:
    """Keys of one streaming source's samples for each rank and step (see the module docstring).

    Args:
        shard_sizes: samples per shard, in the source's shard order; a key's ``record`` indexes
            the samples in that order (shard after shard).
        source: index of the source (part of the seeds).
        seed: shared by all ranks.
        shuffle_buffer: samples shuffled together.
    """

    def __init__(self, shard_sizes: list[int], source: int, seed: int, shuffle_buffer: int):
        self.shard_sizes = np.asarray(shard_sizes, dtype=np.int64)
        self.shard_starts = np.concatenate([[0], np.cumsum(self.shard_sizes)])
        self.num_samples = int(self.shard_starts[-1])
        self.source = source
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        self._epochs: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._windows: OrderedDict[tuple, np.ndarray] = OrderedDict()

    def describe(self) -> dict:
        """What determines the stream (part of the loader's fingerprint)."""
        return {"shards": len(self.shard_sizes), "samples": self.num_samples, "shuffle_buffer": self.shuffle_buffer}

    def rank_range(self, rank: int, world_size: int) -> tuple[int, int]:
        """Rank ``rank``'s run ``[start, end)`` of every epoch's sample sequence."""
        start, end = rank * self.num_samples // world_size, (rank + 1) * self.num_samples // world_size
        if end <= start:
            raise ValueError(f"streaming source {self.source}: {self.num_samples} samples cannot feed {world_size} ranks")
        return start, end

    def _epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """The epoch's shard order and where each of its shards starts in the sample sequence."""
        if epoch not in self._epochs:
            order = np.random.default_rng([self.seed, _SHARD_ORDER, self.source, epoch]).permutation(len(self.shard_sizes))
            self._epochs[epoch] = (order, np.concatenate([[0], np.cumsum(self.shard_sizes[order])]))
            if len(self._epochs) > 2:
                self._epochs.popitem(last=False)
        return self._epochs[epoch]

    def _window(self, rank: int, epoch: int, window: int, length: int) -> np.ndarray:
        key = (rank, epoch, window)
        if key not in self._windows:
            rng = np.random.default_rng([self.seed, _WINDOW, self.source, rank, epoch, window])
            self._windows[key] = rng.permutation(length)
            if len(self._windows) > 4:
                self._windows.popitem(last=False)
        return self._windows[key]

    def record(self, position: int, rank: int, world_size: int) -> tuple[int, int]:
        """(epoch, sample index) at ``position`` of rank ``rank``'s stream."""
        start, end = self.rank_range(rank, world_size)
        epoch, offset = divmod(position, end - start)
        window, inside = divmod(offset, self.shuffle_buffer)
        window_start = window * self.shuffle_buffer
        length = min(self.shuffle_buffer, end - start - window_start)
        sequence_position = start + window_start + int(self._window(rank, epoch, window, length)[inside])
        order, starts = self._epoch(epoch)
        slot = int(np.searchsorted(starts, sequence_position, side="right")) - 1
        shard = int(order[slot])
        return epoch, int(self.shard_starts[shard] + sequence_position - starts[slot])

    def batch(self, count: int, rank: int, world_size: int, size: int) -> list[SampleKey]:
        """Rank ``rank``'s keys for the ``count``-th step of this source: positions
        ``[count * size, (count + 1) * size)`` of its own stream."""
        keys = []
        for position in range(count * size, (count + 1) * size):
            seed = np.random.SeedSequence([self.seed, _SAMPLE, self.source, rank, position]).generate_state(1)[0]
            keys.append(SampleKey(self.source, self.record(position, rank, world_size)[1], int(seed)))
        return keys
