#!/usr/bin/env python
"""Peak memory of loading a train-scale Objects365 annotation file, against detectron2's loader.

    python tools/measure_annotation_memory.py                           # 200k images, 3M boxes
    python tools/measure_annotation_memory.py --images 20000 --boxes 300000 --skip-baseline

Writes once (into ``--root``) a synthetic ``objects365/annotations/zhiyuan_objv2_train.json`` with
the release's keys and ``file_name`` prefixes (no image files: nothing here reads images), then
runs each scenario in a fresh process and reports its peak RSS (the kernel's ``VmHWM``,
interpreter, torch and detectron2 included), the peak above the RSS right after the imports (what
loading costs), the RSS still held after iterating (the records), and the wall time:

* ``import only``: the interpreter with ``sca`` and its datasets registered, nothing loaded (the floor);
* ``sca records``: register, ``DatasetCatalog.get("sca_objects365_v2_train")`` (streamed JSON ->
  compact :class:`BoxRecords`), then iterate over every record as a loader does (each dict built on
  access and dropped);
* ``sca records -> d2 serialized``: the same records handed to detectron2's ``DatasetFromList``
  (``serialize=True``: one pickled byte buffer), then iterated; what a loader that re-serializes holds;
* ``train loader``: ``sca.data.multi_source.build_train_loader`` for one Objects365 source (the
  records as this project's training loader holds them; no image is mapped);
* ``d2 load_coco_json`` (baseline): detectron2's own ``load_coco_json`` (``json.load`` + pycocotools
  index + a list of dicts), then its serialized list built from them, as
  ``register_coco_instances`` + ``build_detection_train_loader`` do.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's ``sca``
SCENARIOS = ("import only", "sca records", "sca records -> d2 serialized", "train loader", "d2 load_coco_json")


def write_synthetic_json(path: Path, num_images: int, num_boxes: int, seed: int = 0) -> None:
    """Stream a synthetic Objects365-format JSON (release keys, ``images/v1|v2/patchN/`` names)."""
    from sca.data.datasets.synthetic_detection_trees import objects365_file_name, objects365_release_categories

    rng = np.random.default_rng(seed)
    widths, heights = rng.integers(400, 1400, num_images), rng.integers(300, 1100, num_images)
    image_of_box = np.sort(rng.integers(0, num_images, num_boxes))
    partial = path.with_name(path.name + ".partial")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(partial, "w") as f:
        f.write('{"images": [')
        for i in tqdm(range(num_images), desc="writing images", unit="img", dynamic_ncols=True):
            image = {"height": int(heights[i]), "id": i + 1, "license": 1, "width": int(widths[i]),
                     "file_name": objects365_file_name(i + 1, i % 51), "url": ""}
            f.write((", " if i else "") + json.dumps(image))
        f.write('], "annotations": [')
        chunk = 100_000
        for start in tqdm(range(0, num_boxes, chunk), desc="writing boxes", unit="100k boxes", dynamic_ncols=True):
            index = image_of_box[start : start + chunk]
            w, h = widths[index], heights[index]
            x0, y0 = rng.random(len(index)) * w * 0.9, rng.random(len(index)) * h * 0.9
            bw, bh = rng.random(len(index)) * (w - x0), rng.random(len(index)) * (h - y0)
            columns = zip(range(start + 1, start + len(index) + 1), (bw * bh).tolist(), x0.tolist(), y0.tolist(), bw.tolist(),
                          bh.tolist(), (index + 1).tolist(), rng.integers(1, 366, len(index)).tolist())
            parts = [
                f'{{"id": {i}, "iscrowd": 0, "isfake": 0, "area": {area!r}, "isreflected": 0, '
                f'"bbox": [{x!r}, {y!r}, {w!r}, {h!r}], "image_id": {image_id}, "category_id": {category}}}'
                for i, area, x, y, w, h, image_id, category in columns
            ]
            f.write((", " if start else "") + ", ".join(parts))
        f.write('], "categories": ' + json.dumps(objects365_release_categories()) + ', "licenses": []}')
    os.replace(partial, path)


def _memory_mb() -> dict[str, float]:
    """Current (``VmRSS``) and peak (``VmHWM``) resident memory of this process, in MB."""
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, kb, _ = line.split()
                values[key[:-1]] = int(kb) / 1024
    return values


def build_project_train_loader():
    """The project's training loader for a single ``sca_objects365_v2_train`` source."""
    from sca.config import DataConfig, MapperConfig, PromptConfig, SourceConfig
    from sca.data.caption_tokenizer import CaptionTokenizer
    from sca.data.multi_source import build_train_loader

    mapper = MapperConfig(image_size=64, mask_size=16, prompt=PromptConfig(weights={"box": 1.0}))
    cfg = DataConfig(name="memory", sources={"objects365": SourceConfig(train_datasets=["sca_objects365_v2_train"], mapper=mapper)},
                     num_workers=0)
    seed = {"seed": 0} if "seed" in inspect.signature(build_train_loader).parameters else {}
    return build_train_loader(cfg, CaptionTokenizer.from_config("", max_tokens=8), **seed)


def run_scenario(name: str, root: str) -> dict:
    """One scenario, in this process (called in a fresh child). The peak is the kernel's
    high-water mark, reset after the imports (``/proc/self/clear_refs``)."""
    import sca  # noqa: F401
    import sca.data.datasets  # noqa: F401
    from detectron2.data import DatasetCatalog, DatasetFromList
    from detectron2.data.datasets import load_coco_json

    from sca.data.datasets.register_objects365 import register_all_objects365

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    result = {"scenario": name, "rss_after_imports_mb": _memory_mb()["VmRSS"]}
    start = time.perf_counter()
    images = boxes = 0
    if name != "import only":
        if name.startswith("sca records"):
            register_all_objects365(root)
            records = DatasetCatalog.get("sca_objects365_v2_train")
            result["compact_mb"] = records.nbytes / 2**20
            if name.endswith("serialized"):
                records = DatasetFromList(records, copy=False, serialize=True)
                result["serialized_mb"] = (records._addr.nbytes + records._lst.nbytes) / 2**20
        elif name == "train loader":
            register_all_objects365(root)
            build_project_train_loader()
            records = []
        else:
            json_file = os.path.join(root, "objects365/annotations/zhiyuan_objv2_train.json")
            dicts = load_coco_json(json_file, os.path.join(root, "objects365/train"))
            records = DatasetFromList(dicts, copy=False, serialize=True)
            del dicts
        for i in range(len(records)):
            images += 1
            boxes += len(records[i]["annotations"])
    memory = _memory_mb()
    result.update(images=images, boxes=boxes, seconds=time.perf_counter() - start,
                  peak_rss_mb=memory["VmHWM"], rss_after_mb=memory["VmRSS"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=os.path.join(os.path.expanduser("~"), ".cache", "sca", "memory-fixtures"))
    parser.add_argument("--images", type=int, default=200_000)
    parser.add_argument("--boxes", type=int, default=3_000_000)
    parser.add_argument("--skip-baseline", action="store_true", help="skip detectron2's load_coco_json (needs several GB)")
    parser.add_argument("--scenario", help=argparse.SUPPRESS)  # internal: run one scenario and print JSON
    args = parser.parse_args()
    root = Path(args.root) / f"{args.images}-images-{args.boxes}-boxes"
    if args.scenario:
        print(json.dumps(run_scenario(args.scenario, str(root))))
        return
    json_file = root / "objects365/annotations/zhiyuan_objv2_train.json"
    if not json_file.exists():
        write_synthetic_json(json_file, args.images, args.boxes)
    print(f"{json_file}: {json_file.stat().st_size / 2**20:.0f} MB, {args.images} images, {args.boxes} boxes")
    results = []
    for scenario in SCENARIOS[:-1] if args.skip_baseline else SCENARIOS:
        print(f"running: {scenario} ...", flush=True)
        command = [sys.executable, __file__, "--root", args.root, "--images", str(args.images), "--boxes", str(args.boxes),
                   "--scenario", scenario]
        child = subprocess.run(command, capture_output=True, text=True)
        if child.returncode:
            sys.exit(f"{scenario} failed:\n{child.stderr[-3000:]}")
        results.append(json.loads(child.stdout.strip().splitlines()[-1]))
    print(f"\n{'scenario':<30} {'peak RSS':>10} {'peak - imports':>15} {'held after':>11} {'time':>7}  records")
    for r in results:
        held = ", ".join(f"{key[:-3]} {r[key]:.0f} MB" for key in ("compact_mb", "serialized_mb") if key in r)
        print(f"{r['scenario']:<30} {r['peak_rss_mb']:7.0f} MB {r['peak_rss_mb'] - r['rss_after_imports_mb']:12.0f} MB "
              f"{r['rss_after_mb'] - r['rss_after_imports_mb']:8.0f} MB {r['seconds']:6.1f}s  {held}")
        if r["images"] and (r["images"], r["boxes"]) != (results[1]["images"], results[1]["boxes"]):
            print(f"  (read {r['images']} images, {r['boxes']} boxes)")

if __name__ == "__main__":
    main()
