"""Stopping and resuming: a SIGTERM'd and resumed run equals an uninterrupted one; checkpoints
are never trusted half-written."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from detectron2.engine import hooks
from conftest import assert_same_batches
from detectron2.utils.env import seed_all_rng

from sca.config import StartupError
from sca.config_loading import load_config
from sca.engine.checkpoint import AtomicCheckpointer
from sca.engine.graceful_stop import TrainingStopped
from sca.engine.trainer import Trainer


def small_run(output_dir, max_iter, *overrides):
    """demo + demo_refs (ratio 0.5: some steps have one source, some two), tiny batches, no evaluation."""
    return load_config(
        [
            "data=demo_mix",
            f"output_dir={output_dir}",
            f"solver.max_iter={max_iter}",
            "solver.checkpoint_period=1000",
            "solver.warmup_iters=2",
            "data.num_workers=0",
            "data.sources.demo.batch_size=2",
            "data.sources.demo_refs.batch_size=2",
            "data.sources.demo_refs.sampling_ratio=0.5",
            "data.test_datasets=[]",
            "log_period=1",
            *overrides,
        ]
    )


@pytest.fixture
def deterministic_cpu():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(False)
    torch.set_num_threads(threads)


def train(cfg, resume=False, sigterm_after=None):
    """Train; returns (batches seen, {iteration: losses}, TrainingStopped or None)."""
    seed_all_rng(cfg.seed)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=resume)
    batches = []
    trainer.model.register_forward_pre_hook(lambda module, args: batches.append(args[0]))
    if sigterm_after is not None:
        send = hooks.CallbackHook(after_step=lambda t: t.iter == sigterm_after and os.kill(os.getpid(), signal.SIGTERM))
        trainer.register_hooks([send])
    stopped = None
    try:
        trainer.train()
    except TrainingStopped as error:
        stopped = error
    losses = {}
    for name, history in trainer.storage.histories().items():
        if name.startswith("loss_"):
            for value, iteration in history.values():
                losses.setdefault(iteration, {})[name] = value
    return batches, losses, stopped


def test_sigterm_then_resume_equals_an_uninterrupted_run(tmp_path, deterministic_cpu):
    handler = signal.getsignal(signal.SIGTERM)
    full_batches, full_losses, stopped = train(small_run(tmp_path / "full", 6))
    assert stopped is None and sorted(full_losses) == list(range(6))
    assert {len(b) for b in full_batches} == {1, 2}  # the schedule mixes one- and two-source steps

    cut = tmp_path / "cut"
    first_batches, first_losses, stopped = train(small_run(cut, 6), sigterm_after=2)
    assert stopped is not None and stopped.signum == signal.SIGTERM and stopped.iteration == 3
    assert signal.getsignal(signal.SIGTERM) == handler  # handlers restored after training
    assert (cut / "last_checkpoint").read_text() == "model_0000003.pth"
    assert torch.load(cut / "model_0000003.pth", weights_only=False)["iteration"] == 3
    assert not list(cut.glob(".*.tmp"))

    rest_batches, rest_losses, stopped = train(small_run(cut, 6), resume=True)
    assert stopped is None
    assert_same_batches(first_batches + rest_batches, full_batches)
    assert {**first_losses, **rest_losses} == full_losses  # bit-identical losses on CPU
    assert torch.load(cut / "model_final.pth", weights_only=False)["iteration"] == 5


SLOW_SAVE = """
import sys, time, torch
from sca.engine.checkpoint import AtomicCheckpointer
checkpointer = AtomicCheckpointer(torch.nn.Linear(4, 4), sys.argv[1])
checkpointer.save("model_0000001", iteration=1)
def slow_save(data, f):
    f.write(b"PK-partial-checkpoint")
    f.flush()
    time.sleep(60)
torch.save = slow_save
print("saving", flush=True)
checkpointer.save(sys.argv[2], iteration=2)
"""


@pytest.mark.parametrize("name", ["model_0000002", "model_0000001"])  # a new file, or overwriting the last one
def test_a_kill_while_saving_leaves_the_previous_checkpoint_trusted(tmp_path, name):
    process = subprocess.Popen([sys.executable, "-c", SLOW_SAVE, str(tmp_path), name], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "saving\n"
    deadline = time.time() + 60
    while not list(tmp_path.glob(".*.tmp")) and time.time() < deadline:
        time.sleep(0.05)
    process.kill()
    process.wait()
    assert list(tmp_path.glob(f".{name}.pth.*.tmp"))  # the half-written data never got the real name
    checkpointer = AtomicCheckpointer(torch.nn.Linear(4, 4), str(tmp_path))
    assert checkpointer.get_checkpoint_file() == str(tmp_path / "model_0000001.pth")
    assert checkpointer.resume_or_load("", resume=True)["iteration"] == 1
    assert not (tmp_path / "model_0000002.pth").exists()
    checkpointer.save("model_0000003", iteration=3)
    assert not list(tmp_path.glob(".*.tmp"))  # the next save clears what the killed one left


def logged_rows(output_dir) -> list[dict]:
    import json

    return [json.loads(line) for line in (output_dir / "metrics.json").read_text().splitlines()]


def test_resume_after_a_kill_logs_each_iteration_once_and_continues_the_data_counters(tmp_path, caplog):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    full, cut = tmp_path / "full", tmp_path / "cut"
    train(small_run(full, 4))
    train(small_run(cut, 4, "solver.checkpoint_period=2"))
    # As after a kill -9 at iteration 3: metrics logged up to 3, the last checkpoint at 1.
    (cut / "model_final.pth").unlink()
    (cut / "model_0000003.pth").unlink()
    (cut / "last_checkpoint").write_text("model_0000001.pth")
    train(small_run(cut, 4, "solver.checkpoint_period=2"), resume=True)
    rows = logged_rows(cut)
    assert [r["iteration"] for r in rows] == [0, 1, 2, 3]
    counters = [k for k in rows[-1] if k.startswith("data/")]
    assert "data/demo/samples" in counters and {k: rows[-1][k] for k in counters} == {k: logged_rows(full)[-1][k] for k in counters}
    events = EventAccumulator(str(cut))
    events.Reload()
    assert [e.step for e in events.Scalars("total_loss")] == [0, 1, 2, 3]  # TensorBoard drops the re-run steps' old events


def test_resume_falls_back_from_an_unreadable_checkpoint(tmp_path, caplog):
    run = tmp_path / "run"
    train(small_run(run, 4, "solver.checkpoint_period=2"))
    final = run / "model_final.pth"
    final.write_bytes(final.read_bytes()[:1000])  # truncated
    with caplog.at_level("WARNING"):
        trainer = Trainer(small_run(run, 6, "solver.checkpoint_period=2"))
        trainer.resume_or_load(resume=True)
    assert trainer.start_iter == 4  # model_0000003.pth, the newest readable one
    assert "cannot read checkpoint" in caplog.text and "resumed from model_0000003.pth instead of model_final.pth" in caplog.text
    for checkpoint in run.glob("*.pth"):
        checkpoint.write_bytes(b"garbage")
    with pytest.raises(StartupError, match="resume=true: no readable checkpoint in .*model_final.pth"):
        Trainer(small_run(run, 6)).resume_or_load(resume=True)


def test_resume_with_nothing_to_resume_warns(tmp_path, caplog):
    with caplog.at_level("WARNING"):
        trainer = Trainer(small_run(tmp_path, 2))
        trainer.resume_or_load(resume=True)
    assert trainer.start_iter == 0 and "resume=true, but" in caplog.text and "holds no checkpoint" in caplog.text
