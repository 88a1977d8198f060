"""ADE20k (SceneParsing, ``ADEChallengeData2016``) class tables.

* the 150 semantic classes: names from detectron2's built-in ``ADE20K_SEM_SEG_CATEGORIES``
  (semantic PNG value ``v`` in 1..150 is class ``v - 1``; 0 is "other");
* the 100 instance classes (``annotations_instance`` R channel, 1-based) and their semantic class,
  from the ADE release's ``ade20k_instance_catid_mapping.txt`` and ``ade20k_instance_categories.json``
  shipped in ``tables/``. A semantic class is a *thing* exactly when an instance class maps to it.
"""

from __future__ import annotations

import colorsys
import json
from functools import lru_cache
from pathlib import Path

from detectron2.data.datasets.builtin_meta import ADE20K_SEM_SEG_CATEGORIES

__all__ = ["ade20k_categories", "ade20k_instance_categories", "ade20k_instance_to_semantic"]

TABLES = Path(__file__).resolve().parent / "tables"


@lru_cache(maxsize=None)
def ade20k_instance_to_semantic() -> dict[int, int]:
    """Instance class id (1..100) -> semantic class value (1..150), from the ADE mapping table."""
    lines = (TABLES / "ade20k_instance_catid_mapping.txt").read_text().splitlines()[1:]  # header line
    mapping: dict[int, int] = {}
    for line in lines:
        instance_id, semantic_id, _full_ade_id = (int(v) for v in line.split())
        if mapping.setdefault(instance_id, semantic_id) != semantic_id:
            raise ValueError(f"ade20k_instance_catid_mapping.txt maps instance class {instance_id} twice")
    return mapping


@lru_cache(maxsize=None)
def ade20k_instance_categories() -> list[dict]:
    """The 100 instance classes ``[{id (1..100), name}]`` (COCO ``categories`` of the instance JSON)."""
    return json.loads((TABLES / "ade20k_instance_categories.json").read_text())["categories"]


def _palette(n: int) -> list[list[int]]:
    """``n`` distinct, deterministic RGB colours (golden-ratio hue steps, three brightness levels)."""
    colors = []
    for i in range(n):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.65, (0.95, 0.75, 0.55)[i % 3])
        colors.append([round(255 * r), round(255 * g), round(255 * b)])
    return colors


@lru_cache(maxsize=None)
def ade20k_categories() -> tuple[dict, ...]:
    """The 150 panoptic categories ``{id (0..149), name, isthing, color}`` (ids = semantic value - 1)."""
    things = {semantic_id - 1 for semantic_id in ade20k_instance_to_semantic().values()}
    colors = _palette(len(ADE20K_SEM_SEG_CATEGORIES))
    return tuple(
        {"id": i, "name": name, "isthing": int(i in things), "color": colors[i]}
        for i, name in enumerate(ADE20K_SEM_SEG_CATEGORIES)
    )
