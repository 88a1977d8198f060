"""Process setup and launch: one process, several with PyTorch DDP, or the processes of ``torchrun``.

* ``dist.num_gpus x dist.num_machines > 1`` on GPUs: detectron2's ``launch`` (NCCL).
* the same on CPU (``device=cpu`` or no GPU): the same process layout with the gloo backend
  (detectron2 v0.6's ``launch`` requires CUDA).
* under ``torchrun`` (its environment variables are set): this process is one rank; the
  ``dist.*`` keys are ignored.

SIGTERM / SIGINT stop training cleanly (see :mod:`sca.engine.graceful_stop`); the process then
exits with status 128 + signal number, after the checkpoint of the last finished step is written.
A start-up error (config, missing weights / model directory / dataset files, unwritable
``output_dir``) is one line on stderr and exit status 2 (:mod:`sca.engine.preflight`).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.engine import launch
from detectron2.engine.launch import DEFAULT_TIMEOUT
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger
from omegaconf import DictConfig, OmegaConf

from sca.config import SCAConfig, to_config
from sca.engine.caption_vocabulary import use_fitted_caption_tokenizer
from sca.engine.graceful_stop import STOP_SIGNALS, TrainingStopped
from sca.engine.preflight import STARTUP_ERROR_EXIT_CODE, check_startup, exit_on_startup_error

__all__ = ["launch_from_config", "launch_processes", "run"]

logger = logging.getLogger("sca")

_TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def setup(cfg: SCAConfig) -> None:
    """Output dir, loggers (rank-aware), seeds, threads, the run's fitted caption tokenizer (if
    configured); rank 0 saves the resolved config."""
    rank = comm.get_rank()
    os.makedirs(cfg.output_dir, exist_ok=True)
    for name in ("detectron2", "sca", "fvcore"):
        setup_logger(cfg.output_dir, distributed_rank=rank, name=name, abbrev_name="d2" if name == "detectron2" else name)
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    seed_all_rng(cfg.seed + rank)
    with exit_on_startup_error(report=comm.is_main_process()):  # a training dataset's files missing
        use_fitted_caption_tokenizer(cfg)
    if comm.is_main_process():
        path = os.path.join(cfg.output_dir, "config.yaml")
        OmegaConf.save(OmegaConf.structured(cfg), path)
        logger.info("resolved config saved to %s", path)
    if comm.get_world_size() > 1:
        logger.info("rank %d of world size %d (backend %s)", rank, comm.get_world_size(), dist.get_backend())


def run(cfg: SCAConfig):
    """Train (then evaluate) or, with ``eval_only``, evaluate ``model.weights``. Runs in every process."""
    # Imported here so that worker processes spawned by ``launch`` import detectron2 after sca.
    from sca.data import datasets  # noqa: F401  (registers the sources)
    from sca.engine.trainer import Trainer, autocast_dtype, evaluate, resolve_device
    from sca.modeling.build import build_model, load_checkpoint

    setup(cfg)
    if cfg.eval_only:
        device = resolve_device(cfg.device)
        model = build_model(cfg).to(device)
        model.autocast_dtype = autocast_dtype(cfg, device)
        if not cfg.model.weights:
            logger.warning("eval_only without model.weights: evaluating randomly initialised weights")
        load_checkpoint(model, cfg.model.weights)
        model.eval()
        with exit_on_startup_error(report=comm.is_main_process()):
            return evaluate(cfg, model)
    with exit_on_startup_error(report=comm.is_main_process()):  # a dataset's files missing, no readable checkpoint
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=cfg.resume)
    try:
        return trainer.train()
    except TrainingStopped as stop:
        logger.warning("%s; its checkpoint is in %s: continue with resume=true", stop, cfg.output_dir)
        raise SystemExit(stop.exit_code) from None


def _uses_cuda(cfg: SCAConfig) -> bool:
    return cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())


def _free_local_url() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{sock.getsockname()[1]}"


def _create_local_process_group(processes_per_machine: int) -> None:
    """detectron2's ``comm`` needs the group of the ranks on this machine (``get_local_rank``)."""
    if hasattr(comm, "create_local_process_group"):  # detectron2 > 0.6
        comm.create_local_process_group(processes_per_machine)
        return
    machine_rank = dist.get_rank() // processes_per_machine
    for machine in range(dist.get_world_size() // processes_per_machine):
        group = dist.new_group(list(range(machine * processes_per_machine, (machine + 1) * processes_per_machine)))
        if machine == machine_rank:
            comm._LOCAL_PROCESS_GROUP = group


def _cpu_worker(local_rank, main_func, world_size, processes_per_machine, machine_rank, dist_url, args) -> None:
    """One gloo rank: what detectron2's ``launch`` does per GPU, on CPU."""
    dist.init_process_group(
        "gloo", init_method=dist_url, world_size=world_size, rank=machine_rank * processes_per_machine + local_rank, timeout=DEFAULT_TIMEOUT
    )
    _create_local_process_group(processes_per_machine)
    comm.synchronize()
    main_func(*args)


def _run_under_torchrun(main_func, use_cuda: bool, args: tuple) -> None:
    local_rank, local_world = int(os.environ["LOCAL_RANK"]), int(os.environ["LOCAL_WORLD_SIZE"])
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if use_cuda else "gloo", init_method="env://", timeout=DEFAULT_TIMEOUT)
    _create_local_process_group(local_world)
    comm.synchronize()
    main_func(*args)


class _ForwardStopSignals:
    """In the process that spawned the ranks: SIGTERM is passed on to them (a Ctrl-C's SIGINT
    already reaches the whole process group), and the spawner keeps waiting for their clean stop."""

    def __enter__(self):
        self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        return self

    def _handle(self, signum, frame) -> None:
        if signum == signal.SIGTERM:
            for child in multiprocessing.active_children():
                os.kill(child.pid, signum)

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def launch_processes(main_func, cfg: SCAConfig, args: tuple = ()) -> None:
    """Run ``main_func(*args)`` in every rank of the layout that ``cfg.dist`` / ``torchrun`` asks for."""
    use_cuda = _uses_cuda(cfg)
    if all(v in os.environ for v in _TORCHRUN_VARIABLES):
        _run_under_torchrun(main_func, use_cuda, args)
        return
    per_machine, machines = cfg.dist.num_gpus, cfg.dist.num_machines
    if per_machine * machines == 1:
        main_func(*args)
        return
    url = cfg.dist.dist_url
    if url == "auto":
        if machines > 1:
            raise ValueError("dist.dist_url=auto works on one machine only; give tcp://<rank-0 host>:<port>")
        url = _free_local_url()
    with _ForwardStopSignals():
        try:
            if use_cuda:
                launch(main_func, per_machine, num_machines=machines, machine_rank=cfg.dist.machine_rank, dist_url=url, args=args)
            else:
                mp.spawn(_cpu_worker, nprocs=per_machine, args=(main_func, per_machine * machines, per_machine, cfg.dist.machine_rank, url, args))
        except mp.ProcessExitedException as error:
            if error.exit_code in [128 + s for s in STOP_SIGNALS]:
                sys.exit(error.exit_code)  # the ranks stopped cleanly on a signal (their logs say where)
            if error.exit_code == STARTUP_ERROR_EXIT_CODE:
                sys.exit(error.exit_code)  # rank 0 printed why
            raise


def launch_from_config(cfg: DictConfig) -> None:
    """Validate the Hydra config and run it on ``dist.num_gpus`` x ``dist.num_machines`` processes."""
    with exit_on_startup_error():
        config = to_config(cfg)
        check_startup(config)
    launch_processes(run, config, args=(config,))
