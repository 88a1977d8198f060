"""Start-up checks: what a run needs from the file system, checked before any work, each failure
one line naming the path and what to do, printed before the process exits with status 2."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from sca.config import SCAConfig, StartupError

__all__ = ["STARTUP_ERROR_EXIT_CODE", "OutputDirCheck", "StartupError", "check_output_dir", "check_startup", "exit_on_startup_error"]

STARTUP_ERROR_EXIT_CODE = 2

_PROBE_BYTES = 1 << 20  # written (and removed) to prove that output_dir takes data


@contextlib.contextmanager
def exit_on_startup_error(report: bool = True):
    """A :class:`StartupError` (config errors included) raised inside becomes one line on stderr
    (when ``report``) and ``SystemExit(2)``, instead of a traceback."""
    try:
        yield
    except StartupError as error:
        if report:
            print(f"error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(STARTUP_ERROR_EXIT_CODE) from None


def _looks_like_a_path(name: str) -> bool:
    """A local path rather than a hub id (``facebook/sam-vit-huge``)."""
    return os.path.isabs(name) or name.startswith((".", "~"))


def check_startup(cfg: SCAConfig) -> None:
    """Raises :class:`StartupError` for a missing ``model.weights`` or model directory, or an
    ``output_dir`` that cannot be written (read-only, full). Dataset files are checked by their
    loaders, whose errors :func:`~sca.engine.launch.run` turns into the same one-line form."""
    weights = cfg.model.weights
    if weights and not os.path.exists(weights):
        raise StartupError(f"model.weights: no checkpoint file or save_pretrained directory at '{weights}'; fix the path or leave it empty")
    for key in ("sam", "language_model", "tokenizer"):
        name = getattr(cfg.model, key)
        if name and _looks_like_a_path(name) and not os.path.isdir(os.path.expanduser(name)):
            raise StartupError(
                f"model.{key}: no directory '{name}'; give a directory written by save_pretrained or a hub name"
            )
    check_output_dir(cfg.output_dir)


def check_output_dir(output_dir: str) -> None:
    """Raises :class:`StartupError` when ``output_dir`` cannot be created or written (full disk)."""
    try:
        os.makedirs(output_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir) as probe:
            probe.write(bytes(_PROBE_BYTES))
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as error:
        raise StartupError(
            f"output_dir: cannot write to '{output_dir}' ({error.strerror or error}); free space or choose another output_dir=..."
        ) from None


class OutputDirCheck(Callback):
    """Hydra callback (``conf/config.yaml``): checks ``output_dir`` before Hydra creates it as the
    run directory and writes ``.hydra/`` there, so that this error too is one line and exit 2."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        with exit_on_startup_error():
            check_output_dir(config.output_dir)
