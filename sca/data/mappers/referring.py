"""Referring (RefCOCO-family) dataset dict -> region sample: every ref is a region captioned by its sentences."""

from __future__ import annotations

import cv2
import numpy as np
import pycocotools.mask as mask_util

from sca.data.mappers.image_input import SKIPPED_IMAGES
from sca.data.mappers.label_regions import cut_regions, label_areas, low_res_masks
from sca.data.mappers.region_mapper import RegionMapper
from sca.data.mappers.region_sample import sample_regions
from sca.data.record_regions import segmentation_mask

__all__ = ["ReferringRegionMapper"]


class ReferringRegionMapper(RegionMapper):
    """Maps a referring dataset dict (instances whose annotations carry ``ref_id`` and
    ``sentences``) to a region sample.

    Each annotation's segmentation (polygons or RLE) is rasterized at the record's size and the
    masks are painted into as few label maps as keep overlapping refs apart; the maps go through
    the image's detectron2 transforms (LSJ in training, SAM's longest-side resize + pad otherwise)
    with nearest-neighbour resizing, so each ref gets exactly the mask its own transform would
    give. A region's mask is its transformed segmentation, its box that mask's extent, its points
    drawn inside the mask, its captions all the ref's sentences (one is drawn per training sample;
    evaluation keeps them all as references). Crowd annotations and regions cut away by the crop or
    smaller than ``min_region_area`` are dropped; at most ``max_regions`` are sampled in training.

    Bad input: a missing or unreadable image is skipped (``None``) and counted; an annotation whose
    segmentation covers no pixel is dropped and counted (``empty_masks``), and so is one whose
    segmentation is malformed or not of the image's size (``invalid_masks``).

    In training, returns ``None`` (the loader then draws another image) when no region survives;
    in evaluation, a sample with zero regions, each region also carrying its full-resolution
    ground-truth mask in the original image frame (``mask_rles``, COCO RLE).
    """

    SKIP_KINDS = (SKIPPED_IMAGES, "empty_masks", "invalid_masks")

    def __call__(self, dataset_dict: dict) -> dict | None:
        rng = np.random.default_rng(np.random.randint(2**31))
        image = self.read_image(dataset_dict)
        if image is None:
            return None
        height, width = dataset_dict["height"], dataset_dict["width"]
        annotations, masks = self._masks(dataset_dict)
        layers, layer_of, label_of, source_boxes = _label_layers(masks, (height, width))

        image, first_layer, transforms, valid_box = self.transform(dataset_dict, image, layers[0])
        layers = [first_layer] + [transforms.apply_segmentation(layer) for layer in layers[1:]]
        windows = transforms.apply_box(source_boxes)

        members = [np.flatnonzero(layer_of == index) for index in range(len(layers))]  # in label order
        areas = np.zeros(len(annotations), np.int64)
        for layer, layer_members in zip(layers, members):
            areas[layer_members] = label_areas(layer, len(layer_members))
        chosen = sample_regions(rng, np.flatnonzero(areas >= self.cfg.min_region_area), self.cfg.max_regions, self.is_train)
        if not chosen.size and self.is_train:
            return None
        regions = [None] * len(chosen)
        for index, (layer, layer_members) in enumerate(zip(layers, members)):
            positions = np.flatnonzero(layer_of[chosen] == index)
            labels = label_of[chosen[positions]]
            boxes, points = cut_regions(layer, labels, windows[layer_members], areas[layer_members], self.cfg.prompt.num_points, rng)
            for position, box, region_points, mask in zip(positions, boxes, points, low_res_masks(layer, labels, self.cfg.mask_size)):
                annotation = annotations[chosen[position]]
                regions[position] = {"id": annotation["ref_id"], "category_id": annotation["category_id"], "box": box,
                                     "points": region_points, "mask": mask, "captions": annotation["sentences"]}
        sample = self.assemble(dataset_dict, image, valid_box, regions, rng)
        if not self.is_train:  # evaluation: full-resolution ground truth for mask IoU
            sample["regions"]["mask_rles"] = [mask_util.encode(np.asfortranarray(masks[i], dtype=np.uint8)) for i in chosen]
        return sample

    def _masks(self, dataset_dict: dict) -> tuple[list[dict], list[np.ndarray]]:
        """The non-crowd annotations whose segmentation covers some pixel, and their (H, W) bool masks."""
        height, width = dataset_dict["height"], dataset_dict["width"]
        annotations, masks = [], []
        for annotation in dataset_dict["annotations"]:
            if annotation.get("iscrowd", 0):
                continue
            key = (dataset_dict["file_name"], annotation["ref_id"])
            try:
                mask = segmentation_mask(annotation["segmentation"], height, width)
                if mask.shape != (height, width):
                    raise ValueError(f"it is {mask.shape}, the image {(height, width)}")
            except (ValueError, TypeError) as error:
                self.skips.record("invalid_masks", key, f"{self.source}: ref {annotation['ref_id']} of {key[0]}: bad segmentation ({error})")
                continue
            if not mask.any():
                self.skips.record("empty_masks", key, f"{self.source}: ref {annotation['ref_id']} of {key[0]} has an empty mask")
                continue
            annotations.append(annotation)
            masks.append(mask)
        return annotations, masks


def _label_layers(masks: list[np.ndarray], shape: tuple[int, int]):
    """Paint the masks into uint8 label maps, a mask going to the first map where it overlaps no
    other one (a map holds up to 255).

    Returns:
        the maps (at least one), each mask's map and label in it (the masks of a map, in their
        order, are labelled 1, 2, ...), and each mask's box (XYXY float32).
    """
    layers = [np.zeros(shape, np.uint8)]
    counts = [0]
    layer_of = np.zeros(len(masks), np.int64)
    label_of = np.zeros(len(masks), np.int64)
    boxes = np.zeros((len(masks), 4), np.float32)
    for i, mask in enumerate(masks):
        x, y, w, h = cv2.boundingRect(mask.view(np.uint8))
        boxes[i] = (x, y, x + w, y + h)
        index = next((k for k, layer in enumerate(layers) if counts[k] < 255 and not layer[y : y + h, x : x + w][mask[y : y + h, x : x + w]].any()), None)
        if index is None:
            layers.append(np.zeros(shape, np.uint8))
            counts.append(0)
            index = len(layers) - 1
        counts[index] += 1
        layers[index][mask] = counts[index]
        layer_of[i], label_of[i] = index, counts[index]
    return layers, layer_of, label_of, boxes
