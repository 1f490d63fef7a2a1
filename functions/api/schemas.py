"""Request and response bodies of the REST API (camelCase on the wire, like the dataset)."""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from fashion_search.catalog.filters import FilterValue, check_filters
from fashion_search.catalog.limits import (
    MAX_CANDIDATES,
    MAX_K,
    MAX_PRODUCT_ID,
    MAX_QUERY_CHARS,
    MAX_SIMILARITY,
    MIN_SIMILARITY,
    NO_NUL_PATTERN,
)
from fashion_search.catalog.models import Product, ProductFields
from fashion_search.errors import InvalidFilterError
from fashion_search.search.facets import FacetCount
from fashion_search.search.service import (
    Collapse,
    Hit,
    Refinements,
    SearchMode,
    SearchResult,
)
from fashion_search.search.terms import MAX_TERMS, MAX_WEIGHT, Term
from fashion_search.search.understanding import Understanding


class _Body(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class ProductOut(ProductFields):
    """A product's fields (:class:`~fashion_search.catalog.models.ProductFields`), where its
    image is, a presigned URL of it, and the model version of its embedding."""

    model_config = ConfigDict(frozen=False, extra="forbid")

    image_key: str
    image_url: str
    model_version: str | None

    @classmethod
    def of(cls, product: Product, image_url: str, **extra: object) -> Self:
        """From a catalog product (``extra``: the fields a subclass adds)."""
        fields = product.model_dump(include=set(ProductOut.model_fields) - {"image_url"})
        return cls.model_validate({**fields, "image_url": image_url, **extra})


class HitOut(ProductOut):
    """A search hit: the product, its ranking score (cosine similarity, or fused rank score
    plus boosts), its cosine similarity to the query, and how many near-identical images it
    stands for (1 unless the search collapsed them)."""

    score: float
    similarity: float | None
    collapsed: int

    @classmethod
    def of_hit(cls, hit: Hit) -> HitOut:
        """From a service hit."""
        return cls.of(
            hit.product, hit.image_url, score=hit.score, similarity=hit.similarity,
            collapsed=hit.collapsed,
        )  # fmt: skip


class FacetCountOut(BaseModel):
    """One value of a field and how many products have it."""

    value: str | int
    count: int


FacetCountsOut = dict[str, list[FacetCountOut]]


class SuggestionOut(BaseModel):
    """A completion and what it is: a metadata field's camelCase name, or ``title``."""

    text: str
    kind: str


def facet_counts_out(counts: dict[str, list[FacetCount]]) -> FacetCountsOut:
    """Service facet counts on the wire."""
    return {
        name: [FacetCountOut(value=c.value, count=c.count) for c in values]
        for name, values in counts.items()
    }


class SearchOut(_Body):
    """Hits, best first, with the model version that embedded the query and timings; the
    attribute values the query was understood to name (a value, or several), the relevance
    cutoff applied and how many candidates it dropped, whether no candidate passed it (then
    the hits are the nearest below it), and facet counts over the candidates (when asked)."""

    mode: str
    model_version: str | None
    hits: list[HitOut]
    timings_ms: dict[str, float]
    understood: dict[str, str | list[str]]
    cut: int
    min_score: float | None
    below_cutoff: bool
    facets: FacetCountsOut | None

    @classmethod
    def of(cls, result: SearchResult) -> SearchOut:
        """From a service result."""
        return cls(
            mode=result.mode,
            model_version=result.model_version,
            hits=[HitOut.of_hit(h) for h in result.hits],
            timings_ms={name: round(ms, 3) for name, ms in result.timings_ms.items()},
            understood=result.understood,
            cut=result.cut,
            min_score=result.min_score,
            below_cutoff=result.below_cutoff,
            facets=None if result.facets is None else facet_counts_out(result.facets),
        )


Filters = dict[str, FilterValue]


class _Filtered(_Body):
    """A body with metadata filters, checked as it is read (422 for a bad field or value)."""

    filters: Filters = Field(default_factory=dict, description="metadata field -> value(s)")

    @field_validator("filters")
    @classmethod
    def _filters_are_usable(cls, filters: Filters) -> Filters:
        try:
            check_filters(filters)
        except InvalidFilterError as error:
            raise ValueError(str(error)) from error
        return filters


MinScore = Annotated[
    float | None,
    Field(ge=MIN_SIMILARITY, le=MAX_SIMILARITY, description="hits below this similarity are cut"),
]
Candidates = Annotated[
    int | None,
    Field(ge=1, le=MAX_CANDIDATES, description="ranked candidates facets and collapse look at"),
]
Modifier = Annotated[
    str | None,
    Field(
        min_length=1, max_length=MAX_QUERY_CHARS, pattern=NO_NUL_PATTERN,
        description='text that changes the image query ("in red")',
    ),
]  # fmt: skip


class _Refined(_Filtered):
    """A search body's refinements of its ranked candidates (see :class:`Refinements`)."""

    k: Annotated[int, Field(ge=1, le=MAX_K)] = 10
    min_score: MinScore = None
    collapse: Collapse | None = None
    facets: bool = False
    candidates: Candidates = None
    understand: Understanding | None = None

    def refinements(self) -> Refinements:
        """The service's refinements."""
        return Refinements(
            self.min_score, self.collapse, self.facets, self.candidates, self.understand
        )


class TermIn(_Body):
    """A weighted query term (a negative weight pushes away from it)."""

    text: Annotated[str, Field(min_length=1, max_length=MAX_QUERY_CHARS, pattern=NO_NUL_PATTERN)]
    weight: Annotated[float, Field(strict=True, allow_inf_nan=False, ge=-MAX_WEIGHT, le=MAX_WEIGHT)]


class TextSearchIn(_Refined):
    """``POST /search/text``: a query string (``-word`` negates), or weighted terms."""

    q: Annotated[
        Annotated[str, Field(min_length=1, max_length=MAX_QUERY_CHARS, pattern=NO_NUL_PATTERN)]
        | Annotated[list[TermIn], Field(min_length=1, max_length=MAX_TERMS)],
        Field(union_mode="left_to_right", description="the query, or weighted terms"),
    ]
    mode: SearchMode | None = None

    def query(self) -> str | list[Term]:
        """The service's query."""
        if isinstance(self.q, str):
            return self.q
        return [Term(t.text, t.weight) for t in self.q]


class ImageSearchIn(_Refined):
    """``POST /search/image`` as JSON: a base64 image, the key of an image in the store, or a
    catalog product's id; with a text ``modifier``, a composed query ("this, but in red")."""

    image_base64: str | None = None
    key: Annotated[str | None, Field(max_length=1024, pattern=NO_NUL_PATTERN)] = None
    bucket: str | None = None
    product_id: Annotated[int | None, Field(ge=1, le=MAX_PRODUCT_ID)] = None
    modifier: Modifier = None
