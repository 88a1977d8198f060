"""Inference for users: outputs in the image frame, the predictor API, "anything" mode, predict CLI."""

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_util

from sca.data.prompts import PROMPT_TYPE_IDS
from sca.modeling.postprocessing import masks_to_image_frame, prompts_to_image_frame
from sca.predictor import AnythingConfig, RegionCaptionPredictor, select_masks


def test_masks_map_back_to_the_image_frame():
    # A 100x50 (w x h) image in a 64 frame: scale 0.64, content 64x32, padding below.
    logits = torch.full((1, 64, 64), -10.0)
    logits[0, 8:24, 16:48] = 10.0  # model-frame box [16, 8, 48, 24]
    logits[0, 40:, :] = 10.0  # padding: must not appear in the image
    mask = masks_to_image_frame(logits, torch.tensor([0.0, 0.0, 64.0, 32.0]), 50, 100, 64)
    assert mask.shape == (1, 50, 100) and mask.dtype == torch.bool
    ys, xs = torch.nonzero(mask[0], as_tuple=True)
    # Image-frame box [25, 12.5, 75, 37.5]: the pixels whose centres lie inside it.
    assert (xs.min(), xs.max() + 1, ys.min(), ys.max() + 1) == (25, 75, 13, 37)


def test_prompts_map_back_to_the_image_frame():
    prompts = prompts_to_image_frame(
        torch.tensor([PROMPT_TYPE_IDS["box"], PROMPT_TYPE_IDS["point"], PROMPT_TYPE_IDS["mask"]]),
        torch.tensor([[16.0, 8.0, 48.0, 24.0]] * 3),
        torch.tensor([[[32.0, 16.0]]] * 3),
        torch.ones(3, 1, dtype=torch.int64),
        torch.tensor([0.0, 0.0, 64.0, 32.0]),
        50,
        100,
    )
    assert prompts == [
        {"type": "box", "box": [25.0, 12.5, 75.0, 37.5]},
        {"type": "point", "points": [[50.0, 25.0]], "labels": [1]},
        {"type": "mask"},
    ]


def _square(x0, y0, side=8, value=10.0, size=32):
    logits = torch.full((size, size), -value)
    logits[y0 : y0 + side, x0 : x0 + side] = value
    return logits


def test_anything_mode_keeps_confident_stable_distinct_masks():
    unstable = _square(20, 20, value=0.5)  # flips between +-1 thresholds: stability 0
    logits = torch.stack([_square(2, 2), _square(3, 2), unstable, _square(20, 2), _square(2, 20), torch.full((32, 32), -5.0)])
    scores = torch.tensor([0.9, 0.8, 0.95, 0.3, 0.7, 0.99])
    settings = AnythingConfig(pred_iou_thresh=0.5, stability_score_thresh=0.8, nms_iou=0.7)
    # 1 duplicates 0 (box IoU 0.75), 2 is unstable, 3 is not confident, 5 is empty.
    assert select_masks(logits, scores, settings).tolist() == [0, 4]
    settings.max_regions = 1
    assert select_masks(logits, scores, settings).tolist() == [0]
    settings.nms_iou = 0.9
    settings.max_regions = 64
    assert select_masks(logits, scores, settings).tolist() == [0, 1, 4]


@pytest.fixture(scope="module")
def predictor(trained_run):
    return RegionCaptionPredictor.from_output_dir(str(trained_run), device="cpu")


@pytest.fixture(scope="module")
def image_path(demo_records):
    return demo_records["sca_demo_val"][0]["file_name"]


def test_predictor_captions_prompted_regions(predictor, image_path):
    height, width = np.asarray(Image.open(image_path)).shape[:2]
    regions = predictor(image_path, boxes=[[10, 12, 60, 70]], points=[[30, 40]])
    assert [r.prompt["type"] for r in regions] == ["box", "point"]
    assert regions[0].prompt["box"] == pytest.approx([10, 12, 60, 70], abs=0.01)
    assert regions[1].prompt["points"] == [pytest.approx([30, 40], abs=0.01)]
    for region in regions:
        assert region.mask.shape == (height, width) and region.mask.dtype == bool
        # SAM's IoU head regresses the IoU (MSE, no squashing): after 4 steps it may sit a little outside [0, 1]
        assert isinstance(region.caption, str) and -0.5 <= region.iou_score <= 1.5
        encoded = region.to_dict()["mask"]
        np.testing.assert_array_equal(mask_util.decode(encoded).astype(bool), region.mask)
    # Same image as an array, same answer (deterministic greedy decoding).
    again = predictor(np.asarray(Image.open(image_path).convert("RGB")), boxes=[[10, 12, 60, 70]])
    assert again[0].caption == regions[0].caption and np.array_equal(again[0].mask, regions[0].mask)


def test_prompts_outside_the_image_are_clipped_with_a_warning(predictor, image_path, caplog):
    height, width = np.asarray(Image.open(image_path)).shape[:2]
    with caplog.at_level(logging.WARNING, logger="sca.predictor"):
        regions = predictor(image_path, boxes=[[-20, 5, width + 30, 40]], points=[[width + 5, -3]])
    assert regions[0].prompt["box"] == pytest.approx([0, 5, width, 40], abs=0.01)
    assert regions[1].prompt["points"] == [pytest.approx([width, 0], abs=0.01)]
    assert "box [-20.0, 5.0" in caplog.text and "clipped" in caplog.text and "point" in caplog.text
    with pytest.raises(ValueError, match="no area inside"):
        predictor(image_path, boxes=[[width + 1, 0, width + 9, 9]])
    with pytest.raises(ValueError, match="x0 <= x1"):
        predictor(image_path, boxes=[[30, 0, 10, 9]])


def test_prompts_that_are_not_finite_or_empty_are_errors(predictor, image_path, trained_run, capsys, load_tool):
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match="boxes must be finite numbers"):
            predictor(image_path, boxes=[[10, 12, 60, 70], [bad, 0, 10, 10]])
        with pytest.raises(ValueError, match="points must be finite numbers"):
            predictor(image_path, points=[[5, bad]])
    for empty in ({"boxes": []}, {"points": []}, {"boxes": [], "points": []}):
        with pytest.raises(ValueError, match="no prompt given"):
            predictor(image_path, **empty)
    assert len(predictor(image_path, boxes=[], points=[[20, 20]])) == 1
    assert load_tool("predict").main([str(trained_run), str(image_path), "--box", "nan", "0", "10", "10"]) == 2
    assert "error: boxes must be finite numbers" in capsys.readouterr().err


def test_unreadable_image_is_a_clear_error(predictor, tmp_path):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="cannot read image .*corrupt.jpg"):
        predictor(str(corrupt), boxes=[[0, 0, 5, 5]])
    with pytest.raises(ValueError, match="cannot read image .*missing.jpg"):
        predictor(str(tmp_path / "missing.jpg"))


def test_anything_mode_captions_distinct_regions(predictor, image_path):
    settings = AnythingConfig(points_per_side=6, pred_iou_thresh=0.0, stability_score_thresh=0.0, nms_iou=0.5, max_regions=5)
    regions = predictor(image_path, anything=settings)
    assert 1 <= len(regions) <= 5
    assert all(r.prompt["type"] == "point" for r in regions)
    scores = [r.iou_score for r in regions]
    assert scores == sorted(scores, reverse=True)


def test_anything_mode_defaults_to_the_models_filters(trained_run, image_path):
    overrides = [f"model.anything.{key}={value}" for key, value in
                 {"points_per_side": 6, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "nms_iou": 1.0}.items()]
    predictor = RegionCaptionPredictor.from_output_dir(str(trained_run), overrides=overrides, device="cpu")
    assert predictor.anything == AnythingConfig(points_per_side=6, pred_iou_thresh=0.0, stability_score_thresh=0.0, nms_iou=1.0)
    height, width = np.asarray(Image.open(image_path)).shape[:2]
    grid = [((i + 0.5) * width / 6, (j + 0.5) * height / 6) for i in range(6) for j in range(6)]
    regions = predictor(image_path)  # no settings given: the model's 6x6 grid, nothing filtered but empty masks
    assert 1 <= len(regions) <= 36
    assert all(min(abs(px - x) + abs(py - y) for x, y in grid) < 0.02 for px, py in (r.prompt["points"][0] for r in regions))
    assert len(predictor(image_path, anything=AnythingConfig(points_per_side=1, pred_iou_thresh=0.0, stability_score_thresh=0.0))) <= 1


def test_predict_cli_writes_json_and_drawing(trained_run, image_path, tmp_path, capsys, load_tool):
    predict = load_tool("predict")
    out_json, out_png = tmp_path / "regions.json", tmp_path / "regions.png"
    prompts = ["--box", "10", "12", "60", "70", "--point", "30", "40"]
    argv = [str(trained_run), image_path, *prompts, "--json", str(out_json), "--vis", str(out_png)]
    assert predict.main(argv + ["--set", "model.generation.num_beams=3"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 2 and '"type": "box"' in printed[0]
    saved = json.loads(out_json.read_text())
    assert len(saved["regions"]) == 2 and set(saved["regions"][0]) == {"prompt", "caption", "iou_score", "box", "mask"}
    assert Image.open(out_png).size[0] >= 512
    assert predict.main([str(trained_run), str(tmp_path / "missing.jpg")]) == 2
    assert "cannot read image" in capsys.readouterr().err
