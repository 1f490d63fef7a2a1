"""The catalog: its repositories over one connection pool."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg_pool import ConnectionPool

from fashion_search.catalog.api_keys import ApiKeyRepository
from fashion_search.catalog.embeddings import EmbeddingRepository
from fashion_search.catalog.experiments import ExperimentRepository
from fashion_search.catalog.feedback import FeedbackRepository
from fashion_search.catalog.products import ProductRepository
from fashion_search.catalog.replicas import ReplicatedReads
from fashion_search.catalog.rules import RuleRepository
from fashion_search.catalog.signals import SignalRepository
from fashion_search.catalog.suggestions import SuggestionRepository
from fashion_search.catalog.table import Connections
from fashion_search.catalog.uploads import UploadRepository
from fashion_search.catalog.vectors import VectorSearch
from fashion_search.catalog.versions import CatalogVersions


@dataclass(frozen=True)
class Catalog:
    """Products (reads, listing, writes), vector search, uploads, embedding upkeep, the model
    versions the catalog holds embeddings of, the API's keys, completions, shoppers'
    feedback, the ranking's business signals, merchandising rules, and online experiments."""

    products: ProductRepository
    vectors: VectorSearch
    uploads: UploadRepository
    embeddings: EmbeddingRepository
    versions: CatalogVersions
    api_keys: ApiKeyRepository
    suggestions: SuggestionRepository
    feedback: FeedbackRepository
    signals: SignalRepository
    rules: RuleRepository
    experiments: ExperimentRepository
    replicas: ReplicatedReads | None = None  # where the reads go, when there are replicas

    @classmethod
    def of(cls, pool: ConnectionPool[Any], reads: ReplicatedReads | None = None) -> Catalog:
        """The catalog over a pool of :func:`~fashion_search.catalog.db.create_pool`.

        With ``reads`` (the API's), products, vector search, versions and completions read
        from the replicas (products missing there from ``pool`` too); uploads, embeddings,
        keys, feedback, signals, rules and experiments keep to ``pool``: for a process that
        writes nothing else (the API)."""
        read: Connections = pool if reads is None else reads
        primary = None if reads is None else ProductRepository(pool)
        products = ProductRepository(read, primary)
        return cls(
            products, VectorSearch(read), UploadRepository(pool), EmbeddingRepository(pool),
            CatalogVersions(read), ApiKeyRepository(pool), SuggestionRepository(read),
            FeedbackRepository(pool), SignalRepository(pool), RuleRepository(pool),
            ExperimentRepository(pool), reads,
        )  # fmt: skip

    @property
    def pool(self) -> Connections:
        """The primary's connection pool (writes, and reads without replicas)."""
        return self.uploads.pool
