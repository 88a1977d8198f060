"""COCO-panoptic-format loading and metadata, shared by every panoptic source.

Records follow detectron2's panoptic dataset-dict format (``file_name, image_id, height, width,
pan_seg_file_name, sem_seg_file_name?, segments_info[{id, category_id (contiguous), isthing,
iscrowd, area, bbox}]``). Metadata: ``stuff_classes`` lists *all* classes (Mask2Former), and so do
``thing_classes`` / ``thing_colors``, indexed by the contiguous id as in detectron2's standard COCO
panoptic metadata, so that detectron2's ``Visualizer`` labels things correctly even where things and
stuff interleave (ADE20k); which classes are things is given by ``thing_dataset_id_to_contiguous_id``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from sca.data.datasets.catalog import register_split
from sca.data.datasets.dataset_paths import path_inside, warn_escaping

__all__ = [
    "PanopticSplit",
    "panoptic_metadata",
    "load_panoptic_json",
    "register_panoptic_source",
    "register_panoptic_splits",
]


def panoptic_metadata(categories: list[dict[str, Any]]) -> dict[str, Any]:
    """Class metadata from COCO-panoptic ``categories`` (colour optional).

    Args:
        categories: dicts with ``id``, ``name``, ``isthing`` and optionally ``color``.
    Returns:
        classes and colours indexed by contiguous id (the position in ``categories``), and
        dataset-id -> contiguous-id maps (things only / all classes).
    """
    names = [c["name"] for c in categories]
    colors = [list(c.get("color", (0, 0, 0))) for c in categories]
    return {
        "thing_classes": names,
        "thing_colors": colors,
        "stuff_classes": list(names),
        "stuff_colors": [list(c) for c in colors],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(categories) if c["isthing"]},
        "stuff_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(categories)},
    }


def load_panoptic_json(
    json_file: str, image_root: str, panoptic_root: str, metadata: dict, sem_seg_root: str | None = None
) -> list[dict]:
    """Read a COCO-panoptic JSON into detectron2 panoptic dataset dicts.

    Args:
        json_file: the panoptic annotation JSON.
        image_root: folder of the images named in the JSON ``images`` table.
        panoptic_root: folder of the panoptic PNGs.
        metadata: output of :func:`panoptic_metadata` (for the contiguous id maps).
        sem_seg_root: folder of semantic PNGs (same stem as the panoptic PNG); records get a
            ``sem_seg_file_name`` when this folder exists.
    Raises:
        FileNotFoundError: when ``json_file`` does not exist.
        ValueError: naming the file, for malformed JSON, an annotation without image entry or an
            unknown category.

    A record whose image or PNG ``file_name`` leaves its folder is dropped, counted and logged.
    """
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"{json_file} not found: datasets/README.md shows the expected tree and how to prepare it")
    try:
        with open(json_file) as f:
            content = json.load(f)
        images = {image["id"]: image for image in content["images"]}
        annotations = content["annotations"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{json_file}: not a COCO panoptic JSON ({type(error).__name__}: {error})") from None
    id_map = metadata["stuff_dataset_id_to_contiguous_id"]
    thing_ids = metadata["thing_dataset_id_to_contiguous_id"]
    with_sem_seg = sem_seg_root is not None and os.path.isdir(sem_seg_root)
    records, escaping = [], []
    for ann in annotations:
        image = images.get(ann["image_id"])
        if image is None:
            raise ValueError(f"{json_file}: annotation {ann['file_name']} has image_id {ann['image_id']!r}, absent from 'images'")
        file_name, pan_seg_file_name = path_inside(image_root, image["file_name"]), path_inside(panoptic_root, ann["file_name"])
        if file_name is None or pan_seg_file_name is None:
            escaping.append(image["file_name"] if file_name is None else ann["file_name"])
            continue
        segments = []
        for s in ann["segments_info"]:
            if s["category_id"] not in id_map:
                raise ValueError(f"{json_file}: {ann['file_name']} segment {s['id']} has unknown category_id {s['category_id']}")
            segments.append(
                {
                    "id": int(s["id"]),
                    "category_id": id_map[s["category_id"]],
                    "isthing": s["category_id"] in thing_ids,
                    "iscrowd": int(s.get("iscrowd", 0)),
                    "area": int(s["area"]),
                    "bbox": [float(v) for v in s["bbox"]],
                }
            )
        record = {
            "file_name": file_name,
            "image_id": ann["image_id"],
            "height": int(image["height"]),
            "width": int(image["width"]),
            "pan_seg_file_name": pan_seg_file_name,
            "segments_info": segments,
        }
        if with_sem_seg:
            record["sem_seg_file_name"] = os.path.join(sem_seg_root, os.path.basename(record["pan_seg_file_name"]))
        records.append(record)
    warn_escaping(json_file, os.path.commonpath([os.path.abspath(image_root), os.path.abspath(panoptic_root)]), escaping)
    return records


def register_panoptic_source(
    name: str,
    loader,
    metadata: dict[str, Any],
    *,
    image_root: str,
    panoptic_root: str,
    panoptic_json: str,
    evaluator_type: str,
    sem_seg_root: str | None = None,
) -> None:
    """Register a panoptic split under ``name`` (lazy: ``loader`` runs on first request).

    Registering the same name again replaces the previous entry instead of failing.
    """
    paths = {"sem_seg_root": sem_seg_root} if sem_seg_root else {}
    register_split(
        name,
        loader,
        dict(
            image_root=image_root,
            panoptic_root=panoptic_root,
            panoptic_json=panoptic_json,
            evaluator_type=evaluator_type,
            ignore_label=255,
            label_divisor=1000,
            **paths,
            **metadata,
        ),
    )


@dataclass(frozen=True)
class PanopticSplit:
    """Where one split lives, relative to the datasets root."""

    image_dir: str
    panoptic_dir: str
    panoptic_json: str
    sem_seg_dir: str | None = None

    def paths(self, root: str) -> dict[str, str | None]:
        return {
            "image_root": os.path.join(root, self.image_dir),
            "panoptic_root": os.path.join(root, self.panoptic_dir),
            "panoptic_json": os.path.join(root, self.panoptic_json),
            "sem_seg_root": os.path.join(root, self.sem_seg_dir) if self.sem_seg_dir else None,
        }


def register_panoptic_splits(splits: dict[str, PanopticSplit], root: str, metadata: dict, evaluator_type: str) -> None:
    """Register every split of ``splits`` under the datasets ``root``; nothing is read yet."""
    for name, split in splits.items():
        paths = split.paths(root)
        register_panoptic_source(
            name,
            lambda paths=paths: load_panoptic_json(
                paths["panoptic_json"], paths["image_root"], paths["panoptic_root"], metadata, paths["sem_seg_root"]
            ),
            metadata,
            evaluator_type=evaluator_type,
            **paths,
        )
