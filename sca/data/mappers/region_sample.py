"""The region sample a mapper returns (design §2): which regions an image contributes, and the
sample assembled from its image and regions. Shared by every region mapper."""

from __future__ import annotations

import numpy as np
import torch

from sca.config import MapperConfig
from sca.data.caption_tokenizer import CaptionTokenizer
from sca.data.prompts import sample_prompt_types

__all__ = ["sample_regions", "assemble_region_sample"]


def sample_regions(rng: np.random.Generator, candidates: np.ndarray, max_regions: int, is_train: bool) -> np.ndarray:
    """In training, up to ``max_regions`` of ``candidates`` without replacement, in random order;
    in evaluation, all of them in order."""
    return rng.permutation(candidates)[:max_regions] if is_train else candidates


def assemble_region_sample(
    dataset_dict: dict,
    image: np.ndarray,
    valid_box: np.ndarray,
    regions: list[dict],
    *,
    cfg: MapperConfig,
    tokenizer: CaptionTokenizer,
    source: str,
    task_type: str,
    is_train: bool,
    rng: np.random.Generator,
    with_masks: bool = True,
) -> dict:
    """Tensors of one image and its regions; one caption per region is tokenized (drawn at random
    among its references in training, the first one otherwise), then a prompt type per region is
    drawn from ``cfg.prompt.weights``.

    Args:
        dataset_dict: the record (``image_id``, ``file_name``, ``height``, ``width``).
        image: (S, S, 3) uint8, the augmented image in the model's input frame.
        valid_box: XYXY extent of the image content inside the padded frame.
        regions: dicts with ``id``, ``category_id``, ``box`` (XYXY), ``points`` (P, 2),
            ``mask`` (m, m) bool (absent when ``with_masks`` is False) and ``captions`` (list of
            reference strings).
        with_masks: False for sources without masks (boxes only): ``masks`` is then (R, 0, 0).
    """
    captions = [list(r["captions"]) for r in regions]
    chosen = [refs[rng.integers(len(refs))] if is_train else refs[0] for refs in captions]
    num_points = cfg.prompt.num_points
    mask_size = cfg.mask_size if with_masks else 0
    masks = np.zeros((len(regions), mask_size, mask_size), bool)
    if with_masks and regions:
        masks = np.array([r["mask"] for r in regions], dtype=bool)
    return {
        "image": torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))),
        "image_id": dataset_dict["image_id"],
        "file_name": dataset_dict["file_name"],
        "height": dataset_dict["height"],
        "width": dataset_dict["width"],
        "valid_box": torch.as_tensor(valid_box, dtype=torch.float32),
        "source": source,
        "task_type": task_type,
        "regions": {
            "region_ids": torch.tensor([r["id"] for r in regions], dtype=torch.int64),
            "category_ids": torch.tensor([r["category_id"] for r in regions], dtype=torch.int64),
            "boxes": torch.tensor(np.array([r["box"] for r in regions]), dtype=torch.float32).reshape(-1, 4),
            "prompt_types": torch.as_tensor(sample_prompt_types(rng, cfg.prompt.weights, len(regions))),
            "points": torch.tensor(np.array([r["points"] for r in regions], dtype=np.float32)).reshape(-1, num_points, 2),
            "point_labels": torch.ones((len(regions), num_points), dtype=torch.int64),
            "masks": torch.from_numpy(masks),
            "captions": captions,
            "input_ids": tokenizer.encode(chosen) if chosen else [],
        },
    }
