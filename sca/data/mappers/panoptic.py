"""Panoptic dataset dict -> region sample: every non-crowd segment is a candidate region."""

from __future__ import annotations

import logging

import numpy as np
import torch
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from panopticapi.utils import rgb2id
from PIL import Image
from pycocotools import mask as mask_util

from sca.config import MapperConfig
from sca.data.caption_tokenizer import CaptionTokenizer
from sca.data.mappers.augmentation import build_augmentation
from sca.data.prompts import sample_points, sample_prompt_types

__all__ = ["PanopticRegionMapper"]

logger = logging.getLogger(__name__)


class PanopticRegionMapper:
    """Maps a detectron2 panoptic dataset dict to a region sample.

    The image and its panoptic PNG go through the same detectron2 transforms (LSJ in training,
    SAM's longest-side resize + pad otherwise). Segments cut away by the crop or smaller than
    ``min_region_area`` are dropped; at most ``max_regions`` of the rest are sampled without
    replacement in training (all are kept in evaluation). Each region gets its box, a low-res mask,
    a prompt (type sampled from the configured mix), its class name as caption and its tokens.

    In training, returns ``None`` (detectron2's loaders then draw another image) when no region
    survives; in evaluation, a sample with zero regions, and each region also carries its
    full-resolution ground-truth mask in the original image frame (``mask_rles``, COCO RLE).
    """

    def __init__(
        self,
        cfg: MapperConfig,
        *,
        is_train: bool,
        tokenizer: CaptionTokenizer,
        class_names: list[str],
        source: str,
        task_type: str,
    ):
        self.cfg = cfg
        self.is_train = is_train
        self.augmentations = T.AugmentationList(build_augmentation(cfg, is_train))
        self.tokenizer = tokenizer
        self.class_names = class_names
        self.source = source
        self.task_type = task_type

    def __call__(self, dataset_dict: dict) -> dict | None:
        rng = np.random.default_rng(np.random.randint(2**31))
        image = utils.read_image(dataset_dict["file_name"], format="RGB")
        utils.check_image_size(dataset_dict, image)
        pan_seg = utils.read_image(dataset_dict["pan_seg_file_name"], format="RGB")
        if pan_seg.shape[:2] != image.shape[:2]:
            raise ValueError(f"{dataset_dict['pan_seg_file_name']}: size {pan_seg.shape[:2]} differs from the image's {image.shape[:2]}")

        original_ids = None if self.is_train else rgb2id(pan_seg)
        aug_input = T.AugInput(image, sem_seg=pan_seg)
        transforms = self.augmentations(aug_input)
        image, ids = aug_input.image, rgb2id(aug_input.sem_seg)
        height, width = dataset_dict["height"], dataset_dict["width"]
        valid_box = transforms.apply_box(np.array([[0, 0, width, height]], dtype=np.float32))[0]

        segments = [s for s in dataset_dict["segments_info"] if not s["iscrowd"]]
        if self.is_train:
            segments = [segments[i] for i in rng.permutation(len(segments))]
        regions = self._regions(segments, ids, rng)
        if not regions and self.is_train:
            return None
        captions = [[self.class_names[r["category_id"]]] for r in regions]
        chosen = [refs[rng.integers(len(refs))] if self.is_train else refs[0] for refs in captions]
        num_points, mask_size = self.cfg.prompt.num_points, self.cfg.mask_size
        sample = {
            "image": torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "image_id": dataset_dict["image_id"],
            "file_name": dataset_dict["file_name"],
            "height": height,
            "width": width,
            "valid_box": torch.as_tensor(valid_box, dtype=torch.float32),
            "source": self.source,
            "task_type": self.task_type,
            "regions": {
                "region_ids": torch.tensor([r["id"] for r in regions], dtype=torch.int64),
                "category_ids": torch.tensor([r["category_id"] for r in regions], dtype=torch.int64),
                "boxes": torch.tensor(np.array([r["box"] for r in regions]), dtype=torch.float32).reshape(-1, 4),
                "prompt_types": torch.as_tensor(sample_prompt_types(rng, self.cfg.prompt.weights, len(regions))),
                "points": torch.tensor(np.array([r["points"] for r in regions])).reshape(-1, num_points, 2),
                "point_labels": torch.ones((len(regions), num_points), dtype=torch.int64),
                "masks": torch.tensor(np.array([r["mask"] for r in regions])).reshape(-1, mask_size, mask_size),
                "captions": captions,
                "input_ids": self.tokenizer.encode(chosen) if chosen else [],
            },
        }
        if original_ids is not None:  # evaluation: full-resolution ground truth for mask IoU
            sample["regions"]["mask_rles"] = [
                mask_util.encode(np.asfortranarray(original_ids == r["id"], dtype=np.uint8)) for r in regions
            ]
        return sample

    def _regions(self, segments: list[dict], ids: np.ndarray, rng: np.random.Generator) -> list[dict]:
        """Regions of the segments present after the transforms, up to ``max_regions`` in training."""
        low_res = np.asarray(Image.fromarray(ids.astype(np.int32)).resize((self.cfg.mask_size,) * 2, Image.NEAREST))
        limit = self.cfg.max_regions if self.is_train else len(segments)
        regions = []
        for segment in segments:
            if len(regions) == limit:
                break
            ys, xs = np.nonzero(ids == segment["id"])
            if len(xs) < self.cfg.min_region_area:
                continue
            regions.append(
                {
                    "id": segment["id"],
                    "category_id": segment["category_id"],
                    "box": np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32),
                    "points": sample_points(rng, ys, xs, self.cfg.prompt.num_points),
                    "mask": low_res == segment["id"],
                }
            )
        return regions
