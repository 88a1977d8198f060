"""Sample formats of streaming shards: raw tar members -> a detectron2-style instances record.

The record carries the encoded image (``image_bytes``, decoded by the streamed mappers) and one
annotation per region: ``id`` / ``ref_id`` (the region id), ``bbox`` (XYWH), ``segmentation``
(COCO RLE; absent for box-only regions), ``sentences`` (its captions), ``category_id``.

- ``sa1b``: SA-1B's own tars, per image ``sa_<id>.jpg`` + ``sa_<id>.json`` =
  ``{"image": {image_id, width, height, file_name}, "annotations": [{id, segmentation, bbox, area,
  predicted_iou, point_coords, stability_score, crop_box}]}``; captions come from a side table
  (:class:`~sca.data.streaming.captions.CaptionTable`); regions without one are left out of
  ``annotations`` and listed in ``uncaptioned`` (the mapper counts them).
- ``sca``: shards of ``tools/write_shards.py``, per image ``<key>.<jpg|png>`` + ``<key>.json`` =
  ``{"image": {image_id, width, height, file_name}, "dataset": ..., "task_type": ..., "regions":
  [{id, category_id, bbox (XYWH), segmentation (RLE) or null, captions}]}``.
"""

from __future__ import annotations

import json

from detectron2.structures import BoxMode

__all__ = ["IMAGE_PARTS", "sca_record", "sa1b_record", "image_part"]

IMAGE_PARTS = ("jpg", "jpeg", "png")


def image_part(sample: dict) -> bytes:
    """The sample's encoded image (its JPEG or PNG member)."""
    for ext in IMAGE_PARTS:
        if ext in sample:
            return sample[ext]
    raise KeyError(f"sample {sample['__key__']} has no image member ({'/'.join(IMAGE_PARTS)}); it has {_parts(sample)}")


def _json_part(sample: dict) -> dict:
    if "json" not in sample:
        raise KeyError(f"sample {sample['__key__']} has no .json member; it has {_parts(sample)}")
    return json.loads(sample["json"])


def _parts(sample: dict) -> list[str]:
    return sorted(k for k in sample if not k.startswith("__"))


def _base_record(sample: dict, url: str, image: dict) -> dict:
    return {
        "file_name": f"{url}:{sample['__key__']}",
        "image_id": image["image_id"],
        "height": int(image["height"]),
        "width": int(image["width"]),
        "image_bytes": image_part(sample),
    }


def _annotation(region_id: int, category_id: int, bbox, captions: list[str], segmentation=None) -> dict:
    annotation = {"id": region_id, "ref_id": region_id, "category_id": category_id, "iscrowd": 0,
                  "bbox": [float(v) for v in bbox], "bbox_mode": BoxMode.XYWH_ABS, "sentences": captions}
    if segmentation is not None:
        annotation["segmentation"] = segmentation
    return annotation


def sa1b_record(sample: dict, url: str, captions) -> dict:
    """An SA-1B sample with the captions of ``captions`` (``get(image_id, annotation_id)``)."""
    meta = _json_part(sample)
    record = _base_record(sample, url, meta["image"])
    image_id = int(meta["image"]["image_id"])
    record["annotations"], record["uncaptioned"] = [], []
    for annotation in meta["annotations"]:
        texts = captions.get(image_id, int(annotation["id"]))
        if texts:
            record["annotations"].append(_annotation(int(annotation["id"]), 0, annotation["bbox"], texts, annotation["segmentation"]))
        else:
            record["uncaptioned"].append(int(annotation["id"]))
    return record


def sca_record(sample: dict, url: str) -> dict:
    """A sample of ``tools/write_shards.py``."""
    meta = _json_part(sample)
    record = _base_record(sample, url, meta["image"])
    record["task_type"] = meta.get("task_type")
    record["annotations"] = [
        _annotation(int(r["id"]), int(r.get("category_id", 0)), r["bbox"], list(r["captions"]), r.get("segmentation"))
        for r in meta["regions"]
    ]
    return record
