#!/usr/bin/env python
"""Benchmark streaming sources: images/s against the catalog path on the same data, and peak RSS
with 1k versus 100k samples, in one run.

    python tools/benchmark_streaming.py                             # both parts, defaults below
    python tools/benchmark_streaming.py --steps 60 --repeats 3 --workers 2
    python tools/benchmark_streaming.py --skip-throughput --large 100000

Part 1 (throughput): the demo referring source (``sca_demo_refs_train``, 4,000 images, RLE masks,
three sentences per ref) trained through the multi-source loader twice — as the catalog source
(records in memory, JPEG files) and streamed from the shards ``tools/write_shards.py`` writes of
it (``--shard-size``) — with the same mapper settings, batch size and ``--workers``. Each timed
run is a fresh process: ``--steps`` steps after 10 warm-up steps; wall-clock images/s, and CPU time
(user + system of the process and its loader workers) per image. Runs alternate ``--repeats``
times; medians are reported.

Part 2 (memory): synthetic SA-1B shards (tiny 48x64 images, 1-4 masks each, 1,000 per shard, a
caption side table per shard) with ``--small`` and ``--large`` samples; each size streamed for
the same ``--rss-steps`` steps in a fresh process without workers (everything in one process),
reporting the process's peak RSS (the kernel's ``VmHWM``) and the RSS right after the imports.
The same with one side table for all shards shows what a single table costs. Fixtures are
written once into ``--root``.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def vm_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def run_loader(spec: dict, results) -> None:
    """In a fresh process: build the loader of ``spec`` and time its steps."""
    import torch

    import sca  # noqa: F401
    from sca.config import StreamConfig
    from sca.config_loading import load_config
    from sca.data import datasets  # noqa: F401
    from sca.data.caption_tokenizer import CaptionTokenizer
    from sca.data.multi_source import build_train_loader

    torch.set_num_threads(1)
    multiprocessing.set_start_method("fork", force=True)  # loader workers fork as under train_net.py (a spawned process would spawn them)
    after_imports = vm_kib("VmRSS")
    cfg = load_config(["data=demo_mix", f"data.num_workers={spec['workers']}", f"data.sources.demo_refs.batch_size={spec['batch_size']}",
                       "data.sources.demo_refs.sampling_ratio=1.0"]).data
    cfg.sources.pop("demo")
    source = cfg.sources["demo_refs"]
    if spec["kind"] != "catalog":
        source.train_datasets = []
        source.stream = StreamConfig(shards=[spec["shards"]], format=spec["format"], captions=spec.get("captions", ""))
    loader = build_train_loader(cfg, CaptionTokenizer.from_config("", max_tokens=20), seed=0)
    steps = iter(loader)
    collections.deque(itertools.islice(steps, spec["warmup"]), maxlen=0)  # warm-up steps, not timed
    process = psutil.Process()
    tree = [process, *process.children(recursive=True)]
    cpu_before = sum(sum(p.cpu_times()[:2]) for p in tree)
    start = time.perf_counter()
    images = sum(len(step["demo_refs"]["image_ids"]) for step in itertools.islice(steps, spec["steps"]))
    wall = time.perf_counter() - start
    cpu = sum(sum(p.cpu_times()[:2]) for p in [process, *process.children(recursive=True)]) - cpu_before
    results.put({"images": images, "wall": wall, "cpu": cpu, "peak_kib": vm_kib("VmHWM"), "after_imports_kib": after_imports})


def measure(spec: dict) -> dict:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=run_loader, args=(spec, results))
    process.start()
    result = results.get()
    process.join()
    return result


def write_sa1b_fixture(root: Path, samples: int) -> Path:
    """SA-1B shards of ``samples`` images (1,000 per shard), per-shard and single caption tables,
    and their shard list; written once."""
    from sca.data.datasets.synthetic_sa1b_shards import write_caption_table, write_sa1b_shards
    from sca.data.streaming.shard_list import Shard, write_shard_list

    folder = root / f"sa1b_{samples}"
    if (folder / "shards.json").exists():
        return folder
    sizes = [1000] * (samples // 1000) + ([samples % 1000] if samples % 1000 else [])
    paths, rows = write_sa1b_shards(folder, sizes, seed=0)
    write_caption_table(folder / "captions.jsonl", rows)
    start = 0
    for path, size in zip(paths, sizes):
        images = range(start + 1, start + size + 1)  # image ids are consecutive from 1
        write_caption_table(folder / f"{path.stem}.captions.jsonl", [r for r in rows if r["image_id"] in images])
        start += size
    write_shard_list(str(folder / "shards.json"), [Shard(str(p), n) for p, n in zip(paths, sizes)])
    return folder


def throughput(args) -> None:
    from sca.data import datasets  # noqa: F401

    shards_dir = args.root / "demo_refs_shards"
    if not (shards_dir / "shards.json").exists():
        import importlib.util

        spec = importlib.util.spec_from_file_location("write_shards", REPO / "tools" / "write_shards.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.write_shards(["sca_demo_refs_train"], shards_dir, args.shard_size)
    common = {"workers": args.workers, "batch_size": args.batch_size, "warmup": 10, "steps": args.steps}
    kinds = {"catalog (JPEG files, records in memory)": {"kind": "catalog"},
             "streamed (tools/write_shards.py shards)": {"kind": "stream", "shards": str(shards_dir / "shards.json"), "format": "sca"}}
    runs = {name: [] for name in kinds}
    for repeat in range(args.repeats):
        for name, spec in kinds.items():
            runs[name].append(measure({**common, **spec}))
            r = runs[name][-1]
            print(f"  run {repeat + 1}/{args.repeats} {name}: {r['images'] / r['wall']:.1f} images/s", flush=True)
    print(f"\nthroughput: {args.steps} steps x {args.batch_size} images, {args.workers} workers, medians of {args.repeats}")
    print("| loader | images/s | CPU ms/image |\n|---|---|---|")
    rates = {}
    for name, results in runs.items():
        rates[name] = statistics.median(r["images"] / r["wall"] for r in results)
        cpu = statistics.median(1000 * r["cpu"] / r["images"] for r in results)
        print(f"| {name} | {rates[name]:.1f} | {cpu:.1f} |")
    catalog, streamed = rates.values()
    print(f"streamed / catalog: {streamed / catalog:.2f}x")


def memory(args) -> None:
    print(f"\nmemory: {args.rss_steps} steps x {args.batch_size} images, no workers (one process)")
    print("| samples | side table | RSS after imports | peak RSS | images/s |\n|---|---|---|---|---|")
    for samples in (args.small, args.large):
        folder = write_sa1b_fixture(args.root, samples)
        tables = {"per shard": str(folder / "{shard}.captions.jsonl"), "one file": str(folder / "captions.jsonl")}
        for table, captions in tables.items():
            if args.side_table not in ("both", table.replace(" ", "-")):
                continue
            r = measure({"kind": "stream", "shards": str(folder / "shards.json"), "format": "sa1b", "captions": captions,
                         "workers": 0, "batch_size": args.batch_size, "warmup": 10, "steps": args.rss_steps})
            print(f"| {samples:,} | {table} | {r['after_imports_kib'] / 1024:.0f} MiB | {r['peak_kib'] / 1024:.0f} MiB | "
                  f"{r['images'] / r['wall']:.1f} |", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path.home() / ".cache" / "sca" / "benchmark_streaming")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shard-size", type=int, default=500)
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--rss-steps", type=int, default=200)
    parser.add_argument("--side-table", choices=["both", "per-shard", "one-file"], default="both", help="caption tables in part 2")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args(argv)
    args.root.mkdir(parents=True, exist_ok=True)
    import sca  # noqa: F401  (detectron2 compatibility before detectron2 is imported)

    if not args.skip_throughput:
        throughput(args)
    if not args.skip_memory:
        memory(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
