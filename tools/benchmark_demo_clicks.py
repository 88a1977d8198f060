"""Per-click latency of the demo page: a click on an image encoded once per upload, against
re-encoding the image on every click (the baseline), side by side in one run.

    python tools/benchmark_demo_clicks.py                           # tiny model, CPU
    python tools/benchmark_demo_clicks.py model=sam_vit_b_gpt2      # SAM ViT-B + GPT-2, random weights

Each click adds a positive point to the page's point region and captions it, exactly as the page
does (``sca.app.session.DemoSession.predict_prompts``: SAM's prompt encoder and mask decoder, the
caption mixer, the language model's greedy decoding). The model preset is built with random
weights (no download; Hydra overrides select it); a random language model rarely emits EOS, so
every caption runs to ``model.generation.max_new_tokens``. Wall-clock and process CPU time are
reported (medians over ``--clicks`` after one warm-up), since a shared machine's wall clock is noisy.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

import sca  # noqa: F401  (detectron2 compatibility first)
from sca.app.session import DemoSession
from sca.config_loading import load_config
from sca.predictor import RegionCaptionPredictor


def timed(function) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clicks", type=int, default=5, help="timed clicks per setting (after one warm-up click)")
    parser.add_argument("--size", type=int, nargs=2, default=[640, 480], metavar=("W", "H"), help="image size")
    parser.add_argument("--device", default="cpu")
    args, overrides = parser.parse_known_args(argv)
    cfg = load_config(overrides + ["model.sam=", "model.language_model=", "model.weights="])
    torch.manual_seed(0)
    predictor = RegionCaptionPredictor(cfg, device=args.device)
    width, height = args.size
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    clicks = rng.uniform((0, 0), (width, height), (args.clicks + 1, 2)).tolist()
    print(
        f"model {cfg.model.name} (random weights), device {args.device}, torch threads {torch.get_num_threads()}, "
        f"image {width}x{height} -> model input {cfg.model.image_size}, max_new_tokens {cfg.model.generation.max_new_tokens}"
    )
    session = DemoSession.start(predictor, image, "benchmark")
    encode = timed(lambda: DemoSession.start(predictor, image, "benchmark"))
    print(f"image encoding (once per upload): {1000 * encode[0]:.0f} ms wall, {1000 * encode[1]:.0f} ms CPU", flush=True)
    cached, reencoded = [], []
    with torch.no_grad():
        for i, click in enumerate(tqdm(clicks, desc="clicks (the first warms up)", unit="click")):
            session.points, session.labels = session.points + [click], session.labels + [1]
            cached.append(timed(lambda: session.predict_prompts(predictor)))
            # The baseline: the same prompts, the image encoded again for the click.
            reencoded.append(timed(lambda: predictor(image, points=[session.points], point_labels=[session.labels])))
    cached, reencoded = cached[1:], reencoded[1:]

    def median(timings: list[tuple[float, float]], index: int) -> float:
        return 1000 * statistics.median(t[index] for t in timings)

    print(f"{'per click (median of ' + str(len(cached)) + ')':<32} {'wall ms':>9} {'CPU ms':>9}")
    print(f"{'  encoded once per upload':<32} {median(cached, 0):>9.0f} {median(cached, 1):>9.0f}")
    print(f"{'  re-encoded per click (baseline)':<32} {median(reencoded, 0):>9.0f} {median(reencoded, 1):>9.0f}")
    print(f"speed-up per click: {median(reencoded, 0) / median(cached, 0):.1f}x wall, {median(reencoded, 1) / median(cached, 1):.1f}x CPU")


if __name__ == "__main__":
    main(sys.argv[1:])
