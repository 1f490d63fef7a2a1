"""Log lines as JSON objects with the trace and span ids of the request they belong to ("0"
outside a trace), or as plain text (``FS_LOG_FORMAT=text``)."""

from __future__ import annotations

import logging

from opentelemetry.instrumentation.logging import LoggingInstrumentor
from pythonjsonlogger.json import JsonFormatter

from fashion_search.settings import Settings

_TEXT = "%(asctime)s %(name)s %(levelname)s %(message)s"
_JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s %(otelTraceID)s %(otelSpanID)s"


def configure_logging(settings: Settings, level: int = logging.INFO) -> None:
    """Root logging to stderr in the configured format."""
    LoggingInstrumentor().instrument(  # the ids on every record; no handler of its own
        set_logging_format=False, inject_trace_context=True, enable_log_auto_instrumentation=False
    )
    handler = logging.StreamHandler()
    if settings.telemetry.log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                _JSON_FIELDS,
                rename_fields={
                    "asctime": "time", "levelname": "level", "name": "logger",
                    "otelTraceID": "trace_id", "otelSpanID": "span_id",
                },
            )
        )  # fmt: skip
    else:
        handler.setFormatter(logging.Formatter(_TEXT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
