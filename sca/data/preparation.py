"""What the preparation scripts in ``datasets/`` share: the datasets root, input problems reported
as a message (no stack trace), atomic outputs and a parallel map with a progress bar."""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import nullcontext
from multiprocessing import Pool
from pathlib import Path
from typing import Callable, Iterator, TextIO

import numpy as np
from PIL import Image
from tqdm import tqdm

__all__ = [
    "PreparationError",
    "argument_parser",
    "datasets_root",
    "require",
    "save_png",
    "save_json",
    "write_text_atomically",
    "parallel_map",
    "run",
]


class PreparationError(Exception):
    """An input is missing or malformed; the message says which and what to do."""


def argument_parser(description: str) -> argparse.ArgumentParser:
    """The options every preparation script takes: ``--root`` and ``--workers``."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", help="datasets root (default: $DETECTRON2_DATASETS, else ./datasets)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)")
    return parser


def datasets_root(root: str | None) -> Path:
    """``root``, else ``$DETECTRON2_DATASETS``, else ``./datasets``, as an absolute path."""
    return Path(os.path.expanduser(root or os.getenv("DETECTRON2_DATASETS", "datasets"))).absolute()


def require(path: Path, hint: str) -> Path:
    """``path`` if it exists; otherwise a :class:`PreparationError` naming it, followed by ``hint``."""
    if not path.exists():
        raise PreparationError(f"missing {path}\n  {hint}")
    return path


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file in the same folder, renamed into place only when complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        write(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def save_png(path: Path, array: np.ndarray) -> None:
    """Save ``array`` (HxW uint8 or HxWx3 uint8) as a PNG, atomically."""
    _atomic(path, lambda partial: Image.fromarray(array).save(partial, format="PNG"))


def save_json(path: Path, content: dict) -> None:
    """Save ``content`` as JSON, atomically."""
    write_text_atomically(path, lambda f: json.dump(content, f))


def write_text_atomically(path: Path, write: Callable[[TextIO], None]) -> None:
    """Call ``write`` with a text file that becomes ``path`` only once ``write`` returns (for
    outputs written piece by piece)."""

    def write_partial(partial: Path) -> None:
        with open(partial, "w", encoding="utf-8") as f:
            write(f)

    _atomic(path, write_partial)


def parallel_map(function: Callable, items: list, workers: int, desc: str) -> Iterator:
    """``function`` over ``items`` on ``workers`` processes (results unordered), with a progress bar."""
    with tqdm(total=len(items), desc=desc, unit="img", dynamic_ncols=True) as progress:
        with Pool(workers) if workers > 1 else nullcontext() as pool:
            results = pool.imap_unordered(function, items, chunksize=8) if pool else map(function, items)
            for result in results:
                progress.update()
                yield result


def run(main: Callable[[], None]) -> None:
    """Run a script's ``main``: exit 0 when done; exit 2 with the message of a
    :class:`PreparationError` (what is missing and where to get it) instead of a stack trace."""
    try:
        main()
    except PreparationError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: finished outputs are kept, a new run continues from them", file=sys.stderr)
        sys.exit(130)
