"""Datasets generated on first use (the demo sources): a folder that is complete or absent."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

__all__ = ["COMPLETE_MARKER", "generate_once"]

COMPLETE_MARKER = "COMPLETE"


def generate_once(root: Path, generate: Callable[[Path], None], version: str, what: str) -> Path:
    """Run ``generate(folder)`` into a temporary sibling of ``root`` and rename it to ``root`` once
    complete (the marker file is written last), unless a complete ``root`` is already there.
    An interrupted generation is never trusted; concurrent ones are harmless (the first rename wins).

    Args:
        root: the dataset folder.
        generate: writes the dataset into the folder it is given.
        version: written into the marker.
        what: the dataset's name, for the error about a folder without the marker.
    """
    if (root / COMPLETE_MARKER).is_file():
        return root
    if root.exists():
        raise FileExistsError(f"{root} exists but holds no complete {what} (no {COMPLETE_MARKER} marker); remove it")
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.partial-", dir=root.parent))
    try:
        generate(staging)
        (staging / COMPLETE_MARKER).write_text(version + "\n")
        try:
            os.rename(staging, root)
        except OSError:  # another process finished first; its copy is identical
            if not (root / COMPLETE_MARKER).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root
