"""What the demo page does, without the page: load the captioner, read uploads, keep one visitor's
image and prompts, and turn the predictor's regions into rows, overlays and ``predictions.json``.

The image is encoded once per upload (:meth:`DemoSession.start` keeps the predictor's
:class:`~sca.predictor.EncodedImage`; an image uploaded again comes from the captioner's
image-embedding cache); every click or box only runs SAM's decoder, the caption mixer and the
language model on it.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from sca.config import SCAConfig
from sca.evaluation.caption_evaluator import encode_mask
from sca.predictor import AnythingConfig, EncodedImage, RegionCaptionPredictor, RegionPrediction

__all__ = ["DemoSession", "UploadError", "checkpoint_problem", "load_predictor", "read_upload"]

logger = logging.getLogger(__name__)


class UploadError(ValueError):
    """An upload the page cannot use; the message says why, for the visitor."""


def read_upload(path: str | Path, max_side: int, max_megapixels: float) -> tuple[np.ndarray, str]:
    """An uploaded file -> (H, W, 3) uint8 RGB, at most ``max_side`` pixels on its longest side.

    Returns:
        the image and a notice ("" when the image is used as it is; else what was done to it).

    Raises:
        UploadError: not an image, or more than ``max_megapixels`` (decoding it would exhaust memory).
    """
    name = Path(path).name
    with warnings.catch_warnings():  # PIL's size warning: the page applies its own limit below
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(path)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:  # non-images, corrupt files
            raise UploadError(f"'{name}' is not an image that can be read ({type(error).__name__}: {error})") from error
        width, height = image.size
        if width * height > max_megapixels * 1e6:
            raise UploadError(
                f"'{name}' is {width}×{height} ({width * height / 1e6:.0f} megapixels); "
                f"the page accepts up to {max_megapixels:g} megapixels"
            )
        try:
            image.draft("RGB", (max_side, max_side))  # JPEG: decode at a reduced scale directly
            image = image.convert("RGB")
        except (OSError, ValueError, SyntaxError) as error:
            raise UploadError(f"'{name}' cannot be decoded ({type(error).__name__}: {error})") from error
    notice = ""
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    if image.size != (width, height):
        notice = (
            f"The image ({width}×{height}) was resized to {image.width}×{image.height} "
            f"(longest side at most {max_side} pixels); prompts and masks refer to the resized image."
        )
    return np.asarray(image), notice


def checkpoint_problem(model: torch.nn.Module, weights: str) -> str:
    """Why a detectron2 checkpoint does not fit ``model`` ("" when every parameter matches).

    detectron2's ``Checkpointer`` only logs missing and mismatched parameters and keeps their
    random values, which would give a page that looks fine and captions nonsense.
    """
    if not weights or not Path(weights).is_file():
        return ""
    saved = torch.load(weights, map_location="cpu", weights_only=False, mmap=True)
    saved = saved.get("model", saved) if isinstance(saved, dict) else {}
    expected = model.state_dict()
    missing = [key for key in expected if key not in saved]
    mismatched = [key for key in expected if key in saved and tuple(saved[key].shape) != tuple(expected[key].shape)]
    if not missing and not mismatched:
        return ""
    examples = ", ".join((mismatched + missing)[:3])
    return (
        f"the checkpoint {weights} does not fit this model: {len(missing)} of {len(expected)} parameters missing, "
        f"{len(mismatched)} with other shapes (e.g. {examples}). Was it trained with another model= preset?"
    )


def load_predictor(cfg: SCAConfig, device: str | None = None) -> tuple[RegionCaptionPredictor | None, str]:
    """The predictor for ``cfg`` (``cfg.model.weights`` names the checkpoint) and a notice for the page.

    Returns:
        ``(predictor, notice)``; ``(None, reason)`` when the checkpoint is missing, unreadable or
        does not fit the configured model. Random weights (no checkpoint) load with a warning notice.
    """
    weights = cfg.model.weights
    try:
        predictor = RegionCaptionPredictor(cfg, weights, device)
        problem = checkpoint_problem(predictor.model, weights)
    except Exception as error:  # noqa: BLE001 — every load failure becomes the page's message
        return None, f"Cannot load the captioner (model={cfg.model.name}, model.weights={weights or '(none)'}): {error}"
    if problem:
        return None, f"Cannot use the checkpoint: {problem}"
    if not weights:
        return predictor, f"No checkpoint given (model.weights is empty): model={cfg.model.name} has random weights, so its captions are noise."
    return predictor, ""


@dataclass
class DemoSession:
    """One visitor's image and prompts: boxes (one region each) and clicked points (one region)."""

    name: str
    encoded: EncodedImage
    encode_seconds: float
    boxes: list[list[float]] = field(default_factory=list)
    points: list[list[float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)  # 1 positive, 0 negative, one per point
    regions: list[RegionPrediction] = field(default_factory=list)
    seconds: float = 0.0  # the last prediction's time

    @classmethod
    def start(cls, predictor: RegionCaptionPredictor, image: np.ndarray, name: str) -> "DemoSession":
        """Encode ``image`` once for all the prompts to come."""
        begin = time.perf_counter()
        encoded = predictor.encode(image)
        return cls(name=name, encoded=encoded, encode_seconds=time.perf_counter() - begin)

    @property
    def image(self) -> np.ndarray:
        return self.encoded.image

    def outside(self, xs: list[float], ys: list[float]) -> bool:
        height, width = self.image.shape[:2]
        return any(not 0 <= x <= width for x in xs) or any(not 0 <= y <= height for y in ys)

    def predict_prompts(self, predictor: RegionCaptionPredictor, task_type: str | None = None) -> list[str]:
        """Caption the current prompts; returns notices (prompts clipped to the image)."""
        notices = []
        if any(self.outside(box[0::2], box[1::2]) for box in self.boxes):
            notices.append("A box reaches outside the image: it was clipped to the image.")
        if self.points and self.outside([p[0] for p in self.points], [p[1] for p in self.points]):
            notices.append("A point lies outside the image: it was moved to the image border.")
        if not self.boxes and not self.points:  # no prompt is not the "anything" mode here
            self.regions, self.seconds = [], 0.0
            return notices
        points = [self.points] if self.points else None
        labels = [self.labels] if self.points else None
        begin = time.perf_counter()
        self.regions = predictor.predict(
            self.encoded, boxes=self.boxes or None, points=points, point_labels=labels, task_type=task_type
        )
        self.seconds = time.perf_counter() - begin
        return notices

    def predict_everything(self, predictor: RegionCaptionPredictor, settings: AnythingConfig, task_type: str | None = None) -> None:
        """The "anything" mode; the prompts are cleared."""
        self.clear()
        begin = time.perf_counter()
        self.regions = predictor.predict(self.encoded, task_type=task_type, anything=settings)
        self.seconds = time.perf_counter() - begin

    def clear(self) -> None:
        self.boxes, self.points, self.labels, self.regions = [], [], [], []

    def rows(self) -> list[list]:
        """The region table: index, caption, IoU score, mask box."""
        return [
            [i + 1, region.caption, round(region.iou_score, 3), ", ".join(f"{v:.0f}" for v in region.box)]
            for i, region in enumerate(self.regions)
        ]

    def overlays(self) -> list[tuple[np.ndarray, str]]:
        """``gr.AnnotatedImage`` layers: each region's mask with "index: caption (score)"."""
        return [(region.mask.astype(np.float32), f"{i + 1}: {region.caption} ({region.iou_score:.2f})") for i, region in enumerate(self.regions)]

    def predictions(self, task_type: str) -> list[dict]:
        """The regions in the ``predictions.json`` schema of evaluation (no references here)."""
        return [
            {
                "image_id": self.name,
                "region_id": i,
                "source": "demo_app",
                "task_type": task_type,
                "category_id": None,
                "prompt": region.prompt,
                "caption": region.caption,
                "references": [],
                "iou_score": region.iou_score,
                "box": region.box,
                "mask": encode_mask(region.mask),
                "mask_iou": None,
            }
            for i, region in enumerate(self.regions)
        ]

    def marked_image(self) -> np.ndarray:
        """The image with the prompts drawn: positive points green, negative red, boxes blue."""
        image = Image.fromarray(self.image)
        draw = ImageDraw.Draw(image)
        size = max(2, round(max(image.size) / 80))
        for box in self.boxes:
            draw.rectangle(box, outline=(40, 120, 255), width=max(1, size // 2))
        for (x, y), label in zip(self.points, self.labels):
            colour = (0, 200, 80) if label else (230, 40, 40)
            draw.ellipse([x - size, y - size, x + size, y + size], fill=colour, outline=(255, 255, 255))
        return np.asarray(image)
