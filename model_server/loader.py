"""Resolve the registry alias, and fetch a version's export from its MLflow artifacts (no torch).

Files are cached under ``{cache_dir}/onnx/{model}/{version}/r{revision}/`` in the layout of
:mod:`model_server.artifacts`. Every file served is checked against the SHA-256 in the
version's ``model.json``: a cached file that differs is fetched again, a fetched one that
differs is an error and is not kept. A version without an export is exported here when the
``export`` extra is installed, else refused with a clear error.
"""

from __future__ import annotations

import importlib.util
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient

from fashion_search.errors import FashionSearchError
from fashion_search.model.registry import RegisteredVersion, champion
from fashion_search.settings import Settings
from model_server.artifacts import (
    ARTIFACT_DIR,
    EXPORT_REVISION,
    MANIFEST,
    TOKENIZER,
    TOWERS,
    ExportManifest,
    ModelFacts,
    sha256_of,
    tower_file,
)

log = logging.getLogger(__name__)
#: What exporting needs (the ``export`` extra).
EXPORT_MODULES = ("torch", "open_clip", "onnx", "onnxscript")


class ExportMissingError(FashionSearchError):
    """The version has no export of this revision, and this machine cannot export it."""


class ExportIntegrityError(FashionSearchError):
    """A fetched file is not the one its ``model.json`` names; it was not kept."""


@dataclass(frozen=True)
class ExportedModel:
    """A version's towers of one variant and its tokenizer on local disk, and its facts."""

    version: RegisteredVersion
    variant: str
    files: dict[str, Path]  # "image", "text", "tokenizer"
    facts: ModelFacts

    @classmethod
    def read(cls, directory: Path, version: RegisteredVersion, variant: str) -> ExportedModel:
        """The export in ``directory`` (as :func:`model_server.export.export_clip` writes it)."""
        files = {tower: directory / tower_file(variant, tower) for tower in TOWERS}
        files["tokenizer"] = directory / TOKENIZER
        facts = ExportManifest.model_validate_json((directory / MANIFEST).read_bytes())
        return cls(version, variant, files, facts)


def resolve(settings: Settings, client: MlflowClient) -> RegisteredVersion:
    """The version the configured alias points to; LookupError when there is none."""
    registry = settings.registry
    version = champion(client, registry.model_name, registry.model_alias)
    if version is None:
        name, alias = registry.model_name, registry.model_alias
        raise LookupError(f"no version of {name!r} has alias {alias!r}")
    return version


def run_id_of(version: RegisteredVersion) -> str:
    """The run whose artifacts hold the version's export."""
    if version.run_id is None:
        raise FashionSearchError(f"version {version.version} of {version.name!r} has no run")
    return version.run_id


def remote_manifest(client: MlflowClient, version: RegisteredVersion) -> ExportManifest | None:
    """The version's ``model.json`` of this export revision, or None when it has none."""
    run_id = run_id_of(version)
    listed = {artifact.path for artifact in client.list_artifacts(run_id, ARTIFACT_DIR)}
    if f"{ARTIFACT_DIR}/{MANIFEST}" not in listed:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(run_id, f"{ARTIFACT_DIR}/{MANIFEST}", tmp)
        manifest = ExportManifest.model_validate_json(Path(path).read_bytes())
    if manifest.export_revision != EXPORT_REVISION:
        raise ExportIntegrityError(
            f"{ARTIFACT_DIR}/{MANIFEST} of version {version.version} says export revision"
            f" {manifest.export_revision}"
        )
    return manifest


def cache_folder(settings: Settings, version: RegisteredVersion) -> Path:
    """Where the version's export is cached on this machine."""
    return settings.cache_dir / "onnx" / version.name / version.version / f"r{EXPORT_REVISION}"


def fetch_version(
    settings: Settings, client: MlflowClient, version: RegisteredVersion
) -> ExportedModel:
    """The version's towers of the configured variant (int8 or fp32) and tokenizer, checked
    against its ``model.json``, from the local cache or its MLflow artifacts; exported first
    when it has none (:class:`ExportMissingError` where the export extra is missing)."""
    manifest = remote_manifest(client, version)
    if manifest is None:
        _export_here(settings, client, version)
        manifest = remote_manifest(client, version)
        if manifest is None:
            raise ExportMissingError(f"version {version.version}: exported, yet no {MANIFEST}")
    variant = "int8" if settings.model_server.quantized else "fp32"
    local = cache_folder(settings, version)
    local.mkdir(parents=True, exist_ok=True)
    for name in (*(tower_file(variant, tower) for tower in TOWERS), TOKENIZER):
        _fetch_checked(client, version, name, manifest, local)
    _write_atomically(local / MANIFEST, manifest.model_dump_json(indent=2).encode())
    return ExportedModel.read(local, version, variant)


def _export_here(settings: Settings, client: MlflowClient, version: RegisteredVersion) -> None:
    missing = [name for name in EXPORT_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportMissingError(
            f"version {version.version} of {version.name!r} has no ONNX export of revision"
            f" {EXPORT_REVISION}, and this machine cannot make one (no {', '.join(missing)}):"
            f" run `fashion-search export --version {version.version}` where the export extra"
            " is installed, or install it here (pip install 'fashion-search[export]')"
        )
    from model_server.export import export_version  # torch: only on this path

    log.info("version %s has no export: exporting it here", version.version)
    export_version(settings, client, version)


def _fetch_checked(
    client: MlflowClient,
    version: RegisteredVersion,
    name: str,
    manifest: ExportManifest,
    local: Path,
) -> None:
    """``local / name`` with the SHA-256 that ``manifest`` names: kept from the cache when it
    has it, else downloaded, checked, and moved into place."""
    expected = manifest.sha256.get(name)
    if expected is None:
        raise ExportIntegrityError(f"model.json of version {version.version} has no {name}")
    path = local / name
    if path.exists():
        if sha256_of(path) == expected:
            return
        log.warning("cached %s of version %s is corrupt: fetching it again", name, version.version)
        path.unlink()
    with tempfile.TemporaryDirectory(dir=local, prefix=".fetch-") as tmp:
        fetched = Path(client.download_artifacts(run_id_of(version), f"{ARTIFACT_DIR}/{name}", tmp))
        got = sha256_of(fetched)
        if got != expected:
            raise ExportIntegrityError(
                f"{ARTIFACT_DIR}/{name} of version {version.version} has SHA-256 {got}, not"
                f" {expected} as its model.json says; not kept"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        fetched.replace(path)  # same file system: an atomic rename
    log.info("%s of version %s fetched", name, version.version)


def _write_atomically(path: Path, data: bytes) -> None:
    """A write cut short never leaves a file a later start would read."""
    part = path.with_name(path.name + ".part")
    part.write_bytes(data)
    part.replace(path)
