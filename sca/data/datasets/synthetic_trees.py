"""Synthetic COCO panoptic and raw ADE20k trees in the exact official on-disk layouts.

Tests run the real preparation scripts, registration and mappers on them, and
``tools/benchmark_mappers.py`` times mappers on them (realistic sizes and segment counts), since no
real dataset can be downloaded here. Scenes are stuff bands with wavy borders, a void patch, and
random polygons of thing classes painted over one another; the JPEG shows each segment in its own
colour with texture. Generation is deterministic for a given seed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES
from panopticapi.utils import id2rgb
from PIL import Image

from sca.data.datasets.ade20k_classes import ade20k_instance_to_semantic

__all__ = ["Scene", "draw_scene", "write_coco_panoptic_tree", "write_ade20k_raw_tree"]


@dataclass
class Scene:
    """One synthetic image: RGB pixels, stuff class per pixel (-1 = void), thing instance per pixel
    (0 = none, i = ``thing_classes[i - 1]``)."""

    image: np.ndarray
    stuff: np.ndarray
    instances: np.ndarray
    thing_classes: list[int]


def _polygon(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    center = rng.uniform((0.1 * width, 0.1 * height), (0.9 * width, 0.9 * height))
    radius = rng.uniform(0.04, 0.25) * min(width, height)
    angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(5, 10))))
    radii = radius * rng.uniform(0.5, 1.0, len(angles))
    return np.stack([center[0] + radii * np.cos(angles), center[1] + radii * np.sin(angles)], 1).astype(np.int32)


def draw_scene(rng: np.random.Generator, width: int, height: int, stuff_classes, thing_classes, max_things: int) -> Scene:
    """Draw one scene with 2-4 stuff bands from ``stuff_classes`` and up to ``max_things``
    instances of ``thing_classes`` (class ids are the caller's)."""
    bands = rng.choice(stuff_classes, size=int(rng.integers(2, 5)), replace=False)
    ys, xs = np.mgrid[0:height, 0:width]
    wave = 0.05 * height * np.sin(xs * rng.uniform(0.005, 0.03) + rng.uniform(0, 6.3))
    borders = np.sort(rng.uniform(0.15, 0.85, len(bands) - 1)) * height
    band = np.searchsorted(borders, ys + wave)
    stuff = np.asarray(bands)[band].astype(np.int32)
    x0, y0 = int(rng.integers(0, width * 3 // 4)), int(rng.integers(0, height * 3 // 4))
    stuff[y0 : y0 + height // 10, x0 : x0 + width // 8] = -1  # void patch
    instances = np.zeros((height, width), np.int32)
    classes = [int(c) for c in rng.choice(thing_classes, size=int(rng.integers(1, max_things + 1)))]
    for index in range(1, len(classes) + 1):
        cv2.fillPoly(instances, [_polygon(rng, width, height)], index)
    palette = rng.integers(30, 226, size=(len(classes) + len(bands) + 1, 3))
    owner = np.where(instances > 0, instances, len(classes) + 1 + band)
    image = palette[owner].astype(np.float32) + rng.normal(0, 12, (height, width, 3))
    image = cv2.GaussianBlur(image, (5, 5), 1.5)
    return Scene(np.clip(image, 0, 255).astype(np.uint8), stuff, instances, classes)


def _sizes(rng: np.random.Generator, num_images: int, size: tuple[int, int] | None) -> list[tuple[int, int]]:
    if size is not None:
        return [size] * num_images
    return [(int(w), int(h)) for w, h in rng.integers(48, 97, size=(num_images, 2))]


def write_coco_panoptic_tree(
    root: Path, split: str, num_images: int, *, seed: int = 0, size: tuple[int, int] | None = None,
    max_things: int = 6, crowd_probability: float = 0.1,
) -> list[dict]:
    """Write ``coco/{split}2017/*.jpg``, ``coco/panoptic_{split}2017/*.png`` and
    ``coco/annotations/panoptic_{split}2017.json`` under ``root`` (official names and keys; the
    categories carry no colour, as in the release).

    Args:
        size: (width, height) of every image; random small sizes when None.
    Returns:
        the JSON ``annotations``.
    """
    rng = np.random.default_rng(seed)
    coco = Path(root) / "coco"
    image_dir, png_dir, ann_dir = coco / f"{split}2017", coco / f"panoptic_{split}2017", coco / "annotations"
    for folder in (image_dir, png_dir, ann_dir):
        folder.mkdir(parents=True, exist_ok=True)
    stuff_ids = [c["id"] for c in COCO_CATEGORIES if not c["isthing"]]
    thing_ids = [c["id"] for c in COCO_CATEGORIES if c["isthing"]]
    images, annotations = [], []
    for image_id, (width, height) in enumerate(_sizes(rng, num_images, size), start=1):
        scene = draw_scene(rng, width, height, stuff_ids, thing_ids, max_things)
        ids = np.zeros((height, width), np.int32)
        segment_ids = 1 + rng.choice(2**24 - 1, size=len(stuff_ids) + len(scene.thing_classes), replace=False)
        owners = {}  # segment id -> (category id, iscrowd)
        for k, category in enumerate(stuff_ids):
            ids[scene.stuff == category] = segment_ids[k]
            owners[int(segment_ids[k])] = (category, 0)
        for index, category in enumerate(scene.thing_classes, start=1):
            segment_id = int(segment_ids[len(stuff_ids) + index - 1])
            ids[scene.instances == index] = segment_id
            owners[segment_id] = (category, int(rng.random() < crowd_probability))
        segments_info = []
        for segment_id, (category, iscrowd) in owners.items():
            ys, xs = np.nonzero(ids == segment_id)
            if len(xs):
                bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
                segments_info.append({"id": segment_id, "category_id": category, "iscrowd": iscrowd, "bbox": bbox, "area": int(len(xs))})
        stem = f"{image_id:012d}"
        Image.fromarray(scene.image).save(image_dir / f"{stem}.jpg", quality=90)
        Image.fromarray(id2rgb(ids)).save(png_dir / f"{stem}.png")
        images.append({"license": 1, "file_name": f"{stem}.jpg", "coco_url": "", "height": height, "width": width, "date_captured": "", "flickr_url": "", "id": image_id})
        annotations.append({"segments_info": segments_info, "file_name": f"{stem}.png", "image_id": image_id})
    categories = [
        {"supercategory": "thing" if c["isthing"] else "stuff", "isthing": c["isthing"], "id": c["id"], "name": c["name"]}
        for c in COCO_CATEGORIES
    ]
    content = {"info": {"description": "synthetic COCO panoptic"}, "licenses": [{"id": 1, "name": "", "url": ""}],
               "images": images, "annotations": annotations, "categories": categories}
    (ann_dir / f"panoptic_{split}2017.json").write_text(json.dumps(content))
    return annotations


def write_ade20k_raw_tree(
    root: Path, split: str, num_images: int, *, seed: int = 0, size: tuple[int, int] | None = None, max_things: int = 6
) -> None:
    """Write ``ADEChallengeData2016/{images,annotations,annotations_instance}/<folder>/`` under
    ``root`` as released: JPEGs, one-channel semantic PNGs (0 = other, 1..150) and instance PNGs
    (R = instance class 1..100, G = instance index, B = 0).

    Like the release, the two annotations disagree in places: some thing-class pixels of the
    semantic PNG have no instance, and a stuff patch of the semantic PNG overlaps an instance.
    """
    rng = np.random.default_rng(seed)
    folder = {"train": "training", "val": "validation"}[split]
    ade = Path(root) / "ADEChallengeData2016"
    dirs = [ade / kind / folder for kind in ("images", "annotations", "annotations_instance")]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    to_semantic = ade20k_instance_to_semantic()
    stuff_values = [v for v in range(1, 151) if v not in set(to_semantic.values())]
    for number, (width, height) in enumerate(_sizes(rng, num_images, size), start=1):
        scene = draw_scene(rng, width, height, stuff_values, sorted(to_semantic), max_things)
        semantic = np.where(scene.stuff < 0, 0, scene.stuff).astype(np.uint8)
        instance_rgb = np.zeros((height, width, 3), np.uint8)
        for index, instance_class in enumerate(scene.thing_classes, start=1):
            inside = scene.instances == index
            semantic[inside] = to_semantic[instance_class]
            instance_rgb[inside] = (instance_class, index, 0)
        orphan = rng.choice(sorted(set(to_semantic.values())))  # thing-class pixels without instance
        cv2.fillPoly(semantic, [_polygon(rng, width, height) // 3], int(orphan))
        cv2.fillPoly(semantic, [_polygon(rng, width, height) // 2], int(rng.choice(stuff_values)))
        stem = f"ADE_{split}_{number:08d}"
        Image.fromarray(scene.image).save(dirs[0] / f"{stem}.jpg", quality=90)
        Image.fromarray(semantic).save(dirs[1] / f"{stem}.png")
        Image.fromarray(instance_rgb).save(dirs[2] / f"{stem}.png")
