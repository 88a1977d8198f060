"""Shared fixtures. ``import sca`` first: it applies the detectron2 compatibility layer."""

import os

import pytest
import torch

os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")

import sca  # noqa: E402,F401
import sca.data.datasets  # noqa: E402,F401  (registers the sources)


def pytest_sessionfinish(session, exitstatus):
    """A run in which no test passed must not succeed (pytest only fails when none is collected)."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if exitstatus == 0 and reporter is not None and not reporter.stats.get("passed"):
        session.exitstatus = pytest.ExitCode.NO_TESTS_COLLECTED


@pytest.fixture(scope="session")
def demo_records():
    """Records of the registered demo splits (generated into the cache on first use)."""
    from detectron2.data import DatasetCatalog

    return {name: DatasetCatalog.get(name) for name in ("sca_demo_train", "sca_demo_val")}


@pytest.fixture(scope="session")
def tokenizer():
    from sca.data.caption_tokenizer import CaptionTokenizer

    return CaptionTokenizer.from_config("", max_tokens=8)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A training output directory (config.yaml, checkpoint, evaluation files) from a few iterations
    of ``train_net.py`` with the tiny demo model."""
    import subprocess
    import sys
    from pathlib import Path

    output_dir = tmp_path_factory.mktemp("trained_run")
    overrides = [
        f"output_dir={output_dir}",
        "solver.max_iter=4",
        "data.num_workers=0",
        "evaluation.max_images=2",
        "evaluation.metrics=[exact_match]",
    ]
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, "train_net.py", *overrides], cwd=root, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return output_dir


@pytest.fixture(scope="session")
def load_tool():
    """Import a script of ``tools/`` by path (detectron2's wheel installs an unrelated ``tools`` package)."""
    import importlib.util
    from pathlib import Path

    def load(name: str):
        path = Path(__file__).resolve().parent.parent / "tools" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"sca_tool_{name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


def assert_same_batches(first: list[dict], second: list[dict]) -> None:
    """Two sequences of training steps ``{source: batch}`` are identical, tensor for tensor."""
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert a.keys() == b.keys()
        for name in a:
            assert a[name]["image_ids"] == b[name]["image_ids"]
            assert torch.equal(a[name]["images"], b[name]["images"])
            for key, value in a[name]["regions"].items():
                other = b[name]["regions"][key]
                assert torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other, key


@pytest.fixture(scope="session")
def run_preparation():
    """Run ``datasets/<name>.py`` as ``__main__`` in this process with ``args`` (and from ``cwd``
    when given); returns (exit code, stdout + stderr)."""
    import contextlib
    import io
    import runpy
    import sys
    from pathlib import Path

    def run(name: str, *args, cwd=None) -> tuple[int, str]:
        argv, old_cwd, output, code = sys.argv, os.getcwd(), io.StringIO(), 0
        sys.argv = [name, *map(str, args)]
        try:
            if cwd is not None:
                os.chdir(cwd)
            with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
                runpy.run_path(str(Path(__file__).resolve().parent.parent / "datasets" / f"{name}.py"), run_name="__main__")
        except SystemExit as exit_:
            code = exit_.code
        finally:
            sys.argv = argv
            os.chdir(old_cwd)
        return code, output.getvalue()

    return run
