"""The words of a query, title or phrase as every matcher compares them."""

from __future__ import annotations

import re
import unicodedata

_APOSTROPHES_AND_HYPHENS = re.compile("(?<=\\w)['\u2019-](?=\\w)")
_NOT_A_WORD = re.compile(r"[^\w]+")


def words(text: str) -> list[str]:
    """Lower-cased words of ``text`` without accents, apostrophes and hyphens inside words."""
    folded = unicodedata.normalize("NFKD", text.lower())
    plain = "".join(c for c in folded if not unicodedata.combining(c))
    return _NOT_A_WORD.sub(" ", _APOSTROPHES_AND_HYPHENS.sub("", plain)).split()
