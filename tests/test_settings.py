"""One typed settings object, from FS_* variables, with endpoints derived from ports."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Literal, get_args, get_origin

import pytest
from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from fashion_search.settings import LEGACY_VARIABLES, Settings, variable


@pytest.fixture(autouse=True)
def _no_settings_outside(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No variable of the machine's, and a state directory without a dotenv file."""
    for name in list(os.environ):
        if name.startswith("FS_") or name in LEGACY_VARIABLES.values():
            monkeypatch.delenv(name)
    monkeypatch.setenv("FS_STACK__STATE_DIR", str(tmp_path))


def _fields() -> Iterator[tuple[str, FieldInfo]]:
    """Every setting's path and field."""
    for name, field in Settings.model_fields.items():
        group = field.annotation
        if isinstance(group, type) and issubclass(group, BaseSettings):
            yield from ((f"{name}.{n}", f) for n, f in group.model_fields.items())
        else:
            yield name, field


def _other(field: FieldInfo) -> str:
    """A valid value of ``field`` other than its default, as a variable's text."""
    default = field.get_default(call_default_factory=True)
    if get_origin(field.annotation) is Literal:
        return str(next(choice for choice in get_args(field.annotation) if choice != default))
    if isinstance(default, bool):
        return str(not default)
    if isinstance(default, int | float):
        return str(default + (1 if isinstance(default, int) else 0.25))
    if default is None:
        return "0.25"
    if isinstance(default, Path):
        return str(default / "other")
    return f"{default}other"


OTHER = {path: _other(field) for path, field in _fields()}


def test_every_setting_is_set_by_the_variable_its_path_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert variable("database.pool_max_size") == "FS_DATABASE__POOL_MAX_SIZE"
    assert variable("model_server.max_batch") == "FS_MODEL_SERVER__MAX_BATCH"
    assert variable("cache_dir") == "FS_CACHE_DIR"
    monkeypatch.setenv("FS_ENV_FILE", "")  # the state directory set below has none either
    for path, text in OTHER.items():
        monkeypatch.setenv(variable(path), text)
    assert Settings().to_env() == {variable(path): text for path, text in OTHER.items()}


def test_the_former_names_still_work(monkeypatch: pytest.MonkeyPatch) -> None:
    assert set(LEGACY_VARIABLES) <= set(OTHER), "a former name of no setting"
    assert LEGACY_VARIABLES["database.pool_max_size"] == "FS_POOL_MAX_SIZE"
    monkeypatch.delenv("FS_STACK__STATE_DIR")
    monkeypatch.setenv("FS_ENV_FILE", "")
    for path, name in LEGACY_VARIABLES.items():
        monkeypatch.setenv(name, OTHER[path])
    env = Settings().to_env()
    assert {path: env[variable(path)] for path in LEGACY_VARIABLES} == {
        path: OTHER[path] for path in LEGACY_VARIABLES
    }


def test_the_new_name_wins_over_the_former(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FS_POOL_MAX_SIZE", "3")
    monkeypatch.setenv("FS_DATABASE__POOL_MAX_SIZE", "5")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://former:4318")
    monkeypatch.setenv("FS_TELEMETRY__OTLP_ENDPOINT", "http://new:4318")
    settings = Settings()
    assert settings.database.pool_max_size == 5
    assert settings.telemetry.otlp_endpoint == "http://new:4318"


def test_defaults_point_at_the_native_stack() -> None:
    settings = Settings()
    assert settings.database.url == "postgresql://postgres@127.0.0.1:15432/fashion"
    assert settings.storage.endpoint_url == "http://127.0.0.1:19000"
    assert settings.kafka.bootstrap == "127.0.0.1:19092"
    assert settings.database.embedding_dim == 512
    assert (settings.storage.access_key, settings.kafka.username) == ("", "")


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FS_STACK__PG_PORT", "6543")
    monkeypatch.setenv("FS_S3_ENDPOINT_URL", "http://minio:9000")
    monkeypatch.setenv("FS_STACK__PROFILE", "pip")
    settings = Settings()
    assert settings.database.url == "postgresql://postgres@127.0.0.1:6543/fashion"
    assert settings.storage.endpoint_url == "http://minio:9000"
    assert settings.stack.profile == "pip"
    monkeypatch.setenv("FS_STACK__PROFILE", "docker-less")
    with pytest.raises(ValidationError, match="profile"):
        Settings()


def test_child_environment_round_trips_every_setting(tmp_path: Path) -> None:
    changed = Settings().replace(
        top={"cache_dir": tmp_path},
        database={"url": "postgresql://db.example/fashion", "pool_max_size": 3},
        model_server={"address": "10.0.0.1:50051", "quantized": True},
        ingest={"batch_window_ms": 7.5},
        search={"min_score": 0.3},
    )
    assert changed.database.pool_max_size == 3
    assert Settings().database.pool_max_size == 8  # the copy leaves the original alone
    env = changed.to_env()
    assert env["FS_DATABASE__URL"] == "postgresql://db.example/fashion"
    assert set(env) == {variable(path) for path in OTHER}
    assert "FS_SEARCH__MIN_SCORE" not in Settings().to_env()  # None: the child's default too
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        assert Settings() == changed


def test_the_environment_wins_over_the_dotenv_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "local.env").write_text(
        "FS_DATABASE__URL=postgresql://owner:pw@127.0.0.1:15432/fashion\n"
        "FS_KAFKA__USERNAME=file-user\nFS_POOL_MAX_SIZE=4\n"
    )
    from_file = Settings()  # the state directory's local.env by default
    assert from_file.database.url == "postgresql://owner:pw@127.0.0.1:15432/fashion"
    assert (from_file.kafka.username, from_file.database.pool_max_size) == ("file-user", 4)

    monkeypatch.setenv("FS_DATABASE_URL", "postgresql://api:secret@db/fashion")  # a former name
    monkeypatch.setenv("FS_KAFKA__USERNAME", "")
    settings = Settings()
    assert settings.database.url == "postgresql://api:secret@db/fashion"
    assert (settings.kafka.username, settings.database.pool_max_size) == ("", 4)

    monkeypatch.setenv("FS_ENV_FILE", "")
    assert Settings().database.pool_max_size == 8, "an empty FS_ENV_FILE reads no file"
    other = tmp_path / "other.env"
    other.write_text("FS_DATABASE__POOL_MAX_SIZE=6\n")
    monkeypatch.setenv("FS_ENV_FILE", str(other))
    assert Settings().database.pool_max_size == 6


def test_the_dataset_is_the_hub_id_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().dataset_source == "ashraq/fashion-product-images-small"
    monkeypatch.setenv("FS_DATASET_SOURCE", "/data/products.parquet")
    assert Settings().dataset_source == "/data/products.parquet"


def test_after_stack_up_a_plain_shell_is_the_local_stacks_owner(tmp_path: Path) -> None:
    """The stack writes its owner's credentials to the dotenv file the settings read; its apps
    read none and get their own role's only."""
    from psycopg.conninfo import conninfo_to_dict

    from fashion_search.ingest.publisher import kafka_config
    from stack.apps import app_environment, apps
    from stack.secrets import load, prepare, write_local_env

    settings = Settings()
    assert prepare(settings), "the secrets generated"
    assert (tmp_path / "local.env").stat().st_mode & 0o777 == 0o600
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

    with pytest.MonkeyPatch.context() as patch:
        for name, value in app_environment(owner, apps(owner)["api"]).items():
            patch.setenv(name, value)
        api = Settings()  # as the stack's API reads its settings
        database = conninfo_to_dict(api.database.url)
        assert (database["user"], database["password"]) == (
            "fashion_api",
            secrets.pg_passwords["fashion_api"],
        )
        assert api.storage.access_key == "fashion-api"
        assert (api.kafka.username, api.kafka.password) == ("", "")  # no Kafka user of its own

    (tmp_path / "stack.json").write_text('{"kafka": "Tansu"}')
    write_local_env(settings)  # as stack up does once the broker is chosen
    assert Settings().kafka.username == "", "the fallback broker has no SASL"
