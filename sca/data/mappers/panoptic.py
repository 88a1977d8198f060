"""Panoptic dataset dict -> region sample: every non-crowd segment is a candidate region."""

from __future__ import annotations

import cv2
import numpy as np
from panopticapi.utils import rgb2id
from pycocotools import mask as mask_util

from sca.data.mappers.image_input import SKIPPED_IMAGES, record_skipped_image
from sca.data.mappers.label_regions import cut_regions, label_areas, low_res_masks
from sca.data.mappers.region_mapper import RegionMapper
from sca.data.mappers.region_sample import sample_regions

__all__ = ["PanopticRegionMapper"]


class PanopticRegionMapper(RegionMapper):
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
    survives; in evaluation, a sample with zero regions, and each region also carries its
    full-resolution ground-truth mask in the original image frame (``mask_rles``, COCO RLE).
    """

    SKIP_KINDS = (SKIPPED_IMAGES, "absent_segments")

    def __call__(self, dataset_dict: dict) -> dict | None:
        rng = np.random.default_rng(np.random.randint(2**31))
        image = self.read_image(dataset_dict)
        if image is None:
            return None
        try:
            ids = _read_segment_ids(dataset_dict["pan_seg_file_name"])
        except OSError as error:
            record_skipped_image(self.skips, self.source, dataset_dict["file_name"], error)
            return None
        if ids.shape != (dataset_dict["height"], dataset_dict["width"]):
            raise ValueError(
                f"{dataset_dict['pan_seg_file_name']}: panoptic PNG is {ids.shape[1]}x{ids.shape[0]} but its JSON "
                f"entry says {dataset_dict['width']}x{dataset_dict['height']}"
            )
        segments, labels, source_boxes = self._label_map(dataset_dict, ids, rng)

        image, labels, transforms, valid_box = self.transform(dataset_dict, image, labels)
        regions = self._regions(labels, transforms.apply_box(source_boxes), rng)
        if not regions["labels"].size and self.is_train:
            return None
        chosen_segments = [segments[k - 1] for k in regions["labels"]]
        region_list = [
            {"id": s["id"], "category_id": s["category_id"], "box": box, "points": points, "mask": mask,
             "captions": [self.class_names[s["category_id"]]]}
            for s, box, points, mask in zip(chosen_segments, regions["boxes"], regions["points"], regions["masks"])
        ]
        sample = self.assemble(dataset_dict, image, valid_box, region_list, rng)
        if not self.is_train:  # evaluation: full-resolution ground truth for mask IoU
            sample["regions"]["mask_rles"] = [
                mask_util.encode(np.asfortranarray(ids == s["id"], dtype=np.uint8)) for s in chosen_segments
            ]
        return sample

    def _label_map(self, dataset_dict: dict, ids: np.ndarray, rng: np.random.Generator):
        """One label map for the candidate (non-crowd) segments, to transform with the image.

        Returns:
            the candidates present in the PNG (absent ones are dropped and counted), the label map
            (pixel = 1 + index into them, 0 elsewhere; uint8, or float32 beyond 255 candidates so
            that it stays exact) and their boxes in the PNG (XYXY, float32).
        """
        candidates = [s for s in dataset_dict["segments_info"] if not s["iscrowd"]]
        if self.is_train and len(candidates) > 255:  # keep uint8 labels; far more than max_regions remain
            candidates = [candidates[i] for i in sorted(rng.choice(len(candidates), 255, replace=False))]
        labels = np.zeros(ids.shape, np.uint8 if len(candidates) <= 255 else np.float32)
        segments, boxes = [], []
        for segment in candidates:
            mask = ids == segment["id"]
            x, y, w, h = cv2.boundingRect(mask.view(np.uint8))
            if w == 0:
                png_file = dataset_dict["pan_seg_file_name"]
                message = f"{self.source}: segment {segment['id']} of the JSON is absent from {png_file}"
                self.skips.record("absent_segments", (png_file, segment["id"]), message)
                continue
            segments.append(segment)
            labels[mask] = len(segments)
            boxes.append((x, y, x + w, y + h))
        return segments, labels, np.array(boxes, dtype=np.float32).reshape(-1, 4)

    def _regions(self, labels: np.ndarray, windows: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Boxes (XYXY), points (x, y) and low-res masks of the regions kept after the transforms.

        Only the chosen regions are cut out, each inside its ``window`` (its PNG box carried
        through the transforms, widened by 2 pixels for nearest-neighbour rounding; the whole
        map if the window misses any of its pixels).

        Returns:
            dict of ``labels`` (R,) 1-based segment indices, ``boxes`` (R, 4), ``points`` (R, P, 2),
            ``masks`` (R, mask_size, mask_size) bool.
        """
        areas = label_areas(labels, len(windows))
        candidates = np.flatnonzero(areas >= self.cfg.min_region_area) + 1
        candidates = sample_regions(rng, candidates, self.cfg.max_regions, self.is_train)
        boxes, points = cut_regions(labels, candidates, windows, areas, self.cfg.prompt.num_points, rng)
        masks = low_res_masks(labels, candidates, self.cfg.mask_size)
        return {"labels": candidates, "boxes": boxes, "points": points, "masks": masks}


def _read_segment_ids(png_file: str) -> np.ndarray:
    """Segment id per pixel of a COCO-panoptic PNG (id = R + 256 G + 256^2 B); OpenCV decodes it
    (BGR) faster than PIL."""
    bgr = cv2.imread(png_file, cv2.IMREAD_COLOR)
    if bgr is None:
        raise OSError(f"cannot read the panoptic PNG {png_file}")
    return rgb2id(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
