"""What the preparation scripts in ``datasets/`` share: the datasets root, input problems reported
as a message (no stack trace), atomic outputs, a parallel map with a progress bar, and the image
check of the box sources (indexed once, each image decoded)."""

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
    "index_images",
    "check_image",
    "check_images",
    "run",
]

_EXIF_ORIENTATION = 0x0112
_SWAPPED_ORIENTATIONS = (5, 6, 7, 8)  # EXIF rotations by 90 degrees: width and height swap when applied


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


def index_images(folder: Path) -> set[str]:
    """Paths of the files under ``folder`` (walked once, following symbolic links)."""
    found: set[str] = set()
    with tqdm(desc=f"indexing {folder}", unit=" files", dynamic_ncols=True) as progress:
        for directory, _, files in os.walk(os.path.normpath(folder), followlinks=True):
            found.update(os.path.join(directory, name) for name in files)
            progress.update(len(files))
    return found


def check_image(task: tuple[int, str, int, int]) -> tuple[int, str]:
    """(index, "ok" | "corrupt" | "size_mismatch") for one image, decoded at reduced scale."""
    index, path, width, height = task
    try:
        with Image.open(path) as image:
            size = image.size
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
            image.draft("RGB", (max(size[0] // 8, 1), max(size[1] // 8, 1)))
            image.load()
    except Exception:  # noqa: BLE001  (any decoding failure means the file is unusable)
        return index, "corrupt"
    if orientation in _SWAPPED_ORIENTATIONS:
        size = size[::-1]
    return index, "ok" if size == (width, height) else "size_mismatch"


def check_images(records, on_disk: set[str], workers: int, desc: str) -> np.ndarray:
    """Per record of a :class:`~sca.data.datasets.box_records.BoxRecords`: "missing" (not in
    ``on_disk``), "corrupt", "size_mismatch" (not its recorded size) or "ok"."""
    paths = [records.file_name(i) for i in range(len(records))]
    status = np.full(len(records), "missing", dtype=object)
    tasks = [(i, path, int(records.widths[i]), int(records.heights[i])) for i, path in enumerate(paths) if path in on_disk]
    for index, outcome in parallel_map(check_image, tasks, workers, desc=desc):
        status[index] = outcome
    return status


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
