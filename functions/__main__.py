"""``python -m functions``: every function's routes in one HTTP server (uvicorn) for local use,
with the API's metrics (the running experiment's among them) on ``FS_METRICS_PORT`` and traces
when an OTLP endpoint is set."""

from __future__ import annotations

import uvicorn
from prometheus_client import REGISTRY

from fashion_search.settings import get_settings
from fashion_search.telemetry.logs import configure_logging
from fashion_search.telemetry.metrics import (
    CatalogCoverage,
    CatalogReplicas,
    ExperimentFigures,
    serve_metrics,
)
from fashion_search.telemetry.tracing import configure_tracing
from functions.api.app import create_app
from functions.api.dependencies import build_service


def main() -> None:
    """Serve the API on FS_API_HOST:FS_API_PORT until SIGTERM."""
    settings = get_settings()
    configure_logging(settings)
    configure_tracing("fashion-search-api", settings)
    service = build_service()
    catalog = service.catalog
    REGISTRY.register(CatalogCoverage(catalog.versions.coverage_ratios))
    REGISTRY.register(ExperimentFigures(service.experiments.running_status))
    if catalog.replicas is not None:
        replicas = catalog.replicas
        REGISTRY.register(CatalogReplicas(lambda: [h.as_check() for h in replicas.health()]))
    serve_metrics(settings)
    uvicorn.run(
        create_app(),
        host=settings.search.api_host,
        port=settings.search.api_port,
        log_level="info",
        log_config=None,  # uvicorn's lines go through the root logger's format
    )


if __name__ == "__main__":
    main()
