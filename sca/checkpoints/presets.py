"""A captioner's architecture, compared with the model presets of ``conf/model/``.

A saved model fixes the architecture (SAM size, language model, mixer layers, caption and task
tokens); the preset a run names must describe the same one. :func:`preset_differences` lists
what differs, :func:`matching_presets` finds the presets that fit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf
from transformers import AutoConfig, PretrainedConfig, SamConfig

from sca.config import ModelConfig
from sca.config_loading import CONFIG_DIR
from sca.modeling.captioner import HEAD_CONFIG_FILE, CaptionHeadConfig

__all__ = [
    "CaptionerArchitecture",
    "preset_architecture",
    "saved_architecture",
    "preset_configs",
    "preset_differences",
    "matching_presets",
]

# The fields that change the shape of the network or the meaning of its weights.
SAM_FIELDS = {
    "vision_config": (
        "image_size", "patch_size", "num_channels", "hidden_size", "num_hidden_layers", "num_attention_heads",
        "mlp_dim", "window_size", "global_attn_indexes", "output_channels", "use_abs_pos", "use_rel_pos",
        "qkv_bias", "num_pos_feats", "hidden_act",
    ),
    "prompt_encoder_config": (
        "image_size", "patch_size", "hidden_size", "image_embedding_size", "mask_input_channels", "num_point_embeddings",
    ),
    "mask_decoder_config": (
        "hidden_size", "mlp_dim", "num_hidden_layers", "num_attention_heads", "attention_downsample_rate",
        "num_multimask_outputs", "iou_head_depth", "iou_head_hidden_dim", "hidden_act",
    ),
}  # fmt: skip
LM_FIELDS = (
    "model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "intermediate_size", "max_position_embeddings", "tie_word_embeddings",
)  # fmt: skip
HEAD_FIELDS = ("num_caption_tokens", "mixer_layers", "num_task_tokens", "task_types")


@dataclass
class CaptionerArchitecture:
    """What a set of weights fixes: SAM's and the LM's configs and the caption head's sizes."""

    sam: SamConfig
    language_model: PretrainedConfig
    head: CaptionHeadConfig

    def fields(self) -> dict[str, object]:
        """Flat ``{name: value}`` of the architecture fields (``sam.vision_config.hidden_size``, ...)."""
        values = {}
        for part, names in SAM_FIELDS.items():
            sub = getattr(self.sam, part)
            values.update({f"sam.{part}.{name}": _plain(getattr(sub, name, None)) for name in names})
        values.update({f"language_model.{name}": _plain(getattr(self.language_model, name, None)) for name in LM_FIELDS})
        values.update({f"head.{name}": _plain(getattr(self.head, name)) for name in HEAD_FIELDS})
        return values

    def summary(self) -> str:
        vision, lm, head = self.sam.vision_config, self.language_model, self.head
        return (
            f"SAM ViT width {vision.hidden_size} x {vision.num_hidden_layers} layers at {vision.image_size} px, "
            f"{lm.model_type} width {lm.hidden_size} x {lm.num_hidden_layers} layers, mixer {head.mixer_layers} layers, "
            f"{head.num_caption_tokens} caption tokens, {head.num_task_tokens} task tokens per task {head.task_types}"
        )


def _plain(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def preset_architecture(cfg: ModelConfig) -> CaptionerArchitecture:
    """The architecture a preset builds (from its ``sam_config`` / ``lm_config``; nothing is downloaded)."""
    lm_config = dict(cfg.lm_config)
    language_model = AutoConfig.for_model(lm_config.pop("model_type", "gpt2"), **lm_config)
    return CaptionerArchitecture(SamConfig(**cfg.sam_config), language_model, CaptionHeadConfig.from_model_config(cfg))


def saved_architecture(directory: str | Path) -> CaptionerArchitecture:
    """The architecture of a directory written by ``SCACaptioner.save_pretrained``."""
    directory = Path(directory)
    head = CaptionHeadConfig(**json.loads((directory / HEAD_CONFIG_FILE).read_text()))
    return CaptionerArchitecture(
        SamConfig.from_pretrained(directory / "sam"), AutoConfig.from_pretrained(directory / "language_model"), head
    )


def preset_configs() -> dict[str, ModelConfig]:
    """Every ``conf/model/<name>.yaml``, typed by the schema, by name."""
    presets = {}
    for path in sorted((CONFIG_DIR / "model").glob("*.yaml")):
        root = OmegaConf.merge({"model": OmegaConf.structured(ModelConfig)}, {"model": OmegaConf.load(path)})
        presets[path.stem] = OmegaConf.to_object(root.model)
    return presets


def preset_differences(cfg: ModelConfig, architecture: CaptionerArchitecture) -> list[str]:
    """``"<field>: preset <a>, checkpoint <b>"`` for every architecture field where ``cfg`` differs."""
    preset = preset_architecture(cfg).fields()
    saved = architecture.fields()
    differences = [f"{name}: preset {preset[name]!r}, checkpoint {saved[name]!r}" for name in saved if preset[name] != saved[name]]
    prompt = architecture.sam.prompt_encoder_config
    for name, expected in (("image_size", prompt.image_size), ("mask_size", 4 * prompt.image_embedding_size)):
        if getattr(cfg, name) != expected:
            differences.append(f"model.{name}: preset {getattr(cfg, name)!r}, checkpoint {expected!r}")
    return differences


def matching_presets(architecture: CaptionerArchitecture) -> list[str]:
    """Names of the presets in ``conf/model/`` that describe ``architecture`` exactly."""
    return [name for name, cfg in preset_configs().items() if not preset_differences(cfg, architecture)]
