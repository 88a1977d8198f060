"""Model-frame outputs back to the original image frame: masks (SAM's post-processing) and prompts.

The model sees the image resized so that its longest side is the input size and padded at the
bottom and right (SAM's frame); ``valid_box`` is where the image content lies in that frame.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from transformers import SamImageProcessor

from sca.data.prompts import PROMPT_TYPES

__all__ = ["masks_to_image_frame", "prompts_to_image_frame", "mask_box", "region_box"]

MASK_CHUNK = 16  # regions upsampled together (each is input_size^2 floats on the way)


@lru_cache(maxsize=1)
def _sam_processor() -> SamImageProcessor:
    return SamImageProcessor()


def masks_to_image_frame(
    mask_logits: torch.Tensor, valid_box: torch.Tensor, height: int, width: int, input_size: int
) -> torch.Tensor:
    """Low-res mask logits in the model frame -> binary masks of the original image.

    Uses transformers' ``SamImageProcessor.post_process_masks`` (upsample to the padded input,
    crop the padding, resize to the image, threshold at 0).

    Args:
        mask_logits: (R, m, m) logits covering the whole padded input frame.
        valid_box: (4,) XYXY of the image content in the input frame; must start at (0, 0).
        height, width: size of the original image.
        input_size: side of the square input frame.

    Returns:
        (R, height, width) bool tensor on the CPU.
    """
    if float(valid_box[0]) != 0 or float(valid_box[1]) != 0:
        raise ValueError(f"image content must start at the top-left of the input frame, got valid_box {valid_box.tolist()}")
    reshaped = (int(round(float(valid_box[3]))), int(round(float(valid_box[2]))))
    pad_size = {"height": input_size, "width": input_size}
    chunks = [torch.zeros((0, height, width), dtype=torch.bool)]
    for start in range(0, len(mask_logits), MASK_CHUNK):
        logits = mask_logits[start : start + MASK_CHUNK, None].float().cpu()
        masks = _sam_processor().post_process_masks([logits], [(height, width)], [reshaped], pad_size=pad_size)[0]
        chunks.append(masks[:, 0])
    return torch.cat(chunks)


def prompts_to_image_frame(
    prompt_types: torch.Tensor,
    boxes: torch.Tensor,
    points: torch.Tensor,
    point_labels: torch.Tensor,
    valid_box: torch.Tensor,
    height: int,
    width: int,
) -> list[dict]:
    """Region prompts in the model frame -> JSON-ready dicts in original image pixels.

    Returns:
        one dict per region: ``{"type": "box", "box": [x0, y0, x1, y1]}``,
        ``{"type": "point", "points": [[x, y], ...], "labels": [1, ...]}`` or ``{"type": "mask"}``.
    """
    valid_box = valid_box.float().cpu()
    origin = valid_box[:2]
    scale = torch.tensor([width, height], dtype=torch.float32) / (valid_box[2:] - origin)
    image_boxes = ((boxes.float().cpu().view(-1, 2, 2) - origin) * scale).view(-1, 4)
    image_points = (points.float().cpu() - origin) * scale
    prompts = []
    for i, type_id in enumerate(prompt_types.tolist()):
        kind = PROMPT_TYPES[type_id]
        if kind == "box":
            prompts.append({"type": kind, "box": [round(v, 2) for v in image_boxes[i].tolist()]})
        elif kind == "point":
            xy = [[round(x, 2), round(y, 2)] for x, y in image_points[i].tolist()]
            prompts.append({"type": kind, "points": xy, "labels": point_labels[i].tolist()})
        else:
            prompts.append({"type": kind})
    return prompts


def mask_box(mask) -> list[float]:
    """XYXY box (pixel edges) of a binary (H, W) mask; zeros when it is empty."""
    ys, xs = np.nonzero(np.asarray(mask))
    return [0.0] * 4 if len(xs) == 0 else [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def region_box(mask, prompt: dict) -> list[float]:
    """The box to show for a predicted region: its mask's box, or, when the mask is empty, the box
    its prompt implies (the box prompt itself, or the points' bounding box). An empty mask from a
    mask prompt, which carries no coordinates, keeps the zero box of :func:`mask_box`."""
    if np.asarray(mask).any():
        return mask_box(mask)
    if prompt["type"] == "box":
        return [float(v) for v in prompt["box"]]
    if prompt["type"] == "point":
        xy = np.asarray(prompt["points"], dtype=np.float64).reshape(-1, 2)
        return [float(xy[:, 0].min()), float(xy[:, 1].min()), float(xy[:, 0].max()), float(xy[:, 1].max())]
    return mask_box(mask)
