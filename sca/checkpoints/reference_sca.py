"""The reference implementation's saved models as an :class:`~sca.modeling.captioner.SCACaptioner`.

The reference (github.com/xk-huang/segment-caption-anything, model ``ScaMultitaskV2Model``) saves
with transformers' ``save_pretrained``: a ``config.json`` (``model_type: "sca"``, nested
``vision_config``, ``prompt_encoder_config``, ``mask_caption_decoder_config`` with
``additional_num_hidden_layers`` / ``num_caption_tokens`` / ``num_caption_heads``, ``text_config``,
``num_task_tokens``) and the weights (see :mod:`sca.checkpoints.weight_files`). Its parameter
names map onto ours as follows:

==========================================  ==============================================
reference                                   this project
==========================================  ==============================================
``shared_image_embedding.*``                ``region_decoder.sam.shared_image_embedding.*``
``vision_encoder.*``, ``prompt_encoder.*``  ``region_decoder.sam.<same>``
``mask_decoder.additional_transformer.*``   ``mixer.transformer.*``
``mask_decoder.caption_tokens.weight``      ``mixer.caption_tokens.weight``
``mask_decoder.*`` (the rest: SAM's)        ``region_decoder.sam.mask_decoder.*``
``language_project.*``                      ``projector.*``
``task_tokens.weight``, ``language_model.*``  the same names
==========================================  ==============================================

Every tensor must find its place and every parameter must be given (tied parameters, such as
GPT-2's ``lm_head`` and SAM's two copies of the positional-encoding matrix, count as given when
one of them is); otherwise loading fails and lists the keys.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, SamConfig, SamModel
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from sca.checkpoints.presets import CaptionerArchitecture, matching_presets, preset_differences
from sca.checkpoints.weight_files import CheckpointError, read_weights
from sca.config import ModelConfig
from sca.modeling.captioner import CaptionHeadConfig, SCACaptioner

__all__ = [
    "REFERENCE_TASK_TYPES",
    "is_reference_checkpoint",
    "read_reference_config",
    "reference_architecture",
    "reference_to_captioner_key",
    "load_reference_captioner",
    "load_reference_weights",
]

logger = logging.getLogger(__name__)

SUPPORTED_ARCHITECTURE = "ScaMultitaskV2Model"
# The reference's other model classes, and why their weights do not fit this captioner.
UNSUPPORTED_ARCHITECTURES = {
    "ScaModel": "v1: one caption head per SAM mask token and no task tokens",
    "ScaMultitaskModel": "v1 multitask: its mixer reads SAM's decoder input tokens (the bug v2 fixed), not its outputs",
    "ScaMultitaskSplitMixerModel": "split-mixer ablation: its mixer does not reuse SAM's fused tokens",
    "ScaDirectDecodingModel": "direct-decoding ablation: SAM's mask tokens are the caption queries (no mixer)",
    "ScaDirectDecodingV2Model": "direct-decoding ablation: SAM's mask tokens are the caption queries (no mixer)",
    "ScaMultitaskROIPoolModel": "ROI-pool ablation: ROI-aligned image features instead of the two-way mixer",
    "ScaTimmMultitaskV2Model": "timm-encoder ablation: a timm image encoder and neck instead of SAM's ViT",
}
# ``ScaMultitaskV2Model.TASK_TYPE_MAPPING``: recognition -> 0, caption -> 1.
REFERENCE_TASK_TYPES = ["recognition", "caption"]
# Fields the reference adds to SAM's mask-decoder config, with its defaults (``ScaMaskCaptionDecoderConfig``).
CAPTION_DECODER_EXTRAS = {"additional_num_hidden_layers": 2, "num_caption_tokens": 1, "num_caption_heads": 1}

# (reference prefix, our prefix), first match wins.
KEY_PREFIXES = (
    ("mask_decoder.additional_transformer.", "mixer.transformer."),
    ("mask_decoder.caption_tokens.", "mixer.caption_tokens."),
    ("mask_decoder.", "region_decoder.sam.mask_decoder."),
    ("shared_image_embedding.", "region_decoder.sam.shared_image_embedding."),
    ("vision_encoder.", "region_decoder.sam.vision_encoder."),
    ("prompt_encoder.", "region_decoder.sam.prompt_encoder."),
    ("language_project.", "projector."),
    ("task_tokens.", "task_tokens."),
    ("language_model.", "language_model."),
)


def is_reference_checkpoint(path: str | Path) -> bool:
    """True for a folder whose ``config.json`` is the reference's (``model_type`` ``"sca"``, or
    ``"sca_timm"`` for its timm variant, which :func:`read_reference_config` then refuses)."""
    config = Path(path) / "config.json" if path else None
    if config is None or not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("model_type") in ("sca", "sca_timm")
    except (OSError, ValueError, AttributeError):
        return False


def read_reference_config(folder: str | Path) -> dict:
    """``config.json``, checked to describe a ``ScaMultitaskV2Model`` this project can load."""
    path = Path(folder) / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path}: unreadable ({type(error).__name__}: {error})") from error
    architectures = config.get("architectures") or [SUPPORTED_ARCHITECTURE]
    for name in architectures:
        if name in UNSUPPORTED_ARCHITECTURES:
            raise CheckpointError(
                f"{path}: {name} is not supported ({UNSUPPORTED_ARCHITECTURES[name]}); only {SUPPORTED_ARCHITECTURE} "
                "checkpoints load into this captioner"
            )
        if name != SUPPORTED_ARCHITECTURE:
            raise CheckpointError(f"{path}: unknown architecture {name!r}; only {SUPPORTED_ARCHITECTURE} is supported")
    decoder = config.get("mask_caption_decoder_config") or {}
    text = config.get("text_config") or {}
    problems = []
    if decoder.get("num_caption_heads", 1) != 1:
        problems.append(f"num_caption_heads={decoder['num_caption_heads']} (only 1 caption head is supported)")
    if config.get("vl_projector_type", "linear") not in (None, "linear"):
        problems.append(f"vl_projector_type={config['vl_projector_type']!r} (only 'linear')")
    if config.get("vl_projector_norm_type", "none") not in (None, "none"):
        problems.append(f"vl_projector_norm_type={config['vl_projector_norm_type']!r} (only 'none')")
    if text.get("model_type", "gpt2") not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        problems.append(f"text_config.model_type={text.get('model_type')!r} has no causal-LM class in transformers")
    if problems:
        raise CheckpointError(f"{path}: unsupported settings: " + "; ".join(problems))
    return config


def reference_architecture(config: dict, multimask_output: bool = True) -> CaptionerArchitecture:
    """The architecture a reference ``config.json`` describes (``additional_num_hidden_layers`` ->
    mixer layers; task types in the reference's order)."""
    decoder = dict(config.get("mask_caption_decoder_config") or {})
    extras = {name: decoder.pop(name, default) for name, default in CAPTION_DECODER_EXTRAS.items()}
    sam = SamConfig(
        vision_config=config.get("vision_config") or {},
        prompt_encoder_config=config.get("prompt_encoder_config") or {},
        mask_decoder_config=decoder,
    )
    text = dict(config.get("text_config") or {})
    language_model = AutoConfig.for_model(text.pop("model_type", "gpt2"), **text)
    head = CaptionHeadConfig(
        num_caption_tokens=extras["num_caption_tokens"],
        mixer_layers=extras["additional_num_hidden_layers"],
        num_task_tokens=config.get("num_task_tokens", 6),
        task_types=list(REFERENCE_TASK_TYPES),
        multimask_output=multimask_output,
    )
    return CaptionerArchitecture(sam, language_model, head)


def reference_to_captioner_key(key: str) -> str | None:
    """Our parameter name for a reference one, ``None`` when it has no place."""
    for reference_prefix, our_prefix in KEY_PREFIXES:
        if key.startswith(reference_prefix):
            return our_prefix + key[len(reference_prefix) :]
    return None


def load_reference_captioner(folder: str | Path, cfg: ModelConfig | None = None) -> SCACaptioner:
    """Build the captioner a reference checkpoint describes and load its weights strictly.

    Args:
        folder: the reference's ``save_pretrained`` folder.
        cfg: the run's model preset; when given it must describe the checkpoint's architecture.

    Raises:
        CheckpointError: unsupported variant, preset mismatch, unreadable or refused weight file,
            tensors without a place, parameters the checkpoint lacks, shape mismatches.
    """
    config = read_reference_config(folder)
    architecture = reference_architecture(config, cfg.multimask_output if cfg is not None else True)
    if cfg is not None:
        differences = preset_differences(cfg, architecture)
        if differences:
            matches = matching_presets(architecture)
            hint = f"use model={matches[0]}" if matches else "no preset in conf/model/ matches; add one"
            raise CheckpointError(
                f"model.weights={folder}: the checkpoint ({architecture.summary()}) does not fit preset "
                f"model={cfg.name}: " + "; ".join(differences) + f". {hint}"
            )
    captioner = SCACaptioner(
        SamModel(architecture.sam), AutoModelForCausalLM.from_config(architecture.language_model), architecture.head
    )
    load_reference_weights(captioner, read_weights(folder), str(folder))
    return captioner


def load_reference_weights(captioner: SCACaptioner, reference_state: dict[str, torch.Tensor], origin: str) -> None:
    """Place every tensor of ``reference_state`` in ``captioner``; list what cannot be placed or is missing."""
    ours = captioner.state_dict()
    ignorable = [
        re.compile(f"^{re.escape(prefix)}.*{pattern}")
        for prefix, model in (("language_model.", captioner.language_model), ("region_decoder.sam.", captioner.sam))
        for pattern in (getattr(type(model), "_keys_to_ignore_on_load_unexpected", None) or [])
    ]
    state, unplaced, ignored = {}, [], []
    for key, value in reference_state.items():
        target = reference_to_captioner_key(key)
        if target in ours:
            state[target] = value
        elif target is not None and any(p.search(target) for p in ignorable):
            ignored.append(key)
        else:
            unplaced.append(key)
    aliases = _tied_groups(ours)
    missing, conflicting = [], set()
    for key in ours:
        given = [name for name in aliases[key] if name in state]
        if not given:
            missing.append(key)
        elif key not in state:
            state[key] = state[given[0]]
        else:
            conflicting.update(" != ".join(sorted((key, k))) for k in given[1:] if not torch.equal(state[key], state[k]))
    mismatched = [
        f"{key}: checkpoint {tuple(value.shape)}, model {tuple(ours[key].shape)}"
        for key, value in state.items()
        if value.shape != ours[key].shape
    ]
    problems = []
    if unplaced:
        problems.append(f"{len(unplaced)} tensor(s) without a place in the captioner: {sorted(unplaced)}")
    if missing:
        problems.append(f"{len(missing)} parameter(s) missing from the checkpoint (would stay random): {sorted(missing)}")
    if conflicting:
        problems.append(f"tied parameters with different values in the checkpoint: {sorted(conflicting)}")
    if mismatched:
        problems.append(f"shape mismatches: {mismatched}")
    if problems:
        raise CheckpointError(f"{origin}: cannot load into the captioner:\n  " + "\n  ".join(problems))
    if ignored:
        logger.info("%s: ignored %d non-parameter buffer(s) the model rebuilds, e.g. %s", origin, len(ignored), ignored[:3])
    captioner.load_state_dict(state, strict=True)
    logger.info("%s: loaded %d tensors into the captioner", origin, len(reference_state) - len(ignored))


def _tied_groups(state: dict[str, torch.Tensor]) -> dict[str, list[str]]:
    """For every key, the keys that share its storage (itself first)."""
    by_storage: dict[tuple, list[str]] = {}
    for key, value in state.items():
        by_storage.setdefault((value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape)), []).append(key)
    return {key: [key] + [k for k in group if k != key] for group in by_storage.values() for key in group}
