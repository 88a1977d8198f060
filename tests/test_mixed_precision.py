"""bf16 autocast trains on the same losses as fp32; the trainer's precision choice; mixer checkpointing
changes memory, not results."""

import pytest
import torch

from sca.config_loading import load_config
from sca.data.multi_source import build_train_loader
from sca.engine.trainer import autocast_dtype
from sca.modeling.build import build_model

# SAM's initial weights 5x transformers' default spread (0.02), like the tiny preset's language model:
# at the default, a random SAM gives near-zero mask logits, whose losses bf16 rounding can hardly move.
WIDER_INIT = ["+model.sam_config.initializer_range=0.1"]
# bf16 keeps 8 significant bits (relative rounding 2^-8 = 0.4% per value), but the losses are means
# over many tokens and pixels, computed in fp32. Measured on the first three demo_train steps: the
# summed loss moved by at most 1.3e-4 relative; 2e-3 leaves a margin for other CPUs' kernels.
# (With a spread of 0.3 the mask logits reach +-70, a large IoU loss dominates and the sum moves by
# up to 2.6%: saturated weights are not what this test is about.)
BF16_LOSS_RTOL = 2e-3


@pytest.fixture(scope="module")
def tiny_training():
    """The tiny model (wider initial weights) in training mode and the first step of the demo loader."""
    cfg = load_config(["data=demo", "data.num_workers=0", *WIDER_INIT])
    torch.manual_seed(0)
    model = build_model(cfg).train()
    step = next(iter(build_train_loader(cfg.data, model.tokenizer, seed=0)))
    return model, step


def losses_with(model, step, dtype):
    model.autocast_dtype = dtype
    torch.manual_seed(0)
    try:
        return model(step)
    finally:
        model.autocast_dtype = None


def test_bf16_losses_agree_with_fp32_and_are_fp32(tiny_training):
    model, step = tiny_training
    with torch.no_grad():
        fp32 = losses_with(model, step, None)
        bf16 = losses_with(model, step, torch.bfloat16)
    assert set(bf16) == set(fp32) == {"loss_caption/demo", "loss_mask/demo", "loss_iou/demo"}
    assert all(loss.dtype == torch.float32 for loss in bf16.values())
    total_fp32, total_bf16 = sum(fp32.values()), sum(bf16.values())
    assert total_bf16 != total_fp32  # autocast did run in bf16
    assert abs(total_bf16 - total_fp32) <= BF16_LOSS_RTOL * abs(total_fp32)


def test_bf16_is_the_default_only_on_cuda_for_the_real_size_presets():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")  # only read, no GPU needed
    real_size = load_config(["model=sam_vit_b_gpt2"])
    assert autocast_dtype(real_size, cuda) == torch.bfloat16
    assert autocast_dtype(real_size, cpu) is None
    assert autocast_dtype(load_config(["model=tiny"]), cuda) is None
    assert autocast_dtype(load_config(["model=sam_vit_b_gpt2", "solver.amp=false"]), cuda) is None  # fp32
    assert autocast_dtype(load_config(["model=tiny", "solver.amp=true"]), cpu) == torch.bfloat16
    assert autocast_dtype(load_config(["model=tiny", "solver.amp=true", "solver.amp_dtype=float16"]), cuda) == torch.float16


def test_mixer_checkpointing_gives_the_same_loss_and_gradients(tiny_training):
    model, step = tiny_training
    mixer = model.captioner.mixer
    calls = []
    handle = mixer.transformer.register_forward_pre_hook(lambda *_: calls.append(1))  # recomputation may stop early
    results = {}
    try:
        for checkpointing in (False, True):
            mixer.checkpointing = checkpointing
            calls.clear()
            model.zero_grad(set_to_none=True)
            loss = sum(losses_with(model, step, None).values())
            loss.backward()
            grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
            results[checkpointing] = loss.detach(), grads, len(calls)
    finally:
        handle.remove()
        mixer.checkpointing = False
        model.zero_grad(set_to_none=True)
    (loss, grads, runs), (loss_ckpt, grads_ckpt, runs_ckpt) = results[False], results[True]
    assert (runs, runs_ckpt) == (1, 2)  # checkpointing recomputes the mixer in backward
    assert torch.allclose(loss_ckpt, loss)
    assert grads_ckpt.keys() == grads.keys() and any(name.startswith("captioner.mixer.") for name in grads)
    for name, grad in grads.items():
        assert torch.allclose(grads_ckpt[name], grad, rtol=1e-5, atol=1e-7), name
