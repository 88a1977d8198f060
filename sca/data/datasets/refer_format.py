"""RefCOCO-family data in the refer API layout, shared by every referring source.

On disk: a COCO instances JSON (``instances.json``) plus ``refs(<split_by>).p``, a pickle (protocol
2, often written by Python 2) of a list of refs ``{ref_id, ann_id, image_id, category_id, split,
file_name, sent_ids, sentences: [{sent_id, raw, sent, tokens}]}``, or its conversion to JSON
(``refs(<split_by>).json``, by ``datasets/prepare_refcoco.py``), which is read instead when present.
Records follow detectron2's instances format, each annotation extended with ``ref_id`` and
``sentences`` (list of strings); an image appears once per split with one annotation per ref.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from collections import defaultdict
from typing import Any

import numpy as np
from detectron2.structures import BoxMode

from sca.data.datasets.catalog import register_split
from sca.data.datasets.coco_boxes import clip_boxes
from sca.data.datasets.dataset_paths import path_inside, warn_escaping

__all__ = ["load_refs", "converted_refs_file", "refer_metadata", "load_refer_instances", "register_refer_source"]

logger = logging.getLogger(__name__)

_REF_KEYS = ("ref_id", "ann_id", "image_id", "split", "sentences")


class _PlainUnpickler(pickle.Unpickler):
    """Unpickling runs code named in the file: refs files hold only lists, dicts, strings and
    numbers, so any class or function reference is refused."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refs files hold only plain containers; refusing to load {module}.{name}")


def load_refs(path: str) -> list[dict]:
    """Read a ``refs(<split_by>).p`` file with restricted unpickling (Python 2 ``str`` values are
    decoded as UTF-8; an invalid byte becomes U+FFFD), or its ``.json`` conversion.

    Raises:
        ValueError: naming the file, when it holds anything but plain data or is not a list of refs.
    """
    with open(path, "rb") as f:
        try:
            if path.endswith(".json"):
                refs = json.load(f)
            else:
                refs = _PlainUnpickler(f, encoding="utf-8", errors="replace").load()
        except (pickle.UnpicklingError, EOFError, ValueError) as error:
            raise ValueError(f"{path}: not a valid refs file ({error})") from error
    if not isinstance(refs, list) or not all(isinstance(r, dict) and all(k in r for k in _REF_KEYS) for r in refs):
        raise ValueError(f"{path}: expected a list of refs with keys {_REF_KEYS}")
    return refs


def converted_refs_file(refs_file: str) -> str:
    """Where ``datasets/prepare_refcoco.py`` writes the JSON conversion of a refs pickle."""
    return os.path.splitext(refs_file)[0] + ".json"


def refer_metadata(categories: list[dict[str, Any]]) -> dict[str, Any]:
    """Class names and the dataset-id -> contiguous-id map from COCO ``categories``."""
    return {
        "thing_classes": [c["name"] for c in categories],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(categories)},
    }


def load_refer_instances(instances_json: str, refs_file: str, image_root: str, split: str, metadata: dict) -> list[dict]:
    """detectron2 instance dicts of the refs of ``split``, one per image.

    Refs naming a missing annotation or image, or an image path outside ``image_root``, are
    skipped; an annotation box is clipped to its image, and a ref whose box has no area left is
    skipped: all counted in a warning. An annotation of a category absent from ``metadata`` is an
    error naming it.

    Args:
        instances_json: the COCO instances JSON the refs point into.
        refs_file: the ``refs(<split_by>).p`` pickle (its ``.json`` conversion is read when present).
        image_root: folder of the images named in the JSON ``images`` table.
        split: e.g. ``train``, ``val``, ``testA``.
        metadata: output of :func:`refer_metadata` (for the contiguous id map).
    """
    for path in (instances_json, refs_file):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} not found: datasets/README.md shows the expected tree and how to prepare it")
    converted = converted_refs_file(refs_file)
    refs = [r for r in load_refs(converted if os.path.isfile(converted) else refs_file) if r["split"] == split]
    if not refs:
        raise ValueError(f"{refs_file}: no refs of split '{split}'")
    with open(instances_json) as f:
        content = json.load(f)
    images = {image["id"]: image for image in content["images"]}
    annotations = {ann["id"]: ann for ann in content["annotations"]}
    id_map = metadata["thing_dataset_id_to_contiguous_id"]
    skipped: dict[str, int] = defaultdict(int)
    by_image: dict[int, list[dict]] = defaultdict(list)
    for ref in refs:
        ann = annotations.get(ref["ann_id"])
        if ann is None or ref["image_id"] not in images or ann["image_id"] != ref["image_id"]:
            skipped["missing annotation or image"] += 1
            continue
        if ann["category_id"] not in id_map:
            raise ValueError(f"{instances_json}: annotation {ann['id']} (ref {ref['ref_id']}) has unknown category_id {ann['category_id']}")
        image = images[ref["image_id"]]
        box = np.array([ann["bbox"]], dtype=np.float64).reshape(-1, 4)[:1]
        kept, clipped = clip_boxes(box, np.array([image["width"]]), np.array([image["height"]]))
        if not kept[0]:
            skipped["box without area in its image"] += 1
            continue
        skipped["box clipped to its image"] += int(clipped[0])
        by_image[ref["image_id"]].append(
            {
                "id": ann["id"],
                "bbox": box[0].tolist(),
                "bbox_mode": BoxMode.XYWH_ABS,
                "category_id": id_map[ann["category_id"]],
                "iscrowd": int(ann.get("iscrowd", 0)),
                "segmentation": ann["segmentation"],
                "ref_id": ref["ref_id"],
                "sentences": [s["sent"] for s in ref["sentences"]],
            }
        )
    records, escaping = [], []
    for image_id, image_annotations in by_image.items():
        image = images[image_id]
        file_name = path_inside(image_root, image["file_name"])
        if file_name is None:
            skipped["image path outside image_root"] += len(image_annotations)
            escaping.append(image["file_name"])
            continue
        records.append(
            {
                "file_name": file_name,
                "image_id": image_id,
                "height": int(image["height"]),
                "width": int(image["width"]),
                "annotations": image_annotations,
            }
        )
    skipped = {reason: count for reason, count in skipped.items() if count}
    if skipped:
        logger.warning("%s (%s): refs skipped (or, for a clipped box, changed): %s", refs_file, split, skipped)
    warn_escaping(instances_json, os.path.normpath(image_root), escaping)
    return records


def register_refer_source(
    name: str,
    loader,
    metadata: dict[str, Any],
    *,
    image_root: str,
    instances_json: str,
    refs_file: str,
    split: str,
    evaluator_type: str = "refcoco",
) -> None:
    """Register a referring split under ``name`` (lazy: ``loader`` runs on first request).

    Registering the same name again replaces the previous entry instead of failing.
    """
    register_split(
        name,
        loader,
        dict(image_root=image_root, json_file=instances_json, refs_file=refs_file, split=split, evaluator_type=evaluator_type, **metadata),
    )
