"""``build_model(cfg)``: the captioner from a ``ModelConfig`` (random, pretrained parts, or saved)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from detectron2.checkpoint import DetectionCheckpointer
from transformers import AutoConfig, AutoModelForCausalLM, SamConfig, SamModel

from sca.checkpoints.reference_sca import is_reference_checkpoint, load_reference_captioner
from sca.config import ModelConfig
from sca.data.caption_tokenizer import CaptionTokenizer, fitted_tokenizer_of
from sca.modeling.captioner import HEAD_CONFIG_FILE, CaptionHeadConfig, SCACaptioner
from sca.modeling.embedding_cache import ImageEmbeddingCache
from sca.modeling.meta_arch import RegionCaptioner

__all__ = ["build_captioner", "build_tokenizer", "build_model", "is_pretrained_dir", "load_checkpoint"]

logger = logging.getLogger(__name__)


def is_pretrained_dir(path: str) -> bool:
    """True for a directory that ``build_model`` reads itself: one written by
    ``SCACaptioner.save_pretrained``, or a reference SCA checkpoint (see :mod:`sca.checkpoints`)."""
    return bool(path) and ((Path(path) / HEAD_CONFIG_FILE).is_file() or is_reference_checkpoint(path))


def build_captioner(cfg: ModelConfig, tokenizer: CaptionTokenizer | None = None) -> SCACaptioner:
    """SAM and the LM come from ``from_pretrained`` when named, else from their configs (random);
    ``cfg.weights`` naming a saved-model directory (ours or the reference's) replaces both. The
    image-embedding cache comes from ``cfg.embedding_cache``. An LM built from its config gets
    ``tokenizer``'s size and EOS (as its BOS / EOS ids) unless ``lm_config`` sets them."""
    if is_reference_checkpoint(cfg.weights):
        captioner = load_reference_captioner(cfg.weights, cfg)
    elif is_pretrained_dir(cfg.weights):
        captioner = SCACaptioner.from_pretrained(cfg.weights)
    else:
        sam = SamModel.from_pretrained(cfg.sam) if cfg.sam else SamModel(SamConfig(**cfg.sam_config))
        if cfg.language_model:
            language_model = AutoModelForCausalLM.from_pretrained(cfg.language_model)
        else:
            lm_config = dict(cfg.lm_config)
            if tokenizer is not None:
                for key, value in (("vocab_size", len(tokenizer)), ("bos_token_id", tokenizer.eos_token_id), ("eos_token_id", tokenizer.eos_token_id)):
                    lm_config.setdefault(key, value)
            language_model = AutoModelForCausalLM.from_config(AutoConfig.for_model(lm_config.pop("model_type", "gpt2"), **lm_config))
        captioner = SCACaptioner(sam, language_model, CaptionHeadConfig.from_model_config(cfg))
    captioner.set_trainable(sam=cfg.train_sam, caption_head=cfg.train_mixer, language_model=cfg.train_language_model)
    captioner.mixer.checkpointing = cfg.mixer_checkpointing
    captioner.region_decoder.embedding_cache = ImageEmbeddingCache.from_config(cfg.embedding_cache)
    return captioner


def build_tokenizer(cfg: ModelConfig) -> CaptionTokenizer:
    """The configured tokenizer, else the one fitted by the run that saved ``cfg.weights``, else the
    saved/pretrained LM's own, else the bundled GPT-2 BPE."""
    name = cfg.tokenizer or fitted_tokenizer_of(cfg.weights)
    if not name and is_pretrained_dir(cfg.weights) and (Path(cfg.weights) / "tokenizer").is_dir():
        name = str(Path(cfg.weights) / "tokenizer")
    if not name and is_reference_checkpoint(cfg.weights) and (Path(cfg.weights) / "tokenizer_config.json").is_file():
        name = cfg.weights  # the reference's trainer saves the tokenizer next to the model
    if not name and cfg.language_model:
        name = cfg.language_model
    return CaptionTokenizer.from_config(name, cfg.max_caption_tokens)


def build_model(cfg, loss_weights: dict[str, float] | None = None) -> RegionCaptioner:
    """The detectron2-facing model for a full ``SCAConfig`` (uses ``cfg.model`` and the sources' loss weights)."""
    if loss_weights is None:
        loss_weights = {name: source.loss_weight for name, source in cfg.data.sources.items()}
    tokenizer = build_tokenizer(cfg.model)
    captioner = build_captioner(cfg.model, tokenizer)
    trainable = sum(p.numel() for p in captioner.parameters() if p.requires_grad)
    total = sum(p.numel() for p in captioner.parameters())
    logger.info("captioner: %.2fM parameters, %.2fM trainable", total / 1e6, trainable / 1e6)
    return RegionCaptioner(
        captioner,
        tokenizer,
        loss_weights=loss_weights,
        label_smoothing=cfg.model.label_smoothing,
        mask_loss_weight=cfg.model.mask_loss_weight,
        iou_loss_weight=cfg.model.iou_loss_weight,
        click_loss_weight=cfg.model.click_loss_weight,
        generation=cfg.model.generation,
    )


def load_checkpoint(model: RegionCaptioner, weights: str) -> None:
    """Load a detectron2 checkpoint (``.pth``) into ``model``. Nothing to do for an empty path or a
    ``save_pretrained`` directory (``build_model`` already read it)."""
    if not weights or is_pretrained_dir(weights):
        return
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"model.weights: no checkpoint file or save_pretrained directory at '{weights}'")
    DetectionCheckpointer(model).load(weights)
