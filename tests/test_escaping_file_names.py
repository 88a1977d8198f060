"""A ``file_name`` that leaves its dataset folder drops that record only (counted, named in a
warning, never opened): the rest of the split loads, for every annotation family."""

import json
import logging
import os
from pathlib import Path

import pytest

from sca.data.datasets.coco_boxes import read_coco_boxes
from sca.data.datasets.panoptic_json import load_panoptic_json
from sca.data.datasets.refer_format import load_refer_instances, load_refs
from sca.data.datasets.register_coco_panoptic import coco_panoptic_metadata
from sca.data.datasets.register_objects365 import objects365_folder_resolver
from sca.data.datasets.register_refcoco import refcoco_metadata
from sca.data.datasets.synthetic_detection_trees import write_objects365_tree, write_v3det_tree
from sca.data.datasets.synthetic_refer_trees import write_refer_tree
from sca.data.datasets.synthetic_trees import write_coco_panoptic_tree

ESCAPES = ["../../secret.jpg", "/etc/secret.jpg", "a/../../../secret.jpg", ".."]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    write_coco_panoptic_tree(root, "val", 3, seed=1)
    write_objects365_tree(root, "val", 3, layout="patches", seed=2)
    write_v3det_tree(root, "val", 3, num_classes=20, seed=3)
    write_refer_tree(root, 6, seed=4)
    (root.parent / "secret.jpg").write_bytes(b"outside the dataset folder")
    return root


def with_bad_file_name(json_file: Path, bad: str, tmp_path: Path, table: str = "images") -> Path:
    content = json.loads(json_file.read_text())
    content[table][0]["file_name"] = bad
    path = tmp_path / json_file.name
    path.write_text(json.dumps(content))
    return path


def assert_dropped_one(caplog, loaded: list[str], expected: int, root: Path, named: str) -> None:
    assert len(loaded) == expected - 1
    assert all(Path(f).resolve().is_relative_to(root.resolve()) and Path(f).is_file() for f in loaded)
    assert "dropped 1 record(s) whose file_name leaves the dataset folder" in caplog.text and named in caplog.text


@pytest.mark.parametrize("bad", ESCAPES)
@pytest.mark.parametrize("table", ["images", "annotations"])  # the image, or the panoptic PNG
def test_panoptic(root, tmp_path, caplog, bad, table):
    coco = root / "coco"
    json_file = with_bad_file_name(coco / "annotations/panoptic_val2017.json", bad, tmp_path, table)
    with caplog.at_level(logging.WARNING):
        records = load_panoptic_json(str(json_file), str(coco / "val2017"), str(coco / "panoptic_val2017"), coco_panoptic_metadata())
    assert_dropped_one(caplog, [r["file_name"] for r in records], 3, root, bad)
    assert all(Path(r["pan_seg_file_name"]).is_file() for r in records)


@pytest.mark.parametrize("bad", ESCAPES)
@pytest.mark.parametrize("family", ["objects365", "v3det"])
def test_boxes(root, tmp_path, caplog, bad, family):
    if family == "objects365":
        image_root, json_file = root / "objects365/val", root / "objects365/annotations/zhiyuan_objv2_val.json"
        resolver = objects365_folder_resolver(str(image_root))
    else:
        image_root, json_file, resolver = root / "V3Det", root / "V3Det/annotations/v3det_2023_v1_val.json", None
    original = json.loads(json_file.read_text())
    bad_json = with_bad_file_name(json_file, bad, tmp_path)
    with caplog.at_level(logging.WARNING):
        result = read_coco_boxes(str(bad_json), str(image_root), resolve_directory=resolver)
    records = list(result.records)
    assert_dropped_one(caplog, [r["file_name"] for r in records], len(original["images"]), root, os.path.normpath(bad))
    assert result.counts["images_outside_root"] == 1
    dropped_boxes = sum(a["image_id"] == original["images"][0]["id"] for a in original["annotations"])
    assert result.counts["boxes"] == len(original["annotations"]) - dropped_boxes == sum(len(r["annotations"]) for r in records)


@pytest.mark.parametrize("bad", ESCAPES)
def test_referring(root, tmp_path, caplog, bad):
    dataset = root / "refcoco"
    refs = load_refs(str(dataset / "refs(unc).p"))
    instances = json.loads((dataset / "instances.json").read_text())
    referred = {r["image_id"] for r in refs if r["split"] == "train"}
    target = next(i for i, image in enumerate(instances["images"]) if image["id"] in referred)
    instances["images"][target]["file_name"] = bad
    (tmp_path / "instances.json").write_text(json.dumps(instances))
    with caplog.at_level(logging.WARNING):
        records = load_refer_instances(
            str(tmp_path / "instances.json"), str(dataset / "refs(unc).p"), str(root / "coco/train2014"), "train", refcoco_metadata()
        )
    assert_dropped_one(caplog, [r["file_name"] for r in records], len(referred), root, bad)
