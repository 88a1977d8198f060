#!/usr/bin/env python
"""Peak memory of loading a train-scale Objects365 or Visual Genome annotation file, against a
list-of-dicts loader.

    python tools/measure_annotation_memory.py                           # 200k images, 3M boxes
    python tools/measure_annotation_memory.py --images 20000 --boxes 300000 --skip-baseline
    python tools/measure_annotation_memory.py --source vg              # 108,077 images, 5.4M regions

``--source vg`` writes VG's ``image_data.json``, ``region_descriptions.json`` (v1.2 keys, phrases
of 2-8 words) and a ``densecap_splits.json`` of 77,398 / 5,000 / 5,000 images, and measures
``sca_vg_densecap_train`` the same way; its baseline (``list of dicts``) is ``json.load`` of both
files and a detectron2 dict per image with a dict per region (``sentences``) for the train split,
then detectron2's serialized list of them, as a ``DatasetCatalog`` loader returning a list and
``build_detection_train_loader`` would hold them.

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
VG_SCENARIOS = ("import only", "sca records", "train loader", "list of dicts")
DATASET = {"objects365": "sca_objects365_v2_train", "vg": "sca_vg_densecap_train"}
VG_SPLIT_SIZES = (77_398, 5_000, 5_000)
_WORDS = ("man", "red", "shirt", "white", "cloud", "in", "the", "sky", "a", "tree", "green", "on", "of", "window", "car")


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


def write_synthetic_vg(vg_dir: Path, num_images: int, num_regions: int, seed: int = 0) -> None:
    """Stream VG-format ``image_data.json`` / ``region_descriptions.json`` (v1.2 keys) and a
    ``densecap_splits.json`` of 77,398 / 5,000 / 5,000 of the images (no image files)."""
    from sca.data.datasets.synthetic_vg_trees import vg_image_url

    rng = np.random.default_rng(seed)
    widths, heights = rng.integers(400, 1400, num_images), rng.integers(300, 1100, num_images)
    counts = np.bincount(rng.integers(0, num_images, num_regions), minlength=num_images)
    vg_dir.mkdir(parents=True, exist_ok=True)
    images = [{"width": int(w), "url": vg_image_url(i + 1, "VG_100K" if i % 2 else "VG_100K_2"), "height": int(h),
               "image_id": i + 1, "coco_id": None, "flickr_id": None} for i, (w, h) in enumerate(zip(widths, heights))]
    (vg_dir / "image_data.json").write_text(json.dumps(images))
    ids = rng.permutation(num_images) + 1
    train, val, test = VG_SPLIT_SIZES
    splits = {"train": ids[:train].tolist(), "val": ids[train : train + val].tolist(), "test": ids[train + val : train + val + test].tolist()}
    (vg_dir / "densecap_splits.json").write_text(json.dumps(splits))
    partial = vg_dir / "region_descriptions.json.partial"
    region_id = 0
    with open(partial, "w") as f:
        f.write("[")
        for i in tqdm(range(num_images), desc="writing regions", unit="img", dynamic_ncols=True):
            n, w, h = int(counts[i]), widths[i], heights[i]
            x, y = (rng.random(n) * w * 0.9).astype(int), (rng.random(n) * h * 0.9).astype(int)
            bw, bh = (rng.random(n) * (w - x)).astype(int) + 1, (rng.random(n) * (h - y)).astype(int) + 1
            lengths = rng.integers(2, 9, n)
            words = rng.integers(0, len(_WORDS), lengths.sum())
            starts = np.concatenate([[0], np.cumsum(lengths)])
            parts = []
            for k in range(n):
                region_id += 1
                phrase = " ".join(_WORDS[j] for j in words[starts[k] : starts[k + 1]])
                parts.append(f'{{"region_id": {region_id}, "width": {bw[k]}, "height": {bh[k]}, "image_id": {i + 1}, '
                             f'"phrase": "{phrase}", "y": {y[k]}, "x": {x[k]}}}')
            f.write((", " if i else "") + f'{{"regions": [{", ".join(parts)}], "id": {i + 1}}}')
        f.write("]")
    os.replace(partial, vg_dir / "region_descriptions.json")


def load_vg_list_of_dicts(vg_dir: str) -> list[dict]:
    """The baseline: both files ``json.load``-ed, one detectron2 dict per train image and per region."""
    from detectron2.structures import BoxMode

    with open(os.path.join(vg_dir, "densecap_splits.json")) as f:
        train = set(json.load(f)["train"])
    with open(os.path.join(vg_dir, "image_data.json")) as f:
        images = {image["image_id"]: image for image in json.load(f) if image["image_id"] in train}
    with open(os.path.join(vg_dir, "region_descriptions.json")) as f:
        regions = json.load(f)
    dicts = []
    for entry in regions:
        image = images.get(entry["id"])
        if image is None:
            continue
        annotations = [{"id": r["region_id"], "bbox": [r["x"], r["y"], r["width"], r["height"]], "bbox_mode": BoxMode.XYWH_ABS,
                        "category_id": 0, "iscrowd": 0, "sentences": [r["phrase"]]} for r in entry["regions"]]
        dicts.append({"file_name": os.path.join(vg_dir, "VG_100K", f"{entry['id']}.jpg"), "image_id": entry["id"],
                      "height": image["height"], "width": image["width"], "annotations": annotations})
    return dicts


def _memory_mb() -> dict[str, float]:
    """Current (``VmRSS``) and peak (``VmHWM``) resident memory of this process, in MB."""
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, kb, _ = line.split()
                values[key[:-1]] = int(kb) / 1024
    return values


def build_project_train_loader(dataset: str = DATASET["objects365"]):
    """The project's training loader for a single source of ``dataset``."""
    from sca.config import DataConfig, MapperConfig, PromptConfig, SourceConfig
    from sca.data.caption_tokenizer import CaptionTokenizer
    from sca.data.multi_source import build_train_loader

    mapper = MapperConfig(image_size=64, mask_size=16, prompt=PromptConfig(weights={"box": 1.0}))
    cfg = DataConfig(name="memory", sources={"memory": SourceConfig(train_datasets=[dataset], mapper=mapper)},
                     num_workers=0)
    seed = {"seed": 0} if "seed" in inspect.signature(build_train_loader).parameters else {}
    return build_train_loader(cfg, CaptionTokenizer.from_config("", max_tokens=8), **seed)


def run_scenario(name: str, root: str, source: str = "objects365") -> dict:
    """One scenario, in this process (called in a fresh child). The peak is the kernel's
    high-water mark, reset after the imports (``/proc/self/clear_refs``)."""
    import sca  # noqa: F401
    import sca.data.datasets  # noqa: F401
    from detectron2.data import DatasetCatalog, DatasetFromList
    from detectron2.data.datasets import load_coco_json

    from sca.data.datasets.register_objects365 import register_all_objects365
    from sca.data.datasets.register_vg import register_all_vg

    register = register_all_vg if source == "vg" else register_all_objects365

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    result = {"scenario": name, "rss_after_imports_mb": _memory_mb()["VmRSS"]}
    start, cpu_start = time.perf_counter(), time.process_time()
    images = boxes = 0
    if name != "import only":
        if name.startswith("sca records"):
            register(root)
            records = DatasetCatalog.get(DATASET[source])
            result["compact_mb"] = records.nbytes / 2**20
            if name.endswith("serialized"):
                records = DatasetFromList(records, copy=False, serialize=True)
                result["serialized_mb"] = (records._addr.nbytes + records._lst.nbytes) / 2**20
        elif name == "train loader":
            register(root)
            build_project_train_loader(DATASET[source])
            records = []
        elif name == "list of dicts":
            dicts = load_vg_list_of_dicts(os.path.join(root, "vg"))
            records = DatasetFromList(dicts, copy=False, serialize=True)
            del dicts
        else:
            json_file = os.path.join(root, "objects365/annotations/zhiyuan_objv2_train.json")
            dicts = load_coco_json(json_file, os.path.join(root, "objects365/train"))
            records = DatasetFromList(dicts, copy=False, serialize=True)
            del dicts
        for i in range(len(records)):
            images += 1
            boxes += len(records[i]["annotations"])
    memory = _memory_mb()
    result.update(images=images, boxes=boxes, seconds=time.perf_counter() - start, cpu_seconds=time.process_time() - cpu_start,
                  peak_rss_mb=memory["VmHWM"], rss_after_mb=memory["VmRSS"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=os.path.join(os.path.expanduser("~"), ".cache", "sca", "memory-fixtures"))
    parser.add_argument("--source", choices=sorted(DATASET), default="objects365")
    parser.add_argument("--images", type=int, help="default: 200,000 (objects365), 108,077 (vg)")
    parser.add_argument("--boxes", type=int, help="default: 3,000,000 (objects365), 5,400,000 (vg)")
    parser.add_argument("--skip-baseline", action="store_true", help="skip detectron2's load_coco_json (needs several GB)")
    parser.add_argument("--scenario", help=argparse.SUPPRESS)  # internal: run one scenario and print JSON
    args = parser.parse_args()
    vg = args.source == "vg"
    args.images = args.images or (108_077 if vg else 200_000)
    args.boxes = args.boxes or (5_400_000 if vg else 3_000_000)
    root = Path(args.root) / f"{args.source + '-' if vg else ''}{args.images}-images-{args.boxes}-boxes"
    if args.scenario:
        print(json.dumps(run_scenario(args.scenario, str(root), args.source)))
        return
    json_file = root / ("vg/region_descriptions.json" if vg else "objects365/annotations/zhiyuan_objv2_train.json")
    if not json_file.exists():
        write_synthetic_vg(json_file.parent, args.images, args.boxes) if vg else write_synthetic_json(json_file, args.images, args.boxes)
    print(f"{json_file}: {json_file.stat().st_size / 2**20:.0f} MB, {args.images} images, {args.boxes} boxes")
    results = []
    scenarios = VG_SCENARIOS if vg else SCENARIOS
    for scenario in scenarios[:-1] if args.skip_baseline else scenarios:
        print(f"running: {scenario} ...", flush=True)
        command = [sys.executable, __file__, "--root", args.root, "--images", str(args.images), "--boxes", str(args.boxes),
                   "--source", args.source, "--scenario", scenario]
        child = subprocess.run(command, capture_output=True, text=True)
        if child.returncode:
            sys.exit(f"{scenario} failed:\n{child.stderr[-3000:]}")
        results.append(json.loads(child.stdout.strip().splitlines()[-1]))
    print(f"\n{'scenario':<30} {'peak RSS':>10} {'peak - imports':>15} {'held after':>11} {'time':>7} {'CPU':>7}  records")
    for r in results:
        held = ", ".join(f"{key[:-3]} {r[key]:.0f} MB" for key in ("compact_mb", "serialized_mb") if key in r)
        print(f"{r['scenario']:<30} {r['peak_rss_mb']:7.0f} MB {r['peak_rss_mb'] - r['rss_after_imports_mb']:12.0f} MB "
              f"{r['rss_after_mb'] - r['rss_after_imports_mb']:8.0f} MB {r['seconds']:6.1f}s {r['cpu_seconds']:6.1f}s  {held}")
        if r["images"] and (r["images"], r["boxes"]) != (results[1]["images"], results[1]["boxes"]):
            print(f"  (read {r['images']} images, {r['boxes']} boxes)")

if __name__ == "__main__":
    main()
