"""Load a registered split, and optionally its predictions, into a FiftyOne dataset; browse it in the App.

    python tools/export_fiftyone.py --dataset sca_demo_val --max-images 50 \\
        --predictions output/demo_mix-tiny/eval/sca_demo_val/predictions.json --launch

Each image becomes a sample with ``ground_truth`` detections (box, mask, label = first reference
caption, ``references``, ``region_id``) and, with ``--predictions``, ``predictions`` detections
(box and mask of the predicted mask, label = generated caption, confidence = SAM's IoU score,
``references``, ``region_id``, ``prompt_type``, ``mask_iou`` with the ground truth). The dataset is
persistent under ``--name`` (default: the split's name). ``--launch`` serves the App on
``--address`` (127.0.0.1) and ``--port`` until interrupted. Set ``FIFTYONE_DO_NOT_TRACK=true`` to
keep FiftyOne from sending usage statistics, ``FIFTYONE_DATABASE_DIR`` to choose its database.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")

import fiftyone as fo  # noqa: E402
import numpy as np  # noqa: E402
from pycocotools import mask as mask_util  # noqa: E402
from tqdm import tqdm  # noqa: E402

import sca  # noqa: E402,F401  (detectron2 compatibility first)
import sca.data.datasets  # noqa: E402,F401  (registers the sources)
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402

from sca.data.record_regions import record_regions  # noqa: E402
from sca.evaluation.caption_evaluator import load_predictions  # noqa: E402
from sca.modeling.postprocessing import region_box  # noqa: E402


def detection(box: list[float], mask: np.ndarray | None, height: int, width: int, **fields) -> fo.Detection:
    """A FiftyOne detection: relative [x, y, w, h] box and the mask cropped to the box."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    relative = [x0 / width, y0 / height, max(x1 - x0, 0) / width, max(y1 - y0, 0) / height]
    crop = None if mask is None or x1 <= x0 or y1 <= y0 else mask[y0:y1, x0:x1]
    return fo.Detection(bounding_box=relative, mask=crop, **fields)


def export_split(
    dataset_name: str, predictions_path: str = "", name: str = "", max_images: int = 0, overwrite: bool = False
) -> fo.Dataset:
    """Create (or with ``overwrite``, replace) the persistent FiftyOne dataset ``name``.

    Raises:
        ValueError: when a dataset of that name exists and ``overwrite`` is not set.
    """
    name = name or dataset_name
    if fo.dataset_exists(name) and not overwrite:
        raise ValueError(f"a FiftyOne dataset named '{name}' exists already: pass --overwrite to replace it, or --name")
    records = DatasetCatalog.get(dataset_name)
    metadata = MetadataCatalog.get(dataset_name)
    predictions = load_predictions(predictions_path) if predictions_path else {}
    if max_images > 0:
        records = records[:max_images]
    dataset = fo.Dataset(name, overwrite=overwrite, persistent=True)
    dataset.info = {"split": dataset_name, "predictions": os.path.abspath(predictions_path) if predictions_path else ""}
    samples = []
    for record in tqdm(records, desc=f"exporting {dataset_name}", unit="img"):
        height, width = record["height"], record["width"]
        ground_truth = [
            detection(r.box, r.mask, height, width, label=r.captions[0], references=r.captions, region_id=r.region_id)
            for r in record_regions(record, metadata)
        ]
        sample = fo.Sample(filepath=os.path.abspath(record["file_name"]), image_id=str(record["image_id"]))
        sample["ground_truth"] = fo.Detections(detections=ground_truth)
        if predictions_path:
            regions = predictions.get(record["image_id"], [])
            masks = [mask_util.decode(p["mask"]).astype(bool) for p in regions]
            sample["predictions"] = fo.Detections(
                detections=[
                    detection(
                        region_box(mask, p["prompt"]), mask, height, width,
                        label=p["caption"], confidence=p["iou_score"], references=p["references"],
                        region_id=p["region_id"], prompt_type=p["prompt"]["type"], mask_iou=p.get("mask_iou"),
                    )
                    for p, mask in zip(regions, masks)
                ]
            )
        samples.append(sample)
    dataset.add_samples(samples)
    dataset.save()
    return dataset


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="a registered split, e.g. sca_demo_val")
    parser.add_argument("--predictions", default="", help="predictions.json written by the evaluation")
    parser.add_argument("--name", default="", help="FiftyOne dataset name (default: the split's)")
    parser.add_argument("--max-images", type=int, default=0, help="0: every image")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset of that name")
    parser.add_argument("--launch", action="store_true", help="serve the FiftyOne App until interrupted")
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5151)
    args = parser.parse_args(argv)
    try:
        dataset = export_split(args.dataset, args.predictions, args.name, args.max_images, args.overwrite)
    except ValueError as error:
        parser.exit(2, f"error: {error}\n")
    print(dataset)
    if args.launch:
        session = fo.launch_app(dataset, address=args.address, port=args.port, remote=True)
        print(f"FiftyOne App: http://{args.address}:{args.port} (Ctrl-C to stop)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            session.wait(-1)  # serve until interrupted, however many browser tabs open and close


if __name__ == "__main__":
    main(sys.argv[1:])
