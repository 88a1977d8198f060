"""Compact storage of a box dataset's records (Objects365, V3Det, Visual Genome): a few numpy arrays
instead of a Python dict per image and per box (and, for captioned boxes, one UTF-8 buffer of captions).

A train-scale split (Objects365: 1.7 M images, ~25 M boxes) costs ~30 bytes per box here, against
several hundred as Python dicts and ~70 in detectron2's serialized list. The arrays are never
written after construction, so forked loader workers share their pages. Records are built on
access, in detectron2's instances format.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from detectron2.structures import BoxMode

__all__ = ["BoxRecords"]


class BoxRecords(torch.utils.data.Dataset):
    """Records of one split, indexable like the list of dataset dicts it stands for.

    ``records[i]`` is ``{file_name, image_id, height, width, annotations: [{id, bbox (XYWH),
    bbox_mode, category_id (contiguous), iscrowd}]}``, built afresh on each access; a slice gives a
    list of such dicts. detectron2 accepts a ``torch.utils.data.Dataset`` from ``DatasetCatalog``
    as it is (``build_detection_train_loader``, ``get_detection_dataset_dicts``).

    Args:
        directories: image folders; image ``i`` is ``directories[directory_index[i]]/<its base name>``.
        directory_index: (N,) folder of each image.
        base_names: UTF-8 base names of the images, concatenated.
        name_offsets: (N + 1,) image ``i``'s base name is ``base_names[name_offsets[i]:name_offsets[i + 1]]``.
        image_ids, heights, widths: (N,) per image.
        box_offsets: (N + 1,) image ``i``'s boxes are rows ``box_offsets[i]:box_offsets[i + 1]``.
        boxes: (M, 4) float64 XYWH (as in the file); category_ids: (M,) contiguous; iscrowd: (M,); annotation_ids: (M,).
        captions: for sources that caption each box (Visual Genome): ``(utf8, offsets)``, box ``j``'s
            caption is ``utf8[offsets[j]:offsets[j + 1]]``; its annotation then carries
            ``sentences: [caption]``, as the referring sources' do.
    """

    def __init__(
        self,
        *,
        directories: list[str],
        directory_index: np.ndarray,
        base_names: np.ndarray,
        name_offsets: np.ndarray,
        image_ids: np.ndarray,
        heights: np.ndarray,
        widths: np.ndarray,
        box_offsets: np.ndarray,
        boxes: np.ndarray,
        category_ids: np.ndarray,
        iscrowd: np.ndarray,
        annotation_ids: np.ndarray,
        captions: tuple[np.ndarray, np.ndarray] | None = None,
    ):
        self.directories = list(directories)
        self.directory_index = directory_index
        self.base_names = base_names
        self.name_offsets = name_offsets
        self.image_ids = image_ids
        self.heights = heights
        self.widths = widths
        self.box_offsets = box_offsets
        self.boxes = boxes
        self.category_ids = category_ids
        self.iscrowd = iscrowd
        self.annotation_ids = annotation_ids
        self.captions = captions

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def num_boxes(self) -> int:
        return len(self.boxes)

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays."""
        arrays = (self.directory_index, self.base_names, self.name_offsets, self.image_ids, self.heights, self.widths,
                  self.box_offsets, self.boxes, self.category_ids, self.iscrowd, self.annotation_ids, *(self.captions or ()))
        return sum(a.nbytes for a in arrays)

    def caption(self, box: int) -> str:
        """The caption of box row ``box`` (captioned sources only)."""
        utf8, offsets = self.captions
        return utf8[offsets[box] : offsets[box + 1]].tobytes().decode("utf-8")

    def file_name(self, index: int) -> str:
        start, end = self.name_offsets[index], self.name_offsets[index + 1]
        base_name = self.base_names[start:end].tobytes().decode("utf-8")
        return os.path.join(self.directories[self.directory_index[index]], base_name)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        index = int(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"record {index} out of range ({len(self)} records)")
        index %= len(self)
        start, end = self.box_offsets[index], self.box_offsets[index + 1]
        annotations = [
            {"id": ann_id, "bbox": bbox, "bbox_mode": BoxMode.XYWH_ABS, "category_id": category_id, "iscrowd": crowd}
            for ann_id, bbox, category_id, crowd in zip(
                self.annotation_ids[start:end].tolist(),
                self.boxes[start:end].tolist(),
                self.category_ids[start:end].tolist(),
                self.iscrowd[start:end].tolist(),
            )
        ]
        if self.captions is not None:
            for row, annotation in enumerate(annotations, start):
                annotation["sentences"] = [self.caption(row)]
        return {
            "file_name": self.file_name(index),
            "image_id": int(self.image_ids[index]),
            "height": int(self.heights[index]),
            "width": int(self.widths[index]),
            "annotations": annotations,
        }

    def __iter__(self):
        return (self[i] for i in range(len(self)))
