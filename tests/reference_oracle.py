"""Test tooling: the reference's documented computation, redone from its config and state dict.

Written from the reference's facts (``ScaMultitaskV2Model`` and its copy of transformers' SAM,
``SCADataTransform``, ``SCADataCollator``), independently of this project's captioner:

* SAM's ViT, its two-way transformer, the caption mixer (another two-way transformer) and the LM
  are transformers' own blocks, loaded from the reference's names;
* everything in between is spelled out here with tensors of the state dict: the prompt encoding
  of boxes, the image-wide positional encoding, SAM's tokens ``[iou, 4 mask tokens, 2 box corners]``,
  the mask head (upscaling, hypernetwork MLPs, IoU head) and the multimask slice, the caption
  queries ``[caption tokens | SAM's decoder *output* tokens]`` against SAM's *updated* image
  embeddings with the image-wide positional encoding, the projection, the task-token prefix
  (``task_tokens.weight.view(2, -1)[task id]``), the labels padded by one -100 on the left (the
  virtual BOS) and shifted, cross-entropy with label smoothing 0.1, and greedy decoding to EOS or
  ``max_length`` new tokens;
* preprocessing as ``SamProcessor`` does it: PIL bilinear resize of the longest side to 1024 with
  ``int(x + 0.5)`` rounding, /255, ImageNet mean/std, zero padding at the right and bottom, prompt
  coordinates scaled by the resized / original width and height.
"""

from __future__ import annotations

import math
import re

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoConfig, AutoModelForCausalLM, SamMaskDecoderConfig, SamVisionConfig
from transformers.models.sam.modeling_sam import SamTwoWayTransformer, SamVisionEncoder

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def sam_preprocess(image: np.ndarray, boxes: np.ndarray, longest_edge: int = 1024):
    """(H, W, 3) uint8 image and (N, 4) XYXY boxes -> pixel values (3, S, S), the boxes in the input
    frame and the resized (h, w)."""
    old_h, old_w = image.shape[:2]
    scale = longest_edge * 1.0 / max(old_h, old_w)
    new_h, new_w = int(old_h * scale + 0.5), int(old_w * scale + 0.5)
    resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), resample=Image.BILINEAR), dtype=np.float64)
    normalized = (resized / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    padded = np.zeros((longest_edge, longest_edge, 3))
    padded[:new_h, :new_w] = normalized
    scaled = boxes.astype(np.float64).reshape(-1, 2, 2).copy()
    scaled[..., 0] *= new_w / old_w
    scaled[..., 1] *= new_h / old_h
    return torch.from_numpy(padded.transpose(2, 0, 1).astype(np.float32)), scaled.reshape(-1, 4), (new_h, new_w)


class ReferenceOracle:
    """The reference's forward pass for a ``config.json`` dict and a state dict with its names."""

    def __init__(self, config: dict, state: dict[str, torch.Tensor]):
        self.state = state
        decoder = dict(config["mask_caption_decoder_config"])
        self.num_caption_tokens = decoder.pop("num_caption_tokens")
        mixer_layers = decoder.pop("additional_num_hidden_layers")
        decoder.pop("num_caption_heads")
        self.num_task_tokens = config["num_task_tokens"]
        self.image_size = config["prompt_encoder_config"]["image_size"]
        self.embedding_size = config["prompt_encoder_config"]["image_embedding_size"]
        self.vision = self._load(SamVisionEncoder(SamVisionConfig(**config["vision_config"])), "vision_encoder.")
        sam_decoder = SamMaskDecoderConfig(**decoder)
        self.sam_transformer = self._load(SamTwoWayTransformer(sam_decoder), "mask_decoder.transformer.")
        mixer_config = SamMaskDecoderConfig(**{**decoder, "num_hidden_layers": mixer_layers})
        self.mixer = self._load(SamTwoWayTransformer(mixer_config), "mask_decoder.additional_transformer.")
        text = dict(config["text_config"])
        language_model = AutoModelForCausalLM.from_config(AutoConfig.for_model(text.pop("model_type"), **text))
        self.language_model = self._load(language_model, "language_model.")

    def _load(self, module: torch.nn.Module, prefix: str) -> torch.nn.Module:
        part = {k[len(prefix) :]: v for k, v in self.state.items() if k.startswith(prefix)}
        missing, unexpected = module.load_state_dict(part, strict=False)
        tied = [k for k in missing if k == "lm_head.weight"]
        assert not unexpected and missing == tied, (prefix, missing, unexpected)
        return module.eval()

    def w(self, name: str) -> torch.Tensor:
        return self.state[name]

    # ---- SAM -----------------------------------------------------------------------------------
    def positional_encoding(self, coords: torch.Tensor) -> torch.Tensor:
        """Coordinates in [0, 1] (..., 2) -> random Fourier features (..., C)."""
        projected = 2 * math.pi * ((2 * coords - 1) @ self.w("shared_image_embedding.positional_embedding"))
        return torch.cat([projected.sin(), projected.cos()], dim=-1)

    def image_positional_encoding(self) -> torch.Tensor:
        """(C, h, w) encoding of the embedding grid's cell centres."""
        size = self.embedding_size
        centres = (torch.arange(size, dtype=torch.float32) + 0.5) / size
        grid = torch.stack([centres[None, :].expand(size, size), centres[:, None].expand(size, size)], dim=-1)
        return self.positional_encoding(grid).permute(2, 0, 1)

    def box_tokens(self, boxes: torch.Tensor) -> torch.Tensor:
        """(N, 4) XYXY boxes in the input frame -> (N, 2, C) corner tokens."""
        corners = (boxes + 0.5).reshape(-1, 2, 2) / self.image_size
        encoded = self.positional_encoding(corners)
        corner_types = [self.w(f"prompt_encoder.point_embed.{i}.weight")[0] for i in (2, 3)]  # top-left, bottom-right
        return encoded + torch.stack(corner_types)

    def point_tokens(self, points: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(N, P, 2) points with (N, P) labels (1 positive, 0 negative) -> (N, P + 1, C): without a box,
        SAM appends a padding point (label -1, the "not a point" embedding)."""
        points = torch.cat([points + 0.5, torch.zeros(len(points), 1, 2)], dim=1)
        labels = torch.cat([labels, -torch.ones(len(labels), 1, dtype=labels.dtype)], dim=1)[..., None]
        encoded = self.positional_encoding(points / self.image_size)
        encoded = torch.where(labels == -1, self.w("prompt_encoder.not_a_point_embed.weight")[0], encoded)
        encoded = torch.where(labels == 0, encoded + self.w("prompt_encoder.point_embed.0.weight")[0], encoded)
        return torch.where(labels == 1, encoded + self.w("prompt_encoder.point_embed.1.weight")[0], encoded)

    def _mlp(self, prefix: str, x: torch.Tensor, depth: int) -> torch.Tensor:
        x = F.relu(F.linear(x, self.w(prefix + "proj_in.weight"), self.w(prefix + "proj_in.bias")))
        for i in range(depth - 2):
            x = F.relu(F.linear(x, self.w(f"{prefix}layers.{i}.weight"), self.w(f"{prefix}layers.{i}.bias")))
        return F.linear(x, self.w(prefix + "proj_out.weight"), self.w(prefix + "proj_out.bias"))

    def _upscale(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
        return F.conv_transpose2d(x, self.w(prefix + "weight"), self.w(prefix + "bias"), stride=2)

    def _layer_norm_channels_first(self, x: torch.Tensor, prefix: str, eps: float = 1e-6) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + eps)
        return self.w(prefix + "weight")[:, None, None] * x + self.w(prefix + "bias")[:, None, None]

    @torch.no_grad()
    def decode(self, image_embedding: torch.Tensor, boxes=None, points=None, labels=None) -> dict[str, torch.Tensor]:
        """One image's (C, h, w) embedding and its N prompts ((N, 4) boxes, or (N, P, 2) points with
        labels) -> SAM's 3 masks and IoU scores per prompt, and the (N, K, C) caption queries."""
        prompt_tokens = self.box_tokens(boxes) if boxes is not None else self.point_tokens(points, labels)
        n = len(prompt_tokens)
        channels, height, width = image_embedding.shape
        output_tokens = torch.cat([self.w("mask_decoder.iou_token.weight"), self.w("mask_decoder.mask_tokens.weight")])
        num_mask_tokens = len(output_tokens) - 1
        tokens = torch.cat([output_tokens.expand(n, -1, -1), prompt_tokens], dim=1)[None]  # (1, N, 5 + prompt, C)
        keys = (image_embedding + self.w("prompt_encoder.no_mask_embed.weight")[0][:, None, None]).expand(n, -1, -1, -1)
        positions = self.image_positional_encoding().expand(n, -1, -1, -1)
        decoded, updated = self.sam_transformer(
            point_embeddings=tokens, image_embeddings=keys, image_positional_embeddings=positions, attention_similarity=None
        )[:2]
        updated = updated.transpose(2, 3).reshape(n, channels, height, width)
        up = self._upscale(updated, "mask_decoder.upscale_conv1.")
        up = F.gelu(self._layer_norm_channels_first(up, "mask_decoder.upscale_layer_norm."))
        up = F.gelu(self._upscale(up, "mask_decoder.upscale_conv2."))
        hyper = [self._mlp(f"mask_decoder.output_hypernetworks_mlps.{i}.", decoded[0, :, 1 + i], 3) for i in range(num_mask_tokens)]
        hyper = torch.stack(hyper, dim=1)  # (N, 4, C/8)
        masks = (hyper @ up.flatten(2)).reshape(n, num_mask_tokens, *up.shape[-2:])
        hidden_layers = [k for k in self.state if re.fullmatch(r"mask_decoder\.iou_prediction_head\.layers\.\d+\.weight", k)]
        iou_depth = len(hidden_layers) + 2
        iou = self._mlp("mask_decoder.iou_prediction_head.", decoded[0, :, 0], iou_depth)
        caption_tokens = self.w("mask_decoder.caption_tokens.weight").reshape(-1, self.num_caption_tokens, channels)[0]
        queries = torch.cat([caption_tokens.expand(n, -1, -1), decoded[0]], dim=1)[None]
        mixed = self.mixer(
            point_embeddings=queries, image_embeddings=updated, image_positional_embeddings=positions, attention_similarity=None
        )[0]
        return {"masks": masks[:, 1:], "iou_scores": iou[:, 1:], "queries": mixed[0, :, : self.num_caption_tokens]}

    # ---- language model ------------------------------------------------------------------------
    def prefix(self, queries: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        """(N, K, C) queries and (N,) task ids -> (N, T + K, H) ``[task tokens | projected queries]``."""
        projected = F.linear(queries, self.w("language_project.weight"), self.w("language_project.bias"))
        task = self.w("task_tokens.weight").view(2, -1)[task_ids].view(len(task_ids), self.num_task_tokens, -1)
        return torch.cat([task, projected], dim=1)

    @torch.no_grad()
    def logits_and_loss(self, prefix, input_ids: torch.Tensor, attention_mask: torch.Tensor, label_smoothing: float = 0.1):
        """Teacher forcing as ``SCADataCollator`` + the reference's loss: (N, L, V) logits predicting
        the L caption tokens, and the mean label-smoothed cross-entropy over real tokens."""
        labels = F.pad(input_ids.masked_fill(attention_mask == 0, -100), (1, 0), value=-100)  # virtual BOS
        words = F.embedding(input_ids, self.w("language_model.transformer.wte.weight"))
        mask = torch.cat([torch.ones(prefix.shape[:2], dtype=attention_mask.dtype), attention_mask], dim=1)
        logits = self.language_model(inputs_embeds=torch.cat([prefix, words], dim=1), attention_mask=mask).logits
        logits = logits[:, -labels.shape[1] :][:, :-1]
        loss = torch.nn.CrossEntropyLoss(reduction="mean", label_smoothing=label_smoothing)(
            logits.reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1)
        )
        return logits, loss

    @torch.no_grad()
    def greedy(self, prefix: torch.Tensor, eos_token_id: int, max_length: int = 20) -> list[list[int]]:
        """Greedy decoding from the prefix alone: argmax per step, a sequence ends at EOS (then padded
        with EOS, the pad id), at most ``max_length`` new tokens."""
        wte = self.w("language_model.transformer.wte.weight")
        sequences = torch.zeros((len(prefix), 0), dtype=torch.long)
        done = torch.zeros(len(prefix), dtype=torch.bool)
        for _ in range(max_length):
            embeds = torch.cat([prefix, F.embedding(sequences, wte)], dim=1)
            next_ids = self.language_model(inputs_embeds=embeds).logits[:, -1].argmax(-1)
            next_ids = torch.where(done, torch.full_like(next_ids, eos_token_id), next_ids)
            sequences = torch.cat([sequences, next_ids[:, None]], dim=1)
            done |= next_ids == eos_token_id
            if done.all():
                break
        return sequences.tolist()
