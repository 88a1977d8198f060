"""Caption metrics: equal to pycocoevalcap called directly; exact match and image-blind baseline."""

import json

import pytest
import torch
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from sca.evaluation.caption_evaluator import CaptionEvaluator, caption_metrics

CANDIDATES = ["red circle", "a blue square", "green Triangle", "", "yellow circle on the left"]
REFERENCES = [["red circle"], ["blue square", "a blue box"], ["green triangle"], ["purple circle"], ["yellow circle"]]


def test_metrics_equal_pycocoevalcap():
    results = caption_metrics(CANDIDATES, REFERENCES)
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": r} for r in refs] for i, refs in enumerate(REFERENCES)})
    res = tokenizer.tokenize({i: [{"caption": c}] for i, c in enumerate(CANDIDATES)})
    res = {i: res.get(i, [""]) for i in range(len(CANDIDATES))}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    for n in range(4):
        assert results[f"Bleu_{n + 1}"] == pytest.approx(100 * bleu[n])
    assert results["ROUGE_L"] == pytest.approx(100 * Rouge().compute_score(gts, res)[0])
    assert results["CIDEr_D"] == pytest.approx(100 * Cider().compute_score(gts, res)[0])


def test_exact_match_and_image_blind_baseline():
    results = caption_metrics(CANDIDATES, REFERENCES, metrics=("exact_match",))
    assert results["exact_match"] == pytest.approx(100 * 2 / 5)  # case-insensitive match for "green Triangle"
    assert results["image_blind_exact_match"] == pytest.approx(100 * 1 / 5)
    assert set(results) == {"exact_match", "image_blind_exact_match"}


def test_evaluator_collects_regions_and_writes_files(tmp_path):
    evaluator = CaptionEvaluator("toy", metrics=("exact_match", "cider"), output_dir=str(tmp_path))
    evaluator.reset()
    outputs = [
        {
            "image_id": 7,
            "regions": {
                "region_ids": [1, 2],
                "category_ids": [0, 3],
                "captions": ["red circle", "blue square"],
                "references": [["red circle"], ["blue circle"]],
                "iou_scores": torch.tensor([0.9, 0.5]),
                "pred_masks": torch.zeros(2, 4, 4),
            },
        }
    ]
    evaluator.process([{}], outputs)
    results = evaluator.evaluate()["caption"]
    assert results["exact_match"] == 50.0 and results["num_regions"] == 2
    saved = json.loads((tmp_path / "predictions.json").read_text())
    assert saved[1] == {
        "image_id": 7, "region_id": 2, "category_id": 3, "caption": "blue square",
        "references": ["blue circle"], "iou_score": pytest.approx(0.5),
    }
    assert json.loads((tmp_path / "metrics.json").read_text())["exact_match"] == 50.0


def test_unknown_metric_is_rejected():
    with pytest.raises(ValueError, match="SPICY"):
        CaptionEvaluator("toy", metrics=("SPICY",))
