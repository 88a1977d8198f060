"""Visual Genome region descriptions as ``sca_vg_densecap_{train,val,test}`` (DenseCap's splits)
and, when GRiT's preprocessed files are present, ``sca_vg_grit_{train,test}``.

Expected under the datasets root (see ``datasets/README.md``)::

    vg/image_data.json                # [{image_id (v1.0: id), url, width, height, coco_id, flickr_id}]
    vg/region_descriptions.json       # [{id, regions: [{region_id, image_id, x, y, width, height, phrase}]}]
                                      #   (v1.0 regions: id and image instead of region_id and image_id)
    vg/densecap_splits.json           # {train, val, test}: image ids (77,398 / 5,000 / 5,000)
    vg/VG_100K/<image_id>.jpg  vg/VG_100K_2/<image_id>.jpg
    vg/annotations/densecap_{train,val,test}_clean.json   # datasets/prepare_vg.py; used when present
    vg/annotations/{train,test}.json  # optional: GRiT's preprocessed files (COCO style, a caption per box)

Each region is a box captioned by its phrase (``sentences: [phrase]`` in its annotation, the raw
phrase: :mod:`sca.data.caption_normalization` applies DenseCap's normalisation in the mapper when
configured). The region file is streamed (:func:`~sca.data.datasets.json_stream.iter_array`) into
compact :class:`~sca.data.datasets.box_records.BoxRecords`. Bad input is dropped and counted, never
fatal: a split image id absent from ``image_data.json``, a region whose image is not in
``image_data.json``, a box outside the image (clipped) or with no area inside it, an empty phrase,
an image without regions; missing or corrupt images are skipped by the mapper (or removed by
``datasets/prepare_vg.py``). Image folders come from each image's ``url`` (``.../VG_100K_2/1.jpg``);
files named without a folder (GRiT's) are looked up in ``VG_100K``, ``VG_100K_2`` and ``images``.
"""

from __future__ import annotations

import json
import logging
import os
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
from detectron2.data import MetadataCatalog
from tqdm import tqdm

from sca.data.caption_normalization import normalization_report
from sca.data.datasets.box_records import BoxRecords
from sca.data.datasets.coco_boxes import (
    BoxColumns,
    BoxLoadResult,
    box_metadata,
    log_box_counts,
    read_coco_boxes,
    records_from_columns,
    register_box_source,
)
from sca.data.datasets.json_stream import iter_array

__all__ = [
    "DENSECAP_SPLITS",
    "GRIT_SPLITS",
    "IMAGE_FOLDERS",
    "VG_CATEGORIES",
    "VGFiles",
    "read_densecap_splits",
    "load_vg_densecap",
    "load_vg_grit",
    "caption_report",
    "register_all_vg",
]

logger = logging.getLogger(__name__)

DENSECAP_SPLITS = ("train", "val", "test")
GRIT_SPLITS = ("train", "test")
IMAGE_FOLDERS = ("VG_100K", "VG_100K_2", "images")  # "images": GRiT's single folder
VG_CATEGORIES = [{"id": 1, "name": "object"}]  # one class; every region has its own caption


@dataclass(frozen=True)
class VGFiles:
    """The paths of the VG files under a datasets root."""

    root: str

    @property
    def vg_dir(self) -> str:
        return os.path.join(self.root, "vg")

    @property
    def image_data(self) -> str:
        return os.path.join(self.vg_dir, "image_data.json")

    @property
    def region_descriptions(self) -> str:
        return os.path.join(self.vg_dir, "region_descriptions.json")

    @property
    def splits(self) -> str:
        return os.path.join(self.vg_dir, "densecap_splits.json")

    def clean(self, split: str) -> str:
        return os.path.join(self.vg_dir, "annotations", f"densecap_{split}_clean.json")

    def grit(self, split: str) -> str:
        return os.path.join(self.vg_dir, "annotations", f"{split}.json")


def _captioned_columns() -> BoxColumns:
    columns = BoxColumns()
    columns.captions, columns.caption_offsets = bytearray(), array("q", [0])
    return columns


@dataclass
class _SplitColumns:
    columns: BoxColumns = field(default_factory=_captioned_columns)
    counts: Counter = field(default_factory=Counter)


def _image_folder(vg_dir: str, image: dict, image_id: int) -> str:
    """The folder of an image: the one its ``url`` names, else the first that holds the file."""
    folder = os.path.basename(os.path.dirname(str(image.get("url") or "")))
    if folder in IMAGE_FOLDERS:
        return folder
    name = f"{image_id}.jpg"
    return next((f for f in IMAGE_FOLDERS if os.path.exists(os.path.join(vg_dir, f, name))), IMAGE_FOLDERS[0])


def _progress(path: str, desc: str) -> tqdm:
    size = os.path.getsize(path)
    return tqdm(total=size, unit="B", unit_scale=True, desc=desc, disable=size < 64 * 2**20, dynamic_ncols=True)


def _read_json_list(path: str, what: str):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found ({what}): datasets/README.md shows the expected tree")
    with _progress(path, f"reading {os.path.basename(path)}") as progress:
        yield from iter_array(path, progress=progress.update)


def read_densecap_splits(files: VGFiles, splits: Iterable[str] = DENSECAP_SPLITS) -> dict[str, BoxLoadResult]:
    """Stream the official files once into compact records of each of ``splits``.

    Returns:
        per split, the records and ``counts``: those of :func:`records_from_columns` plus
        ``split_images_not_in_image_data`` and ``regions_of_unknown_images`` (regions whose image is
        absent from ``image_data.json``; counted in every requested split).
    Raises:
        FileNotFoundError: naming a missing file; ValueError: naming a malformed file or split.
    """
    splits = tuple(splits)
    if not os.path.isfile(files.splits):
        raise FileNotFoundError(f"{files.splits} not found (densecap's info/densecap_splits.json): see datasets/README.md")
    with open(files.splits) as f:
        split_ids = json.load(f)
    unknown = [s for s in splits if s not in split_ids]
    if unknown or not isinstance(split_ids, dict):
        raise ValueError(f"{files.splits}: expected an object with the image-id lists {list(DENSECAP_SPLITS)}, missing {unknown}")
    split_of = {int(image_id): k for k, s in enumerate(splits) for image_id in split_ids[s]}
    parts = [_SplitColumns() for _ in splits]
    known: set[int] = set()
    try:
        for image in _read_json_list(files.image_data, "VG image_data.json"):
            image_id = int(image["image_id"] if "image_id" in image else image["id"])
            known.add(image_id)
            k = split_of.get(image_id)
            if k is not None:
                folder = _image_folder(files.vg_dir, image, image_id)
                parts[k].columns.add_image(
                    {"id": image_id, "file_name": f"{folder}/{image_id}.jpg", "width": image["width"], "height": image["height"]}
                )
        for image_id, k in split_of.items():
            parts[k].counts["split_images_not_in_image_data"] += image_id not in known
        unknown_regions = 0
        for entry in _read_json_list(files.region_descriptions, "VG region_descriptions.json"):
            for region in entry.get("regions", ()):
                image_id = region.get("image_id", region.get("image", entry.get("id", entry.get("image_id"))))
                image_id = int(image_id["id"] if isinstance(image_id, dict) else image_id)
                if image_id not in known:
                    unknown_regions += 1
                    continue
                k = split_of.get(image_id)
                if k is not None:
                    parts[k].columns.add_annotation({
                        "id": region["region_id"] if "region_id" in region else region["id"],
                        "image_id": image_id,
                        "category_id": 1,
                        "bbox": [region["x"], region["y"], region["width"], region["height"]],
                        "caption": region.get("phrase") or "",
                    })
    except (KeyError, TypeError, OverflowError) as error:
        raise ValueError(f"{files.vg_dir}: not Visual Genome's image_data / region_descriptions ({type(error).__name__}: {error})") from None
    del known, split_of
    results = {}
    for split, part in zip(splits, parts):
        result = records_from_columns(
            f"{files.region_descriptions} ({split})", part.columns, VG_CATEGORIES, files.vg_dir
        )
        result.counts.update(part.counts, regions_of_unknown_images=unknown_regions)
        results[split] = result
    return results


def _assign_image_folders(records: BoxRecords, vg_dir: str) -> None:
    """Images named without a folder: each goes to the first of :data:`IMAGE_FOLDERS` holding it."""
    top = os.path.normpath(vg_dir)
    if top not in [os.path.normpath(d) for d in records.directories]:
        return
    folders = [*records.directories, *(os.path.join(vg_dir, f) for f in IMAGE_FOLDERS)]
    index = records.directory_index.copy()
    for i in np.flatnonzero([os.path.normpath(records.directories[d]) == top for d in records.directory_index]):
        name = os.path.basename(records.file_name(i))
        found = [k for k, f in enumerate(IMAGE_FOLDERS) if os.path.exists(os.path.join(vg_dir, f, name))]
        index[i] = len(records.directories) + (found[0] if found else 0)
    records.directories, records.directory_index = folders, index


def caption_report(records: BoxRecords, result_info: dict | None = None) -> dict[str, int]:
    """DenseCap normalisation's effect on the split's phrases: from the cleaned file's ``info``
    (``datasets/prepare_vg.py`` stores it) when there, else computed over the records."""
    if result_info and "caption_normalization" in result_info:
        return dict(result_info["caption_normalization"])
    return normalization_report(records.caption(j) for j in range(records.num_boxes))


def _finish(name: str, records: BoxRecords, counts: dict, info: dict | None) -> BoxRecords:
    """Log the counts and the normalisation report; put both on the split's metadata."""
    log_box_counts(name, counts)
    report = caption_report(records, info)
    logger.info(
        "%s: DenseCap caption normalisation (applied where a mapper sets caption_normalization=densecap) would change %s",
        name, ", ".join(f"{key.replace('_', ' ')} {value}" for key, value in report.items()),
    )
    MetadataCatalog.get(name).set(load_counts=dict(counts), caption_normalization_report=report)
    return records


def load_vg_densecap(files: VGFiles, split: str, name: str) -> BoxRecords:
    """Records of one DenseCap split: the cleaned file when present, else the official files."""
    clean = files.clean(split)
    if os.path.isfile(clean):
        result = read_coco_boxes(clean, files.vg_dir)
        info = (result.extra.get("info") or [{}])[0]
        counts = {**result.counts, **{k: v for k, v in info.items() if isinstance(v, int)}}
        return _finish(name, result.records, counts, info)
    logger.warning(
        "%s not found: reading the official VG files (the ~700 MB region file is streamed; missing or corrupt images are "
        "skipped at training time; run datasets/prepare_vg.py to check them once)", clean,
    )
    result = read_densecap_splits(files, (split,))[split]
    return _finish(name, result.records, result.counts, None)


def load_vg_grit(files: VGFiles, split: str, name: str) -> BoxRecords:
    """Records of GRiT's preprocessed ``vg/annotations/<split>.json`` (COCO style, ``caption`` per box)."""
    result = read_coco_boxes(files.grit(split), files.vg_dir)
    _assign_image_folders(result.records, files.vg_dir)
    return _finish(name, result.records, result.counts, None)


def register_all_vg(root: str) -> None:
    """Register the DenseCap splits, and GRiT's where its files exist, under the datasets ``root``."""
    files = VGFiles(root)
    metadata = {**box_metadata(VG_CATEGORIES), "caption_source": "region phrases"}
    for split in DENSECAP_SPLITS:
        name = f"sca_vg_densecap_{split}"
        register_box_source(
            name, lambda split=split, name=name: load_vg_densecap(files, split, name), metadata,
            image_root=files.vg_dir, json_file=files.region_descriptions, evaluator_type="vg_densecap",
        )
    for split in GRIT_SPLITS:
        if os.path.isfile(files.grit(split)):
            name = f"sca_vg_grit_{split}"
            register_box_source(
                name, lambda split=split, name=name: load_vg_grit(files, split, name), metadata,
                image_root=files.vg_dir, json_file=files.grit(split), evaluator_type="vg_densecap",
            )
