"""Image-embedding cache: the same images captioned under several prompt sets, with and without it.

    python tools/benchmark_embedding_cache.py                          # tiny model, CPU
    OMP_NUM_THREADS=1 python tools/benchmark_embedding_cache.py model=sam_vit_b_gpt2

The model preset is built with random weights and a frozen SAM (no download; ``model=...`` and
other Hydra overrides select it). Each round captions ``--images`` random images under ``--prompt-sets``
sets of ``--regions`` box prompts each, one ``SCACaptioner.generate`` call per image and prompt
set, as the evaluation protocols over one split, the predictor or the demo page do. Three
settings, alternating within each round:

* ``uncached``: SAM's image encoder runs in every call (the baseline);
* ``memory``: a fresh in-memory cache per round, so each image is encoded once per round;
* ``disk``: a fresh cache per round over a directory filled before the rounds (a later run
  over the same images): no image is encoded, every embedding is read from disk.

The median round is reported, with the images encoded per round and the cost of a cache hit.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import numpy as np
import torch
from tqdm import tqdm

import sca  # noqa: F401  (detectron2 compatibility first)
from sca.benchmarking import random_box_inputs, synchronize
from sca.config_loading import load_config
from sca.modeling.build import build_model
from sca.modeling.embedding_cache import ImageEmbeddingCache

SETTINGS = ("uncached", "memory", "disk")


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--prompt-sets", type=int, default=2, help="generate calls per image")
    parser.add_argument("--regions", type=int, default=4, help="box prompts per prompt set")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds")
    parser.add_argument("--device", default="cpu")
    args, overrides = parser.parse_known_args(argv)
    device = torch.device(args.device)
    # a frozen SAM, as in the real-size presets: the disk directory serves a frozen image encoder only
    cfg = load_config(overrides + ["model.sam=", "model.language_model=", "model.weights=", "model.train_sam=false"])
    torch.manual_seed(0)
    model = build_model(cfg).to(device).eval()
    captioner, tokenizer, generation = model.captioner, model.tokenizer, cfg.model.generation
    decoder = captioner.region_decoder
    # distinct images, and distinct prompt sets on each (one image's inputs per seed)
    images = [random_box_inputs(captioner, 1, args.regions, device, seed=i)[0] for i in range(args.images)]
    prompt_sets = [
        [random_box_inputs(captioner, 1, args.regions, device, seed=1000 * (i + 1) + j)[1] for j in range(args.prompt_sets)]
        for i in range(len(images))
    ]
    task_ids = torch.zeros(args.regions, dtype=torch.int64, device=device)
    encoded = []
    decoder.sam.vision_encoder.register_forward_hook(lambda module, inputs, output: encoded.append(len(inputs[0])))
    print(
        f"model {cfg.model.name} (random weights), device {device}, torch threads {torch.get_num_threads()}, "
        f"{args.images} images x {args.prompt_sets} prompt sets x {args.regions} regions, "
        f"max_new_tokens {generation.max_new_tokens}"
    )

    def caption_all() -> None:
        for pixels, sets in zip(images, prompt_sets):
            for regions in sets:
                captioner.generate(
                    pixels,
                    regions,
                    task_ids,
                    eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id,
                    max_new_tokens=generation.max_new_tokens,
                    num_beams=generation.num_beams,
                    region_chunk_size=generation.region_chunk_size,
                )

    timings = {setting: [] for setting in SETTINGS}
    counts = {setting: [] for setting in SETTINGS}
    with tempfile.TemporaryDirectory() as directory, torch.no_grad():
        # Filling the directory (each image encoded once) also warms the model up.
        decoder.embedding_cache = ImageEmbeddingCache(len(images), directory)
        for pixels in tqdm(images, desc="filling the disk cache (warm-up)", unit="image"):
            decoder.encode_images(pixels)
        caches = {
            "uncached": lambda: None,
            "memory": lambda: ImageEmbeddingCache(len(images)),
            "disk": lambda: ImageEmbeddingCache(len(images), directory),
        }
        # Settings alternate within each round, so that load changes on a shared machine hit them alike.
        for _ in tqdm(range(args.repeats), desc="rounds", unit="round"):
            for setting in SETTINGS:
                decoder.embedding_cache = caches[setting]()
                encoded.clear()
                synchronize(device)
                start = time.perf_counter()
                caption_all()
                synchronize(device)
                timings[setting].append(time.perf_counter() - start)
                counts[setting].append(sum(encoded))
        hits = []
        for pixels in images:  # the cost of a hit: hashing the pixels and the encoder check
            synchronize(device)
            start = time.perf_counter()
            decoder.encode_images(pixels)
            synchronize(device)
            hits.append(time.perf_counter() - start)
    seconds = {setting: float(np.median(values)) for setting, values in timings.items()}
    calls = len(images) * args.prompt_sets
    baseline = seconds["uncached"]
    print(f"{'':<24}" + "".join(f"{setting:>12}" for setting in SETTINGS))
    print(f"{'images encoded / round':<24}" + "".join(f"{max(counts[s]):>12d}" for s in SETTINGS))
    print(f"{'s / round':<24}" + "".join(f"{seconds[s]:>12.2f}" for s in SETTINGS))
    print(f"{'s / prompt set':<24}" + "".join(f"{seconds[s] / calls:>12.3f}" for s in SETTINGS))
    print(f"{'speed-up vs uncached':<24}" + "".join(f"{baseline / seconds[s]:>11.2f}x" for s in SETTINGS))
    print(f"cache hit: {1000 * float(np.median(hits)):.1f} ms per image (pixel hash, encoder check, lookup)")
    return {"seconds": seconds, "images_encoded": {s: max(counts[s]) for s in SETTINGS}}


if __name__ == "__main__":
    main(sys.argv[1:])
