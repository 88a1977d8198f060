"""COCO-detection-format (boxes only) loading and metadata, shared by every box source
(Objects365, V3Det, Visual Genome: an annotation may carry a ``caption``).

The annotation JSON is streamed (:mod:`json_stream`) into :class:`~sca.data.datasets.box_records.BoxRecords`:
no step holds the file's text or one Python object per box. Loading checks the file as it goes:

* an annotation whose ``category_id`` is not among the file's ``categories``, or whose
  ``image_id`` is not among its ``images``, is an error naming the annotation;
* a box is clipped to its image; one with no area left (width or height <= 0, or entirely
  outside the image, or not finite) is dropped, and so is a captioned box whose caption is empty.
  Images left without boxes are dropped. All of them are counted and logged.

Metadata (detectron2 conventions): ``thing_classes``, ``thing_dataset_id_to_contiguous_id`` (by
ascending category id) and ``class_captions`` (the captions used for the classes).
"""

from __future__ import annotations

import json
import logging
import os
from array import array
from dataclasses import dataclass, field
from typing import Any, Callable, TextIO

import numpy as np
from tqdm import tqdm

from sca.data.datasets.box_records import BoxRecords
from sca.data.datasets.catalog import register_split
from sca.data.datasets.json_stream import iter_top_level
from sca.data.datasets.dataset_paths import path_inside, warn_escaping

__all__ = [
    "BoxLoadResult",
    "BoxColumns",
    "box_metadata",
    "clip_boxes",
    "read_coco_boxes",
    "records_from_columns",
    "load_coco_boxes_json",
    "log_box_counts",
    "register_box_source",
    "write_coco_boxes",
]

logger = logging.getLogger(__name__)

_PROGRESS_MIN_BYTES = 64 * 2**20  # show a progress bar for files at least this large


def box_metadata(categories: list[dict[str, Any]], class_captions: list[str] | None = None) -> dict[str, Any]:
    """Class metadata from COCO ``categories`` (sorted by id: contiguous id = rank of the id).

    Args:
        categories: dicts with ``id`` and ``name``.
        class_captions: caption per class in the same order; default: the names.
    """
    categories = sorted(categories, key=lambda c: c["id"])
    names = [c["name"] for c in categories]
    return {
        "thing_classes": names,
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(categories)},
        "class_captions": list(class_captions) if class_captions is not None else list(names),
    }


def clip_boxes(boxes: np.ndarray, widths: np.ndarray, heights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Clip XYWH boxes to their images, in place; a box inside its image keeps its exact values.

    Args:
        boxes: (M, 4) float64 XYWH, changed in place; widths, heights: (M,) the size of each box's image.
    Returns:
        ``kept`` (M,) bool (some area is left) and ``clipped`` (M,) bool (kept, but changed by clipping).
    """
    x1, y1 = boxes[:, 0] + boxes[:, 2], boxes[:, 1] + boxes[:, 3]
    outside = (boxes[:, 0] < 0) | (boxes[:, 1] < 0) | (x1 > widths) | (y1 > heights)
    changed = boxes[outside]
    np.maximum(changed[:, :2], 0, out=changed[:, :2])
    changed[:, 2] = np.minimum(x1[outside], widths[outside]) - changed[:, 0]
    changed[:, 3] = np.minimum(y1[outside], heights[outside]) - changed[:, 1]
    boxes[outside] = changed
    with np.errstate(invalid="ignore"):
        kept = (boxes[:, 2] > 0) & (boxes[:, 3] > 0)  # False for NaN
    return kept, kept & outside


@dataclass
class BoxLoadResult:
    """What :func:`read_coco_boxes` found: the records, the file's categories (sorted by id),
    its other top-level values (``info``, ``licenses``...) and counts of what was clipped or dropped."""

    records: BoxRecords
    categories: list[dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


class BoxColumns:
    """Growable typed columns for the streamed images and annotations (``array``: C storage).
    Captions (``caption`` of an annotation) get columns once the first one is seen."""

    def __init__(self):
        self.image_ids, self.heights, self.widths = array("q"), array("q"), array("q")
        self.directory_index, self.name_offsets, self.base_names = array("q"), array("q", [0]), bytearray()
        self.directories: dict[str, int] = {}
        self.ann_ids, self.ann_image_ids, self.ann_categories = array("q"), array("q"), array("q")
        self.ann_boxes, self.ann_crowd = array("d"), array("b")  # boxes exactly as in the file
        self.captions: bytearray | None = None
        self.caption_offsets: array | None = None

    def add_image(self, image: dict) -> None:
        directory, base_name = os.path.split(os.path.normpath(image["file_name"]))
        if base_name == "..":  # the file_name is only ".."s: it leaves its folder
            directory = os.path.join(directory, base_name)
        self.directory_index.append(self.directories.setdefault(directory, len(self.directories)))
        self.base_names += base_name.encode("utf-8")
        self.name_offsets.append(len(self.base_names))
        self.image_ids.append(image["id"])
        self.heights.append(image["height"])
        self.widths.append(image["width"])

    def add_annotation(self, ann: dict) -> None:
        self.ann_ids.append(ann["id"])
        self.ann_image_ids.append(ann["image_id"])
        self.ann_categories.append(ann["category_id"])
        self.ann_boxes.extend(ann["bbox"][:4] if len(ann["bbox"]) >= 4 else (float("nan"),) * 4)
        self.ann_crowd.append(1 if ann.get("iscrowd", 0) else 0)
        caption = ann.get("caption")
        if caption is not None and self.captions is None:
            self.captions, self.caption_offsets = bytearray(), array("q", [0] * len(self.ann_ids))
        if self.captions is not None:
            self.captions += str(caption or "").strip().encode("utf-8")
            self.caption_offsets.append(len(self.captions))


def _stream(json_file: str, columns: BoxColumns) -> tuple[list[dict], dict[str, Any]]:
    """Fill ``columns`` from the file; returns its categories and other top-level values."""
    categories, extra = [], {}
    size = os.path.getsize(json_file)
    with tqdm(total=size, unit="B", unit_scale=True, desc=f"reading {os.path.basename(json_file)}",
              disable=size < _PROGRESS_MIN_BYTES, dynamic_ncols=True) as progress:
        try:
            for key, value in iter_top_level(json_file, progress=progress.update):
                if key == "annotations":
                    columns.add_annotation(value)
                elif key == "images":
                    columns.add_image(value)
                elif key == "categories":
                    categories.append(value)
                else:
                    extra.setdefault(key, []).append(value)
        except (KeyError, TypeError, OverflowError) as error:
            raise ValueError(f"{json_file}: not a COCO detection JSON ({type(error).__name__}: {error})") from None
    return categories, extra


def _folder_under(image_root: str) -> Callable[[str], str | None]:
    """The default folder resolution: ``image_root/<folder>``; ``None`` for a folder that leaves it."""

    def resolve(directory: str) -> str | None:
        return path_inside(image_root, directory) if directory else os.path.normpath(image_root)

    return resolve


def _contiguous(values: np.ndarray, known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of each of ``values`` in the sorted array ``known`` and whether it is there."""
    index = np.searchsorted(known, values).clip(0, max(len(known) - 1, 0))
    found = known[index] == values if len(known) else np.zeros(len(values), bool)
    return index, found


def read_coco_boxes(
    json_file: str,
    image_root: str,
    *,
    resolve_directory: Callable[[str], str] | None = None,
) -> BoxLoadResult:
    """Read a COCO detection JSON into compact records (see the module docstring for the checks).

    Memory: the streamed columns (~57 bytes per box), then the records' arrays (~45 bytes per
    box), each column released once gathered.

    Args:
        json_file: the annotation JSON.
        image_root: folder the images' ``file_name`` values are relative to.
        resolve_directory: maps the folder part of a ``file_name`` to the folder where its images
            are, or to ``None`` when it leaves ``image_root`` (called once per distinct folder);
            default: that folder under ``image_root``.
    Raises:
        FileNotFoundError: when ``json_file`` does not exist.
        ValueError: naming the file (and the annotation) for malformed JSON, an annotation of an
            unknown image or category, or duplicate ids.

    Images whose ``file_name`` leaves ``image_root`` are dropped with their boxes, counted
    (``images_outside_root``) and logged.
    """
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"{json_file} not found: datasets/README.md shows the expected tree and how to prepare it")
    columns = BoxColumns()
    categories, extra = _stream(json_file, columns)
    return records_from_columns(json_file, columns, categories, image_root, resolve_directory=resolve_directory, extra=extra)


def _gather_strings(
    utf8: np.ndarray, offsets: np.ndarray, index: np.ndarray, chunk: int = 2**16
) -> tuple[np.ndarray, np.ndarray]:
    """The strings ``index`` of a concatenated UTF-8 buffer, as a new buffer and its offsets.
    Gathered ``chunk`` strings at a time: a byte-index array for all of them at once would cost 8
    bytes per byte (800 MB for VG's 100 MB of phrases)."""
    lengths = offsets[index + 1] - offsets[index]
    new_offsets = np.zeros(len(index) + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_offsets[1:])
    gathered = np.empty(new_offsets[-1], dtype=np.uint8)
    for start in range(0, len(index), chunk):
        part, base = slice(start, start + chunk), new_offsets[start]
        end = new_offsets[min(start + chunk, len(index))]
        positions = np.repeat(offsets[index[part]] - new_offsets[:-1][part] + base, lengths[part]) + np.arange(end - base)
        gathered[base:end] = utf8[positions]
    return gathered, new_offsets


def records_from_columns(
    json_file: str,
    columns: BoxColumns,
    categories: list[dict],
    image_root: str,
    *,
    resolve_directory: Callable[[str], str] | None = None,
    extra: dict[str, Any] | None = None,
) -> BoxLoadResult:
    """Check the streamed ``columns`` and gather them into compact records (the checks and
    :func:`read_coco_boxes`'s arguments are described there; ``json_file`` names the input in errors)."""
    if not categories:
        raise ValueError(f"{json_file}: no 'categories'")
    categories = sorted(categories, key=lambda c: c["id"])
    category_ids = np.array([c["id"] for c in categories], dtype=np.int64)
    if (np.diff(category_ids) == 0).any():
        raise ValueError(f"{json_file}: duplicate category ids")
    order, sorted_image_ids, heights, widths = _image_table(json_file, columns)
    boxes, box_counts = _box_table(json_file, columns, category_ids, order, sorted_image_ids, heights, widths)
    clipped, dropped, empty_captions = boxes.pop("clipped"), boxes.pop("dropped"), boxes.pop("empty_captions")
    resolve = resolve_directory or _folder_under(image_root)
    folders = [resolve(d) for d in columns.directories]
    outside = _drop_images_outside_root(json_file, image_root, columns, folders, order, boxes, box_counts)
    with_boxes = box_counts > 0
    images = order[with_boxes]  # file positions of the kept images, in image-id order

    base_names, name_offsets = _gather_strings(
        np.frombuffer(columns.base_names, dtype=np.uint8), np.frombuffer(columns.name_offsets, dtype=np.int64), images
    )
    records = BoxRecords(
        directories=folders,
        directory_index=np.frombuffer(columns.directory_index, dtype=np.int64)[images].astype(np.int32),
        base_names=base_names,
        name_offsets=name_offsets,
        image_ids=sorted_image_ids[with_boxes],
        heights=heights[images],
        widths=widths[images],
        box_offsets=np.concatenate([[0], np.cumsum(box_counts[with_boxes])]),
        **boxes,
    )
    counts = {
        "images": len(records),
        "boxes": records.num_boxes,
        "clipped_boxes": clipped,
        "dropped_boxes": dropped,
        "images_without_boxes": int((~with_boxes).sum()) - outside,
        "images_outside_root": outside,
    }
    if records.captions is not None:
        counts["dropped_empty_captions"] = empty_captions
    return BoxLoadResult(records, categories, extra or {}, counts)


def _drop_images_outside_root(
    json_file: str, image_root: str, columns: BoxColumns, folders: list, order: np.ndarray, boxes: dict, box_counts: np.ndarray
) -> int:
    """Removes (in place) the boxes of the images whose folder leaves ``image_root`` (``None`` in
    ``folders``) and zeroes their box counts; returns how many images that drops (logged)."""
    escaping_folders = [i for i, folder in enumerate(folders) if folder is None]
    if not escaping_folders:
        return 0
    directory_index = np.frombuffer(columns.directory_index, dtype=np.int64)
    outside = np.isin(directory_index[order], escaping_folders)  # per image, in image-id order
    names = list(columns.directories)
    name_offsets = np.frombuffer(columns.name_offsets, dtype=np.int64)
    first = [
        os.path.join(names[directory_index[p]], bytes(columns.base_names[name_offsets[p] : name_offsets[p + 1]]).decode("utf-8"))
        for p in order[outside][:5]
    ]
    warn_escaping(json_file, os.path.normpath(image_root), first, count=int(outside.sum()))
    keep = ~np.repeat(outside, box_counts)  # boxes are grouped by image, in image-id order
    for key in ("boxes", "category_ids", "iscrowd", "annotation_ids"):
        boxes[key] = boxes[key][keep]
    if "captions" in boxes:
        boxes["captions"] = _gather_strings(*boxes["captions"], np.nonzero(keep)[0])
    box_counts[outside] = 0
    return int(outside.sum())


def _image_table(json_file: str, columns: BoxColumns) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The images sorted by id: (file positions in id order, sorted ids, heights, widths in file order)."""
    image_ids = np.frombuffer(columns.image_ids, dtype=np.int64)
    order = np.argsort(image_ids, kind="stable")
    sorted_image_ids = image_ids[order]
    duplicates = np.flatnonzero(np.diff(sorted_image_ids) == 0)
    if len(duplicates):
        raise ValueError(f"{json_file}: image id {sorted_image_ids[duplicates[0]]} appears twice in 'images'")
    heights = np.frombuffer(columns.heights, dtype=np.int64).astype(np.int32)
    widths = np.frombuffer(columns.widths, dtype=np.int64).astype(np.int32)
    bad = np.flatnonzero((heights <= 0) | (widths <= 0))
    if len(bad):
        raise ValueError(f"{json_file}: image {image_ids[bad[0]]} has a width or height <= 0")
    return order, sorted_image_ids, heights, widths


def _box_table(
    json_file: str,
    columns: BoxColumns,
    category_ids: np.ndarray,
    order: np.ndarray,
    sorted_image_ids: np.ndarray,
    heights: np.ndarray,
    widths: np.ndarray,
) -> tuple[dict[str, Any], np.ndarray]:
    """The kept boxes grouped by image (in image-id order) and the number per image (id order).
    Each streamed column is released once gathered."""
    ann_ids = np.frombuffer(columns.ann_ids, dtype=np.int64)
    ann_categories = np.frombuffer(columns.ann_categories, dtype=np.int64)
    category_index, known = _contiguous(ann_categories, category_ids)
    if not known.all():
        first = np.flatnonzero(~known)[0]
        raise ValueError(
            f"{json_file}: annotation {ann_ids[first]} (image {columns.ann_image_ids[first]}) has unknown category_id "
            f"{ann_categories[first]}; {int((~known).sum())} annotations have categories absent from 'categories'"
        )
    category_index = category_index.astype(np.int32)
    del ann_categories, known
    columns.ann_categories = None
    ann_image_ids = np.frombuffer(columns.ann_image_ids, dtype=np.int64)
    rank, known = _contiguous(ann_image_ids, sorted_image_ids)  # each box's image, by rank of its id
    if not known.all():
        first = np.flatnonzero(~known)[0]
        raise ValueError(f"{json_file}: annotation {ann_ids[first]} has image_id {ann_image_ids[first]}, absent from 'images'")
    rank = rank.astype(np.int32)
    del ann_image_ids, known
    columns.ann_image_ids = None
    sorted_ids = np.sort(ann_ids)
    duplicates = np.flatnonzero(np.diff(sorted_ids) == 0)
    if len(duplicates):
        raise ValueError(f"{json_file}: annotation id {sorted_ids[duplicates[0]]} appears twice")
    del sorted_ids

    boxes = np.frombuffer(columns.ann_boxes, dtype=np.float64).reshape(-1, 4)
    position = order[rank]  # each box's image in file order
    kept, clipped = clip_boxes(boxes, widths[position], heights[position])
    del position
    caption_offsets = None if columns.caption_offsets is None else np.frombuffer(columns.caption_offsets, dtype=np.int64)
    empty_captions = 0
    if caption_offsets is not None:
        empty = kept & (np.diff(caption_offsets) == 0)
        empty_captions = int(empty.sum())
        kept &= ~empty
    kept_index = np.flatnonzero(kept)
    kept_index = kept_index[np.argsort(rank[kept_index], kind="stable")]  # grouped by image
    table = {
        "boxes": boxes[kept_index],
        "category_ids": category_index[kept_index],
        "iscrowd": np.frombuffer(columns.ann_crowd, dtype=np.uint8)[kept_index],
        "annotation_ids": ann_ids[kept_index],
        "clipped": int(clipped.sum()),
        "dropped": int(len(kept) - len(kept_index)) - empty_captions,
        "empty_captions": empty_captions,
    }
    if caption_offsets is not None:
        table["captions"] = _gather_strings(np.frombuffer(columns.captions, dtype=np.uint8), caption_offsets, kept_index)
        columns.captions = columns.caption_offsets = None
    box_counts = np.bincount(rank[kept_index], minlength=len(sorted_image_ids))
    del boxes, ann_ids
    columns.ann_boxes = columns.ann_crowd = columns.ann_ids = None
    return table, box_counts


def load_coco_boxes_json(
    json_file: str,
    image_root: str,
    *,
    resolve_directory: Callable[[str], str] | None = None,
    check_categories: Callable[[str, list[dict]], None] | None = None,
) -> BoxLoadResult:
    """:func:`read_coco_boxes`, then ``check_categories(json_file, categories)`` (which raises on a
    mismatch), then a log of what was clipped or dropped."""
    result = read_coco_boxes(json_file, image_root, resolve_directory=resolve_directory)
    if check_categories is not None:
        check_categories(json_file, result.categories)
    log_box_counts(json_file, result.counts)
    return result


def log_box_counts(name: str, counts: dict[str, int]) -> None:
    """Log what loading kept, clipped and dropped (the ``counts`` of a :class:`BoxLoadResult`)."""
    logger.info("%s: %d images, %d boxes", name, counts["images"], counts["boxes"])
    if counts["clipped_boxes"] or counts["dropped_boxes"] or counts["images_without_boxes"] or counts.get("dropped_empty_captions"):
        logger.warning(
            "%s: clipped %d boxes to their image; dropped %d boxes with no area inside their image, %d boxes with an "
            "empty caption and %d images left without boxes", name, counts["clipped_boxes"], counts["dropped_boxes"],
            counts.get("dropped_empty_captions", 0), counts["images_without_boxes"],
        )


def register_box_source(name: str, loader, metadata: dict[str, Any], *, image_root: str, json_file: str, evaluator_type: str) -> None:
    """Register a box split under ``name`` (lazy: ``loader`` runs on first request; registering
    the same name again replaces it)."""
    register_split(name, loader, dict(image_root=image_root, json_file=json_file, evaluator_type=evaluator_type, **metadata))


def write_coco_boxes(f: TextIO, records: BoxRecords, keep: np.ndarray, image_dir: str, categories: list[dict], info: dict) -> None:
    """Stream the kept images of ``records`` and their boxes (and captions) as a COCO detection
    JSON that :func:`read_coco_boxes` reads back (``file_name`` relative to ``image_dir``).

    Args:
        keep: (N,) bool, the images to write.
        categories: the file's categories, ``{id, name}``; contiguous id k is the k-th by id.
        info: written as the file's ``info``.
    """
    categories = sorted(categories, key=lambda c: c["id"])
    category_ids = np.array([c["id"] for c in categories], dtype=np.int64)
    f.write('{"info": ' + json.dumps(info) + ', "images": [')
    kept = np.flatnonzero(keep)
    for n, i in enumerate(kept):
        image = {"id": int(records.image_ids[i]), "file_name": os.path.relpath(records.file_name(i), image_dir),
                 "height": int(records.heights[i]), "width": int(records.widths[i])}
        f.write((", " if n else "") + json.dumps(image))
    f.write('], "annotations": [')
    first = True
    for i in tqdm(kept, desc="writing", unit="img", dynamic_ncols=True, leave=False):
        start, end = records.box_offsets[i], records.box_offsets[i + 1]
        for row, ann_id, box, category, crowd in zip(
            range(start, end), records.annotation_ids[start:end].tolist(), records.boxes[start:end].tolist(),
            category_ids[records.category_ids[start:end]].tolist(), records.iscrowd[start:end].tolist(),
        ):
            ann = {"id": ann_id, "image_id": int(records.image_ids[i]), "category_id": category, "bbox": box,
                   "area": box[2] * box[3], "iscrowd": crowd}
            if records.captions is not None:
                ann["caption"] = records.caption(row)
            f.write(("" if first else ", ") + json.dumps(ann))
            first = False
    f.write('], "categories": ' + json.dumps(categories) + "}")
