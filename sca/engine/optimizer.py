"""AdamW with per-module learning-rate multipliers, and the warmup + schedule (detectron2/fvcore)."""

from __future__ import annotations

import torch
from detectron2.solver import LRMultiplier, WarmupParamScheduler
from fvcore.common.param_scheduler import ConstantParamScheduler, CosineParamScheduler, MultiStepParamScheduler

from sca.config import SolverConfig

__all__ = ["build_optimizer", "build_lr_scheduler"]


def build_optimizer(cfg: SolverConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """AdamW over trainable parameters. ``lr_multipliers`` maps a parameter-name prefix to a factor
    (the longest matching prefix wins); 1-D parameters (norms, biases) get no weight decay.
    Gradients are clipped to ``clip_grad_norm`` right before each step."""
    groups: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        matches = [prefix for prefix in cfg.lr_multipliers if name.startswith(prefix)]
        factor = cfg.lr_multipliers[max(matches, key=len)] if matches else 1.0
        decay = 0.0 if param.ndim <= 1 else cfg.weight_decay
        groups.setdefault((factor, decay), []).append(param)
    if not groups:
        raise ValueError("the model has no trainable parameters: check model.train_* in the config")
    param_groups = [{"params": p, "lr": cfg.base_lr * f, "weight_decay": d} for (f, d), p in groups.items()]
    optimizer = torch.optim.AdamW(param_groups, lr=cfg.base_lr, betas=tuple(cfg.betas), fused=True)
    if cfg.clip_grad_norm > 0:
        params = [p for group in param_groups for p in group["params"]]

        def clip_gradients(optimizer, args, kwargs):
            torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad_norm)

        optimizer.register_step_pre_hook(clip_gradients)
    return optimizer


def build_lr_scheduler(cfg: SolverConfig, optimizer: torch.optim.Optimizer) -> LRMultiplier:
    """Linear warmup for ``warmup_iters``, then cosine to 0, steps at ``steps``, or constant."""
    if cfg.lr_scheduler == "cosine":
        schedule = CosineParamScheduler(1.0, 0.0)
    elif cfg.lr_scheduler == "step":
        steps = [s for s in cfg.steps if s <= cfg.max_iter]
        schedule = MultiStepParamScheduler([cfg.gamma**k for k in range(len(steps) + 1)], milestones=steps, num_updates=cfg.max_iter)
    else:
        schedule = ConstantParamScheduler(1.0)
    warmup = min(cfg.warmup_iters / max(cfg.max_iter, 1), 1.0)
    return LRMultiplier(optimizer, WarmupParamScheduler(schedule, cfg.warmup_factor, warmup), cfg.max_iter)
