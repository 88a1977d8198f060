"""Dense-captioning mAP: the Visual Genome protocol of DenseCap (Johnson et al., CVPR 2016).

For predictions made without ground-truth prompts (e.g. the predictor's "anything" mode), each a
box, a confidence and a caption:

1. Per image, ground-truth boxes overlapping by IoU >= 0.7 are merged (greedily: the box with the
   most such neighbours and its neighbours become one box, their mean, carrying all their
   captions as references), until no two remaining boxes overlap that much.
2. Per image, predictions are visited by decreasing confidence; each is assigned the merged
   ground-truth box it overlaps most. The first prediction assigned to a box may count as a true
   positive; later ones are duplicates (false positives). This assignment ignores the thresholds.
   A prediction that overlaps no box is a false positive.
3. The METEOR score of each assigned prediction's caption against its box's references is computed
   (pycocoevalcap, batched in one JVM).
4. Over all images, predictions are ranked by confidence. For each box-IoU threshold
   {0.3, 0.4, 0.5, 0.6, 0.7} and METEOR threshold {0, 0.05, 0.1, 0.15, 0.2, 0.25}, a prediction is
   a true positive when it is its box's first assignment, its IoU >= the IoU threshold and its
   METEOR > the METEOR threshold (strictly: a METEOR of 0 never counts). AP is the mean, over the
   101 recall levels 0, 0.01, ..., 1, of the highest precision at a recall >= that level (0 when
   the recall is never reached); recall divides by the number of merged ground-truth boxes.
5. ``mAP`` averages the 30 APs; ``detection_mAP`` averages the 5 APs that ignore captions.

Conventions (``conventions=``), each pinned by a hand-built test in ``tests/test_dense_captioning.py``:

* ``"sca"`` (default): IoU in continuous coordinates (area = w * h, as in detectron2 and COCO);
  AP over the 101 recall levels 0, 0.01, ..., 1.
* ``"densecap_lua"``: what the Lua original computes: IoU with the "+1 pixel" convention (a box
  [x1, x2] is x2 - x1 + 1 pixels wide) and the recall levels of its loop ``for t=0,1,0.01``:
  accumulated sums (0.30000000000000004 rather than 0.3), stopping at 0.99 (100 levels).

Under both: precision is max-interpolated (the highest precision at any recall >= the level; 0
when the level is never reached); a prediction that overlaps nothing takes no ground-truth box (the
Lua code marks ``used[-1]`` then, which nothing reads); ties in confidence keep the predictions'
order (image order, then the order within the image: a stable sort; Lua's ``torch.sort`` leaves
their order unspecified); ties in IoU go to the first merged box.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from detectron2.structures import Boxes, pairwise_iou

from sca.evaluation.java_scorers import meteor_scores

__all__ = [
    "IOU_THRESHOLDS",
    "METEOR_THRESHOLDS",
    "GT_MERGE_IOU",
    "CONVENTIONS",
    "ImageRegions",
    "merge_ground_truth",
    "dense_captioning_map",
]

IOU_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
METEOR_THRESHOLDS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25)
GT_MERGE_IOU = 0.7
CONVENTIONS = ("sca", "densecap_lua")


def _lua_recall_levels() -> np.ndarray:
    """The values of ``t`` in Lua's ``for t=0,1,0.01``: accumulated sums, 100 of them."""
    levels, t = [], 0.0
    while t <= 1:
        levels.append(t)
        t += 0.01
    return np.array(levels)


_RECALL_LEVELS = {"sca": np.linspace(0.0, 1.0, 101), "densecap_lua": _lua_recall_levels()}

CaptionScorer = Callable[[list[str], list[list[str]]], list[float]]


@dataclass
class ImageRegions:
    """Boxes (N, 4) XYXY in image pixels with one caption each; ``scores`` for predictions."""

    boxes: np.ndarray
    captions: list[str]
    scores: np.ndarray | None = None


def _iou(a: np.ndarray, b: np.ndarray, conventions: str = "sca") -> np.ndarray:
    """(len(a), len(b)) IoU of XYXY boxes under ``conventions``."""
    if conventions == "sca":
        boxes_a, boxes_b = (Boxes(torch.as_tensor(x, dtype=torch.float64).reshape(-1, 4)) for x in (a, b))
        return pairwise_iou(boxes_a, boxes_b).numpy()
    a, b = (np.asarray(x, dtype=np.float64).reshape(-1, 1, 4) for x in (a, b))
    b = b.reshape(1, -1, 4)
    width = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1, 0, None)
    height = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1, 0, None)
    inter = width * height
    area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    return inter / (area_a + area_b - inter)


def merge_ground_truth(
    boxes: np.ndarray, captions: list[str], threshold: float = GT_MERGE_IOU, conventions: str = "sca"
) -> tuple[np.ndarray, list[list[str]]]:
    """Greedily merge ground-truth boxes overlapping by IoU >= ``threshold`` (step 1 above).

    Returns:
        merged boxes (M, 4) and the list of reference captions of each.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    close = _iou(boxes, boxes, conventions) >= threshold
    np.fill_diagonal(close, True)
    remaining = np.ones(len(boxes), dtype=bool)
    merged_boxes, merged_captions = [], []
    while remaining.any():
        neighbours = close & remaining[None, :] & remaining[:, None]
        members = np.nonzero(neighbours[int(neighbours.sum(axis=1).argmax())])[0]
        merged_boxes.append(boxes[members].mean(axis=0))
        merged_captions.append([captions[i] for i in members])
        remaining[members] = False
    return np.array(merged_boxes).reshape(-1, 4), merged_captions


def _average_precision(true_positive: np.ndarray, num_positives: int, recall_levels: np.ndarray) -> float:
    if num_positives == 0 or len(true_positive) == 0:
        return 0.0
    tp = np.cumsum(true_positive)
    fp = np.cumsum(~true_positive)
    recall = tp / num_positives
    precision = tp / (tp + fp)
    return float(np.mean([precision[recall >= level].max(initial=0.0) for level in recall_levels]))


def dense_captioning_map(
    predictions: list[ImageRegions],
    ground_truths: list[ImageRegions],
    caption_scorer: CaptionScorer | None = None,
    progress: bool = False,
    conventions: str = "sca",
) -> dict:
    """Dense-captioning mAP over images (``predictions[i]`` and ``ground_truths[i]`` are one image).

    Args:
        predictions: per image, predicted boxes, captions and confidences (``scores``).
        ground_truths: per image, ground-truth boxes and captions.
        caption_scorer: ``(candidates, references) -> scores`` in [0, 1]; default: METEOR.
        progress: show progress of the METEOR batches.
        conventions: ``"sca"`` or ``"densecap_lua"`` (IoU and recall levels, see the module docstring).

    Returns:
        dict with ``mAP`` and ``detection_mAP`` (percent), ``ap`` (``"iou0.3_meteor0.05"`` -> AP
        percent), ``detection_ap`` (``"iou0.3"`` -> AP percent), ``num_predictions``,
        ``num_ground_truth`` (merged boxes).
    """
    if conventions not in CONVENTIONS:
        raise ValueError(f"dense-captioning conventions '{conventions}' is not one of {CONVENTIONS}")
    recall_levels = _RECALL_LEVELS[conventions]
    if len(predictions) != len(ground_truths):
        raise ValueError(f"{len(predictions)} images of predictions but {len(ground_truths)} of ground truth")
    confidences, overlaps, first, candidates, references = [], [], [], [], []
    num_positives = 0
    for prediction, truth in zip(predictions, ground_truths):
        gt_boxes, gt_captions = merge_ground_truth(truth.boxes, truth.captions, conventions=conventions)
        num_positives += len(gt_boxes)
        boxes = np.asarray(prediction.boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(prediction.scores, dtype=np.float64).reshape(-1)
        if len(scores) != len(boxes) or len(prediction.captions) != len(boxes):
            raise ValueError("each predicted box needs one score and one caption")
        iou = _iou(boxes, gt_boxes, conventions) if len(gt_boxes) else np.zeros((len(boxes), 0))
        used = np.zeros(len(gt_boxes), dtype=bool)
        for d in np.argsort(-scores, kind="stable"):
            best = int(iou[d].argmax()) if len(gt_boxes) else -1
            overlap = float(iou[d, best]) if best >= 0 else 0.0
            confidences.append(scores[d])
            overlaps.append(overlap)
            first.append(overlap > 0 and not used[best])
            candidates.append(prediction.captions[d])
            references.append(gt_captions[best] if first[-1] else None)
            if overlap > 0:
                used[best] = True
    assigned = [i for i, is_first in enumerate(first) if is_first]  # only these can be true positives
    caption_scores = np.zeros(len(candidates))
    if assigned:
        scorer = caption_scorer or (lambda c, r: meteor_scores(c, r, progress=progress))
        caption_scores[assigned] = scorer([candidates[i] for i in assigned], [references[i] for i in assigned])
    order = np.argsort(-np.asarray(confidences, dtype=np.float64), kind="stable")
    overlaps, first, caption_scores = np.asarray(overlaps)[order], np.asarray(first, dtype=bool)[order], caption_scores[order]
    ap, detection_ap = {}, {}
    for iou_threshold in IOU_THRESHOLDS:
        located = first & (overlaps >= iou_threshold)
        detection_ap[f"iou{iou_threshold}"] = 100.0 * _average_precision(located, num_positives, recall_levels)
        for meteor_threshold in METEOR_THRESHOLDS:
            ap[f"iou{iou_threshold}_meteor{meteor_threshold}"] = 100.0 * _average_precision(
                located & (caption_scores > meteor_threshold), num_positives, recall_levels
            )
    return {
        "mAP": float(np.mean(list(ap.values()))),
        "detection_mAP": float(np.mean(list(detection_ap.values()))),
        "ap": ap,
        "detection_ap": detection_ap,
        "num_predictions": len(order),
        "num_ground_truth": num_positives,
        "conventions": conventions,
    }
