"""Dense-captioning mAP (Visual Genome protocol) of a trained captioner, without ground-truth prompts.

    python tools/evaluate_dense_captioning.py output/vg_densecap-tiny --dataset sca_vg_densecap_test --max-images 50

A thin wrapper around the ``densecap`` evaluation protocol that training runs use
(:mod:`sca.evaluation.dense_captioning_evaluator`): every image of the split is captioned in the
predictor's "anything" mode (a grid of point prompts, filtered and de-duplicated masks); each
predicted region is the box of its mask, its caption and SAM's IoU score as confidence, scored
against the split's ground-truth regions by
:func:`sca.evaluation.dense_captioning.dense_captioning_map`: AP averaged over box-IoU thresholds
0.3-0.7 and METEOR thresholds 0-0.25. Prints ``mAP``, ``detection_mAP`` and the anything mode's
recall of the ground-truth masks (mask IoU >= 0.5); ``--output`` writes the full breakdown as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys

import sca  # noqa: F401  (detectron2 compatibility first)
import sca.data.datasets  # noqa: F401  (registers the sources)
from detectron2.evaluation import inference_on_dataset

from sca.evaluation.dense_captioning import CONVENTIONS
from sca.evaluation.dense_captioning_evaluator import AnythingModeCaptioner, DenseCaptioningEvaluator, build_dense_captioning_loader
from sca.predictor import AnythingConfig, RegionCaptionPredictor, add_anything_arguments, anything_from_arguments


def evaluate(
    predictor: RegionCaptionPredictor,
    dataset: str,
    max_images: int = 0,
    anything: AnythingConfig | None = None,
    task_type: str | None = None,
    conventions: str = "sca",
) -> dict:
    """Caption every image in "anything" mode and score the regions against the split's ground truth."""
    loader = build_dense_captioning_loader(dataset, max_images)
    evaluator = DenseCaptioningEvaluator(
        dataset, conventions=conventions, normalization=predictor.cfg.data.test_mapper.caption_normalization
    )
    inference_on_dataset(AnythingModeCaptioner(predictor, anything or predictor.anything, task_type), loader, evaluator)
    return evaluator.report


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", help="training output directory (config.yaml + checkpoint)")
    parser.add_argument("--dataset", required=True, help="a registered split")
    parser.add_argument("--weights", default="", help="checkpoint to use instead of the directory's last one")
    parser.add_argument("--max-images", type=int, default=0, help="0: every image")
    parser.add_argument("--task-type", default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--conventions", choices=CONVENTIONS, default="sca", help="IoU and recall-level conventions")
    add_anything_arguments(parser)
    parser.add_argument("--output", default="", help="write the results (AP breakdown included) to this JSON file")
    args = parser.parse_args(argv)
    predictor = RegionCaptionPredictor.from_output_dir(args.model_dir, args.weights, device=args.device)
    anything = anything_from_arguments(args, predictor.anything)
    results = evaluate(predictor, args.dataset, args.max_images, anything, args.task_type, args.conventions)
    print(f"{args.dataset}: mAP {results['mAP']:.2f}  detection mAP {results['detection_mAP']:.2f}  "
          f"({results['num_predictions']} predictions, {results['num_ground_truth']} ground-truth regions); "
          f"anything-mode recall {results['anything_recall']:.1f}% of {results['num_ground_truth_masks']} masks at mask IoU >= 0.5")
    if args.output:
        with open(args.output, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
