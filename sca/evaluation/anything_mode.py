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
from pycocotools import mask as mask_util

from sca.data.record_regions import RecordRegion
from sca.evaluation.dense_captioning import ImageRegions

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
    """Caption every image of ``dataset`` (or its first ``max_images``) in "anything" mode and score it,
    through the ``densecap`` evaluation protocol (:mod:`sca.evaluation.dense_captioning_evaluator`).

    Args:
        predictor: a :class:`sca.predictor.RegionCaptionPredictor`.
        anything: :class:`sca.predictor.AnythingConfig` (the model's, ``predictor.anything``, when ``None``).
    """
    # imported here: the evaluator module builds on this one's ground_truth_regions / matched_regions
    from detectron2.evaluation import inference_on_dataset

    from sca.evaluation.dense_captioning_evaluator import AnythingModeCaptioner, DenseCaptioningEvaluator, build_dense_captioning_loader

    evaluator = DenseCaptioningEvaluator(
        dataset, normalization=predictor.cfg.data.test_mapper.caption_normalization, match_iou=match_iou
    )
    model = AnythingModeCaptioner(predictor, anything or predictor.anything, task_type)
    inference_on_dataset(model, build_dense_captioning_loader(dataset, max_images), evaluator)
    report = evaluator.report
    dense = {k: v for k, v in report.items() if k not in ("anything_recall", "num_ground_truth_masks")}
    return AnythingModeResult(
        recall=report["anything_recall"],
        num_ground_truth=report["num_ground_truth_masks"],
        num_predictions=report["num_predictions"],
        dense_captioning=dense,
    )
