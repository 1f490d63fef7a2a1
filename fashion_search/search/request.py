"""One search request, checked once: what every front end (REST, multipart, GraphQL, Lambda,
the UI's client, the service's own methods) builds before the search service runs it.

:meth:`SearchRequest.of` validates the values with one set of limits
(:mod:`fashion_search.catalog.limits`) and refuses a bad one with
:class:`~fashion_search.errors.InvalidRequestError` (422) and the same message, whichever front
end sent it; the service trusts what it is given. Limits that depend on the deployment (the
upload size, the buckets an image may come from) are the service's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Self, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from fashion_search.catalog.filters import Filters, FilterValue, check_filters
from fashion_search.catalog.limits import (
    MAX_CANDIDATES,
    MAX_K,
    MAX_PRODUCT_ID,
    MAX_QUERY_CHARS,
    MAX_SIMILARITY,
    MIN_SIMILARITY,
    NO_NUL_PATTERN,
)
from fashion_search.errors import FashionSearchError, InvalidRequestError
from fashion_search.search.terms import MAX_TERMS, MAX_WEIGHT, Term, check_terms, parse_query
from fashion_search.search.understanding import Understanding

SearchMode: TypeAlias = Literal["vector", "hybrid"]
Collapse: TypeAlias = Literal["image"]
Group: TypeAlias = Literal["style"]
#: Longest object key an image search may name.
MAX_KEY_CHARS = 1024

Text = Annotated[str, Field(min_length=1, max_length=MAX_QUERY_CHARS, pattern=NO_NUL_PATTERN)]


@dataclass(frozen=True)
class Refinements:
    """What a search does with its ranked candidates besides keeping the first k; None takes
    the setting (``settings.search``)."""

    min_score: float | None = None
    collapse: Collapse | None = None
    facets: bool = False
    candidates: int | None = None
    understand: Understanding | None = None
    explain: bool = False
    rules: bool = True
    group: Group | None = None


class TermIn(BaseModel):
    """A weighted query term (a negative weight pushes away from it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: Text
    weight: Annotated[
        float, Field(strict=True, allow_inf_nan=False, ge=-MAX_WEIGHT, le=MAX_WEIGHT)
    ] = 1.0


class SearchRequest(BaseModel):
    """A search: exactly one of a query string (``-word`` negates), weighted terms, an image
    (encoded bytes), the key of an image in the store, or a catalog product's id (similar
    products); a text ``modifier`` for an image or product ("this, but in red"); how many
    hits, metadata filters, and refinements (None: the settings')."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )

    query: Text | None = None
    terms: Annotated[list[TermIn], Field(min_length=1, max_length=MAX_TERMS)] | None = None
    image: Annotated[bytes | None, Field(exclude=True, repr=False)] = None
    key: (
        Annotated[str, Field(min_length=1, max_length=MAX_KEY_CHARS, pattern=NO_NUL_PATTERN)] | None
    ) = None
    bucket: str | None = None
    product_id: Annotated[int, Field(ge=1, le=MAX_PRODUCT_ID)] | None = None
    modifier: Text | None = None
    k: Annotated[int, Field(ge=1, le=MAX_K)] = 10
    filters: dict[str, FilterValue] = Field(default_factory=dict)
    mode: SearchMode | None = None
    min_score: (
        Annotated[float, Field(ge=MIN_SIMILARITY, le=MAX_SIMILARITY, allow_inf_nan=False)] | None
    ) = None
    collapse: Collapse | None = None
    facets: bool = False
    candidates: Annotated[int, Field(ge=1, le=MAX_CANDIDATES)] | None = None
    understand: Understanding | None = None
    explain: bool = False
    rules: bool = True
    group: Group | None = None

    @field_validator("query", "modifier")
    @classmethod
    def _not_blank(cls, text: str | None) -> str | None:
        if text is not None and not text.strip():
            raise ValueError("must not be blank")
        return None if text is None else text.strip()

    @field_validator("filters")
    @classmethod
    def _usable_filters(cls, filters: Filters) -> Filters:
        _as_value_error(check_filters, filters)
        return filters

    @model_validator(mode="after")
    def _one_thing_to_search(self) -> Self:
        given = [
            name
            for name in ("query", "terms", "image", "key", "product_id")
            if getattr(self, name) is not None
        ]
        if len(given) != 1:
            raise ValueError("give exactly one of query, terms, image, key or productId")
        if self.modifier is not None and given[0] in ("query", "terms"):
            raise ValueError("a modifier changes an image, a key or a productId, not a query")
        if self.mode is not None and given[0] not in ("query", "terms"):
            raise ValueError("mode applies to a query or terms")
        if self.bucket is not None and self.key is None:
            raise ValueError("bucket goes with a key")
        if given[0] in ("query", "terms"):
            _as_value_error(check_terms, self.query_terms(), MAX_QUERY_CHARS)
        return self

    @classmethod
    def of(cls, values: Mapping[str, Any] | None = None, **fields: Any) -> SearchRequest:
        """A checked request from ``values`` (camelCase or snake_case names) and ``fields``;
        :class:`~fashion_search.errors.InvalidRequestError` names each bad value."""
        try:
            return cls.model_validate({**(values or {}), **fields})
        except ValidationError as error:
            raise InvalidRequestError(describe(error)) from None

    def query_terms(self) -> list[Term]:
        """The query's terms: the query string's, parsed, or the weighted terms."""
        if self.query is not None:
            return parse_query(self.query)
        return [Term(t.text.strip(), t.weight) for t in self.terms or []]


def describe(error: ValidationError) -> str:
    """One line per bad value: where it is (camelCase) and what is wrong with it."""
    lines = []
    for problem in error.errors(include_url=False):
        where = ".".join(to_camel(str(part)) for part in problem["loc"])
        message = str(problem["msg"]).removeprefix("Value error, ")
        lines.append(f"{where}: {message}" if where else message)
    return "; ".join(lines)


def _as_value_error(check: Any, *args: Any) -> None:
    """``check(*args)``, its typed error as a ValueError (a validation error of the request)."""
    try:
        check(*args)
    except FashionSearchError as error:
        raise ValueError(str(error)) from None
