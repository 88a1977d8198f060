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
