"""Caption metrics as a detectron2 ``DatasetEvaluator`` (pycocoevalcap scorers).

Reports, in percent: exact-match accuracy (a generated caption equal to one of its references,
case- and space-insensitive), BLEU-1..4 (``Bleu_n``), ROUGE-L (``ROUGE_L``) and CIDEr-D
(``CIDEr_D``: pycocoevalcap's Cider is the CIDEr-D variant), plus the image-blind baseline: the
exact-match accuracy of the best single constant caption on the same regions. Names avoid "-",
which detectron2's ``print_csv_format`` leaves out.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
from collections import Counter

from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

__all__ = ["CaptionEvaluator", "normalize_caption", "caption_metrics"]

logger = logging.getLogger(__name__)

METRICS = ("exact_match", "bleu", "rouge", "cider")


def normalize_caption(text: str) -> str:
    return " ".join(text.lower().split())


def _tokenize(captions: dict[int, list[str]]) -> dict[int, list[str]]:
    """PTB tokenization (Java, as in the COCO caption toolkit); lower-case split without Java."""
    if shutil.which("java") is None:
        logger.warning("java not found: captions are tokenized by lower-casing and splitting on spaces")
        return {key: [normalize_caption(c) for c in texts] for key, texts in captions.items()}
    tokenized = PTBTokenizer().tokenize({key: [{"caption": c} for c in texts] for key, texts in captions.items()})
    # PTBTokenizer drops trailing empty lines: restore empty captions.
    return {key: tokenized.get(key, [""] * len(texts)) for key, texts in captions.items()}


def caption_metrics(candidates: list[str], references: list[list[str]], metrics=METRICS) -> dict[str, float]:
    """Corpus-level caption metrics (percent) of one candidate per region against its references."""
    if not candidates:
        return {}
    results: dict[str, float] = {}
    if "exact_match" in metrics:
        hits = [normalize_caption(c) in {normalize_caption(r) for r in refs} for c, refs in zip(candidates, references)]
        results["exact_match"] = 100.0 * sum(hits) / len(hits)
        most_common = Counter(normalize_caption(r) for refs in references for r in refs).most_common(1)[0][0]
        blind = [most_common in {normalize_caption(r) for r in refs} for refs in references]
        results["image_blind_exact_match"] = 100.0 * sum(blind) / len(blind)
    scorers = [name for name in ("bleu", "rouge", "cider") if name in metrics]
    if scorers:
        gts = _tokenize({i: list(refs) for i, refs in enumerate(references)})
        res = _tokenize({i: [c] for i, c in enumerate(candidates)})
        if "bleu" in scorers:
            bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
            results.update({f"Bleu_{n + 1}": 100.0 * score for n, score in enumerate(bleu)})
        if "rouge" in scorers:
            results["ROUGE_L"] = 100.0 * Rouge().compute_score(gts, res)[0]
        if "cider" in scorers:
            results["CIDEr_D"] = 100.0 * Cider().compute_score(gts, res)[0]
    return results


class CaptionEvaluator(DatasetEvaluator):
    """Collects per-region captions from the model's outputs and scores them.

    Args:
        dataset_name: the evaluated split (used in logs and file names).
        metrics: subset of ``("exact_match", "bleu", "rouge", "cider")``.
        output_dir: where ``predictions.json`` and ``metrics.json`` go (rank 0 only).
    """

    def __init__(self, dataset_name: str, metrics=METRICS, output_dir: str | None = None):
        unknown = set(metrics) - set(METRICS)
        if unknown:
            raise ValueError(f"unknown caption metrics {sorted(unknown)}; known: {METRICS}")
        self.dataset_name = dataset_name
        self.metrics = tuple(metrics)
        self.output_dir = output_dir
        self._predictions: list[dict] = []

    def reset(self) -> None:
        self._predictions = []

    def process(self, inputs, outputs) -> None:
        for output in outputs:
            regions = output["regions"]
            for i, caption in enumerate(regions["captions"]):
                self._predictions.append(
                    {
                        "image_id": output["image_id"],
                        "region_id": regions["region_ids"][i],
                        "category_id": regions["category_ids"][i],
                        "caption": caption,
                        "references": regions["references"][i],
                        "iou_score": float(regions["iou_scores"][i]),
                    }
                )

    def evaluate(self):
        predictions = list(itertools.chain.from_iterable(comm.gather(self._predictions, dst=0)))
        if not comm.is_main_process():
            return {}
        if not predictions:
            logger.warning("%s: no regions were captioned", self.dataset_name)
            return {}
        results = caption_metrics([p["caption"] for p in predictions], [p["references"] for p in predictions], self.metrics)
        results["num_regions"] = len(predictions)
        if self.output_dir:
            os.makedirs(self.output_dir, exist_ok=True)
            with open(os.path.join(self.output_dir, "predictions.json"), "w") as f:
                json.dump(predictions, f)
            with open(os.path.join(self.output_dir, "metrics.json"), "w") as f:
                json.dump(results, f, indent=2)
        return {"caption": results}
