"""Typed records of the product catalog.

Fields are snake_case in Python and SQL, camelCase (the dataset's names) when serialised.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import numpy as np
from pgvector import Vector
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from fashion_search.errors import InvalidObjectKeyError
from fashion_search.storage import validate_object_key

#: Metadata fields that every product has and that searches can filter on.
METADATA_FIELDS: tuple[str, ...] = (
    "gender",
    "master_category",
    "sub_category",
    "article_type",
    "base_colour",
    "season",
    "year",
    "usage",
)


class ProductFields(BaseModel):
    """A product's id and descriptive metadata, as the dataset has them."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    id: Annotated[int, Field(ge=1)]
    gender: str | None = None
    master_category: str | None = None
    sub_category: str | None = None
    article_type: str | None = None
    base_colour: str | None = None
    season: str | None = None
    year: int | None = None
    usage: str | None = None
    product_display_name: Annotated[str, Field(min_length=1, max_length=1000)]


class Product(ProductFields):
    """A catalog row: metadata, where its image is, and (optionally) its embedding."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    image_key: str
    dataset: str = "catalog"
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
    """A nearest-neighbour hit: the product and its cosine similarity to the query."""

    product: Product
    score: float


class Page(BaseModel):
    """One page of a keyset-paginated listing; ``next_after`` is None on the last page."""

    items: list[Product]
    next_after: int | None


#: ``dataset`` of products created from merchant uploads (their labels are predicted).
UPLOADS_DATASET = "uploads"


class UploadedProduct(BaseModel):
    """A product made from an uploaded object: predicted labels, embedding, where it came from."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    source_bucket: str
    source_key: str
    source_etag: str
    labels: dict[str, str | None]  # snake_case metadata field -> predicted value
    confidence: dict[str, float]  # camelCase label -> confidence
    product_display_name: Annotated[str, Field(min_length=1, max_length=1000)]
    image_key: str
    model_version: str
    embedding: np.ndarray[Any, np.dtype[np.float32]] = Field(repr=False)

    @field_validator("labels")
    @classmethod
    def _labels_are_metadata(cls, labels: dict[str, str | None]) -> dict[str, str | None]:
        unknown = set(labels) - set(METADATA_FIELDS)
        if unknown:
            raise ValueError(f"unknown label fields {sorted(unknown)}")
        return labels
