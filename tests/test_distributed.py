"""DDP on CPU: two gloo processes started like ``train_net.py dist.num_gpus=2``, and ``torchrun``."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sca.config_loading import load_config
from sca.engine.launch import launch_processes

ROOT = Path(__file__).resolve().parent.parent


def record_rank(cfg, result_dir):
    """Runs in each rank: train, then save the image ids it saw per step and its parameters."""
    from detectron2.utils import comm

    from sca.data import datasets  # noqa: F401  (registers the sources in the spawned process)
    from sca.engine.launch import setup
    from sca.engine.trainer import Trainer

    setup(cfg)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    seen = []
    trainer.model.register_forward_pre_hook(lambda module, args: seen.append({k: b["image_ids"] for k, b in args[0].items()}))
    trainer.train()
    params = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    torch.save({"seen": seen, "params": params}, os.path.join(result_dir, f"rank{comm.get_rank()}.pt"))


def test_two_gloo_ranks_train_in_lockstep_on_disjoint_samples(tmp_path):
    output_dir = tmp_path / "run"
    cfg = load_config(
        [
            "data=demo_mix",
            f"output_dir={output_dir}",
            "dist.num_gpus=2",
            "device=cpu",
            "num_threads=1",
            "solver.max_iter=4",
            "solver.checkpoint_period=1000",
            "data.num_workers=0",
            "data.sources.demo.batch_size=2",
            "data.sources.demo_refs.batch_size=2",
            "data.sources.demo_refs.sampling_ratio=0.5",
            "data.test_datasets=[]",
        ]
    )
    launch_processes(record_rank, cfg, args=(cfg, str(tmp_path)))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert len(ranks[0]["seen"]) == len(ranks[1]["seen"]) == 4
    for step0, step1 in zip(ranks[0]["seen"], ranks[1]["seen"]):
        assert step0.keys() == step1.keys()  # lockstep: the same sources at every step
    for source in ("demo", "demo_refs"):
        ids = [{i for step in rank["seen"] for i in step.get(source, [])} for rank in ranks]
        assert ids[0] and ids[1] and not ids[0] & ids[1]
    for name, value in ranks[0]["params"].items():
        assert torch.equal(value, ranks[1]["params"][name]), name
    assert sorted(p.name for p in output_dir.glob("*.pth")) == ["model_final.pth"]
    checkpoint = torch.load(output_dir / "model_final.pth", weights_only=False)
    assert all(torch.equal(v, checkpoint["model"][k]) for k, v in ranks[0]["params"].items())
    assert "Saving checkpoint" in (output_dir / "log.txt").read_text()
    assert "Saving checkpoint" not in (output_dir / "log.txt.rank1").read_text()


def last_logged_iteration(output_dir: Path) -> int:
    metrics = output_dir / "metrics.json"
    if not metrics.is_file():
        return -1
    return max((json.loads(line)["iteration"] for line in metrics.read_text().splitlines() if line.strip()), default=-1)


@pytest.mark.slow
def test_torchrun_ranks_stop_together_on_sigterm_with_a_consistent_checkpoint(tmp_path):
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train_net.py",
        f"output_dir={tmp_path}", "device=cpu", "num_threads=1", "data=demo_mix", "solver.max_iter=100000",
        "solver.checkpoint_period=100000", "data.num_workers=1", "log_period=1",
    ]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while last_logged_iteration(tmp_path) < 2 and process.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    assert process.poll() is None, process.stdout.read()[-3000:]
    process.send_signal(signal.SIGTERM)
    log = process.communicate(timeout=120)[0]
    assert process.returncode != 0
    logs = [(tmp_path / name).read_text() for name in ("log.txt", "log.txt.rank1")]
    assert all("world size 2 (backend gloo)" in text for text in logs)
    stops = [line.split("after iteration ")[1].split(";")[0] for text in logs for line in text.splitlines() if "stopped by SIGTERM" in line]
    assert len(stops) == 2 and stops[0] == stops[1], log[-3000:]
    iteration = int(stops[0])
    assert (tmp_path / "last_checkpoint").read_text() == f"model_{iteration:07d}.pth"
    assert torch.load(tmp_path / f"model_{iteration:07d}.pth", weights_only=False)["iteration"] == iteration
    assert last_logged_iteration(tmp_path) == iteration
