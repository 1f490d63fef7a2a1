"""The serving record: which model versions the catalog holds embeddings of, in which state,
and which one every reader searches.

A version is ``building`` while its partition of ``product_embeddings`` fills, ``ready`` when
every product has an embedding of it (or after it served, until its rollback window ends),
``serving`` for the one version searches read (at most one), and ``retired`` once its
partition is dropped. :meth:`CatalogVersions.switch` moves ``serving`` in one transaction that
first checks the new version covers every product, so a reader sees the old version or the new
one, each complete, never a mix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import numpy as np
import psycopg
from psycopg import sql
from psycopg.rows import class_row

from fashion_search.catalog.table import Table
from fashion_search.errors import (
    CatalogError,
    EmbeddingDimensionError,
    InvalidArgumentError,
    NoServingVersionError,
    VersionNotFoundError,
)

VersionState = Literal["building", "ready", "serving", "retired"]
#: States whose embeddings are kept up to date (uploads are embedded into each of them).
LIVE_STATES: tuple[VersionState, ...] = ("serving", "ready", "building")


@dataclass(frozen=True)
class CatalogVersion:
    """One model version's embeddings in the catalog."""

    model_version: str
    dimension: int
    partition: str
    state: VersionState
    created_at: datetime
    state_since: datetime
    retire_after: datetime | None
    min_score: float | None = None  # its relevance cutoff, once calibrated

    @property
    def table(self) -> sql.Identifier:
        """The version's partition of ``product_embeddings``."""
        return sql.Identifier(self.partition)

    @property
    def distance(self) -> sql.Composed:
        """SQL of the cosine distance between a partition row (alias ``e``) and ``%(v)s``, in
        the form the partition's HNSW index is built on."""
        return sql.SQL("e.embedding::vector({}) <=> %(v)s").format(sql.Literal(self.dimension))

    def check_vector(self, vector: np.ndarray[Any, Any] | Sequence[float]) -> np.ndarray[Any, Any]:
        """``vector`` as float32 of this version's dimension, with finite values; else a typed
        error."""
        array = np.asarray(vector, dtype=np.float32)
        if array.ndim != 1 or array.shape[0] != self.dimension:
            raise EmbeddingDimensionError(self.dimension, array.shape[-1] if array.ndim else 0)
        if not np.all(np.isfinite(array)):
            raise InvalidArgumentError("embedding has NaN or infinite values")
        return array


@dataclass(frozen=True)
class Coverage:
    """How many of the catalog's products have an embedding of a version."""

    embedded: int
    products: int

    @property
    def complete(self) -> bool:
        """Every product has one."""
        return self.embedded >= self.products

    @property
    def percent(self) -> float:
        """Covered share, 0..100 (100 for an empty catalog)."""
        return 100.0 * self.embedded / self.products if self.products else 100.0


_SELECT = sql.SQL(
    "SELECT model_version, dimension, partition, state, created_at, state_since, retire_after,"
    " min_score FROM catalog_versions"
)


def version_record(conn: psycopg.Connection[Any], model_version: str) -> CatalogVersion:
    """The record of ``model_version`` read on ``conn`` (inside the caller's transaction)."""
    with conn.cursor(row_factory=class_row(CatalogVersion)) as cur:
        found = cur.execute(
            sql.SQL("{} WHERE model_version = %s").format(_SELECT), (model_version,)
        ).fetchone()
    if found is None:
        raise VersionNotFoundError(
            f"the catalog has no embeddings of model version {model_version}"
        )
    return found


def live_versions(conn: psycopg.Connection[Any]) -> list[CatalogVersion]:
    """The versions whose embeddings are kept, serving first, read on ``conn``."""
    with conn.cursor(row_factory=class_row(CatalogVersion)) as cur:
        found = cur.execute(
            sql.SQL("{} WHERE state = ANY(%s)").format(_SELECT), (list(LIVE_STATES),)
        ).fetchall()
    return sorted(found, key=lambda v: (LIVE_STATES.index(v.state), v.created_at))


def _coverage(conn: psycopg.Connection[Any], version: CatalogVersion) -> Coverage:
    row = conn.execute(
        sql.SQL("SELECT (SELECT count(*) FROM {}), (SELECT count(*) FROM products)").format(
            version.table
        )
    ).fetchone()
    assert row is not None
    return Coverage(int(row[0]), int(row[1]))


class CatalogVersions(Table):
    """The catalog's model versions and the serving record."""

    def _select(self, where: str, params: Sequence[Any] = ()) -> list[CatalogVersion]:
        with (
            self.pool.connection() as conn,
            conn.cursor(row_factory=class_row(CatalogVersion)) as cur,
        ):
            query = sql.SQL("{} WHERE " + where + " ORDER BY created_at, model_version")
            found: list[CatalogVersion] = cur.execute(query.format(_SELECT), params).fetchall()
        return found

    def find_serving(self) -> CatalogVersion | None:
        """The version searches read, or None when there is none yet."""
        found = self._select("state = 'serving'")
        return found[0] if found else None

    def serving(self) -> CatalogVersion:
        """The version searches read; :class:`NoServingVersionError` when there is none."""
        found = self.find_serving()
        if found is None:
            raise NoServingVersionError("the catalog serves no model version yet (load it first)")
        return found

    def get(self, model_version: str) -> CatalogVersion:
        """The record of ``model_version``; :class:`VersionNotFoundError` when there is none."""
        with self.pool.connection() as conn:
            return version_record(conn, model_version)

    def all(self) -> list[CatalogVersion]:
        """Every version's record, oldest first."""
        return self._select("true")

    def live(self) -> list[CatalogVersion]:
        """The versions whose embeddings are kept: serving first."""
        with self.pool.connection() as conn:
            return live_versions(conn)

    def create(self, model_version: str, dimension: int) -> CatalogVersion:
        """The record and empty partition of a new version (``building``), with its HNSW index;
        a version already live is returned as it is (a dimension other than its own is an
        error), a retired one starts over."""
        with self.pool.connection() as conn, conn.transaction():
            conn.execute("LOCK TABLE catalog_versions IN SHARE ROW EXCLUSIVE MODE")
            try:
                existing = version_record(conn, model_version)
            except VersionNotFoundError:
                pass
            else:
                if existing.dimension != dimension and existing.state != "retired":
                    raise EmbeddingDimensionError(existing.dimension, dimension)
                if existing.state != "retired":
                    return existing
                conn.execute(
                    "DELETE FROM catalog_versions WHERE model_version = %s", (model_version,)
                )
            conn.execute("SELECT create_embedding_partition(%s, %s)", (model_version, dimension))
            conn.execute("SELECT create_embedding_index(%s)", (model_version,))
            return version_record(conn, model_version)

    def set_min_score(self, model_version: str, min_score: float | None) -> CatalogVersion:
        """Record ``model_version``'s calibrated relevance cutoff (None: none)."""
        with self.pool.connection() as conn, conn.transaction():
            conn.execute(
                "UPDATE catalog_versions SET min_score = %s WHERE model_version = %s",
                (min_score, model_version),
            )
            return version_record(conn, model_version)

    def bootstrap(self, model_version: str, dimension: int) -> CatalogVersion:
        """``model_version`` created if missing and made the serving version when none serves
        (a new catalog's first model: there is nothing to keep searchable meanwhile)."""
        self.create(model_version, dimension)
        with self.pool.connection() as conn, conn.transaction():
            conn.execute("LOCK TABLE catalog_versions IN SHARE ROW EXCLUSIVE MODE")
            conn.execute(
                "UPDATE catalog_versions SET state = 'serving', state_since = now()"
                " WHERE model_version = %s AND state <> 'retired'"
                " AND NOT EXISTS (SELECT 1 FROM catalog_versions WHERE state = 'serving')",
                (model_version,),
            )
            return version_record(conn, model_version)

    def coverage(self, model_version: str) -> Coverage:
        """How many products have an embedding of ``model_version``."""
        with self.pool.connection() as conn:
            return _coverage(conn, version_record(conn, model_version))

    def coverage_ratios(self) -> list[tuple[str, VersionState, float]]:
        """Each live version, its state and the share (0..1) of products embedded by it."""
        with self.pool.connection() as conn:
            return [
                (v.model_version, v.state, _coverage(conn, v).percent / 100)
                for v in live_versions(conn)
            ]

    def mark_ready(self, model_version: str) -> Coverage:
        """``building`` -> ``ready`` if every product has an embedding of it (else unchanged);
        returns the coverage."""
        with self.pool.connection() as conn, conn.transaction():
            version = version_record(conn, model_version)
            coverage = _coverage(conn, version)
            if coverage.complete and version.state == "building":
                conn.execute(
                    "UPDATE catalog_versions SET state = 'ready', state_since = now()"
                    " WHERE model_version = %s",
                    (model_version,),
                )
            return coverage

    def switch(self, model_version: str, grace_s: float) -> CatalogVersion | None:
        """Make ``model_version`` the serving version, in one transaction; returns the version
        it replaces (kept ``ready`` for ``grace_s`` seconds, the rollback window) or None.

        Refused (:class:`IncompleteVersionError`) unless every product has an embedding of it:
        the products table is share-locked for the check, so no product arrives between the
        count and the switch (uploads wait for the few milliseconds it takes).
        """
        with self.pool.connection() as conn, conn.transaction():
            # In the order create() takes them (records, then products for the foreign key).
            conn.execute("LOCK TABLE catalog_versions IN SHARE ROW EXCLUSIVE MODE")
            conn.execute("LOCK TABLE products IN SHARE MODE")
            version = version_record(conn, model_version)
            if version.state == "serving":
                return None
            if version.state == "retired":
                raise VersionNotFoundError(f"model version {model_version} is retired")
            coverage = _coverage(conn, version)
            if not coverage.complete:
                raise IncompleteVersionError(model_version, coverage)
            previous = conn.execute(
                "UPDATE catalog_versions SET state = 'ready', state_since = now(),"
                " retire_after = now() + make_interval(secs => %s)"
                " WHERE state = 'serving' RETURNING model_version",
                (grace_s,),
            ).fetchone()
            conn.execute(
                "UPDATE catalog_versions SET state = 'serving', state_since = now(),"
                " retire_after = NULL WHERE model_version = %s",
                (model_version,),
            )
            return version_record(conn, previous[0]) if previous else None

    def rollback_target(self) -> CatalogVersion:
        """The version the last switch replaced, while its rollback window lasts."""
        found = self._select("state = 'ready' AND retire_after > now()")
        if not found:
            raise VersionNotFoundError(
                "no previous version to roll back to (none replaced, or its window ended)"
            )
        return max(found, key=lambda v: v.state_since)

    def expired(self) -> list[CatalogVersion]:
        """Replaced versions whose rollback window has ended."""
        return self._select("state = 'ready' AND retire_after <= now()")

    def retire(self, model_version: str) -> CatalogVersion:
        """Drop a version's embeddings (its partition); the serving version is refused."""
        with self.pool.connection() as conn, conn.transaction():
            conn.execute("LOCK TABLE catalog_versions IN SHARE ROW EXCLUSIVE MODE")
            version = version_record(conn, model_version)
            if version.state == "serving":
                raise CatalogError(f"model version {model_version} is serving: switch first")
            if version.state != "retired":
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(version.table))
                conn.execute(
                    "UPDATE catalog_versions SET state = 'retired', state_since = now(),"
                    " retire_after = NULL WHERE model_version = %s",
                    (model_version,),
                )
            return version_record(conn, model_version)

    def drop_index(self, model_version: str) -> None:
        """Drop a version's HNSW index, for a bulk load into its empty partition: building it
        once after is cheaper (44,072 ViT-B/32 vectors: 9.5 s to build, against ~1.35 ms a row
        to insert into it at that size). Searches of it meanwhile are exact scans."""
        version = self.get(model_version)
        with self.pool.connection() as conn:
            conn.execute(
                sql.SQL("DROP INDEX IF EXISTS {}").format(
                    sql.Identifier(f"{version.partition}_hnsw")
                )
            )

    def ensure_index(self, model_version: str) -> None:
        """Build a version's HNSW index if it is missing (after a bulk load, or a killed one),
        however long that takes (no statement timeout), and gather its partition's statistics
        (what filtered searches choose their plan by)."""
        with self.pool.connection() as conn, conn.transaction():
            conn.execute("SET LOCAL statement_timeout = 0")
            conn.execute("SELECT create_embedding_index(%s)", (model_version,))
            conn.execute(sql.SQL("ANALYZE {}").format(version_record(conn, model_version).table))

    def storage_bytes(self, model_version: str) -> int:
        """Disk taken by a version's embeddings: its partition, index and TOAST."""
        version = self.get(model_version)
        if version.state == "retired":
            return 0
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT pg_total_relation_size(%s::regclass)", (version.partition,)
            ).fetchone()
        return int(row[0]) if row else 0


class IncompleteVersionError(CatalogError):
    """A switch to a version that some products have no embedding of."""

    def __init__(self, model_version: str, coverage: Coverage) -> None:
        super().__init__(
            f"model version {model_version} covers {coverage.embedded} of {coverage.products}"
            " products: build it completely before switching"
        )
        self.coverage = coverage
