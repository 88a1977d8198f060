"""detectron2-facing model: per-source batches in, weighted losses or per-image predictions out."""

from __future__ import annotations

import torch
from torch import nn

from sca.config import GenerationConfig
from sca.data.caption_tokenizer import CaptionTokenizer
from sca.data.region_batch import collate_regions, concat_batches, fusable_groups
from sca.modeling.captioner import SCACaptioner
from sca.modeling.postprocessing import masks_to_image_frame, prompts_to_image_frame

__all__ = ["RegionCaptioner"]


class RegionCaptioner(nn.Module):
    """Follows detectron2's meta-architecture contract.

    * training: ``model({source: batch})`` -> ``{"loss_caption/<source>": weighted loss, ...}``
      (plus ``loss_mask/<source>`` and ``loss_iou/<source>`` when the mask loss is on), which
      ``SimpleTrainer`` sums and logs.
    * inference: ``model([region sample, ...])`` -> one dict per image with ``image_id``, ``source``,
      ``task_type`` and ``regions`` (ids, prompts and binary masks in the original image frame,
      generated captions, references, SAM's IoU scores).

    Args:
        captioner: the network.
        tokenizer: caption tokenizer (EOS / padding ids, decoding).
        loss_weights: per-source loss weight.
        label_smoothing: of the caption cross-entropy (0.1 in the paper).
        mask_loss_weight: >0 adds SAM's mask loss (for runs that train SAM).
        iou_loss_weight: weight of SAM's IoU-prediction loss, added with the mask loss.
        click_loss_weight: >0: the mask loss also covers one random click inside each region's
            mask, each counting as this fraction of a region.
        generation: decoding settings for inference.
    """

    def __init__(
        self,
        captioner: SCACaptioner,
        tokenizer: CaptionTokenizer,
        *,
        loss_weights: dict[str, float],
        label_smoothing: float,
        mask_loss_weight: float,
        iou_loss_weight: float = 1.0,
        click_loss_weight: float = 0.0,
        generation: GenerationConfig,
    ):
        super().__init__()
        self.captioner = captioner
        self.tokenizer = tokenizer
        self.loss_weights = dict(loss_weights)
        self.label_smoothing = label_smoothing
        self.mask_loss_weight = mask_loss_weight
        self.iou_loss_weight = iou_loss_weight
        self.click_loss_weight = click_loss_weight
        self.generation = generation
        self.autocast_dtype: torch.dtype | None = None  # mixed precision (e.g. torch.bfloat16) when set

    @property
    def device(self) -> torch.device:
        return self.captioner.pixel_mean.device

    def forward(self, batched_inputs):
        dtype = self.autocast_dtype
        with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            if self.training:
                return self.losses(batched_inputs)
            return self.inference(batched_inputs)

    def _prepare(self, batch: dict) -> tuple[torch.Tensor, dict, torch.Tensor]:
        device = self.device
        pixels = self.captioner.normalize(batch["images"].to(device), batch["valid_boxes"].to(device))
        regions = {k: v.to(device, non_blocking=True) for k, v in batch["regions"].items() if isinstance(v, torch.Tensor)}
        image_task_ids = torch.tensor([self.captioner.task_type_id(t) for t in batch["task_types"]], device=device)
        return pixels, regions, image_task_ids[regions["image_index"]]

    def losses(self, batches: dict[str, dict]) -> dict[str, torch.Tensor]:
        """One forward pass for all sources of the step (per group of compatible batches), each
        source's losses the means over its own tokens and regions, as separate passes would give."""
        losses = {}
        for names in fusable_groups(batches):
            batch = concat_batches([batches[n] for n in names], self.tokenizer.pad_token_id)
            pixels, regions, task_ids = self._prepare(batch)
            has_masks = regions["masks"].shape[-1] > 0  # box-only sources carry (R, 0, 0): no mask loss
            output = self.captioner(
                pixels,
                regions,
                task_ids,
                regions["input_ids"],
                regions["attention_mask"],
                label_smoothing=self.label_smoothing,
                gt_masks=regions["masks"] if self.mask_loss_weight > 0 and has_masks else None,
                click_loss_weight=self.click_loss_weight,
                region_groups=regions["batch_index"],
                num_groups=len(names),
            )
            for i, source in enumerate(names):
                weight = self.loss_weights.get(source, 1.0)
                losses[f"loss_caption/{source}"] = weight * output.loss_caption[i]
                if output.loss_mask is not None:
                    losses[f"loss_mask/{source}"] = weight * self.mask_loss_weight * output.loss_mask[i]
                    losses[f"loss_iou/{source}"] = weight * self.iou_loss_weight * output.loss_iou[i]
        return {name: losses[name] for name in sorted(losses, key=lambda k: list(batches).index(k.split("/", 1)[1]))}

    @torch.no_grad()
    def inference(self, samples: list[dict]) -> list[dict]:
        batch = collate_regions(samples, self.tokenizer.pad_token_id)
        pixels, regions, task_ids = self._prepare(batch)
        result = self.captioner.generate(
            pixels,
            regions,
            task_ids,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
            max_new_tokens=self.generation.max_new_tokens,
            num_beams=self.generation.num_beams,
            region_chunk_size=self.generation.region_chunk_size,
        )
        captions = self.tokenizer.decode(result.token_ids)
        image_index = regions["image_index"].tolist()
        outputs = []
        for i, sample in enumerate(samples):
            members = [r for r, owner in enumerate(image_index) if owner == i]
            frame = (batch["valid_boxes"][i], sample["height"], sample["width"])
            prompts = sample["regions"]
            outputs.append(
                {
                    "image_id": sample["image_id"],
                    "source": sample["source"],
                    "task_type": sample["task_type"],
                    "regions": {
                        "region_ids": prompts["region_ids"].tolist(),
                        "category_ids": prompts["category_ids"].tolist(),
                        "prompts": prompts_to_image_frame(
                            prompts["prompt_types"], prompts["boxes"], prompts["points"], prompts["point_labels"], *frame
                        ),
                        "captions": [captions[r] for r in members],
                        "references": [batch["regions"]["captions"][r] for r in members],
                        "iou_scores": result.iou_scores[members].float().cpu(),
                        "pred_masks": masks_to_image_frame(result.pred_masks[members], *frame, self.captioner.image_size),
                    },
                }
            )
        return outputs
