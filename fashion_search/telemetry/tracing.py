"""OpenTelemetry traces: a role's spans (its HTTP requests, gRPC calls and SQL statements)
exported over OTLP/HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set; nothing is traced, and
nothing costs, when it is not.
"""

from __future__ import annotations

from importlib.util import find_spec

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
)

from fashion_search.settings import Settings


def configure_tracing(
    service: str, settings: Settings, exporter: SpanExporter | None = None
) -> TracerProvider | None:
    """Trace this process as ``service`` into ``exporter`` (tests: an in-memory one), else to
    the configured OTLP endpoint; None (and no tracing) when neither is given. gRPC client and
    server calls and, where the role has psycopg, SQL statements get spans from then on."""
    endpoint = settings.telemetry.otlp_endpoint
    if exporter is None and not endpoint:
        return None
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):  # the first call in this process
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        trace.set_tracer_provider(provider)
        _instrument_clients()
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        url = f"{endpoint.rstrip('/')}/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    return provider


def tracing() -> bool:
    """Whether this process traces (:func:`configure_tracing` took effect)."""
    return isinstance(trace.get_tracer_provider(), TracerProvider)


def _instrument_clients() -> None:
    from opentelemetry.instrumentation.grpc import (
        GrpcInstrumentorClient,
        GrpcInstrumentorServer,
    )

    GrpcInstrumentorClient().instrument()  # type: ignore[no-untyped-call]
    GrpcInstrumentorServer().instrument()  # type: ignore[no-untyped-call]
    if find_spec("psycopg") is not None:  # the roles that query the catalog
        from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

        PsycopgInstrumentor().instrument(skip_dep_check=True)
