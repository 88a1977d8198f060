"""A streaming source's samples as a map-style dataset: sample ``i`` (counted shard after shard)
-> its record, read from its shard by index (nothing of the annotations is held in memory)."""

from __future__ import annotations

import os
from collections import OrderedDict

import numpy as np
import torch

from sca.data.streaming.captions import CaptionTable
from sca.data.streaming.formats import sa1b_record, sca_record
from sca.data.streaming.shard_list import Shard
from sca.data.streaming.tar_index import ShardCache

__all__ = ["ShardSamples"]


class ShardSamples(torch.utils.data.Dataset):
    """Records of a streaming source (see :mod:`sca.data.streaming.formats`).

    Args:
        shards: the shards with their sample counts.
        sample_format: ``"sca"`` or ``"sa1b"``.
        cache: the per-process shard cache (indexes, downloaded ``pipe:`` shards).
        captions: for ``sa1b``: a side-table path, with ``{shard}`` for one table per shard.
    """

    def __init__(self, shards: list[Shard], sample_format: str, cache: ShardCache, captions: str = ""):
        self.shards = shards
        self.starts = np.concatenate([[0], np.cumsum([s.num_samples for s in shards], dtype=np.int64)])
        self.format = sample_format
        self.cache = cache
        self.captions = captions
        self._tables: OrderedDict[str, CaptionTable] = OrderedDict()
        if sample_format == "sa1b" and "{shard}" not in captions:
            self._tables[""] = CaptionTable.load(captions)  # one table for all shards, loaded before the workers fork

    def __len__(self) -> int:
        return int(self.starts[-1])

    def locate(self, index: int) -> tuple[Shard, int]:
        """The shard holding sample ``index`` and its position in it."""
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} of {len(self)}")
        shard = int(np.searchsorted(self.starts, index, side="right")) - 1
        return self.shards[shard], index - int(self.starts[shard])

    def __getitem__(self, index: int) -> dict:
        shard, position = self.locate(index)
        sample = self.cache.index(shard.url).read(position)
        if self.format == "sa1b":
            return sa1b_record(sample, shard.url, self._table(shard.url))
        return sca_record(sample, shard.url)

    def _table(self, url: str) -> CaptionTable:
        if "" in self._tables:
            return self._tables[""]
        if url not in self._tables:
            name = os.path.basename(url.rstrip(" -").split()[-1]).removesuffix(".tar")
            self._tables[url] = CaptionTable.load(self.captions.format(shard=name))
            if len(self._tables) > self.cache.size:
                self._tables.popitem(last=False)
        return self._tables[url]
