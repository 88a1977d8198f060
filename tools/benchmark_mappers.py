#!/usr/bin/env python
"""Mapper throughput, one worker: SCA's region mappers against detectron2's stock
``DatasetMapper`` on the same images in the same run.

    python tools/benchmark_mappers.py                      # every source, 24 images each
    python tools/benchmark_mappers.py --num-images 50 --passes 5 --root /tmp/sca-bench
    python tools/benchmark_mappers.py --sources objects365 v3det

Fixtures of realistic size are written once into ``--root``/<N>-images in the official layouts (COCO-like:
640x480, ~4 stuff + up to 14 things per image; ADE-like: 683x512, raw ``ADEChallengeData2016``
converted by ``datasets/prepare_ade20k_pan_seg.py``, up to 24 things; Objects365-like and
V3Det-like: 640x480, up to 16 boxes; RefCOCOg-like: 640x480 in the refer layout, polygon masks,
the ``google`` train split). Each mapper runs training LSJ at 1024 (flip, ResizeScale
0.1-2.0, FixedSizeCrop) over every image, ``--passes`` times, interleaved with the others; the
median pass is reported in images/s and regions/s:

* ``jpeg decode``: ``read_image`` alone (the floor every mapper pays);
* ``d2 boxes``: stock ``DatasetMapper``, boxes only;
* ``d2 masks`` (sources with masks): stock ``DatasetMapper`` with instance bitmasks (from RLE, or
  from the polygons for RefCOCO) and boxes recomputed from them: every mask at full resolution;
* ``sca regions``: the source's region mapper (:class:`PanopticRegionMapper`,
  :class:`BoxRegionMapper`, :class:`ReferringRegionMapper`), ``--max-regions`` sampled regions with box, points and, where the
  source has masks, a 256x256 mask (prompt mix box/point/mask, or box/point) plus caption tokens.

Each source's closing line gives the ratio of ``sca regions`` to ``d2 masks`` (goal for panoptic: >= 2) and to
``d2 boxes``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's ``sca``

import sca  # noqa: E402,F401  (detectron2 compatibility first)
from detectron2.data import DatasetCatalog, DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.structures import BoxMode
from panopticapi.utils import rgb2id
from PIL import Image
from pycocotools import mask as mask_util

from sca.config import MapperConfig, PromptConfig
from sca.data.caption_tokenizer import CaptionTokenizer
from sca.data.datasets.register_ade20k_panoptic import register_all_ade20k_panoptic
from sca.data.datasets.register_coco_panoptic import register_all_coco_panoptic
from sca.data.datasets.register_objects365 import register_all_objects365
from sca.data.datasets.register_refcoco import register_all_refcoco
from sca.data.datasets.register_v3det import register_all_v3det
from sca.data.datasets.synthetic_detection_trees import write_objects365_tree, write_v3det_tree
from sca.data.datasets.synthetic_refer_trees import write_refer_tree
from sca.data.datasets.synthetic_trees import write_ade20k_raw_tree, write_coco_panoptic_tree
from sca.data.mappers import build_region_mapper
from sca.data.mappers.augmentation import build_augmentation
from sca.data.record_regions import segmentation_mask

SOURCES = {  # --sources choice: (label, registered split, annotation family)
    "coco": ("COCO-like 640x480", "sca_coco_panoptic_val", "panoptic"),
    "ade20k": ("ADE-like 683x512", "sca_ade20k_panoptic_val", "panoptic"),
    "objects365": ("Objects365-like 640x480", "sca_objects365_v2_val", "boxes"),
    "v3det": ("V3Det-like 640x480", "sca_v3det_val", "boxes"),
    "refcocog": ("RefCOCOg-like 640x480", "sca_refcocog_google_train", "referring"),
}


def prepare_fixtures(root: Path, num_images: int, sources: list[str]) -> None:
    """Write each family's trees into ``root`` once (a marker file per family says they are complete)."""
    families = {SOURCES[source][2] for source in sources}
    if "panoptic" in families and not (root / "complete").exists():
        print(f"writing panoptic fixtures into {root} ...")
        write_coco_panoptic_tree(root, "val", num_images, seed=1, size=(640, 480), max_things=14, crowd_probability=0.05)
        for split, seed in (("train", 2), ("val", 3)):
            write_ade20k_raw_tree(root, split, num_images if split == "val" else 1, seed=seed, size=(683, 512), max_things=24)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        subprocess.run(
            [sys.executable, str(REPO / "datasets" / "prepare_ade20k_pan_seg.py"), "--root", str(root), "--workers", "1"],
            check=True, env=env,
        )
        (root / "complete").touch()
    if "boxes" in families and not (root / "complete-boxes").exists():
        print(f"writing box fixtures into {root} ...")
        write_objects365_tree(root, "val", num_images, seed=4, size=(640, 480), max_boxes=16)
        write_v3det_tree(root, "val", num_images, seed=5, size=(640, 480), max_boxes=16)
        (root / "complete-boxes").touch()
    if "referring" in families and not (root / "complete-referring").exists():
        print(f"writing referring fixtures into {root} ...")
        write_refer_tree(root, 2 * num_images, seed=6, size=(640, 480))
        (root / "complete-referring").touch()


def instance_records(records: list[dict]) -> list[dict]:
    """The panoptic records as detectron2 instance records: every non-crowd segment an annotation
    with its mask as COCO RLE (as in ADE20k's instance JSON; polygons would need shapely to be
    cropped by LSJ's ``FixedSizeCrop``)."""
    converted = []
    for record in records:
        ids = rgb2id(np.asarray(Image.open(record["pan_seg_file_name"]).convert("RGB")))
        annotations = [
            {
                "bbox": segment["bbox"], "bbox_mode": BoxMode.XYWH_ABS, "category_id": segment["category_id"], "iscrowd": 0,
                "segmentation": mask_util.encode(np.asfortranarray(ids == segment["id"], dtype=np.uint8)),
            }
            for segment in record["segments_info"]
            if not segment["iscrowd"]
        ]
        converted.append({k: record[k] for k in ("file_name", "image_id", "height", "width")} | {"annotations": annotations})
    return converted


def rle_records(records: list[dict]) -> list[dict]:
    """Referring records with each polygon segmentation as COCO RLE (see :func:`instance_records`)."""
    return [
        {**record, "annotations": [
            {**ann, "segmentation": mask_util.encode(np.asfortranarray(segmentation_mask(ann["segmentation"], record["height"], record["width"]), dtype=np.uint8))}
            for ann in record["annotations"]
        ]}
        for record in records
    ]


class JpegDecode:
    def __call__(self, record: dict):
        return {"image": utils.read_image(record["file_name"], format="RGB")}


def count_regions(output) -> int:
    if output is None:
        return 0
    if "instances" in output:
        return len(output["instances"])
    return len(output["regions"]["boxes"]) if "regions" in output else 0


def time_pass(mapper, records: list[dict], desc: str) -> tuple[float, int, int]:
    """(seconds, images mapped, regions produced) of one pass over ``records``."""
    regions = images = 0
    start = time.perf_counter()
    for record in tqdm(records, desc=desc, unit="img", leave=False, dynamic_ncols=True):
        output = mapper(record)  # DatasetMapper deep-copies the record itself; ours does not modify it
        images += output is not None
        regions += count_regions(output)
    return time.perf_counter() - start, images, regions


def benchmark_source(name: str, records: list[dict], family: str, args, tokenizer) -> dict[str, tuple[float, float]]:
    weights = {"box": 0.7, "point": 0.3} if family == "boxes" else {"box": 0.5, "point": 0.3, "mask": 0.2}
    cfg = MapperConfig(
        image_size=1024, mask_size=256, augmentation="lsj", min_scale=0.1, max_scale=2.0, max_regions=args.max_regions,
        prompt=PromptConfig(weights=weights, num_points=1),
    )
    lsj = build_augmentation(cfg, is_train=True)
    stock_records = {"panoptic": instance_records, "referring": rle_records}.get(family, list)(records)
    mappers = {
        "jpeg decode": (JpegDecode(), records),
        "d2 boxes": (DatasetMapper(is_train=True, augmentations=lsj, image_format="RGB"), stock_records),
    }
    if family != "boxes":
        mappers["d2 masks"] = (
            DatasetMapper(is_train=True, augmentations=lsj, image_format="RGB", use_instance_mask=True,
                          instance_mask_format="bitmask", recompute_boxes=True),
            stock_records,
        )
    task_type = "caption" if family == "referring" else "recognition"
    mappers["sca regions"] = (build_region_mapper(name, cfg, is_train=True, tokenizer=tokenizer, source=name, task_type=task_type), records)
    passes: dict[str, list[tuple[float, int, int]]] = {key: [] for key in mappers}
    for p in range(args.passes):
        for key, (mapper, mapper_records) in mappers.items():
            np.random.seed(args.seed + p)  # same crops for every mapper in a pass
            passes[key].append(time_pass(mapper, mapper_records, desc=f"{name} pass {p + 1}/{args.passes}: {key}"))
    results = {}
    for key, runs in passes.items():
        seconds = statistics.median(r[0] for r in runs)
        images, regions = sum(r[1] for r in runs) / len(runs), sum(r[2] for r in runs) / len(runs)
        results[key] = (len(records) / seconds, regions / seconds, images)
    return results


def candidate_regions(record: dict) -> int:
    """Non-crowd segments or boxes of a record."""
    items = record.get("segments_info", record.get("annotations", []))
    return sum(not item["iscrowd"] for item in items)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=os.path.join(os.path.expanduser("~"), ".cache", "sca", "benchmark-fixtures"))
    parser.add_argument("--num-images", type=int, default=24)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--max-regions", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sources", nargs="+", default=list(SOURCES), choices=list(SOURCES))
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    root = Path(args.root) / f"{args.num_images}-images"
    prepare_fixtures(root, args.num_images, args.sources)
    for register in (register_all_coco_panoptic, register_all_ade20k_panoptic, register_all_objects365, register_all_v3det, register_all_refcoco):
        register(str(root))
    tokenizer = CaptionTokenizer.from_config("", max_tokens=20)
    report = []
    for source in args.sources:
        label, name, family = SOURCES[source]
        records = DatasetCatalog.get(name)[: args.num_images]
        candidates = np.mean([candidate_regions(r) for r in records])
        report.append((label, family, candidates, benchmark_source(name, records, family, args, tokenizer)))
    print(f"\none worker, LSJ 1024, {args.num_images} images x {args.passes} passes (median pass), max_regions {args.max_regions}")
    for label, family, candidates, results in report:
        kind = {"panoptic": "segments", "boxes": "boxes", "referring": "refs"}[family]
        print(f"\n{label}: {candidates:.1f} non-crowd {kind} per image")
        print(f"  {'mapper':<13} {'images/s':>9} {'regions/s':>10} {'ms/image':>9}")
        for key, (images_per_s, regions_per_s, _) in results.items():
            regions = f"{regions_per_s:10.0f}" if key != "jpeg decode" else f"{'-':>10}"
            print(f"  {key:<13} {images_per_s:9.1f} {regions} {1000 / images_per_s:9.1f}")
        ratio = " / ".join(
            f"vs {key}: {results['sca regions'][0] / results[key][0]:.2f}x" for key in ("d2 masks", "d2 boxes") if key in results
        )
        print(f"  sca regions images/s {ratio}" + (" (goal >= 2x vs d2 masks)" if family == "panoptic" else ""))


if __name__ == "__main__":
    main()
