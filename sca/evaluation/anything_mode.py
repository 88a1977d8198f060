"""How well the predictor's "anything" mode (no prompts) finds and captions a split's regions.

Each image is captioned in "anything" mode; the kept regions are scored two ways:

* **recall**: the fraction of ground-truth regions (with masks) matched by a kept region whose mask
  IoU with them reaches ``match_iou`` (0.5);
* **dense-captioning mAP** (DenseCap's protocol, :func:`sca.evaluation.dense_captioning.dense_captioning_map`):
  each kept region is the box of its mask, its caption and SAM's predicted IoU as confidence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from pycocotools import mask as mask_util
from tqdm import tqdm

from sca.data.record_regions import RecordRegion, record_regions
from sca.evaluation.dense_captioning import ImageRegions, dense_captioning_map

__all__ = ["AnythingModeResult", "evaluate_anything_mode", "ground_truth_regions", "matched_regions"]


@dataclass
class AnythingModeResult:
    recall: float  # percent of ground-truth regions (with masks) found at mask IoU >= match_iou
    num_ground_truth: int
    num_predictions: int
    dense_captioning: dict  # dense_captioning_map's results (mAP, detection_mAP, ...)


def ground_truth_regions(regions: list[RecordRegion]) -> ImageRegions:
    """One box per reference caption: identical boxes merge back into one region with all its references."""
    pairs = [(region.box, caption) for region in regions for caption in region.captions]
    return ImageRegions(np.array([box for box, _ in pairs], dtype=np.float64).reshape(-1, 4), [c for _, c in pairs])


def matched_regions(truth: list[np.ndarray], predicted: list[np.ndarray], match_iou: float = 0.5) -> int:
    """How many of the ``truth`` masks some ``predicted`` mask overlaps with IoU >= ``match_iou``."""
    if not truth or not predicted:
        return 0
    encode = lambda masks: [mask_util.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks]  # noqa: E731
    ious = mask_util.iou(encode(predicted), encode(truth), [0] * len(truth))  # (P, T)
    return int((np.asarray(ious).max(axis=0) >= match_iou).sum())


def evaluate_anything_mode(
    predictor, dataset: str, max_images: int = 0, anything=None, task_type: str | None = None, match_iou: float = 0.5
) -> AnythingModeResult:
    """Caption every image of ``dataset`` (or its first ``max_images``) in "anything" mode and score it.

    Args:
        predictor: a :class:`sca.predictor.RegionCaptionPredictor`.
        anything: :class:`sca.predictor.AnythingConfig` (its defaults when ``None``).
    """
    records = DatasetCatalog.get(dataset)
    metadata = MetadataCatalog.get(dataset)
    if max_images > 0:
        records = records[:max_images]
    predictions, truths = [], []
    found = total = 0
    for record in tqdm(records, desc=f"anything mode on {dataset}", unit="img"):
        regions = predictor(record["file_name"], task_type=task_type, anything=anything)
        boxes = np.array([r.box for r in regions], dtype=np.float64).reshape(-1, 4)
        predictions.append(ImageRegions(boxes, [r.caption for r in regions], np.array([r.iou_score for r in regions])))
        truth = record_regions(record, metadata)
        truths.append(ground_truth_regions(truth))
        masks = [r.mask for r in truth if r.mask is not None]
        total += len(masks)
        found += matched_regions(masks, [r.mask for r in regions], match_iou)
    return AnythingModeResult(
        recall=100.0 * found / max(total, 1),
        num_ground_truth=total,
        num_predictions=sum(len(p.captions) for p in predictions),
        dense_captioning=dense_captioning_map(predictions, truths, progress=True),
    )
