"""One typed settings object for every part of fashion-search, read from ``FS_*`` variables.

Endpoints default to the native local stack on 127.0.0.1; the docker-compose stack and real
deployments override them (``FS_DATABASE_URL``, ``FS_S3_ENDPOINT_URL``, ...).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
_DATASET_IN_SHARED = (
    "shared/datasets/fashion-product-images-small/fashion-product-images-small.parquet"
)


def _local_origin(repo: Path) -> Path | None:
    """The checkout this repository was cloned from, when that is a local path."""
    try:
        config = (repo / ".git" / "config").read_text()
    except OSError:
        return None
    match = re.search(r'\[remote "origin"\][^\[]*?\burl\s*=\s*(\S+)', config)
    origin = Path(match[1]) if match else None
    return origin if origin is not None and origin.is_absolute() and origin.is_dir() else None


def _shared_dataset(repo: Path) -> Path:
    """The shared parquet next to this checkout, or next to the local checkout it was cloned
    from (a throw-away clone elsewhere still finds it)."""
    candidates = [repo.parent / _DATASET_IN_SHARED]
    origin = _local_origin(repo)
    if origin is not None:
        candidates.append(origin.parent / _DATASET_IN_SHARED)
    return next((path for path in candidates if path.exists()), candidates[0])


SHARED_DATASET = _shared_dataset(REPO_ROOT)


class Settings(BaseSettings):
    """Configuration from the environment (prefix ``FS_``)."""

    model_config = SettingsConfigDict(env_prefix="FS_", extra="ignore")

    # Local stack: where it keeps data, logs and pid files, and where installs are cached.
    state_dir: Path = REPO_ROOT / ".stack"
    cache_dir: Path = Path.home() / ".cache" / "fashion-search"
    profile: Literal["native", "pip"] = "native"

    # Product dataset: a local parquet file or folder, or a Hugging Face dataset id.
    dataset_source: str = (
        str(SHARED_DATASET) if SHARED_DATASET.exists() else "ashraq/fashion-product-images-small"
    )

    # PostgreSQL + pgvector.
    pg_port: int = 15432
    database: str = "fashion"
    database_url: str = ""
    pool_max_size: int = 8
    embedding_dim: int = 512
    hnsw_ef_search: int = 100

    # S3-compatible object store (MinIO natively, moto as the pip-only fallback).
    s3_port: int = 19000
    s3_console_port: int = 19001
    s3_endpoint_url: str = ""
    s3_public_endpoint_url: str = ""  # host browsers use for presigned URLs (default: the above)
    s3_access_key: str = "fashion"
    s3_secret_key: str = "fashion-secret"
    s3_region: str = "us-east-1"
    images_bucket: str = "fashion-images"
    datasets_bucket: str = "fashion-datasets"
    models_bucket: str = "fashion-models"
    uploads_bucket: str = "fashion-uploads"

    # Kafka (Apache Kafka natively, Tansu as the pip-only fallback).
    kafka_port: int = 19092
    kafka_controller_port: int = 19093
    kafka_bootstrap: str = ""
    kafka_partitions: int = 3
    uploads_topic: str = "fashion.uploads"
    output_topic: str = "fashion.products"
    dead_letter_topic: str = "fashion.dead-letter"

    # MLflow tracking server and model registry.
    mlflow_port: int = 15000
    mlflow_tracking_uri: str = ""

    # LocalStack (S3 + SQS) for the AWS-shaped trigger path.
    localstack_port: int = 14566
    localstack_endpoint_url: str = ""
    uploads_queue: str = "fashion-uploads-events"

    # Model registry (MLflow) and the gRPC model server.
    model_name: str = "fashion-clip"
    model_alias: str = "champion"
    model_server_port: int = 50051
    model_server_address: str = ""
    model_server_bind: str = "127.0.0.1"
    model_quantized: bool = False
    model_max_batch: int = 32
    model_max_wait_ms: float = 0.0  # extra wait for a part-full batch
    model_reload_interval_s: float = 10.0
    model_max_image_bytes: int = 20 * 1024 * 1024
    model_max_image_pixels: int = 40_000_000
    model_max_items: int = 1024  # texts or images in one call
    model_max_text_chars: int = 2000
    model_threads: int = 0  # ONNX Runtime intra-op threads of the image tower; 0 = one per core
    # Text tower intra-op threads; 0 = half the cores (at least 1), leaving the others to the
    # API and the database beside it. On 2 cores, 1 thread against 2 for ViT-B/32 int8 text
    # search: p50 at concurrency 1 the same, p95 lower in every run; at 8 concurrent 16-38%
    # more req/s, at 32 -1 to +27% (README, Search).
    model_text_threads: int = 0
    # Threads of a second text session for a lone text on an idle model (CPU only); 0 = one per
    # core; no second session unless more than the text session's. ViT-B/32 int8 text search at
    # concurrency 1 on 2 cores: p50 1.5-1.9 ms lower on average, req/s under load the same
    # (README, Search).
    model_lone_text_threads: int = 0
    # glibc's malloc asks for transparent huge pages (Linux): fewer TLB misses as the towers
    # stream their weights; ViT-B/32 int8 text search p50 -1.1 ms on this VM (README, Search).
    model_huge_pages: bool = True

    # Bucket-event ingestion: dispatcher (Kafka) / poller (SQS) and the bucket-event function.
    ingest_group_id: str = "fashion-ingest"
    ingest_batch_size: int = 32  # events per function invocation
    ingest_batch_window_ms: float = 20.0  # how long a started batch waits to fill
    ingest_neighbours: int = 10  # catalog neighbours that vote on each label
    ingest_retry_attempts: int = 8  # model-server calls per batch before dead-lettering
    ingest_retry_base_s: float = 0.5  # first backoff, doubled each attempt
    ingest_retry_max_s: float = 10.0
    ingest_invoke_attempts: int = 3  # invocations of a failing batch before it is split

    # Airflow DAG steps: how long finetune waits for the model server to serve the champion.
    serve_timeout_s: float = 300.0

    # Search API and UI.
    search_mode: Literal["vector", "hybrid"] = "hybrid"  # measured better: README, Search
    search_max_upload_bytes: int = 10 * 1024 * 1024
    image_url_expiry_s: int = 3600
    api_host: str = "127.0.0.1"
    api_port: int = 18000
    api_url: str = ""
    ui_port: int = 18501

    @model_validator(mode="after")
    def _default_endpoints(self) -> Settings:
        """Endpoints left empty point at the native local stack on 127.0.0.1."""
        host = "127.0.0.1"
        self.database_url = (
            self.database_url or f"postgresql://postgres@{host}:{self.pg_port}/{self.database}"
        )
        self.s3_endpoint_url = self.s3_endpoint_url or f"http://{host}:{self.s3_port}"
        self.kafka_bootstrap = self.kafka_bootstrap or f"{host}:{self.kafka_port}"
        self.mlflow_tracking_uri = self.mlflow_tracking_uri or f"http://{host}:{self.mlflow_port}"
        self.model_server_address = self.model_server_address or f"{host}:{self.model_server_port}"
        self.api_url = self.api_url or f"http://{host}:{self.api_port}"
        self.localstack_endpoint_url = (
            self.localstack_endpoint_url or f"http://{host}:{self.localstack_port}"
        )
        return self

    @property
    def buckets(self) -> tuple[str, ...]:
        """Every bucket the system uses."""
        return (self.images_bucket, self.datasets_bucket, self.models_bucket, self.uploads_bucket)

    @property
    def topics(self) -> tuple[str, ...]:
        """Every Kafka topic the system uses."""
        return (self.uploads_topic, self.output_topic, self.dead_letter_topic)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
