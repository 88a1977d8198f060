"""Box-only dataset dict (Objects365, V3Det) -> region sample: every non-crowd box is a candidate region."""

from __future__ import annotations

import numpy as np
from detectron2.data import transforms as T
from detectron2.structures import BoxMode

from sca.config import MapperConfig
from sca.data.mappers.region_mapper import RegionMapper
from sca.data.mappers.region_sample import sample_regions
from sca.data.prompts import sample_points_in_boxes

__all__ = ["BoxRegionMapper"]


class BoxRegionMapper(RegionMapper):
    """Maps a detectron2 instances dataset dict whose annotations are boxes to a region sample.

    The image goes through detectron2's transforms (LSJ in training, SAM's longest-side resize +
    pad otherwise) and every non-crowd box with it; boxes are clipped to the image content inside
    the frame (``valid_box``), and those left with less than ``min_region_area`` pixels (cut away by
    the crop) are dropped. At most ``max_regions`` of the rest are sampled without replacement in
    training (all are kept in evaluation). Each region gets its box, points drawn uniformly inside
    it, a prompt type (box or point, from the configured mix), its captions (the annotation's
    ``sentences`` where given, else its class name) and its tokens.
    There are no masks: a mask prompt weight is a configuration error, and ``masks`` is (R, 0, 0).

    Bad input: an image that is missing or unreadable is skipped (``None``) and counted (see
    :mod:`sca.data.skip_counts`).

    In training, returns ``None`` (the loader then draws another image) when no region survives;
    in evaluation, a sample with zero regions.
    """

    def __init__(self, cfg: MapperConfig, **kwargs):
        """See :class:`RegionMapper`; ``cfg.prompt.weights`` must not ask for mask prompts."""
        if cfg.prompt.weights.get("mask", 0) > 0:
            raise ValueError(
                f"{kwargs.get('source')}: mask prompts need region masks and this source has boxes only; "
                f"set mapper.prompt.weights to box and/or point (got {dict(cfg.prompt.weights)})"
            )
        super().__init__(cfg, **kwargs)

    def __call__(self, dataset_dict: dict) -> dict | None:
        rng = np.random.default_rng(np.random.randint(2**31))
        image = self.read_image(dataset_dict)
        if image is None:
            return None
        image, _, transforms, valid_box = self.transform(dataset_dict, image)

        annotations = [a for a in dataset_dict["annotations"] if not a.get("iscrowd", 0)]
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
                "captions": annotations[i].get("sentences") or [self.class_names[annotations[i]["category_id"]]],
            }
            for i, region_points in zip(chosen.tolist(), points)
        ]
        return self.assemble(dataset_dict, image, valid_box, regions, rng, with_masks=False)

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
