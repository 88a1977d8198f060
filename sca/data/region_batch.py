"""Collation of region samples into one per-source batch.

Regions of all images are concatenated (no truncation to the smallest count); ``image_index``
says which image each region belongs to, so the model encodes every image once.
"""

from __future__ import annotations

import torch

from sca.data.skip_counts import merge_skipped

__all__ = ["collate_regions"]


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
