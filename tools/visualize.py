"""Render a registered split's ground-truth regions, and optionally predictions, to PNG files.

    python tools/visualize.py --dataset sca_demo_val --output vis/ --max-images 8
    python tools/visualize.py --dataset sca_demo_val --output vis/ \\
        --predictions output/demo_mix-tiny/eval/sca_demo_val/predictions.json

One PNG per image (``<image_id>.png``): the ground truth (masks, boxes, reference captions), and
with ``--predictions`` the predictions next to it (masks, prompt boxes, "caption (IoU score)").
With ``--predictions``, only the images that have predictions are rendered.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

import sca  # noqa: F401  (detectron2 compatibility first)
import sca.data.datasets  # noqa: F401  (registers the sources)
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import detection_utils as utils
from pycocotools import mask as mask_util

from sca.data.record_regions import record_regions
from sca.evaluation.caption_evaluator import load_predictions
from sca.modeling.postprocessing import region_box
from sca.visualizer import draw_regions


def render_ground_truth(image: np.ndarray, record: dict, metadata) -> np.ndarray:
    regions = record_regions(record, metadata)
    return draw_regions(image, [r.box for r in regions], [r.captions[0] for r in regions], [r.mask for r in regions], metadata)


def render_predictions(image: np.ndarray, predictions: list[dict], metadata) -> np.ndarray:
    """Predicted masks with the prompt box (box prompts) or the mask's box (the prompt's points when
    the mask is empty), labelled "caption (IoU)"."""
    masks = [mask_util.decode(p["mask"]).astype(bool) for p in predictions]
    boxes = [p["prompt"]["box"] if p["prompt"]["type"] == "box" else region_box(m, p["prompt"]) for p, m in zip(predictions, masks)]
    labels = [f"{p['caption']} ({p['iou_score']:.2f})" for p in predictions]
    return draw_regions(image, boxes, labels, masks, metadata)


def side_by_side(panels: list[np.ndarray]) -> np.ndarray:
    height = max(p.shape[0] for p in panels)
    padded = [np.pad(p, ((0, height - p.shape[0]), (0, 0), (0, 0)), constant_values=255) for p in panels]
    return np.concatenate(padded, axis=1)


def visualize(dataset: str, output: str, predictions_path: str = "", max_images: int = 0) -> list[str]:
    """Write one PNG per image; returns their paths."""
    records = DatasetCatalog.get(dataset)
    metadata = MetadataCatalog.get(dataset)
    predictions = load_predictions(predictions_path) if predictions_path else None
    if predictions is not None:
        records = [r for r in records if r["image_id"] in predictions]
        if not records:
            raise ValueError(f"{predictions_path} has no predictions for the images of {dataset}")
    if max_images > 0:
        records = records[:max_images]
    os.makedirs(output, exist_ok=True)
    written = []
    for record in tqdm(records, desc=f"rendering {dataset}", unit="img"):
        image = utils.read_image(record["file_name"], format="RGB")
        panels = [render_ground_truth(image, record, metadata)]
        if predictions is not None:
            panels.append(render_predictions(image, predictions[record["image_id"]], metadata))
        path = os.path.join(output, f"{Path(str(record['image_id'])).name}.png")
        Image.fromarray(side_by_side(panels)).save(path)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="a registered split, e.g. sca_demo_val")
    parser.add_argument("--output", required=True, help="folder for the PNG files")
    parser.add_argument("--predictions", default="", help="predictions.json written by the evaluation")
    parser.add_argument("--max-images", type=int, default=16, help="0: every image")
    args = parser.parse_args(argv)
    written = visualize(args.dataset, args.output, args.predictions, args.max_images)
    print(f"wrote {len(written)} images to {args.output}")


if __name__ == "__main__":
    main(sys.argv[1:])
