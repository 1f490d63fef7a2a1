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
    assert settings.database_url == "postgresql://postgres@127.0.0.1:15432/fashion"
    assert settings.s3_endpoint_url == "http://127.0.0.1:19000"
    assert settings.kafka_bootstrap == "127.0.0.1:19092"
    assert settings.embedding_dim == 512


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FS_PG_PORT", "6543")
    monkeypatch.setenv("FS_S3_ENDPOINT_URL", "http://minio:9000")
    monkeypatch.setenv("FS_PROFILE", "pip")
    settings = Settings()
    assert settings.database_url == "postgresql://postgres@127.0.0.1:6543/fashion"
    assert settings.s3_endpoint_url == "http://minio:9000"
    assert settings.profile == "pip"
    monkeypatch.setenv("FS_PROFILE", "docker-less")
    with pytest.raises(ValidationError, match="profile"):
        Settings()


def test_a_clone_of_a_local_checkout_finds_the_shared_dataset(tmp_path: Path) -> None:
    from fashion_search.settings import _DATASET_IN_SHARED, _shared_dataset

    origin, clone = tmp_path / "work" / "main", tmp_path / "elsewhere" / "fresh"
    parquet = tmp_path / "work" / _DATASET_IN_SHARED
    parquet.parent.mkdir(parents=True)
    parquet.write_bytes(b"")
    origin.mkdir()
    (clone / ".git").mkdir(parents=True)
    assert _shared_dataset(clone) == clone.parent / _DATASET_IN_SHARED  # no origin: next to it
    (clone / ".git" / "config").write_text(f'[remote "origin"]\n\turl = {origin}\n')
    assert _shared_dataset(clone) == parquet
    assert _shared_dataset(origin) == parquet
