#!/usr/bin/env python
"""ADE20k instance annotations as COCO instance JSON with RLE masks (100 instance classes).

    python datasets/prepare_ade20k_ins_seg.py [--root DIR] [--workers N]

Reads, under the datasets root ($DETECTRON2_DATASETS, else ./datasets):
    ADEChallengeData2016/{images,annotations,annotations_instance}/{training,validation}/
Writes:
    ADEChallengeData2016/ade20k_instance_{train,val}.json
Each instance of ``annotations_instance`` (R = instance class 1..100, G = instance index) becomes an
annotation with ``category_id`` = its instance class; image ids number the sorted images from 1.
The JSON is written atomically; a split whose JSON exists is skipped.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from pycocotools import mask as mask_util

from sca.data.datasets.ade20k_classes import ade20k_instance_categories
from sca.data.datasets.ade20k_layout import ADE20K_SPLITS, ade20k_images, read_instance_keys
from sca.data.preparation import PreparationError, argument_parser, datasets_root, parallel_map, run, save_json


def instances(task: tuple) -> tuple[dict, list[dict]]:
    image_id, item = task
    width, height = Image.open(item.image).size
    keys = read_instance_keys(item.instance)
    if keys.shape != (height, width):
        raise PreparationError(f"{item.instance}: size {keys.shape[::-1]} differs from the image's {(width, height)}")
    known = {c["id"] for c in ade20k_instance_categories()}
    annotations = []
    for key in np.unique(keys[keys > 0]):
        category_id = int(key) // 256
        if category_id not in known:
            raise PreparationError(f"{item.instance}: unknown instance class {category_id} (R channel)")
        rle = mask_util.encode(np.asfortranarray(keys == key, dtype=np.uint8))
        annotations.append(
            {
                "image_id": image_id,
                "category_id": category_id,
                "iscrowd": 0,
                "area": int(mask_util.area(rle)),
                "bbox": [float(v) for v in mask_util.toBbox(rle)],
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
            }
        )
    return {"id": image_id, "file_name": item.image.name, "width": width, "height": height}, annotations


def main() -> None:
    args = argument_parser(__doc__).parse_args()
    root = datasets_root(args.root)
    ade = root / "ADEChallengeData2016"
    images = {split: ade20k_images(root, split, with_instances=True) for split in ADE20K_SPLITS}
    for split in ADE20K_SPLITS:
        json_file = ade / f"ade20k_instance_{split}.json"
        if json_file.exists():
            print(f"{json_file}: exists, split skipped")
            continue
        tasks = list(enumerate(images[split], start=1))
        results = sorted(parallel_map(instances, tasks, args.workers, desc=f"ade20k {split} instances"), key=lambda r: r[0]["id"])
        annotations = [ann for _, anns in results for ann in anns]
        for ann_id, ann in enumerate(annotations, start=1):
            ann["id"] = ann_id
        content = {"images": [r[0] for r in results], "annotations": annotations, "categories": list(ade20k_instance_categories())}
        save_json(json_file, content)
        print(f"{json_file}: {len(results)} images, {len(annotations)} instances")


if __name__ == "__main__":
    run(main)
