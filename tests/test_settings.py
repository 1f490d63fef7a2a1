"""One typed settings object, from FS_* variables, with endpoints derived from ports."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from fashion_search.settings import Settings


def test_defaults_point_at_the_native_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FS_DATABASE_URL", "FS_S3_ENDPOINT_URL", "FS_KAFKA_BOOTSTRAP", "FS_PG_PORT"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.database.url == "postgresql://postgres@127.0.0.1:15432/fashion"
    assert settings.storage.endpoint_url == "http://127.0.0.1:19000"
    assert settings.kafka.bootstrap == "127.0.0.1:19092"
    assert settings.database.embedding_dim == 512


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FS_PG_PORT", "6543")
    monkeypatch.setenv("FS_S3_ENDPOINT_URL", "http://minio:9000")
    monkeypatch.setenv("FS_PROFILE", "pip")
    settings = Settings()
    assert settings.database.url == "postgresql://postgres@127.0.0.1:6543/fashion"
    assert settings.storage.endpoint_url == "http://minio:9000"
    assert settings.stack.profile == "pip"
    monkeypatch.setenv("FS_PROFILE", "docker-less")
    with pytest.raises(ValidationError, match="FS_PROFILE"):
        Settings()


def test_child_environment_round_trips_every_setting(tmp_path: Path) -> None:
    changed = Settings().replace(
        top={"cache_dir": tmp_path},
        database={"url": "postgresql://db.example/fashion", "pool_max_size": 3},
        model_server={"address": "10.0.0.1:50051", "quantized": True},
        ingest={"batch_window_ms": 7.5},
    )
    assert changed.database.pool_max_size == 3
    assert Settings().database.pool_max_size == 8  # the copy leaves the original alone
    env = changed.to_env()
    assert env["FS_DATABASE_URL"] == "postgresql://db.example/fashion"
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        assert Settings() == changed


def test_the_dataset_is_the_hub_id_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FS_DATASET_SOURCE", raising=False)
    assert Settings().dataset_source == "ashraq/fashion-product-images-small"
    monkeypatch.setenv("FS_DATASET_SOURCE", "/data/products.parquet")
    assert Settings().dataset_source == "/data/products.parquet"
