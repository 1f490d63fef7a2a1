"""Queries embedded by the model version the catalog serves.

Each search reads the catalog's serving record (or a pinned version: a candidate being
calibrated), asks the embedder for that version, and is compared only with that version's
embeddings. An answer of another version (or none, when the model server does not hold it) is
retried once with the record read again, then refused with
:class:`~fashion_search.errors.ServingVersionUnavailableError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from fashion_search.catalog.repositories import Catalog
from fashion_search.catalog.versions import CatalogVersion
from fashion_search.embedding_client import (
    Array,
    Embeddings,
    ModelInfo,
    ModelVersionNotLoadedError,
)
from fashion_search.errors import ServingVersionUnavailableError


class Embedder(Protocol):
    """What embeds queries: the model server's client, or a stand-in in tests."""

    def embed_texts(self, texts: Sequence[str], version: str | None = None) -> Embeddings:
        """L2-normalised embeddings of ``texts`` by registry version ``version``."""
        ...

    def embed_images(self, images: Sequence[bytes], version: str | None = None) -> Embeddings:
        """L2-normalised embeddings of encoded images by registry version ``version``."""
        ...

    def info(self) -> ModelInfo:
        """The served model (for health checks)."""
        ...


class ServingEmbedder:
    """Embeds a query's texts and images with the version searched (module docstring)."""

    def __init__(self, catalog: Catalog, embedder: Embedder, pinned: str | None = None) -> None:
        self.catalog = catalog
        self.embedder = embedder
        self.pinned = pinned

    def version(self) -> CatalogVersion:
        """The catalog version searched: the serving one, or the pinned one."""
        versions = self.catalog.versions
        return versions.serving() if self.pinned is None else versions.get(self.pinned)

    def embed(
        self, texts: Sequence[str] = (), images: Sequence[bytes] = ()
    ) -> tuple[list[Array], CatalogVersion]:
        """The vectors of ``images`` then of ``texts``, by the version searched, and that
        version."""
        problem = ""
        for _ in range(2):  # the record may have switched since it was read: once more
            version = self.version()
            wanted = version.model_version
            try:
                answers = [self.embedder.embed_images(images, version=wanted)] if images else []
                if texts:
                    answers.append(self.embedder.embed_texts(texts, version=wanted))
            except ModelVersionNotLoadedError as error:
                problem = str(error)
                continue
            answered = {answer.model_version for answer in answers}
            if answered == {wanted}:
                return [vector for answer in answers for vector in answer.vectors], version
            problem = f"the model server answered with version {', '.join(sorted(answered))}"
        raise ServingVersionUnavailableError(
            f"the catalog serves model version {version.model_version}, which the model server"
            f" could not embed with ({problem}); try again shortly"
        )
