"""The captioner: SAM outputs unchanged, the right parameters train, save/load round trips."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from transformers import SamModel

from sca.config_loading import load_config
from sca.data.prompts import PROMPT_TYPE_IDS
from sca.modeling.build import build_captioner, build_model
from sca.modeling.captioner import SCACaptioner

ROOT = Path(__file__).resolve().parent.parent


def tiny_model_config(**overrides):
    return load_config([f"model.{k}={v}" for k, v in overrides.items()])


def random_regions(num_images=2, per_image=3, size=64, mask_size=64, prompt_type="box", seed=0):
    generator = torch.Generator().manual_seed(seed)
    n = num_images * per_image
    xy = torch.rand(n, 2, generator=generator) * size * 0.6
    wh = 4 + torch.rand(n, 2, generator=generator) * size * 0.35
    return {
        "image_index": torch.arange(num_images).repeat_interleave(per_image),
        "prompt_types": torch.full((n,), PROMPT_TYPE_IDS[prompt_type]),
        "boxes": torch.cat([xy, xy + wh], dim=1),
        "points": (xy + wh / 2)[:, None],
        "point_labels": torch.ones(n, 1, dtype=torch.int64),
        "masks": torch.rand(n, mask_size, mask_size, generator=generator) > 0.5,
    }


@pytest.fixture(scope="module")
def tiny():
    """The tiny preset with SAM's own output rule: single mask for boxes and masks, 3 candidates for
    clicks (the preset itself gives clicks a single mask too)."""
    torch.manual_seed(0)
    return build_captioner(tiny_model_config(single_mask_prompt_types="[box,mask]").model).eval()


@pytest.mark.parametrize("prompt_type", ["box", "point", "mask"])
def test_masks_and_iou_equal_plain_sam(tiny, prompt_type):
    pixels = torch.randn(2, 3, 64, 64)
    regions = random_regions(prompt_type=prompt_type)
    with torch.no_grad():
        embeddings = tiny.region_decoder.encode_images(pixels)
        masks, iou, queries = tiny.encode_regions(embeddings, regions)
        # Plain SamModel with the same weights, per image with all its regions as a point batch.
        plain = SamModel(tiny.sam.config).eval()
        plain.load_state_dict(tiny.sam.state_dict())
        # boxes and masks get SAM's single-mask output, clicks its 3 candidates
        multimask = prompt_type == "point"
        assert tiny.region_decoder.multimask(PROMPT_TYPE_IDS[prompt_type]) == multimask
        assert masks.shape[1] == iou.shape[1] == (3 if multimask else 1)
        for image in range(2):
            index = torch.nonzero(regions["image_index"] == image).squeeze(1)
            if prompt_type == "box":
                out = plain(pixel_values=pixels[image : image + 1], input_boxes=regions["boxes"][index][None], multimask_output=multimask)
            elif prompt_type == "point":
                out = plain(
                    pixel_values=pixels[image : image + 1],
                    input_points=regions["points"][index][None],
                    input_labels=regions["point_labels"][index][None],
                    multimask_output=multimask,
                )
            else:
                out = plain(
                    pixel_values=pixels[image : image + 1].expand(len(index), -1, -1, -1),
                    input_masks=regions["masks"][index][:, None].float(),
                    multimask_output=multimask,
                )
            expected_masks = out.pred_masks[0] if prompt_type != "mask" else out.pred_masks[:, 0]
            expected_iou = out.iou_scores[0] if prompt_type != "mask" else out.iou_scores[:, 0]
            assert (masks[index] - expected_masks).abs().max() <= 1e-5
            assert (iou[index] - expected_iou).abs().max() <= 1e-5
    assert queries.shape == (6, tiny.head_config.num_caption_tokens, tiny.region_decoder.hidden_size)


def test_single_mask_prompts_fill_every_candidate_next_to_clicks(tiny):
    """Boxes (single mask) and clicks (3 candidates) in one batch: each box's one mask and IoU fill
    its 3 slots, each click keeps its own 3, and both equal decoding each type alone."""
    regions = random_regions()
    regions["prompt_types"] = torch.tensor([0, 1, 0, 1, 1, 0])
    with torch.no_grad():
        embeddings = tiny.region_decoder.encode_images(torch.randn(2, 3, 64, 64))
        masks, iou, _ = tiny.encode_regions(embeddings, regions)
        for type_id in (0, 1):
            index = torch.nonzero(regions["prompt_types"] == type_id).squeeze(1)
            alone = {k: v[index] for k, v in regions.items()}
            alone["image_index"] = torch.arange(len(index))
            alone_masks, alone_iou, _ = tiny.encode_regions(embeddings[regions["image_index"][index]], alone)
            assert torch.allclose(masks[index], alone_masks.expand(-1, 3, -1, -1), atol=1e-5)
            assert torch.allclose(iou[index], alone_iou.expand(-1, 3), atol=1e-5)
    boxes = regions["prompt_types"] == 0
    assert (masks[boxes] == masks[boxes][:, :1]).all() and not (masks[~boxes] == masks[~boxes][:, :1]).all()


def _loss(captioner, seed=0):
    regions = random_regions(seed=seed)
    n = len(regions["boxes"])
    input_ids = torch.randint(0, 1000, (n, 3))
    out = captioner(
        torch.randn(2, 3, 64, 64), regions, torch.zeros(n, dtype=torch.long), input_ids, torch.ones_like(input_ids),
        gt_masks=regions["masks"],
    )
    return out.loss_caption + out.loss_mask + out.loss_iou


def _parts_with_grad(captioner):
    parts = {"sam": captioner.sam, "language_model": captioner.language_model, **captioner.caption_head_modules()}
    return {name for name, module in parts.items() if any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())}


def test_paper_style_freezing_trains_only_the_caption_head():
    cfg = tiny_model_config(train_sam=False, train_language_model=False).model
    captioner = build_captioner(cfg).train()
    _loss(captioner).backward()
    assert _parts_with_grad(captioner) == {"mixer", "task_tokens", "projector"}
    assert not captioner.sam.training and not captioner.language_model.training  # frozen parts stay in eval
    assert all(not p.requires_grad for p in captioner.sam.parameters())


def test_demo_training_gives_every_part_gradients():
    captioner = build_captioner(tiny_model_config().model).train()
    _loss(captioner).backward()
    assert _parts_with_grad(captioner) == {"sam", "language_model", "mixer", "task_tokens", "projector"}


def test_click_losses_train_sam_on_clicks_inside_the_masks_without_captions():
    """One click inside each ground-truth box-shaped mask: SAM's point-prompt path gets gradients
    and the mask loss is the weighted mean over regions and clicks; the caption loss is unchanged."""
    captioner = build_captioner(tiny_model_config().model).train()
    regions = random_regions()
    n = len(regions["boxes"])
    masks = torch.zeros(n, 64, 64, dtype=torch.bool)
    for i, (x0, y0, x1, y1) in enumerate(regions["boxes"].long().tolist()):
        masks[i, y0:y1, x0:x1] = True
    masks[0] = False  # an empty mask gets no click
    input_ids = torch.randint(0, 1000, (n, 3))
    pixels = torch.randn(2, 3, 64, 64)
    weights = (0.0, 1.0, 0.25)
    outputs, point_grads = [], []
    for weight in weights:
        captioner.zero_grad()
        torch.manual_seed(1)
        out = captioner(
            pixels, regions, torch.zeros(n, dtype=torch.long), input_ids, torch.ones_like(input_ids), gt_masks=masks, click_loss_weight=weight
        )
        (out.loss_caption + out.loss_mask + out.loss_iou).backward()
        grad = captioner.sam.prompt_encoder.point_embed[1].weight.grad  # the positive-click embedding
        outputs.append(out)
        point_grads.append(0.0 if grad is None else grad.abs().sum().item())
    assert torch.equal(outputs[0].loss_caption, outputs[1].loss_caption)
    assert point_grads[0] == 0.0 and point_grads[1] > 0 and point_grads[2] > 0
    # the clicks' mask losses, computed alone, make up the difference of the weighted means
    flat = masks.flatten(1).float()
    embeddings = captioner.region_decoder.encode_images(pixels)
    torch.manual_seed(1)  # the click sampler is the forward pass's only random draw
    click_mask, _, clicked = captioner._click_mask_losses(embeddings, regions["image_index"], masks)
    assert clicked.tolist() == [i for i in range(n) if flat[i].sum() > 0]
    for weight, out in zip(weights[1:], outputs[1:]):
        box_mask = (out.loss_mask * (n + weight * len(clicked)) - weight * click_mask.sum()) / n
        assert torch.allclose(box_mask, outputs[0].loss_mask, atol=1e-5)
    assert not torch.allclose(outputs[1].loss_mask, outputs[2].loss_mask)


def test_random_sam_vision_encoder_is_not_initialised_at_zero():
    # transformers' SamVisionConfig defaults to initializer_range=1e-10 (SAM is normally loaded
    # pretrained); the tiny preset overrides it, or a random encoder would start as all zeros.
    captioner = build_captioner(tiny_model_config().model)
    assert captioner.sam.vision_encoder.patch_embed.projection.weight.std() > 1e-3


def test_random_tiny_language_model_starts_at_its_width_scaled_spread():
    # GPT-2's initializer_range (0.02) is scaled for 768 channels; at the tiny preset's 64 the
    # prefix-reading path starts so small that shape stayed at chance for 1,000+ iterations (README).
    captioner = build_captioner(tiny_model_config().model)
    lm = captioner.language_model
    assert lm.config.n_embd == 64
    assert 0.08 < lm.get_input_embeddings().weight.std() < 0.12
    assert 0.08 < lm.transformer.h[0].attn.c_attn.weight.std() < 0.12


def test_save_pretrained_round_trip_reproduces_outputs(tmp_path, tiny):
    regions = random_regions()
    pixels = torch.randn(2, 3, 64, 64)
    kwargs = dict(eos_token_id=50256, pad_token_id=50256, max_new_tokens=4)
    with torch.no_grad():
        before = tiny.generate(pixels, regions, torch.zeros(6, dtype=torch.long), **kwargs)
    tiny.save_pretrained(tmp_path / "captioner")
    assert (tmp_path / "captioner" / "sam" / "config.json").is_file()
    assert (tmp_path / "captioner" / "language_model" / "config.json").is_file()
    loaded = SCACaptioner.from_pretrained(tmp_path / "captioner").eval()
    with torch.no_grad():
        after = loaded.generate(pixels, regions, torch.zeros(6, dtype=torch.long), **kwargs)
    assert after.token_ids == before.token_ids
    assert torch.equal(after.pred_masks, before.pred_masks) and torch.equal(after.iou_scores, before.iou_scores)
    for key, value in tiny.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key


def test_build_from_pretrained_sam_and_lm_directories(tmp_path, tiny):
    tiny.sam.save_pretrained(tmp_path / "sam")
    tiny.language_model.save_pretrained(tmp_path / "lm")
    cfg = load_config([f"model.sam={tmp_path / 'sam'}", f"model.language_model={tmp_path / 'lm'}", "model.tokenizer="])
    built = build_captioner(cfg.model)
    for key, value in tiny.sam.state_dict().items():
        assert torch.equal(value, built.sam.state_dict()[key]), key
    for key, value in tiny.language_model.state_dict().items():
        assert torch.equal(value, built.language_model.state_dict()[key]), key


def test_detectron2_checkpoint_round_trip(tmp_path):
    cfg = load_config()
    torch.manual_seed(1)
    model = build_model(cfg)
    DetectionCheckpointer(model, str(tmp_path)).save("model_test")
    torch.manual_seed(2)
    other = build_model(cfg)
    DetectionCheckpointer(other).load(str(tmp_path / "model_test.pth"))
    for key, value in model.state_dict().items():
        assert torch.equal(value, other.state_dict()[key]), key


def test_generation_in_chunks_equals_one_chunk(tiny):
    regions = random_regions(per_image=5)
    pixels = torch.randn(2, 3, 64, 64)
    kwargs = dict(eos_token_id=50256, pad_token_id=50256, max_new_tokens=3)
    one = tiny.generate(pixels, regions, torch.zeros(10, dtype=torch.long), region_chunk_size=64, **kwargs)
    chunked = tiny.generate(pixels, regions, torch.zeros(10, dtype=torch.long), region_chunk_size=3, **kwargs)
    assert one.token_ids == chunked.token_ids
    assert torch.allclose(one.pred_masks, chunked.pred_masks, atol=1e-5)


def test_parameter_count_tool_prints_the_paper_preset():
    result = subprocess.run(
        [sys.executable, "tools/count_parameters.py", "model=sam_vit_h_gpt2_large"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=True,
    )
    assert "trainable: 19.43M" in result.stdout
