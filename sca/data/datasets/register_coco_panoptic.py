"""COCO panoptic 2017 (133 classes: 80 things, 53 stuff) as ``sca_coco_panoptic_{train,val}``.

Expected under the datasets root (see ``datasets/README.md``)::

    coco/{train,val}2017/*.jpg
    coco/panoptic_{train,val}2017/*.png            # unzipped from annotations/panoptic_*2017.zip
    coco/annotations/panoptic_{train,val}2017.json
    coco/panoptic_semseg_{train,val}2017/*.png     # optional: datasets/prepare_coco_semantic_from_panoptic.py

Class names and colours come from detectron2's built-in ``COCO_CATEGORIES``. detectron2 itself
registers ``coco_2017_{train,val}_panoptic`` on import; these names are distinct on purpose.
"""

from __future__ import annotations

from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

from sca.data.datasets.panoptic_json import PanopticSplit, panoptic_metadata, register_panoptic_splits

__all__ = ["COCO_PANOPTIC_SPLITS", "coco_panoptic_metadata", "register_all_coco_panoptic"]

COCO_PANOPTIC_SPLITS = {
    f"sca_coco_panoptic_{split}": PanopticSplit(
        image_dir=f"coco/{split}2017",
        panoptic_dir=f"coco/panoptic_{split}2017",
        panoptic_json=f"coco/annotations/panoptic_{split}2017.json",
        sem_seg_dir=f"coco/panoptic_semseg_{split}2017",
    )
    for split in ("train", "val")
}


def _caption(name: str) -> str:
    """A class name as a caption: COCO's panoptic merge suffixes dropped ("wall-other-merged" -> "wall")."""
    for suffix in ("-merged", "-other", "-stuff"):
        name = name.replace(suffix, "")
    return name.replace("-", " ")


def coco_panoptic_metadata() -> dict:
    """detectron2/Mask2Former-style metadata of the 133 classes, plus ``class_captions``."""
    metadata = panoptic_metadata(COCO_CATEGORIES)
    metadata["class_captions"] = [_caption(c["name"]) for c in COCO_CATEGORIES]
    return metadata


def register_all_coco_panoptic(root: str) -> None:
    """Register both splits under the datasets ``root`` (nothing is read until requested)."""
    register_panoptic_splits(COCO_PANOPTIC_SPLITS, root, coco_panoptic_metadata(), evaluator_type="coco_panoptic_seg")
