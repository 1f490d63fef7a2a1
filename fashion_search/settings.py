"""One typed settings object for every part of fashion-search, read from ``FS_*`` variables.

Settings are grouped by part (``settings.database.url``, ``settings.model_server.max_batch``,
...). Each is set by the variable its path names (:func:`variable`): ``FS_`` and the path upper-
cased, its group and field joined by ``__`` (``FS_DATABASE__POOL_MAX_SIZE``, ``FS_CACHE_DIR``
for a top-level field); the former names (:data:`LEGACY_VARIABLES`) still work, the new one wins.

Variables of the environment win over those of a dotenv file: ``FS_ENV_FILE`` (empty: none),
else ``local.env`` in the local stack's state directory (``python -m stack up`` writes its
owner's settings there). Endpoints left empty point at the native local stack on 127.0.0.1; the
docker-compose stack and real deployments set them (``FS_DATABASE__URL``, ...). Credentials left
empty stay empty (S3: boto3's credential chain, Kafka: PLAINTEXT).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from fashion_search.catalog.limits import MAX_CANDIDATES, MAX_SIMILARITY, MIN_SIMILARITY

if TYPE_CHECKING:
    from fashion_search.ingest.classify import LabelRule

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCAL_HOST = "127.0.0.1"
#: The user of the local stack's database when its URL is left empty (its superuser).
LOCAL_DATABASE_USER = "postgres"
#: The variable naming the dotenv file read after the environment, and its default (in the
#: local stack's state directory).
ENV_FILE_VARIABLE = "FS_ENV_FILE"
LOCAL_ENV_FILE = "local.env"

#: Each setting's former variable, by path: still read, after its ``FS_<GROUP>__<FIELD>``.
LEGACY_VARIABLES = {
    "stack.state_dir": "FS_STATE_DIR",
    "stack.profile": "FS_PROFILE",
    "stack.pg_port": "FS_PG_PORT",
    "stack.pg_replica_port": "FS_PG_REPLICA_PORT",
    "stack.s3_port": "FS_S3_PORT",
    "stack.s3_console_port": "FS_S3_CONSOLE_PORT",
    "stack.kafka_port": "FS_KAFKA_PORT",
    "stack.kafka_controller_port": "FS_KAFKA_CONTROLLER_PORT",
    "stack.mlflow_port": "FS_MLFLOW_PORT",
    "stack.localstack_port": "FS_LOCALSTACK_PORT",
    "stack.airflow_port": "FS_AIRFLOW_PORT",
    "stack.metrics_ports_from": "FS_METRICS_PORTS_FROM",
    "stack.restart_delay_s": "FS_RESTART_DELAY_S",
    "stack.restart_max_delay_s": "FS_RESTART_MAX_DELAY_S",
    "stack.restart_reset_after_s": "FS_RESTART_RESET_AFTER_S",
    "database.url": "FS_DATABASE_URL",
    "database.name": "FS_DATABASE",
    "database.pool_max_size": "FS_POOL_MAX_SIZE",
    "database.pool_timeout_s": "FS_DATABASE_POOL_TIMEOUT_S",
    "database.embedding_dim": "FS_EMBEDDING_DIM",
    "database.hnsw_ef_search": "FS_HNSW_EF_SEARCH",
    "database.shards": "FS_CATALOG_SHARDS",
    "database.statement_timeout_ms": "FS_DATABASE_STATEMENT_TIMEOUT_MS",
    "database.replicas": "FS_DATABASE_REPLICAS",
    "database.replica_max_lag_s": "FS_DATABASE_REPLICA_MAX_LAG_S",
    "database.replica_check_s": "FS_DATABASE_REPLICA_CHECK_S",
    "database.replica_timeout_s": "FS_DATABASE_REPLICA_TIMEOUT_S",
    "storage.endpoint_url": "FS_S3_ENDPOINT_URL",
    "storage.public_endpoint_url": "FS_S3_PUBLIC_ENDPOINT_URL",
    "storage.access_key": "FS_S3_ACCESS_KEY",
    "storage.secret_key": "FS_S3_SECRET_KEY",
    "storage.region": "FS_S3_REGION",
    "storage.images_bucket": "FS_IMAGES_BUCKET",
    "storage.datasets_bucket": "FS_DATASETS_BUCKET",
    "storage.models_bucket": "FS_MODELS_BUCKET",
    "storage.uploads_bucket": "FS_UPLOADS_BUCKET",
    "kafka.bootstrap": "FS_KAFKA_BOOTSTRAP",
    "kafka.username": "FS_KAFKA_USERNAME",
    "kafka.password": "FS_KAFKA_PASSWORD",
    "kafka.partitions": "FS_KAFKA_PARTITIONS",
    "kafka.uploads_topic": "FS_UPLOADS_TOPIC",
    "kafka.output_topic": "FS_OUTPUT_TOPIC",
    "kafka.dead_letter_topic": "FS_DEAD_LETTER_TOPIC",
    "kafka.feedback_topic": "FS_FEEDBACK_TOPIC",
    "registry.tracking_uri": "FS_MLFLOW_TRACKING_URI",
    "registry.model_name": "FS_MODEL_NAME",
    "registry.model_alias": "FS_MODEL_ALIAS",
    "registry.candidate_alias": "FS_MODEL_CANDIDATE_ALIAS",
    "registry.serve_timeout_s": "FS_SERVE_TIMEOUT_S",
    "model_server.address": "FS_MODEL_SERVER_ADDRESS",
    "model_server.port": "FS_MODEL_SERVER_PORT",
    "model_server.bind": "FS_MODEL_SERVER_BIND",
    "model_server.quantized": "FS_MODEL_QUANTIZED",
    "model_server.max_batch": "FS_MODEL_MAX_BATCH",
    "model_server.max_wait_ms": "FS_MODEL_MAX_WAIT_MS",
    "model_server.reload_interval_s": "FS_MODEL_RELOAD_INTERVAL_S",
    "model_server.max_image_bytes": "FS_MODEL_MAX_IMAGE_BYTES",
    "model_server.max_image_pixels": "FS_MODEL_MAX_IMAGE_PIXELS",
    "model_server.max_items": "FS_MODEL_MAX_ITEMS",
    "model_server.max_text_chars": "FS_MODEL_MAX_TEXT_CHARS",
    "model_server.max_concurrent_rpcs": "FS_MODEL_MAX_CONCURRENT_RPCS",
    "model_server.threads": "FS_MODEL_THREADS",
    "model_server.force_spinning_stop": "FS_MODEL_FORCE_SPINNING_STOP",
    "model_server.decode_pool": "FS_MODEL_DECODE_POOL",
    "ingest.group_id": "FS_INGEST_GROUP_ID",
    "ingest.batch_size": "FS_INGEST_BATCH_SIZE",
    "ingest.batch_window_ms": "FS_INGEST_BATCH_WINDOW_MS",
    "ingest.neighbours": "FS_INGEST_NEIGHBOURS",
    "ingest.duplicate_similarity": "FS_INGEST_DUPLICATE_SIMILARITY",
    "ingest.vote_temperature": "FS_INGEST_VOTE_TEMPERATURE",
    "ingest.retry_budget_s": "FS_INGEST_RETRY_BUDGET_S",
    "ingest.retry_base_s": "FS_INGEST_RETRY_BASE_S",
    "ingest.retry_max_s": "FS_INGEST_RETRY_MAX_S",
    "ingest.invoke_attempts": "FS_INGEST_INVOKE_ATTEMPTS",
    "ingest.reconcile_min_age_s": "FS_RECONCILE_MIN_AGE_S",
    "ingest.uploads_queue": "FS_UPLOADS_QUEUE",
    "ingest.sqs_endpoint_url": "FS_LOCALSTACK_ENDPOINT_URL",
    "search.mode": "FS_SEARCH_MODE",
    "search.max_upload_bytes": "FS_SEARCH_MAX_UPLOAD_BYTES",
    "search.image_url_expiry_s": "FS_IMAGE_URL_EXPIRY_S",
    "search.api_host": "FS_API_HOST",
    "search.api_port": "FS_API_PORT",
    "search.api_url": "FS_API_URL",
    "search.ui_port": "FS_UI_PORT",
    "search.api_max_in_flight": "FS_API_MAX_IN_FLIGHT",
    "search.min_score": "FS_SEARCH_MIN_SCORE",
    "search.candidates": "FS_SEARCH_CANDIDATES",
    "search.rerank_candidates": "FS_SEARCH_RERANK_CANDIDATES",
    "search.understanding": "FS_SEARCH_UNDERSTANDING",
    "search.understanding_boost": "FS_SEARCH_UNDERSTANDING_BOOST",
    "search.title_weight": "FS_SEARCH_TITLE_WEIGHT",
    "access.search": "FS_API_SEARCH_ACCESS",
    "access.api_key": "FS_API_KEY",
    "access.key_cache_s": "FS_API_KEY_CACHE_S",
    "access.rate_limit_per_key": "FS_API_RATE_LIMIT_PER_KEY",
    "access.rate_limit_per_address": "FS_API_RATE_LIMIT_PER_ADDRESS",
    "access.max_body_bytes": "FS_API_MAX_BODY_BYTES",
    "access.cors_origins": "FS_API_CORS_ORIGINS",
    "access.graphql_max_cost": "FS_GRAPHQL_MAX_COST",
    "access.graphql_introspection": "FS_GRAPHQL_INTROSPECTION",
    "rollout.grace_s": "FS_ROLLBACK_GRACE_S",
    "rollout.switch_attempts": "FS_ROLLOUT_SWITCH_ATTEMPTS",
    "retrain.min_new_products": "FS_RETRAIN_MIN_NEW_PRODUCTS",
    "retrain.drift_uploads": "FS_RETRAIN_DRIFT_UPLOADS",
    "retrain.drift_threshold": "FS_RETRAIN_DRIFT_THRESHOLD",
    "telemetry.metrics_port": "FS_METRICS_PORT",
    "telemetry.metrics_bind": "FS_METRICS_BIND",
    "telemetry.otlp_endpoint": "OTEL_EXPORTER_OTLP_ENDPOINT",
    "telemetry.log_format": "FS_LOG_FORMAT",
}


def variable(path: str) -> str:
    """The variable that sets the setting at ``path`` (``"database.pool_max_size"``:
    ``FS_DATABASE__POOL_MAX_SIZE``, ``"cache_dir"``: ``FS_CACHE_DIR``)."""
    return "FS_" + path.replace(".", "__").upper()


def _variables(settings_cls: type[BaseSettings], field_name: str) -> tuple[str, ...]:
    """The variables of a field, the preferred first; none for a group (its own fields have)."""
    if settings_cls.model_fields[field_name].annotation in _GROUPS:
        return ()
    group = _GROUPS.get(settings_cls)
    path = f"{group}.{field_name}" if group else field_name
    legacy = LEGACY_VARIABLES.get(path)
    return (variable(path), legacy) if legacy else (variable(path),)


class _Environment(EnvSettingsSource):
    """The variables of the environment that set the fields (:func:`_variables`)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        for name in _variables(self.settings_cls, field_name):
            value = self.env_vars.get(name if self.case_sensitive else name.lower())
            if value is not None:
                return value, field_name, False
        return None, field_name, False


class _EnvFile(_Environment, DotEnvSettingsSource):
    """The same variables in a dotenv file."""


def env_file() -> Path | None:
    """The dotenv file read after the environment: ``FS_ENV_FILE`` (empty: none), else
    ``local.env`` in the state directory the environment sets (or the default one)."""
    named = os.environ.get(ENV_FILE_VARIABLE)
    if named is not None:
        return Path(named) if named else None
    state_dir = _Environment(StackSettings)().get("state_dir")
    default = StackSettings.model_fields["state_dir"].get_default()
    return Path(state_dir or default) / LOCAL_ENV_FILE


class _Group(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then the environment, then the dotenv file (:func:`env_file`)."""
        return init_settings, _Environment(settings_cls), _EnvFile(settings_cls, env_file())


class StackSettings(_Group):
    """The native local stack: where it keeps data, logs and pid files, and its ports."""

    state_dir: Path = REPO_ROOT / ".stack"
    profile: Literal["native", "pip"] = "native"
    pg_port: int = 15432
    # The streaming replica ``python -m stack up pg-replica`` starts (pg_basebackup + standby).
    pg_replica_port: int = 15433
    s3_port: int = 19000
    s3_console_port: int = 19001
    kafka_port: int = 19092
    kafka_controller_port: int = 19093
    mlflow_port: int = 15000
    localstack_port: int = 14566
    airflow_port: int = 18080  # its API server and UI
    # The apps' Prometheus endpoints: model server, API, dispatcher on this port and the next.
    metrics_ports_from: int = 19460
    # The apps' supervisor (stack/supervisor.py): a program that dies is restarted after this
    # delay, doubling up to the maximum; back to the first after a run of restart_reset_after_s.
    restart_delay_s: float = 1.0
    restart_max_delay_s: float = 30.0
    restart_reset_after_s: float = 60.0

    @property
    def local_env_file(self) -> Path:
        """The local stack's dotenv file of settings, read unless ``FS_ENV_FILE`` is set."""
        return self.state_dir / LOCAL_ENV_FILE

    def kafka_is_plaintext(self) -> bool:
        """Whether the local stack's broker is the pip-only fallback (Tansu: no SASL)."""
        if self.profile == "pip":
            return True
        try:
            choices = json.loads((self.state_dir / "stack.json").read_text())
        except (OSError, ValueError):
            return False
        return isinstance(choices, dict) and choices.get("kafka") == "Tansu"


class DatabaseSettings(_Group):
    """PostgreSQL + pgvector."""

    # Default: the local stack's, as its superuser (without a password unless one is set).
    url: str = ""
    name: str = "fashion"  # of the local stack's
    pool_max_size: int = 8
    # Longest wait for a pooled connection before PoolTimeout (the API's 503): a saturated or
    # unreachable database is answered in seconds, not after a long queue.
    pool_timeout_s: float = 5.0
    embedding_dim: int = 512
    hnsw_ef_search: int = 100
    # Filtered vector search (decision 0047): a filter the planner estimates at most this many
    # rows is ranked exactly over them; a larger one walks the HNSW index, reading at most
    # hnsw_max_scan_tuples rows for k that pass (then exactly, if fewer did).
    exact_max_rows: int = Field(10_000, ge=0)
    hnsw_max_scan_tuples: int = Field(20_000, ge=1)
    # maintenance_work_mem of the pool's sessions: an HNSW build whose graph outgrows it slows
    # down several times (1M 512-d vectors need about 3 GB); only a build takes it.
    index_build_memory_mb: int = Field(4096, ge=64)
    # Parallel tasks a bulk load or a rollout's catalog embedding splits into (Airflow mapped
    # tasks: any worker, against any model-server replica).
    shards: int = Field(2, ge=1, le=64)
    # Longest statement (or lock wait) of a pooled session before PostgreSQL cancels it: a
    # stuck query fails fast instead of holding a connection; 0 = no limit.
    statement_timeout_ms: int = 30_000
    # Streaming replicas the API reads from (comma-separated host:port, each with the
    # primary's roles and database); writes and read-your-writes lookups go to the primary.
    replicas: str = ""
    # A replica further behind than this, or down, is skipped (reads go to the primary) until
    # a check, at most every replica_check_s, finds it fit again.
    replica_max_lag_s: float = Field(5.0, gt=0)
    replica_check_s: float = Field(2.0, gt=0)
    # Longest wait for a replica's pooled connection before the read goes to the primary.
    replica_timeout_s: float = Field(1.0, gt=0)

    @property
    def replica_urls(self) -> list[str]:
        """The conninfo of each replica: the primary's, at the replica's host and port."""
        from psycopg.conninfo import make_conninfo

        urls = []
        for address in filter(None, (a.strip() for a in self.replicas.split(","))):
            host, _, port = address.rpartition(":")
            urls.append(make_conninfo(self.url, host=host or port, port=port if host else None))
        return urls


class StorageSettings(_Group):
    """The S3-compatible object store (MinIO natively, moto as the pip-only fallback)."""

    endpoint_url: str = ""
    # The host browsers use for presigned URLs (default: the above).
    public_endpoint_url: str = ""
    # Both empty: boto3's credential chain.
    access_key: str = ""
    secret_key: str = ""
    region: str = "us-east-1"
    images_bucket: str = "fashion-images"
    datasets_bucket: str = "fashion-datasets"
    models_bucket: str = "fashion-models"
    uploads_bucket: str = "fashion-uploads"

    @property
    def buckets(self) -> tuple[str, ...]:
        """Every bucket the system uses."""
        return (self.images_bucket, self.datasets_bucket, self.models_bucket, self.uploads_bucket)


class KafkaSettings(_Group):
    """Kafka (Apache Kafka natively, Tansu as the pip-only fallback) and its topics."""

    bootstrap: str = ""
    # SASL_PLAINTEXT with SCRAM-SHA-256 when set, PLAINTEXT when empty.
    username: str = ""
    password: str = ""
    partitions: int = 3
    uploads_topic: str = "fashion.uploads"
    output_topic: str = "fashion.products"
    dead_letter_topic: str = "fashion.dead-letter"
    # Shoppers' feedback, relayed from the catalog by the dispatcher.
    feedback_topic: str = "fashion.feedback"

    @property
    def topics(self) -> tuple[str, ...]:
        """Every Kafka topic the system uses."""
        return (self.uploads_topic, self.output_topic, self.dead_letter_topic, self.feedback_topic)


class RegistrySettings(_Group):
    """The MLflow tracking server and model registry."""

    tracking_uri: str = ""
    model_name: str = "fashion-clip"
    model_alias: str = "champion"
    # The version a rollout builds the catalog for, or during a rollback window the previous
    # champion: the model server keeps it loaded beside the champion.
    candidate_alias: str = "candidate"
    # How long finetune waits for the model server to serve a new champion.
    serve_timeout_s: float = 300.0
    # Embedding the catalog by a version takes the image embeddings its training stored
    # (fashion_search/catalog/precomputed.py, decision 0048); off: every image goes through
    # the model server.
    reuse_training_embeddings: bool = True


class ModelServerSettings(_Group):
    """The gRPC model server, and the limits of what one call may send it."""

    address: str = ""  # as clients dial it
    port: int = 50051
    bind: str = LOCAL_HOST
    quantized: bool = False
    # Largest batch, and wait for a part-full one; 0 and -1: 32 and none on a CPU, 256 and
    # 2 ms on a GPU (model_server/runtime.py, batch_limits).
    max_batch: int = Field(0, ge=0)
    max_wait_ms: float = -1.0
    reload_interval_s: float = 10.0
    max_image_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_items: int = 1024  # texts or images a call
    max_text_chars: int = 2000
    # Calls held at once (served + queued); beyond it RESOURCE_EXHAUSTED (the API's 503).
    max_concurrent_rpcs: int = 256
    # ONNX Runtime intra-op threads of each tower's session; 0 = one per core.
    threads: int = 0
    # The sessions' thread pools sleep when a run ends instead of spinning on (model_server/
    # runtime.py; docs/decisions/0011).
    force_spinning_stop: bool = True
    # Image decoding on threads or worker processes; auto: processes when the model runs on a
    # GPU (model_server/decoding.py).
    decode_pool: Literal["auto", "threads", "processes"] = "auto"


class IngestSettings(_Group):
    """Bucket-event ingestion: dispatcher (Kafka) / poller (SQS) and the bucket-event function."""

    group_id: str = "fashion-ingest"
    batch_size: int = 32  # events an invocation
    # How long a started batch waits to fill.
    batch_window_ms: float = 20.0
    neighbours: int = 10  # vote on each label
    # An upload at least this similar (cosine) to a labelled product is a duplicate of it and
    # takes its labels; the others' vote weights neighbours by a softmax of their similarity at
    # this temperature (0: by the similarity itself). Both chosen by bench.labels.
    duplicate_similarity: float = 0.98
    vote_temperature: float = Field(0.0, ge=0.0)
    # While a dependency is down: how long one invocation tries a batch again (it must fit in
    # the function's timeout, 60 s in template.yaml), the first backoff (doubled each try) and
    # the longest (short: uploads flow again within seconds of the dependency's return); past
    # the budget the event source delivers the batch again.
    retry_budget_s: float = 30.0
    retry_base_s: float = 0.5
    retry_max_s: float = 2.0
    # Invocations of a batch failing with an error of its own (not a dependency's) before it
    # is split to find the message at fault.
    invoke_attempts: int = 3
    # Reconciliation of the uploads bucket with the catalog (its Airflow schedule is
    # FS_RECONCILE_INTERVAL_S, read by dags/reconcile_uploads.py): how old an object must be
    # before it stops waiting for its own event.
    reconcile_min_age_s: float = 60.0
    uploads_queue: str = "fashion-uploads-events"

    @property
    def label_rule(self) -> LabelRule:
        """How an upload's labels are chosen from its neighbours."""
        from fashion_search.ingest.classify import LabelRule

        return LabelRule(self.duplicate_similarity, self.vote_temperature)

    # SQS (LocalStack in the local stack).
    sqs_endpoint_url: str = ""


class RetrainSettings(_Group):
    """When the retrain_on_new_data DAG retrains (fashion_search.learning.retraining)."""

    min_new_products: int = Field(1000, ge=1)
    drift_uploads: int = Field(200, ge=1)
    drift_threshold: float = Field(0.1, gt=0)


class SearchSettings(_Group):
    """The search API and the UI."""

    mode: Literal["vector", "hybrid"] = "hybrid"
    max_upload_bytes: int = 10 * 1024 * 1024
    image_url_expiry_s: int = 3600
    api_host: str = LOCAL_HOST
    api_port: int = 18000
    api_url: str = ""  # as the UI reaches the API
    ui_port: int = 18501
    # Requests the API serves at once; more are answered 503 with Retry-After at once instead of
    # queueing (/health is exempt). 0 = 4 per pooled database connection (32 at
    # FS_DATABASE__POOL_MAX_SIZE=8): a request holds a connection for part of its time only, and
    # it stays under the 40 worker threads the handlers run on, so an admitted request never
    # waits for one.
    api_max_in_flight: int = 0
    # Hits whose cosine similarity to the query is below this are cut (a search's `minScore`
    # overrides it; -1 cuts nothing). Unset: the serving version's own cutoff, calibrated on
    # the judged queries when its catalog embeddings were built (`fashion-search calibrate`).
    # When no candidate passes, the nearest are answered, marked below the cutoff.
    min_score: float | None = Field(None, ge=MIN_SIMILARITY, le=MAX_SIMILARITY)
    # Ranked candidates that facets count (and the ranking then re-ranks); without facets,
    # query-understanding boosts and collapse re-rank the first rerank_candidates (re-ranking
    # 500 took 4.8x the p50 of a search without, 100 1.9x: docs/decisions/0036).
    candidates: int = Field(500, ge=1, le=MAX_CANDIDATES)
    rerank_candidates: int = Field(100, ge=1, le=MAX_CANDIDATES)
    # Query understanding: "boost" (soft boosts of products with the attribute values a query
    # names), "filter" (hard filters), "off". Measured: docs/benchmarks.md#benchrelevance.
    understanding: Literal["off", "boost", "filter"] = "boost"
    # The boost per understood attribute value a candidate has, in cosine similarity (chosen
    # on the judged queries: `python -m bench.judged`, decision 0039).
    understanding_boost: float = Field(0.5, ge=0.0)
    # Hybrid search: the boost of the best title match, in cosine similarity (the others by
    # their full-text rank relative to it).
    title_weight: float = Field(0.5, ge=0.0)


class SignalSettings(_Group):
    """Business signals added to a hit's relevance score (fashion_search.search.signals), each
    by its weight in cosine similarity (0 = off). Chosen so that signals unrelated to relevance
    cost at most 0.01 of P@10 on any group of judged queries (`python -m bench.signals`)."""

    # Clicks and add-to-carts (x3) recorded as feedback, each halved every half-life of its age.
    popularity_weight: float = Field(0.02, ge=0.0)
    popularity_half_life_days: float = Field(7.0, gt=0.0)
    # How recently the product entered the catalog, halved every half-life. Off: a catalog
    # loaded at once gives every product the same newness (turn it on for a flow of arrivals).
    newness_weight: float = Field(0.0, ge=0.0)
    newness_half_life_days: float = Field(30.0, gt=0.0)
    # The boost a merchandiser set (-1 to 1, `fashion-search boosts set`).
    boost_weight: float = Field(0.04, ge=0.0)


class ExperimentSettings(_Group):
    """Online experiments (fashion_search.experiments): when the sequential test may say stop."""

    # The chance of a wrong "better" or "worse", however often the status is read.
    alpha: float = Field(0.05, gt=0.0, lt=1.0)
    # Sessions each arm needs before the test may decide (its variance is estimated).
    min_sessions: int = Field(100, ge=2)
    # finetune: the share of sessions a better candidate gets in an experiment before it may
    # serve (decide_experiment switches when it wins, retires it when it loses); 0 switches
    # at once.
    rollout_share: float = Field(0.0, ge=0.0, lt=1.0)


#: The request header that carries an API key (the API reads it, clients send it).
API_KEY_HEADER = "X-API-Key"
#: The request header that names the shopper's session (experiments assign arms by it).
SESSION_HEADER = "X-Session-Id"


class AccessSettings(_Group):
    """Who may call the search API, how often, and how much one request may send."""

    # "open": search routes answer without a key (the local demo); "key": they need a key of
    # scope search or admin. Administrative routes and anything revealing uploads always do.
    search: Literal["open", "key"] = "open"
    # The key this process sends to the API (the UI's), in the API_KEY_HEADER.
    api_key: str = ""
    # How long the API trusts a looked-up key before asking the catalog again (a revoked key is
    # refused at most this much later by a process that saw it before).
    key_cache_s: float = 10.0
    # Rate limits (the `limits` library's notation): requests with a key count against the
    # key, the others against the client's address; past it, 429 with Retry-After.
    rate_limit_per_key: str = "1200/minute"
    rate_limit_per_address: str = "600/minute"
    # Largest request body of a route without its own limit (text search, GraphQL); the image
    # search takes FS_SEARCH__MAX_UPLOAD_BYTES (base64: a third more).
    max_body_bytes: int = 64 * 1024
    # Browser origins allowed by CORS (comma-separated); empty = the UI's own origin.
    cors_origins: str = ""
    # A GraphQL document's cost: every field counts 1, multiplied by the list sizes (`first`,
    # `k`) of the fields around it; above it the document is refused before it runs.
    graphql_max_cost: int = 2000
    # GraphQL introspection and the GraphiQL page (off in production).
    graphql_introspection: bool = False


class RolloutSettings(_Group):
    """Model rollouts: a candidate's catalog embeddings built beside the serving version's."""

    # How long a replaced version's embeddings stay (and its model stays loaded under the
    # candidate alias) so that `fashion-search rollback` is instant; then they are retired.
    grace_s: float = 24 * 3600.0
    # How many times a switch embeds products that arrived since the build, before giving up.
    switch_attempts: int = 5


class TelemetrySettings(_Group):
    """What every role reports: metrics, traces, logs (fashion_search/telemetry)."""

    # The role's Prometheus endpoint (/metrics on a port of its own); 0 = none.
    metrics_port: int = 0
    metrics_bind: str = LOCAL_HOST
    # OTLP/HTTP collector (e.g. http://otel-collector:4318); empty = no traces.
    otlp_endpoint: str = ""
    log_format: Literal["json", "text"] = "json"


class Settings(_Group):
    """Configuration from the environment, grouped by part."""

    # The product dataset: a Hugging Face dataset id, or a local parquet file or folder.
    dataset_source: str = "ashraq/fashion-product-images-small"
    # Installs of the local stack, and the model server's ONNX cache.
    cache_dir: Path = Path.home() / ".cache" / "fashion-search"
    stack: StackSettings = Field(default_factory=StackSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    model_server: ModelServerSettings = Field(default_factory=ModelServerSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    search: SearchSettings = Field(default_factory=SearchSettings)
    signals: SignalSettings = Field(default_factory=SignalSettings)
    experiments: ExperimentSettings = Field(default_factory=ExperimentSettings)
    access: AccessSettings = Field(default_factory=AccessSettings)
    rollout: RolloutSettings = Field(default_factory=RolloutSettings)
    retrain: RetrainSettings = Field(default_factory=RetrainSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)

    @model_validator(mode="after")
    def _default_endpoints(self) -> Settings:
        """Endpoints left empty point at the native local stack on 127.0.0.1; limits left 0
        follow the ones they depend on."""
        host, stack = LOCAL_HOST, self.stack
        db = self.database
        db.url = db.url or f"postgresql://{LOCAL_DATABASE_USER}@{host}:{stack.pg_port}/{db.name}"
        storage = self.storage
        storage.endpoint_url = storage.endpoint_url or f"http://{host}:{stack.s3_port}"
        kafka = self.kafka
        kafka.bootstrap = kafka.bootstrap or f"{host}:{stack.kafka_port}"
        registry = self.registry
        registry.tracking_uri = registry.tracking_uri or f"http://{host}:{stack.mlflow_port}"
        server = self.model_server
        server.address = server.address or f"{host}:{server.port}"
        search = self.search
        search.api_url = search.api_url or f"http://{host}:{search.api_port}"
        search.api_max_in_flight = search.api_max_in_flight or 4 * db.pool_max_size
        access = self.access
        access.cors_origins = access.cors_origins or f"http://{host}:{search.ui_port}"
        ingest = self.ingest
        ingest.sqs_endpoint_url = (
            ingest.sqs_endpoint_url or f"http://{host}:{stack.localstack_port}"
        )
        return self

    def paths(self) -> Iterator[tuple[str, Any]]:
        """Every setting's path (``"database.url"``, ``"cache_dir"``) and value."""
        for name, value in self:
            if isinstance(value, _Group):
                yield from ((f"{name}.{field}", v) for field, v in value)
            else:
                yield name, value

    def to_env(self) -> dict[str, str]:
        """Every setting as the variable that sets it (for a child process); None is left out:
        the child's default too."""
        return {variable(path): str(value) for path, value in self.paths() if value is not None}

    def replace(self, **groups: dict[str, Any]) -> Settings:
        """A copy with some fields of some groups replaced: ``replace(ingest={"batch_size": 4})``;
        the top-level fields by ``replace(top={"cache_dir": path})``."""
        update: dict[str, Any] = dict(groups.pop("top", {}))
        for group, fields in groups.items():
            update[group] = getattr(self, group).model_copy(update=fields)
        return self.model_copy(update=update)


#: The name of each group's field in Settings, by the group's class.
_GROUPS: dict[type[BaseSettings], str] = {
    field.annotation: name
    for name, field in Settings.model_fields.items()
    if isinstance(field.annotation, type) and issubclass(field.annotation, _Group)
}


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
