"""Which shards a streaming source reads, and how many samples each holds.

A source names shards as tar paths, brace patterns (``/data/sa_{000000..000999}.tar``, expanded by
webdataset's :func:`~webdataset.shardlists.expand_urls`), ``pipe:`` commands, or shard-list JSON
files ``{"shardlist": [{"url": ..., "nsamples": ...}, ...]}`` (the format of webdataset's indexed
datasets, written by ``tools/index_shards.py`` and ``tools/write_shards.py``; relative URLs are
relative to the JSON file). The stream order needs every shard's sample count before training:
shards named without a count are indexed at start-up (headers only), which suits local shard sets
of modest size; for SA-1B-scale sets and for ``pipe:`` shards write the JSON once.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

from tqdm import tqdm
from webdataset.shardlists import expand_urls

from sca.data.streaming.tar_index import ShardCache

__all__ = ["Shard", "resolve_shards", "write_shard_list"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shard:
    url: str
    num_samples: int


def resolve_shards(specs: list[str], cache: ShardCache) -> list[Shard]:
    """The shards named by ``specs``, in order, with their sample counts (indexing, with a progress
    bar, those whose count is not given by a shard-list JSON; one that is not a readable tar is
    logged and counts 0 samples)."""
    shards, unknown = [], []
    for spec in specs:
        if spec.endswith(".json") and not spec.startswith("pipe:"):
            with open(spec) as f:
                listing = json.load(f)
            base = os.path.dirname(os.path.abspath(spec))
            for entry in listing["shardlist"]:
                url = entry["url"]
                if not url.startswith("pipe:") and not os.path.isabs(url):
                    url = os.path.join(base, url)
                shards.append(Shard(url, int(entry["nsamples"])))
        else:
            for url in expand_urls(spec):
                unknown.append(len(shards))
                shards.append(Shard(url, -1))
    for position in tqdm(unknown, desc="indexing shards", unit="shard", disable=len(unknown) < 10):
        url = shards[position].url
        if not url.startswith("pipe:") and not os.path.isfile(url):
            raise FileNotFoundError(f"shard {url} does not exist")
        try:
            shards[position] = Shard(url, len(cache.index(url)))
        except ValueError as error:  # not a tar at all (e.g. cut inside its first header)
            logger.warning("skipped shard %s: %s", url, error)
            shards[position] = Shard(url, 0)
    return shards


def write_shard_list(path: str, shards: list[Shard]) -> None:
    """Write the shard-list JSON (URLs under the JSON's folder are stored relative to it)."""
    base = os.path.dirname(os.path.abspath(path))
    entries = []
    for shard in shards:
        url = shard.url
        if not url.startswith("pipe:") and os.path.abspath(url).startswith(base + os.sep):
            url = os.path.relpath(os.path.abspath(url), base)
        entries.append({"url": url, "nsamples": shard.num_samples})
    with open(path, "w") as f:
        json.dump({"shardlist": entries}, f, indent=1)
