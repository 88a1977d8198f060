"""Caption side tables for SA-1B-format shards: pseudo-captions keyed by image id and annotation id
(e.g. SA1B-Cap), one row per caption, in JSON Lines or Parquet.

Columns: ``image_id``, ``annotation_id`` (or ``id``), and ``caption`` (a string) or ``captions``
(a list of strings). A region may have several rows. The table is held compactly — sorted int64
keys and one UTF-8 buffer — so forked loader workers share it without copy-on-read growth. A
source names either one table, or one table per shard with ``{shard}`` in the path (the shard's
file name without ``.tar``), loaded when the shard is first read.
"""

from __future__ import annotations

import json

import numpy as np

__all__ = ["CaptionTable"]


class CaptionTable:
    """``table.get(image_id, annotation_id)`` -> the region's captions (empty list: none)."""

    def __init__(self, image_ids, annotation_ids, captions: list[str]):
        keys = (np.asarray(image_ids, dtype=np.int64) << 32) + np.asarray(annotation_ids, dtype=np.int64)
        order = np.argsort(keys, kind="stable")
        self.keys = keys[order]
        encoded = [captions[i].encode() for i in order]
        self.offsets = np.concatenate([[0], np.cumsum([len(c) for c in encoded], dtype=np.int64)])
        self.text = np.frombuffer(b"".join(encoded), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self.keys)

    def get(self, image_id: int, annotation_id: int) -> list[str]:
        key = (int(image_id) << 32) + int(annotation_id)
        first, last = np.searchsorted(self.keys, key, side="left"), np.searchsorted(self.keys, key, side="right")
        return [self.text[self.offsets[i] : self.offsets[i + 1]].tobytes().decode() for i in range(first, last)]

    @classmethod
    def load(cls, path: str) -> "CaptionTable":
        """Read a ``.jsonl`` or ``.parquet`` table (a malformed row is an error naming the line)."""
        if path.endswith(".parquet"):
            import pyarrow.parquet as pq

            columns = pq.read_table(path).to_pydict()
            rows = [dict(zip(columns, values)) for values in zip(*columns.values())]
        elif path.endswith((".jsonl", ".json")):
            with open(path) as f:
                rows = []
                for number, line in enumerate(f, 1):
                    if line.strip():
                        try:
                            rows.append(json.loads(line))
                        except json.JSONDecodeError as error:
                            raise ValueError(f"{path}:{number}: not a JSON line ({error})") from error
        else:
            raise ValueError(f"caption table {path}: expected a .jsonl or .parquet file")
        image_ids, annotation_ids, captions = [], [], []
        for number, row in enumerate(rows, 1):
            try:
                texts = [row["caption"]] if "caption" in row else list(row["captions"])
                annotation_id = row["annotation_id"] if "annotation_id" in row else row["id"]
                image_ids += [int(row["image_id"])] * len(texts)
                annotation_ids += [int(annotation_id)] * len(texts)
            except (KeyError, TypeError, ValueError) as error:
                raise ValueError(f"{path}: row {number} lacks image_id / annotation_id / caption(s): {row}") from error
            captions += [str(t) for t in texts]
        return cls(image_ids, annotation_ids, captions)
