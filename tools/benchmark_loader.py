"""Benchmark the multi-source training loader: images/s and peak memory, against the zip of one
detectron2 loader per source (the OpenSeeD / X-Decoder ``JointLoader`` pattern), in one run.

    python tools/benchmark_loader.py                       # both parts, defaults below
    python tools/benchmark_loader.py --workers 2 --steps 100 --image-size 1024
    python tools/benchmark_loader.py --skip-compare --records 120000 --rss-workers 1 2 4

Part 1 (compare): three sources on the same records, mappers and images — the demo (panoptic
mapper), the demo referring source (referring mapper) and the demo again with LSJ — each step
taking every source. This project's loader gets ``--workers`` processes for all sources; the
baseline gives each source's loader ``--workers`` (as its anchors do), so it runs 3x as many.
Part 2 (records): peak memory of this loader with 1, 2, 4 workers on a fixture of ``--records``
records (the three sources' records replicated), plus the same records held as Python lists
instead of serialized buffers, to show what copy-on-read costs.

Each configuration runs in a fresh process, twice: a *timed* run measures throughput (wall-clock
images/s over the timed steps, and CPU time, user + system of the whole process tree, per image)
with nothing else running; a *monitored* run samples its process tree (loader process + workers)
every 0.1 s for memory: the peak of the summed RSS (pages shared between processes counted in each,
as ``ps`` shows them) and of the summed USS (pages private to one process: what each extra process
really adds; unlike PSS it does not depend on how many other programs map the same libraries).
They are separate because reading a process's USS costs ~25 ms of CPU: sampling 7 processes every
0.1 s takes most of a core, which on a small machine distorts throughput, and more for the loader
with more processes. Part 1 alternates the two loaders' timed runs ``--repeats`` times and reports
medians (on a machine shared with other jobs wall-clock figures depend on the scheduler's share).
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import queue
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import psutil
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's ``sca``

SOURCES = {  # name: (dataset, task type, augmentation)
    "demo": ("sca_demo_train", "recognition", "none"),
    "demo_refs": ("sca_demo_refs_train", "caption", "none"),
    "demo_lsj": ("sca_demo_train", "recognition", "lsj"),
}


def data_config(args, dataset_suffix: str = ""):
    from sca.config import DataConfig, MapperConfig, SourceConfig

    return DataConfig(
        name="benchmark",
        sources={
            name: SourceConfig(
                train_datasets=[dataset + dataset_suffix],
                task_type=task_type,
                batch_size=args.batch_size,
                mapper=MapperConfig(image_size=args.image_size, mask_size=args.image_size // 4, augmentation=augmentation),
            )
            for name, (dataset, task_type, augmentation) in SOURCES.items()
        },
        num_workers=args.workers,
    )


class ZipOfDetectron2Loaders:
    """The baseline: one ``build_detection_train_loader`` per source (serialized records, infinite
    ``TrainingSampler``, its own ``num_workers``), zipped into ``{source: batch}`` every step."""

    def __init__(self, cfg, tokenizer):
        from detectron2.data import DatasetCatalog, build_detection_train_loader

        from sca.data.mappers import build_region_mapper
        from sca.data.region_batch import collate_regions

        self.loaders = {}
        for name, source in cfg.sources.items():
            mapper = build_region_mapper(
                source.train_datasets[0], source.mapper, is_train=True, tokenizer=tokenizer, source=name, task_type=source.task_type
            )
            self.loaders[name] = build_detection_train_loader(
                DatasetCatalog.get(source.train_datasets[0]),
                mapper=mapper,
                total_batch_size=source.batch_size,
                aspect_ratio_grouping=False,
                num_workers=cfg.num_workers,
                collate_fn=partial(collate_regions, pad_token_id=tokenizer.pad_token_id),
            )

    def __iter__(self):
        for batches in zip(*self.loaders.values()):
            yield dict(zip(self.loaders, batches))


def register_replicated(total: int) -> str:
    """Register each benchmark dataset again with its records replicated to ``total / 3`` records
    (distinct image ids and path strings, as in a real large dataset); returns the name suffix."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    suffix = f"_x{total}"
    per_source = -(-total // len(SOURCES))

    def replicate(name):
        records = DatasetCatalog.get(name)
        copies = []
        for image_id, record in zip(range(per_source), itertools.cycle(records)):
            copy = {**record, "image_id": image_id, "file_name": os.path.join(*os.path.split(record["file_name"]))}
            for key in ("segments_info", "annotations"):
                if key in record:
                    copy[key] = [dict(item) for item in record[key]]
            copies.append(copy)
        return copies

    for name in {dataset for dataset, _, _ in SOURCES.values()}:
        DatasetCatalog.register(name + suffix, partial(replicate, name))
        MetadataCatalog.get(name + suffix).set(**MetadataCatalog.get(name).as_dict() | {"name": name + suffix})
    return suffix


def measure(args, kind: str, workers: int, records: int, results, release) -> None:
    """Runs in a fresh process: build the loader, time ``args.steps`` steps after a warmup; then
    keep the loader (and its workers) alive until ``release`` is set, for a last memory sample."""
    import torch

    import sca  # noqa: F401
    from sca.data import datasets  # noqa: F401
    from sca.data.caption_tokenizer import CaptionTokenizer
    from sca.data.multi_source import MultiSourceDataset, build_train_loader

    torch.set_num_threads(1)
    args.workers = workers
    cfg = data_config(args, register_replicated(records) if records else "")
    tokenizer = CaptionTokenizer.from_config("", max_tokens=20)
    if kind == "baseline":
        loader = ZipOfDetectron2Loaders(cfg, tokenizer)
    else:
        loader = build_train_loader(cfg, tokenizer, seed=0)
        if kind == "lists":  # same loader, records as Python objects instead of serialized buffers
            from detectron2.data import DatasetCatalog

            records_lists = [DatasetCatalog.get(s.train_datasets[0]) for s in cfg.sources.values()]
            loader.dataset = MultiSourceDataset(loader.names, records_lists, loader.dataset.mappers)
    steps = iter(loader)
    for _ in range(args.warmup):
        next(steps)
    images, start, cpu_start = 0, time.perf_counter(), tree_cpu_seconds(psutil.Process())
    for _ in range(args.steps):
        images += sum(len(batch["image_ids"]) for batch in next(steps).values())
    elapsed, cpu = time.perf_counter() - start, tree_cpu_seconds(psutil.Process()) - cpu_start
    results.put((images / elapsed, 1000 * cpu / images))
    release.wait(60)


def tree_cpu_seconds(process: psutil.Process) -> float:
    """User + system CPU time of a process and its live descendants."""
    total = 0.0
    for member in [process] + process.children(recursive=True):
        times = member.cpu_times()
        total += times.user + times.system
    return total


def tree_memory(process: psutil.Process) -> tuple[int, int, int]:
    """(processes, summed RSS, summed USS) of a process and its descendants, in bytes."""
    members, rss, uss = 0, 0, 0
    for member in [process] + process.children(recursive=True):
        try:
            info = member.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        members, rss, uss = members + 1, rss + info.rss, uss + info.uss
    return members, rss, uss


def run(args, kind: str, workers: int, records: int = 0, monitored: bool = False) -> dict:
    """One configuration in a fresh process: throughput (timed run) or memory peaks (monitored run)."""
    context = multiprocessing.get_context("fork")  # this process has imported nothing heavy yet
    results, release = context.Queue(), context.Event()
    child = context.Process(target=measure, args=(args, kind, workers, records, results, release))
    child.start()
    tree, peak = psutil.Process(child.pid), (0, 0, 0)
    while child.is_alive() and results.empty():
        if monitored:
            peak = tuple(max(a, b) for a, b in zip(peak, tree_memory(tree)))
        time.sleep(0.1)
    try:
        images_per_s, cpu_ms_per_image = results.get(timeout=60)
    except queue.Empty:
        raise RuntimeError(f"{kind} with {workers} workers failed (exit code {child.exitcode})") from None
    if monitored:  # every worker is alive now: a short run could otherwise end between two samples
        peak = tuple(max(a, b) for a, b in zip(peak, tree_memory(tree)))
    release.set()
    child.join()
    if monitored:
        return {"kind": kind, "workers": workers, "records": records, "processes": peak[0], "rss_mib": peak[1] / 2**20,
                "uss_mib": peak[2] / 2**20}
    return {"kind": kind, "workers": workers, "records": records, "images_per_s": images_per_s, "cpu_ms": cpu_ms_per_image}


def summarize(runs: list[dict]) -> list[dict]:
    """One row per configuration: median throughput and CPU per image of its timed runs, highest
    memory peaks of its monitored runs."""
    rows = {}
    for run_ in runs:
        rows.setdefault((run_["kind"], run_["workers"], run_["records"]), []).append(run_)
    summary = []
    for (kind, workers, records), group in rows.items():
        timed = [g for g in group if "images_per_s" in g]
        monitored = [g for g in group if "rss_mib" in g]
        summary.append(
            {"kind": kind, "workers": workers, "records": records, "runs": len(timed),
             **{k: float(np.median([g[k] for g in timed])) for k in ("images_per_s", "cpu_ms")},
             **{k: max(g[k] for g in monitored) for k in ("processes", "rss_mib", "uss_mib")}}
        )
    return summary


def print_rows(rows: list[dict]) -> None:
    labels = {"ours": "multi-source (this project)", "baseline": "zip of detectron2 loaders", "lists": "multi-source, lists"}
    print(f"{'loader':<30}{'records':>9}{'workers':>8}{'procs':>6}{'timed':>6}{'images/s':>10}{'CPU ms/img':>11}{'peak RSS MiB':>13}{'peak USS MiB':>13}")
    for row in rows:
        records = row["records"] or "demo"
        print(f"{labels[row['kind']]:<30}{records:>9}{row['workers']:>8}{row['processes']:>6}{row['runs']:>6}"
              f"{row['images_per_s']:>10.1f}{row['cpu_ms']:>11.1f}{row['rss_mib']:>13.0f}{row['uss_mib']:>13.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="num_workers setting given to both loaders (part 1)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per source per step")
    parser.add_argument("--image-size", type=int, default=1024, help="model input side (SAM: 1024)")
    parser.add_argument("--steps", type=int, default=60, help="timed steps per configuration")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of each part-1 loader")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first (worker start-up)")
    parser.add_argument("--records", type=int, default=120_000, help="records of the part-2 fixture (all sources)")
    parser.add_argument("--rss-workers", type=int, nargs="+", default=[1, 2, 4], help="worker counts of part 2")
    parser.add_argument("--skip-compare", action="store_true")
    parser.add_argument("--skip-records", action="store_true")
    args = parser.parse_args()

    plan = []  # (kind, workers, records, monitored)
    if not args.skip_compare:
        compared = [("baseline", args.workers, 0), ("ours", args.workers, 0)]
        plan += [(*c, False) for c in compared] * args.repeats + [(*c, True) for c in compared]
    if not args.skip_records:
        configurations = [("ours", w, args.records) for w in args.rss_workers] + [("lists", max(args.rss_workers), args.records)]
        plan += [(*c, monitored) for c in configurations for monitored in (False, True)]
    rows = summarize([run(args, *item) for item in tqdm(plan, desc="runs (timed and monitored)", unit="run")])

    print(f"\n{len(SOURCES)} sources ({', '.join(SOURCES)}), batch {args.batch_size} each per step, "
          f"input {args.image_size}px, {args.steps} timed steps after {args.warmup}")
    print_rows(rows)
    if not args.skip_compare:
        baseline, ours = rows[0], rows[1]
        print(f"\nthis loader / baseline: throughput {ours['images_per_s'] / baseline['images_per_s']:.2f}x "
              f"(CPU per image {ours['cpu_ms'] / baseline['cpu_ms']:.2f}x), peak RSS {ours['rss_mib'] / baseline['rss_mib']:.2f}x, "
              f"peak USS {ours['uss_mib'] / baseline['uss_mib']:.2f}x (goal: >= 1.0x throughput at <= 0.5x RSS)")


if __name__ == "__main__":
    main()
