"""RefCOCO / RefCOCO+ / RefCOCOg: restricted refs loading, registration of every split, the
preparation script, the referring mapper and the COCO image exclusion, on trees written in the refer
layout (``sca.data.datasets.synthetic_refer_trees``); and ``train_net.py`` on the box and
referring sources."""

import json
import os
import pickle
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from sca.config import ConfigError, DataConfig, MapperConfig, PromptConfig, SourceConfig
from sca.data.datasets.catalog import register_split
from sca.data.datasets.refer_format import load_refs
from sca.data.datasets.register_refcoco import REFCOCO_SPLITS, register_all_refcoco
from sca.data.datasets.synthetic_detection_trees import write_objects365_tree, write_v3det_tree
from sca.data.datasets.synthetic_refer_trees import write_refer_tree
from sca.data.image_exclusion import with_image_exclusions
from sca.data.mappers import build_region_mapper
from sca.data.record_regions import segmentation_mask

ROOT = Path(__file__).resolve().parent.parent
ALL_SPLITS = [
    *(f"sca_refcoco_unc_{s}" for s in ("train", "val", "testA", "testB")),
    *(f"sca_refcoco_google_{s}" for s in ("train", "val", "test")),
    *(f"sca_refcoco+_unc_{s}" for s in ("train", "val", "testA", "testB")),
    *(f"sca_refcocog_umd_{s}" for s in ("train", "val", "test")),
    *(f"sca_refcocog_google_{s}" for s in ("train", "val")),
]


@pytest.fixture(scope="module")
def refer(tmp_path_factory):
    """The three datasets and their five refs pickles over 16 COCO-2014 images, registered."""
    root = tmp_path_factory.mktemp("datasets")
    written = write_refer_tree(root, 16, seed=0)
    register_all_refcoco(str(root))
    return root, written


def ref_split(name: str) -> tuple[str, str, str]:
    return REFCOCO_SPLITS[name]


def mapper(name, tokenizer, is_train, **options):
    cfg = MapperConfig(image_size=96, mask_size=96, **options)
    return build_region_mapper(name, cfg, is_train=is_train, tokenizer=tokenizer, source=name, task_type="caption")


def sam_resized(mask: np.ndarray, size: int) -> np.ndarray:
    """Independent reference for the eval transform: longest side to ``size`` (SAM rounds the other
    side half up), nearest, pad."""
    scale = size / max(mask.shape)
    new_h, new_w = (int(v * scale + 0.5) for v in mask.shape)
    resized = np.asarray(Image.fromarray(mask.astype(np.uint8)).resize((new_w, new_h), Image.NEAREST)) > 0
    padded = np.zeros((size, size), bool)
    padded[:new_h, :new_w] = resized
    return padded


# --- refs files ----------------------------------------------------------------------------------


def test_python2_protocol2_pickles_load_as_text(refer):
    root, written = refer
    refs = load_refs(str(root / "refcocog" / "refs(umd).p"))
    assert refs == written[("refcocog", "umd")]
    assert any("café" in s["sent"] for r in refs for s in r["sentences"])  # non-ASCII (Python 2 unicode) sentences
    assert refs[0]["file_name"] == f"COCO_train2014_{refs[0]['image_id']:012d}_{refs[0]['ann_id']}.jpg"


def test_a_pickle_carrying_anything_but_plain_data_is_rejected(refer, tmp_path, run_preparation):
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    for value in ([Payload()], [{"ref_id": 1, "when": __import__("datetime").date(2020, 1, 1)}]):
        path = tmp_path / "refs(unc).p"
        path.write_bytes(pickle.dumps(value, protocol=2))
        with pytest.raises(ValueError, match=r"refs\(unc\).p: not a valid refs file .*refusing to load"):
            load_refs(str(path))
    assert not marker.exists()
    (tmp_path / "refcoco").mkdir()
    path.rename(tmp_path / "refcoco" / "refs(unc).p")
    code, output = run_preparation("prepare_refcoco", "--root", tmp_path)
    assert code == 2 and "refs(unc).p" in output and "refusing to load" in output and "Traceback" not in output
    assert not (tmp_path / "refcoco" / "refs(unc).json").exists()


# --- registration and records --------------------------------------------------------------------


def test_every_split_is_registered_with_metadata(refer):
    root, _ = refer
    assert sorted(REFCOCO_SPLITS) == sorted(ALL_SPLITS) and len(ALL_SPLITS) == 16
    for name in ALL_SPLITS:
        dataset, split_by, split = ref_split(name)
        metadata = MetadataCatalog.get(name)
        assert metadata.evaluator_type == "refcoco" and metadata.split == split
        assert Path(metadata.refs_file) == root / dataset / f"refs({split_by}).p"
        assert Path(metadata.json_file) == root / dataset / "instances.json"
        assert Path(metadata.image_root) == root / "coco" / "train2014"
        assert len(metadata.thing_classes) == 80 and metadata.thing_dataset_id_to_contiguous_id[90] == 79


def test_registration_is_lazy_and_repeatable(refer, tmp_path):
    root, _ = refer
    try:
        register_all_refcoco(str(tmp_path / "nowhere"))
        register_all_refcoco(str(tmp_path / "nowhere"))
        with pytest.raises(FileNotFoundError, match=r"refcocog/instances.json not found.*datasets/README.md"):
            DatasetCatalog.get("sca_refcocog_umd_val")
    finally:
        register_all_refcoco(str(root))


@pytest.mark.parametrize("name", ALL_SPLITS)
def test_refs_and_sentences_per_split_match_the_refs_file(refer, name):
    root, written = refer
    dataset, split_by, split = ref_split(name)
    refs = {r["ref_id"]: r for r in written[(dataset, split_by)] if r["split"] == split}
    instances = json.loads((root / dataset / "instances.json").read_text())
    annotations = {a["id"]: a for a in instances["annotations"]}
    records = DatasetCatalog.get(name)
    loaded = [a for r in records for a in r["annotations"]]
    assert sorted(a["ref_id"] for a in loaded) == sorted(refs) and len(refs) > 0
    assert sum(len(a["sentences"]) for a in loaded) == sum(len(r["sentences"]) for r in refs.values())
    ids = MetadataCatalog.get(name).thing_dataset_id_to_contiguous_id
    for record in records:
        assert Path(record["file_name"]) == root / "coco/train2014" / f"COCO_train2014_{record['image_id']:012d}.jpg"
        assert Path(record["file_name"]).is_file()
        for ann in record["annotations"]:
            ref = refs[ann["ref_id"]]
            assert ref["image_id"] == record["image_id"] and ann["id"] == ref["ann_id"]
            assert ann["sentences"] == [s["sent"] for s in ref["sentences"]]
            assert ann["category_id"] == ids[annotations[ref["ann_id"]]["category_id"]]
            assert ann["bbox"] == annotations[ref["ann_id"]]["bbox"] and ann["segmentation"] == annotations[ref["ann_id"]]["segmentation"]
    if split == "testA":
        assert {a["category_id"] for a in loaded} == {0}  # people
    if split == "testB":
        assert 0 not in {a["category_id"] for a in loaded}


def edited_tree(refer, tmp_path, edit) -> Path:
    """A copy of the refcocog files under ``tmp_path`` (images shared), ``edit(instances)`` applied."""
    root, _ = refer
    (tmp_path / "refcocog").mkdir()
    instances = json.loads((root / "refcocog/instances.json").read_text())
    edit(instances)
    (tmp_path / "refcocog/instances.json").write_text(json.dumps(instances))
    (tmp_path / "refcocog/refs(umd).p").write_bytes((root / "refcocog/refs(umd).p").read_bytes())
    (tmp_path / "coco").mkdir()
    (tmp_path / "coco/train2014").symlink_to(root / "coco/train2014")
    return tmp_path


def test_unknown_category_is_an_error_naming_the_annotation(refer, tmp_path):
    root, written = refer
    ann_id = next(r["ann_id"] for r in written[("refcocog", "umd")] if r["split"] == "val")

    def edit(instances):
        next(a for a in instances["annotations"] if a["id"] == ann_id)["category_id"] = 999

    register_all_refcoco(str(edited_tree(refer, tmp_path, edit)))
    try:
        with pytest.raises(ValueError, match=rf"instances.json: annotation {ann_id} \(ref \d+\) has unknown category_id 999"):
            DatasetCatalog.get("sca_refcocog_umd_val")
    finally:
        register_all_refcoco(str(root))


def test_missing_annotations_and_boxes_without_area_are_skipped_and_counted(refer, tmp_path, caplog):
    root, written = refer
    val = [r for r in written[("refcocog", "umd")] if r["split"] == "val"]

    def edit(instances):
        instances["annotations"] = [a for a in instances["annotations"] if a["id"] != val[0]["ann_id"]]
        next(a for a in instances["annotations"] if a["id"] == val[1]["ann_id"])["bbox"][2] = 0.0
        next(a for a in instances["annotations"] if a["id"] == val[2]["ann_id"])["bbox"][0] = -3.0

    register_all_refcoco(str(edited_tree(refer, tmp_path, edit)))
    try:
        records = DatasetCatalog.get("sca_refcocog_umd_val")
    finally:
        register_all_refcoco(str(root))
    assert sorted(a["ref_id"] for r in records for a in r["annotations"]) == sorted(r["ref_id"] for r in val[2:])
    text = caplog.text
    assert "'missing annotation or image': 1" in text and "'box without area in its image': 1" in text
    assert "'box clipped to its image': 1" in text


def test_prepare_converts_the_pickles_and_loaders_read_the_json(refer, tmp_path, run_preparation):
    root, written = refer
    work = tmp_path / "datasets"
    for dataset in ("refcoco", "refcoco+", "refcocog"):
        (work / dataset).mkdir(parents=True)
        for path in (root / dataset).glob("*"):
            (work / dataset / path.name).write_bytes(path.read_bytes())
    code, output = run_preparation("prepare_refcoco", "--root", work)
    assert code == 0, output
    for (dataset, split_by), refs in written.items():
        converted = work / dataset / f"refs({split_by}).json"
        assert json.loads(converted.read_text()) == refs
        counts = Counter(r["split"] for r in refs)
        sentences = Counter()
        for r in refs:
            sentences[r["split"]] += len(r["sentences"])
        line = next(line for line in output.splitlines() if line.startswith(str(converted)))
        for split, count in counts.items():
            assert f"{split} {count} refs / {sentences[split]} sentences" in line
    (work / "refcocog" / "refs(umd).p").write_bytes(b"not a pickle")  # the JSON is read instead
    (work / "coco").mkdir()
    (work / "coco/train2014").symlink_to(root / "coco/train2014")
    expected = [r["image_id"] for r in DatasetCatalog.get("sca_refcocog_umd_test")]
    register_all_refcoco(str(work))
    try:
        assert [r["image_id"] for r in DatasetCatalog.get("sca_refcocog_umd_test")] == expected
    finally:
        register_all_refcoco(str(root))
    code, output = run_preparation("prepare_refcoco", "--root", work)
    assert code == 0 and output.count("exists, kept") == 5


# --- mapper --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sca_refcocog_umd_val", "sca_refcoco_unc_testA"])
def test_eval_regions_are_every_ref_with_all_its_sentences(refer, tokenizer, name):
    m = mapper(name, tokenizer, is_train=False)
    for record in DatasetCatalog.get(name):
        sample = m(record)
        regions = sample["regions"]
        assert sample["task_type"] == "caption"
        assert regions["region_ids"].tolist() == [a["ref_id"] for a in record["annotations"]]
        for i, annotation in enumerate(record["annotations"]):
            full = segmentation_mask(annotation["segmentation"], record["height"], record["width"])
            expected = sam_resized(full, 96)
            assert torch.equal(regions["masks"][i], torch.from_numpy(expected))
            ys, xs = np.nonzero(expected)
            assert regions["boxes"][i].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            assert regions["captions"][i] == annotation["sentences"]
            np.testing.assert_array_equal(mask_util.decode(regions["mask_rles"][i]).astype(bool), full)
        assert regions["input_ids"] == tokenizer.encode([a["sentences"][0] for a in record["annotations"]])


def test_overlapping_refs_keep_their_own_masks(refer, tokenizer):
    record = DatasetCatalog.get("sca_refcocog_umd_val")[0]
    square = [[10.0, 10.0, 50.0, 10.0, 50.0, 50.0, 10.0, 50.0]]
    inner = [[20.0, 20.0, 40.0, 20.0, 40.0, 40.0, 20.0, 40.0]]
    base = record["annotations"][0]
    annotations = [{**base, "ref_id": 1, "segmentation": square}, {**base, "ref_id": 2, "segmentation": inner}]
    regions = mapper("sca_refcocog_umd_val", tokenizer, is_train=False)({**record, "annotations": annotations})["regions"]
    for i, annotation in enumerate(annotations):
        full = segmentation_mask(annotation["segmentation"], record["height"], record["width"])
        assert torch.equal(regions["masks"][i], torch.from_numpy(sam_resized(full, 96)))
    assert regions["masks"][0].sum() > regions["masks"][1].sum() > 0


def test_training_draws_one_sentence_per_region_and_prompts_inside_masks(refer, tokenizer):
    name = "sca_refcocog_google_train"
    m = mapper(name, tokenizer, is_train=True, min_scale=0.5, max_scale=1.5, max_regions=2,
               prompt=PromptConfig(weights={"box": 1, "point": 1, "mask": 1}, num_points=2))
    np.random.seed(0)
    drawn: dict[int, set] = {}
    prompt_types = set()
    for _ in range(6):
        for record in DatasetCatalog.get(name):
            sample = m(record)
            if sample is None:
                continue
            regions = sample["regions"]
            assert len(regions["region_ids"]) <= 2
            for i, ids in enumerate(regions["input_ids"]):
                sentence = tokenizer.decode([ids])[0]
                assert sentence in regions["captions"][i]
                drawn.setdefault(int(regions["region_ids"][i]), set()).add(sentence)
                mask = regions["masks"][i]
                x, y = regions["points"][i].long().unbind(-1)
                assert mask[y, x].all()
                ys, xs = torch.nonzero(mask, as_tuple=True)
                assert regions["boxes"][i].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            prompt_types |= set(regions["prompt_types"].tolist())
    assert prompt_types == {0, 1, 2}
    assert any(len(sentences) > 1 for sentences in drawn.values())  # different sentences over steps


def test_missing_image_and_empty_mask_are_skipped_and_counted(refer, tokenizer, tmp_path):
    m = mapper("sca_refcocog_umd_train", tokenizer, is_train=True, augmentation="none")
    record = DatasetCatalog.get("sca_refcocog_umd_train")[0]
    missing = {**record, "file_name": str(tmp_path / "missing.jpg")}
    assert m(missing) is None
    empty = {**record["annotations"][0], "ref_id": 999, "segmentation": [[1.0, 1.0, 1.0, 1.0, 1.0, 1.0]]}
    sample = m({**record, "annotations": record["annotations"] + [empty]})
    assert 999 not in sample["regions"]["region_ids"].tolist()
    assert sample["skipped"] == {"skipped_images": [missing["file_name"]], "empty_masks": [(record["file_name"], 999)], "invalid_masks": []}


# --- COCO image exclusion ------------------------------------------------------------------------


def test_exclude_images_of_leaves_refcoco_eval_images_out_of_a_coco_source(refer):
    excluded = ["sca_refcocog_umd_val", "sca_refcocog_umd_test"]
    eval_ids = {r["image_id"] for name in excluded for r in DatasetCatalog.get(name)}
    all_ids = sorted({r["image_id"] for r in DatasetCatalog.get("sca_refcoco_google_train")} | eval_ids)
    register_split("test_coco_like_train", lambda: [{"image_id": i, "file_name": f"{i}.jpg"} for i in all_ids], {"marker": 1})
    cfg = DataConfig(name="mix", sources={
        "coco": SourceConfig(train_datasets=["test_coco_like_train"], exclude_images_of=excluded),
        "refs": SourceConfig(train_datasets=["sca_refcocog_umd_train"], task_type="caption"),
    })
    derived = with_image_exclusions(cfg)
    (name,) = derived.sources["coco"].train_datasets
    assert derived.sources["refs"] == cfg.sources["refs"] and name != "test_coco_like_train"
    kept = [r["image_id"] for r in DatasetCatalog.get(name)]
    assert kept == [i for i in all_ids if i not in eval_ids] and len(kept) < len(all_ids)
    assert MetadataCatalog.get(name).marker == 1
    cfg.sources["coco"].exclude_images_of = ["sca_refcocog_umd_nonsense"]
    with pytest.raises(ConfigError, match=r"data.sources.coco.exclude_images_of: \['sca_refcocog_umd_nonsense'\]"):
        with_image_exclusions(cfg)


# --- train_net.py --------------------------------------------------------------------------------


@pytest.mark.slow
def test_train_net_trains_on_box_and_referring_sources(tmp_path):
    """``train_net.py data=objects365`` / ``data=v3det`` / ``data=refcocog_umd`` (one Hydra multirun)."""
    root = tmp_path / "datasets"
    write_objects365_tree(root, "train", 4, layout="versioned", seed=1)
    write_objects365_tree(root, "val", 2, seed=2)
    (root / "objects365/train/images/v1/patch1/objects365_v1_00000002.jpg").unlink()
    write_v3det_tree(root, "train", 4, seed=3)
    write_v3det_tree(root, "val", 2, seed=4)
    write_refer_tree(root, 12, seed=5)
    overrides = [
        "-m", "data=objects365,v3det,refcocog_umd", f"output_dir={tmp_path}/${{data.name}}", f"hydra.sweep.dir={tmp_path}/sweep",
        "solver.max_iter=2", "log_period=1", "data.num_workers=0", "evaluation.max_images=2", "evaluation.metrics=[exact_match]",
    ]
    env = {**os.environ, "DETECTRON2_DATASETS": str(root)}
    result = subprocess.run([sys.executable, "train_net.py", *overrides], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for data, test_dataset in (("objects365", "sca_objects365_v2_val"), ("v3det", "sca_v3det_val"), ("refcocog_umd", "sca_refcocog_umd_val")):
        rows = [json.loads(line) for line in (tmp_path / data / "metrics.json").read_text().splitlines()]
        steps = [row for row in rows if "total_loss" in row]
        assert [row["iteration"] for row in steps] == [0, 1] and all(np.isfinite(row["total_loss"]) for row in steps)
        if data != "refcocog_umd":  # a box source's only loss term is logged under its own name too
            assert all(row[f"loss_caption/{data}"] == row["total_loss"] for row in steps)
        metrics = json.loads((tmp_path / data / "eval" / test_dataset / "metrics.json").read_text())
        assert metrics["num_regions"] > 0
        assert ("mask_mIoU" in metrics) == (data == "refcocog_umd")  # box sources have no masks
        assert (tmp_path / data / "model_final.pth").is_file()
    # the deleted image of the 4-image train split (2 steps x 2 images cover its first epoch), counted once
    rows = [json.loads(line) for line in (tmp_path / "objects365/metrics.json").read_text().splitlines()]
    assert [row for row in rows if "total_loss" in row][-1]["data/objects365/skipped_images"] == 1
