"""One typed settings object for every part of fashion-search, read from ``FS_*`` variables.

Settings are grouped by part (``settings.database.url``, ``settings.model_server.max_batch``,
...); each field names its environment variable. Endpoints left empty point at the native local
stack on 127.0.0.1; the docker-compose stack and real deployments set them (``FS_DATABASE_URL``,
``FS_S3_ENDPOINT_URL``, ...). Credentials left empty are the local stack's owner credentials
(PostgreSQL superuser, MinIO root user, Kafka admin user) from its generated secrets file
(``{FS_STATE_DIR}/secrets.env``, written by ``python -m stack up``) when that file exists; else
they stay empty (S3: boto3's credential chain, Kafka: PLAINTEXT).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from fashion_search.catalog.limits import MAX_CANDIDATES, MAX_SIMILARITY, MIN_SIMILARITY

if TYPE_CHECKING:
    from fashion_search.ingest.classify import LabelRule

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCAL_HOST = "127.0.0.1"
#: The local stack's generated secrets (stack/secrets.py writes them), in its state directory.
SECRETS_FILE = "secrets.env"
#: The local stack's owners: PostgreSQL superuser, MinIO root user, Kafka admin user...
PG_SUPERUSER = "postgres"
S3_ROOT_USER = "fashion-root"
KAFKA_ADMIN_USER = "fashion-admin"
#: ...and the variables of the secrets file with their passwords.
OWNER_SECRETS = {
    PG_SUPERUSER: "FS_SECRET_PG_OWNER",
    S3_ROOT_USER: "FS_SECRET_S3_ROOT",
    KAFKA_ADMIN_USER: "FS_SECRET_KAFKA_ADMIN",
}


def read_env_file(path: Path) -> dict[str, str]:
    """The ``KEY=VALUE`` lines of an env file (blank lines and ``#`` comments skipped); empty
    when the file is missing or unreadable."""
    try:
        text = path.read_text()
    except OSError:
        return {}
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs if not k.strip().startswith("#")}


class _Group(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)


class StackSettings(_Group):
    """The native local stack: where it keeps data, logs and pid files, and its ports."""

    state_dir: Path = Field(REPO_ROOT / ".stack", validation_alias="FS_STATE_DIR")
    profile: Literal["native", "pip"] = Field("native", validation_alias="FS_PROFILE")
    pg_port: int = Field(15432, validation_alias="FS_PG_PORT")
    # The streaming replica ``python -m stack up pg-replica`` starts (pg_basebackup + standby).
    pg_replica_port: int = Field(15433, validation_alias="FS_PG_REPLICA_PORT")
    s3_port: int = Field(19000, validation_alias="FS_S3_PORT")
    s3_console_port: int = Field(19001, validation_alias="FS_S3_CONSOLE_PORT")
    kafka_port: int = Field(19092, validation_alias="FS_KAFKA_PORT")
    kafka_controller_port: int = Field(19093, validation_alias="FS_KAFKA_CONTROLLER_PORT")
    mlflow_port: int = Field(15000, validation_alias="FS_MLFLOW_PORT")
    localstack_port: int = Field(14566, validation_alias="FS_LOCALSTACK_PORT")
    airflow_port: int = Field(18080, validation_alias="FS_AIRFLOW_PORT")  # its API server and UI
    # The apps' Prometheus endpoints: model server, API, dispatcher on this port and the next.
    metrics_ports_from: int = Field(19460, validation_alias="FS_METRICS_PORTS_FROM")
    # The apps' supervisor (stack/supervisor.py): a program that dies is restarted after this
    # delay, doubling up to the maximum; back to the first after a run of restart_reset_after_s.
    restart_delay_s: float = Field(1.0, validation_alias="FS_RESTART_DELAY_S")
    restart_max_delay_s: float = Field(30.0, validation_alias="FS_RESTART_MAX_DELAY_S")
    restart_reset_after_s: float = Field(60.0, validation_alias="FS_RESTART_RESET_AFTER_S")
    # Whether credentials left empty are the owner's from the secrets file (false for the apps
    # the stack starts: each gets its own role's credentials and nothing else).
    owner_credentials: bool = Field(True, validation_alias="FS_OWNER_CREDENTIALS")

    @property
    def secrets_file(self) -> Path:
        """The generated secrets of the local stack (mode 0600, KEY=VALUE lines)."""
        return self.state_dir / SECRETS_FILE

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

    # Default: the local stack's, as its superuser with the generated password.
    url: str = Field("", validation_alias="FS_DATABASE_URL")
    name: str = Field("fashion", validation_alias="FS_DATABASE")  # of the local stack's
    pool_max_size: int = Field(8, validation_alias="FS_POOL_MAX_SIZE")
    # Longest wait for a pooled connection before PoolTimeout (the API's 503): a saturated or
    # unreachable database is answered in seconds, not after a long queue.
    pool_timeout_s: float = Field(5.0, validation_alias="FS_DATABASE_POOL_TIMEOUT_S")
    embedding_dim: int = Field(512, validation_alias="FS_EMBEDDING_DIM")
    hnsw_ef_search: int = Field(100, validation_alias="FS_HNSW_EF_SEARCH")
    # Parallel tasks a bulk load or a rollout's catalog embedding splits into (Airflow mapped
    # tasks: any worker, against any model-server replica).
    shards: int = Field(2, ge=1, le=64, validation_alias="FS_CATALOG_SHARDS")
    # Longest statement (or lock wait) of a pooled session before PostgreSQL cancels it: a
    # stuck query fails fast instead of holding a connection; 0 = no limit.
    statement_timeout_ms: int = Field(30_000, validation_alias="FS_DATABASE_STATEMENT_TIMEOUT_MS")
    # Streaming replicas the API reads from (comma-separated host:port, each with the
    # primary's roles and database); writes and read-your-writes lookups go to the primary.
    replicas: str = Field("", validation_alias="FS_DATABASE_REPLICAS")
    # A replica further behind than this, or down, is skipped (reads go to the primary) until
    # a check, at most every replica_check_s, finds it fit again.
    replica_max_lag_s: float = Field(5.0, gt=0, validation_alias="FS_DATABASE_REPLICA_MAX_LAG_S")
    replica_check_s: float = Field(2.0, gt=0, validation_alias="FS_DATABASE_REPLICA_CHECK_S")
    # Longest wait for a replica's pooled connection before the read goes to the primary.
    replica_timeout_s: float = Field(1.0, gt=0, validation_alias="FS_DATABASE_REPLICA_TIMEOUT_S")

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

    endpoint_url: str = Field("", validation_alias="FS_S3_ENDPOINT_URL")
    # The host browsers use for presigned URLs (default: the above).
    public_endpoint_url: str = Field("", validation_alias="FS_S3_PUBLIC_ENDPOINT_URL")
    # Both empty: the local stack's root user (its endpoint left empty too and its secrets file
    # there), else boto3's credential chain.
    access_key: str = Field("", validation_alias="FS_S3_ACCESS_KEY")
    secret_key: str = Field("", validation_alias="FS_S3_SECRET_KEY")
    region: str = Field("us-east-1", validation_alias="FS_S3_REGION")
    images_bucket: str = Field("fashion-images", validation_alias="FS_IMAGES_BUCKET")
    datasets_bucket: str = Field("fashion-datasets", validation_alias="FS_DATASETS_BUCKET")
    models_bucket: str = Field("fashion-models", validation_alias="FS_MODELS_BUCKET")
    uploads_bucket: str = Field("fashion-uploads", validation_alias="FS_UPLOADS_BUCKET")

    @property
    def buckets(self) -> tuple[str, ...]:
        """Every bucket the system uses."""
        return (self.images_bucket, self.datasets_bucket, self.models_bucket, self.uploads_bucket)


class KafkaSettings(_Group):
    """Kafka (Apache Kafka natively, Tansu as the pip-only fallback) and its topics."""

    bootstrap: str = Field("", validation_alias="FS_KAFKA_BOOTSTRAP")
    # SASL_PLAINTEXT with SCRAM-SHA-256 when set, PLAINTEXT when empty. Both empty with the
    # bootstrap empty too: the local stack's admin user (from its secrets file, unless its broker
    # is the fallback, which has no SASL).
    username: str = Field("", validation_alias="FS_KAFKA_USERNAME")
    password: str = Field("", validation_alias="FS_KAFKA_PASSWORD")
    partitions: int = Field(3, validation_alias="FS_KAFKA_PARTITIONS")
    uploads_topic: str = Field("fashion.uploads", validation_alias="FS_UPLOADS_TOPIC")
    output_topic: str = Field("fashion.products", validation_alias="FS_OUTPUT_TOPIC")
    dead_letter_topic: str = Field("fashion.dead-letter", validation_alias="FS_DEAD_LETTER_TOPIC")
    # Shoppers' feedback, relayed from the catalog by the dispatcher.
    feedback_topic: str = Field("fashion.feedback", validation_alias="FS_FEEDBACK_TOPIC")

    @property
    def topics(self) -> tuple[str, ...]:
        """Every Kafka topic the system uses."""
        return (self.uploads_topic, self.output_topic, self.dead_letter_topic, self.feedback_topic)


class RegistrySettings(_Group):
    """The MLflow tracking server and model registry."""

    tracking_uri: str = Field("", validation_alias="FS_MLFLOW_TRACKING_URI")
    model_name: str = Field("fashion-clip", validation_alias="FS_MODEL_NAME")
    model_alias: str = Field("champion", validation_alias="FS_MODEL_ALIAS")
    # The version a rollout builds the catalog for, or during a rollback window the previous
    # champion: the model server keeps it loaded beside the champion.
    candidate_alias: str = Field("candidate", validation_alias="FS_MODEL_CANDIDATE_ALIAS")
    # How long finetune waits for the model server to serve a new champion.
    serve_timeout_s: float = Field(300.0, validation_alias="FS_SERVE_TIMEOUT_S")


class ModelServerSettings(_Group):
    """The gRPC model server, and the limits of what one call may send it."""

    address: str = Field("", validation_alias="FS_MODEL_SERVER_ADDRESS")  # as clients dial it
    port: int = Field(50051, validation_alias="FS_MODEL_SERVER_PORT")
    bind: str = Field(LOCAL_HOST, validation_alias="FS_MODEL_SERVER_BIND")
    quantized: bool = Field(False, validation_alias="FS_MODEL_QUANTIZED")
    # Largest batch, and wait for a part-full one; 0 and -1: 32 and none on a CPU, 256 and
    # 2 ms on a GPU (model_server/runtime.py, batch_limits).
    max_batch: int = Field(0, ge=0, validation_alias="FS_MODEL_MAX_BATCH")
    max_wait_ms: float = Field(-1.0, validation_alias="FS_MODEL_MAX_WAIT_MS")
    reload_interval_s: float = Field(10.0, validation_alias="FS_MODEL_RELOAD_INTERVAL_S")
    max_image_bytes: int = Field(20 * 1024 * 1024, validation_alias="FS_MODEL_MAX_IMAGE_BYTES")
    max_image_pixels: int = Field(40_000_000, validation_alias="FS_MODEL_MAX_IMAGE_PIXELS")
    max_items: int = Field(1024, validation_alias="FS_MODEL_MAX_ITEMS")  # texts or images a call
    max_text_chars: int = Field(2000, validation_alias="FS_MODEL_MAX_TEXT_CHARS")
    # Calls held at once (served + queued); beyond it RESOURCE_EXHAUSTED (the API's 503).
    max_concurrent_rpcs: int = Field(256, validation_alias="FS_MODEL_MAX_CONCURRENT_RPCS")
    # ONNX Runtime intra-op threads of each tower's session; 0 = one per core.
    threads: int = Field(0, validation_alias="FS_MODEL_THREADS")
    # The sessions' thread pools sleep when a run ends instead of spinning on (model_server/
    # runtime.py; docs/decisions/0011).
    force_spinning_stop: bool = Field(True, validation_alias="FS_MODEL_FORCE_SPINNING_STOP")
    # Image decoding on threads or worker processes; auto: processes when the model runs on a
    # GPU (model_server/decoding.py).
    decode_pool: Literal["auto", "threads", "processes"] = Field(
        "auto", validation_alias="FS_MODEL_DECODE_POOL"
    )


class IngestSettings(_Group):
    """Bucket-event ingestion: dispatcher (Kafka) / poller (SQS) and the bucket-event function."""

    group_id: str = Field("fashion-ingest", validation_alias="FS_INGEST_GROUP_ID")
    batch_size: int = Field(32, validation_alias="FS_INGEST_BATCH_SIZE")  # events an invocation
    # How long a started batch waits to fill.
    batch_window_ms: float = Field(20.0, validation_alias="FS_INGEST_BATCH_WINDOW_MS")
    neighbours: int = Field(10, validation_alias="FS_INGEST_NEIGHBOURS")  # vote on each label
    # An upload at least this similar (cosine) to a labelled product is a duplicate of it and
    # takes its labels; the others' vote weights neighbours by a softmax of their similarity at
    # this temperature (0: by the similarity itself). Both chosen by bench.labels.
    duplicate_similarity: float = Field(0.98, validation_alias="FS_INGEST_DUPLICATE_SIMILARITY")
    vote_temperature: float = Field(0.0, ge=0.0, validation_alias="FS_INGEST_VOTE_TEMPERATURE")
    # While a dependency is down: how long one invocation tries a batch again (it must fit in
    # the function's timeout, 60 s in template.yaml), the first backoff (doubled each try) and
    # the longest; past the budget the event source delivers the batch again.
    retry_budget_s: float = Field(30.0, validation_alias="FS_INGEST_RETRY_BUDGET_S")
    retry_base_s: float = Field(0.5, validation_alias="FS_INGEST_RETRY_BASE_S")
    retry_max_s: float = Field(10.0, validation_alias="FS_INGEST_RETRY_MAX_S")
    # Invocations of a batch failing with an error of its own (not a dependency's) before it
    # is split to find the message at fault.
    invoke_attempts: int = Field(3, validation_alias="FS_INGEST_INVOKE_ATTEMPTS")
    # Reconciliation of the uploads bucket with the catalog (its Airflow schedule is
    # FS_RECONCILE_INTERVAL_S, read by dags/reconcile_uploads.py): how old an object must be
    # before it stops waiting for its own event.
    reconcile_min_age_s: float = Field(60.0, validation_alias="FS_RECONCILE_MIN_AGE_S")
    uploads_queue: str = Field("fashion-uploads-events", validation_alias="FS_UPLOADS_QUEUE")

    @property
    def label_rule(self) -> LabelRule:
        """How an upload's labels are chosen from its neighbours."""
        from fashion_search.ingest.classify import LabelRule

        return LabelRule(self.duplicate_similarity, self.vote_temperature)

    # SQS (LocalStack in the local stack).
    sqs_endpoint_url: str = Field("", validation_alias="FS_LOCALSTACK_ENDPOINT_URL")


class RetrainSettings(_Group):
    """When the retrain_on_new_data DAG retrains (fashion_search.learning.retraining)."""

    min_new_products: int = Field(1000, ge=1, validation_alias="FS_RETRAIN_MIN_NEW_PRODUCTS")
    drift_uploads: int = Field(200, ge=1, validation_alias="FS_RETRAIN_DRIFT_UPLOADS")
    drift_threshold: float = Field(0.1, gt=0, validation_alias="FS_RETRAIN_DRIFT_THRESHOLD")


class SearchSettings(_Group):
    """The search API and the UI."""

    mode: Literal["vector", "hybrid"] = Field("hybrid", validation_alias="FS_SEARCH_MODE")
    max_upload_bytes: int = Field(10 * 1024 * 1024, validation_alias="FS_SEARCH_MAX_UPLOAD_BYTES")
    image_url_expiry_s: int = Field(3600, validation_alias="FS_IMAGE_URL_EXPIRY_S")
    api_host: str = Field(LOCAL_HOST, validation_alias="FS_API_HOST")
    api_port: int = Field(18000, validation_alias="FS_API_PORT")
    api_url: str = Field("", validation_alias="FS_API_URL")  # as the UI reaches the API
    ui_port: int = Field(18501, validation_alias="FS_UI_PORT")
    # Requests the API serves at once; more are answered 503 with Retry-After at once instead of
    # queueing (/health is exempt). 0 = 4 per pooled database connection (32 at
    # FS_POOL_MAX_SIZE=8): a request holds a connection for part of its time only, and it stays
    # under the 40 worker threads the handlers run on, so an admitted request never waits for one.
    api_max_in_flight: int = Field(0, validation_alias="FS_API_MAX_IN_FLIGHT")
    # Hits whose cosine similarity to the query is below this are cut (a search's `minScore`
    # overrides it; -1 cuts nothing). Unset: the serving version's own cutoff, calibrated on
    # the judged queries when its catalog embeddings were built (`fashion-search calibrate`).
    # When no candidate passes, the nearest are answered, marked below the cutoff.
    min_score: float | None = Field(
        None, ge=MIN_SIMILARITY, le=MAX_SIMILARITY, validation_alias="FS_SEARCH_MIN_SCORE"
    )
    # Ranked candidates that facets count (and the ranking then re-ranks); without facets,
    # query-understanding boosts and collapse re-rank the first rerank_candidates (re-ranking
    # 500 took 4.8x the p50 of a search without, 100 1.9x: docs/decisions/0036).
    candidates: int = Field(500, ge=1, le=MAX_CANDIDATES, validation_alias="FS_SEARCH_CANDIDATES")
    rerank_candidates: int = Field(
        100, ge=1, le=MAX_CANDIDATES, validation_alias="FS_SEARCH_RERANK_CANDIDATES"
    )
    # Query understanding: "boost" (soft boosts of products with the attribute values a query
    # names), "filter" (hard filters), "off". Measured: docs/benchmarks.md#benchrelevance.
    understanding: Literal["off", "boost", "filter"] = Field(
        "boost", validation_alias="FS_SEARCH_UNDERSTANDING"
    )
    # The boost per understood attribute value a candidate has, in cosine similarity (chosen
    # on the judged queries: `python -m bench.judged`, decision 0039).
    understanding_boost: float = Field(
        0.5, ge=0.0, validation_alias="FS_SEARCH_UNDERSTANDING_BOOST"
    )
    # Hybrid search: the boost of the best title match, in cosine similarity (the others by
    # their full-text rank relative to it).
    title_weight: float = Field(0.5, ge=0.0, validation_alias="FS_SEARCH_TITLE_WEIGHT")


#: The request header that carries an API key (the API reads it, clients send it).
API_KEY_HEADER = "X-API-Key"


class AccessSettings(_Group):
    """Who may call the search API, how often, and how much one request may send."""

    # "open": search routes answer without a key (the local demo); "key": they need a key of
    # scope search or admin. Administrative routes and anything revealing uploads always do.
    search: Literal["open", "key"] = Field("open", validation_alias="FS_API_SEARCH_ACCESS")
    # The key this process sends to the API (the UI's), in the API_KEY_HEADER.
    api_key: str = Field("", validation_alias="FS_API_KEY")
    # How long the API trusts a looked-up key before asking the catalog again (a revoked key is
    # refused at most this much later by a process that saw it before).
    key_cache_s: float = Field(10.0, validation_alias="FS_API_KEY_CACHE_S")
    # Rate limits (the `limits` library's notation): requests with a key count against the
    # key, the others against the client's address; past it, 429 with Retry-After.
    rate_limit_per_key: str = Field("1200/minute", validation_alias="FS_API_RATE_LIMIT_PER_KEY")
    rate_limit_per_address: str = Field(
        "600/minute", validation_alias="FS_API_RATE_LIMIT_PER_ADDRESS"
    )
    # Largest request body of a route without its own limit (text search, GraphQL); the image
    # search takes FS_SEARCH_MAX_UPLOAD_BYTES (base64: a third more).
    max_body_bytes: int = Field(64 * 1024, validation_alias="FS_API_MAX_BODY_BYTES")
    # Browser origins allowed by CORS (comma-separated); empty = the UI's own origin.
    cors_origins: str = Field("", validation_alias="FS_API_CORS_ORIGINS")
    # A GraphQL document's cost: every field counts 1, multiplied by the list sizes (`first`,
    # `k`) of the fields around it; above it the document is refused before it runs.
    graphql_max_cost: int = Field(2000, validation_alias="FS_GRAPHQL_MAX_COST")
    # GraphQL introspection and the GraphiQL page (off in production).
    graphql_introspection: bool = Field(False, validation_alias="FS_GRAPHQL_INTROSPECTION")


class RolloutSettings(_Group):
    """Model rollouts: a candidate's catalog embeddings built beside the serving version's."""

    # How long a replaced version's embeddings stay (and its model stays loaded under the
    # candidate alias) so that `fashion-search rollback` is instant; then they are retired.
    grace_s: float = Field(24 * 3600.0, validation_alias="FS_ROLLBACK_GRACE_S")
    # How many times a switch embeds products that arrived since the build, before giving up.
    switch_attempts: int = Field(5, validation_alias="FS_ROLLOUT_SWITCH_ATTEMPTS")


class TelemetrySettings(_Group):
    """What every role reports: metrics, traces, logs (fashion_search/telemetry)."""

    # The role's Prometheus endpoint (/metrics on a port of its own); 0 = none.
    metrics_port: int = Field(0, validation_alias="FS_METRICS_PORT")
    metrics_bind: str = Field(LOCAL_HOST, validation_alias="FS_METRICS_BIND")
    # OTLP/HTTP collector (e.g. http://otel-collector:4318); empty = no traces.
    otlp_endpoint: str = Field("", validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT")
    log_format: Literal["json", "text"] = Field("json", validation_alias="FS_LOG_FORMAT")


class Settings(_Group):
    """Configuration from the environment, grouped by part."""

    # The product dataset: a Hugging Face dataset id, or a local parquet file or folder.
    dataset_source: str = Field(
        "ashraq/fashion-product-images-small", validation_alias="FS_DATASET_SOURCE"
    )
    # Installs of the local stack, and the model server's ONNX cache.
    cache_dir: Path = Field(
        Path.home() / ".cache" / "fashion-search", validation_alias="FS_CACHE_DIR"
    )
    stack: StackSettings = Field(default_factory=StackSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    model_server: ModelServerSettings = Field(default_factory=ModelServerSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    search: SearchSettings = Field(default_factory=SearchSettings)
    access: AccessSettings = Field(default_factory=AccessSettings)
    rollout: RolloutSettings = Field(default_factory=RolloutSettings)
    retrain: RetrainSettings = Field(default_factory=RetrainSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)

    @model_validator(mode="after")
    def _default_endpoints(self) -> Settings:
        """Endpoints left empty point at the native local stack on 127.0.0.1, credentials left
        empty are its owner's (from its secrets file, when there is one); limits left 0 follow
        the ones they depend on."""
        host, stack = LOCAL_HOST, self.stack
        owner = read_env_file(stack.secrets_file) if stack.owner_credentials else {}
        db = self.database
        if not db.url:
            password = owner.get(OWNER_SECRETS[PG_SUPERUSER], "")
            login = f"{PG_SUPERUSER}:{quote(password, safe='')}" if password else PG_SUPERUSER
            db.url = f"postgresql://{login}@{host}:{stack.pg_port}/{db.name}"
        storage = self.storage
        root = owner.get(OWNER_SECRETS[S3_ROOT_USER], "")
        if root and not (storage.endpoint_url or storage.access_key or storage.secret_key):
            storage.access_key, storage.secret_key = S3_ROOT_USER, root
        storage.endpoint_url = storage.endpoint_url or f"http://{host}:{stack.s3_port}"
        kafka = self.kafka
        admin = owner.get(OWNER_SECRETS[KAFKA_ADMIN_USER], "")
        unset = not (kafka.bootstrap or kafka.username or kafka.password)
        if admin and unset and not stack.kafka_is_plaintext():  # the fallback has no SASL
            kafka.username, kafka.password = KAFKA_ADMIN_USER, admin
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

    def to_env(self) -> dict[str, str]:
        """Every setting as the ``FS_*`` variable that sets it (for a child process)."""
        env: dict[str, str] = {}
        for group in (self, *(v for v in self.__dict__.values() if isinstance(v, _Group))):
            for name, field in type(group).model_fields.items():
                value = getattr(group, name)  # None is left out: the child's default too
                if isinstance(field.validation_alias, str) and not isinstance(value, _Group | None):
                    env[field.validation_alias] = str(value)
        return env

    def replace(self, **groups: dict[str, Any]) -> Settings:
        """A copy with some fields of some groups replaced: ``replace(ingest={"batch_size": 4})``;
        the top-level fields by ``replace(top={"cache_dir": path})``."""
        update: dict[str, Any] = dict(groups.pop("top", {}))
        for group, fields in groups.items():
            update[group] = getattr(self, group).model_copy(update=fields)
        return self.model_copy(update=update)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
