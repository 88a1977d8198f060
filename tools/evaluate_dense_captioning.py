"""Dense-captioning mAP (Visual Genome protocol) of a trained captioner, without ground-truth prompts.

    python tools/evaluate_dense_captioning.py output/demo_mix-tiny --dataset sca_demo_val --max-images 50

Every image of the split is captioned in the predictor's "anything" mode (a grid of point prompts,
filtered and de-duplicated masks); each predicted region is the box of its mask, its caption and
SAM's IoU score as confidence. They are scored against the split's ground-truth regions (a region
with several reference captions counts once, with all of them) by
:func:`sca.evaluation.dense_captioning.dense_captioning_map`: AP averaged over box-IoU thresholds
0.3-0.7 and METEOR thresholds 0-0.25. Prints ``mAP`` and ``detection_mAP``; ``--output`` writes
the full breakdown as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
from tqdm import tqdm

import sca  # noqa: F401  (detectron2 compatibility first)
import sca.data.datasets  # noqa: F401  (registers the sources)
from detectron2.data import DatasetCatalog, MetadataCatalog

from sca.data.record_regions import record_regions
from sca.evaluation.dense_captioning import ImageRegions, dense_captioning_map
from sca.predictor import AnythingConfig, RegionCaptionPredictor


def ground_truth(record: dict, metadata) -> ImageRegions:
    """One box per reference caption: identical boxes merge back into one region with all its references."""
    pairs = [(region.box, caption) for region in record_regions(record, metadata) for caption in region.captions]
    return ImageRegions(np.array([box for box, _ in pairs], dtype=np.float64).reshape(-1, 4), [c for _, c in pairs])


def evaluate(
    predictor: RegionCaptionPredictor,
    dataset: str,
    max_images: int = 0,
    anything: AnythingConfig | None = None,
    task_type: str | None = None,
) -> dict:
    """Caption every image in "anything" mode and score the regions against the split's ground truth."""
    records = DatasetCatalog.get(dataset)
    metadata = MetadataCatalog.get(dataset)
    if max_images > 0:
        records = records[:max_images]
    predictions, truths = [], []
    for record in tqdm(records, desc=f"captioning {dataset}", unit="img"):
        regions = predictor(record["file_name"], task_type=task_type, anything=anything)
        boxes = np.array([r.box for r in regions], dtype=np.float64).reshape(-1, 4)
        predictions.append(ImageRegions(boxes, [r.caption for r in regions], np.array([r.iou_score for r in regions])))
        truths.append(ground_truth(record, metadata))
    return dense_captioning_map(predictions, truths, progress=True)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", help="training output directory (config.yaml + checkpoint)")
    parser.add_argument("--dataset", required=True, help="a registered split")
    parser.add_argument("--weights", default="", help="checkpoint to use instead of the directory's last one")
    parser.add_argument("--max-images", type=int, default=0, help="0: every image")
    parser.add_argument("--task-type", default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--points-per-side", type=int, default=AnythingConfig.points_per_side)
    parser.add_argument("--pred-iou-thresh", type=float, default=AnythingConfig.pred_iou_thresh)
    parser.add_argument("--stability-thresh", type=float, default=AnythingConfig.stability_score_thresh)
    parser.add_argument("--max-regions", type=int, default=AnythingConfig.max_regions)
    parser.add_argument("--output", default="", help="write the results (AP breakdown included) to this JSON file")
    args = parser.parse_args(argv)
    predictor = RegionCaptionPredictor.from_output_dir(args.model_dir, args.weights, device=args.device)
    anything = AnythingConfig(
        points_per_side=args.points_per_side,
        pred_iou_thresh=args.pred_iou_thresh,
        stability_score_thresh=args.stability_thresh,
        max_regions=args.max_regions,
    )
    results = evaluate(predictor, args.dataset, args.max_images, anything, args.task_type)
    print(f"{args.dataset}: mAP {results['mAP']:.2f}  detection mAP {results['detection_mAP']:.2f}  "
          f"({results['num_predictions']} predictions, {results['num_ground_truth']} ground-truth regions)")
    if args.output:
        with open(args.output, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
