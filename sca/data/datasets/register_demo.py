"""The demo source: synthetic coloured shapes in the COCO panoptic on-disk format.

Each image shows 2-4 shapes (ring, square, triangle) of six colours, of varied size and
position, possibly overlapping (each keeps most of its area visible). Every shape is a thing
segment whose category, and so caption, is "<colour> <shape>": 18 distinct captions, balanced.
The three shapes differ both at the corners and at the centre of their box, which a from-scratch
encoder on a 16x16 token grid learns within minutes (a filled circle against a square, differing
only at the corners, took twice as long and failed in some runs).

The data is generated deterministically on first use into a cache directory
(``$SCA_DEMO_ROOT``, default ``~/.cache/sca/demo-<version>``). Generation writes into a temporary
folder that is renamed into place only when complete, so an interrupted run is never trusted.
Splits ``sca_demo_train`` and ``sca_demo_val`` are registered like any real panoptic source.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from panopticapi.utils import id2rgb
from PIL import Image
from tqdm import tqdm

from sca.data.datasets.generated_folder import generate_once
from sca.data.datasets.panoptic_json import load_panoptic_json, panoptic_metadata, register_panoptic_source

__all__ = ["DEMO_CATEGORIES", "DEMO_SPLITS", "demo_root", "ensure_demo_data", "register_all_demo"]

COLORS = {
    "red": (215, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 225),
    "yellow": (235, 205, 35),
    "purple": (145, 60, 195),
    "orange": (245, 135, 25),
}
SHAPES = ("ring", "square", "triangle")
DEMO_CATEGORIES = [
    {"id": 1 + i * len(SHAPES) + j, "name": f"{color} {shape}", "supercategory": shape, "isthing": 1, "color": list(rgb)}
    for i, (color, rgb) in enumerate(COLORS.items())
    for j, shape in enumerate(SHAPES)
]


@dataclass(frozen=True)
class DemoSplit:
    folder: str
    num_images: int
    seed: int


DEMO_SPLITS = {
    "sca_demo_train": DemoSplit("train", 4000, 1),
    "sca_demo_val": DemoSplit("val", 200, 2),
}


@dataclass(frozen=True)
class ShapeSpec:
    """Generation parameters; part of the cache key."""

    min_image_side: int = 96
    max_image_side: int = 128
    min_shape_side: int = 40
    max_shape_side: int = 64
    min_shapes: int = 2
    max_shapes: int = 4
    min_visible_fraction: float = 0.7
    color_jitter: int = 12
    jpeg_quality: int = 95


SPEC = ShapeSpec()
GENERATOR_REVISION = 3  # bump when the drawing logic changes: it is part of the cache key
_VERSION = hashlib.sha1(
    json.dumps(
        [GENERATOR_REVISION, asdict(SPEC), {k: asdict(v) for k, v in DEMO_SPLITS.items()}, DEMO_CATEGORIES], sort_keys=True
    ).encode()
).hexdigest()[:10]


def demo_root() -> Path:
    """Where the demo data lives (``$SCA_DEMO_ROOT`` or a versioned folder in the user cache)."""
    if os.environ.get("SCA_DEMO_ROOT"):
        return Path(os.environ["SCA_DEMO_ROOT"])
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "sca" / f"demo-{_VERSION}"


def _split_paths(root: Path, split: DemoSplit) -> dict[str, str]:
    return {
        "image_root": str(root / "images" / split.folder),
        "panoptic_root": str(root / f"panoptic_{split.folder}"),
        "panoptic_json": str(root / "annotations" / f"panoptic_{split.folder}.json"),
    }


def _shape_mask(shape: str, side: int) -> np.ndarray:
    mask = np.zeros((side, side), np.uint8)
    if shape == "square":
        mask[:] = 1
    elif shape == "ring":  # a disc with a hole of half its diameter
        cv2.circle(mask, (side // 2, side // 2), side // 2, 1, thickness=-1, lineType=cv2.LINE_8)
        cv2.circle(mask, (side // 2, side // 2), side // 4, 0, thickness=-1, lineType=cv2.LINE_8)
    else:  # isosceles triangle pointing up
        cv2.fillPoly(mask, [np.array([[side // 2, 0], [0, side - 1], [side - 1, side - 1]], np.int32)], 1)
    return mask.astype(bool)


def _draw_image(rng: np.random.Generator, categories: list[dict]):
    """Paint shapes one over another.

    Returns (RGB image, segment id map, segments_info, categories that found no place)."""
    width, height = rng.integers(SPEC.min_image_side, SPEC.max_image_side + 1, size=2)
    background = rng.integers(30, 110)
    image = np.full((height, width, 3), background, np.int16) + rng.integers(-6, 7, (height, width, 3))
    ids = np.zeros((height, width), np.int32)
    segments, unplaced = [], []
    for instance, category in enumerate(categories, start=1):
        shape = SHAPES[(category["id"] - 1) % len(SHAPES)]
        for _ in range(30):  # find a placement that hides no earlier shape too much
            side = int(rng.integers(SPEC.min_shape_side, min(SPEC.max_shape_side, width, height) + 1))
            x0, y0 = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
            full = np.zeros_like(ids, dtype=bool)
            full[y0 : y0 + side, x0 : x0 + side] = _shape_mask(shape, side)
            candidate = np.where(full, category["id"] * 1000 + instance, ids)
            if all(
                (candidate == s["id"]).sum() >= SPEC.min_visible_fraction * s["full_area"] for s in segments
            ):
                break
        else:
            unplaced.append(category)
            continue
        ids = candidate
        color = np.array(category["color"]) + rng.integers(-SPEC.color_jitter, SPEC.color_jitter + 1, 3)
        image[full] = color
        segments.append({"id": category["id"] * 1000 + instance, "category_id": category["id"], "full_area": int(full.sum())})
    segments_info = []
    for s in segments:
        ys, xs = np.nonzero(ids == s["id"])
        bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
        segments_info.append({"id": s["id"], "category_id": s["category_id"], "iscrowd": 0, "bbox": bbox, "area": int(len(xs))})
    return np.clip(image, 0, 255).astype(np.uint8), ids, segments_info, unplaced


def _generate_split(root: Path, split: DemoSplit) -> None:
    rng = np.random.default_rng(split.seed)
    paths = _split_paths(root, split)
    for key in ("image_root", "panoptic_root"):
        os.makedirs(paths[key], exist_ok=True)
    os.makedirs(os.path.dirname(paths["panoptic_json"]), exist_ok=True)
    # Balanced categories: walk through shuffled passes over all categories; a shape that finds no
    # place in its image goes first into the next one.
    queue: list[dict] = []
    images, annotations = [], []
    for image_id in tqdm(range(1, split.num_images + 1), desc=f"demo {split.folder}", unit="img"):
        count = int(rng.integers(SPEC.min_shapes, SPEC.max_shapes + 1))
        while len(queue) < count:
            queue.extend(DEMO_CATEGORIES[i] for i in rng.permutation(len(DEMO_CATEGORIES)))
        chosen, queue = queue[:count], queue[count:]
        image, ids, segments_info, unplaced = _draw_image(rng, chosen)
        queue = unplaced + queue
        stem = f"{image_id:06d}"
        Image.fromarray(image).save(os.path.join(paths["image_root"], stem + ".jpg"), quality=SPEC.jpeg_quality)
        Image.fromarray(id2rgb(ids)).save(os.path.join(paths["panoptic_root"], stem + ".png"))
        images.append({"id": image_id, "file_name": stem + ".jpg", "width": image.shape[1], "height": image.shape[0]})
        annotations.append({"image_id": image_id, "file_name": stem + ".png", "segments_info": segments_info})
    content = {
        "info": {"description": "SCA synthetic demo (coloured shapes)", "version": _VERSION},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": DEMO_CATEGORIES,
    }
    with open(paths["panoptic_json"], "w") as f:
        json.dump(content, f)


def ensure_demo_data(root: Path | None = None) -> Path:
    """Generate the demo data into ``root`` unless a complete copy is there; returns ``root``."""

    def generate(folder: Path) -> None:
        for split in DEMO_SPLITS.values():
            _generate_split(folder, split)

    return generate_once(Path(root) if root is not None else demo_root(), generate, _VERSION, "demo dataset")


def _load_split(name: str) -> list[dict]:
    root = ensure_demo_data()
    paths = _split_paths(root, DEMO_SPLITS[name])
    return load_panoptic_json(paths["panoptic_json"], paths["image_root"], paths["panoptic_root"], panoptic_metadata(DEMO_CATEGORIES))


def register_all_demo() -> None:
    """Register ``sca_demo_train`` and ``sca_demo_val`` (nothing is generated or read yet)."""
    root = demo_root()
    for name, split in DEMO_SPLITS.items():
        register_panoptic_source(
            name,
            lambda name=name: _load_split(name),
            panoptic_metadata(DEMO_CATEGORIES),
            evaluator_type="coco_panoptic_seg",
            **_split_paths(root, split),
        )
