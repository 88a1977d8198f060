"""The demo source: deterministic, atomic, in the exact COCO panoptic format, registered lazily."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from panopticapi.utils import rgb2id
from PIL import Image

from sca.data.datasets import register_demo
from sca.data.datasets.register_demo import DEMO_CATEGORIES, DemoSplit, ensure_demo_data

SMALL_SPLITS = {"sca_demo_train": DemoSplit("train", 12, 1), "sca_demo_val": DemoSplit("val", 6, 2)}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_generation_is_deterministic(tmp_path, monkeypatch):
    monkeypatch.setattr(register_demo, "DEMO_SPLITS", SMALL_SPLITS)
    first, second = _files(ensure_demo_data(tmp_path / "a")), _files(ensure_demo_data(tmp_path / "b"))
    assert first == second and len(first) == 2 * (12 + 6) + 2 + 1


def test_interrupted_generation_is_never_trusted(tmp_path, monkeypatch):
    monkeypatch.setattr(register_demo, "DEMO_SPLITS", SMALL_SPLITS)
    original = register_demo._generate_split

    def crash_on_val(root, split):
        original(root, split)
        if split.folder == "val":
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(register_demo, "_generate_split", crash_on_val)
    with pytest.raises(KeyboardInterrupt):
        ensure_demo_data(tmp_path / "demo")
    assert not (tmp_path / "demo").exists()  # nothing half-written where the data is expected
    assert not list(tmp_path.glob(".demo.partial-*"))  # the staging folder is cleaned up
    monkeypatch.setattr(register_demo, "_generate_split", original)
    root = ensure_demo_data(tmp_path / "demo")
    assert (root / "COMPLETE").is_file() and len(list((root / "images" / "val").glob("*.jpg"))) == 6


def test_a_folder_without_the_marker_is_refused(tmp_path):
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "stray.txt").write_text("not demo data")
    with pytest.raises(FileExistsError, match="no complete demo dataset"):
        ensure_demo_data(tmp_path / "demo")


def test_registration_is_lazy_and_repeatable(tmp_path, monkeypatch):
    monkeypatch.setenv("SCA_DEMO_ROOT", str(tmp_path / "lazy"))
    register_demo.register_all_demo()
    register_demo.register_all_demo()  # registering twice replaces, never crashes
    try:
        assert not (tmp_path / "lazy").exists()  # nothing generated or read at registration
        metadata = MetadataCatalog.get("sca_demo_val")
        assert metadata.panoptic_root == str(tmp_path / "lazy" / "panoptic_val")
        assert metadata.evaluator_type == "coco_panoptic_seg" and metadata.label_divisor == 1000
        assert len(metadata.stuff_classes) == len(metadata.thing_classes) == 18
    finally:
        monkeypatch.delenv("SCA_DEMO_ROOT")
        register_demo.register_all_demo()


def test_records_match_the_pngs_exactly(demo_records):
    metadata = MetadataCatalog.get("sca_demo_val")
    for record in demo_records["sca_demo_val"][:50]:
        image = Image.open(record["file_name"])
        assert image.size == (record["width"], record["height"])
        ids = rgb2id(np.asarray(Image.open(record["pan_seg_file_name"]).convert("RGB")))
        assert set(np.unique(ids)) - {0} == {s["id"] for s in record["segments_info"]}
        for segment in record["segments_info"]:
            ys, xs = np.nonzero(ids == segment["id"])
            assert segment["area"] == len(xs)
            assert segment["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert segment["isthing"] and segment["iscrowd"] == 0
            assert 0 <= segment["category_id"] < len(metadata.stuff_classes)


def test_json_has_the_coco_panoptic_keys(demo_records):
    metadata = MetadataCatalog.get("sca_demo_train")
    content = json.loads(Path(metadata.panoptic_json).read_text())
    assert set(content) >= {"images", "annotations", "categories"}
    assert set(content["images"][0]) == {"id", "file_name", "width", "height"}
    assert set(content["annotations"][0]) == {"image_id", "file_name", "segments_info"}
    assert set(content["annotations"][0]["segments_info"][0]) == {"id", "category_id", "iscrowd", "bbox", "area"}
    assert content["categories"] == DEMO_CATEGORIES


def test_captions_are_varied_balanced_and_depend_on_the_shape(demo_records):
    names = MetadataCatalog.get("sca_demo_val").stuff_classes
    for split, records in demo_records.items():
        counts = Counter(names[s["category_id"]] for r in records for s in r["segments_info"])
        assert len(counts) == 18
        total = sum(counts.values())
        assert max(counts.values()) / total <= 0.1, split  # an image-blind constant guess scores <= 0.1
        assert max(counts.values()) - min(counts.values()) <= 0.1 * total / 18, split


def test_demo_splits_do_not_share_images(demo_records):
    train = {Path(r["file_name"]).read_bytes() for r in demo_records["sca_demo_train"][:300]}
    assert not any(Path(r["file_name"]).read_bytes() in train for r in demo_records["sca_demo_val"])
    assert DatasetCatalog.get("sca_demo_val")[0]["file_name"].endswith("000001.jpg")
