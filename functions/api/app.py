"""The FastAPI app: the routers of the given functions (all of them for local serving)."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from prometheus_fastapi_instrumentator import Instrumentator

from fashion_search.settings import API_KEY_HEADER, get_settings
from fashion_search.telemetry.tracing import tracing
from functions.api.admission import AdmissionLimit
from functions.api.body_limit import BodyLimit
from functions.api.errors import install_error_handlers
from functions.api.routes import (
    experiments,
    feedback,
    graphql,
    health,
    image_search,
    merchandising,
    products,
    text_search,
)

ALL_ROUTERS: tuple[APIRouter, ...] = (
    health.router,
    text_search.router,
    image_search.router,
    products.router,
    graphql.router,
    feedback.router,
    merchandising.router,
    experiments.router,
)


def create_app(*routers: APIRouter, max_in_flight: int | None = None) -> FastAPI:
    """An app serving ``routers`` (default: every function), with OpenAPI docs at ``/docs``,
    admitting ``max_in_flight`` requests at once (default: ``FS_API_MAX_IN_FLIGHT``), each body
    within its route's limit, and CORS for ``FS_API_CORS_ORIGINS`` (the UI's) only.

    Every answer, refusals included, is counted and timed per route template and status
    (:mod:`fashion_search.telemetry.metrics`), and traced when the process traces."""
    app = FastAPI(
        title="fashion-search",
        summary="Multimodal product search: text, image, similar products, GraphQL metadata.",
        version="0.1.0",
    )
    for router in routers or ALL_ROUTERS:
        app.include_router(router)
    install_error_handlers(app)
    settings = get_settings()
    app.add_middleware(
        BodyLimit,
        default=settings.access.max_body_bytes,
        limits={"/search/image": image_search.body_limit(settings)},
    )
    app.add_middleware(
        CORSMiddleware,
        allow_origins=[o.strip() for o in settings.access.cors_origins.split(",") if o.strip()],
        allow_methods=["GET", "POST", "DELETE"],
        allow_headers=["Content-Type", API_KEY_HEADER],
    )
    app.add_middleware(AdmissionLimit, limit=max_in_flight or settings.search.api_max_in_flight)
    Instrumentator(should_group_status_codes=False).instrument(app)  # outermost: sees all
    if tracing():
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(app)
    return app
