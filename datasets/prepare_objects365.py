#!/usr/bin/env python
"""Objects365 v2: index the images on disk, check that each decodes, write a cleaned annotation file.

    python datasets/prepare_objects365.py [--root DIR] [--workers N] [--splits val]

Reads, under the datasets root ($DETECTRON2_DATASETS, else ./datasets):
    objects365/annotations/zhiyuan_objv2_{train,val}.json
    objects365/{train,val}/    the images, as patch folders (patch0/...) or as the JSON names them
                               (images/v1/patch0/..., images/v2/patch16/...)
Writes:
    objects365/annotations/zhiyuan_objv2_{train,val}_clean.json

Per split: the JSON is streamed (boxes clipped to their image, boxes with no area left dropped);
the split's folder is indexed once; every annotated image found is decoded (at 1/8 scale: a
truncated or corrupt JPEG still fails) and its size compared with its JSON entry. The cleaned file
keeps only images that exist, decode and have their JSON size, with ``file_name`` as found on disk
(relative to objects365/<split>), their boxes, and the fixed class names. Missing, corrupt and
mismatched images and clipped / dropped boxes are counted in the summary and in the file's ``info``.
A split whose cleaned file exists is skipped (delete the file to redo it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TextIO

import numpy as np
from PIL import Image
from tqdm import tqdm

from sca.data.datasets.coco_boxes import read_coco_boxes
from sca.data.datasets.register_objects365 import (
    OBJECTS365_SPLITS,
    check_objects365_categories,
    objects365_categories,
    objects365_folder_resolver,
)
from sca.data.preparation import PreparationError, argument_parser, datasets_root, parallel_map, require, run, write_text_atomically

DOWNLOAD = "https://www.objects365.org/download.html"
_EXIF_ORIENTATION = 0x0112
_SWAPPED_ORIENTATIONS = (5, 6, 7, 8)  # EXIF rotations by 90 degrees: width and height swap when applied


def index_images(folder: Path) -> set[str]:
    """Paths of the files under ``folder`` (walked once, following symbolic links)."""
    found: set[str] = set()
    with tqdm(desc=f"indexing {folder}", unit=" files", dynamic_ncols=True) as progress:
        for directory, _, files in os.walk(os.path.normpath(folder), followlinks=True):
            found.update(os.path.join(directory, name) for name in files)
            progress.update(len(files))
    return found


def check_image(task: tuple[int, str, int, int]) -> tuple[int, str]:
    """(index, "ok" | "corrupt" | "size_mismatch") for one image, decoded at reduced scale."""
    index, path, width, height = task
    try:
        with Image.open(path) as image:
            size = image.size
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
            image.draft("RGB", (max(size[0] // 8, 1), max(size[1] // 8, 1)))
            image.load()
    except Exception:  # noqa: BLE001  (any decoding failure means the file is unusable)
        return index, "corrupt"
    if orientation in _SWAPPED_ORIENTATIONS:
        size = size[::-1]
    return index, "ok" if size == (width, height) else "size_mismatch"


def _write_clean_json(f: TextIO, records, keep: np.ndarray, image_dir: str, category_ids: np.ndarray, info: dict) -> None:
    """Stream the kept images and their boxes as a COCO detection JSON."""
    f.write('{"info": ' + json.dumps(info) + ', "images": [')
    kept = np.flatnonzero(keep)
    for n, i in enumerate(kept):
        image = {"id": int(records.image_ids[i]), "file_name": os.path.relpath(records.file_name(i), image_dir),
                 "height": int(records.heights[i]), "width": int(records.widths[i])}
        f.write((", " if n else "") + json.dumps(image))
    f.write('], "annotations": [')
    first = True
    for i in tqdm(kept, desc="writing", unit="img", dynamic_ncols=True, leave=False):
        start, end = records.box_offsets[i], records.box_offsets[i + 1]
        for ann_id, box, category, crowd in zip(
            records.annotation_ids[start:end].tolist(), records.boxes[start:end].tolist(),
            category_ids[records.category_ids[start:end]].tolist(), records.iscrowd[start:end].tolist(),
        ):
            ann = {"id": ann_id, "image_id": int(records.image_ids[i]), "category_id": category, "bbox": box,
                   "area": box[2] * box[3], "iscrowd": crowd}
            f.write(("" if first else ", ") + json.dumps(ann))
            first = False
    categories = [{"id": c["id"], "name": c["name"]} for c in objects365_categories()]
    f.write('], "categories": ' + json.dumps(categories) + "}")


def prepare_split(root: Path, split: str, workers: int) -> None:
    paths = OBJECTS365_SPLITS[f"sca_objects365_v2_{split}"].paths(str(root))
    clean = Path(paths["clean_json_file"])
    if clean.exists():
        print(f"{clean}: exists, split skipped (delete it to redo)")
        return
    json_file = require(Path(paths["json_file"]), f"download zhiyuan_objv2_{split}.tar.gz from {DOWNLOAD} and extract it there")
    image_dir = require(Path(paths["image_dir"]), f"extract the {split} image patches ({DOWNLOAD}) into it")
    try:
        result = read_coco_boxes(str(json_file), str(image_dir), resolve_directory=objects365_folder_resolver(str(image_dir)))
        check_objects365_categories(str(json_file), result.categories)
    except ValueError as error:
        raise PreparationError(str(error)) from None
    records = result.records
    on_disk = index_images(image_dir)
    paths_of = [records.file_name(i) for i in range(len(records))]
    present = np.array([p in on_disk for p in paths_of], dtype=bool)
    del on_disk
    tasks = [(i, paths_of[i], int(records.widths[i]), int(records.heights[i])) for i in np.flatnonzero(present)]
    status = np.full(len(records), "missing", dtype=object)
    for index, outcome in parallel_map(check_image, tasks, workers, desc=f"objects365 {split}: decoding"):
        status[index] = outcome
    keep = status == "ok"
    info = {
        "description": f"Objects365 v2 {split}, cleaned by datasets/prepare_objects365.py from {json_file.name}",
        "images_kept": int(keep.sum()),
        "images_missing": int((status == "missing").sum()),
        "images_corrupt": int((status == "corrupt").sum()),
        "images_size_mismatch": int((status == "size_mismatch").sum()),
        "boxes_kept": int(np.diff(records.box_offsets)[keep].sum()),
        "boxes_clipped": result.counts["clipped_boxes"],
        "boxes_dropped": result.counts["dropped_boxes"],
        "images_without_boxes": result.counts["images_without_boxes"],
    }
    category_ids = np.array([c["id"] for c in result.categories], dtype=np.int64)
    write_text_atomically(clean, lambda f: _write_clean_json(f, records, keep, str(image_dir), category_ids, info))
    print(f"{clean}: " + ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in info.items() if key != "description"))
    for kind in ("missing", "corrupt", "size_mismatch"):
        examples = [paths_of[i] for i in np.flatnonzero(status == kind)[:3]]
        if examples:
            print(f"  {kind.replace('_', ' ')}: e.g. {examples}")


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--splits", nargs="+", default=["train", "val"], choices=["train", "val"])
    args = parser.parse_args()
    root = datasets_root(args.root)
    require(root / "objects365", f"download Objects365 v2 ({DOWNLOAD}) into it (see datasets/README.md)")
    for split in args.splits:
        prepare_split(root, split, args.workers)


if __name__ == "__main__":
    run(main)
