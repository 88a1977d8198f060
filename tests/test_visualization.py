"""Ground-truth regions of dataset dicts, PNG rendering, and the FiftyOne export (offline, temporary database)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from detectron2.data import MetadataCatalog
from detectron2.structures import BoxMode
from panopticapi.utils import rgb2id
from PIL import Image
from pycocotools import mask as mask_util

from sca.data.record_regions import record_regions
from sca.modeling.postprocessing import mask_box

ROOT = Path(__file__).resolve().parent.parent


def test_panoptic_record_regions(demo_records):
    record = demo_records["sca_demo_val"][0]
    metadata = MetadataCatalog.get("sca_demo_val")
    regions = record_regions(record, metadata)
    ids = rgb2id(np.asarray(Image.open(record["pan_seg_file_name"]).convert("RGB")))
    assert [r.region_id for r in regions] == [s["id"] for s in record["segments_info"]]
    for region, segment in zip(regions, record["segments_info"]):
        np.testing.assert_array_equal(region.mask, ids == segment["id"])
        assert region.captions == [metadata.stuff_classes[segment["category_id"]]]
        assert region.box == mask_box(region.mask)


def test_instance_record_regions():
    metadata = MetadataCatalog.get("sca_test_instances").set(thing_classes=["dog", "cat"])
    square = mask_util.encode(np.asfortranarray(np.pad(np.ones((4, 4), np.uint8), ((2, 4), (2, 4)))))
    record = {
        "file_name": "x.jpg", "height": 10, "width": 10,
        "annotations": [
            {"id": 5, "bbox": [1, 1, 4, 3], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0,
             "segmentation": [[1, 1, 5, 1, 5, 4, 1, 4]], "sentences": ["the dog on the left", "a dog"]},
            {"bbox": [2, 2, 6, 6], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 1, "segmentation": square},
            {"bbox": [0, 0, 9, 9], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 1},
            {"bbox": [0, 0, 9, 9], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0, "iscrowd": 1},
        ],
    }
    regions = record_regions(record, metadata)
    assert [(r.region_id, r.captions, r.box) for r in regions] == [
        (5, ["the dog on the left", "a dog"], [1, 1, 5, 4]),
        (1, ["cat"], [2, 2, 6, 6]),
        (2, ["cat"], [0, 0, 9, 9]),
    ]
    assert regions[0].mask.sum() > 0 and regions[1].mask.sum() == 16 and regions[2].mask is None
    with pytest.raises(ValueError, match="neither panoptic"):
        record_regions({"file_name": "y.jpg", "height": 1, "width": 1}, metadata)


def test_visualize_renders_ground_truth_and_predictions(trained_run, tmp_path, load_tool, demo_records):
    visualize = load_tool("visualize")
    predictions = trained_run / "eval" / "sca_demo_val" / "predictions.json"
    both = visualize.visualize("sca_demo_val", str(tmp_path / "both"), str(predictions))
    assert [Path(p).name for p in both] == ["1.png", "2.png"]  # the images that have predictions
    truth_only = visualize.visualize("sca_demo_val", str(tmp_path / "truth"), max_images=1)
    record = demo_records["sca_demo_val"][0]
    single, pair = np.asarray(Image.open(truth_only[0])), np.asarray(Image.open(both[0]))
    assert max(single.shape[:2]) == 512
    assert single.shape[1] / single.shape[0] == pytest.approx(record["width"] / record["height"], rel=0.02)
    assert pair.shape == (single.shape[0], 2 * single.shape[1], 3)
    np.testing.assert_array_equal(pair[:, : single.shape[1]], single)
    raw = np.asarray(Image.open(record["file_name"]).convert("RGB").resize(single.shape[1::-1]))
    assert np.abs(single.astype(int) - raw).mean() > 5  # masks and captions were drawn


FIFTYONE_CHECK = """
import json, sys, urllib.request
sys.path.insert(0, {root!r})
import importlib.util
spec = importlib.util.spec_from_file_location("export_fiftyone", {tool!r})
tool = importlib.util.module_from_spec(spec); spec.loader.exec_module(tool)
tool.main(["--dataset", "sca_demo_val", "--predictions", {predictions!r}, "--name", "sca-test", "--max-images", "3"])
fo = tool.fo
dataset = fo.load_dataset("sca-test")
first = dataset.first()
session = tool.fo.launch_app(dataset, address="127.0.0.1", port={port}, remote=True)
page = urllib.request.urlopen("http://127.0.0.1:{port}/", timeout=60)
print(json.dumps({{
    "samples": len(dataset), "persistent": dataset.persistent, "filepath": first.filepath,
    "ground_truth": [(d.label, d.references, d.region_id, d.mask is not None) for d in first.ground_truth.detections],
    "predictions": [
        (d.label, d.confidence, d.region_id, d.prompt_type, d.mask is not None) for d in first.predictions.detections
    ],
    "boxes": [d.bounding_box for d in first.ground_truth.detections],
    "app_status": page.status, "app_page": page.read(200).decode(),
}}))
session.close()
arguments = ["--dataset", "sca_demo_val", "--name", "sca-test", "--max-images", "1"]
try:
    tool.main(arguments)  # the name exists: an error that says to pass --overwrite
except SystemExit as exit_:
    print(json.dumps({{"again": exit_.code}}))
waits = []
class Session:  # stands in for the App: records how long it is asked to wait, then a Ctrl-C
    def wait(self, wait=3):
        waits.append(wait)
        raise KeyboardInterrupt
tool.fo.launch_app = lambda *args, **kwargs: Session()
tool.main(arguments + ["--overwrite", "--launch"])
print(json.dumps({{"waits": waits, "samples_after_overwrite": len(fo.load_dataset("sca-test"))}}))
"""


@pytest.mark.slow  # starts FiftyOne's MongoDB and the App server
def test_fiftyone_export_and_app(trained_run, tmp_path, demo_records):
    predictions = trained_run / "eval" / "sca_demo_val" / "predictions.json"
    script = FIFTYONE_CHECK.format(
        root=str(ROOT), tool=str(ROOT / "tools" / "export_fiftyone.py"), predictions=str(predictions), port=5195
    )
    env = {**os.environ, "FIFTYONE_DATABASE_DIR": str(tmp_path / "db"), "FIFTYONE_DO_NOT_TRACK": "true", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary, again, served = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")][-3:]
    assert again == {"again": 2} and "exists already: pass --overwrite" in result.stderr
    # served until interrupted (a negative wait: however many browser tabs close), then a clean exit
    assert served == {"waits": [-1], "samples_after_overwrite": 1}
    record = demo_records["sca_demo_val"][0]
    metadata = MetadataCatalog.get("sca_demo_val")
    assert summary["samples"] == 3 and summary["persistent"] and summary["filepath"] == os.path.abspath(record["file_name"])
    assert summary["ground_truth"] == [
        [metadata.stuff_classes[s["category_id"]], [metadata.stuff_classes[s["category_id"]]], s["id"], True]
        for s in record["segments_info"]
    ]
    x, y, w, h = record["segments_info"][0]["bbox"]
    width, height = record["width"], record["height"]
    assert summary["boxes"][0] == pytest.approx([x / width, y / height, w / width, h / height])
    saved = [p for p in json.loads(predictions.read_text()) if p["image_id"] == record["image_id"]]
    assert summary["predictions"] == [
        [p["caption"], pytest.approx(p["iou_score"]), p["region_id"], p["prompt"]["type"], bool(mask_util.area(p["mask"]))]
        for p in saved
    ]
    assert summary["app_status"] == 200 and "<html" in summary["app_page"]
