#!/usr/bin/env python
"""Write registered datasets as region-caption tar shards that a streaming source reads.

    python tools/write_shards.py sca_demo_train sca_demo_refs_train out/demo_shards --shard-size 1000

Every record of every DATASET (in order) becomes one sample: the image file's bytes as they are
(``<key>.jpg`` / ``.png``) and ``<key>.json`` with the image (id, size, file name), the dataset,
its task type (``caption`` for referring datasets, else ``recognition``; ``--task-type`` forces
one) and its ground-truth regions — id, XYWH box, mask as COCO RLE (``null`` for box-only
sources), captions — as :func:`sca.data.record_regions.record_regions` finds them (panoptic
segments, instances, refs). OUT receives ``shard-000000.tar`` ... of ``--shard-size`` samples and
``shards.json`` (the shard list with sample counts), which a source names::

    data.sources.<name>.stream.shards: [out/demo_shards/shards.json]   # format: sca

Records whose image or annotations cannot be read are skipped, counted and reported at the end.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
from tqdm import tqdm

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import sca  # noqa: E402,F401  (detectron2 compatibility before detectron2 is imported)
import sca.data.datasets  # noqa: E402,F401  (registers the sources)
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402

from sca.data.record_regions import record_regions  # noqa: E402
from sca.data.streaming.shard_list import Shard, write_shard_list  # noqa: E402

logger = logging.getLogger("write_shards")


def region_entry(region) -> dict:
    x0, y0, x1, y1 = region.box
    segmentation = None
    if region.mask is not None:
        rle = mask_util.encode(np.asfortranarray(region.mask, dtype=np.uint8))
        segmentation = {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode()}
    return {"id": int(region.region_id), "bbox": [x0, y0, x1 - x0, y1 - y0], "segmentation": segmentation,
            "captions": list(region.captions)}


def sample_of(record: dict, metadata, dataset: str, task_type: str, key: str) -> dict:
    """The shard sample of one record (raises if its image or annotations cannot be read)."""
    path = Path(record["file_name"])
    ext = path.suffix.lower().lstrip(".")
    if ext not in ("jpg", "jpeg", "png"):
        raise ValueError(f"{path}: only JPEG and PNG images can be written")
    meta = {
        "image": {"image_id": record["image_id"], "width": record["width"], "height": record["height"], "file_name": path.name},
        "dataset": dataset,
        "task_type": task_type,
        "regions": [region_entry(r) for r in record_regions(record, metadata)],
    }
    return {"__key__": key, ext: path.read_bytes(), "json": json.dumps(meta).encode()}


def write_shards(datasets: list[str], out: Path, shard_size: int, task_type: str = "") -> tuple[list[Shard], int]:
    """Write the shards and ``shards.json``; returns the shards and the number of records skipped."""
    import webdataset as wds

    out.mkdir(parents=True, exist_ok=True)
    shards, skipped, writer, count = [], 0, None, 0

    def close():
        if writer is not None:
            writer.close()
            shards.append(Shard(str(out / f"shard-{len(shards):06d}.tar"), count))

    for dataset in datasets:
        records, metadata = DatasetCatalog.get(dataset), MetadataCatalog.get(dataset)
        kind = task_type or ("caption" if hasattr(metadata, "refs_file") else "recognition")
        for index in tqdm(range(len(records)), desc=f"writing {dataset}", unit="image"):
            record = records[index]
            try:
                sample = sample_of(record, metadata, dataset, kind, f"{dataset.replace('.', '_')}_{index:09d}")
            except (OSError, ValueError, KeyError) as error:
                skipped += 1
                logger.warning("%s: skipped %s (%s: %s)", dataset, record.get("file_name"), type(error).__name__, error)
                continue
            if writer is None or count == shard_size:
                close()
                writer, count = wds.TarWriter(str(out / f"shard-{len(shards):06d}.tar")), 0
            writer.write(sample)
            count += 1
    close()
    write_shard_list(str(out / "shards.json"), shards)
    return shards, skipped


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("datasets", nargs="+", metavar="DATASET", help="registered dataset names")
    parser.add_argument("out", type=Path, metavar="OUT", help="output folder")
    parser.add_argument("--shard-size", type=int, default=1000, help="samples per shard")
    parser.add_argument("--task-type", default="", help="task type of every sample (default: from the dataset)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.shard_size <= 0:
        parser.error("--shard-size must be positive")
    unknown = [d for d in args.datasets if d not in DatasetCatalog.list()]
    if unknown:
        parser.error(f"not registered: {unknown}")
    shards, skipped = write_shards(args.datasets, args.out, args.shard_size, args.task_type)
    print(f"wrote {sum(s.num_samples for s in shards)} samples in {len(shards)} shards to {args.out} "
          f"(list: {args.out / 'shards.json'}); skipped {skipped} records")
    return 0


if __name__ == "__main__":
    sys.exit(main())
