"""transformers' SamModel applied to region prompts, exposing what the caption mixer reads.

The image is encoded once (or its embeddings come from an :class:`ImageEmbeddingCache`); every
region is then decoded by ``SamModel.forward`` itself (given the image embeddings), so masks and
IoU scores are exactly SAM's. A forward hook on the mask decoder's two-way transformer captures
its output tokens and updated image embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import SamModel

from sca.data.prompts import PROMPT_TYPE_IDS
from sca.modeling.embedding_cache import ImageEmbeddingCache

__all__ = ["RegionDecoding", "SamRegionDecoder"]


@dataclass
class RegionDecoding:
    """SAM's outputs for a group of regions sharing one prompt type."""

    pred_masks: torch.Tensor  # (R, M, m, m) low-res mask logits, M = 3 with multimask output else 1
    iou_scores: torch.Tensor  # (R, M)
    decoder_tokens: torch.Tensor  # (R, T, C) two-way transformer output tokens (iou, masks, prompt)
    image_keys: torch.Tensor  # (R, C, h, w) updated image embeddings


class SamRegionDecoder(nn.Module):
    """Wraps a ``SamModel``: ``encode_images`` once, then ``decode`` region prompts per prompt type.

    With ``multimask_output`` SAM returns 3 candidate masks per prompt, except for the prompt types
    in ``single_mask_prompt_types``, which get its single-mask output (SAM's own training rule for
    unambiguous prompts such as boxes).
    """

    def __init__(self, sam: SamModel, multimask_output: bool = True, single_mask_prompt_types: list[str] = ()):
        super().__init__()
        self.sam = sam
        self.multimask_output = multimask_output
        unknown = set(single_mask_prompt_types) - set(PROMPT_TYPE_IDS)
        if unknown:
            raise ValueError(f"single_mask_prompt_types: unknown prompt types {sorted(unknown)}; known: {list(PROMPT_TYPE_IDS)}")
        self.single_mask_prompt_ids = {PROMPT_TYPE_IDS[name] for name in single_mask_prompt_types}
        self.trainable = True  # when False, SAM runs without autograd (its outputs need no gradient)
        self.embedding_cache: ImageEmbeddingCache | None = None
        # set by the trainer when every training image has the same pixels each time it is seen
        self.training_images_unaugmented = False
        self._captured: tuple[torch.Tensor, torch.Tensor] | None = None
        sam.mask_decoder.transformer.register_forward_hook(self._capture)

    def _capture(self, module, inputs, outputs) -> None:
        self._captured = outputs

    @property
    def hidden_size(self) -> int:
        return self.sam.config.mask_decoder_config.hidden_size

    @property
    def image_size(self) -> int:
        return self.sam.config.prompt_encoder_config.image_size

    @property
    def mask_input_size(self) -> int:
        return 4 * self.sam.config.prompt_encoder_config.image_embedding_size

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalized pixels -> (B, C, h, w) image embeddings (with gradients if SAM
        trains); through ``embedding_cache`` when :meth:`uses_embedding_cache` allows it."""
        cached = self.uses_embedding_cache()
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            if not cached:
                return self._encode(pixel_values)
            return self.embedding_cache.encode(pixel_values, self._encode, self.sam.vision_encoder)

    def _encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.sam.vision_encoder(pixel_values).last_hidden_state

    def uses_embedding_cache(self) -> bool:
        """Whether ``encode_images`` may reuse embeddings now: in inference unless gradients are to
        reach the image encoder; in training only for a cache built ``in_training``, a frozen image
        encoder and unaugmented training images (``training_images_unaugmented``)."""
        if self.embedding_cache is None:
            return False
        encoder_trains = any(p.requires_grad for p in self.sam.vision_encoder.parameters())
        if self.training:
            return self.embedding_cache.in_training and self.training_images_unaugmented and not encoder_trains
        return not (encoder_trains and torch.is_grad_enabled())

    def multimask(self, prompt_type: int) -> bool:
        """Whether prompts of this type get SAM's 3 candidate masks (else its single mask)."""
        return self.multimask_output and prompt_type not in self.single_mask_prompt_ids

    def num_masks(self, prompt_type: int) -> int:
        """Masks SAM returns per prompt of this type."""
        return self.sam.config.mask_decoder_config.num_multimask_outputs if self.multimask(prompt_type) else 1

    def image_positions(self, num_regions: int) -> torch.Tensor:
        return self.sam.get_image_wide_positional_embeddings().expand(num_regions, -1, -1, -1)

    def decode(
        self,
        image_embeddings: torch.Tensor,
        prompt_type: int,
        boxes: torch.Tensor | None = None,
        points: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        mask_inputs: torch.Tensor | None = None,
    ) -> RegionDecoding:
        """Decode R regions of one prompt type; ``image_embeddings`` is (R, C, h, w), one row per region.

        Args:
            boxes: (R, 4) XYXY in the input frame, for box prompts.
            points, point_labels: (R, P, 2) and (R, P), for point prompts.
            mask_inputs: (R, 1, 4h, 4w) mask prompts.
        """
        kwargs = {}
        if prompt_type == PROMPT_TYPE_IDS["box"]:
            kwargs["input_boxes"] = boxes[:, None]
        elif prompt_type == PROMPT_TYPE_IDS["point"]:
            kwargs["input_points"], kwargs["input_labels"] = points[:, None], point_labels[:, None]
        else:
            kwargs["input_masks"] = mask_inputs
        self._captured = None
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            output = self.sam(image_embeddings=image_embeddings, multimask_output=self.multimask(prompt_type), **kwargs)
        tokens, keys = self._captured
        self._captured = None
        num_regions, channels, height, width = image_embeddings.shape
        return RegionDecoding(
            pred_masks=output.pred_masks[:, 0],
            iou_scores=output.iou_scores[:, 0],
            decoder_tokens=tokens[:, 0],
            image_keys=keys[:, 0].transpose(1, 2).reshape(num_regions, channels, height, width),
        )
