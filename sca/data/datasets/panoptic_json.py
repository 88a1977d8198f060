"""COCO-panoptic-format loading and metadata, shared by every panoptic source.

Records follow detectron2's panoptic dataset-dict format (``file_name, image_id, height, width,
pan_seg_file_name, segments_info[{id, category_id (contiguous), isthing, iscrowd, area, bbox}]``).
Metadata follows the Mask2Former conventions: ``stuff_classes`` lists *all* classes.
"""

from __future__ import annotations

import json
import os
from typing import Any

from sca.data.datasets.catalog import register_split

__all__ = ["panoptic_metadata", "load_panoptic_json", "register_panoptic_source"]


def panoptic_metadata(categories: list[dict[str, Any]]) -> dict[str, Any]:
    """Mask2Former-style class metadata from COCO-panoptic ``categories`` (colour optional).

    Args:
        categories: dicts with ``id``, ``name``, ``isthing`` and optionally ``color``.
    Returns:
        thing/stuff classes and colours, and dataset-id -> contiguous-id maps, where the
        contiguous id indexes the full class list.
    """
    colors = [list(c.get("color", (0, 0, 0))) for c in categories]
    things = [i for i, c in enumerate(categories) if c["isthing"]]
    return {
        "thing_classes": [categories[i]["name"] for i in things],
        "thing_colors": [colors[i] for i in things],
        "stuff_classes": [c["name"] for c in categories],
        "stuff_colors": colors,
        "thing_dataset_id_to_contiguous_id": {categories[i]["id"]: i for i in things},
        "stuff_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(categories)},
    }


def load_panoptic_json(json_file: str, image_root: str, panoptic_root: str, metadata: dict) -> list[dict]:
    """Read a COCO-panoptic JSON into detectron2 panoptic dataset dicts.

    Args:
        json_file: the panoptic annotation JSON.
        image_root: folder of the images named in the JSON ``images`` table.
        panoptic_root: folder of the panoptic PNGs.
        metadata: output of :func:`panoptic_metadata` (for the contiguous id maps).
    """
    with open(json_file) as f:
        content = json.load(f)
    images = {image["id"]: image for image in content["images"]}
    id_map = metadata["stuff_dataset_id_to_contiguous_id"]
    thing_ids = metadata["thing_dataset_id_to_contiguous_id"]
    records = []
    for ann in content["annotations"]:
        image = images[ann["image_id"]]
        segments = [
            {
                "id": int(s["id"]),
                "category_id": id_map[s["category_id"]],
                "isthing": s["category_id"] in thing_ids,
                "iscrowd": int(s.get("iscrowd", 0)),
                "area": int(s["area"]),
                "bbox": [float(v) for v in s["bbox"]],
            }
            for s in ann["segments_info"]
        ]
        records.append(
            {
                "file_name": os.path.join(image_root, image["file_name"]),
                "image_id": ann["image_id"],
                "height": int(image["height"]),
                "width": int(image["width"]),
                "pan_seg_file_name": os.path.join(panoptic_root, ann["file_name"]),
                "segments_info": segments,
            }
        )
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
) -> None:
    """Register a panoptic split under ``name`` (lazy: ``loader`` runs on first request).

    Registering the same name again replaces the previous entry instead of failing.
    """
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
            **metadata,
        ),
    )
