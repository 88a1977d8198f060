"""Region mappers, one per annotation family, chosen from a dataset's metadata."""

from __future__ import annotations

from detectron2.data import DatasetCatalog, MetadataCatalog

from sca.config import MapperConfig
from sca.data.caption_tokenizer import CaptionTokenizer
from sca.data.mappers.boxes import BoxRegionMapper
from sca.data.mappers.panoptic import PanopticRegionMapper
from sca.data.mappers.referring import ReferringRegionMapper

__all__ = ["BoxRegionMapper", "PanopticRegionMapper", "ReferringRegionMapper", "build_region_mapper"]


def build_region_mapper(
    dataset_name: str,
    cfg: MapperConfig,
    *,
    is_train: bool,
    tokenizer: CaptionTokenizer,
    source: str,
    task_type: str,
):
    """The mapper for ``dataset_name``'s annotation family (panoptic: has a ``panoptic_root``;
    referring: a ``refs_file``; boxes: a ``json_file`` of COCO detection format). Captions are the metadata's
    ``class_captions`` where given, else its class names; a box source whose classes come from its
    annotation file (V3Det) is loaded first to learn them."""
    metadata = MetadataCatalog.get(dataset_name)
    if hasattr(metadata, "panoptic_root"):
        return PanopticRegionMapper(
            cfg,
            is_train=is_train,
            tokenizer=tokenizer,
            class_names=metadata.get("class_captions", metadata.stuff_classes),
            source=source,
            task_type=task_type,
        )
    if hasattr(metadata, "refs_file"):
        return ReferringRegionMapper(cfg, is_train=is_train, tokenizer=tokenizer, source=source, task_type=task_type)
    if hasattr(metadata, "json_file"):
        if not hasattr(metadata, "class_captions"):
            DatasetCatalog.get(dataset_name)  # sets the classes read from the file
        return BoxRegionMapper(
            cfg,
            is_train=is_train,
            tokenizer=tokenizer,
            class_names=metadata.class_captions,
            source=source,
            task_type=task_type,
        )
    raise ValueError(f"no region mapper for dataset '{dataset_name}': its metadata names no known annotation family")
