"""Panoptic dataset dict -> region sample: every non-crowd segment is a candidate region."""

from __future__ import annotations

import logging

import numpy as np
import torch
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from panopticapi.utils import rgb2id
from PIL import Image
from scipy import ndimage

from sca.config import MapperConfig
from sca.data.caption_tokenizer import CaptionTokenizer
from sca.data.mappers.augmentation import build_augmentation
from sca.data.prompts import sample_points, sample_prompt_types
from sca.data.skip_counts import SkipRecorder

__all__ = ["PanopticRegionMapper"]

logger = logging.getLogger(__name__)


class PanopticRegionMapper:
    """Maps a detectron2 panoptic dataset dict to a region sample.

    The panoptic PNG is decoded once into a label map of the candidate segments (1..K, 0 = none),
    which goes through the image's detectron2 transforms (LSJ in training, SAM's longest-side
    resize + pad otherwise). Segments cut away by the crop or smaller than ``min_region_area`` are
    dropped; at most ``max_regions`` of the rest are sampled without replacement in training (all
    are kept in evaluation). Only the chosen regions are cut out: each gets its tight box, points
    inside its mask, a low-res mask, a prompt type (sampled from the configured mix), its class
    caption and its tokens.

    Bad input: an image that is missing or unreadable is skipped (``None``) and counted; a segment
    listed in the JSON but absent from the PNG is dropped and counted (see :mod:`skip_counts`);
    a PNG whose size differs from the JSON entry raises ``ValueError`` naming the file.

    In training, returns ``None`` (detectron2's loaders then draw another image) when no region
    survives; in evaluation, a sample with zero regions.
    """

    SKIP_KINDS = ("skipped_images", "absent_segments")

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
        self.skips = SkipRecorder(self.SKIP_KINDS)

    def __call__(self, dataset_dict: dict) -> dict | None:
        rng = np.random.default_rng(np.random.randint(2**31))
        try:
            image = utils.read_image(dataset_dict["file_name"], format="RGB")
        except OSError as error:  # missing, truncated or not an image
            self.skips.record("skipped_images", dataset_dict["file_name"], f"{self.source}: skipped an image ({error})")
            return None
        utils.check_image_size(dataset_dict, image)
        segments, labels = self._label_map(dataset_dict, rng)

        aug_input = T.AugInput(image, sem_seg=labels)
        transforms = self.augmentations(aug_input)
        image, labels = aug_input.image, aug_input.sem_seg
        height, width = dataset_dict["height"], dataset_dict["width"]
        valid_box = transforms.apply_box(np.array([[0, 0, width, height]], dtype=np.float32))[0]

        regions = self._regions(segments, labels, rng)
        if not regions["labels"].size and self.is_train:
            return None
        captions = [[self.class_names[segments[k - 1]["category_id"]]] for k in regions["labels"]]
        chosen = [refs[rng.integers(len(refs))] if self.is_train else refs[0] for refs in captions]
        num_regions = len(captions)
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
                "region_ids": torch.tensor([segments[k - 1]["id"] for k in regions["labels"]], dtype=torch.int64),
                "category_ids": torch.tensor([segments[k - 1]["category_id"] for k in regions["labels"]], dtype=torch.int64),
                "boxes": torch.from_numpy(regions["boxes"]),
                "prompt_types": torch.as_tensor(sample_prompt_types(rng, self.cfg.prompt.weights, num_regions)),
                "points": torch.from_numpy(regions["points"]),
                "point_labels": torch.ones((num_regions, self.cfg.prompt.num_points), dtype=torch.int64),
                "masks": torch.from_numpy(regions["masks"]),
                "captions": captions,
                "input_ids": self.tokenizer.encode(chosen) if chosen else [],
            },
        }
        return self.skips.attach(sample)

    def _label_map(self, dataset_dict: dict, rng: np.random.Generator) -> tuple[list[dict], np.ndarray]:
        """Decode the panoptic PNG once into a label map: pixel = 1 + index into the returned
        candidate segments, 0 elsewhere. Candidates absent from the PNG are dropped and counted."""
        png_file = dataset_dict["pan_seg_file_name"]
        with Image.open(png_file) as png:
            ids = rgb2id(np.asarray(png.convert("RGB")))
        if ids.shape != (dataset_dict["height"], dataset_dict["width"]):
            raise ValueError(
                f"{png_file}: panoptic PNG is {ids.shape[1]}x{ids.shape[0]} but its JSON entry says "
                f"{dataset_dict['width']}x{dataset_dict['height']}"
            )
        segments = [s for s in dataset_dict["segments_info"] if not s["iscrowd"]]
        if self.is_train and len(segments) > 255:  # keep uint8 labels; far more than max_regions remain
            segments = [segments[i] for i in sorted(rng.choice(len(segments), 255, replace=False))]
        labels = self._segment_labels(ids, np.array([s["id"] for s in segments], dtype=ids.dtype))
        present = np.bincount(labels.ravel(), minlength=len(segments) + 1)[1:] > 0
        if not present.all():
            for segment in (s for s, p in zip(segments, present) if not p):
                self.skips.record(
                    "absent_segments", (png_file, segment["id"]), f"{self.source}: segment {segment['id']} is absent from {png_file}"
                )
            keep = np.flatnonzero(present)
            segments = [segments[i] for i in keep]
            relabel = np.zeros(len(present) + 1, dtype=labels.dtype)
            relabel[keep + 1] = np.arange(1, len(keep) + 1)
            labels = relabel[labels.astype(np.intp, copy=False)]
        return segments, labels

    @staticmethod
    def _segment_labels(ids: np.ndarray, segment_ids: np.ndarray) -> np.ndarray:
        """Label map of ``ids`` (1 + index in ``segment_ids``, 0 for other ids): uint8 up to 255
        segments (resized by PIL like the image), float32 beyond (exact, resized by torch)."""
        dtype = np.uint8 if len(segment_ids) <= 255 else np.float32
        if not len(segment_ids):
            return np.zeros(ids.shape, dtype)
        order = np.argsort(segment_ids)
        position = np.minimum(np.searchsorted(segment_ids[order], ids), len(order) - 1)
        return np.where(segment_ids[order][position] == ids, order[position] + 1, 0).astype(dtype)

    def _regions(self, segments: list[dict], labels: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Boxes (XYXY), points (x, y) and low-res masks of the regions kept after the transforms.

        Returns:
            dict of ``labels`` (R,) 1-based segment indices, ``boxes`` (R, 4), ``points`` (R, P, 2),
            ``masks`` (R, mask_size, mask_size) bool.
        """
        int_labels = labels.astype(np.int32) if labels.dtype != np.uint8 else labels
        areas = np.bincount(int_labels.ravel(), minlength=len(segments) + 1)[1:]
        candidates = np.flatnonzero(areas >= self.cfg.min_region_area) + 1
        if self.is_train:
            candidates = rng.permutation(candidates)[: self.cfg.max_regions]
        slices = ndimage.find_objects(int_labels, max_label=len(segments))
        num_points, mask_size = self.cfg.prompt.num_points, self.cfg.mask_size
        boxes = np.zeros((len(candidates), 4), np.float32)
        points = np.zeros((len(candidates), num_points, 2), np.float32)
        for i, label in enumerate(candidates):
            rows, cols = slices[label - 1]
            boxes[i] = (cols.start, rows.start, cols.stop, rows.stop)
            ys, xs = np.nonzero(int_labels[rows, cols] == label)
            points[i] = sample_points(rng, ys + rows.start, xs + cols.start, num_points)
        if labels.shape != (mask_size, mask_size):
            labels = np.asarray(Image.fromarray(labels).resize((mask_size, mask_size), Image.NEAREST))
        masks = labels[None] == candidates.astype(labels.dtype)[:, None, None]
        return {"labels": candidates, "boxes": boxes, "points": points, "masks": masks}
