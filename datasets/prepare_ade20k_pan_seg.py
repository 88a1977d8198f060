#!/usr/bin/env python
"""ADE20k panoptic annotations (COCO panoptic format) from the semantic and instance PNGs.

    python datasets/prepare_ade20k_pan_seg.py [--root DIR] [--workers N]

Reads, under the datasets root ($DETECTRON2_DATASETS, else ./datasets):
    ADEChallengeData2016/{images,annotations,annotations_instance}/{training,validation}/
Writes:
    ADEChallengeData2016/ade20k_panoptic_{train,val}/*.png   (RGB, id = R + 256 G + 256^2 B)
    ADEChallengeData2016/ade20k_panoptic_{train,val}.json    (image_id = file stem, categories 0..149)

Stuff segments come from the semantic PNG (one per stuff class present), then every instance of the
instance PNG (R = instance class, G = instance index) is pasted over them as a thing segment; pixels
of thing classes without an instance stay void. Each segment's ``area`` and ``bbox`` are measured on
the final PNG, after the instances are pasted (Mask2Former's script measures stuff before pasting,
so its stuff areas are larger). Files are written atomically and the JSON last; a split whose JSON
exists is skipped.
"""

from __future__ import annotations

import numpy as np
from panopticapi.utils import id2rgb
from PIL import Image

from sca.data.datasets.ade20k_classes import ade20k_categories, ade20k_instance_to_semantic
from sca.data.datasets.ade20k_layout import ADE20K_SPLITS, AdeImage, ade20k_images, read_instance_keys
from sca.data.preparation import PreparationError, argument_parser, datasets_root, parallel_map, run, save_json, save_png


def read_annotations(item: AdeImage) -> tuple[np.ndarray, np.ndarray]:
    """(semantic values HxW, instance keys HxW = 256 * class + index, 0 = none), sizes checked."""
    semantic = np.asarray(Image.open(item.semantic))
    keys = read_instance_keys(item.instance)
    if semantic.shape != keys.shape:
        raise PreparationError(f"{item.instance}: size {keys.shape[::-1]} differs from {item.semantic} {semantic.shape[::-1]}")
    return semantic, keys


def panoptic_segments(semantic: np.ndarray, keys: np.ndarray, source: str) -> tuple[np.ndarray, list[tuple[int, bool]]]:
    """Segment id map (1..N, 0 = void) and [(category id, isthing)] per segment id - 1."""
    to_semantic = ade20k_instance_to_semantic()
    thing_values = set(to_semantic.values())
    ids = np.zeros(semantic.shape, np.int32)
    segments: list[tuple[int, bool]] = []
    for value in np.unique(semantic):  # stuff first
        if value != 0 and int(value) not in thing_values:
            segments.append((int(value) - 1, False))
            ids[semantic == value] = len(segments)
    for key in np.unique(keys[keys > 0]):  # then things, pasted over stuff
        instance_class = int(key) // 256
        if instance_class not in to_semantic:
            raise PreparationError(f"{source}: unknown instance class {instance_class} (R channel)")
        segments.append((to_semantic[instance_class] - 1, True))
        ids[keys == key] = len(segments)
    return ids, segments


def convert(task: tuple) -> tuple[dict, dict]:
    item, out_png = task
    width, height = Image.open(item.image).size
    semantic, keys = read_annotations(item)
    if semantic.shape != (height, width):
        raise PreparationError(f"{item.semantic}: size {semantic.shape[::-1]} differs from the image's {(width, height)}")
    ids, segments = panoptic_segments(semantic, keys, str(item.instance))
    segments_info = []
    for segment_id, (category_id, _isthing) in enumerate(segments, start=1):
        ys, xs = np.nonzero(ids == segment_id)
        if len(xs) == 0:  # a stuff segment entirely covered by things
            continue
        bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
        segments_info.append({"id": segment_id, "category_id": category_id, "iscrowd": 0, "area": int(len(xs)), "bbox": bbox})
    if not out_png.exists():
        save_png(out_png, id2rgb(ids))
    image = {"id": item.stem, "file_name": item.image.name, "width": width, "height": height}
    return image, {"image_id": item.stem, "file_name": out_png.name, "segments_info": segments_info}


def main() -> None:
    args = argument_parser(__doc__).parse_args()
    root = datasets_root(args.root)
    ade = root / "ADEChallengeData2016"
    images = {split: ade20k_images(root, split, with_instances=True) for split in ADE20K_SPLITS}
    for split in ADE20K_SPLITS:
        json_file = ade / f"ade20k_panoptic_{split}.json"
        if json_file.exists():
            print(f"{json_file}: exists, split skipped")
            continue
        out_dir = ade / f"ade20k_panoptic_{split}"
        tasks = [(item, out_dir / f"{item.stem}.png") for item in images[split]]
        results = sorted(parallel_map(convert, tasks, args.workers, desc=f"ade20k {split} panoptic"), key=lambda r: r[0]["id"])
        categories = [{**c, "supercategory": "thing" if c["isthing"] else "stuff"} for c in ade20k_categories()]
        content = {"images": [r[0] for r in results], "annotations": [r[1] for r in results], "categories": categories}
        save_json(json_file, content)
        print(f"{json_file}: {len(results)} images, {sum(len(r[1]['segments_info']) for r in results)} segments")


if __name__ == "__main__":
    run(main)
