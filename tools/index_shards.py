#!/usr/bin/env python
"""Write the shard list (sample count per shard) of existing tar shards, e.g. SA-1B's.

    python tools/index_shards.py '/data/sa1b/sa_{000000..000999}.tar' /data/sa1b/shards.json

A streaming source must know every shard's sample count before training; naming this JSON in
``data.sources.<name>.stream.shards`` saves indexing the shards at every start-up (and is required
in practice for ``pipe:`` shards, which are otherwise downloaded at start-up to be counted).
Truncated shards are reported (their complete samples are counted).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sca.data.streaming.shard_list import resolve_shards, write_shard_list  # noqa: E402
from sca.data.streaming.tar_index import ShardCache  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("shards", nargs="+", help="tar paths, brace patterns or pipe: commands")
    parser.add_argument("out", help="shard-list JSON to write")
    parser.add_argument("--cache-dir", default="", help="where pipe: shards are downloaded while counted")
    args = parser.parse_args(argv)
    shards = resolve_shards(args.shards, ShardCache(args.cache_dir, size=1))
    write_shard_list(args.out, shards)
    print(f"{len(shards)} shards, {sum(s.num_samples for s in shards)} samples -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
