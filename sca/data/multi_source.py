"""Training and test loaders. Training yields one batch per source each step:
``{source_name: batch}``, each batch carrying its ``task_info``.

One loader serves every source: one pool of ``num_workers`` processes (not one pool per source)
that maps and collates per-source batches, whichever source they belong to; records of all sources
held once, compactly, in numpy buffers that forked workers share without copy-on-read growth
(:func:`compact_records`); and a :class:`~sca.data.source_schedule.MultiSourceSampler` that decides each
step's sources from a shared seed (lockstep across ranks) and shards records across ranks. Each
sample's randomness is seeded from its stream position, so the batches do not depend on the number
of workers and a resumed run continues the stream exactly.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import multiprocessing
import multiprocessing.util
import os
import random
import signal
from dataclasses import dataclass

import numpy as np
import torch
from detectron2.data import DatasetCatalog, DatasetFromList
from detectron2.data.build import trivial_batch_collator
from detectron2.data.samplers import InferenceSampler
from detectron2.utils import comm

from sca.config import DataConfig, StartupError
from sca.data.caption_tokenizer import CaptionTokenizer
from sca.data.mappers import build_region_mapper
from sca.data.region_batch import collate_regions
from sca.data.source_schedule import MultiSourceSampler, SampleKey
from sca.data.streaming import build_streaming_source

__all__ = [
    "MappingFailureError",
    "MultiSourceDataset",
    "MultiSourceLoader",
    "SkippedImage",
    "EvaluationLoader",
    "compact_records",
    "build_train_loader",
    "build_test_loader",
]

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 20  # consecutive records tried for one sample before the source is declared broken
MIN_ATTEMPTS_FOR_RATE = 100  # the failure rate is judged over at least this many attempts


class MappingFailureError(RuntimeError):
    """A source's mapper fails too often: the data (or the mapper's configuration) is broken."""


@dataclass
class MappedSample:
    """A mapped sample and what it took: records that raised (``failed``) or gave no region
    (``empty``) before it, each replaced by another record of the same source."""

    source: int
    sample: dict
    failed: int
    empty: int


@contextlib.contextmanager
def _seeded_rngs(seed: int):
    """numpy's, Python's and torch's (CPU) global generators seeded with ``seed`` inside the block
    and restored after it, so mappers and detectron2 augmentations draw from the sample's seed."""
    np_state, py_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[]):
        np.random.seed(seed)
        random.seed(seed)
        torch.default_generator.manual_seed(seed)
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


class MultiSourceDataset(torch.utils.data.Dataset):
    """The records of every source, serialized, and each source's mapper.

    ``dataset[key]`` maps record ``key.record`` of source ``key.source`` with the global random
    generators seeded from ``key.seed``. A record whose mapper raises (logged and counted as
    failed) or returns ``None`` (no usable region: counted as empty) is replaced by another record
    of the same source, drawn from ``key.seed``; after :data:`MAX_ATTEMPTS` records in a row the
    source is declared broken (:class:`MappingFailureError`).

    Args:
        names: source names.
        records: per source, its records held compactly (:func:`compact_records`).
        mappers: per source, ``dataset dict -> region sample or None``.
    """

    def __init__(self, names: list[str], records: list[torch.utils.data.Dataset], mappers: list):
        self.names = names
        self.records = records
        self.mappers = mappers

    def __len__(self) -> int:
        return sum(len(r) for r in self.records)

    def __getitem__(self, key: SampleKey) -> MappedSample:
        records = self.records[key.source]
        rng = np.random.default_rng(key.seed)
        index, failed, empty = key.record, 0, 0
        for attempt in range(MAX_ATTEMPTS):
            record = None
            try:
                record = records[index]  # a streamed record is read here, and may be broken
                with _seeded_rngs((key.seed + attempt) % 2**32):
                    sample = self.mappers[key.source](record)
            except Exception as error:
                failed += 1
                logger.warning(
                    "source %s: mapping %s failed (%s: %s); replaced by another record",
                    self.names[key.source], record.get("file_name") if record else f"record {index}", type(error).__name__, error,
                )
                last_error = error
            else:
                if sample is not None:
                    return MappedSample(key.source, sample, failed, empty)
                empty += 1
                last_error = None
            index = int(rng.integers(len(records)))
        raise MappingFailureError(
            f"source {self.names[key.source]}: {MAX_ATTEMPTS} records in a row could not be mapped "
            f"({failed} raised, {empty} had no usable region or image)"
            + (f"; last error: {last_error!r}" if last_error else "; the skipped images are logged above")
        ) from last_error


class SourceBatchCollator:
    """One source's :class:`MappedSample` list -> (source index, batch, counts of samples / failed /
    empty); the batch is collated by ``collate_regions`` and carries its ``task_info``."""

    def __init__(self, names: list[str], task_infos: dict[str, dict], pad_token_id: int):
        self.names = names
        self.task_infos = task_infos
        self.pad_token_id = pad_token_id

    def __call__(self, items: list[MappedSample]) -> tuple[int, dict, np.ndarray]:
        source = items[0].source
        batch = {**collate_regions([i.sample for i in items], self.pad_token_id), "task_info": self.task_infos[self.names[source]]}
        return source, batch, np.array([len(items), sum(i.failed for i in items), sum(i.empty for i in items)])


class _WorkerStopSignals:
    """Loader workers leave SIGINT / SIGTERM to the training process, which stops cleanly and then
    shuts them down (a Ctrl-C or a SIGTERM to the process group reaches the workers too). Once this
    process exits, however it exits, the workers are released: a SIGTERM then ends them as usual,
    so that ``multiprocessing``'s exit handler (which terminates and joins them) never waits forever.
    """

    def __init__(self):
        self._released = None

    def worker_init_fn(self):
        """The ``worker_init_fn`` for a loader whose workers start now."""
        if self._released is None:
            self._released = multiprocessing.get_context().Event()
            # run by multiprocessing's exit handler (in a launched rank too) before it terminates
            # and joins the workers
            multiprocessing.util.Finalize(None, self._released.set, exitpriority=100)
        return functools.partial(_init_worker_signals, self._released)


def _init_worker_signals(released, worker_id: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def on_sigterm(signum, frame):
        if released.is_set():
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_sigterm)


_worker_stop_signals = _WorkerStopSignals()


class MultiSourceLoader:
    """Iterable of training steps ``{source_name: batch}``, starting at step :attr:`start_iter`
    (read when the first step is requested: the trainer sets it when it resumes).

    Counts per source the samples delivered and the records that failed or were empty, and stops
    with :class:`MappingFailureError` when more than ``max_failure_rate`` of a source's mapping
    attempts raised (judged over at least :data:`MIN_ATTEMPTS_FOR_RATE` attempts).

    Args:
        dataset: the sources' records and mappers.
        sampler_args: :class:`MultiSourceSampler` arguments except ``start_iter``.
        collator: turns a source's samples into its batch.
        num_workers: loader worker processes for all sources together.
        max_failure_rate: see above.
    """

    def __init__(
        self,
        dataset: MultiSourceDataset,
        sampler_args: dict,
        collator: SourceBatchCollator,
        *,
        num_workers: int,
        max_failure_rate: float,
    ):
        self.dataset = dataset
        self.sampler_args = sampler_args
        self.collator = collator
        self.num_workers = num_workers
        self.max_failure_rate = max_failure_rate
        self.start_iter = 0
        self.counts = np.zeros((len(dataset.names), 3), dtype=np.int64)  # samples, failed, empty

    @property
    def names(self) -> list[str]:
        return self.dataset.names

    def fingerprint(self) -> dict:
        """What determines the stream: a resumed run continues it exactly only if this is unchanged."""
        args = self.sampler_args
        return {
            "sources": self.names,
            "num_records": list(args["num_records"]),
            "batch_sizes": list(args["batch_sizes"]),
            "ratios": list(args["ratios"]),
            "seed": args["seed"],
            "world_size": args["world_size"],
            "streams": [stream.describe() if stream else None for stream in args.get("streams") or []],
        }

    def __iter__(self):
        sampler = MultiSourceSampler(**self.sampler_args, start_iter=self.start_iter)
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=sampler,
            collate_fn=self.collator,
            num_workers=self.num_workers,
            worker_init_fn=_worker_stop_signals.worker_init_fn() if self.num_workers > 0 else None,
            # its own generator: creating the iterator (on the first step, whichever that is) then
            # leaves torch's global RNG alone, so a resumed run's steps draw as an uninterrupted one's
            generator=torch.Generator().manual_seed(self.sampler_args["seed"]),
        )
        source_batches = iter(loader)  # in sampler order: each step's sources, step after step
        for step in itertools.count(self.start_iter):
            batches = {}
            for _ in sampler.schedule.sources_at(step):
                source, batch, counts = next(source_batches)
                batches[self.names[source]] = batch
                self.counts[source] += counts
            self._check_failure_rate()
            yield batches

    def _check_failure_rate(self) -> None:
        for name, (samples, failed, empty) in zip(self.names, self.counts):
            attempts = samples + failed + empty
            if failed > self.max_failure_rate * max(attempts, MIN_ATTEMPTS_FOR_RATE):
                raise MappingFailureError(
                    f"source {name}: the mapper raised on {failed} of {attempts} records, more than "
                    f"data.max_failure_rate={self.max_failure_rate}; see the warnings above for the files and errors"
                )

    def state_dict(self) -> dict:
        return {"fingerprint": self.fingerprint(), "counts": {n: c.tolist() for n, c in zip(self.names, self.counts)}}

    def load_state_dict(self, state: dict) -> None:
        """Continues the per-source counts; warns when the checkpoint's stream differs from this
        one (batches will not continue it)."""
        saved, current = state.get("fingerprint"), self.fingerprint()
        if saved != current:
            logger.warning(
                "the data stream differs from the checkpoint's (%s vs now %s): resuming does not continue it exactly",
                saved, current,
            )
        for name, counts in state.get("counts", {}).items():
            if name in self.names:
                self.counts[self.names.index(name)] = counts


def compact_records(dataset_names: list[str]) -> torch.utils.data.Dataset:
    """The records of ``dataset_names`` (concatenated), held once per process in numpy buffers.

    A catalog entry that is already a ``torch.utils.data.Dataset`` (e.g. the compact
    :class:`~sca.data.datasets.box_records.BoxRecords` of the box sources) is used as it is; a list
    of dicts is serialized (detectron2's ``DatasetFromList``). Copying a dataset into a list first
    would hold every record as Python objects at once (2 GB for 3M boxes)."""
    parts = []
    for name in dataset_names:
        try:
            records = DatasetCatalog.get(name)
        except FileNotFoundError as error:  # the loaders name the file and where the tree is described
            raise StartupError(f"dataset {name}: {error}") from None
        if not isinstance(records, torch.utils.data.Dataset):
            records = DatasetFromList(list(records), copy=False, serialize=True)
        parts.append(records)
    return parts[0] if len(parts) == 1 else torch.utils.data.ConcatDataset(parts)


def build_train_loader(cfg: DataConfig, tokenizer: CaptionTokenizer, seed: int) -> MultiSourceLoader:
    """The multi-source loader of ``cfg.sources`` for this rank.

    Args:
        cfg: the data config (sources, ``num_workers`` for all sources, ``max_failure_rate``).
        tokenizer: caption tokenizer used by the mappers.
        seed: shared by all ranks (step schedule, record permutations, sample randomness).
    """
    names, records, mappers, streams, task_infos = [], [], [], [], {}
    for name, source in cfg.sources.items():
        if source.stream.shards:  # a streaming source: samples read from tar shards by index
            streaming = build_streaming_source(name, source, tokenizer, index=len(names), seed=seed)
            source_records, mapper, stream = streaming.records, streaming.mapper, streaming.stream
        else:
            source_records = compact_records(list(source.train_datasets))
            if len(source_records) == 0:
                raise ValueError(f"source {name}: datasets {list(source.train_datasets)} have no records")
            mapper = build_region_mapper(
                source.train_datasets[0], source.mapper, is_train=True, tokenizer=tokenizer, source=name, task_type=source.task_type
            )
            stream = None
        names.append(name)
        records.append(source_records)
        mappers.append(mapper)
        streams.append(stream)
        task_infos[name] = {
            "task_name": name,
            "task_type": source.task_type,
            "dataset_name": ",".join(source.train_datasets or source.stream.shards),
            "batch_size": source.batch_size,
            "sampling_ratio": source.sampling_ratio,
        }
    sources = list(cfg.sources.values())
    sampler_args = {
        "num_records": [len(r) for r in records],
        "batch_sizes": [s.batch_size for s in sources],
        "ratios": [s.sampling_ratio for s in sources],
        "seed": seed,
        "rank": comm.get_rank(),
        "world_size": comm.get_world_size(),
        "streams": streams,
    }
    loader = MultiSourceLoader(
        MultiSourceDataset(names, records, mappers),
        sampler_args,
        SourceBatchCollator(names, task_infos, tokenizer.pad_token_id),
        num_workers=cfg.num_workers,
        max_failure_rate=cfg.max_failure_rate,
    )
    fingerprints = comm.all_gather(loader.fingerprint())
    if any(f != fingerprints[0] for f in fingerprints):
        raise RuntimeError(f"ranks disagree on the data stream (lockstep needs the same sources and seed): {fingerprints}")
    logger.info(
        "train loader: %s; %d workers for all sources",
        ", ".join(f"{n} ({len(r)} records, batch {s.batch_size}, ratio {s.sampling_ratio})" for n, r, s in zip(names, records, sources)),
        cfg.num_workers,
    )
    return loader


@dataclass
class SkippedImage:
    """Stands in a test batch for a record whose image could not be read (the mapper returned ``None``)."""

    file_name: str


class _MapEachRecordOnce(torch.utils.data.Dataset):
    """``records[i]`` mapped by ``mapper``; a record the mapper skips becomes a :class:`SkippedImage`.
    Unlike detectron2's ``MapDataset``, never another record: that one would be scored twice."""

    def __init__(self, records: torch.utils.data.Dataset, mapper):
        self.records = records
        self.mapper = mapper

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        record = self.records[index]
        sample = self.mapper(record)
        return SkippedImage(record["file_name"]) if sample is None else sample


class EvaluationLoader:
    """Test batches (lists of region samples) in which every record of the split is mapped at most
    once; records whose image could not be read are left out and listed, per pass, in
    :attr:`skipped_images` (the evaluator reports them)."""

    def __init__(self, loader: torch.utils.data.DataLoader):
        self.loader = loader
        self.skipped_images: list[str] = []

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        self.skipped_images.clear()
        for batch in self.loader:
            self.skipped_images.extend(item.file_name for item in batch if isinstance(item, SkippedImage))
            samples = [item for item in batch if not isinstance(item, SkippedImage)]
            if samples:
                yield samples


def build_test_loader(cfg: DataConfig, dataset_name: str, tokenizer: CaptionTokenizer, max_images: int = 0) -> EvaluationLoader:
    """Like detectron2's ``build_detection_test_loader`` (``InferenceSampler``: each rank its own
    contiguous shard, every image once) but with ``test_batch_size`` images per batch, and
    unreadable images left out and counted (:class:`EvaluationLoader`) instead of replaced.
    ``max_images > 0`` keeps only the first images of the split."""
    mapper = build_region_mapper(
        dataset_name,
        cfg.test_mapper,
        is_train=False,
        tokenizer=tokenizer,
        source=dataset_name,
        task_type=cfg.test_task_types.get(dataset_name, cfg.test_task_type),
    )
    records = compact_records([dataset_name])
    if max_images > 0:
        records = torch.utils.data.Subset(records, range(min(max_images, len(records))))
    dataset = _MapEachRecordOnce(records, mapper)
    return EvaluationLoader(
        torch.utils.data.DataLoader(
            dataset,
            batch_size=cfg.test_batch_size,
            sampler=InferenceSampler(len(dataset)),
            num_workers=cfg.num_workers,
            collate_fn=trivial_batch_collator,
        )
    )
