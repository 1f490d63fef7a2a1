"""Zero-downtime model rollout and instant rollback (what ``finetune`` and the ``rollout`` /
``rollback`` / ``retire`` commands run).

1. :func:`prepare`: the registry's candidate alias points at the new version, the model server
   loads it beside the champion, and the catalog gets the version's empty partition
   (``building``). A version still kept for a rollback window is retired first: the candidate
   alias that kept it loaded moves on.
2. :func:`build`: every product is embedded into that partition (resumable: a re-run embeds
   only what is missing), while searches keep reading the serving version and uploads are
   embedded by both; then ``ready``.
3. :func:`switch`: the serving record moves in one transaction that checks coverage (products
   that arrived since are embedded first), then the champion alias follows and the candidate
   alias keeps the previous version loaded for its rollback window (``FS_ROLLBACK_GRACE_S``).
4. :func:`rollback`: the same switch back to that version, whose embeddings and model are
   still there: no re-embedding, no model load.
5. :func:`retire_expired`: versions whose window ended lose their partition.

A version of another embedding dimension goes through exactly the same steps.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from fashion_search.catalog.db import create_pool
from fashion_search.catalog.embed import embed_catalog
from fashion_search.catalog.repositories import Catalog
from fashion_search.catalog.shards import WHOLE, Shard
from fashion_search.catalog.versions import CatalogVersion, IncompleteVersionError, VersionState
from fashion_search.embedding_client import EmbeddingClient, ModelServerUnavailableError
from fashion_search.errors import (
    FashionSearchError,
    VersionNotFoundError,
)
from fashion_search.learning.calibration import calibrate_when_due
from fashion_search.model.registry import configure_mlflow, registered_version
from fashion_search.settings import Settings
from fashion_search.storage import ObjectStore


@dataclass(frozen=True)
class Prepared:
    """Step 1's outcome: the version's state (``serving``: it already serves, nothing was done),
    its dimension and partition, and the versions retired on the way."""

    version: str
    state: VersionState
    dimension: int | None
    partition: str | None
    retired: list[str]


@dataclass(frozen=True)
class Built:
    """Step 2's outcome for a shard: what it embedded, what failed (the first 20), coverage."""

    version: str
    shard: int
    embedded: int
    failed: int
    failures: dict[str, str]
    coverage_percent: float
    seconds: float


@dataclass(frozen=True)
class Switched:
    """Step 3's outcome: the serving version, the one kept for a rollback and until when."""

    serving: str
    previous: str | None
    rollback_until: str | None
    switch_ms: float


@dataclass(frozen=True)
class RolledOut:
    """The three steps' outcomes; build and switch are None when the version already served."""

    prepare: Prepared
    build: Built | None
    switch: Switched | None


@dataclass(frozen=True)
class VersionStatus:
    """One version the catalog holds or held."""

    version: str
    state: VersionState
    dimension: int
    coverage_percent: float | None
    megabytes: float
    since: str
    rollback_until: str | None


@contextmanager
def _catalog(settings: Settings) -> Iterator[Catalog]:
    with create_pool(settings) as pool:
        yield Catalog.of(pool)


def _registered(settings: Settings, client: MlflowClient, version: str) -> None:
    try:
        registered_version(client, settings.registry.model_name, version)
    except LookupError as error:
        raise FashionSearchError(str(error)) from error


def wait_until_loaded(settings: Settings, version: str) -> int:
    """Wait (at most ``registry.serve_timeout_s``) until the model server holds ``version``;
    returns its dimension."""
    deadline = time.monotonic() + settings.registry.serve_timeout_s
    with EmbeddingClient(settings.model_server.address, timeout_s=10) as client:
        while True:
            try:
                loaded = client.info().versions
            except ModelServerUnavailableError:
                loaded = {}
            if version in loaded:
                return loaded[version]
            if time.monotonic() > deadline:
                raise FashionSearchError(
                    f"the model server did not load version {version} within"
                    f" {settings.registry.serve_timeout_s:.0f} s (it holds {sorted(loaded)})"
                )
            time.sleep(0.5)


def prepare(settings: Settings, version: str) -> Prepared:
    """Step 1: the candidate alias on ``version``, loaded by the model server, and its
    partition in the catalog (``building``; kept as it is when the version is already there)."""
    registry = settings.registry
    client = configure_mlflow(settings)
    _registered(settings, client, version)
    with _catalog(settings) as catalog:
        serving = catalog.versions.find_serving()
        if serving is not None and serving.model_version == version:
            return Prepared(version, "serving", None, None, [])
        retired = []
        for kept in catalog.versions.live():
            if kept.state == "ready" and kept.retire_after and kept.model_version != version:
                retired.append(catalog.versions.retire(kept.model_version).model_version)
        client.set_registered_model_alias(registry.model_name, registry.candidate_alias, version)
        dimension = wait_until_loaded(settings, version)
        record = catalog.versions.create(version, dimension)
    return Prepared(version, record.state, dimension, record.partition, retired)


def build(
    settings: Settings, version: str, batch_size: int = 64, progress: bool = False,
    shard: Shard = WHOLE,
) -> Built:  # fmt: skip
    """Step 2: embed every product (of ``shard``) into ``version``'s partition (only what is
    missing), then mark it ``ready`` if that covered the catalog (the last shard to end
    does) and calibrate its relevance cutoff."""
    started = time.perf_counter()
    with (
        _catalog(settings) as catalog,
        EmbeddingClient(settings.model_server.address, timeout_s=120) as client,
    ):
        record = catalog.versions.get(version)
        if record.state == "retired":
            raise FashionSearchError(f"version {version} is retired: prepare it again")
        summary = embed_catalog(
            catalog, ObjectStore(settings), client, record,
            batch_size=batch_size, progress=progress, shard=shard,
        )  # fmt: skip
        coverage = catalog.versions.mark_ready(version)
        calibrate_when_due(settings, catalog, client, catalog.versions.get(version))
    return Built(
        version=version,
        shard=shard.index,
        embedded=summary.embedded,
        failed=len(summary.failed),
        failures={str(k): v for k, v in list(summary.failed.items())[:20]},
        coverage_percent=round(coverage.percent, 3),
        seconds=round(time.perf_counter() - started, 1),
    )


def switch(settings: Settings, version: str) -> Switched:
    """Step 3: ``version`` serves the catalog (atomically, once it covers every product: what
    arrived since the build is embedded first), then the champion alias follows and the
    candidate alias keeps the replaced version loaded for the rollback window."""
    registry = settings.registry
    with (
        _catalog(settings) as catalog,
        EmbeddingClient(settings.model_server.address, timeout_s=120) as client,
    ):
        attempts = settings.rollout.switch_attempts
        for attempt in range(1, attempts + 1):
            try:
                started = time.perf_counter()
                previous = catalog.versions.switch(version, settings.rollout.grace_s)
                switch_ms = (time.perf_counter() - started) * 1000
                break
            except IncompleteVersionError:
                if attempt == attempts:
                    raise
                record = catalog.versions.get(version)
                embed_catalog(catalog, ObjectStore(settings), client, record, progress=False)
        kept = previous
        if kept is None:
            try:  # a switch run again: the aliases as the record says
                kept = catalog.versions.rollback_target()
            except VersionNotFoundError:
                kept = None
    # The aliases follow the record (readers name the version they want, so the order is
    # safe): the champion is the serving version, the candidate the rollback target.
    mlflow_client = configure_mlflow(settings)
    mlflow_client.set_registered_model_alias(registry.model_name, registry.model_alias, version)
    if kept is not None:
        mlflow_client.set_registered_model_alias(
            registry.model_name, registry.candidate_alias, kept.model_version
        )
    else:
        _delete_alias(mlflow_client, settings, registry.candidate_alias)
    return Switched(
        serving=version,
        previous=kept.model_version if kept else None,
        rollback_until=_iso(kept.retire_after) if kept else None,
        switch_ms=round(switch_ms, 1),
    )


def rollout(
    settings: Settings, version: str, batch_size: int = 64, progress: bool = False
) -> RolledOut:
    """The three steps: prepare, build, switch."""
    prepared = prepare(settings, version)
    if prepared.state == "serving":
        return RolledOut(prepared, None, None)
    built = build(settings, version, batch_size, progress)
    return RolledOut(prepared, built, switch(settings, version))


def rollback(settings: Settings) -> Switched:
    """Serve the version the last switch replaced again (while its window lasts): its
    embeddings and its model are still there, so it serves at once."""
    with _catalog(settings) as catalog:
        target = catalog.versions.rollback_target().model_version
    return switch(settings, target)


def retire(settings: Settings, version: str) -> CatalogVersion:
    """Drop a version's embeddings (not the serving one's); the candidate alias is removed
    when it points at it. Returns the version's record, retired."""
    with _catalog(settings) as catalog:
        record = catalog.versions.retire(version)
    client = configure_mlflow(settings)
    alias = settings.registry.candidate_alias
    try:
        candidate = client.get_model_version_by_alias(settings.registry.model_name, alias)
    except MlflowException:  # no such alias
        candidate = None
    if candidate is not None and str(candidate.version) == version:
        _delete_alias(client, settings, alias)
    return record


def retire_expired(settings: Settings) -> list[str]:
    """Retire every replaced version whose rollback window has ended; their names."""
    with _catalog(settings) as catalog:
        expired = [v.model_version for v in catalog.versions.expired()]
    return [retire(settings, v).model_version for v in expired]


def status(settings: Settings) -> list[VersionStatus]:
    """Every version the catalog holds or held: state, dimension, coverage, disk, window."""
    rows = []
    with _catalog(settings) as catalog:
        for v in catalog.versions.all():
            live = v.state != "retired"
            coverage = catalog.versions.coverage(v.model_version) if live else None
            rows.append(
                VersionStatus(
                    version=v.model_version,
                    state=v.state,
                    dimension=v.dimension,
                    coverage_percent=round(coverage.percent, 3) if coverage else None,
                    megabytes=round(catalog.versions.storage_bytes(v.model_version) / 1e6, 1),
                    since=v.state_since.isoformat(timespec="seconds"),
                    rollback_until=_iso(v.retire_after),
                )
            )
    return rows


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment else None


def _delete_alias(client: MlflowClient, settings: Settings, alias: str) -> None:
    with suppress(MlflowException):  # already absent
        client.delete_registered_model_alias(settings.registry.model_name, alias)
