"""The ``densecap`` evaluation protocol as a detectron2 evaluator: the model finds its own regions
("anything" mode: point grid -> masks -> boxes -> captions, SAM's IoU score as confidence) and
they are scored by dense-captioning mAP (:mod:`sca.evaluation.dense_captioning`).

Used during and after training for the splits whose ``data.test_protocols`` include ``densecap``
(:func:`evaluate_dense_captioning`), and by ``tools/evaluate_dense_captioning.py``.

* ground truth: the split's regions (:func:`~sca.data.record_regions.record_regions`), one box per
  reference caption (identical boxes merge back into one region with all its references). The
  references are the raw phrases unless the test mapper's ``caption_normalization`` is set, which
  then applies to them too (regions it drops are left out and counted); ``metrics.json`` says which
  form was scored (``references``).
* an image that is missing or unreadable is skipped and counted (``skipped_images``), not scored.
* for sources with masks, ``anything_recall``: the percent of ground-truth masks that some kept
  region overlaps at mask IoU >= 0.5 (:func:`~sca.evaluation.anything_mode.matched_regions`).
* outputs (rank 0): ``<output_dir>/metrics.json`` (mAP, detection mAP, the 30 + 5 APs, the
  conventions, counts) and ``predictions.json`` (per image, the predicted boxes, captions, scores).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from dataclasses import replace

import numpy as np
import torch
from detectron2.data import MapDataset, MetadataCatalog
from detectron2.data.build import trivial_batch_collator
from detectron2.data.samplers import InferenceSampler
from detectron2.evaluation import DatasetEvaluator, inference_on_dataset
from detectron2.utils import comm
from torch import nn

from sca.data.caption_normalization import normalize_captions
from sca.data.mappers.image_input import read_image_or_skip
from sca.data.multi_source import compact_records
from sca.data.record_regions import RecordRegion, record_regions
from sca.data.skip_counts import SkipRecorder
from sca.evaluation.anything_mode import ground_truth_regions, matched_regions
from sca.evaluation.dense_captioning import ImageRegions, dense_captioning_map
from sca.predictor import AnythingConfig, RegionCaptionPredictor

__all__ = [
    "ground_truth",
    "AnythingModeCaptioner",
    "DenseCaptioningEvaluator",
    "build_dense_captioning_loader",
    "evaluate_dense_captioning",
]

logger = logging.getLogger(__name__)


def ground_truth(record: dict, metadata, normalization: str = "none") -> tuple[list[RecordRegion], int]:
    """The record's ground-truth regions with their captions under ``normalization`` (regions left
    without a caption are dropped) and the number dropped."""
    regions = record_regions(record, metadata)
    kept = [replace(r, captions=captions) for r in regions if (captions := normalize_captions(r.captions, normalization))]
    return kept, len(regions) - len(kept)


class _ReadImage:
    """Loader mapper: the record with its RGB image, or ``image=None`` when it cannot be read
    (detectron2's ``MapDataset`` would replace a ``None`` by another record)."""

    def __init__(self, dataset_name: str):
        self.dataset_name = dataset_name
        self.skips = SkipRecorder(("skipped_images",))

    def __call__(self, record: dict) -> dict:
        return {"record": record, "image": read_image_or_skip(record, self.skips, self.dataset_name)}


def build_dense_captioning_loader(dataset_name: str, max_images: int = 0, num_workers: int = 0) -> torch.utils.data.DataLoader:
    """Every image of the split once (each rank its shard), one per batch, with its record."""
    records = compact_records([dataset_name])
    if max_images > 0:
        records = torch.utils.data.Subset(records, range(min(max_images, len(records))))
    dataset = MapDataset(records, _ReadImage(dataset_name))
    return torch.utils.data.DataLoader(
        dataset, batch_size=1, sampler=InferenceSampler(len(dataset)), num_workers=num_workers, collate_fn=trivial_batch_collator
    )


class AnythingModeCaptioner(nn.Module):
    """A model for ``inference_on_dataset``: each ``{record, image}`` in, the regions the predictor's
    "anything" mode finds out (``boxes`` XYXY in image pixels, ``captions``, ``scores``, ``masks``)."""

    def __init__(self, predictor: RegionCaptionPredictor, anything: AnythingConfig, task_type: str | None = None):
        super().__init__()
        self.model = predictor.model  # registered, so that inference_context switches it to eval mode
        self.predictor = predictor
        self.anything = anything
        self.task_type = task_type

    def forward(self, inputs: list[dict]) -> list[dict]:
        outputs = []
        for item in inputs:
            if item["image"] is None:
                outputs.append({"skipped": True})
                continue
            regions = self.predictor(item["image"], task_type=self.task_type, anything=self.anything)
            outputs.append({
                "boxes": np.array([r.box for r in regions], dtype=np.float64).reshape(-1, 4),
                "captions": [r.caption for r in regions],
                "scores": np.array([r.iou_score for r in regions], dtype=np.float64),
                "masks": [r.mask for r in regions],
            })
        return outputs


class DenseCaptioningEvaluator(DatasetEvaluator):
    """Collects predicted and ground-truth regions per image; scores them by dense-captioning mAP.

    Args:
        dataset_name: the evaluated split (its metadata gives class names for class-captioned sources).
        output_dir: where ``metrics.json`` and ``predictions.json`` go (rank 0 only).
        conventions: ``"sca"`` or ``"densecap_lua"`` (see :mod:`sca.evaluation.dense_captioning`).
        normalization: applied to the reference captions (``"none"``: the raw phrases).
        caption_scorer: ``(candidates, references) -> scores``; default METEOR.
        match_iou: mask IoU at which a predicted region finds a ground-truth mask (``anything_recall``,
            for sources with masks: :func:`~sca.evaluation.anything_mode.matched_regions`).
    """

    def __init__(self, dataset_name: str, output_dir: str | None = None, conventions: str = "sca",
                 normalization: str = "none", caption_scorer=None, match_iou: float = 0.5):
        self.dataset_name = dataset_name
        self.metadata = MetadataCatalog.get(dataset_name)
        self.output_dir = output_dir
        self.conventions = conventions
        self.normalization = normalization
        self.caption_scorer = caption_scorer
        self.match_iou = match_iou
        self.report: dict = {}  # the full results of the last evaluate() (rank 0)
        self.reset()

    def reset(self) -> None:
        self._images: list[dict] = []
        self._skipped: list[str] = []
        self._dropped_regions = 0
        self._masks_found = self._masks_total = 0

    def process(self, inputs, outputs) -> None:
        for item, output in zip(inputs, outputs):
            record = item["record"]
            if output.get("skipped"):
                self._skipped.append(record["file_name"])
                continue
            regions, dropped = ground_truth(record, self.metadata, self.normalization)
            self._dropped_regions += dropped
            masks = [r.mask for r in regions if r.mask is not None]
            self._masks_total += len(masks)
            self._masks_found += matched_regions(masks, output["masks"], self.match_iou)
            truth = ground_truth_regions(regions)
            self._images.append({
                "image_id": record["image_id"],
                "boxes": output["boxes"].tolist(), "captions": output["captions"], "scores": output["scores"].tolist(),
                "gt_boxes": truth.boxes.tolist(), "gt_captions": truth.captions,
            })

    def evaluate(self):
        images = list(itertools.chain.from_iterable(comm.gather(self._images, dst=0)))
        skipped = list(itertools.chain.from_iterable(comm.gather(self._skipped, dst=0)))
        dropped = sum(comm.gather(self._dropped_regions, dst=0))
        found, total = (sum(comm.gather(n, dst=0)) for n in (self._masks_found, self._masks_total))
        if not comm.is_main_process():
            return {}
        if skipped:
            logger.warning("%s: %d images could not be read and were not scored, e.g. %s", self.dataset_name, len(skipped), skipped[:3])
        predictions = [ImageRegions(np.array(i["boxes"]).reshape(-1, 4), i["captions"], np.array(i["scores"])) for i in images]
        truths = [ImageRegions(np.array(i["gt_boxes"]).reshape(-1, 4), i["gt_captions"]) for i in images]
        result = dense_captioning_map(predictions, truths, self.caption_scorer, conventions=self.conventions)
        report = {
            **result,
            "references": "raw phrases" if self.normalization == "none" else f"{self.normalization}-normalised phrases",
            "num_images": len(images),
            "skipped_images": len(skipped),
            "regions_dropped_by_normalization": dropped,
            "anything_recall": 100.0 * found / max(total, 1),  # percent of the ground-truth masks found
            "num_ground_truth_masks": total,
        }
        self.report = report
        logger.info("%s: dense-captioning mAP %.2f, detection mAP %.2f (%d images, %d predictions, %d merged ground-truth "
                    "boxes; references: %s)", self.dataset_name, result["mAP"], result["detection_mAP"], len(images),
                    result["num_predictions"], result["num_ground_truth"], report["references"])
        if self.output_dir:
            os.makedirs(self.output_dir, exist_ok=True)
            with open(os.path.join(self.output_dir, "metrics.json"), "w") as f:
                json.dump(report, f, indent=2)
            with open(os.path.join(self.output_dir, "predictions.json"), "w") as f:
                json.dump([{k: i[k] for k in ("image_id", "boxes", "captions", "scores")} for i in images], f)
        return {"densecap": {"mAP": result["mAP"], "detection_mAP": result["detection_mAP"]}}


def evaluate_dense_captioning(cfg, model, dataset_name: str) -> dict:
    """The ``densecap`` protocol on one split with ``model`` (a ``RegionCaptioner``, e.g. the one
    being trained): ``{"densecap": {"mAP", "detection_mAP"}}`` on rank 0."""
    predictor = RegionCaptionPredictor(cfg, model=model)
    anything = replace(predictor.anything, **dict(cfg.evaluation.densecap.anything))
    task_type = cfg.data.test_task_types.get(dataset_name, cfg.data.test_task_type)
    loader = build_dense_captioning_loader(dataset_name, cfg.evaluation.max_images, cfg.data.num_workers)
    evaluator = DenseCaptioningEvaluator(
        dataset_name, os.path.join(cfg.output_dir, "eval", dataset_name, "densecap"),
        conventions=cfg.evaluation.densecap.conventions, normalization=cfg.data.test_mapper.caption_normalization,
    )
    return inference_on_dataset(AnythingModeCaptioner(predictor, anything, task_type), loader, evaluator)
