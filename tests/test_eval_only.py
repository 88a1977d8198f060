"""Eval-only runs: the configured splits, every metric, per-region predictions in the image frame."""

import json
import logging

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from pycocotools import mask as mask_util

from sca.config_loading import load_config
from sca.engine.launch import run


def test_eval_only_scores_a_trained_checkpoint(trained_run, tmp_path):
    output_dir = tmp_path / "eval_only"
    weights = trained_run / "model_final.pth"
    overrides = [f"output_dir={output_dir}", "eval_only=true", f"model.weights={weights}", "evaluation.max_images=3"]
    cfg = load_config(overrides + ["data.num_workers=0"])
    results = run(cfg)
    split_dir = output_dir / "eval" / "sca_demo_val"
    metrics = json.loads((split_dir / "metrics.json").read_text())
    assert results["sca_demo_val"]["caption"]["exact_match"] == metrics["exact_match"]
    for name in ("exact_match", "image_blind_exact_match", "Bleu_1", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr_D", "mask_mIoU"):
        assert name in metrics, name
    assert ("SPICE" in metrics) != ("SPICE" in metrics["skipped"])  # computed, or skipped with a reason
    assert metrics["per_source"]["sca_demo_val"]["num_regions"] == metrics["num_regions"]
    assert metrics["per_task_type"]["recognition"]["num_regions"] == metrics["num_regions"]

    records = DatasetCatalog.get("sca_demo_val")[:3]
    class_names = MetadataCatalog.get("sca_demo_val").stuff_classes
    predictions = json.loads((split_dir / "predictions.json").read_text())
    assert len(predictions) == metrics["num_regions"] == sum(len(r["segments_info"]) for r in records)
    by_region = {(p["image_id"], p["region_id"]): p for p in predictions}
    for record in records:
        for segment in record["segments_info"]:
            region = by_region[(record["image_id"], segment["id"])]
            assert region["references"] == [class_names[segment["category_id"]]]
            assert mask_util.decode(region["mask"]).shape == (record["height"], record["width"])
            x, y, w, h = segment["bbox"]
            # The box prompt, mapped back from the 64-pixel model frame (~2 image pixels per model pixel).
            assert region["prompt"]["type"] == "box"
            assert region["prompt"]["box"] == pytest.approx([x, y, x + w, y + h], abs=2.5)
            assert 0 <= region["mask_iou"] <= 1
    assert metrics["mask_mIoU"] == pytest.approx(100 * np.mean([p["mask_iou"] for p in predictions]))

    # The checkpoint was loaded: the training run's own final evaluation (first 2 images) agrees.
    trained = json.loads((trained_run / "eval" / "sca_demo_val" / "predictions.json").read_text())
    assert [(p["region_id"], p["caption"], p["mask"]) for p in trained] == [
        (p["region_id"], p["caption"], p["mask"]) for p in predictions[: len(trained)]
    ]


def test_eval_only_with_missing_weights_is_a_clear_error(tmp_path):
    cfg = load_config([f"output_dir={tmp_path}", "eval_only=true", f"model.weights={tmp_path / 'nope.pth'}"])
    with pytest.raises(FileNotFoundError, match="model.weights: no checkpoint .*nope.pth"):
        run(cfg)


def test_unreadable_images_are_left_out_and_reported_never_replaced(tmp_path, caplog):
    """detectron2's ``MapDataset`` would replace a skipped image by another one, scored twice."""
    from sca.engine.trainer import evaluate
    from sca.modeling.build import build_model

    records = [dict(r) for r in DatasetCatalog.get("sca_demo_val")[:5]]
    records[1]["file_name"] = str(tmp_path / "missing.jpg")
    records[3]["file_name"] = str(tmp_path / "corrupt.jpg")
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8 not a JPEG")
    name = "sca_test_unreadable_val"
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(**{k: v for k, v in MetadataCatalog.get("sca_demo_val").as_dict().items() if k != "name"})
    try:
        cfg = load_config(
            [f"output_dir={tmp_path}", f"data.test_datasets=[{name}]", "data.num_workers=1", "data.test_batch_size=2",
             "evaluation.metrics=[exact_match]"]
        )  # fmt: skip
        with caplog.at_level(logging.WARNING):
            results = evaluate(cfg, build_model(cfg).eval())
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    metrics = json.loads((tmp_path / "eval" / name / "metrics.json").read_text())
    assert metrics["num_skipped_images"] == results[name]["caption"]["num_skipped_images"] == 2
    assert metrics["skipped_images"] == sorted([str(tmp_path / "missing.jpg"), str(tmp_path / "corrupt.jpg")])
    assert f"{name}: 2 image(s) could not be read and are not evaluated" in caplog.text and "missing.jpg" in caplog.text
    readable = [records[i] for i in (0, 2, 4)]
    predictions = json.loads((tmp_path / "eval" / name / "predictions.json").read_text())
    assert sorted((p["image_id"], p["region_id"]) for p in predictions) == sorted(
        (r["image_id"], s["id"]) for r in readable for s in r["segments_info"]
    )  # each region of each readable image exactly once
    assert metrics["num_regions"] == len(predictions)
