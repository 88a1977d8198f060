"""The multi-source loader: per-source batches, one worker pool, determinism, faults."""

import itertools

import pytest
import torch
from conftest import assert_same_batches

from sca.config import ConfigError
from sca.config_loading import load_config
from sca.data import multi_source
from sca.data.multi_source import MappingFailureError, build_test_loader, build_train_loader


def mix_config(*overrides):
    return load_config(
        [
            "data=demo_mix",
            "data.num_workers=0",
            "data.sources.demo.batch_size=3",
            "data.sources.demo_refs.batch_size=2",
            "data.sources.demo_refs.sampling_ratio=0.5",
            *overrides,
        ]
    ).data


def take(loader, count, start_iter=0):
    loader.start_iter = start_iter
    return list(itertools.islice(iter(loader), count))


def test_steps_hold_one_batch_per_scheduled_source_with_task_info(tokenizer):
    loader = build_train_loader(mix_config(), tokenizer, seed=0)
    steps = take(loader, 8)
    assert all("demo" in step for step in steps)
    assert 0 < sum("demo_refs" in step for step in steps) < 8
    refs = next(step["demo_refs"] for step in steps if "demo_refs" in step)
    assert refs["task_info"] == {
        "task_name": "demo_refs",
        "task_type": "caption",
        "dataset_name": "sca_demo_refs_train",
        "batch_size": 2,
        "sampling_ratio": 0.5,
    }
    assert refs["images"].shape == (2, 3, 64, 64) and refs["task_types"] == ["caption", "caption"]
    assert all(len(c) == 3 for c in refs["regions"]["captions"])  # the ref's three sentences
    assert steps[0]["demo"]["images"].shape[0] == 3 and steps[0]["demo"]["task_info"]["task_type"] == "recognition"
    assert loader.counts[:, 0].tolist() == [24, 2 * sum("demo_refs" in step for step in steps)]


def test_batches_depend_on_the_seed_not_on_workers_and_resume_exactly(tokenizer):
    reference = take(build_train_loader(mix_config(), tokenizer, seed=0), 6)
    with_workers = build_train_loader(mix_config("data.num_workers=2"), tokenizer, seed=0)
    assert_same_batches(take(with_workers, 6), reference)
    assert_same_batches(take(with_workers, 2, start_iter=4), reference[4:])
    other_seed = take(build_train_loader(mix_config(), tokenizer, seed=1), 1)
    assert other_seed[0]["demo"]["image_ids"] != reference[0]["demo"]["image_ids"]


class FlakyMapper:
    """Raises on records whose image id is a multiple of ``every``."""

    def __init__(self, mapper, every):
        self.mapper, self.every = mapper, every

    def __call__(self, record):
        if record["image_id"] % self.every == 0:
            raise OSError(f"cannot read {record['file_name']}")
        return self.mapper(record)


def test_failing_samples_are_replaced_counted_and_capped(tokenizer, monkeypatch):
    def flaky(every):
        def build(*args, **kwargs):
            return FlakyMapper(real_build(*args, **kwargs), every)

        return build

    real_build = multi_source.build_region_mapper
    monkeypatch.setattr(multi_source, "build_region_mapper", flaky(every=4))
    demo_only = "~data.sources.demo_refs"
    loader = build_train_loader(mix_config(demo_only, "data.max_failure_rate=0.5"), tokenizer, seed=0)
    steps = take(loader, 10)
    image_ids = [i for step in steps for i in step["demo"]["image_ids"]]
    assert len(image_ids) == 30  # full batches all the same
    assert all(i % 4 for i in image_ids)
    assert loader.counts[0, 1] > 0  # failures counted

    strict = build_train_loader(mix_config(demo_only, "data.max_failure_rate=0.01"), tokenizer, seed=0)
    with pytest.raises(MappingFailureError, match="max_failure_rate=0.01"):
        take(strict, 50)

    monkeypatch.setattr(multi_source, "build_region_mapper", flaky(every=1))
    broken = build_train_loader(mix_config(demo_only, "data.max_failure_rate=0.9"), tokenizer, seed=0)
    with pytest.raises(MappingFailureError, match="in a row could not be mapped"):
        take(broken, 1)


def test_each_test_split_is_mapped_in_its_task_type(tokenizer):
    cfg = mix_config()
    assert cfg.test_datasets == ["sca_demo_val", "sca_demo_refs_val"]
    for dataset, task_type in (("sca_demo_val", "recognition"), ("sca_demo_refs_val", "caption")):
        samples = next(iter(build_test_loader(cfg, dataset, tokenizer, max_images=2)))
        assert [s["task_type"] for s in samples] == [task_type, task_type]


def test_sampling_ratio_is_validated():
    with pytest.raises(ConfigError, match="sampling_ratio"):
        mix_config("data.sources.demo_refs.sampling_ratio=0")
    with pytest.raises(ConfigError, match="max_failure_rate"):
        mix_config("data.max_failure_rate=1.5")


def test_the_model_weights_and_names_each_source_loss():
    from sca.modeling.build import build_model

    cfg = load_config(
        ["data=demo_mix", "data.num_workers=0", "data.sources.demo.batch_size=2", "data.sources.demo_refs.batch_size=2",
         "data.sources.demo_refs.sampling_ratio=1.0", "data.sources.demo_refs.loss_weight=0.25"]
    )
    model = build_model(cfg)  # loss weights from the sources' config
    step = next(iter(build_train_loader(cfg.data, model.tokenizer, seed=0)))
    torch.manual_seed(0)
    weighted = model(step)
    model.loss_weights = {"demo": 1.0, "demo_refs": 1.0}
    torch.manual_seed(0)
    plain = model(step)
    assert set(weighted) == {f"loss_{kind}/{source}" for kind in ("caption", "mask", "iou") for source in ("demo", "demo_refs")}
    for kind in ("caption", "mask", "iou"):
        assert torch.allclose(weighted[f"loss_{kind}/demo_refs"], 0.25 * plain[f"loss_{kind}/demo_refs"])
    assert torch.equal(weighted["loss_caption/demo"], plain["loss_caption/demo"])


def test_one_forward_pass_for_all_sources_equals_a_pass_per_source():
    """The model joins the sources of a step into one batch; each source's losses and gradients are
    those of its own pass (caption tokens of different lengths re-padded)."""
    from sca.modeling.build import build_model

    # no random clicks: one pass and two passes draw them differently (their grouping is tested in
    # tests/test_model.py)
    overrides = ["data=demo_mix", "data.num_workers=0", "data.sources.demo_refs.sampling_ratio=1.0", "model.click_loss_weight=0"]
    cfg = load_config(overrides)
    torch.manual_seed(0)
    model = build_model(cfg)
    step = next(iter(build_train_loader(cfg.data, model.tokenizer, seed=0)))
    lengths = {name: batch["regions"]["input_ids"].shape[1] for name, batch in step.items()}
    assert lengths["demo"] < lengths["demo_refs"]  # the join pads the class names' tokens

    def losses_and_grads(batches):
        model.zero_grad()
        losses = {}
        for batch in batches:
            losses.update(model(batch))
        sum(losses.values()).backward()
        return losses, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    joint, joint_grads = losses_and_grads([step])
    separate, separate_grads = losses_and_grads([{name: batch} for name, batch in step.items()])
    assert list(joint) == list(separate) and len(joint) == 6
    for name in joint:
        torch.testing.assert_close(joint[name], separate[name], rtol=1e-5, atol=1e-6)
    assert joint_grads.keys() == separate_grads.keys()
    for name in joint_grads:
        torch.testing.assert_close(joint_grads[name], separate_grads[name], rtol=1e-4, atol=1e-6)
