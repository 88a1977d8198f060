"""Drawing captioned regions (masks, boxes, captions) on an image with detectron2's ``Visualizer``."""

from __future__ import annotations

import numpy as np
from detectron2.utils.colormap import colormap
from detectron2.utils.visualizer import Visualizer

__all__ = ["draw_regions"]

MIN_DRAWN_SIDE = 512  # small images (the demo's ~100 px) are scaled up so captions stay legible


def draw_regions(
    image: np.ndarray, boxes: list[list[float]], labels: list[str], masks: list[np.ndarray | None] | None = None, metadata=None
) -> np.ndarray:
    """Overlay regions on an RGB image.

    Args:
        image: (H, W, 3) uint8 RGB.
        boxes: XYXY boxes in image pixels, one per region.
        labels: the text drawn with each region (its caption).
        masks: (H, W) bool masks; regions whose mask is ``None`` are drawn as boxes only.
        metadata: optional detectron2 metadata (colours).

    Returns:
        (H', W', 3) uint8 RGB rendering, scaled up for images smaller than 512 px; region i gets
        colour i of detectron2's colormap, so renderings are reproducible.
    """
    scale = max(1.0, MIN_DRAWN_SIDE / max(image.shape[:2]))
    visualizer = Visualizer(image, metadata, scale=scale)
    if not boxes:
        return visualizer.get_output().get_image()
    masks = masks if masks is not None and all(m is not None for m in masks) else None
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    palette = colormap(rgb=True, maximum=1)
    colors = [palette[i % len(palette)] for i in range(len(boxes))]
    return visualizer.overlay_instances(boxes=boxes, labels=list(labels), masks=masks, assigned_colors=colors).get_image()
