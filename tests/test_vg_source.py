"""Visual Genome: registration of the DenseCap splits (v1.2 and v1.0 keys) and GRiT's files, bad input,
caption normalisation, the preparation script, the mapper, the densecap evaluation protocol and an
end-to-end ``train_net.py data=vg_densecap`` run, on trees written in the official layout
(``sca.data.datasets.synthetic_vg_trees``)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import inference_on_dataset

from sca.config import ConfigError, MapperConfig, PromptConfig, validate
from sca.config_loading import load_config
from sca.data.caption_normalization import densecap_caption, normalization_report, normalize_captions
from sca.data.datasets.register_vg import register_all_vg
from sca.data.datasets.synthetic_vg_trees import write_grit_annotations, write_vg_tree
from sca.data.mappers import build_region_mapper
from sca.evaluation.anything_mode import ground_truth_regions
from sca.evaluation.dense_captioning import merge_ground_truth
from sca.evaluation.dense_captioning_evaluator import (
    AnythingModeCaptioner,
    DenseCaptioningEvaluator,
    build_dense_captioning_loader,
    ground_truth,
)
from sca.predictor import AnythingConfig

ROOT = Path(__file__).resolve().parent.parent
LONG = "a man in a red shirt standing next to a tall green tree on the left side of the road"  # 19 words
BAD_REGIONS = [  # added to train image 2: (x, y, width, height, phrase)
    (5, 5, 0, 10, "zero width"),  # dropped: no area
    (-40, -40, 10, 10, "outside"),  # dropped: entirely outside
    (-5, 2, 20, 1000, "Partly outside!"),  # clipped
    (3, 3, 10, 10, "   "),  # dropped: empty phrase
    (4, 4, 12, 12, LONG),  # kept; dropped by DenseCap's normalisation in the mapper
]


def add_bad_input(root: Path) -> None:
    """Bad regions on image 2, a split id absent from image_data.json, a region of an unknown image,
    a missing image (train 3, val 8) and a truncated one (train 4)."""
    vg = root / "vg"
    regions = json.loads((vg / "region_descriptions.json").read_text())
    for k, (x, y, w, h, phrase) in enumerate(BAD_REGIONS):
        regions[1]["regions"].append({"region_id": 900001 + k, "image_id": 2, "x": x, "y": y, "width": w, "height": h, "phrase": phrase})
    regions.append({"id": 88888, "regions": [{"region_id": 990001, "image_id": 88888, "x": 1, "y": 1, "width": 5, "height": 5,
                                              "phrase": "unknown image"}]})
    (vg / "region_descriptions.json").write_text(json.dumps(regions))
    splits = json.loads((vg / "densecap_splits.json").read_text())
    splits["train"].append(99999)
    (vg / "densecap_splits.json").write_text(json.dumps(splits))
    (vg / "VG_100K" / "3.jpg").unlink()
    (vg / "VG_100K_2" / "8.jpg").unlink()
    truncated = vg / "VG_100K" / "4.jpg"
    truncated.write_bytes(truncated.read_bytes()[:200])


@pytest.fixture(scope="session")
def vg_root(tmp_path_factory):
    """Ten images (train 1-6, val 7-8, test 9-10) with bad input, GRiT's test file."""
    root = tmp_path_factory.mktemp("vg_datasets")
    tree = write_vg_tree(root, 10, seed=1)
    write_grit_annotations(root, "test", tree, tree["densecap_splits"]["test"])
    add_bad_input(root)
    return root


@pytest.fixture
def vg_tree(vg_root):
    """:func:`vg_root`, registered (again: other tests register other roots under the same names)."""
    register_all_vg(str(vg_root))
    return vg_root


def annotations_by_id(records) -> dict:
    return {a["id"]: a for r in records for a in r["annotations"]}


def test_densecap_splits_with_bad_input_dropped_clipped_and_counted(vg_tree):
    train = DatasetCatalog.get("sca_vg_densecap_train")
    assert [r["image_id"] for r in train] == [1, 2, 3, 4, 5, 6]  # the unknown split id 99999 is not a record
    assert train[0]["file_name"] == str(vg_tree / "vg/VG_100K/1.jpg")
    anns = annotations_by_id(train)
    assert {900001, 900002, 900004, 990001}.isdisjoint(anns)  # no area, outside, empty phrase, unknown image
    clipped = anns[900003]
    assert clipped["sentences"] == ["Partly outside!"]  # the raw phrase
    assert clipped["bbox"][:2] == [0.0, 2.0] and clipped["bbox"][1] + clipped["bbox"][3] == train[1]["height"]
    assert anns[900005]["sentences"] == [LONG]
    counts = MetadataCatalog.get("sca_vg_densecap_train").load_counts
    assert counts["clipped_boxes"] == 1 and counts["dropped_boxes"] == 2 and counts["dropped_empty_captions"] == 1
    assert counts["split_images_not_in_image_data"] == 1 and counts["regions_of_unknown_images"] == 1
    report = MetadataCatalog.get("sca_vg_densecap_train").caption_normalization_report
    phrases = [s for a in anns.values() for s in a["sentences"]]
    assert report == normalization_report(phrases) and report["dropped_longer_than_15_words"] >= 1
    assert [r["image_id"] for r in DatasetCatalog.get("sca_vg_densecap_val")] == [7, 8]
    assert [r["image_id"] for r in DatasetCatalog.get("sca_vg_densecap_test")] == [9, 10]


def test_v10_keys_give_the_same_records(tmp_path):
    records = {}
    for version in ("v1.2", "v1.0"):
        root = tmp_path / version
        write_vg_tree(root, 6, seed=3, key_version=version)
        register_all_vg(str(root))
        records[version] = [{**r, "file_name": os.path.relpath(r["file_name"], root)} for r in DatasetCatalog.get("sca_vg_densecap_train")]
    assert records["v1.0"] == records["v1.2"] and sum(len(r["annotations"]) for r in records["v1.2"]) > 0
    content = json.loads((tmp_path / "v1.0/vg/region_descriptions.json").read_text())
    assert "image" in content[0]["regions"][0] and "region_id" not in content[0]["regions"][0]


def test_grit_file_is_registered_with_its_images_found(vg_tree):
    grit, densecap = DatasetCatalog.get("sca_vg_grit_test"), DatasetCatalog.get("sca_vg_densecap_test")
    assert [r["file_name"] for r in grit] == [str(vg_tree / f"vg/VG_100K_2/{i}.jpg") for i in (9, 10)]
    captions = lambda records: [(a["bbox"], a["sentences"]) for r in records for a in r["annotations"]]  # noqa: E731
    assert captions(grit) == captions(densecap)


@pytest.mark.parametrize("phrase, expected", [
    ("The red car.", "the red car"),
    ("man's T-shirt", "mans tshirt"),  # punctuation is deleted, not replaced by a space
    ("½ cup of  coffee", "half cup of coffee"),
    ("40° angle", "40 degree angle"),
    (LONG, None),  # more than 15 words: dropped
    (" ".join(["word"] * 15), " ".join(["word"] * 15)),  # 15 words: kept
    ("...", None),  # no word left: dropped
])
def test_densecap_normalisation_rules(phrase, expected):
    assert densecap_caption(phrase) == expected
    assert normalize_captions([phrase], "none") == [phrase]


def test_normalisation_report_counts_each_rule():
    report = normalization_report(["The red car.", "red car", LONG, "!!"])
    assert report == {"phrases": 4, "replaced_characters": 0, "lowercased": 1, "punctuation_deleted": 2,
                      "dropped_longer_than_15_words": 1, "dropped_no_word_left": 1, "kept": 2}


def test_config_checks_normalisation_and_protocols():
    cfg = load_config(["data=vg_densecap"])
    assert cfg.data.sources["vg"].mapper.caption_normalization == "densecap"
    assert cfg.data.test_mapper.caption_normalization == "none"
    assert cfg.data.test_protocols == {"sca_vg_densecap_test": ["gt_boxes", "densecap"]}
    validate(cfg)
    for override, key in (("data.sources.vg.mapper.caption_normalization=lower", "caption_normalization"),
                          ("data.test_protocols.sca_vg_densecap_test=[map]", "test_protocols")):
        with pytest.raises(ConfigError, match=key):
            validate(load_config(["data=vg_densecap", override]))
    for preset in ("vg_grit", "vg_stage1_pretrain"):
        validate(load_config([f"data={preset}"]))
    stage1 = load_config(["data=vg_stage1_pretrain"])
    assert list(stage1.data.sources) == ["objects365", "coco_panoptic", "v3det"]
    assert {s.task_type for s in stage1.data.sources.values()} == {"caption"}
    paper_stage1 = load_config(["data=vg_stage1_pretrain", "~data.sources.coco_panoptic", "~data.sources.v3det"])
    assert list(paper_stage1.data.sources) == ["objects365"]


def mapper(is_train: bool, normalization: str, tokenizer, max_regions: int = 16):
    cfg = MapperConfig(image_size=128, mask_size=16, augmentation="none", max_regions=max_regions,
                       caption_normalization=normalization, prompt=PromptConfig(weights={"box": 0.5, "point": 0.5}))
    return build_region_mapper("sca_vg_densecap_train", cfg, is_train=is_train, tokenizer=tokenizer, source="vg", task_type="caption")


def test_mapper_normalises_in_training_and_keeps_raw_phrases_in_evaluation(vg_tree, tokenizer):
    record = DatasetCatalog.get("sca_vg_densecap_train")[1]
    np.random.seed(0)
    sample = mapper(True, "densecap", tokenizer)(record)
    regions = sample["regions"]
    assert 900005 not in regions["region_ids"].tolist()  # the 19-word phrase
    assert sample["skipped"]["dropped_by_caption_normalization"] == [(2, 900005)]
    expected = {a["id"]: densecap_caption(a["sentences"][0]) for a in record["annotations"] if a["id"] != 900005}
    assert {i: c[0] for i, c in zip(regions["region_ids"].tolist(), regions["captions"])} == expected
    assert sample["task_type"] == "caption" and len(regions["input_ids"]) == len(expected)
    # boxes are in the model frame (longest side 128), points lie in their boxes
    scale = 128 / max(record["height"], record["width"])
    by_id = {a["id"]: a["bbox"] for a in record["annotations"]}
    for region_id, box, point in zip(regions["region_ids"].tolist(), regions["boxes"].numpy(), regions["points"].numpy()):
        x, y, w, h = by_id[region_id]
        np.testing.assert_allclose(box, np.array([x, y, x + w, y + h]) * scale, atol=0.5)  # per-axis rounding of the resize
        assert (box[:2] <= point[0]).all() and (point[0] <= box[2:]).all()
    few = mapper(True, "densecap", tokenizer, max_regions=2)(record)
    assert len(few["regions"]["region_ids"]) == 2
    missing = DatasetCatalog.get("sca_vg_densecap_train")[2]  # image 3 is not on disk
    train_mapper = mapper(True, "densecap", tokenizer)
    assert train_mapper(missing) is None and train_mapper(record)["skipped"]["skipped_images"] == [missing["file_name"]]
    evaluation = mapper(False, "none", tokenizer, max_regions=2)(record)
    assert evaluation["regions"]["region_ids"].tolist() == [a["id"] for a in record["annotations"]]  # every region
    assert [c[0] for c in evaluation["regions"]["captions"]] == [a["sentences"][0] for a in record["annotations"]]


class ControlledPredictor:
    """Stands in for the predictor's "anything" mode: returns, image after image, the regions given."""

    def __init__(self, answers: list[list[tuple[list[float], str, float]]]):
        self.model = torch.nn.Linear(1, 1)
        self.answers = list(answers)
        self.calls = []

    def __call__(self, image, task_type=None, anything=None):
        self.calls.append((image.shape, task_type, anything))
        return [SimpleNamespace(box=box, caption=caption, iou_score=score, mask=None) for box, caption, score in self.answers.pop(0)]


def exact(candidates, references):
    return [1.0 if c in refs else 0.0 for c, refs in zip(candidates, references)]


def merged_answers(records, metadata, caption_of=lambda refs: refs[0]):
    answers = []
    for record in records:
        truth = ground_truth_regions(ground_truth(record, metadata)[0])
        boxes, captions = merge_ground_truth(truth.boxes, truth.captions)
        answers.append([(list(b), caption_of(c), 0.9 - 0.01 * k) for k, (b, c) in enumerate(zip(boxes, captions))])
    return answers


@pytest.mark.parametrize("normalization", ["none", "densecap"])
def test_densecap_protocol_machinery_with_controlled_regions(vg_tree, tmp_path, normalization):
    """The loader, the anything-mode wrapper and the evaluator, with regions whose answers are known:
    image 7 gets its merged ground-truth boxes with a raw reference each; image 8 is missing (skipped)."""
    name = "sca_vg_densecap_val"
    records = DatasetCatalog.get(name)
    predictor = ControlledPredictor(merged_answers(records[:1], MetadataCatalog.get(name)))
    anything = AnythingConfig(points_per_side=4)
    evaluator = DenseCaptioningEvaluator(name, str(tmp_path), normalization=normalization, caption_scorer=exact)
    results = inference_on_dataset(AnythingModeCaptioner(predictor, anything, "caption"), build_dense_captioning_loader(name), evaluator)
    assert predictor.calls == [((records[0]["height"], records[0]["width"], 3), "caption", anything)]
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["num_images"] == 1 and report["skipped_images"] == 1
    assert report["detection_mAP"] == pytest.approx(100)
    if normalization == "none":
        assert results == {"densecap": {"mAP": pytest.approx(100), "detection_mAP": pytest.approx(100)}}
        assert report["references"] == "raw phrases"
    else:  # raw candidates against normalised references: the synthetic phrases all change
        assert report["mAP"] < 100 and report["references"] == "densecap-normalised phrases"
    assert len(report["ap"]) == 30 and report["conventions"] == "sca"
    assert report["num_ground_truth_masks"] == 0  # boxes only: no mask recall
    predictions = json.loads((tmp_path / "predictions.json").read_text())
    assert [p["image_id"] for p in predictions] == [7]


@pytest.fixture(scope="session")
def prepared_copy(vg_root, tmp_path_factory, run_preparation):
    root = tmp_path_factory.mktemp("vg_prepared")
    shutil.copytree(vg_root / "vg", root / "vg")
    code, output = run_preparation("prepare_vg", "--root", root, "--workers", "1")
    assert code == 0, output
    return root, output


def test_prepare_vg_writes_cleaned_splits_with_counts(prepared_copy):
    root, output = prepared_copy
    info = json.loads((root / "vg/annotations/densecap_train_clean.json").read_text())["info"]
    assert info["images_kept"] == 4 and info["images_missing"] == 1 and info["images_corrupt"] == 1
    assert info["regions_clipped"] == 1 and info["regions_dropped_no_area"] == 2 and info["regions_dropped_empty_phrase"] == 1
    assert info["regions_of_unknown_images"] == 1 and info["split_images_not_in_image_data"] == 1
    assert info["caption_normalization"]["dropped_longer_than_15_words"] >= 1 and len(info["caption_normalization_rules"]) == 5
    assert "images missing 1" in output and "dropped longer than 15 words" in output
    register_all_vg(str(root))
    train = DatasetCatalog.get("sca_vg_densecap_train")
    assert [r["image_id"] for r in train] == [1, 2, 5, 6]
    assert annotations_by_id(train)[900003]["sentences"] == ["Partly outside!"]
    assert MetadataCatalog.get("sca_vg_densecap_train").load_counts["images_missing"] == 1
    assert [r["image_id"] for r in DatasetCatalog.get("sca_vg_densecap_val")] == [7]


def test_prepare_vg_skips_finished_splits_and_names_missing_files(prepared_copy, tmp_path, run_preparation):
    root, _ = prepared_copy
    code, output = run_preparation("prepare_vg", "--root", root, "--workers", "1")
    assert code == 0 and output.count("exists, split skipped") == 3
    (tmp_path / "vg").mkdir()
    code, output = run_preparation("prepare_vg", "--root", tmp_path, "--workers", "1")
    assert code == 2 and "image_data.json" in output and "visualgenome" in output


@pytest.mark.slow
def test_train_net_trains_and_evaluates_both_protocols(tmp_path):
    datasets = tmp_path / "datasets"
    tree = write_vg_tree(datasets, 12, seed=5)
    output = tmp_path / "run"
    overrides = [f"output_dir={output}", "data=vg_densecap", "solver.max_iter=3", "data.num_workers=0", "log_period=1",
                 "evaluation.max_images=2", "evaluation.metrics=[exact_match,bleu]",
                 "+evaluation.densecap.anything={points_per_side: 4, pred_iou_thresh: 0, stability_score_thresh: 0}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DETECTRON2_DATASETS": str(datasets)}
    result = subprocess.run([sys.executable, "train_net.py", *overrides], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    logged = [json.loads(line) for line in (output / "metrics.json").read_text().splitlines()]
    assert any("loss_caption/vg" in row for row in logged)
    assert any("sca_vg_densecap_test/densecap/mAP" in row and "sca_vg_densecap_test/caption/Bleu_1" in row for row in logged)
    captions = json.loads((output / "eval/sca_vg_densecap_test/metrics.json").read_text())
    test_ids = set(tree["densecap_splits"]["test"])
    test_regions = sum(len(e["regions"]) for e in tree["region_descriptions"] if e["id"] in test_ids)
    assert captions["num_regions"] == test_regions > 0 and captions["references"] == "as written"
    dense = json.loads((output / "eval/sca_vg_densecap_test/densecap/metrics.json").read_text())
    assert dense["num_images"] == 2 and dense["references"] == "raw phrases" and len(dense["ap"]) == 30
    assert 0 <= dense["mAP"] <= dense["detection_mAP"] <= 100


def test_strings_are_gathered_across_chunks():
    from sca.data.datasets.coco_boxes import _gather_strings

    words = ["man", "", "red shirt", "ü", "tree", "a"]
    utf8 = np.frombuffer("".join(words).encode(), dtype=np.uint8)
    offsets = np.concatenate([[0], np.cumsum([len(w.encode()) for w in words])])
    index = np.array([4, 0, 3, 1, 2])
    gathered, new_offsets = _gather_strings(utf8, offsets, index, chunk=2)
    assert [gathered[a:b].tobytes().decode() for a, b in zip(new_offsets[:-1], new_offsets[1:])] == [words[i] for i in index]
