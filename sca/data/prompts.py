"""Region prompts: which kind of prompt (box, point, mask) each region gets, and point sampling."""

from __future__ import annotations

import numpy as np

__all__ = ["PROMPT_TYPES", "PROMPT_TYPE_IDS", "sample_prompt_types", "sample_points"]

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
