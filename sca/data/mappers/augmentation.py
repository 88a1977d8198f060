"""Geometric augmentation with detectron2 transforms, in SAM's square input frame."""

from __future__ import annotations

from detectron2.data import transforms as T

from sca.config import MapperConfig

__all__ = ["build_augmentation"]


def build_augmentation(cfg: MapperConfig, is_train: bool) -> list[T.Augmentation]:
    """Training with ``lsj``: flip, ``ResizeScale`` and ``FixedSizeCrop`` (large-scale jitter).
    Otherwise SAM's resize: the longest side to ``image_size``, then pad to a square."""
    size = (cfg.image_size, cfg.image_size)
    if is_train and cfg.augmentation == "lsj":
        return [
            T.RandomFlip(horizontal=True),
            T.ResizeScale(min_scale=cfg.min_scale, max_scale=cfg.max_scale, target_height=size[0], target_width=size[1]),
            T.FixedSizeCrop(crop_size=size),
        ]
    return [T.ResizeScale(min_scale=1.0, max_scale=1.0, target_height=size[0], target_width=size[1]), T.FixedSizeCrop(crop_size=size)]
