"""Train the main job with several seeds and print one table of what each run learned.

    python tools/demo_seed_sweep.py                      # seeds 0-4, the default `python train_net.py`
    python tools/demo_seed_sweep.py --seeds 0 1 --jobs 2 --threads 1 -- solver.max_iter=500

Each seed runs ``train_net.py seed=<s> output_dir=<root>/seed_<s> [overrides]`` (a finished run is
reused), then its model is scored in the predictor's "anything" mode on ``sca_demo_val``. Columns:
held-out exact match (``sca_demo_val``), CIDEr-D of the referring split, mask mIoU with box prompts,
empty predicted masks, Pearson r of SAM's predicted IoU with the true IoU, anything-mode recall of
the ground-truth shapes (a kept region with mask IoU >= 0.5), dense-captioning mAP, and the
training run's wall time. ``--jobs`` runs seeds in parallel (wall times then include the sharing);
``--threads`` sets ``OMP_NUM_THREADS`` per run (1 makes a run reproducible).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VAL, REFS_VAL = "sca_demo_val", "sca_demo_refs_val"
COLUMNS = [
    ("seed", "seed", "{}"),
    ("exact_match", "exact match %", "{:.1f}"),
    ("refs_cider", "refs CIDEr-D", "{:.1f}"),
    ("mask_miou", "mask mIoU", "{:.1f}"),
    ("empty_masks", "empty masks %", "{:.1f}"),
    ("iou_pearson", "IoU Pearson r", "{:.2f}"),
    ("anything_recall", "anything recall %", "{:.1f}"),
    ("dense_map", "densecap mAP", "{:.2f}"),
    ("wall_min", "wall min", "{:.1f}"),
]


def train(seed: int, output_dir: Path, overrides: list[str], threads: int) -> float:
    """Run the main job for ``seed`` unless it already finished; returns its wall time in minutes."""
    timing = output_dir / "sweep_wall_time.json"
    if (output_dir / "eval" / VAL / "metrics.json").is_file() and timing.is_file():
        print(f"seed {seed}: reusing the finished run in {output_dir}", flush=True)
        return json.loads(timing.read_text())["minutes"]
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads > 0 else {}))
    command = [sys.executable, str(ROOT / "train_net.py"), f"seed={seed}", f"output_dir={output_dir}", *overrides]
    print(f"seed {seed}: {' '.join(command)}", flush=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(output_dir / "sweep_train.log", "w") as log:
        subprocess.run(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    minutes = (time.perf_counter() - start) / 60
    timing.write_text(json.dumps({"minutes": minutes}))
    return minutes


def score(seed: int, output_dir: Path, wall_min: float, anything_images: int = 0) -> dict:
    """The table row of one finished run."""
    from sca.evaluation.anything_mode import evaluate_anything_mode
    from sca.predictor import RegionCaptionPredictor

    val = json.loads((output_dir / "eval" / VAL / "metrics.json").read_text())
    refs_path = output_dir / "eval" / REFS_VAL / "metrics.json"
    refs = json.loads(refs_path.read_text()) if refs_path.is_file() else {}
    predictor = RegionCaptionPredictor.from_output_dir(str(output_dir), device="cpu")
    anything = evaluate_anything_mode(predictor, VAL, max_images=anything_images)
    row = {
        "seed": seed,
        "exact_match": val.get("exact_match", float("nan")),
        "refs_cider": refs.get("CIDEr_D", float("nan")),
        "mask_miou": val.get("mask_mIoU", float("nan")),
        "empty_masks": val.get("empty_mask_percent", float("nan")),
        "iou_pearson": val.get("iou_score_pearson", float("nan")),
        "anything_recall": anything.recall,
        "dense_map": anything.dense_captioning["mAP"],
        "wall_min": wall_min,
    }
    (output_dir / "sweep_row.json").write_text(json.dumps(row, indent=2))
    return row


def table(rows: list[dict]) -> str:
    """Markdown table of the rows, with the mean and the minimum of every column."""
    lines = ["| " + " | ".join(title for _, title, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(fmt.format(row[key]) for key, _, fmt in COLUMNS) + " |")
    for name, reduce in (("mean", lambda v: sum(v) / len(v)), ("min", min)):
        cells = [name] + [fmt.format(reduce([row[key] for row in rows])) for key, _, fmt in COLUMNS[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--output-root", default="output/demo_seed_sweep")
    parser.add_argument("--jobs", type=int, default=1, help="training runs at a time")
    parser.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS per run (0: leave unset)")
    parser.add_argument("--anything-images", type=int, default=0, help="val images for the anything mode (0: all)")
    parser.add_argument("overrides", nargs="*", help="extra train_net.py overrides (after --)")
    args = parser.parse_args(argv)
    root = Path(args.output_root).resolve()
    runs = {seed: root / f"seed_{seed}" for seed in args.seeds}
    with ThreadPoolExecutor(max_workers=max(args.jobs, 1)) as pool:
        walls = dict(zip(runs, pool.map(lambda s: train(s, runs[s], args.overrides, args.threads), runs)))
    rows = [score(seed, runs[seed], walls[seed], args.anything_images) for seed in args.seeds]
    report = table(rows)
    print(report)
    (root / "sweep.md").write_text(report + "\n")
    (root / "sweep.json").write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    import sca  # noqa: F401  (detectron2 compatibility first)
    import sca.data.datasets  # noqa: F401  (registers the sources)

    main(sys.argv[1:])
