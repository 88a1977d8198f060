"""Reading a record's image in a mapper: a missing or unreadable file is skipped and counted
(``skipped_images``, see :mod:`sca.data.skip_counts`) instead of failing the sample."""

from __future__ import annotations

import numpy as np
from detectron2.data import detection_utils as utils

from sca.data.skip_counts import SkipRecorder

__all__ = ["SKIPPED_IMAGES", "record_skipped_image", "read_image_or_skip"]

SKIPPED_IMAGES = "skipped_images"


def record_skipped_image(skips: SkipRecorder, source: str, file_name: str, error: Exception) -> None:
    """Count ``file_name`` (once) as a skipped image of ``source``."""
    skips.record(SKIPPED_IMAGES, file_name, f"{source}: skipped an image ({error})")


def read_image_or_skip(dataset_dict: dict, skips: SkipRecorder, source: str) -> np.ndarray | None:
    """The record's image (RGB, HxWx3 uint8), checked against its ``height`` / ``width``
    (detectron2's ``SizeMismatchError`` otherwise); ``None`` when missing, truncated or not an
    image, after counting it."""
    try:
        image = utils.read_image(dataset_dict["file_name"], format="RGB")
    except OSError as error:
        record_skipped_image(skips, source, dataset_dict["file_name"], error)
        return None
    utils.check_image_size(dataset_dict, image)
    return image
