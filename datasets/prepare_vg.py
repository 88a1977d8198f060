#!/usr/bin/env python
"""Visual Genome (DenseCap splits): stream the region file once, check the images, write a cleaned
annotation file per split.

    python datasets/prepare_vg.py [--root DIR] [--workers N] [--splits train val test]

Reads, under the datasets root ($DETECTRON2_DATASETS, else ./datasets):
    vg/image_data.json, vg/region_descriptions.json (v1.2 or v1.0 keys), vg/densecap_splits.json
    vg/VG_100K/*.jpg, vg/VG_100K_2/*.jpg
Writes:
    vg/annotations/densecap_{train,val,test}_clean.json   (COCO style, a raw ``caption`` per box)

The region file (~700 MB) is streamed into compact records of the requested splits in one pass;
boxes are clipped to their image, and boxes with no area left, empty phrases, regions whose image
is not in image_data.json and split image ids absent from it are dropped. The image folders are
indexed once and every split image found is decoded (at 1/8 scale) and its size compared with
image_data.json. The cleaned file keeps the images that exist, decode and have their recorded size,
with their regions and raw phrases; its ``info`` holds every count and what DenseCap's caption
normalisation would change or drop. A split whose cleaned file exists is skipped (delete it to redo).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sca.data.caption_normalization import DENSECAP_RULES, normalization_report
from sca.data.datasets.coco_boxes import write_coco_boxes
from sca.data.datasets.register_vg import DENSECAP_SPLITS, IMAGE_FOLDERS, VG_CATEGORIES, VGFiles, read_densecap_splits
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

DOWNLOAD = "https://homes.cs.washington.edu/~ranjay/visualgenome/api.html"
SPLITS_FILE = "https://github.com/jcjohnson/densecap/blob/master/info/densecap_splits.json"


def _kept_captions(records, keep: np.ndarray):
    """The phrases of the images ``keep``."""
    for i in np.flatnonzero(keep):
        yield from (records.caption(j) for j in range(records.box_offsets[i], records.box_offsets[i + 1]))


def prepare(root: Path, splits: list[str], workers: int) -> None:
    files = VGFiles(str(root))
    todo = [s for s in splits if not Path(files.clean(s)).exists()]
    for split in sorted(set(splits) - set(todo)):
        print(f"{files.clean(split)}: exists, split skipped (delete it to redo)")
    if not todo:
        return
    require(Path(files.image_data), f"download image_data.json (v1.2) from {DOWNLOAD} and unzip it there")
    require(Path(files.region_descriptions), f"download region_descriptions.json (v1.2) from {DOWNLOAD} and unzip it there")
    require(Path(files.splits), f"download densecap's split file from {SPLITS_FILE}")
    folders = [Path(files.vg_dir) / f for f in IMAGE_FOLDERS[:2] if (Path(files.vg_dir) / f).is_dir()]
    if not folders:
        raise PreparationError(f"missing {Path(files.vg_dir) / IMAGE_FOLDERS[0]} and {IMAGE_FOLDERS[1]}\n  "
                               f"download images.zip and images2.zip from {DOWNLOAD} and unzip them there")
    try:
        results = read_densecap_splits(files, todo)
    except (ValueError, FileNotFoundError) as error:
        raise PreparationError(str(error)) from None
    on_disk = set().union(*(index_images(folder) for folder in folders))
    for split in todo:
        result = results.pop(split)
        records = result.records
        status = check_images(records, on_disk, workers, desc=f"vg {split}: decoding")
        keep = status == "ok"
        counts = result.counts
        info = {
            "description": f"Visual Genome, densecap split {split}, cleaned by datasets/prepare_vg.py",
            "images_kept": int(keep.sum()),
            "images_missing": int((status == "missing").sum()),
            "images_corrupt": int((status == "corrupt").sum()),
            "images_size_mismatch": int((status == "size_mismatch").sum()),
            "regions_kept": int(np.diff(records.box_offsets)[keep].sum()),
            "regions_clipped": counts["clipped_boxes"],
            "regions_dropped_no_area": counts["dropped_boxes"],
            "regions_dropped_empty_phrase": counts["dropped_empty_captions"],
            "regions_of_unknown_images": counts["regions_of_unknown_images"],
            "split_images_not_in_image_data": counts["split_images_not_in_image_data"],
            "images_without_regions": counts["images_without_boxes"],
            "caption_normalization_rules": list(DENSECAP_RULES),
            "caption_normalization": normalization_report(_kept_captions(records, keep)),
        }
        clean = Path(files.clean(split))
        write_text_atomically(clean, lambda f: write_coco_boxes(f, records, keep, files.vg_dir, VG_CATEGORIES, info))
        print(f"{clean}: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in info.items() if isinstance(v, int)))
        print("  DenseCap caption normalisation (caption_normalization=densecap): "
              + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in info["caption_normalization"].items()))
        for kind in ("missing", "corrupt", "size_mismatch"):
            examples = [records.file_name(i) for i in np.flatnonzero(status == kind)[:3]]
            if examples:
                print(f"  {kind.replace('_', ' ')}: e.g. {examples}")


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--splits", nargs="+", default=list(DENSECAP_SPLITS), choices=list(DENSECAP_SPLITS))
    args = parser.parse_args()
    root = datasets_root(args.root)
    require(root / "vg", f"download Visual Genome ({DOWNLOAD}) into it (see datasets/README.md)")
    prepare(root, args.splits, args.workers)


if __name__ == "__main__":
    run(main)
