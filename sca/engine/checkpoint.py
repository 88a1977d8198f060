"""Checkpoints that are either complete or absent."""

from __future__ import annotations

import glob
import os
import tempfile
from typing import Any, Callable, IO

import torch
from detectron2.checkpoint import DetectionCheckpointer

__all__ = ["AtomicCheckpointer", "write_atomically"]


def write_atomically(path: str, write: Callable[[IO[bytes]], Any]) -> None:
    """Write ``path`` through a temporary file in the same folder, flushed to disk, then renamed
    over ``path`` (``os.replace`` is atomic): readers see the old file or the complete new one.

    Args:
        path: local file to write.
        write: called with the open binary temporary file.
    """
    directory, name = os.path.split(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    directory_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(directory_fd)  # the rename itself survives a crash
    finally:
        os.close(directory_fd)


class AtomicCheckpointer(DetectionCheckpointer):
    """detectron2's ``DetectionCheckpointer`` whose checkpoint files and ``last_checkpoint`` tag are
    written with :func:`write_atomically`, the checkpoint before the tag that names it: a kill while
    saving leaves the previous checkpoint and tag in place, never a truncated file that ``resume``
    would load. Temporary files left by a killed save are removed when the next one starts.
    ``save_dir`` must be a local folder."""

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        for pattern in (".*.pth.*.tmp", ".last_checkpoint.*.tmp"):
            for stale in glob.glob(os.path.join(self.save_dir, pattern)):
                os.unlink(stale)
        data = {"model": self.model.state_dict()}
        data.update({key: obj.state_dict() for key, obj in self.checkpointables.items()})
        data.update(kwargs)
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", path)
        write_atomically(path, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        write_atomically(os.path.join(self.save_dir, "last_checkpoint"), lambda f: f.write(last_filename_basename.encode()))
