"""V3Det v1 (13,204 classes, boxes only) as ``sca_v3det_{train,val}``.

Expected under the datasets root (see ``datasets/README.md``)::

    V3Det/annotations/v3det_2023_v1_{train,val}.json
    V3Det/images/<synset>/*.jpg        # file_name values already start with "images/<synset>/"

so the image root is the ``V3Det`` folder itself. The 13,204 class names come from the JSON's
``categories`` (``name``; they are the captions), so ``thing_classes`` and ``class_captions`` are
set on the metadata when a split is loaded, as detectron2's ``load_coco_json`` does. Images that
have expired from their hosts are missing in some copies: the mapper skips and counts them.
"""

from __future__ import annotations

import os

from detectron2.data import MetadataCatalog

from sca.data.datasets.box_records import BoxRecords
from sca.data.datasets.coco_boxes import box_metadata, load_coco_boxes_json, register_box_source

__all__ = ["V3DET_SPLITS", "load_v3det_json", "register_all_v3det"]

# registered name -> (annotation JSON, image root), relative to the datasets root
V3DET_SPLITS = {
    f"sca_v3det_{split}": (f"V3Det/annotations/v3det_2023_v1_{split}.json", "V3Det") for split in ("train", "val")
}


def load_v3det_json(json_file: str, image_root: str, dataset_name: str) -> BoxRecords:
    """Records of one split; sets the classes of the file on ``dataset_name``'s metadata."""
    result = load_coco_boxes_json(json_file, image_root)
    MetadataCatalog.get(dataset_name).set(**box_metadata(result.categories))
    return result.records


def register_all_v3det(root: str) -> None:
    """Register both splits under the datasets ``root`` (nothing is read until requested)."""
    for name, (json_file, image_dir) in V3DET_SPLITS.items():
        json_file, image_root = os.path.join(root, json_file), os.path.join(root, image_dir)
        register_box_source(
            name,
            lambda name=name, json_file=json_file, image_root=image_root: load_v3det_json(json_file, image_root, name),
            {},
            image_root=image_root,
            json_file=json_file,
            evaluator_type="coco",
        )
