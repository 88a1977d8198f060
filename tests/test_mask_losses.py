"""SAM's training losses (mask BCE + dice of the best candidate, IoU-head regression), the mask
metrics of the evaluation, and the boxes shown for predicted regions."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sca.evaluation.caption_evaluator import encode_mask, mask_metrics
from sca.modeling.captioner import mask_losses
from sca.modeling.postprocessing import region_box


def square_mask(size=16, box=(4, 4, 12, 12)):
    mask = torch.zeros(size, size, dtype=torch.bool)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = True
    return mask


def test_mask_loss_keeps_the_best_candidate_and_iou_loss_regresses_every_candidate():
    truth = square_mask()
    perfect = torch.where(truth, 10.0, -10.0)
    half = torch.where(square_mask(box=(4, 4, 8, 12)), 10.0, -10.0)  # true IoU 0.5
    empty = torch.full_like(perfect, -10.0)  # true IoU 0
    pred = torch.stack([empty, perfect, half])[None]  # (1 region, 3 candidates, 16, 16)
    exact = torch.tensor([[0.0, 1.0, 0.5]])
    loss_mask, loss_iou = mask_losses(pred, exact, truth[None])
    # The best candidate (the perfect one) alone counts: its BCE and dice terms are ~0.
    assert loss_mask < 1e-3
    assert loss_iou == pytest.approx(0.0, abs=1e-12)
    # Predicting 0.5 for all three: squared errors 0.25, 0.25 and 0.
    _, loss_iou = mask_losses(pred, torch.full((1, 3), 0.5), truth[None])
    assert loss_iou.item() == pytest.approx((0.25 + 0.25 + 0) / 3)
    # Without a good candidate the loss is the best one's BCE + dice.
    loss_mask, _ = mask_losses(pred[:, [0, 2]], exact[:, [0, 2]], truth[None])
    target = truth.float()
    bce = F.binary_cross_entropy_with_logits(half, target)
    dice = 1 - (2 * (half.sigmoid() * target).sum() + 1) / (half.sigmoid().sum() + target.sum() + 1)
    assert loss_mask.item() == pytest.approx((bce + dice).item(), rel=1e-5)


def test_iou_target_carries_no_gradient_into_the_masks():
    pred = torch.randn(2, 3, 16, 16, requires_grad=True)
    scores = torch.rand(2, 3, requires_grad=True)
    _, loss_iou = mask_losses(pred, scores, torch.stack([square_mask(), square_mask(box=(0, 0, 5, 5))]))
    loss_iou.backward()
    assert pred.grad is None and scores.grad is not None and scores.grad.abs().sum() > 0


def test_ground_truth_masks_are_resized_to_the_predictions():
    truth = square_mask(size=32, box=(8, 8, 24, 24))
    pred = torch.where(square_mask(), 10.0, -10.0)[None, None]
    loss_mask, loss_iou = mask_losses(pred, torch.ones(1, 1), truth[None])
    assert loss_mask < 1e-3 and loss_iou == pytest.approx(0.0, abs=1e-12)


def test_mask_metrics_report_empty_masks_and_iou_correlation():
    full, empty = np.ones((4, 4), bool), np.zeros((4, 4), bool)
    predictions = [
        {"mask": encode_mask(full), "mask_iou": 0.9, "iou_score": 0.8},
        {"mask": encode_mask(full), "mask_iou": 0.5, "iou_score": 0.4},
        {"mask": encode_mask(empty), "mask_iou": 0.0, "iou_score": 0.1},
        {"mask": encode_mask(full), "mask_iou": None, "iou_score": 0.9},  # no ground truth: not scored
    ]
    metrics = mask_metrics(predictions)
    assert metrics["mask_mIoU"] == pytest.approx(100 * 1.4 / 3)
    assert metrics["empty_mask_percent"] == pytest.approx(100 / 3)
    assert metrics["iou_score_pearson"] == pytest.approx(np.corrcoef([0.8, 0.4, 0.1], [0.9, 0.5, 0.0])[0, 1])
    constant = [dict(p, iou_score=0.5) for p in predictions[:3]]
    assert "iou_score_pearson" not in mask_metrics(constant)  # undefined for a constant prediction
    assert mask_metrics(predictions[3:]) == {}


def test_region_box_falls_back_to_the_prompt_for_empty_masks():
    mask = np.zeros((10, 20), bool)
    assert region_box(mask, {"type": "box", "box": [2, 3, 8, 9]}) == [2.0, 3.0, 8.0, 9.0]
    assert region_box(mask, {"type": "point", "points": [[5, 6]], "labels": [1]}) == [5.0, 6.0, 5.0, 6.0]
    mask[4:6, 10:13] = True
    assert region_box(mask, {"type": "box", "box": [2, 3, 8, 9]}) == [10.0, 4.0, 13.0, 6.0]


def test_the_iou_loss_trains_sams_iou_head_and_decoder_but_not_the_caption_head():
    from sca.config_loading import load_config
    from sca.modeling.build import build_captioner

    torch.manual_seed(0)
    captioner = build_captioner(load_config([]).model).train()
    n = 4
    xy = torch.rand(n, 2) * 30
    regions = {
        "image_index": torch.tensor([0, 0, 1, 1]),
        "prompt_types": torch.tensor([0, 1, 0, 1]),  # box, point
        "boxes": torch.cat([xy, xy + 20], dim=1),
        "points": (xy + 10)[:, None],
        "point_labels": torch.ones(n, 1, dtype=torch.int64),
        "masks": torch.zeros(n, 64, 64, dtype=torch.bool),
    }
    embeddings = captioner.region_decoder.encode_images(torch.randn(2, 3, 64, 64))
    masks, scores, _ = captioner.encode_regions(embeddings, regions)
    gt = torch.zeros(n, 64, 64, dtype=torch.bool)
    gt[:, 10:40, 10:40] = True
    _, loss_iou = mask_losses(masks, scores, gt)
    loss_iou.backward()
    decoder = captioner.sam.mask_decoder
    for part in (decoder.iou_prediction_head, decoder.transformer):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters() if p.requires_grad)
    assert all(p.grad is None for p in captioner.mixer.parameters())
