"""The caption mixer: a second SAM two-way transformer that turns a region into caption queries."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers.models.sam.configuration_sam import SamMaskDecoderConfig
from transformers.models.sam.modeling_sam import SamTwoWayTransformer

__all__ = ["CaptionMixer"]


class CaptionMixer(nn.Module):
    """Queries = K learned caption tokens + SAM's mask-decoder *output* tokens of the region;
    keys = SAM's *updated* image embeddings. Returns the K caption-token outputs.

    Args:
        decoder_config: SAM's mask-decoder config (hidden size, heads, MLP size are shared).
        num_layers: two-way blocks (12 in the paper).
        num_caption_tokens: K (8 in the paper).

    With ``checkpointing`` set, training keeps only the mixer's inputs and recomputes its
    activations during backward (``torch.utils.checkpoint``): less memory, one more forward.
    """

    def __init__(self, decoder_config: SamMaskDecoderConfig, num_layers: int, num_caption_tokens: int):
        super().__init__()
        config = copy.deepcopy(decoder_config)
        config.num_hidden_layers = num_layers
        self.num_caption_tokens = num_caption_tokens
        self.caption_tokens = nn.Embedding(num_caption_tokens, config.hidden_size)
        self.transformer = SamTwoWayTransformer(config)
        self.checkpointing = False

    def forward(self, decoder_tokens: torch.Tensor, image_keys: torch.Tensor, image_positions: torch.Tensor) -> torch.Tensor:
        """
        Args:
            decoder_tokens: (R, T, C) SAM mask-decoder output tokens per region.
            image_keys: (R, C, h, w) SAM's updated image embeddings per region.
            image_positions: (R, C, h, w) SAM's image-wide positional embeddings.
        Returns:
            (R, K, C) caption queries.
        """
        num_regions = decoder_tokens.shape[0]
        caption_tokens = self.caption_tokens.weight.to(decoder_tokens.dtype).expand(num_regions, -1, -1)
        queries = torch.cat([caption_tokens, decoder_tokens], dim=1).unsqueeze(1)
        if self.checkpointing and self.training and torch.is_grad_enabled():
            outputs = checkpoint(self._run, queries, image_keys, image_positions, use_reentrant=False)
        else:
            outputs = self._run(queries, image_keys, image_positions)
        return outputs[:, 0, : self.num_caption_tokens]

    def _run(self, queries: torch.Tensor, image_keys: torch.Tensor, image_positions: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.transformer(
            point_embeddings=queries,
            image_embeddings=image_keys,
            image_positional_embeddings=image_positions,
            attention_similarity=None,
        )
        return outputs
