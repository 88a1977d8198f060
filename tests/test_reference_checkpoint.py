"""Released SCA checkpoints: loading the reference's layout, numerical fidelity, preprocessing, trust.

A small random checkpoint in the reference's ``save_pretrained`` layout (``reference_layout``)
is loaded into our captioner and compared with an independent re-computation of the reference's
documented forward pass (``reference_oracle``), in fp32.
"""

import json
import os

import numpy as np
import pytest
import torch
from detectron2.data import transforms as T
from reference_layout import reference_config, reference_state_dict, write_reference_checkpoint
from reference_oracle import ReferenceOracle, sam_preprocess

from sca.checkpoints.presets import matching_presets, preset_configs
from sca.checkpoints.reference_sca import (
    load_reference_captioner,
    load_reference_weights,
    reference_architecture,
    reference_to_captioner_key,
)
from sca.checkpoints.weight_files import CheckpointError
from sca.config import MapperConfig
from sca.config_loading import load_config
from sca.data.mappers.augmentation import build_augmentation
from sca.data.prompts import PROMPT_TYPE_IDS
from sca.modeling.build import build_captioner, build_model
from sca.modeling.captioner import SCACaptioner

TOLERANCE = 1e-5
PAPER_PRESETS = ["sam_vit_b_gpt2", "sam_vit_b_gpt2_large", "sam_vit_l_gpt2_large", "sam_vit_h_gpt2_large"]


@pytest.fixture(scope="module")
def tiny_preset():
    return preset_configs()["tiny"]


@pytest.fixture(scope="module")
def reference(tiny_preset, tmp_path_factory):
    """(config.json dict, state dict, folder) of a random reference checkpoint of the tiny architecture."""
    config = reference_config(tiny_preset)
    state = reference_state_dict(config, seed=0)
    folder = write_reference_checkpoint(tmp_path_factory.mktemp("reference") / "sca-tiny", config, state)
    return config, state, folder


@pytest.fixture(scope="module")
def loaded(reference, tiny_preset):
    torch.manual_seed(1)  # the captioner's random init must not matter
    return load_reference_captioner(reference[2], tiny_preset).eval()


@pytest.fixture(scope="module")
def oracle(reference):
    return ReferenceOracle(reference[0], reference[1])


def assert_same_weights(captioner: SCACaptioner, state: dict) -> None:
    ours = captioner.state_dict()
    for key, value in state.items():
        assert torch.equal(ours[reference_to_captioner_key(key)], value), key


# ---- loading -----------------------------------------------------------------------------------
@pytest.mark.parametrize("file_format,shards", [("safetensors", 1), ("safetensors", 3), ("bin", 1), ("bin", 2)])
def test_model_weights_loads_every_file_layout(reference, tmp_path, file_format, shards):
    config, state, _ = reference
    folder = write_reference_checkpoint(tmp_path / "ckpt", config, state, file_format=file_format, shards=shards)
    captioner = build_captioner(load_config(["model=tiny", f"model.weights={folder}"]).model)
    assert_same_weights(captioner, state)
    # The tied copies that safetensors drops are filled from their twins.
    assert captioner.language_model.lm_head.weight is captioner.language_model.transformer.wte.weight
    prompt_copy = captioner.sam.prompt_encoder.shared_embedding.positional_embedding
    assert torch.equal(prompt_copy, state["shared_image_embedding.positional_embedding"])


def test_build_model_reads_a_reference_folder_and_its_tokenizer(reference, tmp_path):
    config, state, _ = reference
    folder = write_reference_checkpoint(tmp_path / "ckpt", config, state)
    from sca.data.caption_tokenizer import load_gpt2_tokenizer

    load_gpt2_tokenizer().save_pretrained(folder)  # the reference's trainer saves it next to the model
    model = build_model(load_config(["model=tiny", f"model.weights={folder}"]))
    assert_same_weights(model.captioner, state)
    assert model.tokenizer.tokenizer.name_or_path == str(folder)


def test_preset_mismatch_names_fields_and_the_matching_preset(reference):
    cfg = load_config(["model=tiny", "model.mixer_layers=3", "model.num_task_tokens=4", f"model.weights={reference[2]}"]).model
    with pytest.raises(CheckpointError) as error:
        build_captioner(cfg)
    message = str(error.value)
    assert "head.mixer_layers: preset 3, checkpoint 2" in message
    assert "head.num_task_tokens: preset 4, checkpoint 2" in message
    assert "use model=tiny" in message


@pytest.mark.parametrize("preset", PAPER_PRESETS)
def test_matching_preset_is_picked_from_the_config(preset):
    config = reference_config(preset_configs()[preset])
    assert matching_presets(reference_architecture(config)) == [preset]


def test_unplaced_and_missing_keys_are_listed(reference, loaded):
    _, state, _ = reference
    broken = {k: v for k, v in state.items() if k != "language_project.bias"}
    broken["mask_decoder.caption_head.weight"] = torch.zeros(3)
    broken["language_model.transformer.h.0.attn.bias"] = torch.ones(1, 1, 4, 4)  # GPT-2's causal-mask buffer: ignored
    with pytest.raises(CheckpointError) as error:
        load_reference_weights(loaded, broken, "ckpt")
    message = str(error.value)
    assert "1 tensor(s) without a place" in message and "mask_decoder.caption_head.weight" in message
    assert "1 parameter(s) missing" in message and "projector.bias" in message


def test_untied_copies_that_disagree_are_an_error(reference, loaded):
    _, state, _ = reference
    untied = dict(state)
    untied["language_model.lm_head.weight"] = state["language_model.lm_head.weight"] + 1
    with pytest.raises(CheckpointError, match="tied parameters with different values"):
        load_reference_weights(loaded, untied, "ckpt")


@pytest.mark.parametrize(
    "change,expected",
    [
        ({"architectures": ["ScaModel"]}, "ScaModel is not supported \\(v1"),
        ({"architectures": ["ScaMultitaskROIPoolModel"]}, "ROI-pool"),
        ({"architectures": ["ScaTimmMultitaskV2Model"], "model_type": "sca_timm"}, "timm"),
        ({"mask_caption_decoder_config": {"num_caption_heads": 3}}, "num_caption_heads=3"),
        ({"vl_projector_type": "mlp"}, "vl_projector_type='mlp'"),
    ],
)
def test_unsupported_variants_are_refused(reference, tmp_path, tiny_preset, change, expected):
    config = json.loads(json.dumps(reference[0]))
    for key, value in change.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) else value
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=expected):
        build_captioner(load_config(["model=tiny", f"model.weights={folder}"]).model)


def test_convert_tool_writes_our_layout(reference, tmp_path, load_tool, loaded):
    _, state, folder = reference
    destination = tmp_path / "converted"
    assert load_tool("convert_sca_checkpoint").main([str(folder), str(destination)]) == 0
    converted = build_captioner(load_config(["model=tiny", f"model.weights={destination}"]).model)
    assert_same_weights(converted, state)
    assert json.loads((destination / "caption_head_config.json").read_text())["task_types"] == ["recognition", "caption"]


# ---- numerical fidelity --------------------------------------------------------------------------
def regions_and_captions(num_images=2, per_image=3, size=64, vocab=50257, seed=0):
    generator = torch.Generator().manual_seed(seed)
    n = num_images * per_image
    xy = torch.rand(n, 2, generator=generator) * size * 0.6
    wh = 4 + torch.rand(n, 2, generator=generator) * size * 0.35
    lengths = torch.tensor([5, 3, 7, 2, 7, 4])[:n]
    input_ids = torch.randint(0, vocab - 1, (n, int(lengths.max())), generator=generator)
    attention_mask = (torch.arange(input_ids.shape[1])[None] < lengths[:, None]).long()
    input_ids[torch.arange(n), lengths - 1] = vocab - 1  # EOS ends every caption
    input_ids = input_ids.masked_fill(attention_mask == 0, vocab - 1)  # padded with EOS as the collator pads
    regions = {
        "image_index": torch.arange(num_images).repeat_interleave(per_image),
        "prompt_types": torch.full((n,), PROMPT_TYPE_IDS["box"]),
        "boxes": torch.cat([xy, xy + wh], dim=1),
        "points": torch.zeros(n, 1, 2),
        "point_labels": torch.ones(n, 1, dtype=torch.int64),
        "masks": torch.zeros(n, 0, 0, dtype=torch.bool),
    }
    return regions, input_ids, attention_mask


@pytest.fixture(scope="module")
def fidelity_inputs(loaded):
    torch.manual_seed(2)
    pixels = torch.randn(2, 3, loaded.image_size, loaded.image_size)
    regions, input_ids, attention_mask = regions_and_captions()
    task_ids = torch.tensor([0, 0, 0, 1, 1, 1])  # image 0: recognition, image 1: caption
    return pixels, regions, task_ids, input_ids, attention_mask


def oracle_decode(oracle, pixels, regions):
    outputs = {"masks": [], "iou_scores": [], "queries": []}
    with torch.no_grad():
        for image in range(len(pixels)):
            embedding = oracle.vision(pixels[image : image + 1]).last_hidden_state[0]
            decoded = oracle.decode(embedding, boxes=regions["boxes"][regions["image_index"] == image])
            for key in outputs:
                outputs[key].append(decoded[key])
    return {key: torch.cat(value) for key, value in outputs.items()}


def assert_forward_matches(captioner, oracle, pixels, regions, task_ids, input_ids, attention_mask):
    """Masks, IoU scores, LM logits and loss (label smoothing 0.1) within ``TOLERANCE``; returns
    (our output, the oracle's decoding, the oracle's logits)."""
    with torch.no_grad():
        ours = captioner(pixels, regions, task_ids, input_ids, attention_mask, label_smoothing=0.1)
    expected = oracle_decode(oracle, pixels, regions)
    logits, loss = oracle.logits_and_loss(oracle.prefix(expected["queries"], task_ids), input_ids, attention_mask, 0.1)
    valid = attention_mask.bool()
    size = 4 * oracle.embedding_size
    assert ours.pred_masks.shape == expected["masks"].shape == (len(task_ids), 3, size, size)
    assert (ours.pred_masks - expected["masks"]).abs().max() <= TOLERANCE
    assert (ours.iou_scores - expected["iou_scores"]).abs().max() <= TOLERANCE
    assert ours.logits.shape == logits[valid].shape  # ours: at the real caption tokens only
    assert (ours.logits - logits[valid]).abs().max() <= TOLERANCE
    assert abs(ours.loss_caption.item() - loss.item()) <= TOLERANCE
    return ours, expected, logits


def test_masks_iou_logits_and_loss_match_the_reference(loaded, oracle, fidelity_inputs):
    pixels, regions, task_ids, input_ids, attention_mask = fidelity_inputs
    ours, expected, logits = assert_forward_matches(loaded, oracle, *fidelity_inputs)
    valid = attention_mask.bool()
    # The comparison is sharp: the other task's prefix, or logits off by one position, are far off.
    swapped, _ = oracle.logits_and_loss(oracle.prefix(expected["queries"], 1 - task_ids), input_ids, attention_mask)
    assert (ours.logits - swapped[valid]).abs().max() > 1e-2
    shifted = torch.cat([logits[:, 1:], logits[:, :1]], dim=1)  # position i + 1 in place of i
    assert (ours.logits - shifted[valid]).abs().max() > 1e-2


def test_point_prompts_match_the_reference(loaded, oracle):
    """Point prompts (the reference's inference-time ablation and its demo app) go through SAM alike."""
    torch.manual_seed(3)
    pixels = torch.randn(1, 3, loaded.image_size, loaded.image_size)
    points = torch.rand(3, 2, 2) * loaded.image_size
    labels = torch.tensor([[1, 0], [1, 1], [0, 1]])
    regions = {
        "image_index": torch.zeros(3, dtype=torch.int64),
        "prompt_types": torch.full((3,), PROMPT_TYPE_IDS["point"]),
        "boxes": torch.zeros(3, 4),
        "points": points,
        "point_labels": labels,
        "masks": torch.zeros(3, 0, 0, dtype=torch.bool),
    }
    with torch.no_grad():
        masks, iou_scores, queries = loaded.encode_regions(loaded.region_decoder.encode_images(pixels), regions)
        expected = oracle.decode(oracle.vision(pixels).last_hidden_state[0], points=points, labels=labels)
    assert (masks - expected["masks"]).abs().max() <= TOLERANCE
    assert (iou_scores - expected["iou_scores"]).abs().max() <= TOLERANCE
    assert (queries - expected["queries"]).abs().max() <= TOLERANCE


def test_greedy_captions_match_the_reference(loaded, oracle, fidelity_inputs):
    pixels, regions, task_ids, _, _ = fidelity_inputs
    expected = oracle_decode(oracle, pixels, regions)
    prefix = oracle.prefix(expected["queries"], task_ids)
    # An EOS that region 0 produces after 3 tokens, so that both EOS and the length limit are exercised.
    eos = oracle.greedy(prefix, eos_token_id=-1, max_length=4)[0][3]
    reference_ids = oracle.greedy(prefix, eos_token_id=eos, max_length=20)
    ours = loaded.generate(pixels, regions, task_ids, eos_token_id=eos, pad_token_id=eos, max_new_tokens=20, region_chunk_size=4)

    def until_eos(ids):
        return ids[: ids.index(eos) + 1] if eos in ids else ids

    assert [until_eos(ids) for ids in ours.token_ids] == [until_eos(ids) for ids in reference_ids]
    lengths = [len(until_eos(ids)) for ids in reference_ids]
    assert lengths[0] <= 4 and 20 in lengths
    best = expected["iou_scores"].argmax(dim=1)  # the reported mask: the candidate with the highest IoU
    assert (ours.pred_masks - expected["masks"][torch.arange(6), best]).abs().max() <= TOLERANCE
    assert (ours.iou_scores - expected["iou_scores"].max(dim=1).values).abs().max() <= TOLERANCE


@pytest.mark.slow
def test_paper_sized_caption_head_matches_the_reference(tmp_path):
    """The paper's decoder side (1024 px input, 64x64 grid, 256-wide SAM decoder, 12 mixer layers,
    8 caption tokens, 6 task tokens, a 1280-wide GPT-2) with a small ViT and 2 LM layers."""
    cfg = preset_configs()["sam_vit_h_gpt2_large"]
    small_vit = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "mlp_dim": 256}
    cfg.sam_config = {"vision_config": {**small_vit, "global_attn_indexes": [1], "window_size": 14}}
    cfg.lm_config = {**cfg.lm_config, "n_layer": 2}
    config = reference_config(cfg)
    state = reference_state_dict(config, seed=3)
    captioner = load_reference_captioner(write_reference_checkpoint(tmp_path / "ckpt", config, state)).eval()
    oracle = ReferenceOracle(config, state)
    head = captioner.head_config
    assert (head.mixer_layers, head.num_caption_tokens, head.num_task_tokens) == (12, 8, 6)
    torch.manual_seed(2)
    pixels = torch.randn(2, 3, 1024, 1024)
    regions, input_ids, attention_mask = regions_and_captions(size=1024)
    task_ids = torch.tensor([0, 0, 0, 1, 1, 1])
    _, expected, _ = assert_forward_matches(captioner, oracle, pixels, regions, task_ids, input_ids, attention_mask)
    eos = 50256
    reference_ids = oracle.greedy(oracle.prefix(expected["queries"], task_ids), eos_token_id=eos, max_length=20)
    ours = captioner.generate(pixels, regions, task_ids, eos_token_id=eos, pad_token_id=eos, max_new_tokens=20)
    assert [ids[:20] for ids in ours.token_ids] == reference_ids


def test_paper_presets_default_to_the_reference_recipe():
    for name in PAPER_PRESETS:
        cfg = preset_configs()[name]
        assert cfg.label_smoothing == 0.1 and cfg.mask_loss_weight == 0.0, name
        assert (cfg.train_sam, cfg.train_mixer, cfg.train_language_model) == (False, True, False), name
        assert cfg.task_types == ["recognition", "caption"] and cfg.multimask_output, name
        assert cfg.max_caption_tokens == 19, name  # model_max_length 20 minus the virtual BOS
        assert (cfg.generation.num_beams, cfg.generation.max_new_tokens) == (1, 20), name


# ---- preprocessing parity ------------------------------------------------------------------------
def test_inference_preprocessing_equals_sam_processor(loaded):
    """An odd-sized image (1365 x 2048: the short side scales to 682.5, which SAM rounds up)."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (1365, 2048, 3), dtype=np.uint8)
    boxes = np.array([[10.0, 20.0, 1500.0, 1300.0], [0.0, 0.0, 2048.0, 1365.0], [333.3, 101.7, 334.9, 900.1]])
    expected_pixels, expected_boxes, (new_h, new_w) = sam_preprocess(image, boxes, longest_edge=1024)
    assert (new_h, new_w) == (683, 1024)

    augmentations = T.AugmentationList(build_augmentation(MapperConfig(image_size=1024, mask_size=256), is_train=False))
    aug_input = T.AugInput(image)
    transforms = augmentations(aug_input)
    valid_box = torch.as_tensor(transforms.apply_box(np.array([[0, 0, 2048, 1365]], dtype=np.float32)))
    pixels = loaded.normalize(torch.as_tensor(aug_input.image.transpose(2, 0, 1).copy())[None], valid_box)[0]
    assert pixels.shape == expected_pixels.shape == (3, 1024, 1024)
    assert (pixels - expected_pixels).abs().max() <= TOLERANCE
    assert np.abs(transforms.apply_box(boxes.astype(np.float32)) - expected_boxes).max() <= 1e-3
    points = boxes[:, :2].astype(np.float32)
    assert np.abs(transforms.apply_coords(points.copy()) - expected_boxes[:, :2]).max() <= 1e-3


# ---- trust --------------------------------------------------------------------------------------
class _RunsCode:
    """Unpickling this would call ``os.makedirs(path)``."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.makedirs, (self.path,)


def test_pickle_with_code_is_refused_without_running_it(reference, tmp_path, tiny_preset):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(reference[0]))
    marker = tmp_path / "code_ran"
    torch.save({"task_tokens.weight": torch.zeros(2), "payload": _RunsCode(str(marker))}, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="pytorch_model.bin: refused"):
        load_reference_captioner(folder, tiny_preset)
    assert not marker.exists()


@pytest.mark.parametrize("file_format", ["safetensors", "bin"])
def test_truncated_weight_file_is_named(reference, tmp_path, tiny_preset, file_format):
    config, state, _ = reference
    folder = write_reference_checkpoint(tmp_path / "ckpt", config, state, file_format=file_format, shards=2)
    shard = sorted(folder.glob(f"*-00002-of-00002.{'safetensors' if file_format == 'safetensors' else 'bin'}"))[0]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=f"{shard.name}: unreadable"):
        load_reference_captioner(folder, tiny_preset)


def test_missing_shard_is_named(reference, tmp_path, tiny_preset):
    config, state, _ = reference
    folder = write_reference_checkpoint(tmp_path / "ckpt", config, state, shards=2)
    (folder / "model-00001-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model-00001-of-00002.safetensors"):
        load_reference_captioner(folder, tiny_preset)


# ---- end to end --------------------------------------------------------------------------------
def test_predictor_on_a_reference_checkpoint_matches_the_reference(reference, oracle):
    """Image in, captions / IoU scores / masks out, as the reference computes them (its processor,
    forward, greedy decoding to EOS, ``post_process_masks``), on an odd-sized image."""
    from sca.data.caption_tokenizer import load_gpt2_tokenizer
    from sca.predictor import RegionCaptionPredictor

    predictor = RegionCaptionPredictor.from_checkpoint(str(reference[2]), device="cpu")
    assert predictor.cfg.model.name == "tiny" and predictor.cfg.data.test_task_type == "caption"
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (37, 50, 3), dtype=np.uint8)
    boxes = np.array([[3.0, 4.0, 30.0, 33.0], [20.5, 1.0, 49.0, 20.0], [0.0, 0.0, 50.0, 37.0]])
    regions = predictor(image, boxes=boxes)

    size = predictor.captioner.image_size
    pixels, model_boxes, (new_h, new_w) = sam_preprocess(image, boxes, longest_edge=size)
    with torch.no_grad():
        embedding = oracle.vision(pixels[None]).last_hidden_state[0]
        decoded = oracle.decode(embedding, boxes=torch.as_tensor(model_boxes, dtype=torch.float32))
    prefix = oracle.prefix(decoded["queries"], torch.ones(len(boxes), dtype=torch.long))  # caption task
    eos = load_gpt2_tokenizer().eos_token_id
    ids = oracle.greedy(prefix, eos_token_id=eos, max_length=predictor.cfg.model.generation.max_new_tokens)
    captions = [load_gpt2_tokenizer().decode(x[: x.index(eos)] if eos in x else x, skip_special_tokens=True).strip() for x in ids]
    best = decoded["iou_scores"].argmax(dim=1)
    low_res = decoded["masks"][torch.arange(len(boxes)), best][:, None]
    padded = torch.nn.functional.interpolate(low_res, (size, size), mode="bilinear", align_corners=False)
    cropped = padded[..., :new_h, :new_w]
    masks = torch.nn.functional.interpolate(cropped, image.shape[:2], mode="bilinear", align_corners=False)[:, 0] > 0

    assert [r.caption for r in regions] == captions
    assert np.abs(np.array([r.iou_score for r in regions]) - decoded["iou_scores"].max(dim=1).values.numpy()).max() <= TOLERANCE
    assert all(np.array_equal(r.mask, m.numpy()) for r, m in zip(regions, masks))
