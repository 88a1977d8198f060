"""Registering a split in detectron2's catalogs, replaceably."""

from __future__ import annotations

from typing import Any, Callable

from detectron2.data import DatasetCatalog, MetadataCatalog

__all__ = ["register_split"]


def register_split(name: str, loader: Callable[[], list[dict]], metadata: dict[str, Any]) -> None:
    """Register ``loader`` (run on first request) and ``metadata`` under ``name``.

    Registering the same name again replaces the previous entry instead of failing.
    """
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, loader)
    MetadataCatalog.get(name).set(**metadata)
