"""Caption generation throughput (regions/s): greedy against beam search, side by side.

    python tools/benchmark_generation.py                          # tiny model, CPU
    python tools/benchmark_generation.py --device cuda --images 8 --regions 16 model=sam_vit_b_gpt2

The model preset is built with random weights (no download; ``model=...`` and other Hydra
overrides select it). Each timed call is ``SCACaptioner.generate`` on ``--images`` random images
with ``--regions`` box prompts each: the image encoder once per image, SAM and the caption mixer
per region, then the language model's ``generate`` (greedy, or beam search with ``--beams``).
A random language model rarely emits EOS, so every caption runs to ``max_new_tokens``: the
figures compare decoding strategies at a fixed caption length. Greedy is the baseline; the
settings alternate within each timed round and the median round is reported.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

import sca  # noqa: F401  (detectron2 compatibility first)
from sca.benchmarking import random_box_inputs, synchronize
from sca.config_loading import load_config
from sca.modeling.build import build_model


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--regions", type=int, default=8, help="box prompts per image")
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 3], help="1 = greedy (the baseline)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (after one warm-up round)")
    parser.add_argument("--device", default="cpu")
    args, overrides = parser.parse_known_args(argv)
    device = torch.device(args.device)
    cfg = load_config(overrides + ["model.sam=", "model.language_model=", "model.weights="])
    torch.manual_seed(0)
    model = build_model(cfg).to(device).eval()
    captioner, tokenizer, generation = model.captioner, model.tokenizer, cfg.model.generation
    pixels, regions = random_box_inputs(captioner, args.images, args.regions, device)
    task_ids = torch.zeros(len(regions["boxes"]), dtype=torch.int64, device=device)
    num_regions = len(task_ids)
    print(
        f"model {cfg.model.name} (random weights), device {device}, torch threads {torch.get_num_threads()}, "
        f"{args.images} images x {args.regions} regions, max_new_tokens {generation.max_new_tokens}, "
        f"region_chunk_size {generation.region_chunk_size}"
    )
    timings = {beams: [] for beams in args.beams}
    # Settings alternate within each round, so that load changes on a shared machine hit them alike.
    with torch.no_grad():
        for round_index in tqdm(range(args.repeats + 1), desc="rounds (the first warms up)", unit="round"):
            for beams in args.beams:
                synchronize(device)
                start = time.perf_counter()
                captioner.generate(
                    pixels,
                    regions,
                    task_ids,
                    eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id,
                    max_new_tokens=generation.max_new_tokens,
                    num_beams=beams,
                    region_chunk_size=generation.region_chunk_size,
                )
                synchronize(device)
                if round_index > 0:
                    timings[beams].append(time.perf_counter() - start)
    seconds = {beams: float(np.median(values)) for beams, values in timings.items()}  # median of the timed rounds
    baseline = seconds[args.beams[0]]
    names = ["greedy" if b == 1 else f"beam {b}" for b in args.beams]
    print(f"{'':<22}" + "".join(f"{name:>14}" for name in names))
    print(f"{'regions/s':<22}" + "".join(f"{num_regions / seconds[b]:>14.1f}" for b in args.beams))
    print(f"{'ms/region':<22}" + "".join(f"{1000 * seconds[b] / num_regions:>14.2f}" for b in args.beams))
    print(f"{'time vs ' + names[0]:<22}" + "".join(f"{seconds[b] / baseline:>13.2f}x" for b in args.beams))


if __name__ == "__main__":
    main(sys.argv[1:])
