"""Geometric augmentation with detectron2 transforms, in SAM's square input frame."""

from __future__ import annotations

import numpy as np
from detectron2.data import transforms as T
from PIL import Image

from sca.config import MapperConfig

__all__ = ["ResizeLongestSide", "build_augmentation"]


class ResizeLongestSide(T.Augmentation):
    """SAM's resize (``SamImageProcessor``): the longest side to ``size``, the other one scaled
    alike and rounded half up (``int(x + 0.5)``), bilinear."""

    def __init__(self, size: int, interp: int = Image.BILINEAR):
        super().__init__()
        self._init(locals())

    def get_transform(self, image) -> T.ResizeTransform:
        height, width = image.shape[:2]
        scale = self.size * 1.0 / max(height, width)
        # numpy ints, as ResizeScale makes them: the transform then scales coordinates in float64
        new_height, new_width = np.floor(np.array([height, width]) * scale + 0.5).astype(np.int64)
        return T.ResizeTransform(height, width, new_height, new_width, self.interp)


def build_augmentation(cfg: MapperConfig, is_train: bool) -> list[T.Augmentation]:
    """Training with ``lsj``: flip, ``ResizeScale`` and ``FixedSizeCrop`` (large-scale jitter).
    Otherwise SAM's preprocessing: the longest side resized to ``image_size``, padded to a square
    at the bottom and right."""
    size = (cfg.image_size, cfg.image_size)
    if is_train and cfg.augmentation == "lsj":
        return [
            T.RandomFlip(horizontal=True),
            T.ResizeScale(min_scale=cfg.min_scale, max_scale=cfg.max_scale, target_height=size[0], target_width=size[1]),
            T.FixedSizeCrop(crop_size=size),
        ]
    return [ResizeLongestSide(cfg.image_size), T.FixedSizeCrop(crop_size=size)]
