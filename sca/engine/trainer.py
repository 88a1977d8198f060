"""Training and evaluation on detectron2's engine.

``Trainer`` composes detectron2's ``SimpleTrainer`` (or ``AMPTrainer`` for float16 with a grad
scaler) with its hooks: iteration timer, LR schedule, periodic (atomic) checkpoint, clean stop on
SIGTERM / SIGINT, evaluation at the end (and every ``evaluation.period`` iterations), per-source
data counters and console / JSON / TensorBoard writers.

Runs resume exactly: the data stream is a function of the seed and the iteration
(:mod:`sca.data.source_schedule`) and the model's random generator is reseeded from
``(seed, rank, iteration)`` every step, so a run resumed at iteration k computes what an
uninterrupted run computes from k on (bit for bit on CPU with deterministic algorithms).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import weakref
from collections import OrderedDict

import numpy as np
import torch
from detectron2.engine import AMPTrainer, SimpleTrainer, TrainerBase, hooks
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm
from detectron2.utils.events import CommonMetricPrinter, JSONWriter, TensorboardXWriter, get_event_storage

from sca.config import SCAConfig
from sca.data.image_exclusion import with_image_exclusions
from sca.data.multi_source import build_test_loader, build_train_loader
from sca.data.skip_counts import SkipCountLogger
from sca.engine.checkpoint import AtomicCheckpointer, write_atomically
from sca.engine.graceful_stop import GracefulStop
from sca.engine.optimizer import build_lr_scheduler, build_optimizer
from sca.evaluation.caption_evaluator import CaptionEvaluator
from sca.evaluation.dense_captioning_evaluator import evaluate_dense_captioning
from sca.modeling.build import build_model, build_tokenizer, is_pretrained_dir
from sca.modeling.meta_arch import RegionCaptioner

__all__ = ["Trainer", "autocast_dtype", "evaluate", "resolve_device"]

logger = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda but no CUDA device is available; use device=cpu or device=auto")
    return torch.device(name)


def autocast_dtype(cfg: SCAConfig, device: torch.device) -> torch.dtype | None:
    """The mixed-precision dtype, or ``None`` for fp32: ``solver.amp`` when set, else bf16 on CUDA
    for presets with ``model.amp_on_cuda`` (the real-size ones). Losses are computed in fp32."""
    amp = cfg.solver.amp if cfg.solver.amp is not None else (device.type == "cuda" and cfg.model.amp_on_cuda)
    return getattr(torch, cfg.solver.amp_dtype) if amp else None


def evaluate(cfg: SCAConfig, model: RegionCaptioner) -> OrderedDict:
    """Every ``data.test_datasets`` split under its ``data.test_protocols`` (default ``gt_boxes``):
    caption metrics with ground-truth box prompts and / or dense-captioning mAP with the model's own
    regions (``densecap``); results gathered on rank 0. The image-embedding cache's counts for
    the evaluation are logged at its end."""
    cache = model.captioner.region_decoder.embedding_cache
    cache_before = copy.copy(cache.stats) if cache is not None else None
    results = OrderedDict()
    for dataset_name in cfg.data.test_datasets:
        protocols = cfg.data.test_protocols.get(dataset_name, ["gt_boxes"])
        results[dataset_name] = {}
        if "gt_boxes" in protocols:
            loader = build_test_loader(cfg.data, dataset_name, model.tokenizer, cfg.evaluation.max_images)
            evaluator = CaptionEvaluator(
                dataset_name,
                cfg.evaluation.metrics,
                output_dir=os.path.join(cfg.output_dir, "eval", dataset_name),
                reference_form=cfg.data.test_mapper.caption_normalization,
                skipped_images=loader.skipped_images,
            )
            results[dataset_name].update(inference_on_dataset(model, loader, evaluator))
        if "densecap" in protocols:
            results[dataset_name].update(evaluate_dense_captioning(cfg, model, dataset_name))
        if comm.is_main_process():
            logger.info("Evaluation results for %s in csv format:", dataset_name)
            print_csv_format(results[dataset_name])
    if cache is not None:
        logger.info("image-embedding cache during the evaluation: %s", cache.stats - cache_before)
    return results


class _LogsEveryLoss:
    """detectron2's trainers log a lone loss term only as ``total_loss``; this logs it under its
    own name too, so a single source's ``loss_caption/<source>`` is always in the metrics."""

    def _write_metrics(self, loss_dict, data_time: float, prefix: str = "") -> None:
        super()._write_metrics(loss_dict, data_time, prefix)
        if len(loss_dict) == 1 and comm.is_main_process():
            storage = get_event_storage()
            storage.put_scalar(prefix + next(iter(loss_dict)), storage.history(prefix + "total_loss").latest())


class _SimpleTrainer(_LogsEveryLoss, SimpleTrainer):
    """detectron2's ``SimpleTrainer``, logging every loss term by name."""


class _AMPTrainer(_LogsEveryLoss, AMPTrainer):
    """detectron2's ``AMPTrainer`` (float16 with a grad scaler), logging every loss term by name."""


class Trainer(TrainerBase):
    """Builds model, data, optimizer, schedule, checkpointer and hooks from an ``SCAConfig``."""

    def __init__(self, cfg: SCAConfig):
        super().__init__()
        self.cfg = cfg
        device = resolve_device(cfg.device)
        # the data first: a dataset whose files are missing stops the run before the model is built
        data_loader = build_train_loader(with_image_exclusions(cfg.data), build_tokenizer(cfg.model), seed=cfg.seed)
        model = build_model(cfg).to(device)
        model.autocast_dtype = autocast_dtype(cfg, device)
        # training images may reuse cached embeddings only when they are the same pixels every time
        model.captioner.region_decoder.training_images_unaugmented = all(
            source.mapper.augmentation == "none" for source in cfg.data.sources.values()
        )
        optimizer = build_optimizer(cfg.solver, model)
        # Ranks train on the same sources at every step (lockstep), but which trainable parts a step
        # uses still varies: prompt types are sampled per region (point / mask encoders), and SAM's
        # IoU head gets a loss only with the mask loss; DDP must therefore look for unused parameters.
        device_ids = [comm.get_local_rank()] if device.type == "cuda" else None
        ddp_model = create_ddp_model(model, broadcast_buffers=False, device_ids=device_ids, find_unused_parameters=True)
        if model.autocast_dtype == torch.float16:
            model.autocast_dtype = None  # AMPTrainer runs its own float16 autocast with a grad scaler
            self._trainer = _AMPTrainer(ddp_model, SkipCountLogger(data_loader), optimizer)
        else:
            self._trainer = _SimpleTrainer(ddp_model, SkipCountLogger(data_loader), optimizer)
        self.model = model
        self.data_loader = data_loader
        self.scheduler = build_lr_scheduler(cfg.solver, optimizer)
        self.checkpointer = AtomicCheckpointer(
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
        hook_list.append(GracefulStop(self.checkpointer))
        hook_list.append(hooks.EvalHook(cfg.evaluation.period, lambda: evaluate(cfg, self.model)))
        hook_list.append(hooks.CallbackHook(after_step=self._write_data_counters))
        return hook_list  # the metric writers are added by train(), once the first iteration is known

    def _writers(self) -> list:
        """detectron2's console, JSON and TensorBoard writers. A resumed run first drops what an
        interrupted one logged past its checkpoint (``metrics.json`` lines; TensorBoard events,
        through ``purge_step``), so that each iteration is logged once."""
        output_dir, start = self.cfg.output_dir, self.start_iter
        metrics = os.path.join(output_dir, "metrics.json")
        os.makedirs(output_dir, exist_ok=True)
        if start > 0 and os.path.isfile(metrics):
            with open(metrics) as f:
                kept = [line for line in f if line.strip() and json.loads(line).get("iteration", -1) < start]
            write_atomically(metrics, lambda f: f.write("".join(kept).encode()))
        return [
            CommonMetricPrinter(self.max_iter),
            JSONWriter(metrics),
            TensorboardXWriter(output_dir, purge_step=start if start > 0 else None),
        ]

    def _write_data_counters(self, trainer) -> None:
        """Per source: samples trained on, records that failed to map / had no region (replaced)."""
        if (self.iter + 1) % self.cfg.log_period and self.iter + 1 < self.max_iter:
            return
        for name, (samples, failed, empty) in zip(self.data_loader.names, self.data_loader.counts):
            self.storage.put_scalars(
                **{f"data/{name}/samples": samples, f"data/{name}/failed": failed, f"data/{name}/empty": empty}, smoothing_hint=False
            )

    def resume_or_load(self, resume: bool = True) -> None:
        """Resume from the last checkpoint in ``output_dir`` (``resume=True``; warns when there is
        none), else load ``model.weights`` when it is a detectron2 checkpoint."""
        weights = self.cfg.model.weights if not is_pretrained_dir(self.cfg.model.weights) else ""
        if resume and not self.checkpointer.has_checkpoint():
            logger.warning("resume=true, but %s holds no checkpoint: training starts at iteration 0", self.cfg.output_dir)
        self.checkpointer.resume_or_load(weights, resume=resume)
        if resume and self.checkpointer.has_checkpoint():
            self.start_iter = self.iter + 1
        self.data_loader.start_iter = self.start_iter

    def train(self):
        if comm.is_main_process():
            self.register_hooks([hooks.PeriodicWriter(self._writers(), period=self.cfg.log_period)])
        super().train(self.start_iter, self.max_iter)

    def run_step(self):
        step_seed = np.random.SeedSequence([self.cfg.seed, comm.get_rank(), self.iter]).generate_state(1)[0]
        torch.manual_seed(int(step_seed))
        self._trainer.iter = self.iter
        self._trainer.run_step()

    def state_dict(self):
        ret = super().state_dict()
        ret["_trainer"] = self._trainer.state_dict()
        ret["data_loader"] = self.data_loader.state_dict()
        ret["skipped"] = self._trainer.data_loader.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self._trainer.load_state_dict(state_dict["_trainer"])
        if "data_loader" in state_dict:
            self.data_loader.load_state_dict(state_dict["data_loader"])
        if "skipped" in state_dict:
            self._trainer.data_loader.load_state_dict(state_dict["skipped"])
