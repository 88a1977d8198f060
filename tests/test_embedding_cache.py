"""The image-embedding cache: exact hits, one encoder call per distinct image, invalidation on new
weights, the disk directory, and when training may use it."""

import logging

import numpy as np
import pytest
import torch

from sca.config_loading import load_config
from sca.modeling.build import build_captioner, build_model
from sca.modeling.embedding_cache import ImageEmbeddingCache


def tiny_captioner(*overrides):
    torch.manual_seed(0)
    return build_captioner(load_config(list(overrides)).model).eval()


class EncoderCalls:
    """Images passed through SAM's image encoder, one entry per encoder call."""

    def __init__(self, captioner):
        self.batches: list[int] = []
        captioner.sam.vision_encoder.register_forward_hook(lambda module, args, output: self.batches.append(len(args[0])))

    @property
    def images(self) -> int:
        return sum(self.batches)


def random_pixels(count, seed=0, size=64):
    return torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_hits_return_what_the_encoder_returns_and_only_misses_are_encoded():
    captioner = tiny_captioner()
    decoder = captioner.region_decoder
    calls = EncoderCalls(captioner)
    pixels = random_pixels(3)
    with torch.no_grad():
        uncached = decoder._encode(pixels)
        first = decoder.encode_images(pixels)
        again = decoder.encode_images(pixels)
        assert calls.batches == [3, 3]  # the direct call, then the first cached pass; the second hits
        torch.testing.assert_close(first, uncached, rtol=0, atol=0)
        torch.testing.assert_close(again, uncached, rtol=0, atol=0)
        new = random_pixels(1, seed=1)
        mixed = decoder.encode_images(torch.cat([pixels[2:], new, pixels[:1]]))
    assert calls.batches == [3, 3, 1]  # only the new image, in one encoder call
    torch.testing.assert_close(mixed[0], uncached[2], rtol=0, atol=0)
    torch.testing.assert_close(mixed[2], uncached[0], rtol=0, atol=0)
    torch.testing.assert_close(mixed[1:2], decoder._encode(new), rtol=0, atol=0)
    stats = decoder.embedding_cache.stats
    assert (stats.hits, stats.disk_hits, stats.misses) == (5, 0, 4)


def test_the_same_pixels_at_another_precision_miss():
    captioner = tiny_captioner()
    calls = EncoderCalls(captioner)
    pixels = random_pixels(1)
    with torch.no_grad():
        full = captioner.region_decoder.encode_images(pixels)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = captioner.region_decoder.encode_images(pixels)
            half_again = captioner.region_decoder.encode_images(pixels)
    assert calls.images == 2
    assert full.dtype == torch.float32 and half.dtype == half_again.dtype == torch.bfloat16
    torch.testing.assert_close(half_again, half, rtol=0, atol=0)


def test_evaluating_a_split_twice_with_two_protocols_encodes_each_image_once(tmp_path, caplog):
    cfg = load_config([
        "data=demo",
        f"output_dir={tmp_path}",
        "data.num_workers=0",
        "evaluation.max_images=3",
        "evaluation.metrics=[exact_match]",
        "+data.test_protocols.sca_demo_val=[gt_boxes,densecap]",
        "+evaluation.densecap.anything.points_per_side=4",
    ])
    from sca.engine.trainer import evaluate

    torch.manual_seed(0)
    model = build_model(cfg)
    calls = EncoderCalls(model.captioner)
    with caplog.at_level(logging.INFO, logger="sca.engine.trainer"):
        first = evaluate(cfg, model)
        assert calls.images == 3  # the densecap protocol reuses what gt_boxes encoded
        second = evaluate(cfg, model)
    assert calls.images == 3
    assert first == second
    assert "image-embedding cache during the evaluation: 3 memory hits, 0 disk hits, 3 images encoded" in caplog.text
    assert "image-embedding cache during the evaluation: 6 memory hits, 0 disk hits, 0 images encoded" in caplog.text


def test_changed_encoder_weights_miss():
    captioner = tiny_captioner()
    decoder = captioner.region_decoder
    calls = EncoderCalls(captioner)
    pixels = random_pixels(2)
    with torch.no_grad():
        before = decoder.encode_images(pixels)
        next(decoder.sam.vision_encoder.parameters()).add_(0.01)  # as an optimizer step does
        after = decoder.encode_images(pixels)
        expected = decoder._encode(pixels)
    assert calls.batches == [2, 2, 2]
    assert not torch.equal(after, before)
    torch.testing.assert_close(after, expected, rtol=0, atol=0)


def test_disk_entries_serve_a_second_cache_and_a_corrupt_one_is_recomputed(tmp_path, caplog):
    captioner = tiny_captioner("model.train_sam=false")
    decoder = captioner.region_decoder
    calls = EncoderCalls(captioner)
    pixels = random_pixels(2)
    with torch.no_grad():
        decoder.embedding_cache = ImageEmbeddingCache(8, str(tmp_path))
        written = decoder.encode_images(pixels)
        files = sorted(tmp_path.rglob("*"))
        entries = [path for path in files if path.is_file()]
        assert len(entries) == 2 and all(path.suffix == ".safetensors" for path in entries)
        assert {path.parent for path in entries} == {files[0]}  # one directory: the encoder's fingerprint

        decoder.embedding_cache = ImageEmbeddingCache(8, str(tmp_path))  # e.g. the next run
        read = decoder.encode_images(pixels)
        assert calls.images == 2
        torch.testing.assert_close(read, written, rtol=0, atol=0)
        assert decoder.embedding_cache.stats.disk_hits == 2

        entries[0].write_bytes(b"not a safetensors file")
        entries[1].write_bytes(entries[1].read_bytes()[:-100])  # truncated, as by a crash without the atomic rename
        decoder.embedding_cache = ImageEmbeddingCache(8, str(tmp_path))
        with caplog.at_level(logging.WARNING, logger="sca.modeling.embedding_cache"):
            recovered = decoder.encode_images(pixels)
        assert calls.images == 4 and caplog.text.count("unreadable") == 2
        torch.testing.assert_close(recovered, written, rtol=0, atol=0)

        decoder.embedding_cache = ImageEmbeddingCache(8, str(tmp_path))
        decoder.encode_images(pixels)
    assert calls.images == 4 and decoder.embedding_cache.stats.disk_hits == 2  # the corrupt entries were replaced
    assert sorted(path for path in tmp_path.rglob("*") if path.is_file()) == entries  # no temporary files left


def test_a_training_encoder_never_touches_the_directory(tmp_path):
    captioner = tiny_captioner()  # the tiny preset trains SAM
    captioner.region_decoder.embedding_cache = ImageEmbeddingCache(8, str(tmp_path))
    with torch.no_grad():
        captioner.region_decoder.encode_images(random_pixels(1))
    assert not any(tmp_path.iterdir())


def test_training_with_a_trainable_encoder_does_not_use_the_cache():
    captioner = tiny_captioner().train()
    decoder = captioner.region_decoder
    decoder.training_images_unaugmented = True
    calls = EncoderCalls(captioner)
    pixels = random_pixels(2)
    assert decoder.embedding_cache.in_training and not decoder.uses_embedding_cache()
    first = decoder.encode_images(pixels)
    decoder.encode_images(pixels)
    assert calls.images == 4 and first.requires_grad
    assert len(decoder.embedding_cache) == 0


@pytest.mark.parametrize(
    "in_training, unaugmented, reused",
    [(True, True, True), (False, True, False), (True, False, False)],
)
def test_training_with_a_frozen_encoder_uses_the_cache_when_allowed(in_training, unaugmented, reused):
    captioner = tiny_captioner("model.train_sam=false", f"model.embedding_cache.in_training={in_training}").train()
    decoder = captioner.region_decoder
    decoder.training_images_unaugmented = unaugmented
    calls = EncoderCalls(captioner)
    pixels = random_pixels(2)
    first = decoder.encode_images(pixels)
    second = decoder.encode_images(pixels)
    assert calls.images == (2 if reused else 4)
    torch.testing.assert_close(second, first, rtol=0, atol=0)
    assert not second.requires_grad


@pytest.mark.parametrize("augmentation, unaugmented", [("none", True), ("lsj", False)])
def test_the_trainer_allows_training_use_for_unaugmented_sources_only(tmp_path, augmentation, unaugmented):
    from sca.engine.trainer import Trainer

    cfg = load_config([
        "data=demo",
        f"output_dir={tmp_path}",
        "data.num_workers=0",
        "device=cpu",
        f"data.sources.demo.mapper.augmentation={augmentation}",
    ])
    trainer = Trainer(cfg)
    assert trainer.model.captioner.region_decoder.training_images_unaugmented is unaugmented


def test_memory_holds_at_most_max_images_least_recently_used_dropped():
    captioner = tiny_captioner("model.embedding_cache.max_images=2")
    decoder = captioner.region_decoder
    calls = EncoderCalls(captioner)
    images = [random_pixels(1, seed=seed) for seed in range(3)]
    with torch.no_grad():
        decoder.encode_images(images[0])
        decoder.encode_images(images[1])
        decoder.encode_images(images[0])  # 0 is now the most recently used
        decoder.encode_images(images[2])  # drops 1
        assert len(decoder.embedding_cache) == 2 and calls.images == 3
        decoder.encode_images(images[0])
        assert calls.images == 3
        decoder.encode_images(images[1])
    assert calls.images == 4 and len(decoder.embedding_cache) == 2


def test_max_images_zero_disables_the_cache():
    captioner = tiny_captioner("model.embedding_cache.max_images=0")
    assert captioner.region_decoder.embedding_cache is None


def test_the_demo_page_encodes_a_reuploaded_image_once(demo_records):
    from sca.app.session import DemoSession
    from sca.predictor import RegionCaptionPredictor, read_rgb_image

    torch.manual_seed(0)
    predictor = RegionCaptionPredictor(load_config([]), device="cpu")
    calls = EncoderCalls(predictor.captioner)
    image = read_rgb_image(demo_records["sca_demo_val"][0]["file_name"])
    first = DemoSession.start(predictor, image, "shapes.png")
    first.boxes.append([4.0, 4.0, 40.0, 40.0])
    first.predict_prompts(predictor)
    second = DemoSession.start(predictor, np.array(image), "shapes.png")  # the same image again
    assert calls.images == 1
    torch.testing.assert_close(second.encoded.embeddings, first.encoded.embeddings, rtol=0, atol=0)


def test_benchmark_encodes_each_image_once_per_round_with_the_cache(load_tool, capsys):
    benchmark = load_tool("benchmark_embedding_cache")
    result = benchmark.main(["--images", "2", "--prompt-sets", "2", "--regions", "2", "--repeats", "1"])
    assert result["images_encoded"] == {"uncached": 4, "memory": 2, "disk": 0}
    table = capsys.readouterr().out
    for row in ("images encoded / round", "s / round", "speed-up vs uncached", "cache hit:"):
        assert row in table
