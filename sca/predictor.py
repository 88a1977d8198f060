"""Region captioning for users: an image and box / point prompts in; masks, IoU scores and captions out.

    from sca.predictor import RegionCaptionPredictor
    predictor = RegionCaptionPredictor.from_output_dir("output/demo_mix-tiny")
    for region in predictor("image.jpg", boxes=[[10, 20, 80, 90]], points=[[40, 50]]):
        print(region.caption, region.iou_score, region.mask.shape)
    everything = predictor("image.jpg")  # no prompts: "anything" mode
    encoded = predictor.encode("image.jpg")  # encode once, then prompt it many times (interactive use)
    regions = predictor.predict(encoded, points=[[[40, 50], [60, 55]]], point_labels=[[1, 0]])

Without prompts, the "anything" mode prompts SAM with a regular grid of points, keeps the confident
and stable masks, removes duplicates with non-maximum suppression on their boxes and captions the
rest (only when neither ``boxes`` nor ``points`` is given: empty prompt lists are an error); its
filters default to the model preset's (``model.anything``).
Prompts are given in image pixels (boxes XYXY, points XY); parts outside the image are clipped
with a warning; a prompt that is not finite (NaN, inf) is an error. A point region is one point,
or several positive / negative points.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from PIL import Image
from torchvision.ops import masks_to_boxes, nms

from sca.checkpoints.presets import matching_presets, saved_architecture
from sca.checkpoints.reference_sca import is_reference_checkpoint, read_reference_config, reference_architecture
from sca.config import AnythingConfig, SCAConfig
from sca.config_loading import load_config, load_saved_config
from sca.data.caption_tokenizer import FITTED_TOKENIZER_DIR
from sca.data.mappers.augmentation import build_augmentation
from sca.data.prompts import PROMPT_TYPE_IDS
from sca.evaluation.caption_evaluator import encode_mask
from sca.modeling.build import build_model, is_pretrained_dir, load_checkpoint
from sca.modeling.postprocessing import masks_to_image_frame, prompts_to_image_frame, region_box

__all__ = [
    "AnythingConfig", "EncodedImage", "RegionPrediction", "RegionCaptionPredictor", "add_anything_arguments",
    "anything_from_arguments", "read_rgb_image", "select_masks",
]

logger = logging.getLogger(__name__)


@dataclass
class EncodedImage:
    """An image in the model's frame with its SAM embeddings (:meth:`RegionCaptionPredictor.encode`)."""

    image: np.ndarray  # (H, W, 3) uint8 RGB, the original frame
    transforms: T.TransformList  # original frame -> model frame
    pixels: torch.Tensor  # (1, 3, S, S) normalized model input
    embeddings: torch.Tensor  # (1, C, h, w) SAM image embeddings
    valid_box: torch.Tensor  # (4,) XYXY of the image content in the model frame


@dataclass
class RegionPrediction:
    """One captioned region. ``prompt`` is in image pixels (after clipping)."""

    prompt: dict
    caption: str
    iou_score: float
    mask: np.ndarray  # (H, W) bool, the original image frame

    @property
    def box(self) -> list[float]:
        """XYXY box of the mask; the prompt's box (or point) when the mask is empty."""
        return region_box(self.mask, self.prompt)

    def to_dict(self) -> dict:
        """JSON-ready: the mask as COCO RLE."""
        return {
            "prompt": self.prompt,
            "caption": self.caption,
            "iou_score": self.iou_score,
            "box": self.box,
            "mask": encode_mask(self.mask),
        }


def read_rgb_image(image) -> np.ndarray:
    """A path, PIL image or (H, W, 3) uint8 RGB array -> (H, W, 3) uint8 RGB array.

    Raises:
        ValueError: the file is missing or not a readable image, or the array has the wrong shape.
    """
    if isinstance(image, (str, Path)):
        try:
            return utils.read_image(str(image), format="RGB")
        except (OSError, ValueError, SyntaxError) as error:  # PIL raises these for missing / corrupt files
            raise ValueError(f"cannot read image '{image}': {type(error).__name__}: {error}") from error
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB array, got shape {array.shape} and dtype {array.dtype}")
    return array


def select_masks(logits: torch.Tensor, scores: torch.Tensor, settings: AnythingConfig) -> torch.Tensor:
    """The "anything" mode's filter: which of the grid's masks to caption.

    Keeps masks that are non-empty, confident (``scores >= pred_iou_thresh``) and stable (the IoU
    of the mask thresholded at ``+offset`` and at ``-offset`` reaches ``stability_score_thresh``),
    then removes duplicates by non-maximum suppression on the masks' boxes (torchvision).

    Args:
        logits: (N, m, m) mask logits, one mask per grid point.
        scores: (N,) SAM's predicted IoU of each mask.

    Returns:
        indices of the kept masks, by decreasing score, at most ``settings.max_regions``.
    """
    binary = logits > 0
    inner = (logits > settings.stability_offset).sum((1, 2))
    outer = (logits > -settings.stability_offset).sum((1, 2))
    stable = inner / outer.clamp(min=1)
    keep = (scores >= settings.pred_iou_thresh) & (stable >= settings.stability_score_thresh) & binary.flatten(1).any(1)
    index = torch.nonzero(keep).squeeze(1)
    if len(index) == 0:
        logger.warning(
            "anything mode: no mask passed the filters (IoU >= %s, stability >= %s)",
            settings.pred_iou_thresh,
            settings.stability_score_thresh,
        )
        return index
    kept = nms(masks_to_boxes(binary[index]).float(), scores[index].float(), settings.nms_iou)
    return index[kept[: settings.max_regions]]


_ANYTHING_FLAGS = {"points_per_side": int, "pred_iou_thresh": float, "stability_score_thresh": float, "max_regions": int}


def add_anything_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line flags for the anything mode's settings; unset, each keeps the model's (``model.anything``)."""
    for field_name, kind in _ANYTHING_FLAGS.items():
        flag = "--stability-thresh" if field_name == "stability_score_thresh" else "--" + field_name.replace("_", "-")
        parser.add_argument(flag, type=kind, dest=field_name, help="anything mode (default: the model's, model.anything)")


def anything_from_arguments(args: argparse.Namespace, defaults: AnythingConfig) -> AnythingConfig:
    """``defaults`` with the flags of :func:`add_anything_arguments` that were given."""
    given = {name: getattr(args, name) for name in _ANYTHING_FLAGS if getattr(args, name) is not None}
    return dataclasses.replace(defaults, **given)


def _point_regions(points, point_labels) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2) points (one positive point per region) or (N, P, 2) with (N, P) labels -> both 3-D / 2-D."""
    points = np.asarray([] if points is None else points, dtype=np.float32)
    points = points.reshape(-1, 1, 2) if points.ndim <= 2 else points
    if point_labels is None:
        return points, np.ones(points.shape[:2], dtype=np.int64)
    labels = np.asarray(point_labels, dtype=np.int64)
    if labels.shape != points.shape[:2] or not np.isin(labels, (0, 1)).all():
        raise ValueError(f"point_labels must be 0 (negative) or 1 (positive), one per point {points.shape[:2]}, got {labels.tolist()}")
    return points, labels


def _clip_prompts(boxes, points, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate prompts and clip them to the image, warning about each clipped one."""
    boxes = np.asarray([] if boxes is None else boxes, dtype=np.float32).reshape(-1, 4)
    for kind, prompts in (("boxes", boxes), ("points", points.reshape(-1, 2))):
        bad = ~np.isfinite(prompts).all(axis=1)
        if bad.any():
            raise ValueError(f"{kind} must be finite numbers, got {prompts[bad].tolist()}")
    if (boxes[:, 2:] < boxes[:, :2]).any():
        raise ValueError(f"boxes must be XYXY with x0 <= x1 and y0 <= y1, got {boxes.tolist()}")
    limits = np.array([width, height, width, height], dtype=np.float32)
    clipped_boxes = np.clip(boxes, 0, limits)
    clipped_points = np.clip(points, 0, limits[:2])
    for kind, given, clipped in (("box", boxes, clipped_boxes), ("point", points.reshape(-1, 2), clipped_points.reshape(-1, 2))):
        for before, after in zip(given, clipped):
            if not np.array_equal(before, after):
                logger.warning(
                    "%s %s lies outside the %dx%d image: clipped to %s", kind, before.tolist(), width, height, after.tolist()
                )
    empty = (clipped_boxes[:, 2] <= clipped_boxes[:, 0]) | (clipped_boxes[:, 3] <= clipped_boxes[:, 1])
    if empty.any():
        raise ValueError(f"boxes {boxes[empty].tolist()} have no area inside the {width}x{height} image")
    return clipped_boxes, clipped_points


class RegionCaptionPredictor:
    """Loads a trained captioner and captions the regions of single images.

    Args:
        cfg: the run's configuration (model, test mapper, generation settings, task type).
        weights: a detectron2 checkpoint or ``save_pretrained`` directory; empty keeps the weights
            ``cfg`` builds (random unless ``cfg.model.weights`` names some).
        device: "cpu", "cuda", ...; default: CUDA when available.
        model: an already built ``RegionCaptioner`` to use as it is (e.g. the model being trained,
            for evaluation during training); ``weights`` and ``device`` are then ignored and its
            train / eval mode is left to the caller.
    """

    def __init__(self, cfg: SCAConfig, weights: str = "", device: str | None = None, model=None):
        self.cfg = cfg
        if model is not None:
            self.model, self.device = model, model.device
        else:
            self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
            if weights and Path(weights).is_dir():
                cfg.model.weights = str(weights)  # a save_pretrained directory is read by build_model
            self.model = build_model(cfg).to(self.device)
            load_checkpoint(self.model, str(weights or cfg.model.weights))
            self.model.eval()
        self.augmentations = T.AugmentationList(build_augmentation(cfg.data.test_mapper, is_train=False))
        self.anything: AnythingConfig = cfg.model.anything  # the anything mode's default settings

    @classmethod
    def from_output_dir(
        cls, output_dir: str, weights: str = "", overrides: list[str] | None = None, device: str | None = None
    ) -> "RegionCaptionPredictor":
        """From a training run's directory: its ``config.yaml``, its fitted caption tokenizer if it
        has one and, unless ``weights`` is given, its last checkpoint. ``overrides`` are dotlist changes (e.g. ``["model.generation.num_beams=3"]``)."""
        config_path = os.path.join(output_dir, "config.yaml")
        if not os.path.isfile(config_path):
            raise FileNotFoundError(f"{output_dir} holds no config.yaml (is it a training output directory?)")
        cfg = load_saved_config(config_path, overrides)
        fitted_tokenizer = os.path.join(output_dir, FITTED_TOKENIZER_DIR)
        if os.path.isdir(fitted_tokenizer):  # the run's own vocabulary, wherever the directory is now
            cfg.model.tokenizer = fitted_tokenizer
        if not weights:
            last = os.path.join(output_dir, "last_checkpoint")
            name = Path(last).read_text().strip() if os.path.isfile(last) else "model_final.pth"
            weights = os.path.join(output_dir, name)
            if not os.path.isfile(weights):
                raise FileNotFoundError(f"{output_dir} holds no checkpoint ({name}); pass weights=...")
        return cls(cfg, weights, device)

    @classmethod
    def from_checkpoint(
        cls, directory: str, overrides: list[str] | None = None, device: str | None = None
    ) -> "RegionCaptionPredictor":
        """From a saved model alone: a released reference SCA checkpoint or a ``save_pretrained``
        directory. The matching preset of ``conf/model/`` is picked and the task type defaults to
        ``caption`` (the reference's default); ``overrides`` are Hydra overrides."""
        if is_reference_checkpoint(directory):
            architecture = reference_architecture(read_reference_config(directory))
        elif is_pretrained_dir(directory):
            architecture = saved_architecture(directory)
        else:
            raise FileNotFoundError(f"{directory} is neither a reference SCA checkpoint nor a save_pretrained directory")
        presets = matching_presets(architecture)
        if not presets:
            raise ValueError(f"{directory}: no preset in conf/model/ describes its architecture ({architecture.summary()})")
        cfg = load_config([f"model={presets[0]}", f"model.weights={directory}", "data.test_task_type=caption", *(overrides or [])])
        return cls(cfg, device=device)

    @property
    def captioner(self):
        return self.model.captioner

    def __call__(self, image, **prompts) -> list[RegionPrediction]:
        """Caption the prompted regions of ``image`` (a path, PIL image or (H, W, 3) uint8 RGB array),
        or everything when no prompt is given: :meth:`encode`, then :meth:`predict` with ``prompts``."""
        return self.predict(self.encode(image), **prompts)

    @torch.no_grad()
    def encode(self, image) -> EncodedImage:
        """Read ``image`` (as in :meth:`__call__`), bring it to the model frame and run SAM's image
        encoder (an image seen before comes from the captioner's image-embedding cache)."""
        image = read_rgb_image(image)
        height, width = image.shape[:2]
        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        pixels = torch.as_tensor(np.ascontiguousarray(aug_input.image.transpose(2, 0, 1)))[None].to(self.device)
        valid_box = torch.as_tensor(transforms.apply_box(np.array([[0, 0, width, height]], dtype=np.float32))[0])
        pixels = self.captioner.normalize(pixels, valid_box[None].to(self.device))
        embeddings = self.captioner.region_decoder.encode_images(pixels)
        return EncodedImage(image, transforms, pixels, embeddings, valid_box)

    @torch.no_grad()
    def predict(
        self,
        encoded: EncodedImage,
        boxes=None,
        points=None,
        point_labels=None,
        task_type: str | None = None,
        anything: AnythingConfig | None = None,
    ) -> list[RegionPrediction]:
        """Caption the prompted regions of an encoded image (its embeddings are reused), or
        everything when no prompt is given.

        Args:
            encoded: from :meth:`encode`.
            boxes: (N, 4) XYXY boxes in image pixels; one region each.
            points: (P, 2) XY points in image pixels, one region each (a positive point); or
                (N, P, 2), one region of P points each, labelled by ``point_labels``.
                With neither ``boxes`` nor ``points`` (both ``None``), the "anything" mode;
                given but both empty is an error.
            point_labels: (N, P) 1 (positive) or 0 (negative) for (N, P, 2) points; default all 1.
            task_type: one of the model's task types; default: the config's test task type.
            anything: settings of the "anything" mode; default: the model's (:attr:`anything`).

        Returns:
            list of :class:`RegionPrediction`: boxes first, then points, in the given order; in
            "anything" mode, by decreasing IoU score.

        Raises:
            ValueError: for an unreadable image, an unknown task type, prompts given but empty,
                a box or point that is not finite, or a box with no area inside the image.
        """
        height, width = encoded.image.shape[:2]
        task_type = task_type or self.cfg.data.test_task_type
        if task_type not in self.captioner.head_config.task_types:
            raise ValueError(f"task_type '{task_type}' is not one of {self.captioner.head_config.task_types}")
        anything_mode = boxes is None and points is None
        points, point_labels = _point_regions(points, point_labels)
        boxes, points = _clip_prompts(boxes, points, height, width)
        if not anything_mode and len(boxes) == 0 and len(points) == 0:
            raise ValueError("no prompt given (empty boxes / points); pass boxes=None and points=None for the anything mode")
        transforms, valid_box = encoded.transforms, encoded.valid_box
        if anything_mode:
            settings = anything or self.anything
            model_points = self._anything_points(encoded.embeddings, transforms, valid_box, height, width, settings)
            regions = self._regions(np.zeros((0, 4), np.float32), model_points)
        else:
            model_points = transforms.apply_coords(points.reshape(-1, 2).copy()).reshape(points.shape)
            regions = self._regions(transforms.apply_box(boxes), model_points, point_labels)
        return self._caption(encoded.pixels, encoded.embeddings, regions, task_type, valid_box, height, width)

    def _regions(self, boxes: np.ndarray, points: np.ndarray, point_labels: np.ndarray | None = None) -> dict:
        """Region prompt tensors (model frame) in the layout of ``collate_regions``; ``points`` is
        (N, 2), one positive point per region, or (N, P, 2) with ``point_labels`` (N, P)."""
        points = points[:, None] if points.ndim == 2 else points
        if point_labels is None:
            point_labels = np.ones(points.shape[:2], dtype=np.int64)
        num_boxes, num_points, per_region = len(boxes), len(points), points.shape[1]
        count, mask_size = num_boxes + num_points, self.captioner.region_decoder.mask_input_size
        all_boxes = np.concatenate([boxes, np.zeros((num_points, 4), np.float32)]).astype(np.float32)
        centres = np.repeat(((boxes[:, :2] + boxes[:, 2:]) / 2)[:, None], per_region, axis=1)
        all_points = np.concatenate([centres, points]).astype(np.float32)
        all_labels = np.concatenate([np.ones((num_boxes, per_region), np.int64), point_labels])
        regions = {
            "image_index": torch.zeros(count, dtype=torch.int64),
            "prompt_types": torch.tensor([PROMPT_TYPE_IDS["box"]] * num_boxes + [PROMPT_TYPE_IDS["point"]] * num_points),
            "boxes": torch.as_tensor(all_boxes).reshape(-1, 4),
            "points": torch.as_tensor(all_points).reshape(-1, per_region, 2),
            "point_labels": torch.as_tensor(all_labels).reshape(-1, per_region),
            "masks": torch.zeros((count, mask_size, mask_size), dtype=torch.bool),
        }
        return {key: value.to(self.device) for key, value in regions.items()}

    def _anything_points(
        self, embeddings, transforms, valid_box, height: int, width: int, settings: AnythingConfig
    ) -> np.ndarray:
        """Grid points (model frame) whose masks survive the IoU / stability filters and box NMS."""
        side = settings.points_per_side
        xs = (np.arange(side, dtype=np.float32) + 0.5) * width / side
        ys = (np.arange(side, dtype=np.float32) + 0.5) * height / side
        grid = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
        model_points = transforms.apply_coords(grid.copy())
        regions = self._regions(np.zeros((0, 4), np.float32), model_points)
        chunk = max(self.cfg.model.generation.region_chunk_size, 1)
        logits, scores = [], []
        for start in range(0, len(model_points), chunk):
            part = {key: value[start : start + chunk] for key, value in regions.items()}
            masks, ious, _ = self.captioner.encode_regions(embeddings, part)
            best = ious.argmax(dim=1)
            index = torch.arange(len(best), device=best.device)
            logits.append(masks[index, best].float())
            scores.append(ious[index, best].float())
        logits, scores = torch.cat(logits), torch.cat(scores)
        # Only the image content counts: the padding is outside the image.
        size = logits.shape[-1]
        scale = size / self.captioner.image_size
        content = torch.zeros((size, size), dtype=torch.bool, device=logits.device)
        content[: int(np.ceil(float(valid_box[3]) * scale)), : int(np.ceil(float(valid_box[2]) * scale))] = True
        kept = select_masks(logits.masked_fill(~content, float("-inf")), scores, settings)
        logger.info("anything mode: %d grid points, %d regions kept", len(grid), len(kept))
        return model_points[kept.cpu().numpy()]

    def _caption(
        self, pixels, embeddings, regions: dict, task_type: str, valid_box, height: int, width: int
    ) -> list[RegionPrediction]:
        if len(regions["prompt_types"]) == 0:
            return []
        generation = self.cfg.model.generation
        tokenizer = self.model.tokenizer
        task_ids = torch.full((len(regions["prompt_types"]),), self.captioner.task_type_id(task_type), device=self.device)
        result = self.captioner.generate(
            pixels,
            regions,
            task_ids,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            max_new_tokens=generation.max_new_tokens,
            num_beams=generation.num_beams,
            region_chunk_size=generation.region_chunk_size,
            image_embeddings=embeddings,
        )
        captions = tokenizer.decode(result.token_ids)
        masks = masks_to_image_frame(result.pred_masks, valid_box, height, width, self.captioner.image_size)
        prompts = prompts_to_image_frame(
            regions["prompt_types"], regions["boxes"], regions["points"], regions["point_labels"], valid_box, height, width
        )
        return [
            RegionPrediction(prompt=prompt, caption=caption, iou_score=float(score), mask=mask.numpy())
            for prompt, caption, score, mask in zip(prompts, captions, result.iou_scores.tolist(), masks)
        ]
