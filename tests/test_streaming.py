"""Streaming sources: SA-1B tars and written shards mixed with catalog sources, the stream order
across ranks and workers, resume, faults."""

import copy
import itertools
import json
import os
import tarfile

import numpy as np
import pytest
import torch
import webdataset as wds
from conftest import assert_same_batches
from detectron2.data import DatasetCatalog
from test_resume import deterministic_cpu, small_run, train  # noqa: F401  (deterministic_cpu: a fixture)

from sca.config import ConfigError, SourceConfig, StreamConfig, validate
from sca.config_loading import load_config
from sca.data.datasets.synthetic_sa1b_shards import sa1b_sample, write_caption_table, write_sa1b_shards
from sca.data.multi_source import MappingFailureError, build_train_loader
from sca.data.streaming.captions import CaptionTable
from sca.data.streaming.stream_order import ShardedStream
from sca.data.streaming.tar_index import ShardCache, ShardIndex


def with_stream(cfg, name="sa1b", *, shards, stream_format="sa1b", captions="", batch_size=3, ratio=1.0, task_type="caption", **stream):
    """``cfg`` (an SCAConfig) with a streaming source added, mapped like the demo source."""
    stream.setdefault("cache_dir", os.path.join(os.path.dirname(str(shards[0])), "cache"))  # shard indexes
    cfg.data.sources[name] = SourceConfig(
        stream=StreamConfig(shards=list(shards), format=stream_format, captions=str(captions), **stream),
        task_type=task_type, batch_size=batch_size, sampling_ratio=ratio,
        mapper=copy.deepcopy(cfg.data.sources["demo"].mapper if "demo" in cfg.data.sources else cfg.data.test_mapper),
    )
    validate(cfg)
    return cfg


def base_config(*overrides):
    return load_config(["data=demo", "data.num_workers=0", "data.sources.demo.batch_size=2", *overrides])


def take(loader, count, start_iter=0):
    loader.start_iter = start_iter
    return list(itertools.islice(iter(loader), count))


@pytest.fixture(scope="module")
def sa1b(tmp_path_factory):
    """Five uneven SA-1B shards (22 images) and their captions as JSONL and Parquet."""
    root = tmp_path_factory.mktemp("sa1b")
    paths, rows = write_sa1b_shards(root, [6, 3, 5, 1, 7], seed=0)
    write_caption_table(root / "captions.jsonl", rows)
    write_caption_table(root / "captions.parquet", rows)
    return root, paths, rows


def test_sa1b_shards_train_mixed_with_a_catalog_source_captioned_from_the_side_table(sa1b, tokenizer):
    root, paths, rows = sa1b
    table = {(r["image_id"], r["annotation_id"]): r["caption"] for r in rows}
    cfg = with_stream(base_config(), shards=[str(root / "sa_{000000..000004}.tar")], captions=root / "captions.jsonl", ratio=0.5)
    loader = build_train_loader(cfg.data, tokenizer, seed=0)
    steps = take(loader, 10)
    assert all("demo" in s for s in steps) and 0 < sum("sa1b" in s for s in steps) < 10
    batch = next(s["sa1b"] for s in steps if "sa1b" in s)
    assert batch["task_info"]["task_type"] == "caption" and batch["images"].shape == (3, 3, 64, 64)
    image_of_region = [batch["image_ids"][i] for i in batch["regions"]["image_index"].tolist()]
    for image_id, region_id, captions in zip(image_of_region, batch["regions"]["region_ids"].tolist(), batch["regions"]["captions"]):
        assert captions == [table[(image_id, region_id)]]
    assert batch["regions"]["masks"].flatten(1).any(1).all()  # every region has its mask

    parquet = with_stream(base_config(), shards=[str(root / "sa_{000000..000004}.tar")], captions=root / "captions.parquet", ratio=0.5)
    assert_same_batches(take(build_train_loader(parquet.data, tokenizer, seed=0), 10), steps)


def test_regions_without_a_caption_are_skipped_and_counted(sa1b, tokenizer, tmp_path):
    root, paths, rows = sa1b
    dropped = {(r["image_id"], r["annotation_id"]) for r in rows[::3]}
    write_caption_table(tmp_path / "partial.jsonl", [r for r in rows if (r["image_id"], r["annotation_id"]) not in dropped])
    cfg = with_stream(base_config(), shards=[str(p) for p in paths], captions=tmp_path / "partial.jsonl", batch_size=22)
    batch = take(build_train_loader(cfg.data, tokenizer, seed=0), 1)[0]["sa1b"]
    uncaptioned = {region for _, region in batch["skipped"]["uncaptioned_regions"]}
    assert uncaptioned and uncaptioned <= {a for _, a in dropped}
    assert not set(batch["regions"]["region_ids"].tolist()) & uncaptioned


def test_caption_tables_are_compact_and_keyed_by_image_and_annotation(tmp_path):
    table = CaptionTable([1, 1, 2, 1], [5, 6, 5, 5], ["a dog", "grass", "a cat", "a brown dog"])
    assert table.get(1, 5) == ["a dog", "a brown dog"] and table.get(2, 5) == ["a cat"] and table.get(2, 6) == []
    (tmp_path / "bad.jsonl").write_text('{"image_id": 1, "id": 2, "caption": "x"}\n{"image_id": 1\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        CaptionTable.load(str(tmp_path / "bad.jsonl"))


def test_written_shards_stream_the_catalog_source_they_came_from(load_tool, tokenizer, tmp_path):
    shards, skipped = load_tool("write_shards").write_shards(["sca_demo_refs_val"], tmp_path, shard_size=128)
    records = DatasetCatalog.get("sca_demo_refs_val")
    assert skipped == 0 and [s.num_samples for s in shards] == [128] * (len(records) // 128) + [len(records) % 128]
    cfg = load_config(["data=demo_mix", "data.num_workers=0"])
    cfg.data.sources.pop("demo")
    catalog = copy.deepcopy(cfg.data)
    catalog.sources["demo_refs"].train_datasets = ["sca_demo_refs_val"]
    streamed = copy.deepcopy(catalog)
    streamed.sources["demo_refs"].train_datasets = []
    streamed.sources["demo_refs"].stream = StreamConfig(shards=[str(tmp_path / "shards.json")], format="sca", cache_dir=str(tmp_path / "cache"))
    catalog_parts = build_train_loader(catalog, tokenizer, seed=0).dataset
    streamed_parts = build_train_loader(streamed, tokenizer, seed=0).dataset
    by_id = {r["image_id"]: r for r in records}
    for index in (0, 1, 150, len(records) - 1):
        record = streamed_parts.records[0][index]
        assert record["task_type"] == "caption"
        samples = []
        for mapper, source_record in ((catalog_parts.mappers[0], by_id[record["image_id"]]), (streamed_parts.mappers[0], record)):
            np.random.seed(index)
            samples.append(mapper(source_record))
        expected, got = samples
        assert torch.equal(got["image"], expected["image"])
        for key in ("boxes", "masks", "prompt_types", "points"):
            assert torch.equal(got["regions"][key], expected["regions"][key]), key
        assert got["regions"]["captions"] == expected["regions"]["captions"]


def test_each_epoch_splits_the_shards_across_ranks_exactly_once_in_windows():
    sizes = [5, 3, 7, 1, 4, 9]  # 29 samples in uneven shards
    shard_of = np.repeat(np.arange(len(sizes)), sizes)
    stream = ShardedStream(sizes, source=0, seed=0, shuffle_buffer=4)
    for world_size in (1, 2, 3):
        epochs = {0: [], 1: []}
        for rank in range(world_size):
            start, end = stream.rank_range(rank, world_size)
            for epoch in epochs:
                part = [stream.record(p, rank, world_size) for p in range(epoch * (end - start), (epoch + 1) * (end - start))]
                assert {e for e, _ in part} == {epoch}
                epochs[epoch] += [index for _, index in part]
                for window in range(0, len(part), 4):  # a window reads at most 3 of these small shards
                    assert len({shard_of[i] for _, i in part[window : window + 4]}) <= 3
        for part in epochs.values():
            assert sorted(part) == list(range(29))  # every sample once per epoch, ranks disjoint
        assert epochs[0] != epochs[1]  # shard order and windows reseeded per epoch
    lengths = [np.subtract(*stream.rank_range(r, 3)[::-1]) for r in range(3)]
    assert max(lengths) - min(lengths) <= 1  # ranks' epochs differ by at most one sample
    keys = stream.batch(2, rank=1, world_size=3, size=4)  # a rank's batch: 4 consecutive positions of its stream
    assert [k.record for k in keys] == [stream.record(p, 1, 3)[1] for p in range(8, 12)]
    assert keys == ShardedStream(sizes, source=0, seed=0, shuffle_buffer=4).batch(2, rank=1, world_size=3, size=4)


def test_a_streaming_source_needs_shards_or_datasets_and_sa1b_needs_captions(sa1b):
    root, paths, _ = sa1b
    with pytest.raises(ConfigError, match="captions"):
        with_stream(base_config(), shards=[str(paths[0])])
    assert load_config(["data=sa1b_coco_panoptic"]).data.sources["sa1b"].stream.format == "sa1b"  # the preset mix
    cfg = base_config()
    cfg.data.sources["demo"].stream.shards = [str(paths[0])]
    with pytest.raises(ConfigError, match="either train_datasets"):
        validate(cfg)


@pytest.fixture(scope="module")
def broken_shards(tmp_path_factory):
    """Three SA-1B shards with one fault of each kind among good samples; returns (shard paths,
    caption table, {fault: key})."""
    root = tmp_path_factory.mktemp("broken")
    rng = np.random.default_rng(1)
    samples, rows = [], []
    for image_id in range(1, 15):
        sample, captions = sa1b_sample(rng, image_id, 10 * image_id)
        samples.append(sample)
        rows += captions
    faults = {"undecodable": samples[1]["__key__"], "bad_rle": samples[2]["__key__"], "no_image": samples[5]["__key__"],
              "no_json": samples[6]["__key__"], "truncated": samples[13]["__key__"]}
    samples[1]["jpg"] = b"\xff\xd8 not a JPEG"
    meta = json.loads(samples[2]["json"])
    meta["annotations"][0]["segmentation"]["counts"] = "zzzz!!"
    bad_rle_region = meta["annotations"][0]["id"]
    samples[2]["json"] = json.dumps(meta).encode()
    del samples[5]["jpg"], samples[6]["json"]
    paths = [root / f"sa_{i:06d}.tar" for i in range(3)]
    for path, part in zip(paths, (samples[:5], samples[5:10], samples[10:])):
        with wds.TarWriter(str(path)) as writer:
            for sample in part:
                writer.write(sample)
    data = paths[2].read_bytes()
    with tarfile.open(paths[2]) as archive:
        last = archive.getmembers()[-1]
    paths[2].write_bytes(data[: last.offset_data + last.size // 2])  # cut inside the last member
    write_caption_table(root / "captions.jsonl", rows)
    faults["bad_rle_region"] = bad_rle_region
    return paths, root / "captions.jsonl", faults


def test_broken_samples_are_skipped_and_counted_in_workers_and_the_failure_cap_applies(broken_shards, tokenizer):
    paths, captions, faults = broken_shards
    cfg = with_stream(base_config("data.num_workers=1", "data.max_failure_rate=0.5"), shards=[str(p) for p in paths],
                      captions=captions, batch_size=5, shuffle_buffer=100)
    loader = build_train_loader(cfg.data, tokenizer, seed=0)
    assert len(loader.dataset.records[1]) == 14  # the cut sample keeps the member before the cut
    steps = take(loader, 6)  # 30 samples: every one of the 14 at least twice
    seen = {i for s in steps for i in s["sa1b"]["image_ids"]}
    assert seen == set(range(1, 15)) - {2, 6, 7, 14}  # the undecodable image, the missing partners and the cut one are replaced
    skipped = {kind: set(map(tuple, keys)) if kind != "skipped_images" else set(keys)
               for s in steps for kind, keys in s["sa1b"]["skipped"].items() if keys}
    assert {name.split(":")[-1] for name in skipped["skipped_images"]} == {faults["undecodable"]}
    assert {(name.split(":")[-1], region) for name, region in skipped["invalid_masks"]} == {(faults["bad_rle"], faults["bad_rle_region"])}
    samples, failed, empty = loader.counts[1]
    assert samples == 30 and failed >= 2 and empty >= 1  # missing partners raise (failed); no image is empty

    strict = with_stream(base_config("data.num_workers=1", "data.max_failure_rate=0.01"), shards=[str(p) for p in paths],
                         captions=captions, batch_size=5)
    with pytest.raises(MappingFailureError, match="max_failure_rate=0.01"):
        take(build_train_loader(strict.data, tokenizer, seed=0), 20)


def test_a_shard_that_is_not_a_tar_is_skipped_with_a_warning(sa1b, tokenizer, tmp_path, caplog):
    root, paths, _ = sa1b
    (tmp_path / "sa_000009.tar").write_bytes(paths[0].read_bytes()[:100])  # cut inside the first header
    cfg = with_stream(base_config(), shards=[str(paths[1]), str(tmp_path / "sa_000009.tar")], captions=root / "captions.jsonl")
    loader = build_train_loader(cfg.data, tokenizer, seed=0)
    assert len(loader.dataset.records[1]) == 3 and "skipped shard" in caplog.text
    assert {i for s in take(loader, 2) for i in s["sa1b"]["image_ids"]} == {7, 8, 9}  # shard 1's images


def test_a_resumed_run_continues_the_stream_exactly(sa1b, tmp_path, deterministic_cpu):
    root, _, _ = sa1b

    def run(output_dir):
        cfg = small_run(output_dir, 4)
        return with_stream(cfg, shards=[str(root / "sa_{000000..000004}.tar")], captions=root / "captions.jsonl",
                           batch_size=2, ratio=0.5, shuffle_buffer=5)

    full_batches, full_losses, _ = train(run(tmp_path / "full"))
    assert any("sa1b" in b for b in full_batches) and any("sa1b" not in b for b in full_batches)
    first_batches, first_losses, stopped = train(run(tmp_path / "cut"), sigterm_after=1)
    assert stopped is not None and stopped.iteration == 2
    rest_batches, rest_losses, _ = train(run(tmp_path / "cut"), resume=True)
    assert_same_batches(first_batches + rest_batches, full_batches)
    assert {**first_losses, **rest_losses} == full_losses


def record_stream_keys(cfg, steps, result_dir):
    """Runs in each rank: the image ids of this rank's first ``steps`` streamed batches."""
    from detectron2.utils import comm

    from sca.data.caption_tokenizer import CaptionTokenizer

    loader = build_train_loader(cfg.data, CaptionTokenizer.from_config("", max_tokens=8), seed=cfg.seed)
    seen = [step["sa1b"]["image_ids"] for step in itertools.islice(iter(loader), steps)]
    torch.save(seen, f"{result_dir}/rank{comm.get_rank()}.pt")


@pytest.mark.slow  # two processes importing torch and detectron2, each with two loader workers: ~15 s
def test_two_gloo_ranks_with_two_workers_each_see_every_sample_once_per_epoch(tmp_path):
    from sca.engine.launch import launch_processes

    write_sa1b_shards(tmp_path, [6, 3, 5, 1, 7, 2], seed=3)  # 24 images, uneven shards
    write_caption_table(tmp_path / "captions.jsonl", write_sa1b_shards(tmp_path / "copy", [6, 3, 5, 1, 7, 2], seed=3)[1])
    cfg = base_config("dist.num_gpus=2", "device=cpu", "data.num_workers=2")
    cfg.data.sources.pop("demo")
    cfg = with_stream(cfg, shards=[str(tmp_path / "sa_{000000..000005}.tar")], captions=tmp_path / "captions.jsonl",
                      batch_size=3, shuffle_buffer=5)
    launch_processes(record_stream_keys, cfg, args=(cfg, 8, str(tmp_path)))  # 8 steps x 3 = two epochs of 12 per rank
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for epoch in (0, 1):
        parts = [{i for batch in rank[4 * epoch : 4 * epoch + 4] for i in batch} for rank in ranks]
        assert all(len(part) == 12 for part in parts) and not parts[0] & parts[1]
        assert parts[0] | parts[1] == set(range(1, 25))
    assert [b for b in ranks[0][:4]] != [b for b in ranks[0][4:]]  # the next epoch is reshuffled


def test_shard_indexes_are_saved_and_reused_until_the_shard_changes(sa1b, tmp_path, monkeypatch):
    _, paths, _ = sa1b
    shard = tmp_path / "sa_000000.tar"
    shard.write_bytes(paths[0].read_bytes())
    first = ShardCache(str(tmp_path / "cache")).index(str(shard))
    assert len(list((tmp_path / "cache" / "indexes").iterdir())) == 1
    monkeypatch.setattr(ShardIndex, "_scan_members", staticmethod(lambda path: pytest.fail("scanned again")))
    again = ShardCache(str(tmp_path / "cache")).index(str(shard))
    assert again.keys == first.keys and again.read(2) == first.read(2)
    monkeypatch.undo()
    shard.write_bytes(paths[1].read_bytes())  # another shard under the same name
    assert len(ShardCache(str(tmp_path / "cache")).index(str(shard))) == 3


@pytest.mark.slow  # four fresh processes (one per measured run) at toy sizes: ~1 min on 2 cores
def test_streaming_benchmark_reports_throughput_against_the_catalog_and_memory_per_size(tmp_path):
    import re
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    command = [sys.executable, "tools/benchmark_streaming.py", "--root", str(tmp_path), "--workers", "1", "--batch-size", "2",
               "--steps", "3", "--repeats", "1", "--shard-size", "2000", "--small", "20", "--large", "1500", "--rss-steps", "2", "--side-table", "per-shard"]
    result = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(r"^\| streamed \(tools/write_shards.py shards\) \| [\d.]+ \| [\d.]+ \|$", result.stdout, re.M)
    assert re.search(r"^streamed / catalog: [\d.]+x$", result.stdout, re.M)
    rows = re.findall(r"^\| ([\d,]+) \| (per shard|one file) \| \d+ MiB \| \d+ MiB \| [\d.]+ \|$", result.stdout, re.M)
    assert rows == [("20", "per shard"), ("1,500", "per shard")]


def test_pipe_shards_are_downloaded_once_into_the_cache_and_read_like_local_ones(sa1b, tokenizer, tmp_path):
    root, paths, _ = sa1b
    local = with_stream(base_config(), shards=[str(p) for p in paths[:2]], captions=root / "captions.jsonl", cache_dir=str(tmp_path / "a"))
    piped = with_stream(base_config(), shards=[f"pipe:cat {p}" for p in paths[:2]], captions=root / "captions.jsonl",
                        cache_dir=str(tmp_path / "b"))
    loader = build_train_loader(piped.data, tokenizer, seed=0)
    assert len(loader.dataset.records[1]) == 9
    assert sorted(p.name.split("-", 1)[1] for p in (tmp_path / "b").glob("*.tar")) == ["sa_000000.tar", "sa_000001.tar"]
    assert_same_batches(take(loader, 3), take(build_train_loader(local.data, tokenizer, seed=0), 3))


def test_box_only_regions_stream_through_the_box_mapper(tokenizer, tmp_path):
    record = DatasetCatalog.get("sca_demo_val")[0]
    regions = [{"id": 7, "bbox": [2.0, 3.0, 20.0, 30.0], "segmentation": None, "captions": ["a box"]},
               {"id": 8, "bbox": [30.0, 10.0, 25.0, 20.0], "segmentation": None, "captions": ["another box"]}]
    meta = {"image": {k: record[k] for k in ("image_id", "width", "height")} | {"file_name": "x.jpg"},
            "dataset": "boxes", "task_type": "recognition", "regions": regions}
    with wds.TarWriter(str(tmp_path / "boxes.tar")) as writer:
        writer.write({"__key__": "b_0", "jpg": open(record["file_name"], "rb").read(), "json": json.dumps(meta).encode()})
    cfg = base_config()
    cfg.data.sources.pop("demo")
    cfg = with_stream(cfg, "boxes", shards=[str(tmp_path / "boxes.tar")], stream_format="sca", batch_size=1, task_type="recognition")
    batch = take(build_train_loader(cfg.data, tokenizer, seed=0), 1)[0]["boxes"]
    assert sorted(batch["regions"]["captions"]) == [["a box"], ["another box"]] and batch["regions"]["masks"].shape[1:] == (0, 0)


def test_index_shards_writes_the_shard_list_a_source_reads(sa1b, load_tool, tokenizer, tmp_path):
    root, paths, _ = sa1b
    assert load_tool("index_shards").main([str(root / "sa_{000000..000004}.tar"), str(tmp_path / "shards.json"), "--cache-dir", str(tmp_path)]) == 0
    listing = json.loads((tmp_path / "shards.json").read_text())["shardlist"]
    assert [(e["url"], e["nsamples"]) for e in listing] == [(str(p), n) for p, n in zip(paths, [6, 3, 5, 1, 7])]
    listed = with_stream(base_config(), shards=[str(tmp_path / "shards.json")], captions=root / "captions.jsonl")
    patterned = with_stream(base_config(), shards=[str(root / "sa_{000000..000004}.tar")], captions=root / "captions.jsonl")
    assert_same_batches(take(build_train_loader(listed.data, tokenizer, seed=0), 2), take(build_train_loader(patterned.data, tokenizer, seed=0), 2))
