"""COCO panoptic and ADE20k panoptic: preparation scripts, registration, mapper and detectron2's own
tools, on trees written in the official layouts (``sca.data.datasets.synthetic_trees``)."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.builtin_meta import ADE20K_SEM_SEG_CATEGORIES, COCO_CATEGORIES
from detectron2.evaluation import COCOPanopticEvaluator
from detectron2.utils.events import EventStorage
from detectron2.utils.visualizer import Visualizer
from panopticapi.utils import id2rgb, rgb2id
from PIL import Image
from pycocotools.coco import COCO

from sca.config import MapperConfig, PromptConfig
from sca.data.datasets.ade20k_classes import ade20k_instance_to_semantic
from sca.data.datasets.panoptic_json import load_panoptic_json
from sca.data.datasets.register_ade20k_panoptic import register_all_ade20k_panoptic
from sca.data.datasets.register_coco_panoptic import register_all_coco_panoptic
from sca.data.datasets.synthetic_trees import write_ade20k_raw_tree, write_coco_panoptic_tree
from sca.data.mappers import build_region_mapper
from sca.data.skip_counts import SkipCountLogger

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ["prepare_coco_semantic_from_panoptic", "prepare_ade20k_sem_seg", "prepare_ade20k_pan_seg", "prepare_ade20k_ins_seg"]
SOURCES = {"coco": "sca_coco_panoptic", "ade20k": "sca_ade20k_panoptic"}


def add_phantom_segment(json_file: Path, index: int) -> None:
    """List a segment in annotation ``index`` that its PNG does not contain."""
    content = json.loads(json_file.read_text())
    segments = content["annotations"][index]["segments_info"]
    segments.append({**segments[0], "id": max(s["id"] for s in segments) + 1, "iscrowd": 0})
    json_file.write_text(json.dumps(content))


@pytest.fixture(scope="session")
def tree(tmp_path_factory, run_preparation):
    """A prepared datasets root: COCO and raw ADE20k written, then every preparation script run
    (from an unrelated working directory), then both sources registered on it.

    Bad input in the train splits (the val splits stay clean): the first image of each is gone
    after preparation, and the second lists a segment absent from its PNG."""
    root = tmp_path_factory.mktemp("datasets")
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    write_coco_panoptic_tree(root, "train", 4, seed=1)
    write_coco_panoptic_tree(root, "val", 4, seed=2)
    write_ade20k_raw_tree(root, "train", 4, seed=3)
    write_ade20k_raw_tree(root, "val", 4, seed=4, max_things=10)
    for i, script in enumerate(SCRIPTS):
        code, output = run_preparation(script, "--root", root, "--workers", 2 if i == 0 else 1, cwd=elsewhere)
        assert code == 0, output
    (root / "coco/train2017/000000000001.jpg").unlink()
    (root / "ADEChallengeData2016/images/training/ADE_train_00000001.jpg").unlink()
    add_phantom_segment(root / "coco/annotations/panoptic_train2017.json", 1)
    add_phantom_segment(root / "ADEChallengeData2016/ade20k_panoptic_train.json", 1)
    register_all_coco_panoptic(str(root))
    register_all_ade20k_panoptic(str(root))
    return root


def records(source: str, split: str) -> list[dict]:
    return DatasetCatalog.get(f"{SOURCES[source]}_{split}")


def segment_ids(record: dict) -> np.ndarray:
    return rgb2id(np.asarray(Image.open(record["pan_seg_file_name"]).convert("RGB")))


def ade_raw(root: Path, stem: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    folder = {"train": "training", "val": "validation"}[split]
    ade = root / "ADEChallengeData2016"
    semantic = np.asarray(Image.open(ade / "annotations" / folder / f"{stem}.png"))
    instance = np.asarray(Image.open(ade / "annotations_instance" / folder / f"{stem}.png"))
    return semantic, instance


# --- preparation -----------------------------------------------------------------------------


def test_coco_semantic_pngs_follow_the_panoptic_segments(tree):
    class_of = {c["id"]: i for i, c in enumerate(COCO_CATEGORIES)}
    content = json.loads((tree / "coco/annotations/panoptic_val2017.json").read_text())
    for ann in content["annotations"]:
        ids = rgb2id(np.asarray(Image.open(tree / "coco/panoptic_val2017" / ann["file_name"])))
        expected = np.full(ids.shape, 255, np.uint8)
        for s in ann["segments_info"]:
            expected[ids == s["id"]] = class_of[s["category_id"]]
        semantic = np.asarray(Image.open(tree / "coco/panoptic_semseg_val2017" / ann["file_name"]))
        assert semantic.dtype == np.uint8 and semantic.ndim == 2
        np.testing.assert_array_equal(semantic, expected)
        assert set(np.unique(semantic)) <= set(range(133)) | {255} and (semantic == 255).any()


def test_ade20k_semantic_pngs_are_shifted_with_other_ignored(tree):
    for path in (tree / "ADEChallengeData2016/annotations/validation").glob("*.png"):
        raw = np.asarray(Image.open(path)).astype(int)
        converted = np.asarray(Image.open(tree / "ADEChallengeData2016/annotations_detectron2/validation" / path.name))
        np.testing.assert_array_equal(converted, np.where(raw == 0, 255, raw - 1))


def test_ade20k_panoptic_pastes_instances_over_stuff(tree):
    """Independent reference: each instance (R, G) of annotations_instance is a thing segment;
    each stuff class of the semantic PNG is a stuff segment on the pixels no instance covers."""
    to_semantic = ade20k_instance_to_semantic()
    metadata = MetadataCatalog.get("sca_ade20k_panoptic_val")
    things_seen = 0
    for record in records("ade20k", "val"):
        semantic, instance = ade_raw(tree, record["image_id"], "val")
        ids = segment_ids(record)
        keys = instance[..., 0].astype(int) * 256 + instance[..., 1]
        expected = []
        for key in np.unique(keys[instance[..., 0] > 0]):
            expected.append((to_semantic[key // 256] - 1, True, keys == key))
        covered = instance[..., 0] > 0
        for value in np.unique(semantic):
            if value and value not in set(to_semantic.values()):
                expected.append((int(value) - 1, False, (semantic == value) & ~covered))
        expected = [e for e in expected if e[2].any()]
        assert len(record["segments_info"]) == len(expected)
        for category, isthing, mask in expected:
            matches = [s for s in record["segments_info"] if np.array_equal(ids == s["id"], mask)]
            assert len(matches) == 1
            segment = matches[0]
            assert (segment["category_id"], segment["isthing"], segment["iscrowd"]) == (category, isthing, 0)
            assert metadata.stuff_classes[category] == ADE20K_SEM_SEG_CATEGORIES[category]
            ys, xs = np.nonzero(mask)
            assert segment["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert segment["area"] == mask.sum()
            things_seen += isthing
        # thing-class pixels of the semantic PNG without an instance stay void
        orphan = np.isin(semantic, list(to_semantic.values())) & ~covered
        assert (ids[orphan] == 0).all()
    assert things_seen > 5


def test_ade20k_instance_json_holds_every_instance_as_rle(tree):
    coco = COCO(str(tree / "ADEChallengeData2016/ade20k_instance_val.json"))
    assert len(coco.getCatIds()) == 100
    for image in coco.dataset["images"]:
        _, instance = ade_raw(tree, Path(image["file_name"]).stem, "val")
        keys = instance[..., 0].astype(int) * 256 + instance[..., 1]
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
        assert len(annotations) == len(np.unique(keys[instance[..., 0] > 0]))
        for ann in annotations:
            mask = coco.annToMask(ann).astype(bool)
            (key,) = np.unique(keys[mask])
            assert key // 256 == ann["category_id"] and np.array_equal(mask, keys == key)
            assert ann["area"] == mask.sum() and ann["iscrowd"] == 0


def test_scripts_skip_finished_work_on_a_second_run(tree, tmp_path, run_preparation):
    semantic = tree / "coco/panoptic_semseg_val2017"
    before = {p.name: p.stat().st_mtime_ns for p in semantic.iterdir()}
    code, output = run_preparation("prepare_coco_semantic_from_panoptic", "--root", tree, cwd=tmp_path)
    assert code == 0 and "nothing to do" in output
    assert {p.name: p.stat().st_mtime_ns for p in semantic.iterdir()} == before
    code, output = run_preparation("prepare_ade20k_pan_seg", "--root", tree, cwd=tmp_path)
    assert code == 0 and output.count("split skipped") == 2
    assert not list(tree.rglob(".*.partial-*"))  # atomic writes leave no partial files


def test_missing_inputs_are_explained_without_a_stack_trace(tmp_path, monkeypatch, run_preparation):
    """Run as a command from an unrelated directory, root from $DETECTRON2_DATASETS."""
    root = tmp_path / "datasets"
    write_coco_panoptic_tree(root, "val", 1)
    with zipfile.ZipFile(root / "coco/annotations/panoptic_val2017.zip", "w") as inner:  # as shipped: zipped
        for png in (root / "coco/panoptic_val2017").iterdir():
            inner.write(png, f"panoptic_val2017/{png.name}")
            png.unlink()
    (root / "coco/panoptic_val2017").rmdir()
    env = {**os.environ, "DETECTRON2_DATASETS": str(root), "PYTHONPATH": str(ROOT)}
    script = ROOT / "datasets" / "prepare_coco_semantic_from_panoptic.py"
    result = subprocess.run([sys.executable, str(script), "--splits", "val"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "unzip -q" in result.stderr and "panoptic_val2017.zip" in result.stderr

    write_ade20k_raw_tree(root, "train", 1)
    write_ade20k_raw_tree(root, "val", 1)
    for folder in ("training", "validation"):
        for png in (root / "ADEChallengeData2016/annotations_instance" / folder).iterdir():
            png.unlink()
        (root / "ADEChallengeData2016/annotations_instance" / folder).rmdir()
    monkeypatch.setenv("DETECTRON2_DATASETS", str(root))
    code, output = run_preparation("prepare_ade20k_pan_seg", cwd=tmp_path)
    assert code == 2 and "annotations_instance.tar" in output and "ADEChallengeData2016" in output


# --- registration ----------------------------------------------------------------------------


def test_metadata_follows_detectron2_conventions(tree):
    coco, ade = MetadataCatalog.get("sca_coco_panoptic_val"), MetadataCatalog.get("sca_ade20k_panoptic_train")
    assert coco.stuff_classes == [c["name"] for c in COCO_CATEGORIES]  # detectron2's built-in table
    assert coco.stuff_colors == [c["color"] for c in COCO_CATEGORIES]
    for metadata, num_classes, num_things in ((coco, 133, 80), (ade, 150, 100)):
        assert len(metadata.stuff_classes) == len(metadata.stuff_colors) == len(metadata.class_captions) == num_classes
        assert metadata.thing_classes == metadata.stuff_classes  # indexed by contiguous id
        assert len(metadata.thing_dataset_id_to_contiguous_id) == num_things
        assert sorted(metadata.stuff_dataset_id_to_contiguous_id.values()) == list(range(num_classes))
        assert (metadata.ignore_label, metadata.label_divisor) == (255, 1000)
        for key in ("image_root", "panoptic_root", "panoptic_json", "sem_seg_root"):
            assert Path(getattr(metadata, key)).exists()
    assert coco.evaluator_type == "coco_panoptic_seg" and ade.evaluator_type == "ade20k_panoptic_seg"
    assert coco.stuff_dataset_id_to_contiguous_id[200] == 132 and coco.thing_dataset_id_to_contiguous_id[90] == 79
    assert ade.stuff_classes[ade.thing_dataset_id_to_contiguous_id[7]] == "bed"
    assert coco.class_captions[coco.stuff_dataset_id_to_contiguous_id[199]] == "wall"  # "wall-other-merged"
    assert ade.class_captions[44] == "chest of drawers" and ade.class_captions[8] == "window"


def test_registration_is_lazy_and_repeatable(tree, tmp_path):
    missing = tmp_path / "nowhere"
    try:
        register_all_coco_panoptic(str(missing))
        register_all_coco_panoptic(str(missing))  # twice: no error
        assert MetadataCatalog.get("sca_coco_panoptic_train").panoptic_root == str(missing / "coco/panoptic_train2017")
        with pytest.raises(FileNotFoundError, match="panoptic_train2017.json not found.*datasets/README.md"):
            DatasetCatalog.get("sca_coco_panoptic_train")
    finally:
        register_all_coco_panoptic(str(tree))


def test_records_follow_detectron2_panoptic_format(tree):
    for source in SOURCES:
        for record in records(source, "val"):
            assert Path(record["file_name"]).is_file() and Path(record["sem_seg_file_name"]).is_file()
            ids = segment_ids(record)
            assert ids.shape == (record["height"], record["width"])
            for segment in record["segments_info"]:
                ys, xs = np.nonzero(ids == segment["id"])
                assert segment["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
                assert segment["area"] == len(xs)
    assert isinstance(records("ade20k", "val")[0]["image_id"], str)  # the file stem, as Mask2Former


def test_an_unknown_category_is_an_error_naming_it(tree, tmp_path):  # escaping paths: test_escaping_file_names.py
    metadata = MetadataCatalog.get("sca_coco_panoptic_val").as_dict()
    content = json.loads((tree / "coco/annotations/panoptic_val2017.json").read_text())
    content["annotations"][0]["segments_info"][0]["category_id"] = 91  # not a COCO panoptic class
    (tmp_path / "bad.json").write_text(json.dumps(content))
    with pytest.raises(ValueError, match="unknown category_id 91"):
        load_panoptic_json(str(tmp_path / "bad.json"), metadata["image_root"], metadata["panoptic_root"], metadata)


# --- detectron2's own tools ------------------------------------------------------------------


class LabelRecordingVisualizer(Visualizer):
    thing_labels: list = []

    def overlay_instances(self, **kwargs):
        self.thing_labels = kwargs["labels"]
        return super().overlay_instances(**kwargs)


@pytest.mark.parametrize("source", SOURCES)
def test_visualizer_draws_registered_records(tree, source):
    metadata = MetadataCatalog.get(f"{SOURCES[source]}_val")
    drawn_high_thing = False
    for record in records(source, "val"):
        image = np.asarray(Image.open(record["file_name"]).convert("RGB"))
        visualizer = LabelRecordingVisualizer(image, metadata)
        output = visualizer.draw_dataset_dict(record).get_image()
        assert output.shape == image.shape and not np.array_equal(output, image)
        things = [s for s in record["segments_info"] if s["isthing"]]
        expected = [metadata.stuff_classes[s["category_id"]] + ("|crowd" if s["iscrowd"] else "") for s in things]
        assert sorted(visualizer.thing_labels) == sorted(expected)
        drawn_high_thing |= any(s["category_id"] >= len(metadata.thing_dataset_id_to_contiguous_id) for s in things)
    # ADE20k interleaves things and stuff: things with contiguous ids beyond the number of things
    # are labelled with their own class (Mask2Former's things-only thing_classes fail here).
    assert drawn_high_thing or source == "coco"


@pytest.mark.parametrize("source", SOURCES)
def test_panoptic_evaluator_scores_ground_truth_at_pq_100(tree, source, tmp_path):
    name = f"{SOURCES[source]}_val"
    evaluator = COCOPanopticEvaluator(name, output_dir=str(tmp_path))
    evaluator.reset()
    for record in records(source, "val"):
        segments = [{"id": s["id"], "category_id": s["category_id"], "isthing": s["isthing"]} for s in record["segments_info"]]
        evaluator.process([record], [{"panoptic_seg": (torch.from_numpy(segment_ids(record)), segments)}])
    results = evaluator.evaluate()["panoptic_seg"]
    assert results["PQ"] == pytest.approx(100.0) and results["PQ_th"] == pytest.approx(100.0)
    assert results["PQ_st"] == pytest.approx(100.0)


# --- region mapper -------------------------------------------------------------------------


def make_mapper(source, tokenizer, is_train, **options):
    cfg = MapperConfig(image_size=96, mask_size=96, **options)
    name = f"{SOURCES[source]}_{'train' if is_train else 'val'}"
    return build_region_mapper(name, cfg, is_train=is_train, tokenizer=tokenizer, source=source, task_type="recognition")


def sam_resized(ids: np.ndarray, size: int) -> np.ndarray:
    """Independent reference for the eval transform: longest side to ``size`` (SAM rounds the other
    side half up), nearest, pad."""
    scale = size / max(ids.shape)
    new_h, new_w = (int(v * scale + 0.5) for v in ids.shape)
    resized = np.asarray(Image.fromarray(ids.astype(np.int32)).resize((new_w, new_h), Image.NEAREST))
    padded = np.zeros((size, size), np.int32)
    padded[:new_h, :new_w] = resized
    return padded


@pytest.mark.parametrize("source", SOURCES)
def test_eval_regions_are_pixel_exact_with_class_captions(tree, tokenizer, source):
    mapper = make_mapper(source, tokenizer, is_train=False)
    metadata = MetadataCatalog.get(f"{SOURCES[source]}_val")
    for record in records(source, "val"):
        regions = mapper(record)["regions"]
        ids = sam_resized(segment_ids(record), 96)
        present = [s for s in record["segments_info"] if not s["iscrowd"] and (ids == s["id"]).sum() >= 4]
        assert regions["region_ids"].tolist() == [s["id"] for s in present]
        for i, segment in enumerate(present):
            expected = ids == segment["id"]
            assert torch.equal(regions["masks"][i], torch.from_numpy(expected))
            ys, xs = np.nonzero(expected)
            assert regions["boxes"][i].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            assert regions["category_ids"][i] == segment["category_id"]
            assert regions["captions"][i] == [metadata.class_captions[segment["category_id"]]]
        assert regions["input_ids"] == tokenizer.encode([c[0] for c in regions["captions"]])


def lsj_reference(ids: np.ndarray, valid_box: torch.Tensor, size: int, flip: bool) -> np.ndarray:
    """Independent reference for one LSJ draw, read back from the sample's ``valid_box`` (the
    image's extent after the transforms): flip, nearest resize, crop, pad."""
    x0, y0, x1, y1 = valid_box.tolist()
    ids = ids[:, ::-1] if flip else ids
    resized = np.asarray(Image.fromarray(np.ascontiguousarray(ids).astype(np.int32)).resize((round(x1 - x0), round(y1 - y0)), Image.NEAREST))
    crop = resized[round(-y0) : round(-y0) + size, round(-x0) : round(-x0) + size]
    padded = np.zeros((size, size), np.int32)
    padded[: crop.shape[0], : crop.shape[1]] = crop
    return padded


@pytest.mark.parametrize("source", SOURCES)
def test_lsj_crops_regions_masks_boxes_and_prompts_consistently(tree, tokenizer, source):
    mapper = make_mapper(
        source, tokenizer, is_train=True, min_scale=0.5, max_scale=2.0, max_regions=100,
        prompt=PromptConfig(weights={"box": 1, "point": 1, "mask": 1}, num_points=2),
    )
    np.random.seed(0)
    checked = cropped_away = 0
    for _ in range(6):
        for record in records(source, "train")[2:]:  # the first two carry bad input
            sample = mapper(record)
            if sample is None:
                continue
            regions, ids = sample["regions"], segment_ids(record)
            candidates = [s["id"] for s in record["segments_info"] if not s["iscrowd"]]
            matches = []
            for flip in (False, True):
                reference = lsj_reference(ids, sample["valid_box"], 96, flip)
                kept = {i for i in candidates if (reference == i).sum() >= 4}
                if kept == set(regions["region_ids"].tolist()) and all(
                    torch.equal(mask, torch.from_numpy(reference == i)) for i, mask in zip(regions["region_ids"].tolist(), regions["masks"])
                ):
                    matches.append(kept)
            assert matches, "regions differ from the reference crop"
            cropped_away += len(candidates) - len(matches[0])
            for mask, box, points in zip(regions["masks"], regions["boxes"], regions["points"]):
                ys, xs = torch.nonzero(mask, as_tuple=True)
                assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]  # box bounds its mask, tightly
                for x, y in points.tolist():
                    assert mask[int(y), int(x)]  # points lie inside the transformed mask
                checked += 1
    assert checked > 20 and cropped_away > 0


def test_training_samples_at_most_max_regions_with_the_prompt_mix(tree, tokenizer):
    mapper = make_mapper("ade20k", tokenizer, is_train=True, augmentation="none", max_regions=3,
                         prompt=PromptConfig(weights={"box": 1, "point": 1, "mask": 1}))
    np.random.seed(0)
    prompt_types = set()
    for record in records("ade20k", "val") * 3:
        regions = mapper(record)["regions"]
        assert len(regions["region_ids"]) == len(set(regions["region_ids"].tolist())) == 3
        prompt_types |= set(regions["prompt_types"].tolist())
    assert prompt_types == {0, 1, 2}


# --- bad input -----------------------------------------------------------------------------


def test_missing_or_truncated_images_are_skipped_and_counted(tree, tokenizer, tmp_path):
    mapper = make_mapper("coco", tokenizer, is_train=True)
    good = records("coco", "train")[2]
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(Path(good["file_name"]).read_bytes()[:300])
    missing = {**good, "file_name": str(tmp_path / "missing.jpg")}
    assert mapper(missing) is None and mapper(missing) is None  # the same image twice: counted once
    assert mapper({**good, "file_name": str(truncated)}) is None
    np.random.seed(1)
    sample = next(s for s in (mapper(good) for _ in range(20)) if s is not None)
    assert sorted(sample["skipped"]["skipped_images"]) == sorted([missing["file_name"], str(truncated)])
    assert next(s for s in (mapper(good) for _ in range(20)) if s is not None)["skipped"]["skipped_images"] == []


def test_segment_absent_from_the_png_is_dropped_and_counted(tree, tokenizer):
    mapper = make_mapper("coco", tokenizer, is_train=False)
    record = records("coco", "val")[0]
    phantom = {**record["segments_info"][0], "id": int(segment_ids(record).max()) + 1, "iscrowd": 0}
    sample = mapper({**record, "segments_info": record["segments_info"] + [phantom]})
    assert phantom["id"] not in sample["regions"]["region_ids"].tolist()
    assert sample["skipped"]["absent_segments"] == [(record["pan_seg_file_name"], phantom["id"])]


def test_png_of_another_size_than_its_json_entry_is_an_error(tree, tokenizer, tmp_path):
    record = records("ade20k", "val")[0]
    png = Image.open(record["pan_seg_file_name"])
    png.resize((png.width, png.height + 2)).save(tmp_path / "taller.png")
    with pytest.raises(ValueError, match="taller.png: panoptic PNG is .* JSON entry says"):
        make_mapper("ade20k", tokenizer, is_train=False)({**record, "pan_seg_file_name": str(tmp_path / "taller.png")})


def test_skip_counts_reach_the_event_storage():
    batches = [
        {"src": {"skipped": {"skipped_images": ["a.jpg"], "absent_segments": []}}},
        {"src": {"skipped": {"skipped_images": ["a.jpg", "b.jpg"], "absent_segments": [["a.png", 3]]}}},
        {"src": {"skipped": {"skipped_images": [], "absent_segments": [("a.png", 3)]}}},
    ]
    with EventStorage() as storage:
        for _ in SkipCountLogger(batches):
            storage.step()
        latest = storage.latest()
    assert latest["data/src/skipped_images"][0] == 2 and latest["data/src/absent_segments"][0] == 1


# --- train_net.py ----------------------------------------------------------------------------


@pytest.mark.slow
def test_train_net_trains_on_each_prepared_source(tree, tmp_path):
    """``train_net.py data=coco_panoptic`` and ``data=ade20k_panoptic`` (one Hydra multirun: one start-up)."""
    overrides = [
        "-m", "data=coco_panoptic,ade20k_panoptic", f"output_dir={tmp_path}/${{data.name}}", f"hydra.sweep.dir={tmp_path}/sweep",
        "solver.max_iter=2", "log_period=1", "data.num_workers=0", "evaluation.max_images=2", "evaluation.metrics=[exact_match]",
    ]
    env = {**os.environ, "DETECTRON2_DATASETS": str(tree)}
    result = subprocess.run([sys.executable, "train_net.py", *overrides], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for source, dataset in SOURCES.items():
        data, run = f"{source}_panoptic", tmp_path / f"{source}_panoptic"
        rows = [json.loads(line) for line in (run / "metrics.json").read_text().splitlines()]
        steps = [row for row in rows if f"loss_caption/{data}" in row]
        assert [row["iteration"] for row in steps] == [0, 1] and all(np.isfinite(row[f"loss_caption/{data}"]) for row in steps)
        # the deleted image and the phantom segment of the 4-image train split (2 steps x 2 images
        # cover its first epoch), each counted once
        assert steps[-1][f"data/{data}/skipped_images"] == 1 and steps[-1][f"data/{data}/absent_segments"] == 1
        log = (run / "log.txt").read_text()
        assert f"{data}: skipped an image" in log and f"{data}: segment" in log
        assert (run / "model_final.pth").is_file()
        assert "exact_match" in json.loads((run / "eval" / f"{dataset}_val" / "metrics.json").read_text())


def test_more_than_255_segments_keep_exact_labels(tree, tokenizer, tmp_path):
    """Past 255 candidates the label map is float32 (still exact): every tile is its own region."""
    ids = np.arange(1, 21 * 16 + 1, dtype=np.int32).reshape(16, 21).repeat(4, 0).repeat(4, 1)  # 336 tiles of 4x4
    Image.fromarray(id2rgb(ids)).save(tmp_path / "tiles.png")
    Image.fromarray(np.zeros((*ids.shape, 3), np.uint8)).save(tmp_path / "tiles.jpg")
    segments = [{"id": int(i), "category_id": int(i) % 133, "isthing": True, "iscrowd": 0, "area": 16, "bbox": []} for i in np.unique(ids)]
    record = {"file_name": str(tmp_path / "tiles.jpg"), "pan_seg_file_name": str(tmp_path / "tiles.png"), "image_id": 1,
              "height": ids.shape[0], "width": ids.shape[1], "segments_info": segments}
    regions = make_mapper("coco", tokenizer, is_train=False)(record)["regions"]
    assert regions["region_ids"].tolist() == [s["id"] for s in segments]
    for mask, box, points in zip(regions["masks"], regions["boxes"], regions["points"]):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] and 16 <= len(xs) <= 25
        assert all(mask[int(y), int(x)] for x, y in points.tolist())
