"""ADE20k panoptic (150 classes: 100 things, 50 stuff) as ``sca_ade20k_panoptic_{train,val}``.

Expected under the datasets root after ``datasets/prepare_ade20k_pan_seg.py`` (see
``datasets/README.md``)::

    ADEChallengeData2016/images/{training,validation}/*.jpg
    ADEChallengeData2016/ade20k_panoptic_{train,val}/*.png
    ADEChallengeData2016/ade20k_panoptic_{train,val}.json          # image_id = file stem
    ADEChallengeData2016/annotations_detectron2/{training,validation}/*.png   # optional (semantic)

Category ids are 0..149 (semantic PNG value - 1); classes from :mod:`ade20k_classes`.
"""

from __future__ import annotations

from sca.data.datasets.ade20k_classes import ade20k_categories
from sca.data.datasets.panoptic_json import PanopticSplit, panoptic_metadata, register_panoptic_splits

__all__ = ["ADE20K_PANOPTIC_SPLITS", "ade20k_panoptic_metadata", "register_all_ade20k_panoptic"]

ADE20K_PANOPTIC_SPLITS = {
    f"sca_ade20k_panoptic_{split}": PanopticSplit(
        image_dir=f"ADEChallengeData2016/images/{folder}",
        panoptic_dir=f"ADEChallengeData2016/ade20k_panoptic_{split}",
        panoptic_json=f"ADEChallengeData2016/ade20k_panoptic_{split}.json",
        sem_seg_dir=f"ADEChallengeData2016/annotations_detectron2/{folder}",
    )
    for split, folder in (("train", "training"), ("val", "validation"))
}


def ade20k_panoptic_metadata() -> dict:
    """detectron2/Mask2Former-style metadata of the 150 classes, plus ``class_captions``
    (the first of each class's synonyms: "chest of drawers, chest, bureau, dresser" -> "chest of drawers")."""
    categories = list(ade20k_categories())
    metadata = panoptic_metadata(categories)
    metadata["class_captions"] = [c["name"].split(",")[0].strip() for c in categories]
    return metadata


def register_all_ade20k_panoptic(root: str) -> None:
    """Register both splits under the datasets ``root`` (nothing is read until requested)."""
    register_panoptic_splits(ADE20K_PANOPTIC_SPLITS, root, ade20k_panoptic_metadata(), evaluator_type="ade20k_panoptic_seg")
