"""Start-up errors are one line on stderr naming the path and what to do, with exit status 2."""

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sca.config_loading import load_config
from sca.engine.preflight import StartupError, check_startup

ROOT = Path(__file__).resolve().parent.parent


def train_net(*overrides, env=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "train_net.py", *overrides], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # one train_net.py start-up per case: ~10 s each
@pytest.mark.parametrize(
    "case, expected",
    [
        ("weights", "model.weights: no checkpoint file or save_pretrained directory at '{tmp}/missing.pth'"),
        ("model_dir", "model.sam: no directory '{tmp}/sam-vit-base'"),
        ("output_dir", "output_dir: cannot write to '{tmp}/a_file/run'"),
        ("dataset", "dataset sca_objects365_v2_train: {tmp}/objects365/annotations/zhiyuan_objv2_train.json not found"),
    ],
)
def test_start_up_errors_are_one_line_and_exit_2(tmp_path, case, expected):
    (tmp_path / "a_file").write_text("not a folder")
    overrides, env = [f"output_dir={tmp_path / 'run'}"], None
    if case == "weights":
        overrides.append(f"model.weights={tmp_path / 'missing.pth'}")
    elif case == "model_dir":
        overrides += ["model=sam_vit_b_gpt2", f"model.sam={tmp_path / 'sam-vit-base'}"]
    elif case == "output_dir":
        overrides = [f"output_dir={tmp_path / 'a_file' / 'run'}"]
    else:
        overrides += ["data=objects365", "data.num_workers=0"]
        env = {"DETECTRON2_DATASETS": str(tmp_path)}
    result = train_net(*overrides, env=env)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-3000:]
    # (torch's FutureWarning about torch.jit.script, raised while detectron2 is imported, may precede it)
    assert "Traceback" not in result.stderr and [line for line in lines if line.startswith("error: ")] == lines[-1:]
    assert lines[-1].startswith("error: " + expected.format(tmp=tmp_path)), result.stderr[-3000:]


def test_a_full_output_dir_is_a_start_up_error(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    cfg = load_config([f"output_dir={tmp_path}"])
    check_startup(cfg)
    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(StartupError, match=f"output_dir: cannot write to '{tmp_path}' \\(No space left on device\\)"):
        check_startup(cfg)
    assert not list(tmp_path.iterdir())  # the probe is removed
