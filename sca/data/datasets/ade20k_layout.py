"""The raw ``ADEChallengeData2016`` tree, as the ADE20k preparation scripts read it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from sca.data.preparation import PreparationError, require

__all__ = ["ADE20K_SPLITS", "AdeImage", "ade20k_images", "read_instance_keys"]

ADE20K_SPLITS = {"train": "training", "val": "validation"}
_SCENE_PARSING_URL = "http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip"
_INSTANCE_URL = "http://sceneparsing.csail.mit.edu/data/ChallengeData2017/annotations_instance.tar"


@dataclass(frozen=True)
class AdeImage:
    """One image and its annotation PNGs (``instance`` is None when not requested)."""

    stem: str
    image: Path
    semantic: Path
    instance: Path | None


def ade20k_images(root: Path, split: str, with_instances: bool) -> list[AdeImage]:
    """Every image of ``split`` ("train"/"val") with its annotation PNGs, checked to exist.

    Args:
        root: the datasets root (holding ``ADEChallengeData2016``).
        with_instances: also require ``annotations_instance`` (a separate download).
    Raises:
        PreparationError: naming what is missing and where to get it.
    """
    ade = require(root / "ADEChallengeData2016", f"download {_SCENE_PARSING_URL} and unzip it into {root}")
    folder = ADE20K_SPLITS[split]
    image_dir = require(ade / "images" / folder, f"incomplete tree: re-extract {_SCENE_PARSING_URL}")
    semantic_dir = require(ade / "annotations" / folder, f"incomplete tree: re-extract {_SCENE_PARSING_URL}")
    instance_dir = None
    if with_instances:
        instance_dir = require(
            ade / "annotations_instance" / folder,
            f"the instance annotations are a separate download: {_INSTANCE_URL}\n  extract it into {ade} "
            f"(tar -xf annotations_instance.tar -C {ade})",
        )
    images, missing = [], []
    for path in sorted(image_dir.glob("*.jpg")):
        semantic = semantic_dir / f"{path.stem}.png"
        instance = instance_dir / f"{path.stem}.png" if instance_dir else None
        missing += [p.name for p in (semantic, instance) if p is not None and not p.is_file()]
        images.append(AdeImage(path.stem, path, semantic, instance))
    if not images:
        raise PreparationError(f"no .jpg images in {image_dir}\n  re-extract {_SCENE_PARSING_URL}")
    if missing:
        raise PreparationError(f"{len(missing)} annotation PNGs of {split} are missing (e.g. {missing[:3]}) in {ade}")
    return images


def read_instance_keys(path: Path) -> np.ndarray:
    """An ``annotations_instance`` PNG as HxW keys ``256 * class + index`` (R = instance class,
    G = instance index); 0 where R is 0 (no instance)."""
    rgb = np.asarray(Image.open(path).convert("RGB"))
    return np.where(rgb[..., 0] > 0, rgb[..., 0].astype(np.int32) * 256 + rgb[..., 1], 0)
