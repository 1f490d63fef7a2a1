"""Query understanding: the words of a query that name catalog attribute values.

The vocabulary is the catalog's own values of :data:`UNDERSTOOD_FIELDS` (lower-cased, as
written and in the singular: ``Shirts`` is also ``shirt``; plural-only garments such as
``Shorts`` are not, so "short sleeve" is no article type), and the shoppers' words of
``lexicon.json`` (kept there as data: everyday synonyms in British and American English,
occasion and season words, Spanish), each naming one or more values, after the synonym sets
merchandisers add (:mod:`~fashion_search.search.synonyms`: their phrases are replaced by their
canonical ones before anything else is read). Accents, apostrophes and
hyphens inside words are dropped before matching (``t-shirt`` is ``tshirt``, ``marrón`` is
``marron``), and the longest phrase wins (``navy blue`` over ``blue``, ``running shoes`` over
``running``). A word that is neither in the vocabulary nor in any product title, and is one
edit (insertion, deletion, substitution or swap of neighbours) from a vocabulary word, is read
as that word (``tshrit`` is ``tshirt``; of several, the one in most titles). The first values
found per field are kept.

What is understood is a :data:`Understood` mapping, the shape of the catalog's filters (one
value, or several): the search service turns it into soft boosts (or, when asked, filters),
and :meth:`Vocabulary.rewrite` puts the catalog's words in place of the shopper's, for the
text tower and the title search.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from typing import Any, Literal, TypeAlias

from pydantic.alias_generators import to_camel

from fashion_search.catalog.filters import Filters
from fashion_search.search.styles import colour_words
from fashion_search.search.synonyms import Phrase, Synonyms, SynonymSet
from fashion_search.search.terms import Term
from fashion_search.search.words import phrases_in, singular, words

#: The fields a query's words are matched against (snake_case).
UNDERSTOOD_FIELDS = ("gender", "base_colour", "article_type", "season", "usage")
#: The shoppers' words, by language.
LEXICON = Path(__file__).with_name("lexicon.json")
#: Words shorter than this are never read as typos (too many near misses).
MIN_TYPO_CHARS = 4

#: How long the catalog's vocabulary is reused before it is read again.
VOCABULARY_TTL_S = 60.0

#: camelCase field -> the value, or the values, a query names (the shape of filters).
Understood: TypeAlias = dict[str, str | list[str]]
#: What a search does with what its query names: nothing, soft boosts, or filters.
Understanding: TypeAlias = Literal["off", "boost", "filter"]
#: The catalog's values of each field (camelCase) and how many titles each word is in.
CatalogWords: TypeAlias = tuple[Mapping[str, Iterable[str | int]], Mapping[str, int]]


def one_edit_apart(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` differ by exactly one insertion, deletion, substitution or swap
    of neighbouring letters."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) > len(b):
        a, b = b, a
    start = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), len(a))
    if len(a) < len(b):  # one letter more in b
        return a[start:] == b[start + 1 :]
    if a[start + 1 :] == b[start + 1 :]:  # a substitution
        return True
    return a[start : start + 2] == b[start : start + 2][::-1] and a[start + 2 :] == b[start + 2 :]


@cache
def _lexicon() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(LEXICON.read_text())
    return loaded


def lexicon() -> list[dict[str, Any]]:
    """Every entry of ``lexicon.json``, all languages."""
    return [entry for language in ("en", "es") for entry in _lexicon()[language]]


@cache
def ignored_words() -> frozenset[str]:
    """Words never read as typos (short function words of every language)."""
    return frozenset(_lexicon()["ignore"])


def _forms(value: str) -> tuple[list[str], list[str]]:
    """The words of a catalog value as written and in the singular."""
    form = words(value)
    return form, [*form[:-1], singular(form[-1])] if form else form


def _deletions(word: str) -> set[str]:
    return {word[:i] + word[i + 1 :] for i in range(len(word))}


@dataclass(frozen=True)
class Match:
    """A phrase found in a query: where, and the values it names (camelCase field -> values)."""

    start: int
    end: int
    named: Mapping[str, tuple[str, ...]]


@dataclass(frozen=True)
class Vocabulary:
    """Phrases (tuples of words) -> the values they name; the words of product titles; the
    merchandisers' synonym sets; the words of the catalog's colours."""

    phrases: Mapping[Phrase, Mapping[str, tuple[str, ...]]]
    title_words: Mapping[str, int] = field(default_factory=dict)
    synonyms: Synonyms = field(default_factory=lambda: Synonyms({}, {}, ()))
    colours: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls,
        values: Mapping[str, Iterable[str | int]],
        title_words: Mapping[str, int] = {},
        synonym_sets: Sequence[SynonymSet] = (),
    ) -> Vocabulary:
        """From each understood field's values (``values`` keyed by camelCase field name), the
        merchandisers' synonym sets (checked: :func:`~fashion_search.search.synonyms.
        check_sets`) and the lexicon; ``title_words``: how many titles each word is in (typos
        are read only for words in none)."""
        synonyms = Synonyms.of(synonym_sets, title_words)
        known = {
            to_camel(f): {str(v) for v in values.get(to_camel(f), ())} for f in UNDERSTOOD_FIELDS
        }
        phrases: dict[Phrase, dict[str, tuple[str, ...]]] = {}

        def add(phrase: list[str], name: str, named: tuple[str, ...]) -> None:
            if phrase and named:
                phrases.setdefault(tuple(phrase), {}).setdefault(name, named)

        for name, kept in known.items():
            for value in sorted(kept):
                for form in _forms(value):
                    add(form, name, (value,))
        for entry in [*synonyms.entries, *lexicon()]:  # the merchandisers' first
            for name, named in entry.items():
                if name == "words" or name not in known:
                    continue
                present = tuple(v for v in named if v in known[name])
                for phrase in entry["words"]:
                    add(words(phrase), name, present)
        colours = colour_words(values.get("baseColour", ()))
        return cls(phrases, dict(title_words), synonyms, colours)

    @cached_property
    def longest(self) -> int:
        """Words in the longest phrase."""
        return max((len(p) for p in self.phrases), default=0)

    @cached_property
    def _words(self) -> dict[str, int]:
        """Every word of a phrase that a typo may stand for, by how many titles it is in."""
        return {
            w: self.title_words.get(w, 0)
            for phrase in self.phrases
            for w in phrase
            if len(w) >= MIN_TYPO_CHARS
        }

    @cached_property
    def _deletes(self) -> dict[str, list[str]]:
        """Each vocabulary word and each form of it with one letter deleted -> the words."""
        index: dict[str, list[str]] = {}
        for word in self._words:
            for form in {word, *_deletions(word)}:
                index.setdefault(form, []).append(word)
        return index

    def corrected(self, tokens: list[str]) -> list[str]:
        """``tokens`` with each typo of a vocabulary word read as that word."""
        out = []
        for token in tokens:
            if (
                len(token) >= MIN_TYPO_CHARS
                and token not in self._words
                and token not in self.title_words
                and token not in ignored_words()
                and token.isalpha()
            ):
                near = {
                    w
                    for form in {token, *_deletions(token)}
                    for w in self._deletes.get(form, ())
                    if one_edit_apart(token, w)
                }
                if near:
                    token = max(near, key=lambda w: (self._words[w], w))
            out.append(token)
        return out

    def matches(self, text: str) -> tuple[list[str], list[Match]]:
        """The words of ``text`` (typos read) and the phrases found in them, longest first, left
        to right."""
        tokens = self.corrected(self.synonyms.rewrite(words(text)))
        found = phrases_in(tokens, self.longest, self._named)
        return tokens, [Match(start, end, named) for start, end, named in found]

    def _named(self, phrase: Phrase) -> Mapping[str, tuple[str, ...]] | None:
        """What ``phrase`` names (a single word also in the singular), if anything."""
        named = self.phrases.get(phrase)
        if named is None and len(phrase) == 1:
            named = self.phrases.get((singular(phrase[0]),))
        return named

    def understand(self, text: str) -> Understood:
        """camelCase field -> value (or values) for the phrases of ``text`` (the first per
        field)."""
        understood: Understood = {}
        for match in self.matches(text)[1]:
            for name, named in match.named.items():
                understood.setdefault(name, named[0] if len(named) == 1 else list(named))
        return understood

    def rewrite(self, text: str) -> str:
        """``text`` in the catalog's words: each phrase found is replaced by the first value it
        names when it is not the catalog's own (``vestido rojo`` is ``Dresses Red``,
        ``sneakers for men`` is ``Casual Shoes for men``), typos read, the other words kept;
        ``text`` itself when nothing is found or changed."""
        tokens, found = self.matches(text)
        if not found and tokens == words(text):
            return text
        out: list[str] = []
        position = 0
        for match in found:
            out += tokens[position : match.start]
            phrase = tokens[match.start : match.end]
            catalog_words = all(phrase in _forms(v[0]) for v in match.named.values())
            out += phrase if catalog_words else [v[0] for v in match.named.values()]
            position = match.end
        return " ".join(out + tokens[position:])

    def title_query(self, text: str) -> tuple[str, list[list[str]]]:
        """What the title search looks for: the words of ``text`` outside synonym phrases (in
        the catalog's words: :meth:`rewrite`), and for each synonym phrase, its alternatives
        (a title needs one of each)."""
        tokens = words(text)
        spans = self.synonyms.spans(tokens)
        if not spans:
            return self.rewrite(text), []
        rest: list[str] = []
        position = 0
        for start, end, _ in spans:
            rest += tokens[position:start]
            position = end
        rest += tokens[position:]
        groups = [[" ".join(p) for p in self.synonyms.alternatives[s[2]]] for s in spans]
        return self.rewrite(" ".join(rest)) if rest else "", groups


class QueryReader:
    """Query understanding for searches: the catalog's values and title words (``load``, read
    again every :data:`VOCABULARY_TTL_S`) and the merchandisers' synonym sets (as
    ``synonym_sets`` gives them, each call) as one vocabulary, applied as a search's
    :data:`Understanding` asks."""

    def __init__(
        self,
        load: Callable[[], CatalogWords],
        synonym_sets: Callable[[], Sequence[SynonymSet]] = tuple,
    ) -> None:
        self._load = load
        self._synonym_sets = synonym_sets
        self._words: tuple[float, CatalogWords] | None = None
        self._vocabulary: tuple[tuple[float, Sequence[SynonymSet]], Vocabulary] | None = None

    def vocabulary(self) -> Vocabulary:
        """The vocabulary of the catalog's words, at most :data:`VOCABULARY_TTL_S` old, and of
        the current synonym sets (built again when either changes)."""
        now = time.monotonic()
        if self._words is None or now - self._words[0] > VOCABULARY_TTL_S:
            self._words = (now, self._load())
        key = (self._words[0], tuple(self._synonym_sets()))
        if self._vocabulary is None or self._vocabulary[0] != key:
            self._vocabulary = (key, Vocabulary.of(*self._words[1], key[1]))
        return self._vocabulary[1]

    def understand(
        self,
        text: str,
        mode: Understanding,
        filters: Filters | None,
        known: Callable[[], Understood] | None = None,
    ) -> tuple[Understood, Filters | None]:
        """What ``text`` names (over what ``known`` gives), and the filters (with it, when
        understanding filters)."""
        if mode == "off":
            return {}, filters
        understood = {**(known() if known else {}), **self.vocabulary().understand(text)}
        if mode == "filter" and understood:
            return understood, {**understood, **(filters or {})}
        return understood, filters

    def rewrite(self, terms: Sequence[Term], mode: Understanding) -> list[Term]:
        """The terms in the catalog's words (synonyms, Spanish and typos read), unless
        understanding is off."""
        if mode == "off":
            return list(terms)
        vocabulary = self.vocabulary()
        return [Term(vocabulary.rewrite(t.text), t.weight) for t in terms]

    def title_query(self, text: str, mode: Understanding) -> tuple[str, list[list[str]]]:
        """What the title search looks for (:meth:`Vocabulary.title_query`): ``text`` itself
        when understanding is off."""
        return (text, []) if mode == "off" else self.vocabulary().title_query(text)
