"""The search service behind every search function: embed the query, ask the catalog, fuse.

Inputs are checked here, once, for every front end (REST, GraphQL, Lambda, UI); a refused
query raises a typed error from :mod:`fashion_search.errors` and changes nothing.

Each search reads the catalog's serving record, asks the model server to embed with that
version, and compares the query only with that version's embeddings. An answer of another
version (or none, when the server does not hold it) is retried once with the record read
again, then refused with :class:`~fashion_search.errors.ServingVersionUnavailableError`.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

from fashion_search.catalog.filters import Filters, check_filters
from fashion_search.catalog.limits import check_k, check_text
from fashion_search.catalog.models import Neighbor, Product
from fashion_search.catalog.repositories import Catalog
from fashion_search.catalog.versions import CatalogVersion
from fashion_search.embedding_client import (
    EmbeddingClient,
    Embeddings,
    ModelVersionNotLoadedError,
)
from fashion_search.errors import (
    ImageTooLargeError,
    InvalidArgumentError,
    InvalidImageError,
    ProductNotEmbeddedError,
    ServingVersionUnavailableError,
)
from fashion_search.search.fusion import RRF_K
from fashion_search.search.image_urls import ImageUrls
from fashion_search.settings import Settings
from fashion_search.storage import ObjectStore

SearchMode = Literal["vector", "hybrid"]
#: How many candidates each side of a hybrid search contributes before fusion.
HYBRID_CANDIDATES = 50


@dataclass(frozen=True)
class Hit:
    """A search result: the product, its score, and a presigned URL of its image."""

    product: Product
    score: float
    image_url: str


@dataclass
class SearchResult:
    """Hits, best first, with the serving model version and where the time went."""

    hits: list[Hit]
    mode: str
    model_version: str | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)


@contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + (time.perf_counter() - started) * 1000


def decode_base64_image(data: str) -> bytes:
    """Bytes of a base64 image (a ``data:image/...;base64,`` prefix is allowed)."""
    payload = data.split(",", 1)[1] if data.startswith("data:") and "," in data else data
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as error:
        raise InvalidImageError("image is not valid base64") from error


class SearchService:
    """Text, image and similar-product search over one catalog, model server and store."""

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        store: ObjectStore,
        embedder: EmbeddingClient,
        image_url: ImageUrls | None = None,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.store = store
        self.embedder = embedder
        self.image_url = image_url or ImageUrls(settings, store)
        self._lexical = ThreadPoolExecutor(4, thread_name_prefix="title-search")

    def _embed(
        self, embed: Callable[..., Embeddings], inputs: Sequence[str] | Sequence[bytes]
    ) -> tuple[Embeddings, CatalogVersion]:
        """``inputs`` embedded by the version the catalog serves, and that version."""
        problem = ""
        for _ in range(2):  # the record may have switched since it was read: once more
            version = self.catalog.versions.serving()
            try:
                embedding = embed(inputs, version=version.model_version)
            except ModelVersionNotLoadedError as error:
                problem = str(error)
                continue
            if embedding.model_version == version.model_version:
                return embedding, version
            problem = f"the model server answered with version {embedding.model_version}"
        raise ServingVersionUnavailableError(
            f"the catalog serves model version {version.model_version}, which the model server"
            f" could not embed with ({problem}); try again shortly"
        )

    def _hits(self, neighbors: list[Neighbor]) -> list[Hit]:
        return [Hit(n.product, n.score, self.image_url(n.product)) for n in neighbors]

    def text(
        self,
        query: str,
        k: int = 10,
        filters: Filters | None = None,
        mode: SearchMode | None = None,
    ) -> SearchResult:
        """Products matching a text query: by embedding, or fused with full-text title search."""
        query = check_text(query, "query").strip()
        if not query:
            raise InvalidArgumentError("query is empty")
        limit = self.settings.model_server.max_text_chars
        if len(query) > limit:
            raise InvalidArgumentError(f"query has {len(query)} characters; at most {limit}")
        check_k(k)
        check_filters(filters)
        mode = mode or self.settings.search.mode
        if mode == "vector":
            timings: dict[str, float] = {}
            with _timed(timings, "model"):
                embedding, version = self._embed(self.embedder.embed_texts, [query])
            with _timed(timings, "database"):
                neighbors = self.catalog.vectors.nearest(version, embedding.vectors[0], k, filters)
        else:
            embedding, neighbors, timings = self._hybrid(query, k, filters)
        with _timed(timings, "urls"):
            hits = self._hits(neighbors)
        return SearchResult(hits, mode, embedding.model_version, timings)

    def _hybrid(
        self, query: str, k: int, filters: Filters | None
    ) -> tuple[Embeddings, list[Neighbor], dict[str, float]]:
        """Vector and title rankings fused by reciprocal rank (in the database, one round trip
        after the model)."""
        depth = max(k, HYBRID_CANDIDATES)
        # The title search needs no embedding: it runs while the model server works.
        title_future = self._lexical.submit(
            self.catalog.vectors.title_match_ids, query, depth, filters
        )
        timings: dict[str, float] = {}
        with _timed(timings, "model"):
            embedding, version = self._embed(self.embedder.embed_texts, [query])
        with _timed(timings, "database"):
            title_ids = [i for i, _ in title_future.result()]
            neighbors = self.catalog.vectors.nearest_fused(
                version, embedding.vectors[0], title_ids, k, depth, filters, rrf_k=RRF_K
            )
        return embedding, neighbors, timings

    def image(self, image: bytes, k: int = 10, filters: Filters | None = None) -> SearchResult:
        """Products whose images look like ``image`` (encoded bytes)."""
        if not image:
            raise InvalidImageError("image is empty")
        if len(image) > self.settings.search.max_upload_bytes:
            raise ImageTooLargeError(
                f"image has {len(image)} bytes; at most {self.settings.search.max_upload_bytes}"
            )
        check_k(k)
        check_filters(filters)
        timings: dict[str, float] = {}
        with _timed(timings, "model"):
            embedding, version = self._embed(self.embedder.embed_images, [image])
        with _timed(timings, "database"):
            neighbors = self.catalog.vectors.nearest(version, embedding.vectors[0], k, filters)
        with _timed(timings, "urls"):
            hits = self._hits(neighbors)
        return SearchResult(hits, "image", embedding.model_version, timings)

    def image_by_key(
        self, key: str, bucket: str | None = None, k: int = 10, filters: Filters | None = None
    ) -> SearchResult:
        """Image search with an image already in the store (images or uploads bucket)."""
        bucket = bucket or self.settings.storage.images_bucket
        allowed = (self.settings.storage.images_bucket, self.settings.storage.uploads_bucket)
        if bucket not in allowed:
            raise InvalidArgumentError(f"bucket must be one of {', '.join(allowed)}")
        limit = self.settings.search.max_upload_bytes
        return self.image(self.store.read(bucket, key, max_bytes=limit).data, k, filters)

    def similar(self, product_id: int, k: int = 10, filters: Filters | None = None) -> SearchResult:
        """Products closest to a catalog product's embedding of the serving version (the
        product left out)."""
        check_k(k)
        check_filters(filters)
        timings: dict[str, float] = {}
        with _timed(timings, "database"):
            version = self.catalog.versions.serving()
            product = self.catalog.products.get(product_id, version)
            if product.embedding is None:
                raise ProductNotEmbeddedError(product_id)
            neighbors = self.catalog.vectors.nearest(
                version, product.embedding, k, filters, exclude_id=product_id
            )
        with _timed(timings, "urls"):
            hits = self._hits(neighbors)
        return SearchResult(hits, "similar", version.model_version, timings)
