"""Regions cut out of a transformed label map: what the mappers of sources with masks share.

A label map holds several regions at once (pixel = 1 + region index, 0 = none; uint8, or float32
past 255 regions so that it stays exact). It goes through the image's detectron2 transforms like a
segmentation map (nearest neighbour), which gives each region exactly the mask its own transform
would, at the cost of one map. Only the regions chosen afterwards are cut out, each inside its
window: its box before the transforms, carried through them.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from sca.data.prompts import sample_points_in_mask

__all__ = ["label_areas", "cut_regions", "low_res_masks"]


def label_areas(labels: np.ndarray, num_labels: int) -> np.ndarray:
    """Pixel count of labels 1..num_labels (an OpenCV histogram for uint8 maps: no int64 copy)."""
    if labels.dtype == np.uint8:
        return cv2.calcHist([labels], [0], None, [256], [0, 256]).ravel()[1 : num_labels + 1].astype(np.int64)
    return np.bincount(labels.astype(np.int64).ravel(), minlength=num_labels + 1)[1:]


def cut_regions(
    labels: np.ndarray, chosen: np.ndarray, windows: np.ndarray, areas: np.ndarray, num_points: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Tight boxes and points inside the masks of the ``chosen`` labels.

    Args:
        labels: the transformed label map (H, W).
        chosen: (R,) 1-based labels to cut out.
        windows: (N, 4) XYXY window of each label (widened by 2 pixels for nearest-neighbour
            rounding; the whole map is searched when the window misses any of its pixels).
        areas: (N,) pixel count of each label in ``labels``.
    Returns:
        boxes (R, 4) XYXY float32 and points (R, num_points, 2) float32 (pixel centres, x y).
    """
    boxes = np.zeros((len(chosen), 4), np.float32)
    points = np.zeros((len(chosen), num_points, 2), np.float32)
    height, width = labels.shape
    for i, label in enumerate(chosen):
        x0, y0, x1, y1 = windows[label - 1]
        x0, y0 = max(int(x0) - 2, 0), max(int(y0) - 2, 0)
        x1, y1 = min(int(np.ceil(x1)) + 2, width), min(int(np.ceil(y1)) + 2, height)
        mask = (labels[y0:y1, x0:x1] == label).view(np.uint8)
        if cv2.countNonZero(mask) != areas[label - 1]:
            x0 = y0 = 0
            mask = (labels == label).view(np.uint8)
        x, y, w, h = cv2.boundingRect(mask)
        boxes[i] = (x0 + x, y0 + y, x0 + x + w, y0 + y + h)
        points[i] = sample_points_in_mask(rng, mask[y : y + h, x : x + w].view(bool), num_points) + (x0 + x, y0 + y)
    return boxes, points


def low_res_masks(labels: np.ndarray, chosen: np.ndarray, mask_size: int) -> np.ndarray:
    """(R, mask_size, mask_size) bool masks of the ``chosen`` labels (nearest-neighbour resize)."""
    if labels.shape != (mask_size, mask_size):
        labels = np.asarray(Image.fromarray(labels).resize((mask_size, mask_size), Image.NEAREST))
    return labels[None] == np.asarray(chosen).astype(labels.dtype)[:, None, None]
