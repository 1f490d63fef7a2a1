"""A deterministic stand-in for the model server: a text's vector is the normalised sum of
one fixed random unit vector per word (so texts that share words are near), an image's is
fixed by its bytes. Products embedded by their titles make a catalog whose nearest neighbours
are predictable, for tests of the search pipeline without a model."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from fashion_search.catalog.db import create_pool
from fashion_search.catalog.migrate import migrate
from fashion_search.catalog.models import Product, ProductFields
from fashion_search.catalog.repositories import Catalog
from fashion_search.embedding_client import Array, Embeddings, ModelInfo
from fashion_search.search.understanding import words
from fashion_search.settings import Settings
from stack.postgres import create_database
from tests.helpers import database

DIMENSION = 64


def _unit(seed: bytes) -> Array:
    rng = np.random.default_rng(int.from_bytes(hashlib.blake2b(seed, digest_size=8).digest()))
    vector = rng.standard_normal(DIMENSION).astype(np.float32)
    return vector / np.linalg.norm(vector)


def text_vector(text: str) -> Array:
    """The stand-in embedding of ``text``."""
    total = np.sum([_unit(word.encode()) for word in words(text) or [""]], axis=0)
    return (total / np.linalg.norm(total)).astype(np.float32)


@dataclass
class StandInEmbedder:
    """Embeds as the module says, answering with ``version`` (what a test sets it to);
    ``calls`` counts the calls."""

    version: str = "stand-in-1"
    calls: list[str] = field(default_factory=list)

    def _answer(self, vectors: list[Array], asked: str | None) -> Embeddings:
        self.calls.append(asked or "")
        return Embeddings(np.stack(vectors), self.version)

    def embed_texts(self, texts: Sequence[str], version: str | None = None) -> Embeddings:
        """Each text's :func:`text_vector`."""
        return self._answer([text_vector(t) for t in texts], version)

    def embed_images(self, images: Sequence[bytes], version: str | None = None) -> Embeddings:
        """A unit vector fixed by each image's bytes."""
        return self._answer([_unit(image) for image in images], version)

    def info(self) -> ModelInfo:
        """The stand-in model."""
        return ModelInfo(
            "stand-in", "stand-in", self.version, DIMENSION, ["none"], False,
            versions={self.version: DIMENSION},
        )  # fmt: skip


@contextmanager
def scratch_settings(stack_settings: Settings, name: str) -> Iterator[Settings]:
    """Settings of a new, migrated database ``<stack's>_<name>`` (dropped after) for
    :data:`DIMENSION`-d embeddings, without a relevance cutoff."""
    settings = stack_settings.replace(
        database=database(stack_settings, f"{stack_settings.database.name}_{name}"),
        search={"min_score": None},
    )
    admin = make_conninfo(settings.database.url, dbname="postgres")
    create_database(admin, settings.database.name)
    try:
        migrate(settings.database.url, DIMENSION)
        yield settings
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE {} WITH (FORCE)").format(
                    sql.Identifier(settings.database.name)
                )
            )


@contextmanager
def stand_in_catalog(
    stack_settings: Settings, fields: Sequence[ProductFields], name: str
) -> Iterator[tuple[Settings, Catalog, np.ndarray]]:
    """A database ``<stack's>_<name>`` (dropped after) holding ``fields`` embedded by their
    titles as the stand-in version (:class:`StandInEmbedder`'s default); its settings (no
    relevance cutoff), catalog and the vectors, in the order of ``fields``."""
    with scratch_settings(stack_settings, name) as settings, create_pool(settings) as pool:
        catalog = Catalog.of(pool)
        catalog.products.upsert_many(
            [Product(**f.model_dump(), image_key=f"images/{f.id}.jpg") for f in fields]
        )
        vectors = np.stack([text_vector(f.product_display_name) for f in fields])
        version = StandInEmbedder().version
        catalog.versions.bootstrap(version, DIMENSION)
        catalog.embeddings.set_embeddings(version, [f.id for f in fields], vectors)
        yield settings, catalog, vectors
