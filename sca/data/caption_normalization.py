"""Caption normalisation of DenseCap's Visual Genome preprocessing (``preprocess.py`` of
jcjohnson/densecap), selected per mapper by ``MapperConfig.caption_normalization``.

``"densecap"`` applies, in this order (:data:`DENSECAP_RULES`):

1. ``replace``: DenseCap's replacements of a few non-ASCII characters (``½`` -> ``half``, ``°`` ->
   `` degree``, ``é`` -> ``e``, ``—`` -> ``-``, ``™`` and ``…`` removed, ...);
2. ``lowercase``;
3. ``strip punctuation``: every character of Python's ``string.punctuation`` is deleted (not
   replaced by a space: "man's" -> "mans", "t-shirt" -> "tshirt");
4. ``split``: words are separated by whitespace and joined by one space;
5. ``drop long``: a region whose caption has more than :data:`DENSECAP_MAX_WORDS` (15) words is
   dropped, and so is one left with no word.

``"none"`` keeps the phrase as written (evaluation scores against the raw phrases by default).
"""

from __future__ import annotations

import string
from collections import Counter
from typing import Iterable

__all__ = [
    "CAPTION_NORMALIZATIONS",
    "DENSECAP_MAX_WORDS",
    "DENSECAP_RULES",
    "densecap_caption",
    "normalize_captions",
    "normalization_report",
]

CAPTION_NORMALIZATIONS = ("none", "densecap")
DENSECAP_MAX_WORDS = 15
DENSECAP_RULES = (
    "replace non-ASCII characters as DenseCap does",
    "lowercase",
    "delete punctuation (string.punctuation)",
    "collapse whitespace",
    f"drop regions with more than {DENSECAP_MAX_WORDS} words or none",
)
_REPLACEMENTS = {"½": "half", "—": "-", "™": "", "¢": "cent", "ç": "c", "û": "u", "é": "e", "°": " degree", "è": "e", "…": ""}
_DELETE_PUNCTUATION = str.maketrans("", "", string.punctuation)


def _densecap_steps(phrase: str) -> tuple[str, str, str, list[str]]:
    """The phrase after each of rules 1-4: replaced, lowercased, punctuation deleted, its words."""
    replaced = phrase
    for old, new in _REPLACEMENTS.items():
        replaced = replaced.replace(old, new)
    lower = replaced.lower()
    stripped = lower.translate(_DELETE_PUNCTUATION)
    return replaced, lower, stripped, stripped.split()


def densecap_caption(phrase: str) -> str | None:
    """The phrase as DenseCap's preprocessing writes it, or ``None`` when the region is dropped
    (more than 15 words, or none)."""
    words = _densecap_steps(phrase)[3]
    return " ".join(words) if 0 < len(words) <= DENSECAP_MAX_WORDS else None


def normalize_captions(captions: list[str], normalization: str) -> list[str]:
    """A region's reference captions under ``normalization``; those the rules drop are left out
    (an empty list: the region is dropped)."""
    if normalization == "none":
        return list(captions)
    if normalization != "densecap":
        raise ValueError(f"caption normalization '{normalization}' is not one of {CAPTION_NORMALIZATIONS}")
    return [c for c in map(densecap_caption, captions) if c is not None]


def normalization_report(phrases: Iterable[str]) -> dict[str, int]:
    """What ``"densecap"`` normalisation does to ``phrases``: how many each rule changes or drops."""
    counts: Counter = Counter()
    for phrase in phrases:
        counts["phrases"] += 1
        replaced, lower, stripped, words = _densecap_steps(phrase)
        counts["replaced_characters"] += replaced != phrase
        counts["lowercased"] += lower != replaced
        counts["punctuation_deleted"] += stripped != lower
        counts["dropped_longer_than_15_words"] += len(words) > DENSECAP_MAX_WORDS
        counts["dropped_no_word_left"] += not words
    counts["kept"] = counts["phrases"] - counts["dropped_longer_than_15_words"] - counts["dropped_no_word_left"]
    return dict(counts)
