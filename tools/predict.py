"""Caption the regions of one image with a trained captioner.

    python tools/predict.py output/demo_mix-tiny image.jpg --box 10 20 80 90 --point 40 50
    python tools/predict.py output/demo_mix-tiny image.jpg            # no prompt: "anything" mode
    python tools/predict.py output/demo_mix-tiny image.jpg --box 10 20 80 90 \\
        --json regions.json --vis regions.png --set model.generation.num_beams=3

The first argument is a training output directory (its ``config.yaml`` and last checkpoint;
``--weights`` picks another checkpoint), or a saved model alone: a released SCA checkpoint of the
reference implementation or a ``save_pretrained`` directory (the matching ``conf/model`` preset is
picked; ``--set`` takes Hydra overrides then). Boxes are XYXY and points XY, in image pixels; prompts
outside the image are clipped with a warning. Prints one line per region: prompt, IoU score and
caption; ``--json`` writes them with masks as COCO RLE, ``--vis`` draws them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from PIL import Image

import sca  # noqa: F401  (detectron2 compatibility first)
from sca.modeling.build import is_pretrained_dir
from sca.predictor import RegionCaptionPredictor, add_anything_arguments, anything_from_arguments, read_rgb_image
from sca.visualizer import draw_regions


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", help="training output directory (config.yaml + checkpoint) or a saved-model folder")
    parser.add_argument("image", help="image file")
    parser.add_argument("--box", type=float, nargs=4, action="append", default=[], metavar=("X0", "Y0", "X1", "Y1"))
    parser.add_argument("--point", type=float, nargs=2, action="append", default=[], metavar=("X", "Y"))
    parser.add_argument("--weights", default="", help="checkpoint to use instead of the directory's last one")
    parser.add_argument("--task-type", default=None, help="e.g. recognition or caption (default: the config's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    add_anything_arguments(parser)
    parser.add_argument("--json", default="", help="write the regions (masks as RLE) to this JSON file")
    parser.add_argument("--vis", default="", help="draw the regions into this PNG file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        image = read_rgb_image(args.image)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not os.path.isfile(os.path.join(args.model_dir, "config.yaml")) and is_pretrained_dir(args.model_dir):
        predictor = RegionCaptionPredictor.from_checkpoint(args.model_dir, args.set, args.device)
    else:
        predictor = RegionCaptionPredictor.from_output_dir(args.model_dir, args.weights, args.set, args.device)
    anything = anything_from_arguments(args, predictor.anything)
    try:
        regions = predictor(image, boxes=args.box or None, points=args.point or None, task_type=args.task_type, anything=anything)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for i, region in enumerate(regions):
        print(f"{i:3d}  {json.dumps(region.prompt)}  iou={region.iou_score:.3f}  {region.caption}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"image": args.image, "regions": [r.to_dict() for r in regions]}, f)
    if args.vis:
        labels = [f"{r.caption} ({r.iou_score:.2f})" for r in regions]
        drawn = draw_regions(image, [r.box for r in regions], labels, [r.mask for r in regions])
        Image.fromarray(drawn).save(args.vis)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
