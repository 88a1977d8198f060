"""Objects365 v2 and V3Det: streamed loading into compact records, registration, the preparation
script and the box mapper, on trees written in the official layouts
(``sca.data.datasets.synthetic_detection_trees``)."""

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, DatasetFromList, MetadataCatalog
from detectron2.data.build import get_detection_dataset_dicts
from detectron2.utils.visualizer import Visualizer
from PIL import Image

from sca.config import DataConfig, MapperConfig, PromptConfig, SourceConfig
from sca.data.datasets.box_records import BoxRecords
from sca.data.datasets.coco_boxes import read_coco_boxes
from sca.data.datasets.json_stream import iter_top_level
from sca.data.datasets.register_objects365 import (
    OBJECTS365_SPLITS,
    objects365_categories,
    objects365_folder_resolver,
    register_all_objects365,
)
from sca.data.datasets.register_v3det import V3DET_SPLITS, register_all_v3det
from sca.data.datasets.synthetic_detection_trees import write_objects365_tree, write_v3det_tree
from sca.data.mappers import build_region_mapper
from sca.data.multi_source import build_test_loader, build_train_loader, compact_records

ROOT = Path(__file__).resolve().parent.parent
O365 = "sca_objects365_v2"
BAD_BOXES = [  # added to the second train image (index 1): (bbox, what loading does with it)
    ([5.0, 5.0, 0.0, 10.0], "dropped"),  # zero width
    ([-40.0, -40.0, 10.0, 10.0], "dropped"),  # entirely outside
    ([-5.0, 2.0, 20.0, 1000.0], "clipped"),  # partly outside
]


def add_annotations(json_file: Path, image_index: int, boxes: list[list[float]], **overrides) -> list[int]:
    """Append boxes to image ``image_index`` of a COCO JSON; returns their annotation ids."""
    content = json.loads(json_file.read_text())
    image = content["images"][image_index]
    next_id = max(a["id"] for a in content["annotations"]) + 1
    ids = list(range(next_id, next_id + len(boxes)))
    for ann_id, box in zip(ids, boxes):
        ann = {"id": ann_id, "iscrowd": 0, "isfake": 0, "area": 1.0, "isreflected": 0, "bbox": box,
               "image_id": image["id"], "category_id": 5}
        content["annotations"].append({**ann, **overrides})
    json_file.write_text(json.dumps(content))
    return ids


@pytest.fixture(scope="session")
def tree(tmp_path_factory):
    """Objects365 train in the ``images/v1|v2/patchN`` layout with bad input (a truncated JPEG, a
    missing image, degenerate and outside boxes), val in the ``patchN`` layout; V3Det with all
    13,204 classes. Registered on this root; nothing prepared yet."""
    root = tmp_path_factory.mktemp("datasets")
    train = write_objects365_tree(root, "train", 8, layout="versioned", seed=1)
    write_objects365_tree(root, "val", 4, layout="patches", seed=2)
    train_json = root / "objects365/annotations/zhiyuan_objv2_train.json"
    add_annotations(train_json, 1, [box for box, _ in BAD_BOXES])
    image_dir = root / "objects365/train"
    truncated = image_dir / train["images"][2]["file_name"]
    truncated.write_bytes(truncated.read_bytes()[:200])
    (image_dir / train["images"][3]["file_name"]).unlink()
    write_v3det_tree(root, "train", 4, seed=3)
    write_v3det_tree(root, "val", 3, seed=4)
    register_all_objects365(str(root))
    register_all_v3det(str(root))
    return root


def json_content(root: Path, relative: str) -> dict:
    return json.loads((root / relative).read_text())


def box_mapper(name, tokenizer, is_train, **options):
    cfg = MapperConfig(image_size=96, mask_size=24, **options)
    return build_region_mapper(name, cfg, is_train=is_train, tokenizer=tokenizer, source=name, task_type="recognition")


# --- streamed JSON -----------------------------------------------------------------------------


def test_streamed_json_equals_json_load_at_any_chunk_size(tmp_path):
    content = {"info": {"a": "é", "n": 1.5e-3}, "images": [{"id": i, "name": f"ü{i}"} for i in range(300)],
               "empty": [], "annotations": [{"bbox": [0.1 * i, 123456789012, -1e5, i]} for i in range(500)], "z": None}
    path = tmp_path / "content.json"
    path.write_text(json.dumps(content, ensure_ascii=False, indent=1))
    for chunk_bytes in (7, 4096):
        streamed = {key: [] for key, value in content.items() if isinstance(value, list)}
        for key, value in iter_top_level(path, chunk_bytes=chunk_bytes):
            if isinstance(content[key], list):
                streamed[key].append(value)
            else:
                streamed[key] = value
        assert streamed == content


@pytest.mark.parametrize("text", ['{"images": [{"id": 1}, {"id": 2', '{"images": [{"id": 1},, {"id": 2}]}', '[{"id": 1}]', '{"a": 1} {}'])
def test_malformed_json_is_an_error_naming_the_file(tmp_path, text):
    (tmp_path / "bad.json").write_text(text)
    with pytest.raises(ValueError, match="bad.json: malformed JSON near byte"):
        list(iter_top_level(tmp_path / "bad.json", chunk_bytes=5))


# --- registration and loading ------------------------------------------------------------------


def test_every_split_is_registered_with_metadata(tree):
    fixes = {c["id"]: c for c in objects365_categories()}
    assert sum(c["original"] != c["name"] for c in fixes.values()) == 13
    for split in ("train", "val"):
        metadata = MetadataCatalog.get(f"{O365}_{split}")
        assert metadata.evaluator_type == "coco" and Path(metadata.image_root) == tree / "objects365" / split
        assert metadata.thing_dataset_id_to_contiguous_id == {i: i - 1 for i in range(1, 366)}
        assert metadata.thing_classes == metadata.class_captions == [fixes[i]["name"] for i in range(1, 366)]
        for wrong, right in (("Moniter/TV", "Monitor/TV"), ("Bakset", "Basket"), ("Dinning Table", "Dining Table")):
            assert wrong not in metadata.class_captions and right in metadata.class_captions
        v3det = MetadataCatalog.get(f"sca_v3det_{split}")
        assert v3det.evaluator_type == "coco" and Path(v3det.image_root) == tree / "V3Det"
        assert Path(v3det.json_file) == tree / "V3Det/annotations" / f"v3det_2023_v1_{split}.json"
    assert set(OBJECTS365_SPLITS) == {f"{O365}_train", f"{O365}_val"} and set(V3DET_SPLITS) == {"sca_v3det_train", "sca_v3det_val"}


def test_registration_is_lazy_and_repeatable(tree, tmp_path):
    try:
        for _ in range(2):
            register_all_objects365(str(tmp_path / "nowhere"))
            register_all_v3det(str(tmp_path / "nowhere"))
        assert not hasattr(MetadataCatalog.get("sca_v3det_val"), "thing_classes")  # read with the file, not before
        with pytest.raises(FileNotFoundError, match="zhiyuan_objv2_train.json not found.*datasets/README.md"):
            DatasetCatalog.get(f"{O365}_train")
        with pytest.raises(FileNotFoundError, match="v3det_2023_v1_val.json not found"):
            DatasetCatalog.get("sca_v3det_val")
    finally:
        register_all_objects365(str(tree))
        register_all_v3det(str(tree))


@pytest.mark.parametrize("split", ["train", "val"])
def test_objects365_records_follow_the_json_in_either_layout(tree, split):
    content = json_content(tree, f"objects365/annotations/zhiyuan_objv2_{split}.json")
    records = DatasetCatalog.get(f"{O365}_{split}")
    assert isinstance(records, BoxRecords)
    images = {image["id"]: image for image in content["images"]}
    assert [r["image_id"] for r in records] == sorted(images)
    layout_prefix = "images/v" if split == "train" else "patch"
    for record in records:
        image = images[record["image_id"]]
        expected = tree / "objects365" / split / (image["file_name"] if split == "train" else image["file_name"].split("/", 2)[2])
        assert record["file_name"] == str(expected) and os.path.relpath(expected, tree / "objects365" / split).startswith(layout_prefix)
        assert (record["height"], record["width"]) == (image["height"], image["width"])
        anns = sorted((a for a in content["annotations"] if a["image_id"] == image["id"] and a["bbox"][2] > 0 and a["bbox"][0] > -40),
                      key=lambda a: a["id"])
        assert [a["id"] for a in record["annotations"]] == [a["id"] for a in anns]
        for got, ann in zip(record["annotations"], anns):
            assert got["category_id"] == ann["category_id"] - 1 and got["iscrowd"] == ann["iscrowd"]
            x, y, w, h = ann["bbox"]
            x0, y0 = max(x, 0), max(y, 0)
            x1, y1 = min(x + w, image["width"]), min(y + h, image["height"])
            assert got["bbox"] == pytest.approx([x0, y0, x1 - x0, y1 - y0])
    existing = [Path(r["file_name"]).is_file() for r in records]
    assert all(existing) if split == "val" else existing.count(False) == 1  # the deleted image


def test_bad_boxes_are_clipped_or_dropped_and_counted(tree, caplog):
    json_file = tree / "objects365/annotations/zhiyuan_objv2_train.json"
    result = read_coco_boxes(str(json_file), str(tree / "objects365/train"))
    assert result.counts["clipped_boxes"] == 1 and result.counts["dropped_boxes"] == 2
    content = json.loads(json_file.read_text())
    assert result.counts["boxes"] == len(content["annotations"]) - 2 == result.records.num_boxes
    with caplog.at_level(logging.WARNING):
        DatasetCatalog.get(f"{O365}_train")
    assert "clipped 1 boxes to their image; dropped 2 boxes with no area inside their image" in caplog.text


def test_an_image_left_without_boxes_is_dropped_and_counted(tree, tmp_path):
    content = json_content(tree, "objects365/annotations/zhiyuan_objv2_val.json")
    first = content["images"][0]["id"]
    for ann in content["annotations"]:
        if ann["image_id"] == first:
            ann["bbox"][2] = -1.0
    (tmp_path / "val.json").write_text(json.dumps(content))
    result = read_coco_boxes(str(tmp_path / "val.json"), str(tree / "objects365/val"))
    assert result.counts["images_without_boxes"] == 1 and first not in result.records.image_ids


@pytest.mark.parametrize(
    "change, message",
    [
        ({"category_id": 999}, r"annotation (\d+) \(image \d+\) has unknown category_id 999"),
        ({"image_id": 123456}, r"annotation (\d+) has image_id 123456, absent from 'images'"),
    ],
)
def test_unknown_category_or_image_is_an_error_naming_the_annotation(tree, tmp_path, change, message):
    json_file = tmp_path / "bad.json"
    json_file.write_text((tree / "objects365/annotations/zhiyuan_objv2_val.json").read_text())
    (ann_id,) = add_annotations(json_file, 0, [[1.0, 1.0, 5.0, 5.0]], **change)
    with pytest.raises(ValueError, match="bad.json: " + message) as error:
        read_coco_boxes(str(json_file), str(tree / "objects365/val"))
    assert error.match(f"annotation {ann_id} ")


def test_objects365_classes_must_be_the_table(tree, tmp_path, monkeypatch):
    content = json_content(tree, "objects365/annotations/zhiyuan_objv2_val.json")
    content["categories"][2]["name"] = "Table"  # id 3 is "Chair"
    (tmp_path / "objects365/annotations").mkdir(parents=True)
    (tmp_path / "objects365/annotations/zhiyuan_objv2_val.json").write_text(json.dumps(content))
    register_all_objects365(str(tmp_path))
    try:
        with pytest.raises(ValueError, match="category 3 is 'Table', expected 'Chair'"):
            DatasetCatalog.get(f"{O365}_val")
    finally:
        register_all_objects365(str(tree))


def test_folders_resolve_against_the_layout_on_disk(tmp_path):
    (tmp_path / "train/patch3").mkdir(parents=True)
    (tmp_path / "train/images/v2/patch20").mkdir(parents=True)
    resolve = objects365_folder_resolver(str(tmp_path / "train"))
    assert resolve("images/v1/patch3") == str(tmp_path / "train/patch3")
    assert resolve("images/v2/patch20") == str(tmp_path / "train/images/v2/patch20")
    assert resolve("patch20") == str(tmp_path / "train/images/v2/patch20")
    assert resolve("images/v1/patch9") == str(tmp_path / "train/images/v1/patch9")  # absent: as named
    assert resolve("../x") is None  # leaves the image root: its images are dropped


def test_v3det_records_and_its_13204_class_names(tree):
    content = json_content(tree, "V3Det/annotations/v3det_2023_v1_val.json")
    records = DatasetCatalog.get("sca_v3det_val")
    metadata = MetadataCatalog.get("sca_v3det_val")
    assert len(metadata.thing_classes) == len(metadata.class_captions) == 13204
    assert metadata.class_captions == [c["name"] for c in content["categories"]]
    for record, image in zip(records, sorted(content["images"], key=lambda i: i["id"])):
        assert record["file_name"] == str(tree / "V3Det" / image["file_name"]) and Path(record["file_name"]).is_file()
        assert image["file_name"].startswith("images/a")
        anns = [a for a in content["annotations"] if a["image_id"] == image["id"]]
        assert [metadata.class_captions[a["category_id"]] for a in record["annotations"]] == [
            f"object class {a['category_id']}" for a in anns
        ]


def test_detectron2_tools_accept_the_records(tree):
    records = DatasetCatalog.get(f"{O365}_val")
    assert isinstance(get_detection_dataset_dicts([f"{O365}_val", f"{O365}_val"]), torch.utils.data.ConcatDataset)
    serialized = DatasetFromList(records, copy=False, serialize=True)
    assert [serialized[i] for i in range(len(records))] == list(records) == records[:]
    assert records[-1] == records[len(records) - 1] and records[1:3] == [records[1], records[2]]
    with pytest.raises(IndexError):
        records[len(records)]
    record = records[0]
    image = np.asarray(Image.open(record["file_name"]).convert("RGB"))
    visualizer = Visualizer(image, MetadataCatalog.get(f"{O365}_val"))
    assert not np.array_equal(visualizer.draw_dataset_dict(record).get_image(), image)


def test_loaders_hold_the_compact_records_as_they_are(tree, tokenizer):
    """No per-record Python copy: the training and test loaders index the catalog's BoxRecords
    (several datasets are concatenated); a catalog list is serialized instead."""
    val = DatasetCatalog.get(f"{O365}_val")
    assert isinstance(compact_records([f"{O365}_val"]), BoxRecords)
    both = compact_records([f"{O365}_val", f"{O365}_train"])
    assert isinstance(both, torch.utils.data.ConcatDataset) and len(both) == len(val) + len(DatasetCatalog.get(f"{O365}_train"))
    assert both[len(val) - 1] == val[-1] and both[len(val)] == DatasetCatalog.get(f"{O365}_train")[0]
    DatasetCatalog.register("sca_test_list_records", lambda: list(val))
    try:
        serialized = compact_records(["sca_test_list_records"])
        assert isinstance(serialized, DatasetFromList) and [serialized[i] for i in range(len(val))] == list(val)
    finally:
        DatasetCatalog.remove("sca_test_list_records")

    mapper = MapperConfig(image_size=64, mask_size=16, prompt=PromptConfig(weights={"box": 1.0}))
    cfg = DataConfig(name="boxes", sources={"o365": SourceConfig(train_datasets=[f"{O365}_val"], mapper=mapper)},
                     test_datasets=[f"{O365}_val"], test_mapper=mapper, num_workers=0)
    train_loader = build_train_loader(cfg, tokenizer, seed=0)
    assert isinstance(train_loader.dataset.records[0], BoxRecords)
    assert "o365" in next(iter(train_loader))
    test_loader = build_test_loader(cfg, f"{O365}_val", tokenizer, max_images=2)
    assert isinstance(test_loader.loader.dataset.records.dataset, BoxRecords) and len(test_loader.loader.dataset) == 2


# --- preparation -------------------------------------------------------------------------------


def test_prepare_objects365_counts_and_writes_a_cleaned_file(tree, tmp_path, run_preparation):
    raw = json_content(tree, "objects365/annotations/zhiyuan_objv2_train.json")
    code, output = run_preparation("prepare_objects365", "--root", tree, "--workers", 1, "--splits", "train")
    assert code == 0, output
    assert "images kept 6, images missing 1, images corrupt 1, images size mismatch 0" in output
    assert "boxes clipped 1, boxes dropped 2" in output
    clean = json_content(tree, "objects365/annotations/zhiyuan_objv2_train_clean.json")
    assert clean["info"]["images_missing"] == 1 and clean["info"]["images_corrupt"] == 1
    kept_ids = {i["id"] for i in raw["images"]} - {raw["images"][2]["id"], raw["images"][3]["id"]}
    assert {i["id"] for i in clean["images"]} == kept_ids
    for image in clean["images"]:
        assert image["file_name"].startswith("images/v") and (tree / "objects365/train" / image["file_name"]).is_file()
    assert {a["image_id"] for a in clean["annotations"]} <= kept_ids
    assert [c["name"] for c in clean["categories"]][37] == "Monitor/TV"
    records = DatasetCatalog.get(f"{O365}_train")  # the registered split now reads the cleaned file
    assert sorted(records.image_ids.tolist()) == sorted(kept_ids) and all(Path(r["file_name"]).is_file() for r in records)
    assert records.num_boxes == len(clean["annotations"]) == clean["info"]["boxes_kept"]
    code, output = run_preparation("prepare_objects365", "--root", tree, "--splits", "train")
    assert code == 0 and "split skipped" in output
    code, output = run_preparation("prepare_objects365", "--root", tmp_path, "--splits", "val")
    assert code == 2 and "objects365" in output and "Traceback" not in output


# --- mapper ------------------------------------------------------------------------------------


def expected_boxes(record: dict, valid_box: torch.Tensor, size: int, flip: bool) -> np.ndarray:
    """Independent reference for one transform, read back from the sample's ``valid_box``: flip,
    scale, shift by the crop, then clip to the image content in the frame."""
    x0, y0, x1, y1 = valid_box.tolist()
    sx, sy = (x1 - x0) / record["width"], (y1 - y0) / record["height"]
    boxes = []
    for ann in record["annotations"]:
        x, y, w, h = ann["bbox"]
        if flip:
            x = record["width"] - x - w
        box = [x * sx + x0, y * sy + y0, (x + w) * sx + x0, (y + h) * sy + y0]
        boxes.append(np.clip(box, [max(x0, 0), max(y0, 0)] * 2, [min(x1, size), min(y1, size)] * 2))
    return np.array(boxes).reshape(-1, 4)


def test_eval_regions_are_every_box_with_its_class_caption(tree, tokenizer):
    mapper = box_mapper(f"{O365}_val", tokenizer, is_train=False)
    metadata = MetadataCatalog.get(f"{O365}_val")
    for record in DatasetCatalog.get(f"{O365}_val"):
        sample = mapper(record)
        regions = sample["regions"]
        kept = [a for a in record["annotations"] if not a["iscrowd"]]
        boxes = expected_boxes({**record, "annotations": kept}, sample["valid_box"], 96, flip=False)
        big = [(b[2] - b[0]) * (b[3] - b[1]) >= 4 for b in boxes]
        assert regions["region_ids"].tolist() == [a["id"] for a, ok in zip(kept, big) if ok]
        np.testing.assert_allclose(regions["boxes"].numpy(), boxes[big], atol=1e-3)
        assert regions["captions"] == [[metadata.class_captions[a["category_id"]]] for a, ok in zip(kept, big) if ok]
        assert regions["masks"].shape == (len(regions["boxes"]), 0, 0) and sample["skipped"] == {"skipped_images": []}


def test_lsj_transforms_boxes_and_points_with_the_image(tree, tokenizer):
    name = "sca_v3det_train"
    mapper = box_mapper(name, tokenizer, is_train=True, min_scale=0.5, max_scale=2.0, max_regions=3,
                        prompt=PromptConfig(weights={"box": 1, "point": 1}, num_points=3))
    np.random.seed(0)
    checked, prompt_types = 0, set()
    for _ in range(8):
        for record in DatasetCatalog.get(name):
            sample = mapper(record)
            if sample is None:
                continue
            regions = sample["regions"]
            assert 1 <= len(regions["boxes"]) <= 3 and len(set(regions["region_ids"].tolist())) == len(regions["boxes"])
            matches = []
            for flip in (False, True):
                reference = dict(zip((a["id"] for a in record["annotations"]), expected_boxes(record, sample["valid_box"], 96, flip)))
                matches.append(all(np.allclose(reference[i], box, atol=1e-3) for i, box in zip(regions["region_ids"].tolist(), regions["boxes"].numpy())))
            assert any(matches), "boxes differ from the reference transform"
            for box, points in zip(regions["boxes"], regions["points"]):
                assert ((points >= box[:2]) & (points <= box[2:])).all()  # points inside their box
            prompt_types |= set(regions["prompt_types"].tolist())
            checked += len(regions["boxes"])
    assert checked > 20 and prompt_types == {0, 1}


def test_mask_prompts_are_refused_for_box_sources(tree, tokenizer):
    with pytest.raises(ValueError, match="has boxes only"):
        box_mapper(f"{O365}_val", tokenizer, is_train=True, prompt=PromptConfig(weights={"box": 1, "mask": 0.5}))


def test_missing_or_truncated_images_are_skipped_and_counted(tree, tokenizer):
    raw = json_content(tree, "objects365/annotations/zhiyuan_objv2_train.json")
    records = {r["image_id"]: r for r in read_coco_boxes(str(tree / "objects365/annotations/zhiyuan_objv2_train.json"),
                                                            str(tree / "objects365/train")).records}
    mapper = box_mapper(f"{O365}_train", tokenizer, is_train=True, augmentation="none")
    truncated, missing = records[raw["images"][2]["id"]], records[raw["images"][3]["id"]]
    assert mapper(truncated) is None and mapper(missing) is None and mapper(missing) is None
    sample = mapper(records[raw["images"][0]["id"]])
    assert sorted(sample["skipped"]["skipped_images"]) == sorted([truncated["file_name"], missing["file_name"]])
    assert mapper(records[raw["images"][0]["id"]])["skipped"]["skipped_images"] == []


def test_boxes_keep_the_exact_values_of_the_file(tmp_path):
    values = [[0.1, 123.456789, 1 / 3, 12.3456789012345], [7.000001, 8.2, 30.99999, 0.000123]]  # not float32 values
    content = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 500, "height": 400}],
        "annotations": [{"id": i + 1, "image_id": 1, "category_id": 1, "bbox": box, "iscrowd": 0} for i, box in enumerate(values)],
        "categories": [{"id": 1, "name": "thing"}],
    }
    (tmp_path / "ann.json").write_text(json.dumps(content))
    records = read_coco_boxes(str(tmp_path / "ann.json"), str(tmp_path)).records
    assert [a["bbox"] for a in records[0]["annotations"]] == values
