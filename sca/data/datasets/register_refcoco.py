"""RefCOCO, RefCOCO+ and RefCOCOg (refer API layout) as ``sca_<dataset>_<split_by>_<split>``.

Expected under the datasets root (see ``datasets/README.md``)::

    refcoco/{instances.json, refs(unc).p, refs(google).p}
    refcoco+/{instances.json, refs(unc).p}
    refcocog/{instances.json, refs(umd).p, refs(google).p}
    coco/train2014/COCO_train2014_000000581857.jpg ...     # the images (COCO 2014 train)
    # optional: refs(<split_by>).json next to each pickle (datasets/prepare_refcoco.py), read instead

Registered splits: ``sca_refcoco_unc_{train,val,testA,testB}``, ``sca_refcoco_google_{train,val,test}``,
``sca_refcoco+_unc_{train,val,testA,testB}``, ``sca_refcocog_umd_{train,val,test}``,
``sca_refcocog_google_{train,val}``. Each ref is a region (its annotation's box and polygon mask)
captioned by all its sentences. Image ids are COCO ids (2014 ids equal 2017 ids), which is what
``SourceConfig.exclude_images_of`` relies on to keep these splits' images out of COCO training.
"""

from __future__ import annotations

import os

from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

from sca.data.datasets.refer_format import load_refer_instances, refer_metadata, register_refer_source

__all__ = ["REFER_SPLITS", "REFCOCO_SPLITS", "refcoco_metadata", "register_all_refcoco"]

# dataset folder -> split scheme ("split_by") -> its splits
REFER_SPLITS = {
    "refcoco": {"unc": ("train", "val", "testA", "testB"), "google": ("train", "val", "test")},
    "refcoco+": {"unc": ("train", "val", "testA", "testB")},
    "refcocog": {"umd": ("train", "val", "test"), "google": ("train", "val")},
}
# registered name -> (dataset folder, split_by, split)
REFCOCO_SPLITS = {
    f"sca_{dataset}_{split_by}_{split}": (dataset, split_by, split)
    for dataset, schemes in REFER_SPLITS.items()
    for split_by, splits in schemes.items()
    for split in splits
}


def refcoco_metadata() -> dict:
    """The 80 COCO thing classes (``instances.json`` categories), ids 1..90 -> 0..79."""
    return refer_metadata([c for c in COCO_CATEGORIES if c["isthing"]])


def register_all_refcoco(root: str) -> None:
    """Register every split under the datasets ``root`` (nothing is read until requested)."""
    metadata = refcoco_metadata()
    for name, (dataset, split_by, split) in REFCOCO_SPLITS.items():
        paths = {
            "image_root": os.path.join(root, "coco", "train2014"),
            "instances_json": os.path.join(root, dataset, "instances.json"),
            "refs_file": os.path.join(root, dataset, f"refs({split_by}).p"),
        }
        register_refer_source(
            name,
            lambda paths=paths, split=split: load_refer_instances(
                paths["instances_json"], paths["refs_file"], paths["image_root"], split, metadata
            ),
            metadata,
            split=split,
            **paths,
        )
