"""``python -m model_server``: serve the registry's champion CLIP over gRPC until SIGTERM (its
metrics on ``FS_METRICS_PORT``, traces when an OTLP endpoint is set)."""

from __future__ import annotations

import logging

from fashion_search.settings import get_settings
from fashion_search.telemetry.logs import configure_logging
from fashion_search.telemetry.metrics import serve_metrics
from fashion_search.telemetry.tracing import configure_tracing
from model_server.service import serve

if __name__ == "__main__":
    settings = get_settings()
    configure_logging(settings)
    configure_tracing("fashion-search-model-server", settings)
    serve_metrics(settings)
    serve(settings)
    logging.getLogger("model_server").info("stopped")
