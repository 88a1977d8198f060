"""Checkpoints that are either complete or absent."""

from __future__ import annotations

import glob
import os
import tempfile
from typing import Any, Callable, IO

import torch
from detectron2.checkpoint import DetectionCheckpointer

from sca.config import StartupError

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


class _UnreadableCheckpoint(Exception):
    """A checkpoint file could not be read (its cause says why)."""


class AtomicCheckpointer(DetectionCheckpointer):
    """detectron2's ``DetectionCheckpointer`` whose checkpoint files and ``last_checkpoint`` tag are
    written with :func:`write_atomically`, the checkpoint before the tag that names it: a kill while
    saving leaves the previous checkpoint and tag in place, never a truncated file that ``resume``
    would load. Temporary files left by a killed save are removed when the next one starts.
    ``save_dir`` must be a local folder.

    Resuming falls back, with a warning, from a checkpoint that cannot be read (truncated, corrupt:
    e.g. copied half-way or damaged on disk) to the newest readable one in ``save_dir``; when
    none is readable it raises :class:`~sca.config.StartupError`."""

    def resume_or_load(self, path: str, *, resume: bool = True) -> dict[str, Any]:
        if not (resume and self.has_checkpoint()):
            return super().resume_or_load(path, resume=resume)
        tagged = self.get_checkpoint_file()
        others = sorted((f for f in self.get_all_checkpoint_files() if f != tagged), key=os.path.getmtime, reverse=True)
        unreadable = []
        for candidate in [tagged, *others]:
            self._resuming = True
            try:
                checkpoint = self.load(candidate)
            except _UnreadableCheckpoint as error:
                unreadable.append(f"{os.path.basename(candidate)}: {error.__cause__!r}")
                self.logger.warning("cannot read checkpoint %s (%r); trying the next newest", candidate, error.__cause__)
                continue
            finally:
                self._resuming = False
            if unreadable:
                self.logger.warning(
                    "resumed from %s instead of %s, which last_checkpoint names but cannot be read",
                    os.path.basename(candidate), os.path.basename(tagged),
                )
            return checkpoint
        raise StartupError(
            f"resume=true: no readable checkpoint in {self.save_dir} ({'; '.join(unreadable)}); "
            "remove them to start afresh, or choose another output_dir"
        )

    def _load_file(self, filename: str) -> dict[str, Any]:
        try:
            return super()._load_file(filename)
        except Exception as error:
            if getattr(self, "_resuming", False):  # resume_or_load tries the next newest
                raise _UnreadableCheckpoint(filename) from error
            raise

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
