"""Region prompts: which kind of prompt (box, point, mask) each region gets, and point sampling."""

from __future__ import annotations

import numpy as np

__all__ = [
    "PROMPT_TYPES",
    "PROMPT_TYPE_IDS",
    "sample_prompt_types",
    "sample_points",
    "sample_points_in_mask",
    "sample_points_in_boxes",
]

PROMPT_TYPES = ("box", "point", "mask")
PROMPT_TYPE_IDS = {name: i for i, name in enumerate(PROMPT_TYPES)}


def sample_prompt_types(rng: np.random.Generator, weights: dict[str, float], num_regions: int) -> np.ndarray:
    """Draw a prompt type id per region from the ``{type: weight}`` mix."""
    names = [name for name in PROMPT_TYPES if weights.get(name, 0) > 0]
    probabilities = np.array([weights[name] for name in names], dtype=np.float64)
    choice = rng.choice(len(names), size=num_regions, p=probabilities / probabilities.sum())
    return np.array([PROMPT_TYPE_IDS[names[i]] for i in choice], dtype=np.int64)


def sample_points(rng: np.random.Generator, ys: np.ndarray, xs: np.ndarray, num_points: int) -> np.ndarray:
    """``num_points`` pixel centres (x, y) drawn from a region's pixels ``(ys, xs)``."""
    index = rng.choice(len(xs), size=num_points, replace=len(xs) < num_points)
    return np.stack([xs[index] + 0.5, ys[index] + 0.5], axis=1).astype(np.float32)


def sample_points_in_mask(rng: np.random.Generator, mask: np.ndarray, num_points: int) -> np.ndarray:
    """``num_points`` pixel centres (x, y) of ``mask`` (bool, HxW, typically cropped to its box),
    uniform and distinct while the mask has enough pixels.

    Rejection sampling in the box (cheap for a box-cropped mask, whose fill rate is high); regions
    too thin for it fall back to :func:`sample_points` over all their pixels.
    """
    height, width = mask.shape
    draws = min(64 * num_points + 32, height * width)
    ys, xs = rng.integers(0, height, draws), rng.integers(0, width, draws)
    flat = (ys * width + xs)[mask[ys, xs]]
    _, first = np.unique(flat, return_index=True)
    if len(first) < num_points:
        ys, xs = np.nonzero(mask)
        return sample_points(rng, ys, xs, num_points)
    flat = flat[np.sort(first)[:num_points]]
    return np.stack([flat % width + 0.5, flat // width + 0.5], axis=1).astype(np.float32)


def sample_points_in_boxes(rng: np.random.Generator, boxes: np.ndarray, num_points: int) -> np.ndarray:
    """``num_points`` points (x, y) drawn uniformly inside each XYXY box: (R, num_points, 2) float32."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 1, 4)
    fractions = rng.random((len(boxes), num_points, 2), dtype=np.float32)
    return boxes[..., :2] + fractions * (boxes[..., 2:] - boxes[..., :2])
