"""Referring data (RefCOCO / refer API layout): restricted loading, records, mapper, demo source."""

import json
import os
import pickle
import struct

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from panopticapi.utils import rgb2id
from PIL import Image

from sca.config import MapperConfig, PromptConfig
from sca.data.datasets.refer_format import load_refer_instances, load_refs, refer_metadata
from sca.data.datasets.register_demo_refs import DEMO_REFS_SPLITS, demo_refs_root, referring_sentences
from sca.data.mappers.referring import ReferringRegionMapper
from sca.data.record_regions import segmentation_mask

CATEGORIES = [{"id": 1, "name": "person", "supercategory": "person"}, {"id": 18, "name": "dog", "supercategory": "animal"}]


def python2_pickle(value) -> bytes:
    """Protocol-2 pickle as Python 2's pickler writes it: ``str`` as byte strings (SHORT_BINSTRING)."""
    out = bytearray(b"\x80\x02")

    def emit(v):
        if isinstance(v, dict):
            out.extend(b"}(")
            for key, item in v.items():
                emit(key)
                emit(item)
            out.extend(b"u")
        elif isinstance(v, list):
            out.extend(b"](")
            for item in v:
                emit(item)
            out.extend(b"e")
        elif isinstance(v, str):
            data = v.encode("utf-8")
            out.extend(b"U" + bytes([len(data)]) + data)
        else:
            out.extend(b"J" + struct.pack("<i", v))

    emit(value)
    out.extend(b".")
    return bytes(out)


def ref(ref_id, ann_id, image_id, split, *texts):
    sentences = [{"sent_id": 10 * ref_id + i, "raw": t, "sent": t, "tokens": t.split()} for i, t in enumerate(texts)]
    return {
        "ref_id": ref_id, "ann_id": ann_id, "image_id": image_id, "category_id": 1, "split": split,
        "file_name": f"COCO_train2014_{image_id:012d}_{ann_id}.jpg", "sent_ids": [s["sent_id"] for s in sentences],
        "sentences": sentences,
    }


@pytest.fixture(scope="module")
def refcoco(tmp_path_factory):
    """A two-image RefCOCO tree: ``refcoco/{instances.json, refs(unc).p}`` and ``coco/train2014``."""
    root = tmp_path_factory.mktemp("datasets")
    (root / "refcoco").mkdir()
    images_dir = root / "coco" / "train2014"
    images_dir.mkdir(parents=True)
    images = []
    for image_id, (w, h) in ((9, (80, 60)), (25, (50, 100))):
        name = f"COCO_train2014_{image_id:012d}.jpg"
        Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(images_dir / name)
        images.append({"id": image_id, "file_name": name, "width": w, "height": h})
    images.append({"id": 31, "file_name": "../../escape.jpg", "width": 10, "height": 10})
    dog = np.zeros((100, 50), np.uint8, order="F")
    dog[40:90, 5:30] = 1
    rle = mask_util.encode(dog)
    rle["counts"] = rle["counts"].decode()
    annotations = [
        {"id": 101, "image_id": 9, "category_id": 1, "bbox": [10, 5, 40, 30], "area": 600, "iscrowd": 0,
         "segmentation": [[10, 5, 50, 5, 30, 35]]},
        {"id": 102, "image_id": 9, "category_id": 18, "bbox": [55, 30, 20, 25], "area": 500, "iscrowd": 0,
         "segmentation": [[55, 30, 75, 30, 75, 55, 55, 55]]},
        {"id": 201, "image_id": 25, "category_id": 18, "bbox": [5, 40, 25, 50], "area": 1250, "iscrowd": 0, "segmentation": rle},
        {"id": 301, "image_id": 31, "category_id": 1, "bbox": [0, 0, 5, 5], "area": 25, "iscrowd": 0, "segmentation": [[0, 0, 5, 0, 5, 5]]},
    ]
    content = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    (root / "refcoco" / "instances.json").write_text(json.dumps(content))
    refs = [
        ref(0, 101, 9, "train", "man on the left", "person in the café"),
        ref(1, 102, 9, "train", "dog right"),
        ref(2, 201, 25, "train", "brown dog"),
        ref(3, 999, 25, "train", "missing annotation"),
        ref(4, 301, 31, "train", "outside the root"),
        ref(5, 102, 9, "val", "val dog"),
    ]
    (root / "refcoco" / "refs(unc).p").write_bytes(python2_pickle(refs))
    return root


def load(root, split="train"):
    return load_refer_instances(
        str(root / "refcoco" / "instances.json"), str(root / "refcoco" / "refs(unc).p"), str(root / "coco" / "train2014"),
        split, refer_metadata(CATEGORIES),
    )


def test_python2_refs_load_as_text(refcoco):
    refs = load_refs(str(refcoco / "refcoco" / "refs(unc).p"))
    assert refs[0]["sentences"][1]["sent"] == "person in the café"
    assert refs[0]["file_name"] == "COCO_train2014_000000000009_101.jpg" and refs[0]["ann_id"] == 101


def test_refs_pickle_naming_code_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps([Payload()], protocol=2))
    with pytest.raises(ValueError, match="refusing to load"):
        load_refs(str(path))


def test_records_group_refs_per_image_and_skip_bad_ones(refcoco, caplog):
    records = {r["image_id"]: r for r in load(refcoco)}
    assert sorted(records) == [9, 25]
    first = records[9]
    assert first["file_name"].endswith("coco/train2014/COCO_train2014_000000000009.jpg") and (first["height"], first["width"]) == (60, 80)
    assert [(a["ref_id"], a["category_id"], a["sentences"]) for a in first["annotations"]] == [
        (0, 0, ["man on the left", "person in the café"]),
        (1, 1, ["dog right"]),
    ]
    assert "'missing annotation or image': 1" in caplog.text and "'image path outside image_root': 1" in caplog.text
    assert [r["annotations"][0]["sentences"] for r in load(refcoco, "val")] == [["val dog"]]


def reference_mask(annotation, height, width, size):
    """Independent reference: pycocotools rasterization, SAM's longest-side resize (nearest), padding."""
    segmentation = annotation["segmentation"]
    rle = mask_util.merge(mask_util.frPyObjects(segmentation, height, width)) if isinstance(segmentation, list) else segmentation
    mask = Image.fromarray(mask_util.decode(rle))
    scale = size / max(width, height)
    resized = np.asarray(mask.resize((int(np.round(width * scale)), int(np.round(height * scale))), Image.NEAREST))
    padded = np.zeros((size, size), bool)
    padded[: resized.shape[0], : resized.shape[1]] = resized > 0
    return padded


def test_eval_sample_regions_match_the_annotations(refcoco, tokenizer):
    mapper = ReferringRegionMapper(MapperConfig(image_size=64, mask_size=64), is_train=False, tokenizer=tokenizer, source="ref", task_type="caption")
    for record in load(refcoco):
        sample = mapper(record)
        regions = sample["regions"]
        assert regions["region_ids"].tolist() == [a["ref_id"] for a in record["annotations"]]
        for i, annotation in enumerate(record["annotations"]):
            expected = reference_mask(annotation, record["height"], record["width"], 64)
            assert torch.equal(regions["masks"][i], torch.from_numpy(expected))
            ys, xs = np.nonzero(expected)
            assert regions["boxes"][i].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            assert regions["captions"][i] == annotation["sentences"]
        assert regions["input_ids"] == tokenizer.encode([a["sentences"][0] for a in record["annotations"]])
        assert sample["task_type"] == "caption"


def test_training_samples_draw_sentences_and_keep_points_in_masks(refcoco, tokenizer):
    cfg = MapperConfig(image_size=64, mask_size=64, augmentation="lsj", min_scale=0.5, max_scale=1.5,
                       prompt=PromptConfig(weights={"box": 1, "point": 1}, num_points=2))
    mapper = ReferringRegionMapper(cfg, is_train=True, tokenizer=tokenizer, source="ref", task_type="caption")
    record = load(refcoco)[0]
    drawn = set()
    for seed in range(30):
        np.random.seed(seed)
        sample = mapper(json.loads(json.dumps(record)))
        if sample is None:
            continue
        regions = sample["regions"]
        for i, ids in enumerate(regions["input_ids"]):
            assert tokenizer.decode([ids])[0] in regions["captions"][i]
            drawn.add(tokenizer.decode([ids])[0])
            x, y = regions["points"][i].long().unbind(-1)
            assert regions["masks"][i][y, x].all()
    assert {"man on the left", "person in the café"} <= drawn


def test_demo_sentences_describe_colour_shape_and_layout():
    names = ["red circle", "blue square", "green triangle"]
    centers = np.array([[10.0, 50.0], [40.0, 48.0], [42.0, 90.0]])
    assert referring_sentences(names, centers) == [
        ["red circle left of blue square", "left red circle", "the red circle"],
        ["blue square right of red circle", "middle blue square", "the blue square"],
        ["green triangle below blue square", "right green triangle", "the green triangle"],
    ]


def test_demo_refs_source_is_in_the_refcoco_layout():
    records = DatasetCatalog.get("sca_demo_refs_val")
    root = demo_refs_root()
    refs = load_refs(str(root / "refcoco_demo" / "refs(demo).p"))
    assert {r["split"] for r in refs} == {"train", "val"}
    assert len(records) == 200 and all(os.path.isfile(r["file_name"]) for r in records)
    assert os.path.basename(records[0]["file_name"]) == f"COCO_train2014_{records[0]['image_id']:012d}.jpg"
    demo = {r["image_id"]: r for r in DatasetCatalog.get(DEMO_REFS_SPLITS["sca_demo_refs_val"][0])}
    offset = DEMO_REFS_SPLITS["sca_demo_refs_val"][2]
    names = MetadataCatalog.get("sca_demo_refs_val").thing_classes
    for record in records[:20]:
        segments = demo[record["image_id"] - offset]["segments_info"]
        assert sorted(a["category_id"] for a in record["annotations"]) == sorted(s["category_id"] for s in segments)
        pan_ids = rgb2id(np.asarray(Image.open(demo[record["image_id"] - offset]["pan_seg_file_name"]).convert("RGB")))
        visible = sorted(np.flatnonzero(pan_ids == s["id"]).tolist() for s in segments)
        height, width = record["height"], record["width"]
        # masks are pixel-exact, ring holes included (polygons would fill them)
        assert sorted(np.flatnonzero(segmentation_mask(a["segmentation"], height, width)).tolist() for a in record["annotations"]) == visible
        for annotation in record["annotations"]:
            assert annotation["sentences"][-1] == f"the {names[annotation['category_id']]}"
