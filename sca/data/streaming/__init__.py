"""Streaming sources: tar shards (webdataset conventions) read by index, mixed with the catalog
sources in the one multi-source loader. See :mod:`.stream_order` for how samples are split across
ranks and workers, :mod:`.formats` for the sample formats (SA-1B's own tars, ``tools/write_shards.py``)."""

from sca.data.streaming.source import StreamingSource, build_streaming_source

__all__ = ["StreamingSource", "build_streaming_source"]
