"""Referring (RefCOCO-family) dataset dict -> region sample: every ref is a region captioned by its sentences."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_util
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures.masks import polygons_to_bitmask
from PIL import Image

from sca.config import MapperConfig
from sca.data.caption_tokenizer import CaptionTokenizer
from sca.data.mappers.augmentation import build_augmentation
from sca.data.mappers.region_sample import assemble_region_sample
from sca.data.prompts import sample_points

__all__ = ["ReferringRegionMapper"]


class ReferringRegionMapper:
    """Maps a referring dataset dict (instances whose annotations carry ``ref_id`` and
    ``sentences``) to a region sample.

    The image and each annotation's segmentation (polygons or RLE, rasterized first) go through
    the same detectron2 transforms (LSJ in training, SAM's longest-side resize + pad otherwise). A region's mask is its
    transformed segmentation, its box that mask's extent, its captions the ref's sentences (one is
    drawn per training sample). Crowd annotations and regions cut away by the crop or smaller than
    ``min_region_area`` are dropped; at most ``max_regions`` are sampled in training.

    In training, returns ``None`` (the loader then draws another image) when no region survives;
    in evaluation, a sample with zero regions.
    """

    def __init__(self, cfg: MapperConfig, *, is_train: bool, tokenizer: CaptionTokenizer, source: str, task_type: str):
        self.cfg = cfg
        self.is_train = is_train
        self.augmentations = T.AugmentationList(build_augmentation(cfg, is_train))
        self.tokenizer = tokenizer
        self.source = source
        self.task_type = task_type

    def __call__(self, dataset_dict: dict) -> dict | None:
        rng = np.random.default_rng(np.random.randint(2**31))
        image = utils.read_image(dataset_dict["file_name"], format="RGB")
        utils.check_image_size(dataset_dict, image)
        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        height, width = dataset_dict["height"], dataset_dict["width"]
        valid_box = transforms.apply_box(np.array([[0, 0, width, height]], dtype=np.float32))[0]

        annotations = [a for a in dataset_dict["annotations"] if not a.get("iscrowd", 0)]
        if self.is_train:
            annotations = [annotations[i] for i in rng.permutation(len(annotations))]
        limit = self.cfg.max_regions if self.is_train else len(annotations)
        regions = []
        for annotation in annotations:
            if len(regions) == limit:
                break
            mask = self._mask(annotation, transforms, height, width)
            ys, xs = np.nonzero(mask)
            if len(xs) < self.cfg.min_region_area:
                continue
            low_res = Image.fromarray(mask.astype(np.uint8)).resize((self.cfg.mask_size,) * 2, Image.NEAREST)
            regions.append(
                {
                    "id": annotation["ref_id"],
                    "category_id": annotation["category_id"],
                    "box": np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32),
                    "points": sample_points(rng, ys, xs, self.cfg.prompt.num_points),
                    "mask": np.asarray(low_res) > 0,
                    "captions": annotation["sentences"],
                }
            )
        if not regions and self.is_train:
            return None
        return assemble_region_sample(
            dataset_dict, image, valid_box, regions, cfg=self.cfg, tokenizer=self.tokenizer,
            source=self.source, task_type=self.task_type, is_train=self.is_train, rng=rng,
        )

    @staticmethod
    def _mask(annotation: dict, transforms: T.TransformList, height: int, width: int) -> np.ndarray:
        """The annotation's segmentation (polygons or RLE), rasterized at the record's size and
        transformed like a segmentation map, as an (S, S) bool mask."""
        segmentation = annotation["segmentation"]
        if isinstance(segmentation, dict):
            if isinstance(segmentation["counts"], list):  # uncompressed RLE
                segmentation = mask_util.frPyObjects(segmentation, *segmentation["size"])
            mask = mask_util.decode(segmentation)
        else:
            mask = polygons_to_bitmask([p for p in segmentation if len(p) >= 6], height, width)
        if mask.shape != (height, width):
            raise ValueError(f"segmentation of ref {annotation['ref_id']} is {mask.shape[:2]}, the image {(height, width)}")
        return transforms.apply_segmentation(mask.astype(np.uint8)) > 0
