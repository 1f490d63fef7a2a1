"""The catalog: its repositories over one connection pool."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg_pool import ConnectionPool

from fashion_search.catalog.api_keys import ApiKeyRepository
from fashion_search.catalog.embeddings import EmbeddingRepository
from fashion_search.catalog.feedback import FeedbackRepository
from fashion_search.catalog.products import ProductRepository
from fashion_search.catalog.suggestions import SuggestionRepository
from fashion_search.catalog.uploads import UploadRepository
from fashion_search.catalog.vectors import VectorSearch
from fashion_search.catalog.versions import CatalogVersions


@dataclass(frozen=True)
class Catalog:
    """Products (reads, listing, writes), vector search, uploads, embedding upkeep, the model
    versions the catalog holds embeddings of, the API's keys, completions, and shoppers'
    feedback."""

    products: ProductRepository
    vectors: VectorSearch
    uploads: UploadRepository
    embeddings: EmbeddingRepository
    versions: CatalogVersions
    api_keys: ApiKeyRepository
    suggestions: SuggestionRepository
    feedback: FeedbackRepository

    @classmethod
    def of(cls, pool: ConnectionPool[Any]) -> Catalog:
        """The catalog over a pool of :func:`~fashion_search.catalog.db.create_pool`."""
        return cls(
            ProductRepository(pool), VectorSearch(pool), UploadRepository(pool),
            EmbeddingRepository(pool), CatalogVersions(pool), ApiKeyRepository(pool),
            SuggestionRepository(pool), FeedbackRepository(pool),
        )  # fmt: skip

    @property
    def pool(self) -> ConnectionPool[Any]:
        """The connection pool the repositories share."""
        return self.products.pool
