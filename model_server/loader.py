"""Resolve the registry alias, and fetch a version's export from its MLflow artifacts (no torch).

Files are cached under ``{cache_dir}/onnx/{model}/{version}/r{revision}/`` in the layout of
:mod:`model_server.artifacts`. The version's ``model.json`` (fetched, and the cached copy read
back) must have the SHA-256 that the registry records for it (the version's tag
:data:`~model_server.artifacts.MANIFEST_SHA256_TAG`, set by the export): ``model.json`` lies in
the models bucket beside the towers, so only the registry's record shows that neither was
replaced. Every other file served is checked against the SHA-256 in that ``model.json``: a
cached file that differs is fetched again, a fetched one that differs is an error and is not
kept. A version that fails a check is refused (:class:`ExportIntegrityError`; the model
server then keeps serving the versions it has). A version without an export is exported here
when the ``export`` extra is installed, else refused with a clear error.
"""

from __future__ import annotations

import hashlib
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
    MANIFEST_SHA256_TAG,
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
    """A fetched file is not the one its ``model.json`` names (it was not kept), or the
    ``model.json`` is not the one the registry recorded at export: the version is refused."""


@dataclass(frozen=True)
class ExportedModel:
    """A version's towers of one variant and its tokenizer on local disk, and its facts."""

    version: RegisteredVersion
    variant: str
    files: dict[str, Path]  # "image", "text", "tokenizer"
    facts: ModelFacts

    @classmethod
    def read(
        cls,
        directory: Path,
        version: RegisteredVersion,
        variant: str,
        manifest_sha256: str | None = None,
    ) -> ExportedModel:
        """The export in ``directory`` (as :func:`model_server.export.export_clip` writes it);
        with ``manifest_sha256`` (the registry's record), its ``model.json`` must have it."""
        files = {tower: directory / tower_file(variant, tower) for tower in TOWERS}
        files["tokenizer"] = directory / TOKENIZER
        data = (directory / MANIFEST).read_bytes()
        facts = (
            ExportManifest.model_validate_json(data)
            if manifest_sha256 is None
            else checked_manifest(data, manifest_sha256, version, f"cached {MANIFEST}")
        )
        return cls(version, variant, files, facts)


@dataclass(frozen=True)
class _FetchedManifest:
    """A version's ``model.json`` as fetched and checked: its bytes, their SHA-256 (the one the
    registry records) and what they say."""

    data: bytes
    sha256: str
    manifest: ExportManifest


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


def recorded_manifest_sha256(client: MlflowClient, version: RegisteredVersion) -> str | None:
    """The SHA-256 of ``model.json`` that the registry records for the version (its tag
    :data:`~model_server.artifacts.MANIFEST_SHA256_TAG`, read now), or None."""
    tags = client.get_model_version(version.name, version.version).tags or {}
    recorded = tags.get(MANIFEST_SHA256_TAG)
    return str(recorded) if recorded else None


def _reexport_hint(version: RegisteredVersion) -> str:
    return f"re-export it: `python -m model_server export --version {version.version}`"


def checked_manifest(
    data: bytes, recorded: str | None, version: RegisteredVersion, what: str = MANIFEST
) -> ExportManifest:
    """``model.json`` from ``data`` when their SHA-256 is ``recorded`` (the registry's tag) and
    it is of this export revision; else :class:`ExportIntegrityError` (``recorded`` None: the
    version was exported before the registry recorded it, or its tag was removed)."""
    named = f"version {version.version} of {version.name!r}"
    if recorded is None:
        raise ExportIntegrityError(
            f"{named} has an export in {ARTIFACT_DIR}/, but the registry records no SHA-256 of"
            f" its {MANIFEST} (tag {MANIFEST_SHA256_TAG}: exported before the registry recorded"
            f" it, or the tag was removed), so its integrity cannot be checked; not served:"
            f" {_reexport_hint(version)}"
        )
    got = hashlib.sha256(data).hexdigest()
    if got != recorded:
        raise ExportIntegrityError(
            f"integrity check failed: {what} of {named} has SHA-256 {got}, the registry's tag"
            f" {MANIFEST_SHA256_TAG} records {recorded}; the export was changed after it was"
            f" made, not served: {_reexport_hint(version)}"
        )
    manifest = ExportManifest.model_validate_json(data)
    if manifest.export_revision != EXPORT_REVISION:
        raise ExportIntegrityError(
            f"{ARTIFACT_DIR}/{MANIFEST} of version {version.version} says export revision"
            f" {manifest.export_revision}"
        )
    return manifest


def _fetch_manifest(client: MlflowClient, version: RegisteredVersion) -> _FetchedManifest | None:
    """The version's ``model.json`` of this export revision, checked against the registry's
    record; None when it has none (and the registry records none)."""
    run_id = run_id_of(version)
    recorded = recorded_manifest_sha256(client, version)
    listed = {artifact.path for artifact in client.list_artifacts(run_id, ARTIFACT_DIR)}
    if f"{ARTIFACT_DIR}/{MANIFEST}" not in listed:
        if recorded is not None:
            raise ExportIntegrityError(
                f"integrity check failed: the registry records an export of version"
                f" {version.version} of {version.name!r} (tag {MANIFEST_SHA256_TAG}), but"
                f" {ARTIFACT_DIR}/{MANIFEST} is gone from its run; not served:"
                f" {_reexport_hint(version)}"
            )
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(run_id, f"{ARTIFACT_DIR}/{MANIFEST}", tmp)
        data = Path(path).read_bytes()
    manifest = checked_manifest(data, recorded, version)
    return _FetchedManifest(data, hashlib.sha256(data).hexdigest(), manifest)


def remote_manifest(client: MlflowClient, version: RegisteredVersion) -> ExportManifest | None:
    """The version's ``model.json`` of this export revision, or None when it has none;
    :class:`ExportIntegrityError` when it is not the one the registry recorded at export."""
    fetched = _fetch_manifest(client, version)
    return None if fetched is None else fetched.manifest


def cache_folder(settings: Settings, version: RegisteredVersion) -> Path:
    """Where the version's export is cached on this machine."""
    return settings.cache_dir / "onnx" / version.name / version.version / f"r{EXPORT_REVISION}"


def fetch_version(
    settings: Settings, client: MlflowClient, version: RegisteredVersion, variant: str = "fp32"
) -> ExportedModel:
    """The version's towers of ``variant`` (fp32, int8 or fp16) and tokenizer, checked
    against its ``model.json`` (itself checked against the registry's record), from the local
    cache or its MLflow artifacts; exported first when it has none (:class:`ExportMissingError`
    where the export extra is missing), :class:`ExportIntegrityError` when a check fails."""
    fetched = _fetch_manifest(client, version)
    if fetched is None:
        _export_here(settings, client, version)
        fetched = _fetch_manifest(client, version)
        if fetched is None:
            raise ExportMissingError(f"version {version.version}: exported, yet no {MANIFEST}")
    local = cache_folder(settings, version)
    local.mkdir(parents=True, exist_ok=True)
    for name in (*(tower_file(variant, tower) for tower in TOWERS), TOKENIZER):
        _fetch_checked(client, version, name, fetched.manifest, local)
    _write_atomically(local / MANIFEST, fetched.data)  # the bytes the registry's record names
    return ExportedModel.read(local, version, variant, fetched.sha256)


def _export_here(settings: Settings, client: MlflowClient, version: RegisteredVersion) -> None:
    missing = [name for name in EXPORT_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportMissingError(
            f"version {version.version} of {version.name!r} has no ONNX export of revision"
            f" {EXPORT_REVISION}, and this machine cannot make one (no {', '.join(missing)}):"
            f" run `python -m model_server export --version {version.version}` where the export"
            " extra is installed, or install it here (pip install 'fashion-search[export]')"
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
