"""Objects365 v2 (365 classes, boxes only) as ``sca_objects365_v2_{train,val}``.

Expected under the datasets root (see ``datasets/README.md``)::

    objects365/annotations/zhiyuan_objv2_{train,val}.json         # as released
    objects365/annotations/zhiyuan_objv2_{train,val}_clean.json   # datasets/prepare_objects365.py; used when present
    objects365/{train,val}/...                                    # the images, in either layout:
        patch0/objects365_v1_00000000.jpg ...                     #   patch folders directly, or
        images/v1/patch0/...  images/v2/patch16/...               #   the folders the JSON's file_name names

A ``file_name`` such as ``images/v1/patch0/objects365_v1_00000000.jpg`` is resolved per folder
against whichever layout is on disk. The release misspells 13 class names ("Moniter/TV",
"Bakset", "Dinning Table", ...); ``thing_classes`` and the captions use the fixed names of
``tables/objects365_v2_names_fix.csv`` (``id,original,fixed``).
"""

from __future__ import annotations

import csv
import logging
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from sca.data.datasets.box_records import BoxRecords
from sca.data.datasets.coco_boxes import box_metadata, load_coco_boxes_json, register_box_source
from sca.data.datasets.dataset_paths import path_inside

__all__ = [
    "OBJECTS365_SPLITS",
    "Objects365Split",
    "objects365_categories",
    "objects365_metadata",
    "objects365_folder_resolver",
    "check_objects365_categories",
    "load_objects365_json",
    "register_all_objects365",
]

logger = logging.getLogger(__name__)

TABLES = Path(__file__).resolve().parent / "tables"
_VERSION_FOLDER = re.compile(r"^images/v\d+(?:/|$)")


@dataclass(frozen=True)
class Objects365Split:
    """Where one split lives, relative to the datasets root."""

    image_dir: str
    json_file: str
    clean_json_file: str

    def paths(self, root: str) -> dict[str, str]:
        return {key: os.path.join(root, value) for key, value in vars(self).items()}


OBJECTS365_SPLITS = {
    f"sca_objects365_v2_{split}": Objects365Split(
        image_dir=f"objects365/{split}",
        json_file=f"objects365/annotations/zhiyuan_objv2_{split}.json",
        clean_json_file=f"objects365/annotations/zhiyuan_objv2_{split}_clean.json",
    )
    for split in ("train", "val")
}


@lru_cache(maxsize=None)
def objects365_categories() -> tuple[dict, ...]:
    """The 365 classes ``{id, original, name}``: ``original`` as released, ``name`` fixed."""
    with open(TABLES / "objects365_v2_names_fix.csv", newline="") as f:
        rows = [row for row in csv.reader(f) if row]
    return tuple({"id": int(i), "original": original, "name": fixed} for i, original, fixed in rows)


def objects365_metadata() -> dict:
    """``thing_classes`` / ``class_captions`` with the fixed names, ids 1..365 -> 0..364."""
    return box_metadata([{"id": c["id"], "name": c["name"]} for c in objects365_categories()])


def objects365_folder_resolver(image_root: str):
    """Maps the folder of a JSON ``file_name`` to the folder on disk: the folder as named
    (``images/v1/patch0``), without its ``images/v<N>/`` part (``patch0``), or, for a folder named
    without it, under ``images/v1`` or ``images/v2``; the first that exists. When none does, the
    folder as named (its images will be counted as missing); ``None`` for a folder that leaves
    ``image_root`` (its images are dropped)."""

    def resolve(directory: str) -> str | None:
        candidates = [directory]
        stripped = _VERSION_FOLDER.sub("", directory)
        candidates += [stripped] if stripped != directory else [f"images/v1/{directory}", f"images/v2/{directory}"]
        folders = [path_inside(image_root, c) if c else os.path.normpath(image_root) for c in candidates]
        if folders[0] is None:
            return None
        return next((folder for folder in folders if folder is not None and os.path.isdir(folder)), folders[0])

    return resolve


def check_objects365_categories(json_file: str, categories: list[dict]) -> None:
    """The file's categories must be the 365 of the table, by id and (released or fixed) name.

    Raises:
        ValueError: naming the file and the first category that differs.
    """
    table = {c["id"]: c for c in objects365_categories()}
    if sorted(c["id"] for c in categories) != sorted(table):
        raise ValueError(f"{json_file}: categories are not the 365 Objects365 v2 classes (ids {len(categories)})")
    for category in categories:
        expected = table[category["id"]]
        if category["name"].strip() not in (expected["original"], expected["name"]):
            raise ValueError(
                f"{json_file}: category {category['id']} is '{category['name']}', expected '{expected['original']}'"
            )


def load_objects365_json(json_file: str, clean_json_file: str, image_root: str) -> BoxRecords:
    """Records of the cleaned annotation file when it exists, else of the released one (whose
    missing or corrupt images are then skipped and counted by the mapper)."""
    if os.path.isfile(clean_json_file):
        json_file = clean_json_file
    else:
        logger.warning(
            "%s not found: reading %s, whose missing or corrupt images will be skipped at training time "
            "(run datasets/prepare_objects365.py to check them once)", clean_json_file, json_file,
        )
    resolver = objects365_folder_resolver(image_root)
    return load_coco_boxes_json(
        json_file, image_root, resolve_directory=resolver, check_categories=check_objects365_categories
    ).records


def register_all_objects365(root: str) -> None:
    """Register both splits under the datasets ``root`` (nothing is read until requested)."""
    metadata = objects365_metadata()
    for name, split in OBJECTS365_SPLITS.items():
        paths = split.paths(root)
        register_box_source(
            name,
            lambda paths=paths: load_objects365_json(paths["json_file"], paths["clean_json_file"], paths["image_dir"]),
            metadata,
            image_root=paths["image_dir"],
            json_file=paths["json_file"],
            evaluator_type="coco",
        )
