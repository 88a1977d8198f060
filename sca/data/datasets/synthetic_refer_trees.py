"""Synthetic RefCOCO / RefCOCO+ / RefCOCOg trees in the refer API layout.

Written as released: ``<dataset>/instances.json`` (COCO instances, polygons, COCO-2014 file names),
``<dataset>/refs(<split_by>).p`` (pickles in protocol 2 with Python 2's string opcodes, as the refer
toolkit's files were written by Python 2) and the images in ``coco/train2014/``. Tests run the
preparation script, registration and mapper on them. Scenes come from
:func:`sca.data.datasets.synthetic_trees.draw_scene`; every visible instance is an annotation
(its polygons, box and area from its visible pixels) and most are referred to by 1-3 sentences.
Split assignment follows each split scheme: by image for ``unc`` / ``umd`` (``testA`` = people,
``testB`` = other objects), by object for ``google``. Generation is deterministic for a seed.
"""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import cv2
import numpy as np
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES
from PIL import Image

from sca.data.datasets.register_refcoco import REFER_SPLITS
from sca.data.datasets.synthetic_trees import draw_scene

__all__ = ["coco_instance_categories", "write_py2_pickle", "write_refer_tree"]

PERSON = 1
_WORDS = ("left", "right", "big", "small", "front", "back", "middle", "dark", "bright")


def coco_instance_categories() -> list[dict]:
    """The 80 COCO thing categories ``{supercategory, id, name}`` (instances JSON)."""
    return [{"supercategory": "thing", "id": c["id"], "name": c["name"]} for c in COCO_CATEGORIES if c["isthing"]]


class _Py2Pickler(pickle._Pickler):
    """Writes ``str`` as Python 2 did for its byte strings (``SHORT_BINSTRING`` / ``BINSTRING``)
    when ASCII, as ``BINUNICODE`` otherwise (Python 2's ``unicode``)."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_str(self, obj: str) -> None:
        if not obj.isascii():
            return pickle._Pickler.save_str(self, obj)
        data = obj.encode("ascii")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = save_str


def write_py2_pickle(obj, path: Path) -> None:
    """Pickle ``obj`` in protocol 2 with Python 2's string opcodes."""
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(obj)


def _sentences(rng: np.random.Generator, name: str, count: int, first_sent_id: int) -> list[dict]:
    sentences = []
    for k in range(count):
        words = [str(w) for w in rng.choice(_WORDS, size=int(rng.integers(1, 3)), replace=False)]
        tokens = words + name.split() + (["café"] if rng.random() < 0.1 else [])  # a few non-ASCII sentences
        raw = " ".join(tokens).capitalize() + ("." if rng.random() < 0.5 else "")
        sentences.append({"tokens": tokens, "raw": raw, "sent_id": first_sent_id + k, "sent": " ".join(tokens)})
    return sentences


def _scene_annotations(rng: np.random.Generator, image_id: int, width: int, height: int, force_person: bool):
    """A scene's pixels and its COCO annotations (polygons of each instance's visible pixels)."""
    thing_ids = [c["id"] for c in coco_instance_categories()]
    scene = draw_scene(rng, width, height, list(range(4)), thing_ids, max_things=5)
    classes = list(scene.thing_classes)
    if force_person:
        classes[-1] = PERSON  # the instance drawn last is fully visible
    annotations = []
    for index, category in enumerate(classes, start=1):
        mask = (scene.instances == index).astype(np.uint8)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        polygons = [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]
        if not polygons:
            continue
        x, y, w, h = cv2.boundingRect(mask)
        annotations.append({"segmentation": polygons, "area": float(mask.sum()), "iscrowd": 0, "image_id": image_id,
                            "bbox": [float(x), float(y), float(w), float(h)], "category_id": category,
                            "id": image_id * 100 + index})
    return scene.image, annotations


def write_refer_tree(root: Path, num_images: int, *, seed: int = 0, size: tuple[int, int] | None = None) -> dict:
    """Write ``coco/train2014/COCO_train2014_%012d.jpg`` and, for every dataset of
    :data:`REFER_SPLITS`, ``<dataset>/instances.json`` and ``<dataset>/refs(<split_by>).p``.

    Image ``i`` has COCO id ``1000 + 7 i``; every fourth image has a person. Each dataset refers to
    a random subset of the annotations (a ref per annotation, 1-3 sentences each).

    Returns:
        ``{(dataset, split_by): refs}`` as pickled, for expectations.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "coco/train2014").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        image_id = 1000 + 7 * i
        width, height = size or (int(rng.integers(48, 97)), int(rng.integers(48, 97)))
        pixels, image_annotations = _scene_annotations(rng, image_id, width, height, force_person=i % 4 == 2)
        file_name = f"COCO_train2014_{image_id:012d}.jpg"
        Image.fromarray(pixels).save(root / "coco/train2014" / file_name, quality=90)
        images.append({"license": 1, "file_name": file_name, "coco_url": "", "height": height, "width": width,
                       "date_captured": "", "flickr_url": "", "id": image_id})
        annotations.extend(image_annotations)
    names = {c["id"]: c["name"] for c in coco_instance_categories()}
    written = {}
    for dataset, schemes in REFER_SPLITS.items():
        folder = root / dataset
        folder.mkdir(parents=True, exist_ok=True)
        content = {"info": {"description": f"synthetic {dataset}"}, "images": images, "licenses": [{"id": 1, "name": ""}],
                   "annotations": annotations, "categories": coco_instance_categories()}
        (folder / "instances.json").write_text(json.dumps(content))
        for split_by, splits in schemes.items():
            refs, sent_id = [], 0
            for i, image in enumerate(images):
                by_image = split_by in ("unc", "umd")
                image_split = splits[i % len(splits)]
                for ann in (a for a in annotations if a["image_id"] == image["id"]):
                    if rng.random() < 0.2:
                        continue  # not every object is referred to
                    split = image_split if by_image else str(rng.choice(splits))
                    if split == "testA" and ann["category_id"] != PERSON or split == "testB" and ann["category_id"] == PERSON:
                        continue  # testA refers to people, testB to other objects
                    sentences = _sentences(rng, names[ann["category_id"]], int(rng.integers(1, 4)), sent_id)
                    sent_id += len(sentences)
                    refs.append({
                        "sent_ids": [s["sent_id"] for s in sentences], "file_name": f"COCO_train2014_{image['id']:012d}_{ann['id']}.jpg",
                        "ann_id": ann["id"], "ref_id": len(refs), "image_id": image["id"], "split": split,
                        "sentences": sentences, "category_id": ann["category_id"],
                    })
            write_py2_pickle(refs, folder / f"refs({split_by}).p")
            written[(dataset, split_by)] = refs
    return written
