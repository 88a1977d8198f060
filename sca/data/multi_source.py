"""Training and test loaders. Training yields one batch per source each step:
``{source_name: batch}``, each batch carrying its ``task_info``.

Every source gets a detectron2 train loader (serialized records, infinite ``TrainingSampler``
sharded across ranks with a shared seed); the ``num_workers`` budget is split between sources,
never multiplied by their number.
"""

from __future__ import annotations

import itertools
import logging
from functools import partial

import torch
from detectron2.data import DatasetCatalog, DatasetFromList, MapDataset, build_detection_train_loader
from detectron2.data.build import trivial_batch_collator
from detectron2.data.samplers import InferenceSampler
from detectron2.utils import comm

from sca.config import DataConfig, SourceConfig
from sca.data.caption_tokenizer import CaptionTokenizer
from sca.data.mappers import build_region_mapper
from sca.data.region_batch import collate_regions

__all__ = ["SafeMapper", "MultiSourceLoader", "build_train_loader", "build_test_loader"]

logger = logging.getLogger(__name__)


class SafeMapper:
    """Wraps a mapper: a sample whose mapping raises is logged, counted and skipped (``None``),
    so detectron2's dataset draws another one instead of killing training."""

    def __init__(self, mapper, dataset_name: str):
        self.mapper = mapper
        self.dataset_name = dataset_name
        self.num_failed = 0

    def __call__(self, dataset_dict: dict):
        try:
            return self.mapper(dataset_dict)
        except Exception as error:
            self.num_failed += 1
            logger.warning(
                "%s: skipped %s (%s: %s); %d skipped so far in this worker",
                self.dataset_name,
                dataset_dict.get("file_name"),
                type(error).__name__,
                error,
                self.num_failed,
            )
            return None


def _source_records(source: SourceConfig) -> list[dict]:
    records = list(itertools.chain.from_iterable(DatasetCatalog.get(name) for name in source.train_datasets))
    if not records:
        raise ValueError(f"datasets {list(source.train_datasets)} have no records")
    return records


class MultiSourceLoader:
    """Iterates ``{source: batch}`` with every source in every step."""

    def __init__(self, loaders: dict[str, torch.utils.data.DataLoader], task_infos: dict[str, dict]):
        self.loaders = loaders
        self.task_infos = task_infos

    def __iter__(self):
        iterators = {name: iter(loader) for name, loader in self.loaders.items()}
        while True:
            yield {name: {**next(iterator), "task_info": self.task_infos[name]} for name, iterator in iterators.items()}


def build_train_loader(cfg: DataConfig, tokenizer: CaptionTokenizer) -> MultiSourceLoader:
    """Per-source loaders with a shared worker budget (``cfg.num_workers`` in total per process)."""
    names = list(cfg.sources)
    workers = {name: cfg.num_workers // len(names) + (i < cfg.num_workers % len(names)) for i, name in enumerate(names)}
    loaders, task_infos = {}, {}
    for name, source in cfg.sources.items():
        mapper = build_region_mapper(
            source.train_datasets[0], source.mapper, is_train=True, tokenizer=tokenizer, source=name, task_type=source.task_type
        )
        loaders[name] = build_detection_train_loader(
            _source_records(source),
            mapper=SafeMapper(mapper, name),
            total_batch_size=source.batch_size * comm.get_world_size(),
            aspect_ratio_grouping=False,
            num_workers=workers[name],
            collate_fn=partial(collate_regions, pad_token_id=tokenizer.pad_token_id),
        )
        task_infos[name] = {
            "task_name": name,
            "task_type": source.task_type,
            "dataset_name": ",".join(source.train_datasets),
            "batch_size": source.batch_size,
            "loss_weight": source.loss_weight,
        }
    logger.info("train loader: sources %s, workers %s", names, workers)
    return MultiSourceLoader(loaders, task_infos)


def build_test_loader(
    cfg: DataConfig, dataset_name: str, tokenizer: CaptionTokenizer, max_images: int = 0
) -> torch.utils.data.DataLoader:
    """Like detectron2's ``build_detection_test_loader`` (``InferenceSampler``: each rank its own
    contiguous shard, every image once) but with ``test_batch_size`` images per batch.
    ``max_images > 0`` keeps only the first images of the split."""
    mapper = build_region_mapper(
        dataset_name, cfg.test_mapper, is_train=False, tokenizer=tokenizer, source=dataset_name, task_type=cfg.test_task_type
    )
    records = DatasetCatalog.get(dataset_name)
    if max_images > 0:
        records = records[:max_images]
    dataset = MapDataset(DatasetFromList(records, copy=False), mapper)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=cfg.test_batch_size,
        sampler=InferenceSampler(len(dataset)),
        num_workers=cfg.num_workers,
        collate_fn=trivial_batch_collator,
    )
