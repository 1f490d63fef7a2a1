"""The words of a query, title or phrase as every matcher compares them."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")

#: Values named only in the plural (their singular is another word).
PLURAL_ONLY = frozenset(
    {"shorts", "jeans", "briefs", "boxers", "tights", "capris", "trousers", "glasses"}
)
_APOSTROPHES_AND_HYPHENS = re.compile("(?<=\\w)['\u2019-](?=\\w)")
_NOT_A_WORD = re.compile(r"[^\w]+")


def words(text: str) -> list[str]:
    """Lower-cased words of ``text`` without accents, apostrophes and hyphens inside words."""
    folded = unicodedata.normalize("NFKD", text.lower())
    plain = "".join(c for c in folded if not unicodedata.combining(c))
    return _NOT_A_WORD.sub(" ", _APOSTROPHES_AND_HYPHENS.sub("", plain)).split()


def singular(word: str) -> str:
    """An English plural's singular, by suffix (good enough for the catalog's article types)."""
    if word in PLURAL_ONLY or len(word) < 4:
        return word
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("sses", "xes", "ches", "shes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def phrases_in(
    tokens: Sequence[str], longest: int, find: Callable[[tuple[str, ...]], T | None]
) -> list[tuple[int, int, T]]:
    """The phrases of ``tokens`` (up to ``longest`` words) that ``find`` knows, the longest
    first, left to right, none overlapping: start, end, and what ``find`` gave."""
    found: list[tuple[int, int, T]] = []
    start = 0
    while start < len(tokens):
        for size in range(min(longest, len(tokens) - start), 0, -1):
            known = find(tuple(tokens[start : start + size]))
            if known is not None:
                found.append((start, start + size, known))
                start += size
                break
        else:
            start += 1
    return found
