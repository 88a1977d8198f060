"""Print the parameter counts (total and trainable, per part) of a model preset, without weights.

    python tools/count_parameters.py model=sam_vit_h_gpt2_large

The preset's architecture (``sam_config`` / ``lm_config``) is built on the meta device, so nothing
is downloaded or allocated.
"""

import sys

import torch

import sca  # noqa: F401
from sca.config_loading import load_config
from sca.modeling.build import build_captioner


def count(module: torch.nn.Module) -> tuple[int, int]:
    params = list(module.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def main(overrides: list[str]) -> None:
    cfg = load_config(overrides + ["model.sam=", "model.language_model=", "model.weights="])
    with torch.device("meta"):
        captioner = build_captioner(cfg.model)
    parts = {"sam": captioner.sam, "language_model": captioner.language_model, **captioner.caption_head_modules()}
    print(f"model preset: {cfg.model.name}")
    print(f"{'part':<16}{'parameters':>16}{'trainable':>16}")
    for name, module in parts.items():
        total, trainable = count(module)
        print(f"{name:<16}{total:>16,}{trainable:>16,}")
    total, trainable = count(captioner)
    print(f"{'total':<16}{total:>16,}{trainable:>16,}")
    print(f"trainable: {trainable / 1e6:.2f}M of {total / 1e6:.1f}M")


if __name__ == "__main__":
    main(sys.argv[1:])
