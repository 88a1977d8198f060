"""Ground-truth regions of a detectron2 dataset dict, in the original image frame (no augmentation).

For visualization and export: each region's id, reference captions, XYXY box and binary mask.
Panoptic records (``pan_seg_file_name`` + ``segments_info``): one region per non-crowd segment,
captioned by its class name (``stuff_classes`` holds all classes), region id = segment id.
Instance records (``annotations``): one region per non-crowd annotation, captioned by its
``sentences`` (referring sources) or its class name (``thing_classes``), with a mask when the
annotation has a ``segmentation`` (polygons or RLE); region id = the annotation's ``id`` or index.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from detectron2.data import detection_utils as utils
from detectron2.structures import BoxMode
from panopticapi.utils import rgb2id
from pycocotools import mask as mask_util

__all__ = ["RecordRegion", "record_regions", "segmentation_mask"]


@dataclass
class RecordRegion:
    region_id: int
    captions: list[str]
    box: list[float]  # XYXY in image pixels
    mask: np.ndarray | None  # (H, W) bool; None for box-only annotations


def segmentation_mask(segmentation, height: int, width: int) -> np.ndarray:
    """(H, W) bool mask of a COCO ``segmentation``: polygons (those with fewer than 3 points are
    ignored), uncompressed or compressed RLE. A malformed RLE (runs that do not add up to its
    size) raises ``ValueError``."""
    if isinstance(segmentation, list):  # polygons
        polygons = [p for p in segmentation if len(p) >= 6]
        if not polygons:
            return np.zeros((height, width), bool)
        rle = mask_util.merge(mask_util.frPyObjects(polygons, height, width))
    elif isinstance(segmentation["counts"], list):  # uncompressed RLE
        rle = mask_util.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    mask = mask_util.decode(rle)
    if mask.max(initial=0) > 1 or mask_util.area(rle) != np.count_nonzero(mask):
        raise ValueError(f"malformed RLE of size {rle['size']}: its runs do not cover the mask")
    return mask.astype(bool)


def record_regions(record: dict, metadata) -> list[RecordRegion]:
    """The ground-truth regions of one dataset dict.

    Args:
        record: a detectron2 dataset dict of the panoptic or instance family.
        metadata: the split's ``MetadataCatalog`` entry (class names).
    """
    height, width = record["height"], record["width"]
    if "pan_seg_file_name" in record:
        ids = rgb2id(utils.read_image(record["pan_seg_file_name"], format="RGB"))
        regions = []
        for segment in record["segments_info"]:
            if segment.get("iscrowd", 0):
                continue
            x, y, w, h = segment["bbox"]
            caption = metadata.stuff_classes[segment["category_id"]]
            regions.append(RecordRegion(segment["id"], [caption], [x, y, x + w, y + h], ids == segment["id"]))
        return regions
    if "annotations" in record:
        regions = []
        for index, annotation in enumerate(record["annotations"]):
            if annotation.get("iscrowd", 0):
                continue
            box = BoxMode.convert(list(annotation["bbox"]), annotation["bbox_mode"], BoxMode.XYXY_ABS)
            captions = list(annotation.get("sentences") or [metadata.thing_classes[annotation["category_id"]]])
            segmentation = annotation.get("segmentation")
            mask = None if not segmentation else segmentation_mask(segmentation, height, width)
            regions.append(RecordRegion(annotation.get("id", index), captions, [float(v) for v in box], mask))
        return regions
    raise ValueError(f"record {record.get('file_name')}: neither panoptic (segments_info) nor instance (annotations) annotations")
