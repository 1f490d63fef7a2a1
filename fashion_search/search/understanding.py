"""Query understanding: the words of a query that name a catalog attribute value.

The vocabulary is the catalog's own: every value of the fields in :data:`UNDERSTOOD_FIELDS`,
lower-cased, as written and in the singular (``Shirts`` is also ``shirt``; plural-only garments
such as ``Shorts`` are not, so "short sleeve" is no article type), plus the few variants in
:data:`VARIANTS` (men's, mens, man; tee, t-shirt; gray). Apostrophes and hyphens inside words
are dropped before matching (``t-shirt`` is ``tshirt``), and the longest phrase wins
(``navy blue`` over ``blue``, ``casual shoes`` over ``casual``). The first value found per field
is kept. The search service turns what is understood into soft boosts (or, when asked, filters).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pydantic.alias_generators import to_camel

#: The fields a query's words are matched against (snake_case).
UNDERSTOOD_FIELDS = ("gender", "base_colour", "article_type", "season", "usage")
#: Words that name a value although the catalog does not write them so (value -> variants).
VARIANTS: dict[str, tuple[str, ...]] = {
    "Men": ("man", "mens", "male", "gents"),
    "Women": ("woman", "womens", "ladies", "lady", "female"),
    "Boys": ("boy",),
    "Girls": ("girl",),
    "Tshirts": ("tee", "tees", "t shirt", "t shirts"),
    "Grey": ("gray",),
    "Grey Melange": ("gray melange",),
    "Fall": ("autumn",),
    "Sports": ("sport", "sporty"),
}
#: Values named only in the plural (their singular is another word).
PLURAL_ONLY = frozenset(
    {"shorts", "jeans", "briefs", "boxers", "tights", "capris", "trousers", "glasses"}
)
_APOSTROPHES_AND_HYPHENS = re.compile("(?<=\\w)['\u2019-](?=\\w)")
_NOT_A_WORD = re.compile(r"[^\w]+")


def words(text: str) -> list[str]:
    """Lower-cased words of ``text``, with apostrophes and hyphens inside words dropped."""
    return _NOT_A_WORD.sub(" ", _APOSTROPHES_AND_HYPHENS.sub("", text.lower())).split()


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


@dataclass(frozen=True)
class Vocabulary:
    """Phrases (tuples of words) -> the (camelCase field, value) they name."""

    phrases: Mapping[tuple[str, ...], tuple[str, str]]

    @classmethod
    def of(cls, values: Mapping[str, Iterable[str | int]]) -> Vocabulary:
        """From each understood field's values (``values`` keyed by camelCase field name)."""
        phrases: dict[tuple[str, ...], tuple[str, str]] = {}
        for field in UNDERSTOOD_FIELDS:
            name = to_camel(field)
            for value in values.get(name, ()):
                text = str(value)
                forms = [words(text), *(words(v) for v in VARIANTS.get(text, ()))]
                forms.append([*forms[0][:-1], singular(forms[0][-1])] if forms[0] else [])
                for form in forms:
                    if form:
                        phrases.setdefault(tuple(form), (name, text))
        return cls(phrases)

    @property
    def longest(self) -> int:
        """Words in the longest phrase."""
        return max((len(p) for p in self.phrases), default=0)

    def understand(self, text: str) -> dict[str, str]:
        """camelCase field -> value for the phrases of ``text`` (longest first, left to right;
        the first value per field)."""
        tokens = words(text)
        found: dict[str, str] = {}
        start = 0
        while start < len(tokens):
            for size in range(min(self.longest, len(tokens) - start), 0, -1):
                named = self.phrases.get(tuple(tokens[start : start + size]))
                if named is not None:
                    found.setdefault(*named)
                    start += size
                    break
            else:
                start += 1
        return found
