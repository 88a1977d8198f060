"""Collation of region samples into one per-source batch.

Regions of all images are concatenated (no truncation to the smallest count); ``image_index``
says which image each region belongs to, so the model encodes every image once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sca.data.skip_counts import merge_skipped

__all__ = ["collate_regions", "concat_batches", "fusable_groups"]


def collate_regions(samples: list[dict], pad_token_id: int) -> dict:
    """Stack images and concatenate regions; pad caption tokens (``attention_mask`` marks real ones).

    Returns:
        dict with ``images`` (B,3,S,S) uint8, ``valid_boxes`` (B,4), per-image lists ``image_ids``,
        ``file_names``, ``heights``, ``widths``, ``task_types``, and ``regions`` holding
        ``image_index`` (R,), the concatenated region tensors, ``captions`` (R lists of references),
        ``input_ids`` / ``attention_mask`` (R, L); and ``skipped``: the keys of what the mappers
        skipped since their previous sample, per kind (see :mod:`sca.data.skip_counts`).
    """
    regions = [s["regions"] for s in samples]
    token_lists = [ids for r in regions for ids in r["input_ids"]]
    length = max(len(ids) for ids in token_lists)
    input_ids = torch.full((len(token_lists), length), pad_token_id, dtype=torch.int64)
    attention_mask = torch.zeros((len(token_lists), length), dtype=torch.int64)
    for i, ids in enumerate(token_lists):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attention_mask[i, : len(ids)] = 1
    tensor_keys = ("region_ids", "category_ids", "boxes", "prompt_types", "points", "point_labels", "masks")
    return {
        "images": torch.stack([s["image"] for s in samples]),
        "valid_boxes": torch.stack([s["valid_box"] for s in samples]),
        "image_ids": [s["image_id"] for s in samples],
        "file_names": [s["file_name"] for s in samples],
        "heights": [s["height"] for s in samples],
        "widths": [s["width"] for s in samples],
        "task_types": [s["task_type"] for s in samples],
        "skipped": merge_skipped(samples),
        "regions": {
            "image_index": torch.cat([torch.full((len(r["boxes"]),), i, dtype=torch.int64) for i, r in enumerate(regions)]),
            **{key: torch.cat([r[key] for r in regions]) for key in tensor_keys},
            "captions": [refs for r in regions for refs in r["captions"]],
            "input_ids": input_ids,
            "attention_mask": attention_mask,
        },
    }


MODEL_REGION_KEYS = ("prompt_types", "boxes", "points", "point_labels", "masks")


def fusable_groups(batches: dict[str, dict]) -> list[list[str]]:
    """Sources whose batches :func:`concat_batches` can join: same image size, points per prompt
    and mask size (box-only sources carry no masks)."""
    groups: dict[tuple, list[str]] = {}
    for name, batch in batches.items():
        regions = batch["regions"]
        key = (tuple(batch["images"].shape[1:]), regions["points"].shape[1], tuple(regions["masks"].shape[1:]))
        groups.setdefault(key, []).append(name)
    return list(groups.values())


def concat_batches(batches: list[dict], pad_token_id: int) -> dict:
    """Join per-source batches into one model batch (images, prompts, caption tokens re-padded);
    ``regions["batch_index"]`` says which batch each region came from."""
    regions = [b["regions"] for b in batches]
    length = max(r["input_ids"].shape[1] for r in regions)
    offsets = torch.tensor([0] + [len(b["images"]) for b in batches]).cumsum(0)
    return {
        "images": torch.cat([b["images"] for b in batches]),
        "valid_boxes": torch.cat([b["valid_boxes"] for b in batches]),
        "task_types": [t for b in batches for t in b["task_types"]],
        "regions": {
            "image_index": torch.cat([r["image_index"] + offsets[i] for i, r in enumerate(regions)]),
            "batch_index": torch.cat([torch.full((len(r["image_index"]),), i, dtype=torch.int64) for i, r in enumerate(regions)]),
            **{key: torch.cat([r[key] for r in regions]) for key in MODEL_REGION_KEYS},
            "input_ids": torch.cat([F.pad(r["input_ids"], (0, length - r["input_ids"].shape[1]), value=pad_token_id) for r in regions]),
            "attention_mask": torch.cat([F.pad(r["attention_mask"], (0, length - r["attention_mask"].shape[1])) for r in regions]),
        },
    }
