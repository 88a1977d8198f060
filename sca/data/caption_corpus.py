"""The captions a training run can teach: what a tokenizer fitted to the training data reads.

For every registered training dataset of the configured sources: the captions of its classes for
``recognition`` sources (metadata ``class_captions``, else ``stuff_classes``, as the mappers
caption class-labelled regions) and the referring / region sentences of its annotations, normalised
as the source's mapper normalises them. Streamed sources are not read (their shards are not listed up front).
"""

from __future__ import annotations

import logging
from typing import Iterator

from detectron2.data import DatasetCatalog, MetadataCatalog

from sca.config import DataConfig, StartupError
from sca.data.caption_normalization import normalize_captions

__all__ = ["training_captions"]

logger = logging.getLogger(__name__)


def training_captions(cfg: DataConfig) -> Iterator[str]:
    """Every class caption and annotation sentence of the training sources' registered datasets.

    Raises:
        StartupError: a dataset's files are missing.
    """
    for name, source in cfg.sources.items():
        if source.stream.shards:
            logger.warning("caption corpus: source '%s' is streamed; its captions are not read", name)
            continue
        for dataset in source.train_datasets:
            if source.task_type == "recognition":
                metadata = MetadataCatalog.get(dataset)
                yield from metadata.get("class_captions", metadata.get("stuff_classes", []))
            try:
                records = DatasetCatalog.get(dataset)
            except FileNotFoundError as error:  # as the train loader reports it: one line at start-up
                raise StartupError(f"dataset {dataset}: {error}") from None
            for record in records:
                for annotation in record.get("annotations", ()):
                    if "sentences" in annotation:
                        yield from normalize_captions(annotation["sentences"], source.mapper.caption_normalization)
