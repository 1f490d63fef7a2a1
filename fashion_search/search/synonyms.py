"""Synonym sets that merchandisers add on top of query understanding's lexicon.

Three shapes (JSON, camelCase):

- two-way, ``{"synonyms": ["jumper", "sweater", "pullover"]}``: a query with any of them finds
  what the others find;
- one-way, ``{"words": ["tee"], "synonyms": ["tshirt"]}``: "tee" finds what "tshirt" finds,
  not the reverse;
- words to attribute values, ``{"words": ["hoodie"], "values": {"articleType":
  ["Sweatshirts"]}}``: the words name those values, as the lexicon's entries do.

Before typos are read and phrases matched (:class:`~fashion_search.search.understanding.
Vocabulary`), each phrase of a set is replaced by the set's canonical phrase: a one-way set's
first synonym (followed on while that is a source itself), a two-way set's member that most
product titles contain; so understanding, the text tower and the title search see the
catalog's word. The title search also takes every alternative: a two-way member matches titles
with any member, a one-way source titles with itself or any of its synonyms.

A phrase is a source in one set at most, and one-way sets never form a cycle (``a -> b -> a``,
or a one-way pair inside a two-way set): :func:`check_sets` refuses them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Self, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from fashion_search.catalog.limits import NO_NUL_PATTERN
from fashion_search.errors import InvalidArgumentError
from fashion_search.search.words import phrases_in, words

#: Limits of one set.
MAX_SYNONYMS = 20
MAX_PHRASE_CHARS = 100

Phrase: TypeAlias = tuple[str, ...]
PhraseText = Annotated[
    str, Field(min_length=1, max_length=MAX_PHRASE_CHARS, pattern=NO_NUL_PATTERN)
]
PhraseList = Annotated[list[PhraseText], Field(max_length=MAX_SYNONYMS)]


class SynonymSet(BaseModel):
    """A synonym set (module docstring): ``synonyms`` alone is two-way; ``words`` with
    ``synonyms`` is one-way; ``words`` with ``values`` names attribute values."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    words: PhraseList = Field(default_factory=list)
    synonyms: PhraseList = Field(default_factory=list)
    values: dict[str, Annotated[list[PhraseText], Field(min_length=1)]] = Field(
        default_factory=dict
    )

    @model_validator(mode="after")
    def _one_shape(self) -> Self:
        for phrase in [*self.words, *self.synonyms]:
            if not words(phrase):
                raise ValueError(f"{phrase!r} has no words")
        if self.values:
            if not self.words or self.synonyms:
                raise ValueError("values go with words (and without synonyms)")
        elif self.words and not self.synonyms:
            raise ValueError("words need synonyms or values")
        elif not self.words and len(self.synonyms) < 2:
            raise ValueError("a two-way set needs at least 2 synonyms")
        overlap = {_phrase(p) for p in self.words} & {_phrase(p) for p in self.synonyms}
        if overlap:
            raise ValueError(f"{' '.join(sorted(overlap)[0])!r} is both a word and a synonym")
        return self

    @property
    def two_way(self) -> bool:
        """Whether every phrase stands for the others."""
        return not self.words

    @property
    def sources(self) -> list[Phrase]:
        """The phrases that this set rewrites."""
        return [_phrase(p) for p in (self.synonyms if self.two_way else self.words)]


def _phrase(text: str) -> Phrase:
    return tuple(words(text))


def check_sets(sets: Sequence[SynonymSet]) -> None:
    """InvalidArgumentError when a phrase is a source in two sets or one-way sets form a
    cycle (over two-way sets taken as one phrase each)."""
    owner: dict[Phrase, int] = {}
    for index, synonym_set in enumerate(sets):
        for source in synonym_set.sources:
            if owner.setdefault(source, index) != index:
                raise InvalidArgumentError(f"{' '.join(source)!r} is already in another set")
    node = {p: owner[p] if sets[owner[p]].two_way else p for p in owner}
    edges: dict[object, set[object]] = {}
    for synonym_set in sets:
        if synonym_set.two_way or synonym_set.values:
            continue
        for source in synonym_set.sources:
            targets = {node.get(_phrase(t), _phrase(t)) for t in synonym_set.synonyms}
            edges.setdefault(node[source], set()).update(targets)
    done: set[object] = set()

    def visit(at: object, path: list[object]) -> None:
        if at in path:
            cycle = [_describe(n, sets) for n in [*path[path.index(at) :], at]]
            raise InvalidArgumentError(f"synonym sets form a cycle: {' -> '.join(cycle)}")
        if at in done:
            return
        for target in sorted(edges.get(at, ()), key=str):
            visit(target, [*path, at])
        done.add(at)

    for start in sorted(edges, key=str):
        visit(start, [])


def _describe(node: object, sets: Sequence[SynonymSet]) -> str:
    if isinstance(node, int):  # a two-way set
        return "{" + ", ".join(sets[node].synonyms) + "}"
    assert isinstance(node, tuple)
    return " ".join(node)


@dataclass(frozen=True)
class Synonyms:
    """Checked synonym sets, ready to apply: source phrase -> its canonical phrase and its
    alternatives (the phrases the title search takes for it), and lexicon-shaped entries of
    the sets that name values."""

    canonical: Mapping[Phrase, Phrase]
    alternatives: Mapping[Phrase, tuple[Phrase, ...]]
    entries: tuple[dict[str, list[str]], ...]

    @classmethod
    def of(cls, sets: Sequence[SynonymSet], title_words: Mapping[str, int] = {}) -> Synonyms:
        """From sets that passed :func:`check_sets`; ``title_words`` (how many titles each
        word is in) picks a two-way set's canonical member."""
        step: dict[Phrase, Phrase] = {}
        targets_of: dict[Phrase, list[Phrase]] = {}
        entries = []
        for s in sets:
            if s.values:
                entries.append({"words": list(s.words), **s.values})
                continue
            targets = [_phrase(t) for t in s.synonyms]
            if s.two_way:
                best = max(targets, key=lambda p: (min(title_words.get(w, 0) for w in p), p))
                for member in targets:
                    step[member] = best
                    targets_of[member] = targets
            else:
                for source in s.sources:
                    step[source] = targets[0]
                    targets_of[source] = [source, *targets]

        def alternatives(phrase: Phrase, seen: frozenset[Phrase]) -> list[Phrase]:
            found = [phrase]
            for target in targets_of.get(phrase, ()):
                if target not in seen:  # on along one-way sets
                    found += alternatives(target, seen | {target})
            return list(dict.fromkeys(found))

        canonical = {}
        for source in step:
            seen, phrase = {source}, step[source]
            while phrase in step and step[phrase] not in seen:  # on along one-way sets
                seen.add(phrase)
                phrase = step[phrase]
            canonical[source] = phrase
        found = {source: tuple(alternatives(source, frozenset({source}))) for source in step}
        return cls(canonical, found, tuple(entries))

    @property
    def longest(self) -> int:
        """Words in the longest source phrase."""
        return max((len(p) for p in self.canonical), default=0)

    def spans(self, tokens: Sequence[str]) -> list[tuple[int, int, Phrase]]:
        """Where source phrases are in ``tokens`` (longest first, left to right): start, end,
        and the phrase."""
        return phrases_in(tokens, self.longest, lambda p: p if p in self.canonical else None)

    def rewrite(self, tokens: Sequence[str]) -> list[str]:
        """``tokens`` with each source phrase replaced by its canonical phrase."""
        out: list[str] = []
        position = 0
        for start, end, phrase in self.spans(tokens):
            out += [*tokens[position:start], *self.canonical[phrase]]
            position = end
        return out + list(tokens[position:])
