"""Caption and mask metrics as a detectron2 ``DatasetEvaluator`` (pycocoevalcap scorers).

Reports, in percent: exact-match accuracy (a generated caption equal to one of its references,
case- and space-insensitive), BLEU-1..4 (``Bleu_n``), METEOR, ROUGE-L (``ROUGE_L``), CIDEr-D
(``CIDEr_D``: pycocoevalcap's Cider is the CIDEr-D variant) and SPICE (optional ``spice`` extra),
plus the image-blind baseline: the exact-match accuracy of the best single constant caption on
the same regions. Captions are PTB-tokenized once, as in the COCO caption toolkit. Where the
source has ground-truth masks, ``mask_mIoU`` is the mean IoU of the predicted (best-IoU) masks
with them, in the original image frame. Everything is also reported per source and per task type.
A metric that cannot be computed (no Java, SPICE extra absent, no ground-truth masks) is listed
under ``skipped`` with the reason, and logged. Names avoid "-", which detectron2's
``print_csv_format`` leaves out.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
from collections import Counter, defaultdict

import numpy as np
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
from pycocotools import mask as mask_util

from sca.evaluation.java_scorers import meteor_scorer, meteor_unavailable_reason, spice_scores, spice_unavailable_reason

__all__ = ["CaptionEvaluator", "CaptionScorer", "normalize_caption", "caption_metrics", "encode_mask", "load_predictions", "mask_metrics"]

logger = logging.getLogger(__name__)

METRICS = ("exact_match", "bleu", "meteor", "rouge", "cider", "spice")
_TEXT_METRICS = ("bleu", "meteor", "rouge", "cider", "spice")


def normalize_caption(text: str) -> str:
    return " ".join(text.lower().split())


def encode_mask(mask) -> dict:
    """Binary (H, W) mask -> COCO RLE with a JSON-ready ``counts`` string."""
    rle = mask_util.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}


def load_predictions(path: str) -> dict:
    """``predictions.json`` written by :class:`CaptionEvaluator` -> ``{image_id: [region, ...]}``."""
    with open(path) as f:
        regions = json.load(f)
    by_image: dict = defaultdict(list)
    for region in regions:
        by_image[region["image_id"]].append(region)
    return dict(by_image)


def _tokenize(captions: dict[int, list[str]]) -> dict[int, list[str]]:
    """PTB tokenization (Java, as in the COCO caption toolkit); lower-case split without Java."""
    if shutil.which("java") is None:
        logger.warning("java not found: captions are tokenized by lower-casing and splitting on spaces")
        return {key: [normalize_caption(c) for c in texts] for key, texts in captions.items()}
    tokenized = PTBTokenizer().tokenize({key: [{"caption": c} for c in texts] for key, texts in captions.items()})
    # PTBTokenizer drops trailing empty lines: restore empty captions.
    return {key: tokenized.get(key, [""] * len(texts)) for key, texts in captions.items()}


class CaptionScorer:
    """Corpus-level caption metrics (percent) of one candidate per region against its references.

    Captions are tokenized once; :meth:`score` then scores all regions or any subset of them.

    Args:
        candidates: one generated caption per region.
        references: the reference captions of each region.
        metrics: subset of ``("exact_match", "bleu", "meteor", "rouge", "cider", "spice")``.

    Attributes:
        skipped: ``{metric name: reason}`` for requested metrics that cannot be computed here.
    """

    def __init__(self, candidates: list[str], references: list[list[str]], metrics=METRICS):
        unknown = set(metrics) - set(METRICS)
        if unknown:
            raise ValueError(f"unknown caption metrics {sorted(unknown)}; known: {METRICS}")
        self.candidates, self.references, self.metrics = list(candidates), list(references), tuple(metrics)
        self.skipped: dict[str, str] = {}
        for name, unavailable in (("meteor", meteor_unavailable_reason), ("spice", spice_unavailable_reason)):
            reason = unavailable() if name in self.metrics else None
            if reason:
                self.skipped[name.upper()] = reason
        self._gts = self._res = None
        if self.candidates and any(name in self.metrics for name in _TEXT_METRICS):
            self._gts = _tokenize({i: list(refs) for i, refs in enumerate(self.references)})
            self._res = _tokenize({i: [c] for i, c in enumerate(self.candidates)})
        self._spice: tuple[float, dict[int, float]] | None = None

    def score(self, indices: list[int] | None = None) -> dict[str, float]:
        """Metrics over the regions ``indices`` (all when ``None``)."""
        everything = indices is None
        indices = list(range(len(self.candidates))) if everything else list(indices)
        if not indices:
            return {}
        results: dict[str, float] = {}
        if "exact_match" in self.metrics:
            references = [{normalize_caption(r) for r in self.references[i]} for i in indices]
            hits = [normalize_caption(self.candidates[i]) in refs for i, refs in zip(indices, references)]
            results["exact_match"] = 100.0 * sum(hits) / len(hits)
            most_common = Counter(normalize_caption(r) for i in indices for r in self.references[i]).most_common(1)[0][0]
            results["image_blind_exact_match"] = 100.0 * sum(most_common in refs for refs in references) / len(references)
        if self._gts is None:
            return results
        gts = {i: self._gts[i] for i in indices}
        res = {i: self._res[i] for i in indices}
        if "bleu" in self.metrics:
            bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
            results.update({f"Bleu_{n + 1}": 100.0 * score for n, score in enumerate(bleu)})
        if "meteor" in self.metrics and "METEOR" not in self.skipped:
            results["METEOR"] = 100.0 * meteor_scorer().compute_score(gts, res)[0]
        if "rouge" in self.metrics:
            results["ROUGE_L"] = 100.0 * Rouge().compute_score(gts, res)[0]
        if "cider" in self.metrics:
            results["CIDEr_D"] = 100.0 * Cider().compute_score(gts, res)[0]
        if "spice" in self.metrics and "SPICE" not in self.skipped:
            spice = self._spice_all()
            if spice is not None:
                average, per_item = spice
                results["SPICE"] = 100.0 * (average if everything else float(np.mean([per_item[i] for i in indices])))
        return results

    def _spice_all(self) -> tuple[float, dict[int, float]] | None:
        """SPICE over all regions, once (its JVM parses every caption; subsets average the items)."""
        if self._spice is None:
            try:
                self._spice = spice_scores(self._gts, self._res)
            except Exception as error:  # a crash of the optional scorer must not lose the evaluation
                self.skipped["SPICE"] = f"SPICE failed: {type(error).__name__}: {error}"
                return None
        return self._spice


def caption_metrics(candidates: list[str], references: list[list[str]], metrics=METRICS) -> dict[str, float]:
    """Corpus-level caption metrics (percent) of one candidate per region against its references."""
    return CaptionScorer(candidates, references, metrics).score()


def mask_metrics(predictions: list[dict]) -> dict[str, float]:
    """Segmentation quality of the regions that have ground-truth masks: ``mask_mIoU`` (percent),
    ``empty_mask_percent`` (predicted masks without a pixel) and ``iou_score_pearson`` (Pearson r
    of SAM's predicted IoU with the true mask IoU; absent when either is constant)."""
    scored = [p for p in predictions if p["mask_iou"] is not None]
    if not scored:
        return {}
    true_iou = np.array([p["mask_iou"] for p in scored], dtype=np.float64)
    predicted = np.array([p["iou_score"] for p in scored], dtype=np.float64)
    results = {
        "mask_mIoU": 100.0 * float(true_iou.mean()),
        "empty_mask_percent": 100.0 * float(np.mean([mask_util.area(p["mask"]) == 0 for p in scored])),
    }
    if true_iou.std() > 0 and predicted.std() > 0:
        results["iou_score_pearson"] = float(np.corrcoef(predicted, true_iou)[0, 1])
    return results


def _group_indices(predictions: list[dict], key: str) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, prediction in enumerate(predictions):
        groups[str(prediction[key])].append(i)
    return dict(groups)


class CaptionEvaluator(DatasetEvaluator):
    """Collects per-region predictions from the model's outputs and scores them.

    Args:
        dataset_name: the evaluated split (used in logs and file names).
        metrics: subset of ``("exact_match", "bleu", "meteor", "rouge", "cider", "spice")``.
        output_dir: where ``predictions.json`` and ``metrics.json`` go (rank 0 only).
        reference_form: the caption normalisation the references went through (``"none"``: as
            written), recorded in ``metrics.json`` as ``references``.
        skipped_images: filled by the test loader during the pass with the images it could not
            read (:class:`~sca.data.multi_source.EvaluationLoader`); reported as
            ``num_skipped_images`` and, by name, in ``metrics.json``.
    """

    MAX_NAMED = 20  # skipped images named in the log and in metrics.json

    def __init__(
        self,
        dataset_name: str,
        metrics=METRICS,
        output_dir: str | None = None,
        reference_form: str = "none",
        skipped_images: list[str] | None = None,
    ):
        unknown = set(metrics) - set(METRICS)
        if unknown:
            raise ValueError(f"unknown caption metrics {sorted(unknown)}; known: {METRICS}")
        self.dataset_name = dataset_name
        self.metrics = tuple(metrics)
        self.output_dir = output_dir
        self.reference_form = reference_form
        self._skipped_images = skipped_images if skipped_images is not None else []
        self._predictions: list[dict] = []

    def reset(self) -> None:
        self._predictions = []

    def process(self, inputs, outputs) -> None:
        for sample, output in zip(inputs, outputs):
            regions = output["regions"]
            gt_rles = sample["regions"].get("mask_rles")
            for i, caption in enumerate(regions["captions"]):
                pred_rle = encode_mask(regions["pred_masks"][i])
                mask_iou = None if gt_rles is None else float(mask_util.iou([pred_rle], [gt_rles[i]], [0])[0][0])
                self._predictions.append(
                    {
                        "image_id": output["image_id"],
                        "region_id": regions["region_ids"][i],
                        "source": output["source"],
                        "task_type": output["task_type"],
                        "category_id": regions["category_ids"][i],
                        "prompt": regions["prompts"][i],
                        "caption": caption,
                        "references": regions["references"][i],
                        "iou_score": float(regions["iou_scores"][i]),
                        "mask": pred_rle,
                        "mask_iou": mask_iou,
                    }
                )

    def evaluate(self):
        predictions = list(itertools.chain.from_iterable(comm.gather(self._predictions, dst=0)))
        skipped_images = sorted(itertools.chain.from_iterable(comm.gather(list(self._skipped_images), dst=0)))
        if not comm.is_main_process():
            return {}
        if skipped_images:
            named = ", ".join(skipped_images[: self.MAX_NAMED]) + (", ..." if len(skipped_images) > self.MAX_NAMED else "")
            logger.warning(
                "%s: %d image(s) could not be read and are not evaluated: %s", self.dataset_name, len(skipped_images), named
            )
        if not predictions:
            logger.warning("%s: no regions were captioned", self.dataset_name)
            return {}
        scorer = CaptionScorer([p["caption"] for p in predictions], [p["references"] for p in predictions], self.metrics)

        def metrics_of(indices: list[int] | None) -> dict[str, float]:
            chosen = predictions if indices is None else [predictions[i] for i in indices]
            results = scorer.score(indices)
            results.update(mask_metrics(chosen))
            results["num_regions"] = len(chosen)
            return results

        overall = {**metrics_of(None), "num_skipped_images": len(skipped_images)}
        groups = {kind: _group_indices(predictions, kind) for kind in ("source", "task_type")}
        per_group = {kind: {name: metrics_of(indices) for name, indices in named.items()} for kind, named in groups.items()}
        skipped = dict(scorer.skipped)
        if "mask_mIoU" not in overall:
            skipped["mask_mIoU"] = f"{self.dataset_name} has no ground-truth masks"
        for name, reason in skipped.items():
            logger.warning("%s: %s skipped: %s", self.dataset_name, name, reason)
        if self.output_dir:
            os.makedirs(self.output_dir, exist_ok=True)
            with open(os.path.join(self.output_dir, "predictions.json"), "w") as f:
                json.dump(predictions, f)
            report = {
                **overall,
                **{f"per_{kind}": named for kind, named in per_group.items()},
                "skipped": skipped,
                "skipped_images": skipped_images[: self.MAX_NAMED],
                "references": "as written" if self.reference_form == "none" else f"{self.reference_form}-normalised",
            }
            with open(os.path.join(self.output_dir, "metrics.json"), "w") as f:
                json.dump(report, f, indent=2)
        results = {"caption": overall}
        for kind, named in per_group.items():
            if len(named) > 1:  # a single group repeats the overall numbers
                results.update({f"caption_{kind}/{name}": metrics for name, metrics in named.items()})
        return results
