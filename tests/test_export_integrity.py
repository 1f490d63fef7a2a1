"""The export's ``model.json`` is anchored in the registry (no stack: a fake MLflow client over a
folder as the models bucket): the loader serves a version only when the SHA-256 of its
``model.json``, fetched or cached, is the one recorded as the version's tag at export; a
tampered or unrecorded one is refused with :class:`ExportIntegrityError`."""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fashion_search.model.registry import RegisteredVersion
from fashion_search.settings import Settings
from model_server import loader
from model_server.artifacts import (
    ARTIFACT_DIR,
    EXPORT_FILES,
    EXPORT_REVISION,
    MANIFEST,
    MANIFEST_SHA256_TAG,
    ExportManifest,
)
from model_server.loader import ExportedModel, ExportIntegrityError, checked_manifest

VERSION = RegisteredVersion("fake-clip", "3", "run-3", "s3://models/run-3/artifacts/clip")


@dataclass
class _Artifact:
    path: str
    is_dir: bool = False


@dataclass
class _ModelVersion:
    tags: dict[str, str]


@dataclass
class FakeClient:
    """What the loader calls on an ``MlflowClient``: the run's artifacts are files under
    ``bucket``, the registry's tags a dict."""

    bucket: Path
    tags: dict[str, str] = field(default_factory=dict)
    downloads: list[str] = field(default_factory=list)

    def list_artifacts(self, run_id: str, path: str) -> list[_Artifact]:
        folder = self.bucket / run_id / path
        if not folder.is_dir():
            return []
        return [_Artifact(f"{path}/{p.name}", p.is_dir()) for p in sorted(folder.iterdir())]

    def download_artifacts(self, run_id: str, path: str, dst: str) -> str:
        self.downloads.append(path)
        target = Path(dst) / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.bucket / run_id / path, target)
        return str(target)

    def get_model_version(self, name: str, version: str) -> _ModelVersion:
        assert (name, version) == (VERSION.name, VERSION.version)
        return _ModelVersion(dict(self.tags))


def _manifest(files: dict[str, bytes]) -> bytes:
    return ExportManifest(
        architecture="fashion-tiny", embed_dim=64, image_size=32,
        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), context_length=32,
        export_revision=EXPORT_REVISION,
        sha256={name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
    ).model_dump_json(indent=2).encode()  # fmt: skip


def _upload(bucket: Path, files: dict[str, bytes]) -> bytes:
    """Write an export into the fake bucket; returns its model.json."""
    folder = bucket / "run-3" / ARTIFACT_DIR
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    manifest = _manifest(files)
    (folder / MANIFEST).write_bytes(manifest)
    return manifest


@pytest.fixture
def exported(tmp_path: Path) -> tuple[FakeClient, bytes]:
    """A version exported as the export does: files, model.json, and the registry's record."""
    files = {name: f"bytes of {name}".encode() for name in EXPORT_FILES}
    manifest = _upload(tmp_path / "bucket", files)
    tags = {MANIFEST_SHA256_TAG: hashlib.sha256(manifest).hexdigest(), "split_id": "s"}
    return FakeClient(tmp_path / "bucket", tags), manifest


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings().replace(top={"cache_dir": tmp_path / "cache"})


def test_the_tag_names_the_export_revision() -> None:
    assert f"r{EXPORT_REVISION}" in MANIFEST_SHA256_TAG


def test_checked_manifest_needs_the_recorded_sha256(exported: tuple[FakeClient, bytes]) -> None:
    _, data = exported
    recorded = hashlib.sha256(data).hexdigest()
    assert checked_manifest(data, recorded, VERSION).export_revision == EXPORT_REVISION
    with pytest.raises(ExportIntegrityError, match="integrity check failed") as error:
        checked_manifest(data.replace(b"fashion-tiny", b"fashion-evil"), recorded, VERSION)
    assert MANIFEST_SHA256_TAG in str(error.value)
    assert "python -m model_server export --version 3" in str(error.value)
    with pytest.raises(ExportIntegrityError, match="records no SHA-256") as error:
        checked_manifest(data, None, VERSION)
    assert "python -m model_server export --version 3" in str(error.value)


def test_a_recorded_export_is_fetched_and_served(
    exported: tuple[FakeClient, bytes], settings: Settings
) -> None:
    client, manifest = exported
    got = loader.fetch_version(settings, client, VERSION)
    assert got.facts == ExportManifest.model_validate_json(manifest)
    local = loader.cache_folder(settings, VERSION)
    assert (local / MANIFEST).read_bytes() == manifest  # the recorded bytes, not re-serialised
    assert got.files["image"].read_bytes() == b"bytes of fp32/image.onnx"


def test_a_tampered_export_is_refused(
    exported: tuple[FakeClient, bytes], settings: Settings
) -> None:
    """An attacker with the bucket replaces a tower and model.json, consistent with each other:
    the registry's record no longer matches, and nothing is fetched or cached."""
    client, _ = exported
    files = {name: f"bytes of {name}".encode() for name in EXPORT_FILES}
    files["fp32/image.onnx"] = b"an attacker's tower"
    _upload(client.bucket, files)
    with pytest.raises(ExportIntegrityError, match="integrity check failed"):
        loader.fetch_version(settings, client, VERSION)
    with pytest.raises(ExportIntegrityError, match="integrity check failed"):
        loader.remote_manifest(client, VERSION)
    assert client.downloads == [f"{ARTIFACT_DIR}/{MANIFEST}"] * 2
    assert not (settings.cache_dir / "onnx").exists()


def test_an_export_without_a_record_is_refused(
    exported: tuple[FakeClient, bytes], settings: Settings
) -> None:
    """Exported before the registry kept the record (or the tag was removed): refused, with
    the command that re-exports it; nothing is exported here."""
    client, _ = exported
    del client.tags[MANIFEST_SHA256_TAG]
    with pytest.raises(ExportIntegrityError, match="records no SHA-256") as error:
        loader.fetch_version(settings, client, VERSION)
    assert "python -m model_server export --version 3" in str(error.value)


def test_a_recorded_export_whose_model_json_is_gone_is_refused(
    exported: tuple[FakeClient, bytes], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not exported again here (from a checkpoint in the same bucket): refused."""
    client, _ = exported
    (client.bucket / "run-3" / ARTIFACT_DIR / MANIFEST).unlink()
    monkeypatch.setattr(loader, "_export_here", lambda *_: pytest.fail("exported"))
    with pytest.raises(ExportIntegrityError, match="is gone"):
        loader.fetch_version(settings, client, VERSION)


def test_a_tampered_cached_model_json_is_refused(
    exported: tuple[FakeClient, bytes], settings: Settings, tmp_path: Path
) -> None:
    """The cached copy is read back against the record too; the next fetch rewrites it from
    the checked download."""
    client, manifest = exported
    got = loader.fetch_version(settings, client, VERSION)
    local = loader.cache_folder(settings, VERSION)
    recorded = client.tags[MANIFEST_SHA256_TAG]
    (local / MANIFEST).write_bytes(manifest.replace(b"fashion-tiny", b"fashion-evil"))
    with pytest.raises(ExportIntegrityError, match=r"cached model\.json"):
        ExportedModel.read(local, VERSION, got.variant, recorded)
    assert ExportedModel.read(local, VERSION, got.variant).facts.architecture == "fashion-evil"
    again = loader.fetch_version(settings, client, VERSION)
    assert again.facts.architecture == "fashion-tiny"
    assert (local / MANIFEST).read_bytes() == manifest
