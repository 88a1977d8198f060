"""Training-step time per part, memory and FLOPs: fp32 against bf16 autocast, side by side.

    python tools/benchmark_train_step.py                          # tiny model, CPU
    python tools/benchmark_train_step.py --device cuda --images 4 --regions 16 model=sam_vit_b_gpt2
    python tools/benchmark_train_step.py --threads 2 --images 1 --regions 4 --steps 2 --mixer-checkpointing model=sam_vit_b_gpt2

The model preset is built with random weights (no download; ``model=...`` and other Hydra
overrides select it); a preset with ``model.caption_vocab_size`` gets an LM of that many tokens
(what the tokenizer a training run fits has at most). A step is what the trainer runs: ``RegionCaptioner`` in training mode on one
per-source batch (``--images`` random images, ``--regions`` box prompts each, captions of
``--caption-tokens`` random tokens, in the layout of :func:`sca.data.region_batch.collate_regions`),
backward of the summed losses, AdamW ``step`` (with the configured gradient clipping) and
``zero_grad``. bf16 sets ``model.autocast_dtype`` as the trainer does; fp32 is the baseline.
``--mixer-checkpointing`` adds each precision with ``model.mixer_checkpointing`` on.

Forward pre/post hooks time SAM's image encoder, its decoder (prompt encoder + mask decoder), the
caption mixer and the language model (from its base model's pre-hook to the end of the forward, so
the loss is included, less the hooked parts it runs: SAM decoding the mask loss's clicks counts as
SAM decoder); "other forward" is the rest of the forward (the batch's copy to the device,
normalization, word embeddings, projector, SAM's IoU head). Times are means over ``--steps`` steps
after ``--warmup`` (synchronized on CUDA at every hook). FLOPs are counted by
``torch.utils.flop_counter.FlopCounterMode`` over one extra forward + backward (matmuls,
convolutions, attention; the optimizer's element-wise work is not counted); MFU divides the achieved
FLOP/s by ``--peak-tflops`` (``--peak-tflops-fp32`` for fp32; CUDA only).

Each setting runs in a fresh subprocess of this script, so that peak memory does not carry over
from one setting to the next: peak RSS of that process on CPU (model building included; the RSS
just before the first step is shown too), ``torch.cuda.max_memory_allocated`` over the steps
(the FLOP-counted one included) with CUDA. The settings therefore run one after another: on a
shared machine, compare them with the load average after each one's steps (the table's last row).
``--precisions`` takes every word after it, so Hydra overrides go before it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import psutil
import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

import sca
from sca.config_loading import load_config
from sca.engine.optimizer import build_optimizer
from sca.modeling.build import build_model

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}
FORWARD_PARTS = ["image encoder", "SAM decoder", "caption mixer", "LM forward + loss"]
PARTS = [*FORWARD_PARTS, "other forward", "backward", "optimizer"]
RESULT_PREFIX = "RESULT "


def random_batch(model, num_images: int, regions_per_image: int, caption_tokens: int, mask_size: int, seed: int = 0) -> dict:
    """One per-source batch as ``collate_regions`` lays it out: random images, box prompts, the
    boxes as ground-truth masks (``mask_size`` 0: a box-only source) and random caption tokens."""
    captioner = model.captioner
    generator = torch.Generator().manual_seed(seed)
    size = captioner.image_size
    count = num_images * regions_per_image
    xy = torch.rand(count, 2, generator=generator) * size * 0.6
    wh = size * (0.1 + torch.rand(count, 2, generator=generator) * 0.3)
    boxes = torch.cat([xy, xy + wh], dim=1)
    cells = (torch.arange(mask_size) + 0.5) * size / mask_size
    inside_x = (cells[None] >= boxes[:, 0:1]) & (cells[None] < boxes[:, 2:3])
    inside_y = (cells[None] >= boxes[:, 1:2]) & (cells[None] < boxes[:, 3:4])
    vocab = captioner.language_model.get_input_embeddings().num_embeddings
    input_ids = torch.randint(0, vocab, (count, caption_tokens), generator=generator)
    return {
        "images": torch.randint(0, 256, (num_images, 3, size, size), generator=generator, dtype=torch.uint8),
        "valid_boxes": torch.tensor([[0.0, 0.0, size, size]]).expand(num_images, 4),
        "task_types": [captioner.head_config.task_types[0]] * num_images,
        "regions": {
            "image_index": torch.arange(num_images).repeat_interleave(regions_per_image),
            "prompt_types": torch.zeros(count, dtype=torch.int64),  # boxes
            "boxes": boxes,
            "points": (xy + wh / 2)[:, None],
            "point_labels": torch.ones(count, 1, dtype=torch.int64),
            "masks": inside_y[:, :, None] & inside_x[:, None, :],
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
        },
    }


class StepTimer:
    """Accumulates wall time per part of a training step from forward hooks on the captioner's modules."""

    def __init__(self, captioner, device: torch.device):
        self.device = device
        self.seconds = dict.fromkeys([*PARTS, "step"], 0.0)
        self.steps = 0
        self._started: dict[str, float] = {}
        sam = captioner.sam
        hooked = {
            "image encoder": [sam.vision_encoder],
            "SAM decoder": [sam.prompt_encoder, sam.mask_decoder],
            "caption mixer": [captioner.mixer],
        }
        for part, modules in hooked.items():
            for module in modules:
                module.register_forward_pre_hook(lambda *_, part=part: self._start(part))
                module.register_forward_hook(lambda *_, part=part: self._stop(part))
        # from the LM's base model (whether the captioner calls the LM or its base model and head)
        # to the end of the forward: the caption loss is computed on the LM's outputs
        captioner.language_model.base_model.register_forward_pre_hook(lambda *_: self._start("LM forward + loss"))

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _start(self, part: str) -> None:
        self._started[part] = self.now()

    def _stop(self, part: str, end: float | None = None) -> None:
        elapsed = (end or self.now()) - self._started.pop(part)
        self.seconds[part] += elapsed
        if part != "LM forward + loss" and "LM forward + loss" in self._started:
            self.seconds["LM forward + loss"] -= elapsed  # a part run by the loss (SAM decoding clicks) is its own

    def step(self, model, batches: dict, optimizer) -> None:
        forward_parts = sum(self.seconds[part] for part in FORWARD_PARTS)
        start = self.now()
        losses = model(batches)
        forward_end = self.now()
        self._stop("LM forward + loss", forward_end)
        sum(losses.values()).backward()
        backward_end = self.now()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        end = self.now()
        self.seconds["other forward"] += forward_end - start - (sum(self.seconds[part] for part in FORWARD_PARTS) - forward_parts)
        self.seconds["backward"] += backward_end - forward_end
        self.seconds["optimizer"] += end - backward_end
        self.seconds["step"] += end - start
        self.steps += 1

    def reset(self) -> None:
        self.seconds = dict.fromkeys(self.seconds, 0.0)
        self.steps = 0


def measure(args, overrides: list[str], precision: str, checkpointing: bool) -> dict:
    """One setting, in this process: per-part seconds per step, FLOPs and memory."""
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(overrides + ["model.sam=", "model.language_model=", "model.weights="])
    if cfg.model.caption_vocab_size > 0 and not cfg.model.tokenizer:  # a run fits a tokenizer of at most this size
        size = cfg.model.caption_vocab_size
        cfg.model.lm_config.update(vocab_size=size, bos_token_id=size - 1, eos_token_id=size - 1)
    torch.manual_seed(0)
    model = build_model(cfg).to(device).train()
    model.autocast_dtype = PRECISIONS[precision]
    model.captioner.mixer.checkpointing = checkpointing
    optimizer = build_optimizer(cfg.solver, model)
    mask_size = cfg.model.mask_size if cfg.model.mask_loss_weight > 0 else 0
    caption_tokens = args.caption_tokens or cfg.model.max_caption_tokens
    batch = random_batch(model, args.images, args.regions, caption_tokens, mask_size)
    batches = {"benchmark": batch}
    timer = StepTimer(model.captioner, device)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        memory_before = torch.cuda.memory_allocated(device)
    else:
        memory_before = psutil.Process().memory_info().rss
    with FlopCounterMode(display=False) as counter:
        sum(model(batches).values()).backward()
    optimizer.zero_grad(set_to_none=True)
    for index in tqdm(range(args.warmup + args.steps), desc=f"{setting_name(precision, checkpointing)} steps", unit="step"):
        if index == args.warmup:
            timer.reset()
        timer.step(model, batches, optimizer)
    if device.type == "cuda":
        memory_peak = torch.cuda.max_memory_allocated(device)
    else:
        memory_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return {
        "model": cfg.model.name,
        "threads": torch.get_num_threads(),
        "regions": len(batch["regions"]["boxes"]),
        "caption_tokens": caption_tokens,
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "seconds": {part: value / timer.steps for part, value in timer.seconds.items()},
        "flops": counter.get_total_flops(),
        "memory_before": memory_before,
        "memory_peak": memory_peak,
        "load": os.getloadavg()[0],
    }


def setting_name(precision: str, checkpointing: bool) -> str:
    return precision + ("+ckpt" if checkpointing else "")


def run_setting(argv: list[str], precision: str, checkpointing: bool) -> dict:
    """``measure`` in a fresh subprocess of this script (its own peak memory); returns its result."""
    # the child imports the same ``sca`` as this process (e.g. a worktree's rather than an installed one)
    python_path = os.pathsep.join(filter(None, [str(Path(sca.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")]))
    command = [sys.executable, str(Path(__file__).resolve()), *argv, "--setting", f"{precision}:{int(checkpointing)}"]
    result = subprocess.run(command, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": python_path})
    if result.returncode != 0:
        raise RuntimeError(f"setting {setting_name(precision, checkpointing)} failed (exit {result.returncode}):\n{result.stdout[-3000:]}")
    line = next(line for line in reversed(result.stdout.splitlines()) if line.startswith(RESULT_PREFIX))
    return json.loads(line[len(RESULT_PREFIX) :])


def print_table(results: dict[str, dict], device: torch.device, peak_tflops: float, peak_tflops_fp32: float) -> None:
    names = list(results)
    baseline = results[names[0]]["seconds"]["step"]
    memory = "peak allocated" if device.type == "cuda" else "peak RSS"
    before = "allocated before steps" if device.type == "cuda" else "RSS before steps"

    def row(label: str, values) -> None:
        print(f"{label:<28}" + "".join(f"{value:>14}" for value in values))

    row("", names)
    for part in PARTS:
        row(f"{part} ms", [f"{1000 * r['seconds'][part]:.1f}" for r in results.values()])
    row("step ms", [f"{1000 * r['seconds']['step']:.1f}" for r in results.values()])
    row("steps/s", [f"{1 / r['seconds']['step']:.3g}" for r in results.values()])
    row(f"speed-up vs {names[0]}", [f"{baseline / r['seconds']['step']:.2f}x" for r in results.values()])
    row(f"{memory} MiB", [f"{r['memory_peak'] / 2**20:.0f}" for r in results.values()])
    row(f"{before} MiB", [f"{r['memory_before'] / 2**20:.0f}" for r in results.values()])
    row("GFLOP/step", [f"{r['flops'] / 1e9:.4g}" for r in results.values()])
    row("achieved TFLOP/s", [f"{r['flops'] / r['seconds']['step'] / 1e12:.3g}" for r in results.values()])
    if device.type == "cuda":
        peaks = [peak_tflops_fp32 if name.startswith("fp32") else peak_tflops for name in names]
        row("MFU %", [f"{100 * r['flops'] / r['seconds']['step'] / 1e12 / peak:.1f}" for r, peak in zip(results.values(), peaks)])
    row("load average after", [f"{r['load']:.2f}" for r in results.values()])


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--regions", type=int, default=8, help="box prompts per image")
    parser.add_argument("--caption-tokens", type=int, default=0, help="caption length (default: the preset's max_caption_tokens)")
    parser.add_argument("--precisions", nargs="+", choices=list(PRECISIONS), default=["fp32", "bf16"], help="the first is the baseline")
    parser.add_argument("--mixer-checkpointing", action="store_true", help="also run each precision with model.mixer_checkpointing on")
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="bf16 peak for MFU (H100/H200 SXM dense: 989)")
    parser.add_argument("--peak-tflops-fp32", type=float, default=67.0, help="fp32 peak for MFU (H100/H200 SXM, no TF32: 67)")
    parser.add_argument("--setting", help=argparse.SUPPRESS)  # PRECISION:CHECKPOINTING, run by run_setting
    args, overrides = parser.parse_known_args(argv)
    if args.setting:
        precision, checkpointing = args.setting.split(":")
        print(RESULT_PREFIX + json.dumps(measure(args, overrides, precision, checkpointing == "1")), flush=True)
        return
    device = torch.device(args.device)
    if args.mixer_checkpointing:
        settings = [(precision, checkpointing) for checkpointing in (False, True) for precision in args.precisions]
    else:
        checkpointing = load_config(overrides).model.mixer_checkpointing
        settings = [(precision, checkpointing) for precision in args.precisions]
    load_before = os.getloadavg()
    results = {setting_name(*setting): run_setting(argv, *setting) for setting in settings}
    load_after = os.getloadavg()
    first = next(iter(results.values()))
    print(
        f"model {first['model']} (random weights, {first['trainable'] / 1e6:.2f}M trainable), device {device}, "
        f"torch threads {first['threads']}, {args.images} images x {args.regions} regions = {first['regions']} regions, "
        f"{first['caption_tokens']} caption tokens, {args.steps} timed steps after {args.warmup} warm-up; "
        f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after"
    )
    print_table(results, device, args.peak_tflops, args.peak_tflops_fp32)


if __name__ == "__main__":
    main(sys.argv[1:])
