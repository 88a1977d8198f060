"""Test tooling: a random checkpoint in the reference implementation's saved-model layout.

The folder looks like what the reference's ``ScaMultitaskV2Model.save_pretrained`` (transformers
4.36) writes: ``config.json`` with ``model_type: "sca"`` and nested sub-configs carrying 4.36's
generic config keys, and the weights under the reference's parameter names, as
``model.safetensors`` (tied duplicates dropped, as ``save_pretrained`` does) or
``pytorch_model.bin`` (every name), optionally sharded with an ``*.index.json``.
The tensors are built here from transformers' SAM / GPT-2 blocks and named by hand, without this
project's captioner, and drawn at random so that every part changes the outputs.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForCausalLM, SamConfig, SamModel
from transformers.models.sam.modeling_sam import SamTwoWayTransformer

# Keys (and 4.36 defaults) that ``PretrainedConfig.to_dict`` wrote into every (sub-)config.
LEGACY_CONFIG_KEYS = {
    "_name_or_path": "", "add_cross_attention": False, "bad_words_ids": None, "begin_suppress_tokens": None,
    "chunk_size_feed_forward": 0, "cross_attention_hidden_size": None, "decoder_start_token_id": None,
    "diversity_penalty": 0.0, "do_sample": False, "early_stopping": False, "encoder_no_repeat_ngram_size": 0,
    "exponential_decay_length_penalty": None, "finetuning_task": None, "forced_bos_token_id": None,
    "forced_eos_token_id": None, "id2label": {"0": "LABEL_0", "1": "LABEL_1"}, "is_decoder": False,
    "label2id": {"LABEL_0": 0, "LABEL_1": 1}, "length_penalty": 1.0, "max_length": 20, "min_length": 0,
    "no_repeat_ngram_size": 0, "num_beam_groups": 1, "num_beams": 1, "num_return_sequences": 1,
    "output_attentions": False, "output_hidden_states": False, "output_scores": False, "prefix": None,
    "problem_type": None, "pruned_heads": {}, "remove_invalid_values": False, "repetition_penalty": 1.0,
    "return_dict": True, "return_dict_in_generate": False, "sep_token_id": None, "suppress_tokens": None,
    "task_specific_params": None, "temperature": 1.0, "tf_legacy_loss": False, "tie_encoder_decoder": False,
    "tokenizer_class": None, "top_k": 50, "top_p": 1.0, "torch_dtype": None, "torchscript": False,
    "typical_p": 1.0, "use_bfloat16": False,
}  # fmt: skip


def _legacy(config_dict: dict) -> dict:
    return {**LEGACY_CONFIG_KEYS, **{k: v for k, v in config_dict.items() if not k.startswith("_") or k == "_name_or_path"}}


def reference_config(model_cfg, num_caption_heads: int = 1) -> dict:
    """The ``config.json`` the reference writes for the architecture of preset ``model_cfg``."""
    sam = SamConfig(**model_cfg.sam_config)
    lm_config = dict(model_cfg.lm_config)
    text = AutoConfig.for_model(lm_config.pop("model_type", "gpt2"), **lm_config)
    decoder = {
        **_legacy(sam.mask_decoder_config.to_dict()),
        "additional_num_hidden_layers": model_cfg.mixer_layers,
        "num_caption_tokens": model_cfg.num_caption_tokens,
        "num_caption_heads": num_caption_heads,
    }
    return {
        **LEGACY_CONFIG_KEYS,
        "architectures": ["ScaMultitaskV2Model"],
        "model_type": "sca",
        "is_composition": True,
        "vision_config": _legacy(sam.vision_config.to_dict()),
        "prompt_encoder_config": _legacy(sam.prompt_encoder_config.to_dict()),
        "mask_caption_decoder_config": decoder,
        "text_config": {**_legacy(text.to_dict()), "model_type": text.model_type},
        "num_task_tokens": model_cfg.num_task_tokens,
        "initializer_range": 0.02,
        "vl_projector_type": "linear",
        "vl_projector_norm_type": "none",
        "tie_word_embeddings": True,
        "is_encoder_decoder": False,
        "use_decoder_only_language_model": True,
        "torch_dtype": "float32",
        "transformers_version": "4.36.2",
    }


def reference_state_dict(config: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under the reference's names (tied names share one tensor, as in the model)."""
    decoder = {k: v for k, v in config["mask_caption_decoder_config"].items()}
    heads, tokens = decoder.pop("num_caption_heads"), decoder.pop("num_caption_tokens")
    layers = decoder.pop("additional_num_hidden_layers")
    sam_config = SamConfig(
        vision_config=config["vision_config"], prompt_encoder_config=config["prompt_encoder_config"], mask_decoder_config=decoder
    )
    text = dict(config["text_config"])
    lm_config = AutoConfig.for_model(text.pop("model_type"), **text)
    sam = SamModel(sam_config)
    mixer_config = copy.deepcopy(sam_config.mask_decoder_config)
    mixer_config.num_hidden_layers = layers
    mixer = SamTwoWayTransformer(mixer_config)
    language_model = AutoModelForCausalLM.from_config(lm_config)
    hidden, lm_width = sam_config.mask_decoder_config.hidden_size, lm_config.hidden_size
    extra = {
        "mask_decoder.caption_tokens.weight": torch.empty(heads * tokens, hidden),
        "language_project.weight": torch.empty(lm_width, hidden),
        "language_project.bias": torch.empty(lm_width),
        "task_tokens.weight": torch.empty(2 * config["num_task_tokens"], lm_width),
    }
    generator = torch.Generator().manual_seed(seed)
    modules = {"": sam, "mask_decoder.additional_transformer.": mixer, "language_model.": language_model}
    with torch.no_grad():
        for prefix, module in modules.items():
            for name, tensor in module.named_parameters():
                _randomize(prefix + name, tensor, generator)
        for name, tensor in extra.items():
            _randomize(name, tensor, generator)
    state = {}
    for prefix, module in modules.items():
        state.update({prefix + k: v for k, v in module.state_dict().items()})
    state.update(extra)
    return state


def _randomize(name: str, tensor: torch.Tensor, generator: torch.Generator) -> None:
    noise = torch.randn(tensor.shape, generator=generator)
    if "norm" in name or ".ln_" in name:  # layer norms: weight ~ 1, bias ~ 0
        tensor.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * noise)
    elif tensor.dim() == 1:
        tensor.copy_(0.1 * noise)
    else:
        tensor.copy_(noise / math.sqrt(tensor[0].numel() if tensor.dim() > 2 else tensor.shape[-1]))


def write_reference_checkpoint(
    folder: Path, config: dict, state: dict[str, torch.Tensor], file_format: str = "safetensors", shards: int = 1
) -> Path:
    """Write ``config.json`` and the weights of ``state`` as the reference's ``save_pretrained`` would."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    if file_format == "safetensors":
        seen, unique = set(), {}
        for key, value in state.items():  # save_pretrained keeps the first name of tied tensors
            pointer = value.untyped_storage().data_ptr()
            if pointer not in seen:
                seen.add(pointer)
                unique[key] = value.contiguous().clone()
        state, stem, suffix = unique, "model", ".safetensors"
    else:
        stem, suffix = "pytorch_model", ".bin"
    keys = list(state)
    parts = [keys[i::shards] for i in range(shards)]
    names = [f"{stem}{suffix}"] if shards == 1 else [f"{stem}-{i + 1:05d}-of-{shards:05d}{suffix}" for i in range(shards)]
    for name, part in zip(names, parts):
        tensors = {key: state[key] for key in part}
        if suffix == ".safetensors":
            save_file(tensors, str(folder / name), metadata={"format": "pt"})
        else:
            torch.save(tensors, folder / name)
    if shards > 1:
        index = {
            "metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
            "weight_map": {key: name for name, part in zip(names, parts) for key in part},
        }
        (folder / f"{stem}{suffix}.index.json").write_text(json.dumps(index, indent=2))
    return folder
