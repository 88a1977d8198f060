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

from pathlib import Path

import numpy as np

from sca.data.datasets.coco_boxes import read_coco_boxes, write_coco_boxes
from sca.data.datasets.register_objects365 import (
    OBJECTS365_SPLITS,
    check_objects365_categories,
    objects365_categories,
    objects365_folder_resolver,
)
from sca.data.preparation import (
    PreparationError,
    argument_parser,
    check_images,
    datasets_root,
    index_images,
    require,
    run,
    write_text_atomically,
)

DOWNLOAD = "https://www.objects365.org/download.html"


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
    paths_of = [records.file_name(i) for i in range(len(records))]
    status = check_images(records, index_images(image_dir), workers, desc=f"objects365 {split}: decoding")
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
    categories = [{"id": c["id"], "name": c["name"]} for c in objects365_categories()]
    write_text_atomically(clean, lambda f: write_coco_boxes(f, records, keep, str(image_dir), categories, info))
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
