#!/usr/bin/env python
"""COCO panoptic -> semantic PNGs: one channel, contiguous class ids 0..132, 255 = ignore (void).

    python datasets/prepare_coco_semantic_from_panoptic.py [--root DIR] [--workers N] [--splits val]

Reads, under the datasets root ($DETECTRON2_DATASETS, else ./datasets):
    coco/annotations/panoptic_{train,val}2017.json, coco/panoptic_{train,val}2017/*.png
Writes:
    coco/panoptic_semseg_{train,val}2017/*.png
Every segment (crowd included) is painted with its class; class ids follow the registered metadata
(detectron2's COCO_CATEGORIES order). Each PNG is written atomically; a second run skips them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from panopticapi.utils import rgb2id
from PIL import Image

from sca.data.datasets.register_coco_panoptic import coco_panoptic_metadata
from sca.data.preparation import PreparationError, argument_parser, datasets_root, parallel_map, require, run, save_png

ANNOTATIONS_URL = "http://images.cocodataset.org/annotations/panoptic_annotations_trainval2017.zip"


def _tasks(coco: Path, split: str) -> list[tuple]:
    """(panoptic PNG, output PNG, (width, height), [(segment id, class id)]) per image not yet converted."""
    json_file = require(
        coco / "annotations" / f"panoptic_{split}2017.json",
        f"download {ANNOTATIONS_URL} and unzip it into {coco}",
    )
    png_dir = coco / f"panoptic_{split}2017"
    if not png_dir.is_dir():
        inner_zip = coco / "annotations" / f"panoptic_{split}2017.zip"
        if inner_zip.is_file():
            raise PreparationError(
                f"missing {png_dir}: the panoptic PNGs are still inside {inner_zip} (a zip within the "
                f"annotations zip); run:\n  unzip -q {inner_zip} -d {coco}"
            )
        raise PreparationError(f"missing {png_dir}\n  it comes zipped inside {ANNOTATIONS_URL}")
    try:
        content = json.loads(json_file.read_text())
        sizes = {image["id"]: (image["width"], image["height"]) for image in content["images"]}
        annotations = content["annotations"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise PreparationError(f"{json_file} is not a COCO panoptic JSON ({type(error).__name__}: {error})") from None
    class_ids = coco_panoptic_metadata()["stuff_dataset_id_to_contiguous_id"]
    out_dir = coco / f"panoptic_semseg_{split}2017"
    tasks, missing = [], []
    for ann in annotations:
        if ann["image_id"] not in sizes:
            raise PreparationError(f"{json_file}: {ann['file_name']} has image_id {ann['image_id']!r}, absent from 'images'")
        png = png_dir / ann["file_name"]
        if not png.is_file():
            missing.append(png.name)
        unknown = [s["category_id"] for s in ann["segments_info"] if s["category_id"] not in class_ids]
        if unknown:
            raise PreparationError(f"{json_file}: {ann['file_name']} has unknown category ids {unknown}")
        out = out_dir / ann["file_name"]
        if not out.exists():
            segments = [(s["id"], class_ids[s["category_id"]]) for s in ann["segments_info"]]
            tasks.append((png, out, sizes[ann["image_id"]], segments))
    if missing:
        raise PreparationError(
            f"{len(missing)} panoptic PNGs listed in {json_file} are missing from {png_dir} (e.g. {missing[:3]}); "
            "unzip the panoptic PNG zip again"
        )
    return tasks


def panoptic_to_semantic(task: tuple) -> None:
    png, out, (width, height), segments = task
    ids = rgb2id(np.asarray(Image.open(png).convert("RGB")))
    if ids.shape != (height, width):
        raise PreparationError(f"{png}: size {ids.shape[1]}x{ids.shape[0]} differs from its JSON entry {width}x{height}")
    semantic = np.full(ids.shape, 255, dtype=np.uint8)
    for segment_id, class_id in segments:
        semantic[ids == segment_id] = class_id
    save_png(out, semantic)


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--splits", nargs="+", default=["train", "val"], choices=["train", "val"])
    args = parser.parse_args()
    coco = require(datasets_root(args.root) / "coco", "download COCO 2017 (https://cocodataset.org/#download) into it")
    tasks = {split: _tasks(coco, split) for split in args.splits}  # check every split before writing anything
    for split, split_tasks in tasks.items():
        if not split_tasks:
            print(f"{coco}/panoptic_semseg_{split}2017: complete, nothing to do")
            continue
        for _ in parallel_map(panoptic_to_semantic, split_tasks, args.workers, desc=f"coco {split} semantic"):
            pass
        print(f"{coco}/panoptic_semseg_{split}2017: wrote {len(split_tasks)} PNGs")


if __name__ == "__main__":
    run(main)
