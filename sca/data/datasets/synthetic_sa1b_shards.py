"""Synthetic SA-1B shards in the exact on-disk format of the release, with a caption side table.

For tests and ``tools/benchmark_streaming.py`` only (no SA-1B data can be downloaded here). Each
tar ``sa_<shard:06d>.tar`` holds per image ``sa_<id>.jpg`` and ``sa_<id>.json`` =
``{"image": {image_id, width, height, file_name}, "annotations": [{id, segmentation (compressed
COCO RLE), bbox (XYWH), area, predicted_iou, point_coords, stability_score, crop_box}]}``. Images
show a few filled rectangles and ellipses on a grey background; their masks are exact, and each
annotation's pseudo-caption ("<colour> <shape>") goes to the side table (JSON Lines or Parquet).
Deterministic for a given seed; tiny images keep 100k samples cheap to write.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_util
import webdataset as wds
from PIL import Image
from tqdm import tqdm

__all__ = ["COLORS", "sa1b_sample", "write_sa1b_shards", "write_caption_table"]

COLORS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 60, 220), "yellow": (230, 220, 40)}
SHAPES = ("rectangle", "ellipse")


def sa1b_sample(rng: np.random.Generator, image_id: int, first_annotation_id: int, size: tuple[int, int] = (48, 64),
                max_masks: int = 4) -> tuple[dict, list[dict]]:
    """One SA-1B sample (``{"__key__", "jpg", "json"}``) and its caption rows."""
    height, width = size
    image = np.full((height, width, 3), 128, np.uint8)
    annotations, captions = [], []
    for index in range(int(rng.integers(1, max_masks + 1))):
        color, shape = list(COLORS)[int(rng.integers(len(COLORS)))], SHAPES[int(rng.integers(len(SHAPES)))]
        x0, y0 = int(rng.integers(0, width - 8)), int(rng.integers(0, height - 8))
        x1, y1 = int(rng.integers(x0 + 6, width)), int(rng.integers(y0 + 6, height))
        mask = np.zeros((height, width), np.uint8)
        if shape == "rectangle":
            mask[y0:y1, x0:x1] = 1
        else:
            cv2.ellipse(mask, ((x0 + x1) // 2, (y0 + y1) // 2), ((x1 - x0) // 2, (y1 - y0) // 2), 0, 0, 360, 1, -1)
        image[mask.astype(bool)] = COLORS[color]
        rle = mask_util.encode(np.asfortranarray(mask))
        ys, xs = np.nonzero(mask)
        annotation_id = first_annotation_id + index
        annotations.append({
            "id": annotation_id,
            "segmentation": {"size": [height, width], "counts": rle["counts"].decode()},
            "bbox": [float(v) for v in mask_util.toBbox(rle)],
            "area": int(mask.sum()),
            "predicted_iou": float(rng.uniform(0.8, 1.0)),
            "point_coords": [[float(xs[len(xs) // 2]), float(ys[len(ys) // 2])]],
            "stability_score": float(rng.uniform(0.85, 1.0)),
            "crop_box": [0.0, 0.0, float(width), float(height)],
        })
        captions.append({"image_id": image_id, "annotation_id": annotation_id, "caption": f"{color} {shape}"})
    jpeg = io.BytesIO()
    Image.fromarray(image).save(jpeg, format="JPEG", quality=90)
    meta = {"image": {"image_id": image_id, "width": width, "height": height, "file_name": f"sa_{image_id}.jpg"},
            "annotations": annotations}
    return {"__key__": f"sa_{image_id}", "jpg": jpeg.getvalue(), "json": json.dumps(meta).encode()}, captions


def write_sa1b_shards(root: str | Path, shard_sizes: list[int], *, seed: int = 0, size: tuple[int, int] = (48, 64),
                      max_masks: int = 4) -> tuple[list[Path], list[dict]]:
    """Write ``sa_000000.tar`` ... with ``shard_sizes[i]`` images in shard ``i``.

    Returns:
        the shard paths and the caption rows of every annotation (for :func:`write_caption_table`).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths, captions, image_id, annotation_id = [], [], 1, 1
    progress = tqdm(total=sum(shard_sizes), desc="writing SA-1B shards", unit="image", disable=sum(shard_sizes) < 5000)
    for shard, count in enumerate(shard_sizes):
        path = root / f"sa_{shard:06d}.tar"
        with wds.TarWriter(str(path)) as writer:
            for _ in range(count):
                sample, rows = sa1b_sample(rng, image_id, annotation_id, size, max_masks)
                writer.write(sample)
                captions += rows
                image_id += 1
                annotation_id += len(rows)
                progress.update()
        paths.append(path)
    progress.close()
    return paths, captions


def write_caption_table(path: str | Path, rows: list[dict]) -> Path:
    """Write caption rows as JSON Lines (``.jsonl``) or Parquet (``.parquet``)."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path
