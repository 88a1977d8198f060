"""The demo referring source: the demo's shapes described by referring expressions, written in the
RefCOCO on-disk layout (refer API), so that it trains through the same loader as real RefCOCO.

Each shape of a demo image becomes a ref with three sentences generated from the geometry, e.g.
"red ring left of blue square" (relation to the nearest other shape), "left red ring" (its rank
along x among the image's shapes) and "the red ring". Layout under the root::

    refcoco_demo/instances.json          COCO instances (RLE masks), train and val images
    refcoco_demo/refs(demo).p            pickle (protocol 2) of refs with split "train" / "val"
    train2014/COCO_train2014_%012d.jpg   the demo images (hard links where possible)

The root is ``$SCA_DEMO_REFS_ROOT``, default beside the demo data (its name carries the demo's
version and :data:`GENERATOR_REVISION`); it is derived from the demo data on first use, into a
temporary folder renamed into place only when complete.

Masks are stored as compressed RLE, which COCO's format allows next to polygons: a ring's hole (and
a shape partly hidden inside another's hole) cannot be expressed by COCO polygons, whose parts are
unioned; filled polygons would teach the mask loss discs where the demo source teaches rings.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
from detectron2.data import DatasetCatalog
from panopticapi.utils import rgb2id
from PIL import Image
from tqdm import tqdm

from sca.data.datasets.generated_folder import generate_once
from sca.data.datasets.refer_format import load_refer_instances, refer_metadata, register_refer_source
from sca.data.datasets.register_demo import DEMO_CATEGORIES, demo_root

__all__ = ["DEMO_REFS_SPLITS", "demo_refs_root", "ensure_demo_refs", "referring_sentences", "register_all_demo_refs"]

# registered name -> (demo split it describes, refs split, image id offset keeping ids unique)
DEMO_REFS_SPLITS = {
    "sca_demo_refs_train": ("sca_demo_train", "train", 0),
    "sca_demo_refs_val": ("sca_demo_val", "val", 500_000),
}
GENERATOR_REVISION = 3  # bump when the sentences or the layout change: it is part of the root's name


def demo_refs_root() -> Path:
    if os.environ.get("SCA_DEMO_REFS_ROOT"):
        return Path(os.environ["SCA_DEMO_REFS_ROOT"])
    root = demo_root()
    return root.parent / f"{root.name}-refs-r{GENERATOR_REVISION}"


def _paths(root: Path) -> dict[str, str]:
    return {
        "image_root": str(root / "train2014"),
        "instances_json": str(root / "refcoco_demo" / "instances.json"),
        "refs_file": str(root / "refcoco_demo" / "refs(demo).p"),
    }


def referring_sentences(names: list[str], centers: np.ndarray) -> list[list[str]]:
    """Three referring expressions per shape of one image.

    Args:
        names: "<colour> <shape>" of each shape.
        centers: (N, 2) centroid (x, y) of each shape's visible pixels.
    """
    sentences = []
    order = np.argsort(centers[:, 0], kind="stable")
    for i, name in enumerate(names):
        place = "left" if i == order[0] else "right" if i == order[-1] else "middle"
        expressions = [f"{place} {name}", f"the {name}"]
        if len(names) > 1:
            distances = np.linalg.norm(centers - centers[i], axis=1)
            distances[i] = np.inf
            j = int(np.argmin(distances))
            dx, dy = centers[i] - centers[j]
            relation = ("left of" if dx < 0 else "right of") if abs(dx) >= abs(dy) else ("above" if dy < 0 else "below")
            expressions.insert(0, f"{name} {relation} {names[j]}")
        sentences.append(expressions)
    return sentences


def _rle(mask: np.ndarray) -> dict:
    """COCO compressed RLE of a (H, W) bool mask, JSON-ready."""
    rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _describe_split(staging: Path, demo_split: str, split: str, offset: int, content: dict, refs: list[dict]) -> None:
    names = {c["id"]: c["name"] for c in DEMO_CATEGORIES}
    contiguous_to_id = [c["id"] for c in DEMO_CATEGORIES]
    for record in tqdm(DatasetCatalog.get(demo_split), desc=f"demo refs {split}", unit="img"):
        image_id = offset + record["image_id"]
        file_name = f"COCO_train2014_{image_id:012d}.jpg"
        _link_or_copy(record["file_name"], str(staging / "train2014" / file_name))
        content["images"].append({"id": image_id, "file_name": file_name, "width": record["width"], "height": record["height"]})
        ids = rgb2id(np.asarray(Image.open(record["pan_seg_file_name"]).convert("RGB")))
        segments = [s for s in record["segments_info"] if (ids == s["id"]).any()]
        masks = [ids == s["id"] for s in segments]
        centers = np.array([[np.nonzero(m)[1].mean(), np.nonzero(m)[0].mean()] for m in masks]).reshape(-1, 2)
        category_ids = [contiguous_to_id[s["category_id"]] for s in segments]
        sentences = referring_sentences([names[c] for c in category_ids], centers)
        for segment, mask, category_id, expressions in zip(segments, masks, category_ids, sentences):
            ann_id = len(content["annotations"]) + 1
            content["annotations"].append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": category_id,
                    "segmentation": _rle(mask),
                    "area": int(mask.sum()),
                    "bbox": segment["bbox"],
                    "iscrowd": 0,
                }
            )
            first_sent_id = refs[-1]["sent_ids"][-1] + 1 if refs else 0
            sent_ids = list(range(first_sent_id, first_sent_id + len(expressions)))
            refs.append(
                {
                    "ref_id": len(refs),
                    "ann_id": ann_id,
                    "image_id": image_id,
                    "category_id": category_id,
                    "split": split,
                    "file_name": f"COCO_train2014_{image_id:012d}_{ann_id}.jpg",
                    "sent_ids": sent_ids,
                    "sentences": [
                        {"sent_id": i, "raw": text, "sent": text, "tokens": text.split()} for i, text in zip(sent_ids, expressions)
                    ],
                }
            )


def ensure_demo_refs(root: Path | None = None) -> Path:
    """Derive the referring data from the demo data into ``root`` unless a complete copy is there."""

    def generate(folder: Path) -> None:
        (folder / "train2014").mkdir()
        (folder / "refcoco_demo").mkdir()
        content = {"info": {"description": "SCA demo shapes, RefCOCO layout"}, "images": [], "annotations": [], "categories": DEMO_CATEGORIES}
        refs: list[dict] = []
        for demo_split, split, offset in DEMO_REFS_SPLITS.values():
            _describe_split(folder, demo_split, split, offset, content, refs)
        with open(folder / "refcoco_demo" / "instances.json", "w") as f:
            json.dump(content, f)
        with open(folder / "refcoco_demo" / "refs(demo).p", "wb") as f:
            pickle.dump(refs, f, protocol=2)

    return generate_once(Path(root) if root is not None else demo_refs_root(), generate, str(GENERATOR_REVISION), "demo refs dataset")


def _load_split(name: str) -> list[dict]:
    paths = _paths(ensure_demo_refs())
    split = DEMO_REFS_SPLITS[name][1]
    return load_refer_instances(paths["instances_json"], paths["refs_file"], paths["image_root"], split, refer_metadata(DEMO_CATEGORIES))


def register_all_demo_refs() -> None:
    """Register ``sca_demo_refs_train`` and ``sca_demo_refs_val`` (nothing is generated or read yet)."""
    paths = _paths(demo_refs_root())
    for name, (_, split, _) in DEMO_REFS_SPLITS.items():
        register_refer_source(name, lambda name=name: _load_split(name), refer_metadata(DEMO_CATEGORIES), split=split, **paths)
