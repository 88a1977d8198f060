"""Leaving the images of chosen splits out of a source's training images.

RefCOCO / RefCOCO+ / RefCOCOg images are COCO train2014 images, which COCO train2017 contains: a
run that trains on COCO and evaluates on RefCOCO val or test must not train on those images.
``SourceConfig.exclude_images_of`` names such splits; :func:`with_image_exclusions` registers, for
each of the source's training splits, a derived split without the records whose ``image_id`` is
in one of them (image ids are compared: COCO-2014 ids equal 2017 ids) and trains on it.
"""

from __future__ import annotations

import dataclasses
import logging

from detectron2.data import DatasetCatalog, MetadataCatalog

from sca.config import ConfigError, DataConfig
from sca.data.datasets.catalog import register_split

__all__ = ["excluded_image_ids", "register_without_images", "with_image_exclusions"]

logger = logging.getLogger(__name__)


def excluded_image_ids(dataset_names: list[str]) -> set:
    """The ``image_id`` of every record of the named splits."""
    return {record["image_id"] for name in dataset_names for record in DatasetCatalog.get(name)}


def register_without_images(dataset_name: str, excluded: list[str]) -> str:
    """Register ``<dataset_name>-without-images-of-<excluded...>`` (lazy; same metadata) and return
    its name. Loading it logs how many images were left out."""
    name = f"{dataset_name}-without-images-of-{'+'.join(excluded)}"

    def load() -> list[dict]:
        image_ids = excluded_image_ids(excluded)
        records = DatasetCatalog.get(dataset_name)
        kept = [record for record in records if record["image_id"] not in image_ids]
        logger.info("%s: left out %d of %d images, those of %s", dataset_name, len(records) - len(kept), len(records), excluded)
        return kept

    metadata = MetadataCatalog.get(dataset_name).as_dict()
    metadata.pop("name")
    register_split(name, load, metadata)
    return name


def with_image_exclusions(cfg: DataConfig) -> DataConfig:
    """``cfg`` where every source with ``exclude_images_of`` trains on derived splits without
    those images (see the module docstring).

    Raises:
        ConfigError: naming the key, when an excluded split is not registered.
    """
    sources = {}
    for name, source in cfg.sources.items():
        if source.exclude_images_of:
            registered = set(DatasetCatalog.list())
            unknown = [d for d in source.exclude_images_of if d not in registered]
            if unknown:
                raise ConfigError(f"data.sources.{name}.exclude_images_of: {unknown} are not registered datasets")
            excluded = list(source.exclude_images_of)
            source = dataclasses.replace(
                source, train_datasets=[register_without_images(d, excluded) for d in source.train_datasets], exclude_images_of=[]
            )
        sources[name] = source
    return dataclasses.replace(cfg, sources=sources)
