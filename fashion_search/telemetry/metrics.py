"""The Prometheus metrics of every role, defined once, and the endpoint that serves them.

Each long-running role (API, model server, dispatcher) serves its process's metrics on
``FS_METRICS_PORT`` (0: none) at ``/metrics``, a port of its own rather than a route of the
public API. The API's per-route latency and status metrics come from
prometheus-fastapi-instrumentator (``http_request_duration_seconds``, ``http_requests_total``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector

from fashion_search.settings import Settings

if TYPE_CHECKING:  # the model server's role has no database driver
    from fashion_search.experiments.service import Status

log = logging.getLogger(__name__)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

# The model server (label ``tower``: text or image).
MODEL_BATCH_SIZE = Histogram(
    "fashion_search_model_batch_size", "Items in one model call", ["tower"], buckets=_BATCH_BUCKETS
)
MODEL_QUEUE_DEPTH = Gauge(
    "fashion_search_model_queue_depth", "Requests waiting for a batch", ["tower"]
)
MODEL_INFERENCE_SECONDS = Histogram(
    "fashion_search_model_inference_seconds", "Duration of one model call", ["tower"]
)
MODEL_SERVING = Gauge(
    "fashion_search_model_serving",
    "1 for each registered version the model server holds, by the alias naming it",
    ["alias", "model_version"],
)

# Ingestion: the bucket-event function (wherever it runs) and the Kafka dispatcher.
INGEST_PROCESSED = Counter(
    "fashion_search_ingest_processed_total", "Bucket events processed, by outcome", ["status"]
)
INGEST_DEAD_LETTERS = Counter(
    "fashion_search_ingest_dead_letters_total", "Events dead-lettered, by reason", ["reason"]
)
INGEST_CONSUMER_LAG = Gauge(
    "fashion_search_ingest_consumer_lag",
    "Messages of the uploads topic not yet consumed by this dispatcher, by partition",
    ["partition"],
)


class CatalogCoverage(Collector):
    """``fashion_search_catalog_coverage_ratio``: each live version's share of the catalog with
    an embedding of it (a rollout's progress), read from the catalog at each scrape."""

    def __init__(self, read: Callable[[], Iterable[tuple[str, str, float]]]) -> None:
        self.read = read  # (model_version, state, ratio 0..1) of each live version

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "fashion_search_catalog_coverage_ratio",
            "Share of the catalog's products with an embedding of a version, by state",
            labels=["model_version", "state"],
        )
        try:
            for version, state, ratio in self.read():
                family.add_metric([version, state], ratio)
        except Exception as error:  # the catalog is away: the rest of the scrape still answers
            log.warning("catalog coverage not read: %s", error)
        yield family


class ExperimentFigures(Collector):
    """``fashion_search_experiment_sessions``, ``..._searches``, ``..._figure`` (each figure by
    name) per arm of the running experiment, and ``..._p_value`` of each arm against the first
    (the always-valid one), analysed from the catalog at each scrape."""

    def __init__(self, read: Callable[[], Status | None]) -> None:
        self.read = read  # the running experiment's status, None when none runs

    def collect(self) -> Iterable[Metric]:
        labels = ["experiment", "arm"]
        sessions = GaugeMetricFamily(
            "fashion_search_experiment_sessions",
            "Sessions of the running experiment",
            labels=labels,
        )
        searches = GaugeMetricFamily(
            "fashion_search_experiment_searches", "Searches it answered", labels=labels
        )
        figures = GaugeMetricFamily(
            "fashion_search_experiment_figure",
            "Click-through at 10, add-to-cart, first-click reciprocal rank, not-relevant rates",
            labels=[*labels, "figure"],
        )
        p_values = GaugeMetricFamily(
            "fashion_search_experiment_p_value",
            "Always-valid p-value of an arm against the first, on click-through at 10",
            labels=labels,
        )
        try:
            status = self.read()
        except Exception as error:  # the catalog is away: the rest of the scrape still answers
            log.warning("experiment figures not read: %s", error)
            status = None
        if status is not None:
            experiment = str(status.experiment.id)
            for arm in status.analysis.arms:
                sessions.add_metric([experiment, arm.arm], arm.sessions)
                searches.add_metric([experiment, arm.arm], arm.searches)
                for name, estimate in arm.figures.items():
                    figures.add_metric([experiment, arm.arm, name], estimate.value)
            for comparison in status.analysis.comparisons:
                p_values.add_metric([experiment, comparison.arm], comparison.p_value)
        yield from (sessions, searches, figures, p_values)


#: A replica's check: address, whether reads may go to it, lag in bytes and seconds (None: not
#: measured, e.g. while the primary is down).
ReplicaCheck = tuple[str, bool, int | None, float | None]


class CatalogReplicas(Collector):
    """``fashion_search_catalog_replica_fit`` (1: reads go to it), ``..._lag_bytes`` and
    ``..._lag_seconds`` of each of the API's read replicas, checked at each scrape."""

    def __init__(self, read: Callable[[], Iterable[ReplicaCheck]]) -> None:
        self.read = read

    def collect(self) -> Iterable[Metric]:
        name = "fashion_search_catalog_replica"
        fit = GaugeMetricFamily(
            f"{name}_fit", "1 while reads go to the replica", labels=["replica"]
        )
        lag_bytes = GaugeMetricFamily(
            f"{name}_lag_bytes", "WAL the replica has not replayed", labels=["replica"]
        )
        lag_s = GaugeMetricFamily(
            f"{name}_lag_seconds", "How long the replica has been behind", labels=["replica"]
        )
        for address, is_fit, behind_bytes, behind_s in self.read():
            fit.add_metric([address], float(is_fit))
            if behind_bytes is not None and behind_s is not None:
                lag_bytes.add_metric([address], float(behind_bytes))
                lag_s.add_metric([address], behind_s)
        yield from (fit, lag_bytes, lag_s)


def serve_metrics(settings: Settings) -> None:
    """Serve this process's metrics on ``FS_METRICS_BIND:FS_METRICS_PORT`` (a daemon thread;
    nothing when the port is 0)."""
    telemetry = settings.telemetry
    if telemetry.metrics_port:
        start_http_server(telemetry.metrics_port, telemetry.metrics_bind, REGISTRY)
