"""Region mappers for streamed records: the catalog mappers, reading the image from the record's
bytes instead of a file, and counting the regions a side table left without a caption."""

from __future__ import annotations

import io

import numpy as np
from detectron2.data import detection_utils as utils
from PIL import Image, ImageOps

from sca.data.mappers.boxes import BoxRegionMapper
from sca.data.mappers.image_input import record_skipped_image
from sca.data.mappers.referring import ReferringRegionMapper

__all__ = ["UNCAPTIONED_REGIONS", "StreamedRegionMapper"]

UNCAPTIONED_REGIONS = "uncaptioned_regions"


class _StreamedImage:
    """Mixin for a :class:`~sca.data.mappers.region_mapper.RegionMapper`: the image is decoded from
    ``image_bytes`` (EXIF orientation applied); an undecodable one is skipped and counted."""

    def read_image(self, dataset_dict: dict) -> np.ndarray | None:
        try:
            with Image.open(io.BytesIO(dataset_dict["image_bytes"])) as image:
                image = utils.convert_PIL_to_numpy(ImageOps.exif_transpose(image), "RGB")
        except (OSError, SyntaxError, ValueError) as error:  # what PIL raises on broken images
            record_skipped_image(self.skips, self.source, dataset_dict["file_name"], error)
            return None
        utils.check_image_size(dataset_dict, image)
        return image

    def count_uncaptioned(self, dataset_dict: dict) -> None:
        for region_id in dataset_dict.get("uncaptioned", ()):
            key = (dataset_dict["file_name"], region_id)
            self.skips.record(UNCAPTIONED_REGIONS, key, f"{self.source}: region {region_id} of {key[0]} has no caption")


class _StreamedMaskMapper(_StreamedImage, ReferringRegionMapper):
    SKIP_KINDS = ReferringRegionMapper.SKIP_KINDS + (UNCAPTIONED_REGIONS,)


class _StreamedBoxMapper(_StreamedImage, BoxRegionMapper):
    SKIP_KINDS = BoxRegionMapper.SKIP_KINDS + (UNCAPTIONED_REGIONS,)


class StreamedRegionMapper:
    """A streamed record (:mod:`sca.data.streaming.formats`) -> region sample.

    Records whose regions all have masks go through the referring mapper (masks rasterized and
    transformed with the image; malformed RLEs dropped and counted as ``invalid_masks``), box-only
    records through the box mapper (built on first use: it refuses mask prompts). In training, an
    image's candidate regions are first thinned at random to ``candidates_per_region`` times
    ``max_regions`` (SA-1B images carry ~100 masks: only the sampled ones need rasterizing).

    Args:
        candidates_per_region: see above; 0 keeps every region.
        **kwargs: the :class:`~sca.data.mappers.region_mapper.RegionMapper` arguments.
    """

    def __init__(self, cfg, *, candidates_per_region: int = 4, **kwargs):
        self.cfg = cfg
        self.kwargs = kwargs
        self.candidates_per_region = candidates_per_region
        self.masks = _StreamedMaskMapper(cfg, **kwargs)
        self._boxes = None

    def __call__(self, dataset_dict: dict) -> dict | None:
        annotations = dataset_dict["annotations"]
        limit = self.candidates_per_region * self.cfg.max_regions
        if self.kwargs["is_train"] and limit and len(annotations) > limit:
            chosen = np.sort(np.random.choice(len(annotations), limit, replace=False))
            dataset_dict = {**dataset_dict, "annotations": [annotations[i] for i in chosen]}
        if all("segmentation" in a for a in annotations):
            mapper = self.masks
        else:
            if self._boxes is None:
                self._boxes = _StreamedBoxMapper(self.cfg, **self.kwargs)
            mapper = self._boxes
        mapper.count_uncaptioned(dataset_dict)
        return mapper(dataset_dict)
