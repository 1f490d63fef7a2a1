"""Merchandising rules: when a search matches a condition, pin, hide, boost, bury or redirect.

A rule (JSON, camelCase) is ``{"when": {...}, "then": {...}, "note": "..."}``:

- ``when`` (at least one): ``query`` with ``match`` ``exact`` (the query's words are the
  rule's) or ``contains`` (the rule's words appear together in the query); ``attributes``,
  values that query understanding must read in the query (``{"articleType": "Shoes"}``);
  ``filters``, values the search's filters must include (``{"gender": "Women"}``).
- ``then`` (exactly one): ``pin``, products at positions (``[{"productId": 15970,
  "position": 1}]``); ``hide``, product ids; ``boost`` or ``bury``, by product ids or by
  attribute values, with a ``weight`` added to (or taken from) the score; ``redirect``,
  filters the search applies (``{"articleType": "Sarees"}``).

Every rule that matches a search applies (:class:`Effects`); the first one wins a contested
position or filter field. Boosts and burials are a part of the score (``rules`` in
``explain``), so they re-order the candidates; pins are placed after the ranking, in the
positions asked (a pinned product that the search's filters exclude or a rule hides is not).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel, to_snake

from fashion_search.catalog.filters import (
    FILTER_COLUMNS,
    Filters,
    FilterValue,
    check_filters,
    filter_values,
)
from fashion_search.catalog.limits import MAX_K, MAX_PRODUCT_ID, MAX_QUERY_CHARS, NO_NUL_PATTERN
from fashion_search.catalog.models import Product
from fashion_search.errors import FashionSearchError
from fashion_search.search.words import words

#: Most products one rule names.
MAX_RULE_PRODUCTS = 50
#: Most a boost or burial adds to (takes from) a score; cosine similarities span about 0.3.
MAX_RULE_WEIGHT = 1.0
MAX_NOTE_CHARS = 500

ProductId = Annotated[int, Field(ge=1, le=MAX_PRODUCT_ID)]
ProductIds = Annotated[list[ProductId], Field(min_length=1, max_length=MAX_RULE_PRODUCTS)]


class _Body(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


def _usable(filters: Values) -> Values:
    try:
        check_filters(filters)
    except FashionSearchError as error:
        raise ValueError(str(error)) from None
    return filters


Values = Annotated[dict[str, FilterValue], AfterValidator(_usable)]


def _admits(product: Product, values: Filters) -> bool:
    """Whether ``product`` has each field's value (or one of its values)."""
    for name, wanted in values.items():
        have = getattr(product, FILTER_COLUMNS[name])
        if have not in filter_values(wanted):
            return False
    return True


def _includes(filters: Filters, values: Filters) -> bool:
    """Whether ``filters`` ask for one of each field's ``values`` (by either spelling of the
    field)."""
    asked = {FILTER_COLUMNS.get(n, n): v for n, v in filters.items()}
    for name, wanted in values.items():
        have = asked.get(FILTER_COLUMNS[name])
        if have is None or not set(filter_values(have)) & set(filter_values(wanted)):
            return False
    return True


class When(_Body):
    """A rule's condition (module docstring)."""

    query: (
        Annotated[str, Field(min_length=1, max_length=MAX_QUERY_CHARS, pattern=NO_NUL_PATTERN)]
        | None
    ) = None
    match: Literal["exact", "contains"] = "exact"
    attributes: Values = Field(default_factory=dict)
    filters: Values = Field(default_factory=dict)

    @model_validator(mode="after")
    def _a_condition(self) -> Self:
        if self.query is None and not self.attributes and not self.filters:
            raise ValueError("a rule needs a condition: query, attributes or filters")
        if self.query is not None and not words(self.query):
            raise ValueError("query has no words")
        return self

    def matches(self, theirs: list[str] | None, understood: Filters, filters: Filters) -> bool:
        """Whether a search with the query words ``theirs`` (None: no text), what it was
        understood to name, and its filters meets every part of the condition."""
        if self.query is not None:
            if theirs is None:
                return False
            mine = words(self.query)
            if self.match == "exact" and mine != theirs:
                return False
            if self.match == "contains" and not any(
                theirs[i : i + len(mine)] == mine for i in range(len(theirs) - len(mine) + 1)
            ):
                return False
        return _includes(understood, self.attributes) and _includes(filters, self.filters)


class Pin(_Body):
    """A product at a position (1 is the top)."""

    product_id: ProductId
    position: Annotated[int, Field(ge=1, le=MAX_K)]


class Adjust(_Body):
    """What a boost or burial moves: products by id, or by attribute values; and by how much."""

    product_ids: ProductIds | None = None
    attributes: Values | None = None
    weight: Annotated[float, Field(gt=0, le=MAX_RULE_WEIGHT, allow_inf_nan=False)] = 0.1

    @model_validator(mode="after")
    def _one_target(self) -> Self:
        if (self.product_ids is None) == (self.attributes is None):
            raise ValueError("give productIds or attributes (one of them)")
        if self.attributes == {}:
            raise ValueError("attributes must name a value")
        return self

    def applies_to(self, product: Product) -> bool:
        """Whether ``product`` is one this moves."""
        if self.product_ids is not None:
            return product.id in self.product_ids
        return _admits(product, self.attributes or {})


class Then(_Body):
    """A rule's consequence: exactly one of its fields."""

    pin: Annotated[list[Pin], Field(min_length=1, max_length=MAX_RULE_PRODUCTS)] | None = None
    hide: ProductIds | None = None
    boost: Adjust | None = None
    bury: Adjust | None = None
    redirect: Values | None = None

    @model_validator(mode="after")
    def _one_consequence(self) -> Self:
        given = [name for name, value in self if value is not None]
        if len(given) != 1:
            raise ValueError("then needs exactly one of pin, hide, boost, bury or redirect")
        if self.redirect == {}:
            raise ValueError("redirect must name a filter")
        if self.pin is not None:
            for what in ("product_id", "position"):
                seen = [getattr(p, what) for p in self.pin]
                if len(set(seen)) != len(seen):
                    raise ValueError(f"pin names a {to_camel(what)} twice")
        return self

    def product_ids(self) -> set[int]:
        """The products this names by id (each must be in the catalog)."""
        adjust = self.boost or self.bury
        return {
            *(p.product_id for p in self.pin or ()),
            *(self.hide or ()),
            *((adjust.product_ids or ()) if adjust else ()),
        }


class Rule(_Body):
    """A merchandising rule (module docstring)."""

    when: When
    then: Then
    note: Annotated[str, Field(max_length=MAX_NOTE_CHARS, pattern=NO_NUL_PATTERN)] = ""


@dataclass(frozen=True)
class Effects:
    """What the rules that match one search do, together: their ids, the filters they redirect
    to, the products they hide, their boosts and burials, and their pins (position -> id)."""

    rule_ids: tuple[int, ...] = ()
    redirect: dict[str, FilterValue] = field(default_factory=dict)
    hidden: frozenset[int] = frozenset()
    adjustments: tuple[tuple[Adjust, float], ...] = ()
    pins: Mapping[int, int] = field(default_factory=dict)

    @classmethod
    def of(cls, matched: Sequence[tuple[int, Rule]]) -> Effects:
        """The effects of the rules ``matched`` (id, rule), the first winning a conflict."""
        redirect: dict[str, FilterValue] = {}
        hidden: set[int] = set()
        adjustments: list[tuple[Adjust, float]] = []
        pins: dict[int, int] = {}
        for _, rule in matched:
            then = rule.then
            for name, value in (then.redirect or {}).items():
                redirect.setdefault(to_snake(name), value)
            hidden |= set(then.hide or ())
            if then.boost is not None:
                adjustments.append((then.boost, then.boost.weight))
            if then.bury is not None:
                adjustments.append((then.bury, -then.bury.weight))
            for pin in then.pin or ():
                if pin.product_id not in pins.values():
                    pins.setdefault(pin.position, pin.product_id)
        ids = tuple(i for i, _ in matched)
        return cls(ids, redirect, frozenset(hidden), tuple(adjustments), pins)

    def adjustment(self, product: Product) -> float:
        """What the boosts and burials add to ``product``'s score."""
        return sum(weight for adjust, weight in self.adjustments if adjust.applies_to(product))

    def redirected(self, filters: Filters | None) -> Filters | None:
        """The search's filters with the redirect's (which win a field both name)."""
        if not self.redirect:
            return filters
        kept = {n: v for n, v in (filters or {}).items() if FILTER_COLUMNS[n] not in self.redirect}
        return {**kept, **self.redirect}

    def pinnable(self, product: Product, filters: Filters | None) -> bool:
        """Whether a pinned ``product`` may be shown: not hidden, and within the filters."""
        return product.id not in self.hidden and _admits(product, filters or {})


def matching(
    rules: Sequence[tuple[int, Rule]], query: str | None, understood: Filters, filters: Filters
) -> Effects:
    """The effects of the ``rules`` (id, rule) whose condition a search meets."""
    theirs = None if query is None else words(query)
    return Effects.of([(i, r) for i, r in rules if r.when.matches(theirs, understood, filters)])
