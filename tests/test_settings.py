"""One typed settings object, from FS_* variables, with endpoints derived from ports."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from fashion_search.settings import Settings


def test_defaults_point_at_the_native_stack(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("FS_DATABASE_URL", "FS_S3_ENDPOINT_URL", "FS_KAFKA_BOOTSTRAP", "FS_PG_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FS_STATE_DIR", str(tmp_path))  # a stack without a secrets file
    settings = Settings()
    assert settings.database.url == "postgresql://postgres@127.0.0.1:15432/fashion"
    assert settings.storage.endpoint_url == "http://127.0.0.1:19000"
    assert settings.kafka.bootstrap == "127.0.0.1:19092"
    assert settings.database.embedding_dim == 512


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FS_STATE_DIR", str(tmp_path))
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


def test_empty_credentials_are_the_local_stack_owners(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With the stack's secrets file, credentials left empty are its owners' (not the
    defaults of a file: there are none), for the local endpoints only."""
    from fashion_search.ingest.publisher import kafka_config
    from stack.secrets import ensure, load

    for name in ("FS_DATABASE_URL", "FS_S3_ENDPOINT_URL", "FS_S3_ACCESS_KEY", "FS_S3_SECRET_KEY",
                 "FS_KAFKA_BOOTSTRAP", "FS_KAFKA_USERNAME", "FS_KAFKA_PASSWORD"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FS_STATE_DIR", str(tmp_path))
    none = Settings()
    assert (none.storage.access_key, none.storage.secret_key) == ("", "")
    assert (none.kafka.username, kafka_config(none)) == (
        "",
        {"bootstrap.servers": "127.0.0.1:19092"},
    )

    assert ensure(tmp_path / "secrets.env") and not ensure(tmp_path / "secrets.env")
    assert (tmp_path / "secrets.env").stat().st_mode & 0o777 == 0o600
    secrets = load(tmp_path / "secrets.env", environ={})
    owner = Settings()
    assert owner.database.url == (
        f"postgresql://postgres:{secrets.owner('postgres')}@127.0.0.1:15432/fashion"
    )
    assert owner.storage.access_key == "fashion-root"
    assert owner.storage.secret_key == secrets.owner("fashion-root")
    assert kafka_config(owner)["sasl.username"] == "fashion-admin"
    assert kafka_config(owner)["sasl.password"] == secrets.owner("fashion-admin")
    assert kafka_config(owner)["security.protocol"] == "SASL_PLAINTEXT"

    monkeypatch.setenv("FS_S3_ENDPOINT_URL", "http://minio:9000")
    monkeypatch.setenv("FS_KAFKA_BOOTSTRAP", "kafka:9092")
    elsewhere = Settings()
    assert (elsewhere.storage.access_key, elsewhere.kafka.username) == ("", "")
    monkeypatch.delenv("FS_S3_ENDPOINT_URL")
    monkeypatch.delenv("FS_KAFKA_BOOTSTRAP")

    (tmp_path / "stack.json").write_text('{"kafka": "Tansu"}')
    assert Settings().kafka.username == "", "the fallback broker has no SASL"
    monkeypatch.setenv("FS_OWNER_CREDENTIALS", "false")
    app = Settings()
    assert app.database.url == "postgresql://postgres@127.0.0.1:15432/fashion"
    assert app.storage.access_key == ""


def test_replicas_take_the_primarys_login_and_database(monkeypatch: pytest.MonkeyPatch) -> None:
    from psycopg.conninfo import conninfo_to_dict

    monkeypatch.setenv("FS_DATABASE_URL", "postgresql://api:secret@primary:5432/fashion")
    monkeypatch.setenv("FS_DATABASE_REPLICAS", " replica-a:6432, replica-b ,")
    urls = [conninfo_to_dict(url) for url in Settings().database.replica_urls]
    assert [(u["host"], u["port"]) for u in urls] == [("replica-a", "6432"), ("replica-b", "5432")]
    assert all(
        (u["user"], u["password"], u["dbname"]) == ("api", "secret", "fashion") for u in urls
    )
    monkeypatch.setenv("FS_DATABASE_REPLICAS", "")
    assert Settings().database.replica_urls == []
