"""Counting what the mappers skip (unreadable images, segments absent from their PNG), from the
loader workers to the trainer's log and metrics.

A mapper records each skipped item under a kind with a key (file name, segment); each worker
passes the keys it has not reported before along with its next sample (``sample["skipped"]``).
:class:`SkipCountLogger` wraps the training loader in the main process: it keeps the distinct keys
per source and kind, writes their counts to detectron2's event storage (``data/<source>/<kind>``,
so they reach ``metrics.json`` and TensorBoard) and logs them when they grow.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict

from detectron2.utils.events import get_event_storage

__all__ = ["SkipRecorder", "SkipCountLogger", "merge_skipped"]

logger = logging.getLogger(__name__)


class SkipRecorder:
    """Mapper side: distinct skipped keys per kind, handed out once with the next sample.

    Args:
        kinds: the kinds this mapper reports (always present in ``sample["skipped"]``, maybe empty).
        max_logged: warnings logged per kind in this process; later skips are only counted.
    """

    def __init__(self, kinds: tuple[str, ...], max_logged: int = 20):
        self.kinds = kinds
        self.max_logged = max_logged
        self._seen: dict[str, set] = {kind: set() for kind in kinds}
        self._pending: dict[str, list] = {kind: [] for kind in kinds}

    def record(self, kind: str, key, message: str) -> None:
        """Note that ``key`` was skipped; the first ``max_logged`` of a kind log ``message``."""
        if key in self._seen[kind]:
            return
        self._seen[kind].add(key)
        self._pending[kind].append(key)
        if len(self._seen[kind]) <= self.max_logged:
            suffix = " (further ones are only counted)" if len(self._seen[kind]) == self.max_logged else ""
            logger.warning("%s; %s so far in this process: %d%s", message, kind, len(self._seen[kind]), suffix)

    def attach(self, sample: dict) -> dict:
        """Put the keys not yet reported into ``sample["skipped"]``; returns ``sample``."""
        sample["skipped"] = self._pending
        self._pending = {kind: [] for kind in self.kinds}
        return sample


def merge_skipped(samples: list[dict]) -> dict[str, list]:
    """The ``skipped`` keys of several samples, per kind (for collation)."""
    merged: dict[str, list] = defaultdict(list)
    for sample in samples:
        for kind, keys in sample.get("skipped", {}).items():
            merged[kind].extend(keys)
    return dict(merged)


class SkipCountLogger:
    """Wraps a loader of ``{source: batch}``: counts the distinct skipped keys per source and kind
    into the event storage (``data/<source>/<kind>``) and logs them when they grow."""

    def __init__(self, loader, log_period_s: float = 60.0):
        self.loader = loader
        self.log_period_s = log_period_s
        self.skipped: dict[str, dict[str, set]] = defaultdict(lambda: defaultdict(set))
        self._logged_at = -float("inf")

    def state_dict(self) -> dict:
        """The distinct skipped keys (a resumed run continues counting from them)."""
        return {source: {kind: sorted(keys, key=repr) for kind, keys in kinds.items()} for source, kinds in self.skipped.items()}

    def load_state_dict(self, state: dict) -> None:
        for source, kinds in state.items():
            for kind, keys in kinds.items():
                self.skipped[source][kind].update(map(_hashable, keys))

    def counts(self) -> dict[str, dict[str, int]]:
        return {source: {kind: len(keys) for kind, keys in kinds.items()} for source, kinds in self.skipped.items()}

    def __iter__(self):
        for batches in self.loader:
            grew = False
            for source, batch in batches.items():
                for kind, keys in batch.get("skipped", {}).items():
                    before = len(self.skipped[source][kind])
                    self.skipped[source][kind].update(map(_hashable, keys))
                    grew |= len(self.skipped[source][kind]) > before
            storage = get_event_storage()
            for source, kinds in self.counts().items():
                for kind, count in kinds.items():
                    storage.put_scalar(f"data/{source}/{kind}", count, smoothing_hint=False)
            if grew and time.monotonic() - self._logged_at >= self.log_period_s:
                logger.warning("skipped so far: %s", self.counts())
                self._logged_at = time.monotonic()
            yield batches


def _hashable(key):
    """Keys cross process boundaries (tuples may arrive as lists)."""
    return tuple(key) if isinstance(key, list) else key
