"""The process-wide services: search and products (built on first use, reused across Lambda
invocations), reading from the catalog's replicas when ``FS_DATABASE_REPLICAS`` names some."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated

from fastapi import Depends, Header

from fashion_search.catalog.db import create_pool
from fashion_search.catalog.feedback import FeedbackRepository
from fashion_search.catalog.limits import NO_NUL_PATTERN
from fashion_search.catalog.replicas import ReplicatedReads
from fashion_search.catalog.repositories import Catalog
from fashion_search.embedding_client import EmbeddingClient
from fashion_search.learning.feedback import MAX_SESSION_ID_CHARS
from fashion_search.search.products import ProductService
from fashion_search.search.service import SearchService
from fashion_search.settings import SESSION_HEADER, get_settings
from fashion_search.storage import ObjectStore


@lru_cache(maxsize=1)
def build_service() -> SearchService:
    settings = get_settings()
    primary = create_pool(settings, wait=False)  # no stall while the database is down
    replicas = [create_pool(settings, url, wait=False) for url in settings.database.replica_urls]
    reads = ReplicatedReads(primary, replicas, settings.database) if replicas else None
    catalog = Catalog.of(primary, reads)
    return SearchService(
        settings, catalog, ObjectStore(settings), EmbeddingClient(settings.model_server.address)
    )


@lru_cache(maxsize=1)
def _build_products() -> ProductService:
    search = build_service()
    return ProductService(search.catalog, search.image_url)  # one pool, one URL cache


async def get_service() -> SearchService:
    """The search service on the configured catalog, object store and model server.

    ``async`` so that FastAPI calls it on the event loop: a plain ``def`` dependency runs in the
    thread pool, and each such hop added latency to every request. Only the first call builds
    (and briefly blocks); the others are a cache hit.
    """
    return build_service()


async def get_products() -> ProductService:
    """The product service on the same catalog and image URLs (``async``: see above)."""
    return _build_products()


Service = Annotated[SearchService, Depends(get_service)]
Products = Annotated[ProductService, Depends(get_products)]


async def get_feedback(service: Service) -> FeedbackRepository:
    """Where feedback is recorded: the search service's catalog (``async``: see above)."""
    return service.catalog.feedback


FeedbackStore = Annotated[FeedbackRepository, Depends(get_feedback)]


async def get_session(
    session: Annotated[
        str | None,
        Header(
            alias=SESSION_HEADER,
            min_length=1,
            max_length=MAX_SESSION_ID_CHARS,
            pattern=NO_NUL_PATTERN,
            description="the shopper's session: a running experiment answers with its arm",
        ),
    ] = None,
) -> str | None:
    """The shopper's session (header ``X-Session-Id``), if the request names one."""
    return session


Session = Annotated[str | None, Depends(get_session)]
