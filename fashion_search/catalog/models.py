"""Typed records of the product catalog, and the one definition of a product's fields.

:class:`ProductFields` is that definition: each field's name is its Python and SQL column name,
its camelCase alias its wire name (REST, GraphQL, the dataset's column), its annotation its type,
and :data:`FILTERABLE` marks the fields that filters and facets take. The catalog's SQL, the
REST schemas, the GraphQL types, the filter parser and the dataset reader derive from it: adding
a field is a line here and a migration adding its column.
"""

from __future__ import annotations

import types
from datetime import datetime
from typing import Annotated, Any, Union, get_args, get_origin

import numpy as np
from pgvector import Vector
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo

from fashion_search.catalog.limits import (
    MAX_FILTER_VALUE_CHARS,
    MAX_INTEGER,
    MIN_INTEGER,
    NO_NUL_PATTERN,
)
from fashion_search.errors import InvalidObjectKeyError
from fashion_search.storage import validate_object_key


class Filterable:
    """Marks a product field that searches and listings can filter on (and facets list)."""

    def __repr__(self) -> str:
        return "FILTERABLE"


FILTERABLE = Filterable()


class ProductFields(BaseModel):
    """A product's id and descriptive metadata, as the dataset has them."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    id: Annotated[int, Field(ge=1)]
    gender: Annotated[str | None, FILTERABLE] = None
    master_category: Annotated[str | None, FILTERABLE] = None
    sub_category: Annotated[str | None, FILTERABLE] = None
    article_type: Annotated[str | None, FILTERABLE] = None
    base_colour: Annotated[str | None, FILTERABLE] = None
    season: Annotated[str | None, FILTERABLE] = None
    year: Annotated[int | None, FILTERABLE] = None
    usage: Annotated[str | None, FILTERABLE] = None
    product_display_name: Annotated[str, Field(min_length=1, max_length=1000)]


def is_filterable(field: FieldInfo) -> bool:
    """Whether a model field carries the :data:`FILTERABLE` mark."""
    return any(isinstance(mark, Filterable) for mark in field.metadata)


def value_type(field: FieldInfo) -> type[Any]:
    """A field's value type without ``None``: ``str | None`` -> ``str``."""
    annotation = field.annotation
    if get_origin(annotation) in (Union, types.UnionType):
        annotation = next(arg for arg in get_args(annotation) if arg is not type(None))
    assert isinstance(annotation, type)
    return annotation


def values_annotation(name: str) -> Any:
    """``list[T] | None`` for the filterable field ``name`` of value type ``T``, each value
    within the filters' limits: how query strings and GraphQL take one or more values of it."""
    kind = FILTER_FIELDS[name]
    limits = (
        Field(ge=MIN_INTEGER, le=MAX_INTEGER)
        if kind is int
        else Field(min_length=1, max_length=MAX_FILTER_VALUE_CHARS, pattern=NO_NUL_PATTERN)
    )
    return list.__class_getitem__(Annotated[kind, limits]) | None


#: The descriptive fields that every product has and that filters and facets take.
METADATA_FIELDS: tuple[str, ...] = tuple(
    name for name, field in ProductFields.model_fields.items() if is_filterable(field)
)


class Product(ProductFields):
    """A catalog row: metadata, where its image is, and (optionally) its embedding."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    image_key: str
    dataset: Annotated[str, FILTERABLE] = "catalog"
    # Its image shrunk to 8 x 8 RGB (fashion_search.model.fingerprint): what collapse compares.
    image_fingerprint: bytes | None = Field(default=None, exclude=True, repr=False)
    # The version of ``embedding``, or of the embeddings a search compared (not a column: each
    # version's embeddings are in a partition of their own, catalog/versions.py).
    model_version: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    embedding: np.ndarray[Any, np.dtype[np.float32]] | None = Field(
        default=None, exclude=True, repr=False
    )

    @field_validator("image_key")
    @classmethod
    def _image_key_is_safe(cls, key: str) -> str:
        try:
            return validate_object_key(key)
        except InvalidObjectKeyError as error:
            raise ValueError(str(error)) from error

    @field_validator("embedding", mode="before")
    @classmethod
    def _embedding_as_float32(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, Vector):  # as the pgvector adapter reads it
            value = value.to_numpy()
        return np.asarray(value, dtype=np.float32)


class Neighbor(BaseModel):
    """A nearest-neighbour hit: the product, its ranking score, and its cosine similarity to
    the query (the score itself unless the ranking fused others)."""

    product: Product
    score: float
    similarity: float | None = None


#: Every field that filters take (snake_case) -> its value type.
FILTER_FIELDS: dict[str, type[Any]] = {
    name: value_type(field) for name, field in Product.model_fields.items() if is_filterable(field)
}


class Page(BaseModel):
    """One page of a keyset-paginated listing; ``next_after`` is None on the last page."""

    items: list[Product]
    next_after: int | None


#: ``dataset`` of products created from merchant uploads (their labels are predicted).
UPLOADS_DATASET = "uploads"


class UploadedProduct(BaseModel):
    """A product made from an uploaded object: predicted labels, embeddings (model version ->
    vector; ``model_version``'s voted on the labels), where it came from."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    source_bucket: str
    source_key: str
    source_etag: str
    labels: dict[str, str | None]  # snake_case metadata field -> predicted value
    confidence: dict[str, float]  # camelCase label -> confidence
    product_display_name: Annotated[str, Field(min_length=1, max_length=1000)]
    image_key: str
    image_fingerprint: bytes | None = Field(default=None, repr=False)
    model_version: str
    embeddings: dict[str, np.ndarray[Any, np.dtype[np.float32]]] = Field(repr=False)

    @field_validator("labels")
    @classmethod
    def _labels_are_metadata(cls, labels: dict[str, str | None]) -> dict[str, str | None]:
        unknown = set(labels) - set(METADATA_FIELDS)
        if unknown:
            raise ValueError(f"unknown label fields {sorted(unknown)}")
        return labels
