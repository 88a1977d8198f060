"""Panoptic region mapper: regions, masks, boxes, prompts and captions stay consistent."""

import copy

import numpy as np
import pytest
import torch
from detectron2.data import MetadataCatalog
from panopticapi.utils import rgb2id
from PIL import Image

from sca.config import MapperConfig, PromptConfig
from sca.data.mappers import build_region_mapper
from sca.data.prompts import PROMPT_TYPE_IDS
from sca.data.region_batch import collate_regions

def make_mapper(tokenizer, is_train, **options):
    cfg = MapperConfig(image_size=64, mask_size=64, **options)
    return build_region_mapper("sca_demo_val", cfg, is_train=is_train, tokenizer=tokenizer, source="demo", task_type="recognition")


def resized_ids(record, size):
    """Independent reference: the panoptic PNG resized like SAM (longest side to ``size``), padded."""
    png = Image.open(record["pan_seg_file_name"]).convert("RGB")
    scale = size / max(png.size)
    new_w, new_h = (int(np.round(v * scale)) for v in png.size)
    ids = rgb2id(np.asarray(png.resize((new_w, new_h), Image.NEAREST)))
    padded = np.zeros((size, size), ids.dtype)
    padded[:new_h, :new_w] = ids
    return padded


def test_eval_sample_is_pixel_exact_against_the_png(demo_records, tokenizer):
    mapper = make_mapper(tokenizer, is_train=False)
    names = MetadataCatalog.get("sca_demo_val").stuff_classes
    for record in demo_records["sca_demo_val"][:20]:
        sample = mapper(record)
        regions = sample["regions"]
        ids = resized_ids(record, 64)
        present = [s for s in record["segments_info"] if (ids == s["id"]).sum() >= 4]
        assert regions["region_ids"].tolist() == [s["id"] for s in present]
        for i, segment in enumerate(present):
            expected = ids == segment["id"]
            assert torch.equal(regions["masks"][i], torch.from_numpy(expected))
            ys, xs = np.nonzero(expected)
            assert regions["boxes"][i].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            assert regions["captions"][i] == [names[segment["category_id"]]]
            assert regions["category_ids"][i] == segment["category_id"]
        assert regions["input_ids"] == tokenizer.encode([c[0] for c in regions["captions"]])
        scale = 64 / max(record["width"], record["height"])
        content = [0, 0, np.round(record["width"] * scale), np.round(record["height"] * scale)]
        assert sample["valid_box"].tolist() == content  # the resized image's extent inside the padding


@pytest.mark.parametrize("seed", range(5))
def test_lsj_keeps_prompts_inside_their_masks(demo_records, tokenizer, seed):
    mapper = make_mapper(
        tokenizer, is_train=True, augmentation="lsj", min_scale=0.5, max_scale=2.0, max_regions=3,
        prompt=PromptConfig(weights={"box": 1, "point": 1, "mask": 1}, num_points=3),
    )
    np.random.seed(seed)
    checked = 0
    for record in demo_records["sca_demo_train"][:30]:
        sample = mapper(record)
        if sample is None:  # every region cropped away: detectron2 draws another image
            continue
        regions = sample["regions"]
        assert len(regions["boxes"]) <= 3
        assert set(regions["prompt_types"].tolist()) <= set(PROMPT_TYPE_IDS.values())
        for mask, box, points in zip(regions["masks"], regions["boxes"], regions["points"]):
            ys, xs = torch.nonzero(mask, as_tuple=True)
            assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]  # tight box
            for x, y in points.tolist():
                assert mask[int(y), int(x)]  # every point lies inside the transformed mask
            checked += 1
    assert checked > 10


def test_training_samples_at_most_max_regions_without_replacement(demo_records, tokenizer):
    mapper = make_mapper(tokenizer, is_train=True, augmentation="none", max_regions=2)
    rich = [r for r in demo_records["sca_demo_train"] if len(r["segments_info"]) >= 4][:10]
    for record in rich:
        ids = mapper(record)["regions"]["region_ids"].tolist()
        assert len(ids) == 2 and len(set(ids)) == 2


def test_crowd_segments_are_not_regions(demo_records, tokenizer):
    record = copy.deepcopy(demo_records["sca_demo_val"][0])
    for segment in record["segments_info"]:
        segment["iscrowd"] = 1
    assert make_mapper(tokenizer, is_train=True)(record) is None
    assert len(make_mapper(tokenizer, is_train=False)(record)["regions"]["boxes"]) == 0


def test_size_mismatch_between_png_and_image_is_an_error(demo_records, tokenizer, tmp_path):
    record = copy.deepcopy(demo_records["sca_demo_val"][0])
    png = Image.open(record["pan_seg_file_name"])
    png.resize((png.width + 3, png.height)).save(tmp_path / "bad.png")
    record["pan_seg_file_name"] = str(tmp_path / "bad.png")
    with pytest.raises(ValueError, match="bad.png"):
        make_mapper(tokenizer, is_train=False)(record)


def test_captions_use_the_real_gpt2_bpe(tokenizer):
    assert len(tokenizer.tokenizer) == 50257
    assert tokenizer.encode(["red circle", "yellow square"]) == [[445, 9197, 50256], [36022, 6616, 50256]]
    assert tokenizer.decode([[445, 9197, 50256, 50256]]) == ["red circle"]
    long = tokenizer.encode(["a " * 40])[0]
    assert len(long) == 8 and long[-1] == 50256  # truncated to max_tokens, EOS kept


def test_collate_concatenates_regions_and_pads_tokens(demo_records, tokenizer):
    mapper = make_mapper(tokenizer, is_train=False)
    samples = [mapper(r) for r in demo_records["sca_demo_val"][:3]]
    batch = collate_regions(samples, tokenizer.pad_token_id)
    counts = [len(s["regions"]["boxes"]) for s in samples]
    assert batch["images"].shape == (3, 3, 64, 64) and batch["images"].dtype == torch.uint8
    assert batch["regions"]["image_index"].tolist() == [i for i, n in enumerate(counts) for _ in range(n)]
    lengths = batch["regions"]["attention_mask"].sum(1).tolist()
    assert lengths == [len(ids) for s in samples for ids in s["regions"]["input_ids"]]


def test_eval_sample_carries_full_resolution_ground_truth_masks(demo_records, tokenizer):
    from pycocotools import mask as mask_util

    record = demo_records["sca_demo_val"][0]
    regions = make_mapper(tokenizer, is_train=False)(record)["regions"]
    ids = rgb2id(np.asarray(Image.open(record["pan_seg_file_name"]).convert("RGB")))
    assert len(regions["mask_rles"]) == len(regions["region_ids"]) > 0
    for region_id, rle in zip(regions["region_ids"].tolist(), regions["mask_rles"]):
        np.testing.assert_array_equal(mask_util.decode(rle).astype(bool), ids == region_id)
    assert "mask_rles" not in make_mapper(tokenizer, is_train=True)(record)["regions"]
