"""The FastAPI app: the routers of the given functions (all of them for local serving)."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from fashion_search.settings import get_settings
from functions.api.admission import AdmissionLimit
from functions.api.errors import install_error_handlers
from functions.api.routes import graphql, health, image_search, products, text_search

ALL_ROUTERS: tuple[APIRouter, ...] = (
    health.router,
    text_search.router,
    image_search.router,
    products.router,
    graphql.router,
)


def create_app(*routers: APIRouter, max_in_flight: int | None = None) -> FastAPI:
    """An app serving ``routers`` (default: every function), with OpenAPI docs at ``/docs``,
    admitting ``max_in_flight`` requests at once (default: ``FS_API_MAX_IN_FLIGHT``)."""
    app = FastAPI(
        title="fashion-search",
        summary="Multimodal product search: text, image, similar products, GraphQL metadata.",
        version="0.1.0",
    )
    for router in routers or ALL_ROUTERS:
        app.include_router(router)
    install_error_handlers(app)
    limit = max_in_flight or get_settings().search.api_max_in_flight
    app.add_middleware(AdmissionLimit, limit=limit)
    return app
