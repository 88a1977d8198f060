#!/usr/bin/env python
"""ADE20k semantic PNGs in detectron2's convention: class = value - 1 (0..149), "other" (0) -> 255.

    python datasets/prepare_ade20k_sem_seg.py [--root DIR] [--workers N]

Reads, under the datasets root ($DETECTRON2_DATASETS, else ./datasets):
    ADEChallengeData2016/{images,annotations}/{training,validation}/
Writes:
    ADEChallengeData2016/annotations_detectron2/{training,validation}/*.png
(the folder detectron2's built-in ``ade20k_sem_seg_{train,val}`` read). Each PNG is written
atomically; a second run skips them.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from sca.data.datasets.ade20k_layout import ADE20K_SPLITS, ade20k_images
from sca.data.preparation import PreparationError, argument_parser, datasets_root, parallel_map, run, save_png


def to_detectron2(task: tuple) -> None:
    semantic_png, out = task
    semantic = np.asarray(Image.open(semantic_png))
    if semantic.ndim != 2 or semantic.max(initial=0) > 150:
        raise PreparationError(f"{semantic_png}: not an ADE20k semantic PNG (one channel, values 0..150)")
    save_png(out, np.where(semantic == 0, 255, semantic - 1).astype(np.uint8))


def main() -> None:
    args = argument_parser(__doc__).parse_args()
    root = datasets_root(args.root)
    images = {split: ade20k_images(root, split, with_instances=False) for split in ADE20K_SPLITS}
    for split, folder in ADE20K_SPLITS.items():
        out_dir = root / "ADEChallengeData2016" / "annotations_detectron2" / folder
        tasks = [(i.semantic, out_dir / i.semantic.name) for i in images[split] if not (out_dir / i.semantic.name).exists()]
        for _ in parallel_map(to_detectron2, tasks, args.workers, desc=f"ade20k {split} semantic"):
            pass
        print(f"{out_dir}: wrote {len(tasks)} PNGs, {len(images[split]) - len(tasks)} already there")


if __name__ == "__main__":
    run(main)
