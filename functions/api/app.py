"""The FastAPI app: the routers of the given functions (all of them for local serving)."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from functions.api.errors import install_error_handlers
from functions.api.routes import graphql, health, image_search, products, text_search

ALL_ROUTERS: tuple[APIRouter, ...] = (
    health.router,
    text_search.router,
    image_search.router,
    products.router,
    graphql.router,
)


def create_app(*routers: APIRouter) -> FastAPI:
    """An app serving ``routers`` (default: every function), with OpenAPI docs at ``/docs``."""
    app = FastAPI(
        title="fashion-search",
        summary="Multimodal product search: text, image, similar products, GraphQL metadata.",
        version="0.1.0",
    )
    for router in routers or ALL_ROUTERS:
        app.include_router(router)
    install_error_handlers(app)
    return app
