"""Merchandising rules and synonym sets: checked once for every front end (CLI, REST, GraphQL)
before they are stored, and read by every search process at most :data:`RULES_TTL_S` after a
change.

An entry's body is a rule (:mod:`fashion_search.search.rules`: it has ``when`` and ``then``)
or a synonym set (:mod:`fashion_search.search.synonyms`). Beyond its shape, an entry is refused
with :class:`~fashion_search.errors.InvalidRequestError` (422, nothing stored) when it names a
product the catalog lacks or an attribute value no product has, or when its synonyms would
make a cycle with the sets stored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.alias_generators import to_camel

from fashion_search.catalog.filters import FilterValue, filter_values
from fashion_search.catalog.repositories import Catalog
from fashion_search.catalog.rules import EntryKind, StoredEntry
from fashion_search.errors import InvalidArgumentError, InvalidRequestError, RuleNotFoundError
from fashion_search.search.request import describe
from fashion_search.search.rules import Rule
from fashion_search.search.synonyms import SynonymSet, check_sets
from fashion_search.search.understanding import UNDERSTOOD_FIELDS

log = logging.getLogger(__name__)

#: How long a search process reuses the rules it read.
RULES_TTL_S = 2.0


@dataclass(frozen=True)
class RuleBook:
    """The rules (with their ids) and synonym sets in force, oldest first."""

    rules: tuple[tuple[int, Rule], ...] = ()
    synonym_sets: tuple[SynonymSet, ...] = ()


def parse_entry(body: Mapping[str, Any]) -> Rule | SynonymSet:
    """A checked rule (a body with ``when`` or ``then``) or synonym set;
    InvalidRequestError names each bad value."""
    model: type[BaseModel] = Rule if {"when", "then"} & set(body) else SynonymSet
    try:
        parsed = model.model_validate(dict(body))
    except ValidationError as error:
        raise InvalidRequestError(describe(error)) from None
    assert isinstance(parsed, Rule | SynonymSet)
    return parsed


def kind_of(entry: Rule | SynonymSet) -> EntryKind:
    """How an entry is stored."""
    return "rule" if isinstance(entry, Rule) else "synonyms"


class Merchandising:
    """The rules and synonym sets of one catalog, checked against its products (read only
    when first needed)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._book: tuple[float, tuple[int, int], RuleBook] | None = None

    def book(self) -> RuleBook:
        """The rules and synonym sets in force, as they were at most :data:`RULES_TTL_S` ago
        (read again only when the table's version changed)."""
        now = time.monotonic()
        if self._book is None or now - self._book[0] > RULES_TTL_S:
            version = self.catalog.rules.version()
            kept = self._book[2] if self._book and self._book[1] == version else None
            self._book = (now, version, kept or self.read())
        return self._book[2]

    def read(self) -> RuleBook:
        """The rules and synonym sets stored now (an entry that no longer parses is skipped)."""
        rules, sets = [], []
        for entry in self.catalog.rules.all():
            try:
                parsed = parse_entry(entry.body)
            except InvalidRequestError as error:  # stored by an older version: skipped
                log.warning("merchandising entry %s is skipped: %s", entry.id, error)
                continue
            if isinstance(parsed, Rule):
                rules.append((entry.id, parsed))
            else:
                sets.append(parsed)
        return RuleBook(tuple(rules), tuple(sets))

    def add(self, body: Mapping[str, Any], created_by: str) -> StoredEntry:
        """Check and store a rule or synonym set (module docstring)."""
        entry = parse_entry(body)
        if isinstance(entry, Rule):
            unknown = self.catalog.rules.unknown_products(sorted(entry.then.product_ids()))
            if unknown:
                raise InvalidRequestError(f"no product has id {', '.join(map(str, unknown))}")
        self._check_values(entry)
        stored = entry.model_dump(by_alias=True, exclude_defaults=True)
        added = self.catalog.rules.add(kind_of(entry), stored, created_by, self._check_synonyms)
        self._book = None  # this process sees it at once
        return added

    def remove(self, entry_id: int) -> None:
        """Remove a rule or synonym set; RuleNotFoundError when there is none."""
        if not self.catalog.rules.remove(entry_id):
            raise RuleNotFoundError(entry_id)
        self._book = None

    def entries(self) -> list[StoredEntry]:
        """Every rule and synonym set, oldest first."""
        return self.catalog.rules.all()

    def _check_values(self, entry: Rule | SynonymSet) -> None:
        """InvalidRequestError for an attribute value that no product has."""
        named: list[Mapping[str, FilterValue]] = []
        if isinstance(entry, SynonymSet):
            known = {to_camel(f) for f in UNDERSTOOD_FIELDS}
            unknown = sorted(set(entry.values) - known)
            if unknown:
                raise InvalidRequestError(f"values of {unknown} are never read in a query")
            named.append(entry.values)
        else:
            adjust = entry.then.boost or entry.then.bury
            named += [entry.when.attributes, entry.when.filters, entry.then.redirect or {}]
            named.append((adjust.attributes or {}) if adjust else {})
        facets = self.catalog.products.facets()
        for values in named:
            for name, given in values.items():
                have = {str(v) for v in facets.get(to_camel(name), ())}
                missing = [str(v) for v in filter_values(given) if str(v) not in have]
                if missing:
                    raise InvalidRequestError(
                        f"no product has {to_camel(name)} {', '.join(map(repr, missing))}"
                    )

    @staticmethod
    def _check_synonyms(entries: list[StoredEntry]) -> None:
        """The synonym sets stored and the new one together (:func:`check_sets`)."""
        sets = [SynonymSet.model_validate(e.body) for e in entries if e.kind == "synonyms"]
        try:
            check_sets(sets)
        except InvalidArgumentError as error:
            raise InvalidRequestError(str(error)) from None
