"""Random access into webdataset-convention tar shards: an index of each sample's members, read
with ``os.pread`` (no shared file offset, so forked loader workers can share an open file).

A shard is a plain (uncompressed) tar whose consecutive members with the same basename form one
sample (webdataset's convention, split by :func:`webdataset.tariterators.base_plus_ext`):
``sa_1.jpg`` + ``sa_1.json`` is sample ``sa_1`` with parts ``jpg`` and ``json``. Local paths are read
in place; ``pipe:`` commands (object stores: ``pipe:aws s3 cp s3://bucket/sa_000000.tar -``) are
streamed once through :func:`webdataset.gopen` into a cache directory, then read like local files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tarfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from webdataset import gopen
from webdataset.tariterators import base_plus_ext

__all__ = ["ShardIndex", "ShardCache"]

logger = logging.getLogger(__name__)


@dataclass
class ShardIndex:
    """The samples of one shard: ``keys[i]`` and ``parts[i]`` (extension -> (offset, size)), read
    through the file descriptor ``fd`` held open until :meth:`close`."""

    path: str
    keys: list[str]
    parts: list[dict[str, tuple[int, int]]]
    fd: int
    truncated: bool = False

    @classmethod
    def load(cls, path: str, index_file: Path) -> "ShardIndex":
        """The index saved in ``index_file`` (JSON) when there is one, else scan the shard and save it
        there (written to a temporary name, then renamed; not saved when the folder is read-only)."""
        try:
            saved = json.loads(index_file.read_text())
            keys, parts, truncated = saved["keys"], [{e: tuple(v) for e, v in p.items()} for p in saved["parts"]], saved["truncated"]
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            keys, parts, truncated = cls._scan_members(path)
            with contextlib.suppress(OSError):
                index_file.parent.mkdir(parents=True, exist_ok=True)
                partial = index_file.with_name(f".{index_file.name}.{os.getpid()}.tmp")
                partial.write_text(json.dumps({"keys": keys, "parts": parts, "truncated": truncated}))
                os.replace(partial, index_file)
        if truncated:
            logger.warning("shard %s is truncated: %d samples before the cut are used", path, len(keys))
        return cls(path, keys, parts, os.open(path, os.O_RDONLY), truncated)

    @staticmethod
    def _scan_members(path: str) -> tuple[list[str], list[dict], bool]:
        """Index the members of the tar at ``path`` (headers only: data is seeked over). A member
        that runs past the end of the file (a truncated download) ends the index there."""
        size = os.path.getsize(path)
        keys, parts, truncated = [], [], False
        try:
            with tarfile.open(path, mode="r:") as archive:
                for member in archive:
                    if not member.isfile():
                        continue
                    if member.offset_data + member.size > size:
                        truncated = True
                        break
                    key, ext = base_plus_ext(member.name)
                    if key is None:
                        continue
                    if not keys or keys[-1] != key or ext in parts[-1]:
                        keys.append(key)
                        parts.append({})
                    parts[-1][ext] = (member.offset_data, member.size)
        except (tarfile.ReadError, EOFError) as error:
            if not keys:
                raise ValueError(f"{path} is not a readable tar file ({error})") from error
            truncated = True
        return keys, parts, truncated

    def __len__(self) -> int:
        return len(self.keys)

    def read(self, index: int) -> dict[str, bytes]:
        """Sample ``index`` as ``{"__key__": key, ext: bytes, ...}``."""
        if not 0 <= index < len(self.keys):
            raise IndexError(f"{self.path} has {len(self.keys)} readable samples, not {index + 1}")
        sample = {ext: os.pread(self.fd, size, offset) for ext, (offset, size) in self.parts[index].items()}
        sample["__key__"] = self.keys[index]
        return sample

    def close(self) -> None:
        os.close(self.fd)


class ShardCache:
    """Per process: the indexes (and open files) of the ``size`` shards used most recently, each
    index also saved under ``cache_dir/indexes`` for the other workers, epochs and runs (scanning
    a tar's headers through :mod:`tarfile` costs more than mapping a small image; loading a saved
    index is cheap). A
    ``pipe:`` shard is downloaded into ``cache_dir`` (to a temporary name, then renamed, so
    concurrent workers never read half a file) and deleted when its index leaves the cache: a
    process still reading it keeps its open file, one that needs it again downloads it again. Disk
    use stays within a few shards per worker, as the stream order reads one or two shards at a time.
    """

    def __init__(self, cache_dir: str, size: int = 4):
        self.cache_dir = Path(cache_dir or Path.home() / ".cache" / "sca" / "shards")
        self.size = size
        self._indexes: OrderedDict[str, ShardIndex] = OrderedDict()

    def __getstate__(self) -> dict:
        """Pickled (for spawned loader workers) without open files: the worker reopens its shards."""
        return {**self.__dict__, "_indexes": OrderedDict()}

    def local_path(self, url: str) -> str:
        if not url.startswith("pipe:"):
            return url
        digest = hashlib.sha256(url.encode()).hexdigest()[:16]
        name = url.rstrip(" -").split("/")[-1].split()[-1]
        path = self.cache_dir / f"{digest}-{name}"
        if not path.exists():
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            with gopen(url, "rb") as stream, open(partial, "wb") as out:
                while chunk := stream.read(1 << 20):
                    out.write(chunk)
            os.replace(partial, path)
        return str(path)

    def index_file(self, url: str, path: str) -> Path:
        """Where the index of shard ``url`` (local copy ``path``) is kept: named after the shard's
        real path, size and modification time (a ``pipe:`` shard: its command), so a changed shard
        is indexed again."""
        if url.startswith("pipe:"):
            identity = url
        else:
            stat = os.stat(path)
            identity = f"{os.path.realpath(path)}|{stat.st_size}|{stat.st_mtime_ns}"
        return self.cache_dir / "indexes" / f"{hashlib.sha256(identity.encode()).hexdigest()[:24]}.json"

    def index(self, url: str) -> ShardIndex:
        if url in self._indexes:
            self._indexes.move_to_end(url)
            return self._indexes[url]
        path = self.local_path(url)
        index = ShardIndex.load(path, self.index_file(url, path))
        self._indexes[url] = index
        if len(self._indexes) > self.size:
            old_url, old = self._indexes.popitem(last=False)
            old.close()
            if old_url.startswith("pipe:"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(old.path)
        return index
