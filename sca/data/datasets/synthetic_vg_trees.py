"""Synthetic Visual Genome trees in the official on-disk layout (``image_data.json``,
``region_descriptions.json`` in the v1.2 or v1.0 keys, DenseCap's ``densecap_splits.json``, JPEGs
in ``VG_100K`` / ``VG_100K_2``) and GRiT-style ``vg/annotations/<split>.json`` files derived from
them, for the tests and the memory benchmark (no real dataset can be downloaded here).

Scenes come from :func:`sca.data.datasets.synthetic_trees.draw_scene` (each instance's tight box
is a region); phrases are short free text with capitals and punctuation, some longer than 15
words, so that DenseCap's normalisation has work. Generation is deterministic for a given seed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from sca.data.datasets.register_vg import IMAGE_FOLDERS, VG_CATEGORIES
from sca.data.datasets.synthetic_detection_trees import image_sizes, scene_boxes

__all__ = ["VG_KEY_VERSIONS", "vg_image_url", "synthetic_phrase", "write_vg_tree", "write_grit_annotations"]

VG_KEY_VERSIONS = ("v1.2", "v1.0")  # v1.0: images and regions keyed "id", regions name their "image"
_COLOURS = ("red", "green", "blue", "white", "black", "yellow")
_THINGS = ("car", "dog", "tree", "window", "sign", "shirt")
_LONG_PHRASE = "a very long description of a {colour} {thing} that goes on and on with many words for the region"


def vg_image_url(image_id: int, folder: str) -> str:
    return f"https://cs.stanford.edu/people/rak248/{folder}/{image_id}.jpg"


def synthetic_phrase(rng: np.random.Generator) -> str:
    """A phrase such as "The red car." or "red dog's window"; one in 10 has 19 words."""
    colour, thing = _COLOURS[rng.integers(len(_COLOURS))], _THINGS[rng.integers(len(_THINGS))]
    kind = rng.integers(10)
    if kind == 0:
        return _LONG_PHRASE.format(colour=colour, thing=thing)
    if kind < 4:
        return f"The {colour} {thing}."
    if kind < 7:
        return f"{colour} {thing}'s {_THINGS[rng.integers(len(_THINGS))]}"
    return f"{colour.capitalize()} {thing}"


def write_vg_tree(
    root: Path,
    num_images: int,
    *,
    split_sizes: tuple[int, int, int] | None = None,
    key_version: str = "v1.2",
    seed: int = 0,
    size: tuple[int, int] | None = None,
    max_regions: int = 6,
    first_image_id: int = 1,
) -> dict:
    """Write ``vg/{image_data,region_descriptions,densecap_splits}.json`` and the JPEGs (the first
    half of the images in ``VG_100K``, the rest in ``VG_100K_2``, as the ``url`` says).

    ``split_sizes`` (train, val, test) default: the images divided 60/20/20 (in id order).
    Returns ``{"image_data", "region_descriptions", "densecap_splits"}`` as written.
    """
    if key_version not in VG_KEY_VERSIONS:
        raise ValueError(f"key_version must be one of {VG_KEY_VERSIONS}, got '{key_version}'")
    rng = np.random.default_rng(seed)
    vg = Path(root) / "vg"
    image_data, region_descriptions = [], []
    region_id = first_image_id * 1000
    for i, (width, height) in enumerate(image_sizes(rng, num_images, size)):
        image_id = first_image_id + i
        folder = IMAGE_FOLDERS[0] if i < num_images // 2 else IMAGE_FOLDERS[1]
        path = vg / folder / f"{image_id}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels, boxes = scene_boxes(rng, width, height, max_regions)
        Image.fromarray(pixels).save(path, quality=90)
        id_key = "image_id" if key_version == "v1.2" else "id"
        image_data.append({id_key: image_id, "url": vg_image_url(image_id, folder), "width": width, "height": height,
                           "coco_id": None, "flickr_id": int(rng.integers(10**6, 10**8))})
        regions = []
        for x, y, w, h in boxes:
            region_id += 1
            region = {"width": int(w), "height": int(h), "phrase": synthetic_phrase(rng), "y": int(y), "x": int(x)}
            if key_version == "v1.2":
                region.update(region_id=region_id, image_id=image_id)
            else:
                region.update(id=region_id, image=image_id)
            regions.append(region)
        region_descriptions.append({"regions": regions, "id": image_id})
    ids = [entry["id"] for entry in region_descriptions]
    train, val, test = split_sizes or (num_images - 2 * (num_images // 5), num_images // 5, num_images // 5)
    splits = {"train": ids[:train], "val": ids[train : train + val], "test": ids[train + val : train + val + test]}
    content = {"image_data": image_data, "region_descriptions": region_descriptions, "densecap_splits": splits}
    for name, value in content.items():
        (vg / f"{name}.json").write_text(json.dumps(value))
    return content


def write_grit_annotations(root: Path, split: str, tree: dict, image_ids: list[int]) -> dict:
    """Write GRiT's ``vg/annotations/<split>.json`` (COCO style, ``file_name`` = ``<id>.jpg``
    without a folder, a ``caption`` per box, one category) for the images ``image_ids`` of a
    tree written by :func:`write_vg_tree`. Returns the content."""
    chosen = set(image_ids)
    images = [
        {"id": image.get("image_id", image.get("id")), "file_name": f"{image.get('image_id', image.get('id'))}.jpg",
         "width": image["width"], "height": image["height"]}
        for image in tree["image_data"] if image.get("image_id", image.get("id")) in chosen
    ]
    annotations = []
    for entry in tree["region_descriptions"]:
        if entry["id"] not in chosen:
            continue
        for region in entry["regions"]:
            box = [region["x"], region["y"], region["width"], region["height"]]
            annotations.append({"id": len(annotations) + 1, "image_id": entry["id"], "bbox": box, "category_id": 1,
                                "area": box[2] * box[3], "iscrowd": 0, "caption": region["phrase"]})
    content = {"images": images, "annotations": annotations, "categories": VG_CATEGORIES}
    path = Path(root) / "vg" / "annotations" / f"{split}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))
    return content
