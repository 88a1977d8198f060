"""Every error or stop ends every process of a run (2 gloo ranks, each with a loader worker) within
seconds, with the right exit code and the error as the last message: no process waits forever."""

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow  # each test starts 2 ranks and 2 workers: ~30 s on 2 cores

# Faults injected into every process of the run (ranks and workers import ``sitecustomize`` too).
FAULTS = {
    "disk_full": """
        import errno, os
        fsync = os.fsync
        def full_disk_fsync(fd):
            if ".model_" in os.readlink(f"/proc/self/fd/{fd}"):  # a checkpoint's temporary file
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            fsync(fd)
        os.fsync = full_disk_fsync
    """,
    "unreadable_images": """
        import PIL.Image
        open_image = PIL.Image.open
        def unreadable_jpeg(path, *args, **kwargs):
            if str(getattr(path, "name", path)).endswith(".jpg"):  # detectron2 passes the open file
                raise OSError(f"cannot identify image file {path!r}")
            return open_image(path, *args, **kwargs)
        PIL.Image.open = unreadable_jpeg
    """,
}


def start_run(tmp_path, *overrides, fault=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if fault:
        (tmp_path / "faults").mkdir()
        (tmp_path / "faults" / "sitecustomize.py").write_text(textwrap.dedent(FAULTS[fault]))
        env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "faults"), env.get("PYTHONPATH", "")])
    command = [
        sys.executable, "train_net.py", f"output_dir={tmp_path / 'run'}", "data=demo", "device=cpu", "num_threads=1",
        "dist.num_gpus=2", "data.num_workers=1", "data.sources.demo.batch_size=1", "data.test_datasets=[]",
        "solver.max_iter=100000", "log_period=1", *overrides,
    ]  # fmt: skip
    with open(tmp_path / "output.txt", "w") as output:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)


def finish(process, output_file, *, signal_after_iteration=None, timeout=240):
    """Waits for the run to end, noting every process it started; sends SIGTERM once the log shows
    ``signal_after_iteration``. Returns (exit code, output, seconds from the end of the main
    process until all its processes were gone). Kills whatever is left after ``timeout``."""
    main, seen, deadline = psutil.Process(process.pid), set(), time.time() + timeout
    while process.poll() is None and time.time() < deadline:
        with contextlib.suppress(psutil.NoSuchProcess):  # the main process just ended
            seen.update(main.children(recursive=True))
        if signal_after_iteration is not None and f"iter: {signal_after_iteration} " in output_file.read_text():
            process.send_signal(signal.SIGTERM)
            signal_after_iteration = None
        time.sleep(0.2)
    ended = time.time()
    while running(seen) and time.time() < ended + 10:
        time.sleep(0.2)
    lingered, alive = time.time() - ended, running(seen)
    for leftover in alive + ([main] if process.poll() is None else []):
        leftover.kill()
    process.wait()
    assert not alive and ended < deadline, f"processes still running: {alive or [main]}"
    return process.returncode, output_file.read_text(), lingered


def running(processes) -> list:
    alive = []
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):  # gone: not running
            if process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
    return alive


def last_lines(output: str, count: int) -> str:
    return "\n".join([line for line in output.splitlines() if line.strip()][-count:])


def test_nan_loss_ends_every_process(tmp_path):
    process = start_run(tmp_path, "solver.base_lr=1e15", "solver.warmup_iters=0", "solver.clip_grad_norm=0")
    code, output, lingered = finish(process, tmp_path / "output.txt")
    assert code == 1 and lingered < 10
    assert "FloatingPointError: Loss became infinite or NaN" in last_lines(output, 30)


def test_full_disk_while_checkpointing_ends_every_process(tmp_path):
    process = start_run(tmp_path, "solver.checkpoint_period=2", fault="disk_full")
    code, output, lingered = finish(process, tmp_path / "output.txt")
    assert code == 1 and lingered < 10
    assert "No space left on device" in last_lines(output, 30)
    assert not list((tmp_path / "run").glob("*.pth"))  # nothing half-written under a real name


def test_mapping_failure_cap_ends_every_process(tmp_path):
    process = start_run(tmp_path, fault="unreadable_images")
    code, output, lingered = finish(process, tmp_path / "output.txt")
    assert code == 1 and lingered < 10
    assert "MappingFailureError: source demo: 20 records in a row could not be mapped (0 raised, 20 had no usable region or image)" in last_lines(output, 40)


def test_sigterm_to_a_two_process_run_ends_every_process(tmp_path):
    process = start_run(tmp_path, "solver.checkpoint_period=100000")
    code, output, lingered = finish(process, tmp_path / "output.txt", signal_after_iteration=1)
    assert code == 128 + signal.SIGTERM and lingered < 10, output[-3000:]
    assert (tmp_path / "run" / "last_checkpoint").is_file()
