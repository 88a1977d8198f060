"""Box-only dataset dict (Objects365, V3Det, Visual Genome) -> region sample: every non-crowd box is a
candidate region."""

from __future__ import annotations

import numpy as np
from detectron2.data import transforms as T
from detectron2.structures import BoxMode

from sca.config import MapperConfig
from sca.data.caption_normalization import normalize_captions
from sca.data.mappers.region_mapper import RegionMapper
from sca.data.mappers.region_sample import sample_regions
from sca.data.prompts import sample_points_in_boxes
from sca.data.skip_counts import SkipRecorder

__all__ = ["BoxRegionMapper"]


class BoxRegionMapper(RegionMapper):
    """Maps a detectron2 instances dataset dict whose annotations are boxes to a region sample.

    The image goes through detectron2's transforms (LSJ in training, SAM's longest-side resize +
    pad otherwise) and every non-crowd box with it; boxes are clipped to the image content inside
    the frame (``valid_box``), and those left with less than ``min_region_area`` pixels (cut away by
    the crop) are dropped. At most ``max_regions`` of the rest are sampled without replacement in
    training (all are kept in evaluation). Each region gets its box, points drawn uniformly inside
    it, a prompt type (box or point, from the configured mix), its captions and its tokens: the
    annotation's own ``sentences`` where it has them (Visual Genome phrases, under
    ``cfg.caption_normalization``), else its class caption. There are no masks: a mask prompt
    weight is a configuration error, and ``masks`` is (R, 0, 0).

    Bad input: an image that is missing or unreadable is skipped (``None``) and counted (see
    :mod:`sca.data.skip_counts`); so is a region whose caption the normalisation drops (more than
    15 words), under ``dropped_by_caption_normalization``.

    In training, returns ``None`` (the loader then draws another image) when no region survives;
    in evaluation, a sample with zero regions.
    """

    NORMALIZATION_DROPS = "dropped_by_caption_normalization"

    def __init__(self, cfg: MapperConfig, **kwargs):
        """See :class:`RegionMapper`; ``cfg.prompt.weights`` must not ask for mask prompts."""
        if cfg.prompt.weights.get("mask", 0) > 0:
            raise ValueError(
                f"{kwargs.get('source')}: mask prompts need region masks and this source has boxes only; "
                f"set mapper.prompt.weights to box and/or point (got {dict(cfg.prompt.weights)})"
            )
        super().__init__(cfg, **kwargs)
        if cfg.caption_normalization != "none":
            self.skips = SkipRecorder((*self.SKIP_KINDS, self.NORMALIZATION_DROPS))

    def __call__(self, dataset_dict: dict) -> dict | None:
        rng = np.random.default_rng(np.random.randint(2**31))
        image = self.read_image(dataset_dict)
        if image is None:
            return None
        image, _, transforms, valid_box = self.transform(dataset_dict, image)

        annotations = [a for a in dataset_dict["annotations"] if not a.get("iscrowd", 0)]
        captions = self._captions(dataset_dict, annotations)
        annotations = [a for a, c in zip(annotations, captions) if c]
        captions = [c for c in captions if c]
        boxes = self._frame_boxes(annotations, transforms, valid_box, image.shape[:2])
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        candidates = np.flatnonzero((areas >= self.cfg.min_region_area) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))
        chosen = sample_regions(rng, candidates, self.cfg.max_regions, self.is_train)
        if not chosen.size and self.is_train:
            return None
        points = sample_points_in_boxes(rng, boxes[chosen], self.cfg.prompt.num_points)
        regions = [
            {
                "id": annotations[i].get("id", i),
                "category_id": annotations[i]["category_id"],
                "box": boxes[i],
                "points": region_points,
                "captions": captions[i],
            }
            for i, region_points in zip(chosen.tolist(), points)
        ]
        return self.assemble(dataset_dict, image, valid_box, regions, rng, with_masks=False)

    def _captions(self, dataset_dict: dict, annotations: list[dict]) -> list[list[str]]:
        """Each annotation's reference captions; empty for a region the normalisation drops (counted)."""
        captions = []
        for index, annotation in enumerate(annotations):
            if "sentences" not in annotation:
                captions.append([self.class_names[annotation["category_id"]]])
                continue
            kept = normalize_captions(annotation["sentences"], self.cfg.caption_normalization)
            if not kept:
                key = (dataset_dict["image_id"], annotation.get("id", index))
                self.skips.record(self.NORMALIZATION_DROPS, key, f"{self.source}: region {key} dropped by caption normalization "
                                  f"'{self.cfg.caption_normalization}' ({annotation['sentences'][0][:60]!r})")
            captions.append(kept)
        return captions

    @staticmethod
    def _frame_boxes(annotations: list[dict], transforms: T.TransformList, valid_box: np.ndarray, frame: tuple[int, int]) -> np.ndarray:
        """The annotations' boxes (XYXY) in the model's input frame, clipped to the image content in it."""
        boxes = np.array([a["bbox"] for a in annotations], dtype=np.float64).reshape(-1, 4)
        modes = np.array([int(a["bbox_mode"]) for a in annotations], dtype=np.int64)
        for mode in np.unique(modes):
            if mode != BoxMode.XYXY_ABS:
                boxes[modes == mode] = BoxMode.convert(boxes[modes == mode], BoxMode(int(mode)), BoxMode.XYXY_ABS)
        boxes = transforms.apply_box(boxes).astype(np.float32) if len(boxes) else np.zeros((0, 4), np.float32)
        low = np.maximum(valid_box[:2], 0)
        high = np.minimum(valid_box[2:], (frame[1], frame[0]))
        boxes[:, 0::2] = boxes[:, 0::2].clip(low[0], high[0])
        boxes[:, 1::2] = boxes[:, 1::2].clip(low[1], high[1])
        return boxes
