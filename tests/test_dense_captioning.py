"""Dense-captioning mAP (VG protocol) on hand-built cases whose answers are worked out by hand."""

import json

import numpy as np
import pytest

from sca.evaluation import java_scorers
from sca.evaluation.dense_captioning import ImageRegions, dense_captioning_map, merge_ground_truth

HALF = 100 * 51 / 101  # precision 1 up to recall 0.5: 51 of the 101 recall levels


def exact(candidates, references):
    return [1.0 if c in refs else 0.0 for c, refs in zip(candidates, references)]


def constant(value):
    return lambda candidates, references: [value] * len(candidates)


def gt(boxes, captions):
    return ImageRegions(np.array(boxes, dtype=float), captions)


def pred(boxes, captions, scores):
    return ImageRegions(np.array(boxes, dtype=float).reshape(-1, 4), captions, np.array(scores, dtype=float))


TWO = gt([[0, 0, 10, 10], [20, 20, 40, 40]], ["red circle", "blue square"])


def test_perfect_predictions_score_100():
    result = dense_captioning_map([pred(TWO.boxes, TWO.captions, [0.9, 0.8])], [TWO], exact)
    assert result["mAP"] == pytest.approx(100) and result["detection_mAP"] == pytest.approx(100)
    assert len(result["ap"]) == 30 and len(result["detection_ap"]) == 5


def test_right_boxes_wrong_captions_detect_but_do_not_caption():
    result = dense_captioning_map([pred(TWO.boxes, ["blue square", "red circle"], [0.9, 0.8])], [TWO], exact)
    assert result["mAP"] == 0 and result["detection_mAP"] == pytest.approx(100)


def test_one_of_two_captions_right_gives_precision_one_up_to_half_recall():
    # Ranked: true positive, then false positive -> recall [0.5, 0.5], precision [1, 0.5].
    result = dense_captioning_map([pred(TWO.boxes, ["red circle", "green square"], [0.9, 0.8])], [TWO], exact)
    assert result["mAP"] == pytest.approx(HALF)
    assert result["detection_mAP"] == pytest.approx(100)


def test_box_iou_thresholds():
    # IoU 0.45 passes the thresholds 0.3 and 0.4 only: 2 of 5.
    result = dense_captioning_map([pred([[0, 0, 10, 4.5]], ["red circle"], [1.0])], [gt([[0, 0, 10, 10]], ["red circle"])], exact)
    assert result["detection_ap"] == pytest.approx({"iou0.3": 100, "iou0.4": 100, "iou0.5": 0, "iou0.6": 0, "iou0.7": 0})
    assert result["mAP"] == pytest.approx(40)


@pytest.mark.parametrize("meteor, expected", [(0.12, 100 * 3 / 6), (0.1, 100 * 2 / 6), (0.0, 0.0), (0.3, 100.0)])
def test_meteor_thresholds_are_strict(meteor, expected):
    # Thresholds 0, 0.05, 0.1, 0.15, 0.2, 0.25 with "METEOR > threshold".
    result = dense_captioning_map([pred([[0, 0, 10, 10]], ["x"], [1.0])], [gt([[0, 0, 10, 10]], ["y"])], constant(meteor))
    assert result["mAP"] == pytest.approx(expected)
    assert result["detection_mAP"] == pytest.approx(100)


def test_false_positive_ranked_first_and_duplicate_halve_precision():
    # Ranked: miss (0.9, overlaps nothing), hit (0.8), duplicate of the hit (0.7):
    # recall [0, 1, 1], precision [0, 1/2, 1/3] -> AP 0.5 at every recall level.
    truth = gt([[0, 0, 10, 10]], ["red circle"])
    boxes = [[50, 50, 60, 60], [0, 0, 10, 10], [0, 0, 10, 10]]
    result = dense_captioning_map([pred(boxes, ["red circle"] * 3, [0.9, 0.8, 0.7])], [truth], exact)
    assert result["mAP"] == pytest.approx(50) and result["detection_mAP"] == pytest.approx(50)
    assert result["num_predictions"] == 3 and result["num_ground_truth"] == 1


def test_assignment_ignores_thresholds():
    # The more confident prediction (IoU 0.35) takes the box; the exact one is then a duplicate:
    # a true positive only at IoU threshold 0.3.
    truth = gt([[0, 0, 10, 10]], ["red circle"])
    result = dense_captioning_map([pred([[0, 0, 10, 3.5], [0, 0, 10, 10]], ["red circle"] * 2, [0.9, 0.8])], [truth], exact)
    assert result["detection_ap"]["iou0.3"] == pytest.approx(100)
    assert result["detection_ap"]["iou0.5"] == 0
    assert result["mAP"] == pytest.approx(20)


def test_ranking_spans_images_and_missed_ground_truth_counts():
    # Image 1: a hit at confidence 0.5. Image 2: its box is missed and a stray prediction (0.9) overlaps nothing.
    # Ranked: miss, hit -> recall [0, 0.5], precision [0, 0.5].
    images_gt = [gt([[0, 0, 10, 10]], ["red circle"]), gt([[0, 0, 10, 10]], ["blue square"])]
    images_pred = [pred([[0, 0, 10, 10]], ["red circle"], [0.5]), pred([[30, 30, 40, 40]], ["blue square"], [0.9])]
    result = dense_captioning_map(images_pred, images_gt, exact)
    assert result["mAP"] == pytest.approx(HALF / 2)
    assert result["num_ground_truth"] == 2


def test_overlapping_ground_truth_is_merged_with_all_references():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 9.5], [20, 20, 30, 30]])
    boxes, captions = merge_ground_truth(boxes, ["red circle", "a red ball", "sky"])
    assert len(boxes) == 2
    np.testing.assert_allclose(boxes[0], [0, 0, 10, 9.75])
    assert captions == [["red circle", "a red ball"], ["sky"]]
    truth = gt([[0, 0, 10, 10], [0, 0, 10, 9.5]], ["red circle", "a red ball"])
    result = dense_captioning_map([pred([[0, 0, 10, 9.75]], ["a red ball"], [1.0])], [truth], exact)
    assert result["mAP"] == pytest.approx(100) and result["num_ground_truth"] == 1


def test_no_predictions_and_no_ground_truth():
    assert dense_captioning_map([pred([], [], [])], [TWO], exact)["mAP"] == 0
    result = dense_captioning_map([pred([[0, 0, 5, 5]], ["x"], [1.0])], [gt(np.zeros((0, 4)), [])], exact)
    assert result["mAP"] == 0 and result["num_ground_truth"] == 0


def test_with_meteor(monkeypatch):
    """Real METEOR: an identical caption passes every threshold, an unrelated one none."""
    truth = gt([[0, 0, 10, 10], [20, 20, 40, 40]], ["a red circle on the left", "a blue square"])
    boxes = truth.boxes
    assert dense_captioning_map([pred(boxes, truth.captions, [0.9, 0.8])], [truth])["mAP"] == pytest.approx(100)
    # Ranked: unrelated caption (a false positive), identical one -> recall [0, 0.5], precision [0, 0.5].
    result = dense_captioning_map([pred(boxes, ["zebra", "a blue square"], [0.9, 0.8])], [truth])
    assert result["mAP"] == pytest.approx(HALF / 2) and result["detection_mAP"] == pytest.approx(100)
    # Batches of 2 give the same scores as one batch.
    candidates, references = ["a red circle", "red", "a square", "blue square box", "zebra"], [["a red circle on the left"]] * 5
    whole = java_scorers.meteor_scores(candidates, references)
    monkeypatch.setattr(java_scorers, "METEOR_BATCH", 2)
    assert java_scorers.meteor_scores(candidates, references) == pytest.approx(whole)
    assert whole[0] > 0.25 and whole[-1] == 0


def test_dense_captioning_tool_on_demo_images(trained_run, tmp_path, load_tool, demo_records):
    tool = load_tool("evaluate_dense_captioning")
    output = tmp_path / "dense.json"
    anything = ["--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-thresh", "0"]
    results = tool.main([str(trained_run), "--dataset", "sca_demo_val", "--max-images", "2", *anything, "--output", str(output)])
    records = demo_records["sca_demo_val"][:2]
    assert 0 < results["num_ground_truth"] <= sum(len(r["segments_info"]) for r in records)
    assert 1 <= results["num_predictions"] <= 2 * 16
    # Captioned true positives are a subset of the detection ones at every IoU threshold.
    assert 0 <= results["mAP"] <= results["detection_mAP"] <= 100
    assert 0 <= results["anything_recall"] <= 100
    assert json.loads(output.read_text()) == results


def test_iou_conventions_continuous_and_densecap_plus_one_pixel():
    # [0, 0, 9, 9] and [0, 0, 9, 4]: continuous IoU 36 / 81 = 0.44; with DenseCap's +1 pixel 50 / 100 = 0.5.
    truth, guess = gt([[0, 0, 9, 9]], ["red circle"]), pred([[0, 0, 9, 4]], ["red circle"], [1.0])
    continuous = dense_captioning_map([guess], [truth], exact)
    plus_one = dense_captioning_map([guess], [truth], exact, conventions="densecap_lua")
    assert continuous["detection_ap"]["iou0.4"] == pytest.approx(100) and continuous["detection_ap"]["iou0.5"] == 0
    assert plus_one["detection_ap"]["iou0.5"] == pytest.approx(100) and plus_one["detection_ap"]["iou0.6"] == 0
    assert continuous["conventions"] == "sca" and plus_one["conventions"] == "densecap_lua"


def test_recall_levels_101_or_the_lua_loops_100():
    # Precision 1 up to recall exactly 0.5: 51 of the levels 0, 0.01, ..., 1; the Lua loop's accumulated
    # levels reach 0.5000000000000002 at the 51st, so only 50 of its 100 levels are covered.
    guess = pred(TWO.boxes, ["red circle", "green square"], [0.9, 0.8])
    assert dense_captioning_map([guess], [TWO], exact)["mAP"] == pytest.approx(100 * 51 / 101)
    assert dense_captioning_map([guess], [TWO], exact, conventions="densecap_lua")["mAP"] == pytest.approx(50)
    with pytest.raises(ValueError, match="conventions"):
        dense_captioning_map([guess], [TWO], exact, conventions="coco")


@pytest.mark.parametrize("captions, expected_map", [(["blue", "red circle"], 0.0), (["red circle", "blue"], 100.0)])
def test_confidence_ties_keep_the_prediction_order(captions, expected_map):
    # Equal confidences: the first prediction takes the box, the second is a duplicate.
    truth = gt([[0, 0, 10, 10]], ["red circle"])
    result = dense_captioning_map([pred([[0, 0, 10, 10]] * 2, captions, [0.5, 0.5])], [truth], exact)
    assert result["mAP"] == pytest.approx(expected_map) and result["detection_mAP"] == pytest.approx(100)
