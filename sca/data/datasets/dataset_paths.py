"""Paths named by annotation files, kept inside their dataset folder.

A ``file_name`` that leaves its folder (absolute, or ``..`` past the folder) is never opened: the
record naming it is dropped and counted, and the first few are named in a warning, so one bad
record never makes a split unusable. The check is on the path as written (symbolic links placed
inside the dataset tree are followed as usual).
"""

from __future__ import annotations

import logging
import os

__all__ = ["path_inside", "warn_escaping"]

logger = logging.getLogger(__name__)


def path_inside(root: str, relative: str) -> str | None:
    """``root/relative`` normalized, or ``None`` when ``relative`` is absolute or leaves ``root``."""
    root = os.path.normpath(root)
    path = os.path.normpath(os.path.join(root, relative))
    if os.path.isabs(relative) or not path.startswith(root + os.sep):
        return None
    return path


def warn_escaping(what: str, root: str, file_names: list[str], count: int | None = None, max_named: int = 5) -> None:
    """Log that ``count`` records of ``what`` (default: one per name in ``file_names``) were dropped
    because their ``file_name`` leaves ``root``, naming the first ``max_named``. Nothing when none was."""
    count = len(file_names) if count is None else count
    if count:
        more = ", ..." if count > max_named else ""
        logger.warning(
            "%s: dropped %d record(s) whose file_name leaves the dataset folder %s (not opened): %s%s",
            what, count, root, ", ".join(repr(n) for n in file_names[:max_named]), more,
        )
