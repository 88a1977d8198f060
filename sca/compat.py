"""detectron2 import compatibility, applied once before detectron2 is imported.

The Python-only detectron2 v0.6 (PyPI ``pb1-detectron2``, built without extensions) needs three
things on today's stack. Each is applied only when the *installed* detectron2 needs it:

1. ``detectron2._C``: when no compiled extension is installed, a stand-in module whose ops raise
   :class:`MissingCompiledOpError` naming the op. The data, engine and evaluation paths used by
   SCA never call them.
2. numpy aliases ``np.bool/int/float/object`` (removed in numpy 1.24) when detectron2's source
   still uses them.
3. ``PIL.Image.LINEAR`` (removed in Pillow 10) when detectron2's source still uses it.
4. On Python >= 3.11, ``MapDataset``'s fallback when a mapper returns ``None`` (skip this sample):
   v0.6 draws the replacement index with ``random.sample(<set>)``, which Python 3.11 refuses, so
   the first skipped training sample would end training. Its candidate set is made sampleable
   right after ``detectron2.data.common`` is imported.

``import sca`` calls :func:`apply`, so importing anything from ``sca`` first is enough.
"""

from __future__ import annotations

import importlib.machinery
import collections.abc
import importlib.abc
import importlib.util
import itertools
import logging
import re
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["MissingCompiledOpError", "CompatReport", "apply"]

logger = logging.getLogger(__name__)

FULL_BUILD_HINT = (
    "Install a full build of detectron2 from source where GitHub is reachable: "
    "pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git'"
)

_NUMPY_ALIASES = {"bool": bool, "int": int, "float": float, "object": object}
_NUMPY_ALIAS_RE = re.compile(r"\bnp\.(bool|int|float|object)\b(?![_\w])")
_PIL_LINEAR_RE = re.compile(r"\bImage\.LINEAR\b")
_SET_SAMPLE_RE = re.compile(r"\.sample\(self\._fallback_candidates\b")


class MissingCompiledOpError(RuntimeError):
    """A detectron2 compiled (C++/CUDA) op was called but this detectron2 has no extensions."""


@dataclass
class CompatReport:
    """What :func:`apply` did, for logs and tests."""

    detectron2_found: bool = False
    stub_compiled_ops: bool = False
    numpy_aliases: list[str] = field(default_factory=list)
    pil_linear: bool = False
    map_dataset_fallback: bool = False

    @property
    def applied(self) -> bool:
        return self.stub_compiled_ops or bool(self.numpy_aliases) or self.pil_linear or self.map_dataset_fallback


class _MissingCompiledOps(types.ModuleType):
    """Stand-in for ``detectron2._C``: every op is a function that raises a clear error."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)

        def missing_op(*args, **kwargs):
            raise MissingCompiledOpError(
                f"detectron2 compiled op '{name}' is not available: the installed detectron2 was "
                f"built without its C++/CUDA extensions. {FULL_BUILD_HINT}"
            )

        missing_op.__name__ = name
        return missing_op


_report: CompatReport | None = None


def _detectron2_dir() -> Path | None:
    spec = importlib.util.find_spec("detectron2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _has_compiled_ops(package_dir: Path) -> bool:
    return any(next(package_dir.glob("_C" + suffix), None) for suffix in importlib.machinery.EXTENSION_SUFFIXES)


def _read_sources(package_dir: Path) -> str:
    return "\n".join(p.read_text("utf-8", "replace") for p in sorted(package_dir.rglob("*.py")))


def apply() -> CompatReport:
    """Patch the environment for the installed detectron2 (idempotent). Call before importing it."""
    global _report
    if _report is not None:
        return _report
    report = CompatReport()
    package_dir = _detectron2_dir()
    if package_dir is not None:
        report.detectron2_found = True
        if not _has_compiled_ops(package_dir) and "detectron2._C" not in sys.modules:
            sys.modules["detectron2._C"] = _MissingCompiledOps("detectron2._C", "missing compiled ops")
            report.stub_compiled_ops = True
        source = _read_sources(package_dir)
        _apply_numpy_aliases(source, report)
        _apply_pil_linear(source, report)
        _apply_map_dataset_fallback(source, report)
    if report.applied:
        logger.debug("detectron2 compatibility applied: %s", report)
    _report = report
    return report


def _apply_numpy_aliases(source: str, report: CompatReport) -> None:
    import numpy as np

    missing = {name for name in _NUMPY_ALIASES if name not in np.__dict__}
    used = {match.group(1) for match in _NUMPY_ALIAS_RE.finditer(source)}
    for name in sorted(missing & used):
        setattr(np, name, _NUMPY_ALIASES[name])
        report.numpy_aliases.append(name)


def _apply_pil_linear(source: str, report: CompatReport) -> None:
    from PIL import Image

    if hasattr(Image, "LINEAR") or not _PIL_LINEAR_RE.search(source):
        return
    Image.LINEAR = Image.BILINEAR
    report.pil_linear = True


class _SampleableSet(set):
    """A set that ``random.sample`` accepts (Python >= 3.11 wants a sequence): indexable in
    iteration order. Only one element is drawn per skipped sample, so O(n) indexing is fine."""

    def __getitem__(self, index: int):
        return next(itertools.islice(iter(self), index, None))


collections.abc.Sequence.register(_SampleableSet)


def _sampleable_fallback(common) -> None:
    """Make ``MapDataset``'s fallback candidates a :class:`_SampleableSet`."""
    original_init = common.MapDataset.__init__

    def __init__(self, dataset, map_func):
        original_init(self, dataset, map_func)
        self._fallback_candidates = _SampleableSet(self._fallback_candidates)

    common.MapDataset.__init__ = __init__


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    """Runs ``patch(module)`` once ``name`` has been imported (before anyone else uses it)."""

    def __init__(self, name: str, patch):
        self.name, self.patch = name, patch

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            self.patch(module)

        spec.loader.exec_module = exec_and_patch
        return spec


def _apply_map_dataset_fallback(source: str, report: CompatReport) -> None:
    if sys.version_info < (3, 11) or not _SET_SAMPLE_RE.search(source):
        return
    if "detectron2.data.common" in sys.modules:
        _sampleable_fallback(sys.modules["detectron2.data.common"])
    else:
        sys.meta_path.insert(0, _PatchAfterImport("detectron2.data.common", _sampleable_fallback))
    report.map_dataset_fallback = True
