"""A streaming source of ``data.sources``: its samples, its mapper and its stream order, for the
multi-source loader (:func:`sca.data.multi_source.build_train_loader`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sca.config import SourceConfig
from sca.data.caption_tokenizer import CaptionTokenizer
from sca.data.streaming.mappers import StreamedRegionMapper
from sca.data.streaming.samples import ShardSamples
from sca.data.streaming.shard_list import resolve_shards
from sca.data.streaming.stream_order import ShardedStream
from sca.data.streaming.tar_index import ShardCache

__all__ = ["StreamingSource", "build_streaming_source"]

logger = logging.getLogger(__name__)


@dataclass
class StreamingSource:
    records: ShardSamples
    mapper: StreamedRegionMapper
    stream: ShardedStream


def build_streaming_source(name: str, cfg: SourceConfig, tokenizer: CaptionTokenizer, *, index: int, seed: int) -> StreamingSource:
    """The parts of streaming source ``name`` (``cfg.stream.shards`` set), the ``index``-th source
    of the loader. Shards without a known sample count are indexed here."""
    stream_cfg = cfg.stream
    cache = ShardCache(stream_cfg.cache_dir)
    shards = resolve_shards(list(stream_cfg.shards), cache)
    records = ShardSamples(shards, stream_cfg.format, cache, stream_cfg.captions)
    if len(records) == 0:
        raise ValueError(f"source {name}: shards {list(stream_cfg.shards)} hold no samples")
    if stream_cfg.format == "sca":
        written_as = records[0].get("task_type")
        if written_as and written_as != cfg.task_type:
            logger.warning("source %s: its shards were written with task type %s; training it as %s (data.sources.%s.task_type)",
                           name, written_as, cfg.task_type, name)
    mapper = StreamedRegionMapper(cfg.mapper, is_train=True, tokenizer=tokenizer, source=name, task_type=cfg.task_type)
    stream = ShardedStream([s.num_samples for s in shards], index, seed, stream_cfg.shuffle_buffer)
    logger.info("source %s: %d shards, %d samples (%s format)", name, len(shards), len(records), stream_cfg.format)
    return StreamingSource(records, mapper, stream)
