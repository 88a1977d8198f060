"""Training and evaluation on detectron2's engine.

``Trainer`` composes detectron2's ``SimpleTrainer`` (or ``AMPTrainer`` for float16 with a grad
scaler) with its hooks: iteration timer, LR schedule, periodic checkpoint, evaluation at the end
(and every ``evaluation.period`` iterations) and console / JSON / TensorBoard writers.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections import OrderedDict

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import AMPTrainer, SimpleTrainer, TrainerBase, hooks
from detectron2.engine.defaults import create_ddp_model, default_writers
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm

from sca.config import SCAConfig
from sca.data.image_exclusion import with_image_exclusions
from sca.data.multi_source import build_test_loader, build_train_loader
from sca.data.skip_counts import SkipCountLogger
from sca.engine.optimizer import build_lr_scheduler, build_optimizer
from sca.evaluation.caption_evaluator import CaptionEvaluator
from sca.modeling.build import build_model, is_pretrained_dir
from sca.modeling.meta_arch import RegionCaptioner

__all__ = ["Trainer", "evaluate", "resolve_device"]

logger = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda but no CUDA device is available; use device=cpu or device=auto")
    return torch.device(name)


def _autocast_dtype(cfg: SCAConfig) -> torch.dtype | None:
    return getattr(torch, cfg.solver.amp_dtype) if cfg.solver.amp else None


def evaluate(cfg: SCAConfig, model: RegionCaptioner) -> OrderedDict:
    """Caption metrics on every ``data.test_datasets`` split; results gathered on rank 0."""
    results = OrderedDict()
    for dataset_name in cfg.data.test_datasets:
        loader = build_test_loader(cfg.data, dataset_name, model.tokenizer, cfg.evaluation.max_images)
        evaluator = CaptionEvaluator(
            dataset_name, cfg.evaluation.metrics, output_dir=os.path.join(cfg.output_dir, "eval", dataset_name)
        )
        results[dataset_name] = inference_on_dataset(model, loader, evaluator)
        if comm.is_main_process():
            logger.info("Evaluation results for %s in csv format:", dataset_name)
            print_csv_format(results[dataset_name])
    return results


class Trainer(TrainerBase):
    """Builds model, data, optimizer, schedule, checkpointer and hooks from an ``SCAConfig``."""

    def __init__(self, cfg: SCAConfig):
        super().__init__()
        self.cfg = cfg
        device = resolve_device(cfg.device)
        model = build_model(cfg).to(device)
        model.autocast_dtype = _autocast_dtype(cfg)
        optimizer = build_optimizer(cfg.solver, model)
        data_loader = SkipCountLogger(build_train_loader(with_image_exclusions(cfg.data), model.tokenizer))
        ddp_model = create_ddp_model(model, broadcast_buffers=False)
        if cfg.solver.amp and cfg.solver.amp_dtype == "float16":
            model.autocast_dtype = None  # AMPTrainer runs its own float16 autocast with a grad scaler
            self._trainer = AMPTrainer(ddp_model, data_loader, optimizer)
        else:
            self._trainer = SimpleTrainer(ddp_model, data_loader, optimizer)
        self.model = model
        self.scheduler = build_lr_scheduler(cfg.solver, optimizer)
        self.checkpointer = DetectionCheckpointer(
            model, cfg.output_dir, optimizer=optimizer, scheduler=self.scheduler, trainer=weakref.proxy(self)
        )
        self.start_iter = 0
        self.max_iter = cfg.solver.max_iter
        self.register_hooks(self.build_hooks())

    def build_hooks(self) -> list:
        cfg = self.cfg
        hook_list = [
            hooks.IterationTimer(),
            hooks.LRScheduler(self._trainer.optimizer, self.scheduler),
        ]
        if comm.is_main_process():
            hook_list.append(
                hooks.PeriodicCheckpointer(self.checkpointer, cfg.solver.checkpoint_period, max_to_keep=cfg.solver.max_to_keep)
            )
        hook_list.append(hooks.EvalHook(cfg.evaluation.period, lambda: evaluate(cfg, self.model)))
        if comm.is_main_process():
            hook_list.append(hooks.PeriodicWriter(default_writers(cfg.output_dir, self.max_iter), period=cfg.log_period))
        return hook_list

    def resume_or_load(self, resume: bool = True) -> None:
        """Resume from the last checkpoint in ``output_dir`` (``resume=True``), else load
        ``model.weights`` when it is a detectron2 checkpoint."""
        weights = self.cfg.model.weights if not is_pretrained_dir(self.cfg.model.weights) else ""
        self.checkpointer.resume_or_load(weights, resume=resume)
        if resume and self.checkpointer.has_checkpoint():
            self.start_iter = self.iter + 1

    def train(self):
        super().train(self.start_iter, self.max_iter)

    def run_step(self):
        self._trainer.iter = self.iter
        self._trainer.run_step()

    def state_dict(self):
        ret = super().state_dict()
        ret["_trainer"] = self._trainer.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self._trainer.load_state_dict(state_dict["_trainer"])
