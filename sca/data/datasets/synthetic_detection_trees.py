"""Synthetic Objects365 v2 and V3Det v1 trees in the official on-disk layouts (file names, folder
names, JSON keys and ``file_name`` prefixes as released).

Tests run the preparation script, registration and mappers on them and
``tools/benchmark_mappers.py`` times the mappers on them, since no real dataset can be downloaded
here. Scenes come from :func:`sca.data.datasets.synthetic_trees.draw_scene`: each thing instance is
a box annotation (its tight bounding box). Generation is deterministic for a given seed.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from sca.data.datasets.register_objects365 import objects365_categories
from sca.data.datasets.synthetic_trees import draw_scene

__all__ = [
    "OBJECTS365_LAYOUTS",
    "OBJECTS365_TRAILING_SPACE_NAMES",
    "objects365_release_categories",
    "objects365_file_name",
    "scene_boxes",
    "image_sizes",
    "write_objects365_tree",
    "v3det_categories",
    "write_v3det_tree",
]

OBJECTS365_LAYOUTS = ("patches", "versioned")  # train/patch0/... or train/images/v1/patch0/...
OBJECTS365_TRAILING_SPACE_NAMES = ("Cigar/Cigarette", "Formula 1", "Table Tennis")  # released with a trailing space
_V1_PATCHES = 16  # patches 0..15 hold v1 images, later ones v2 (train: 0..50, val: 0..43)


def objects365_release_categories() -> list[dict]:
    """The ``categories`` as released: ``{name, id}`` with the original (misspelled) names."""
    return [
        {"name": c["original"] + (" " if c["original"] in OBJECTS365_TRAILING_SPACE_NAMES else ""), "id": c["id"]}
        for c in objects365_categories()
    ]


def objects365_file_name(image_id: int, patch: int) -> str:
    """The release's ``file_name``: ``images/v1/patch3/objects365_v1_00012345.jpg`` (v2 from patch 16)."""
    version = 1 if patch < _V1_PATCHES else 2
    return f"images/v{version}/patch{patch}/objects365_v{version}_{image_id:08d}.jpg"


def scene_boxes(rng: np.random.Generator, width: int, height: int, max_boxes: int):
    """A scene's image and one tight XYWH box per visible instance (shared with the VG trees)."""
    scene = draw_scene(rng, width, height, list(range(4)), [0], max_boxes)
    boxes = []
    for index in range(1, len(scene.thing_classes) + 1):
        mask = (scene.instances == index).astype(np.uint8)
        x, y, w, h = cv2.boundingRect(mask)
        if w:
            boxes.append([float(x), float(y), float(w), float(h)])
    return scene.image, boxes


def image_sizes(rng: np.random.Generator, num_images: int, size: tuple[int, int] | None) -> list[tuple[int, int]]:
    """``size`` for every image, else random (width, height) in 48..96."""
    if size is not None:
        return [size] * num_images
    return [(int(w), int(h)) for w, h in rng.integers(48, 97, size=(num_images, 2))]


def write_objects365_tree(
    root: Path,
    split: str,
    num_images: int,
    *,
    layout: str = "patches",
    patches: tuple[int, ...] = (0, 1, 16, 17),
    seed: int = 0,
    size: tuple[int, int] | None = None,
    max_boxes: int = 6,
    first_image_id: int = 1,
) -> dict:
    """Write ``objects365/{split}/...`` JPEGs and ``objects365/annotations/zhiyuan_objv2_{split}.json``.

    Image ``i`` goes to ``patches[i % len(patches)]`` (v1 below patch 16, v2 from it); ``layout``
    "patches" writes ``{split}/patch3/*.jpg``, "versioned" ``{split}/images/v1/patch3/*.jpg``.
    Annotations carry the release's keys (``isfake``, ``isreflected``...) and random classes of the
    365. Returns the JSON content.
    """
    if layout not in OBJECTS365_LAYOUTS:
        raise ValueError(f"layout must be one of {OBJECTS365_LAYOUTS}, got '{layout}'")
    rng = np.random.default_rng(seed)
    base = Path(root) / "objects365"
    images, annotations = [], []
    for i, (width, height) in enumerate(image_sizes(rng, num_images, size)):
        image_id = first_image_id + i
        file_name = objects365_file_name(image_id, patches[i % len(patches)])
        on_disk = file_name if layout == "versioned" else file_name.split("/", 2)[2]
        path = base / split / on_disk
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels, boxes = scene_boxes(rng, width, height, max_boxes)
        Image.fromarray(pixels).save(path, quality=90)
        images.append({"height": height, "id": image_id, "license": int(rng.integers(1, 9)), "width": width,
                       "file_name": file_name, "url": ""})
        for box in boxes:
            annotations.append({
                "id": len(annotations) + 1, "iscrowd": int(rng.random() < 0.05), "isfake": 0, "area": box[2] * box[3],
                "isreflected": 0, "bbox": box, "image_id": image_id, "category_id": int(rng.integers(1, 366)),
            })
    content = {
        "images": images,
        "annotations": annotations,
        "categories": objects365_release_categories(),
        "licenses": [{"name": f"license {i}", "url": "", "id": i} for i in range(1, 9)],
    }
    (base / "annotations").mkdir(parents=True, exist_ok=True)
    (base / "annotations" / f"zhiyuan_objv2_{split}.json").write_text(json.dumps(content))
    return content


def v3det_categories(num_classes: int = 13204) -> list[dict]:
    """``categories`` in V3Det's keys (``id``, ``name``, ``name_zh``, ``cat_info``), ids 1..N."""
    return [
        {"id": i, "name": f"object class {i}", "name_zh": f"类别{i}", "cat_info": f"A synthetic class number {i}."}
        for i in range(1, num_classes + 1)
    ]


def write_v3det_tree(
    root: Path,
    split: str,
    num_images: int,
    *,
    num_classes: int = 13204,
    seed: int = 0,
    size: tuple[int, int] | None = None,
    max_boxes: int = 6,
) -> dict:
    """Write ``V3Det/images/<synset>/*.jpg`` and ``V3Det/annotations/v3det_2023_v1_{split}.json``
    (``file_name`` = ``images/<synset>/<flickr-style name>.jpg``). Returns the JSON content."""
    rng = np.random.default_rng(seed)
    base = Path(root) / "V3Det"
    images, annotations = [], []
    for image_id, (width, height) in enumerate(image_sizes(rng, num_images, size)):
        synset = f"a{int(rng.integers(0, 10**8)):08d}"
        file_name = f"images/{synset}/{image_id}_{int(rng.integers(10**9, 10**10))}_{rng.bytes(5).hex()}_c.jpg"
        path = base / file_name
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels, boxes = scene_boxes(rng, width, height, max_boxes)
        Image.fromarray(pixels).save(path, quality=90)
        images.append({"file_name": file_name, "height": height, "width": width, "id": image_id})
        for box in boxes:
            annotations.append({"id": len(annotations), "image_id": image_id, "category_id": int(rng.integers(1, num_classes + 1)),
                                "bbox": box, "area": box[2] * box[3], "iscrowd": 0})
    content = {"images": images, "annotations": annotations, "categories": v3det_categories(num_classes)}
    (base / "annotations").mkdir(parents=True, exist_ok=True)
    (base / "annotations" / f"v3det_2023_v1_{split}.json").write_text(json.dumps(content))
    return content
