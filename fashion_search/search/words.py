"""The words of a query, title or phrase as every matcher compares them."""

from __future__ import annotations

import re
import unicodedata

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
