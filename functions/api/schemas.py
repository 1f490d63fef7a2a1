"""Request and response bodies of the REST API (camelCase on the wire, like the dataset)."""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from fashion_search.catalog.filters import FilterValue, check_filters
from fashion_search.catalog.limits import MAX_K, NO_NUL_PATTERN
from fashion_search.catalog.models import Product, ProductFields
from fashion_search.errors import InvalidFilterError
from fashion_search.search.service import Hit, SearchMode, SearchResult


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
    """A search hit: the product and its score (cosine similarity, or fused rank score)."""

    score: float

    @classmethod
    def of_hit(cls, hit: Hit) -> HitOut:
        """From a service hit."""
        return cls.of(hit.product, hit.image_url, score=hit.score)


class SearchOut(_Body):
    """Hits, best first, with the model version that embedded the query and timings."""

    mode: str
    model_version: str | None
    hits: list[HitOut]
    timings_ms: dict[str, float]

    @classmethod
    def of(cls, result: SearchResult) -> SearchOut:
        """From a service result."""
        return cls(
            mode=result.mode,
            model_version=result.model_version,
            hits=[HitOut.of_hit(h) for h in result.hits],
            timings_ms={name: round(ms, 3) for name, ms in result.timings_ms.items()},
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


class TextSearchIn(_Filtered):
    """``POST /search/text``."""

    q: Annotated[
        str,
        Field(min_length=1, max_length=2000, pattern=NO_NUL_PATTERN, description="the query"),
    ]
    k: Annotated[int, Field(ge=1, le=MAX_K)] = 10
    mode: SearchMode | None = None


class ImageSearchIn(_Filtered):
    """``POST /search/image`` as JSON: a base64 image, or the key of an image in the store."""

    image_base64: str | None = None
    key: Annotated[str | None, Field(max_length=1024, pattern=NO_NUL_PATTERN)] = None
    bucket: str | None = None
    k: Annotated[int, Field(ge=1, le=MAX_K)] = 10
