"""Inputs and timing helpers for the ``tools/benchmark_*`` scripts (random data, not a data source)."""

from __future__ import annotations

import torch

__all__ = ["random_box_inputs", "synchronize"]


def random_box_inputs(captioner, num_images: int, regions_per_image: int, device: torch.device, seed: int = 0):
    """``num_images`` random images (normalized pixels) with ``regions_per_image`` random box prompts
    each, in the layout of :func:`sca.data.region_batch.collate_regions`; a function of ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    size = captioner.image_size
    images = torch.randint(0, 256, (num_images, 3, size, size), generator=generator, dtype=torch.uint8)
    valid = torch.tensor([[0, 0, size, size]], dtype=torch.float32).expand(num_images, 4)
    count = num_images * regions_per_image
    xy = torch.rand(count, 2, generator=generator) * size * 0.6
    wh = size * (0.1 + torch.rand(count, 2, generator=generator) * 0.3)
    mask_size = captioner.region_decoder.mask_input_size
    regions = {
        "image_index": torch.arange(num_images).repeat_interleave(regions_per_image),
        "prompt_types": torch.zeros(count, dtype=torch.int64),  # boxes
        "boxes": torch.cat([xy, xy + wh], dim=1),
        "points": (xy + wh / 2)[:, None],
        "point_labels": torch.ones(count, 1, dtype=torch.int64),
        "masks": torch.zeros(count, mask_size, mask_size, dtype=torch.bool),
    }
    pixels = captioner.normalize(images.to(device), valid.to(device))
    return pixels, {k: v.to(device) for k, v in regions.items()}


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work, so that a timer reads the work's end (nothing on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
