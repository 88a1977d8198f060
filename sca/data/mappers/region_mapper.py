"""What every region mapper shares: configuration, detectron2 augmentations, skip counting, image
reading, the image transform and the sample assembly. Mappers differ in how they find their regions."""

from __future__ import annotations

import numpy as np
from detectron2.data import transforms as T

from sca.config import MapperConfig
from sca.data.caption_tokenizer import CaptionTokenizer
from sca.data.mappers.augmentation import build_augmentation
from sca.data.mappers.image_input import SKIPPED_IMAGES, read_image_or_skip
from sca.data.mappers.region_sample import assemble_region_sample
from sca.data.skip_counts import SkipRecorder

__all__ = ["RegionMapper"]


class RegionMapper:
    """Base of the region mappers (``dataset dict -> region sample``, see :mod:`region_sample`).

    Args:
        cfg: the mapper options (augmentation, regions, prompts).
        is_train: training (LSJ, sampled regions, a random sentence each) or evaluation.
        tokenizer: tokenizes the chosen captions.
        source, task_type: copied into every sample.
        class_names: caption of each contiguous class id, for sources captioned by class name.
    """

    SKIP_KINDS: tuple[str, ...] = (SKIPPED_IMAGES,)  # what a subclass counts (see :mod:`sca.data.skip_counts`)

    def __init__(
        self,
        cfg: MapperConfig,
        *,
        is_train: bool,
        tokenizer: CaptionTokenizer,
        source: str,
        task_type: str,
        class_names: list[str] | None = None,
    ):
        self.cfg = cfg
        self.is_train = is_train
        self.augmentations = T.AugmentationList(build_augmentation(cfg, is_train))
        self.tokenizer = tokenizer
        self.source = source
        self.task_type = task_type
        self.class_names = class_names
        self.skips = SkipRecorder(self.SKIP_KINDS)

    def read_image(self, dataset_dict: dict) -> np.ndarray | None:
        """The record's image, or ``None`` (counted) when it is missing or unreadable."""
        return read_image_or_skip(dataset_dict, self.skips, self.source)

    def transform(self, dataset_dict: dict, image: np.ndarray, sem_seg: np.ndarray | None = None):
        """Draw and apply the augmentations to the image (and a label map carried with it).

        Returns:
            the transformed image, the transformed ``sem_seg``, the ``TransformList`` and the
            ``valid_box`` (XYXY extent of the image content in the model's input frame).
        """
        aug_input = T.AugInput(image, sem_seg=sem_seg)
        transforms = self.augmentations(aug_input)
        corners = np.array([[0, 0, dataset_dict["width"], dataset_dict["height"]]], dtype=np.float32)
        return aug_input.image, aug_input.sem_seg, transforms, transforms.apply_box(corners)[0]

    def assemble(
        self, dataset_dict: dict, image: np.ndarray, valid_box: np.ndarray, regions: list[dict], rng: np.random.Generator,
        *, with_masks: bool = True,
    ) -> dict:
        """The region sample (:func:`assemble_region_sample`) with the skips not yet reported."""
        sample = assemble_region_sample(
            dataset_dict, image, valid_box, regions, cfg=self.cfg, tokenizer=self.tokenizer, source=self.source,
            task_type=self.task_type, is_train=self.is_train, rng=rng, with_masks=with_masks,
        )
        return self.skips.attach(sample)
