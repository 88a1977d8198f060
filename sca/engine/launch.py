"""Process setup and launch: one process, or several with PyTorch DDP via detectron2's ``launch``."""

from __future__ import annotations

import logging
import os

import torch
from detectron2.engine import launch
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger
from omegaconf import DictConfig, OmegaConf

from sca.config import SCAConfig, validate

__all__ = ["launch_from_config", "run"]

logger = logging.getLogger("sca")


def setup(cfg: SCAConfig) -> None:
    """Output dir, loggers (rank-aware), seeds, threads; rank 0 saves the resolved config."""
    rank = comm.get_rank()
    os.makedirs(cfg.output_dir, exist_ok=True)
    for name in ("detectron2", "sca", "fvcore"):
        setup_logger(cfg.output_dir, distributed_rank=rank, name=name, abbrev_name="d2" if name == "detectron2" else name)
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    seed_all_rng(cfg.seed + rank)
    if comm.is_main_process():
        path = os.path.join(cfg.output_dir, "config.yaml")
        OmegaConf.save(OmegaConf.structured(cfg), path)
        logger.info("resolved config saved to %s", path)


def run(cfg: SCAConfig):
    """Train (then evaluate) or, with ``eval_only``, evaluate ``model.weights``. Runs in every process."""
    # Imported here so that worker processes spawned by ``launch`` import detectron2 after sca.
    from sca.data import datasets  # noqa: F401  (registers the sources)
    from sca.engine.trainer import Trainer, evaluate, resolve_device
    from sca.modeling.build import build_model, load_checkpoint

    setup(cfg)
    if cfg.eval_only:
        model = build_model(cfg).to(resolve_device(cfg.device))
        if not cfg.model.weights:
            logger.warning("eval_only without model.weights: evaluating randomly initialised weights")
        load_checkpoint(model, cfg.model.weights)
        model.eval()
        return evaluate(cfg, model)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=cfg.resume)
    return trainer.train()


def launch_from_config(cfg: DictConfig) -> None:
    """Validate the Hydra config and run it on ``dist.num_gpus`` x ``dist.num_machines`` processes."""
    config: SCAConfig = OmegaConf.to_object(cfg)
    validate(config)
    launch(
        run,
        config.dist.num_gpus,
        num_machines=config.dist.num_machines,
        machine_rank=config.dist.machine_rank,
        dist_url=config.dist.dist_url,
        args=(config,),
    )
