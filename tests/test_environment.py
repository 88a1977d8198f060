"""The installed stack works: detectron2 (with the compat layer), data structures, engine."""

import numpy as np
import pytest
import torch


def test_compat_applied_only_where_needed():
    import detectron2

    from sca.compat import apply

    report = apply()
    assert report.detectron2_found
    assert apply() is report  # idempotent
    if report.stub_compiled_ops:
        from detectron2 import _C

        from sca.compat import MissingCompiledOpError

        with pytest.raises(MissingCompiledOpError, match="'nms_rotated'.*without its C\\+\\+/CUDA extensions"):
            _C.nms_rotated(torch.zeros(1, 5), torch.zeros(1), 0.5)
    for alias in report.numpy_aliases:
        assert getattr(np, alias) in (bool, int, float, object)
    assert detectron2.__version__


def test_missing_op_stand_in_names_the_op_and_the_fix():
    from sca.compat import MissingCompiledOpError, _MissingCompiledOps

    ops = _MissingCompiledOps("detectron2._C")
    with pytest.raises(MissingCompiledOpError) as error:
        ops.deform_conv_forward()
    assert "deform_conv_forward" in str(error.value) and "pip install" in str(error.value)
    with pytest.raises(AttributeError):
        ops.__wrapped__  # dunder lookups behave like a normal module


def test_dataset_and_metadata_catalog():
    from detectron2.data import DatasetCatalog, MetadataCatalog

    DatasetCatalog.register("sca_test_tiny", lambda: [{"file_name": "x.jpg", "image_id": 1}])
    try:
        MetadataCatalog.get("sca_test_tiny").set(thing_classes=["a"])
        assert DatasetCatalog.get("sca_test_tiny")[0]["image_id"] == 1
        assert MetadataCatalog.get("sca_test_tiny").thing_classes == ["a"]
    finally:
        DatasetCatalog.remove("sca_test_tiny")
        MetadataCatalog.remove("sca_test_tiny")


def test_lsj_transforms_keep_image_and_segmentation_aligned():
    from detectron2.data import transforms as T

    image = np.zeros((120, 200, 3), np.uint8)
    image[30:60, 50:100] = 255
    seg = np.zeros((120, 200), np.uint8)
    seg[30:60, 50:100] = 7
    aug_input = T.AugInput(image, sem_seg=seg)
    augs = T.AugmentationList([T.ResizeScale(0.5, 1.5, 256, 256), T.FixedSizeCrop((256, 256))])
    np.random.seed(0)
    augs(aug_input)
    assert aug_input.image.shape == (256, 256, 3) and aug_input.sem_seg.shape == (256, 256)
    def bbox(mask):
        ys, xs = np.nonzero(mask)
        return np.array([xs.min(), ys.min(), xs.max(), ys.max()])

    # image resized bilinearly, segmentation with nearest: the object's extent agrees within a pixel
    assert np.abs(bbox(aug_input.image[..., 0] > 200) - bbox(aug_input.sem_seg == 7)).max() <= 1


def test_bitmasks_and_polygons():
    from detectron2.structures import BitMasks, polygons_to_bitmask

    mask = polygons_to_bitmask([np.array([10, 10, 30, 10, 30, 20, 10, 20], dtype=np.float64)], 40, 50)
    assert mask.dtype == bool and 150 <= mask.sum() <= 250
    boxes = BitMasks(torch.from_numpy(mask)[None]).get_bounding_boxes().tensor[0].tolist()
    assert boxes == [10.0, 10.0, 30.0, 20.0]


def test_visualizer_draws_a_panoptic_record(demo_records):
    from detectron2.data import MetadataCatalog
    from detectron2.utils.visualizer import Visualizer
    from PIL import Image

    record = demo_records["sca_demo_val"][0]
    image = np.asarray(Image.open(record["file_name"]).convert("RGB"))
    output = Visualizer(image, MetadataCatalog.get("sca_demo_val")).draw_dataset_dict(record)
    rendered = output.get_image()
    assert rendered.shape == image.shape and not np.array_equal(rendered, image)


def test_simple_trainer_runs_steps():
    from detectron2.engine import SimpleTrainer

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)

    class Loss(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, batch):
            return {"loss": ((self.model(batch) - 1.0) ** 2).mean()}

    def data():
        while True:
            yield torch.ones(8, 4)

    trainer = SimpleTrainer(Loss(), data(), torch.optim.SGD(model.parameters(), lr=0.05))
    before = ((model(torch.ones(1, 4)) - 1) ** 2).item()
    trainer.train(0, 20)
    assert ((model(torch.ones(1, 4)) - 1) ** 2).item() < before * 0.1


def test_map_dataset_draws_another_sample_when_the_mapper_skips_one():
    from detectron2.data.common import MapDataset

    dataset = MapDataset(list(range(40)), lambda x: None if x < 30 else x)
    assert all(dataset[i] >= 30 for i in range(35))  # skipped indices fall back to mappable ones
