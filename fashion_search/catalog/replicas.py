"""Reads spread over PostgreSQL streaming replicas, the primary when none is fit.

:class:`ReplicatedReads` hands out connections like a pool (``with reads.connection() as
conn``): one from the next fit replica in turn, else from the primary. A replica is fit while
its last check found it in recovery and at most ``replica_max_lag_s`` behind (or the primary
down: a replica is then the freshest there is). Checks come at most every
``replica_check_s``, made by the read that finds one due (no thread: it works the same in
Lambda). A replica whose connection cannot be had within ``replica_timeout_s``, or breaks in
use, is unfit until its next check; that read goes to the primary (one broken in use fails
its read, as the primary's would).

Lag is measured in bytes, between the primary's current WAL position and the replica's
replayed one, and in seconds, since a check first saw the primary at a position the replica
has not replayed yet (to the checks' resolution; commit timestamps would need a commit
replayed, and overstate the lag after a quiet period).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from fashion_search.settings import DatabaseSettings

#: A replica's state: whether it is in recovery, and where its replay is.
_REPLICA_STATE = "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text"


def lsn_bytes(lsn: str) -> int:
    """A WAL position (``16/B374D848``) as a byte offset."""
    high, _, low = lsn.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


@dataclass(frozen=True)
class ReplicaHealth:
    """What the last check of one replica found (``/health`` shows it)."""

    address: str
    fit: bool
    lag_bytes: int | None = None
    lag_s: float | None = None
    error: str = ""

    def as_check(self) -> tuple[str, bool, int | None, float | None]:
        """As the replicas' metrics take it (:class:`~fashion_search.telemetry.metrics.
        CatalogReplicas`)."""
        return self.address, self.fit, self.lag_bytes, self.lag_s

    def as_dict(self) -> dict[str, Any]:
        """camelCase, as the API answers."""
        found: dict[str, Any] = {"address": self.address, "ok": self.fit}
        if self.lag_bytes is not None:
            found |= {"lagBytes": self.lag_bytes, "lagSeconds": round(self.lag_s or 0.0, 3)}
        if self.error:
            found["error"] = self.error
        return found


class _Replica:
    def __init__(self, pool: ConnectionPool[Any]) -> None:
        params = conninfo_to_dict(str(pool.conninfo))
        self.pool = pool
        self.health = ReplicaHealth(f"{params.get('host', '')}:{params.get('port', '')}", False)
        self.checked_at = float("-inf")
        # (when, primary's WAL position) of the checks whose position it has not replayed yet.
        self.unreplayed: deque[tuple[float, int]] = deque(maxlen=1000)

    def unfit(self, error: Exception) -> None:
        self.health = ReplicaHealth(self.health.address, False, error=str(error) or repr(error))


class ReplicatedReads:
    """Connections for reads: from the replicas while they are fit, else from the primary."""

    def __init__(
        self,
        primary: ConnectionPool[Any],
        replicas: Sequence[ConnectionPool[Any]],
        settings: DatabaseSettings,
    ) -> None:
        self.primary = primary
        self._replicas = [_Replica(pool) for pool in replicas]
        self._settings = settings
        self._turn = itertools.count()
        self._lock = threading.Lock()

    @contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[psycopg.Connection[Any]]:
        """A connection for a read (autocommit, as the pools of
        :func:`~fashion_search.catalog.db.create_pool` give)."""
        with ExitStack() as stack:
            replica, conn = self._checkout(stack, timeout)
            try:
                yield conn
            except psycopg.OperationalError as error:
                if replica is not None:  # broken in use: skip it until its next check
                    replica.unfit(error)
                raise

    def health(self) -> list[ReplicaHealth]:
        """Every replica, checked now."""
        for replica in self._replicas:
            replica.checked_at = time.monotonic()
            self._check(replica)
        return [replica.health for replica in self._replicas]

    def _checkout(
        self, stack: ExitStack, timeout: float | None
    ) -> tuple[_Replica | None, psycopg.Connection[Any]]:
        count = len(self._replicas)
        start = next(self._turn) if count else 0
        for i in range(count):
            replica = self._replicas[(start + i) % count]
            if self._due(replica):
                self._check(replica)
            if not replica.health.fit:
                continue
            try:
                conn = replica.pool.connection(timeout=self._settings.replica_timeout_s)
                return replica, stack.enter_context(conn)
            except (PoolTimeout, psycopg.OperationalError) as error:
                replica.unfit(error)
        return None, stack.enter_context(self.primary.connection(timeout))

    def _due(self, replica: _Replica) -> bool:
        """Whether ``replica``'s check is due, claimed by this caller (one check at a time)."""
        with self._lock:
            now = time.monotonic()
            if now - replica.checked_at < self._settings.replica_check_s:
                return False
            replica.checked_at = now
            return True

    def _check(self, replica: _Replica) -> None:
        timeout = self._settings.replica_timeout_s
        try:
            with replica.pool.connection(timeout=timeout) as conn:
                state = conn.execute(_REPLICA_STATE).fetchone()
        except (PoolTimeout, psycopg.Error) as error:
            replica.unfit(error)
            return
        in_recovery, replay_lsn = state or (False, None)
        if not in_recovery or replay_lsn is None:
            replica.unfit(RuntimeError("not a streaming replica (not in recovery)"))
            return
        try:
            with self.primary.connection(timeout=timeout) as conn:
                row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        except (PoolTimeout, psycopg.Error):
            # The primary is down: the replica's reads are the freshest there are.
            replica.health = ReplicaHealth(replica.health.address, True)
            return
        now, replayed = time.monotonic(), lsn_bytes(replay_lsn)
        primary_lsn = lsn_bytes(row[0]) if row else 0
        replica.unreplayed.append((now, primary_lsn))
        while replica.unreplayed and replica.unreplayed[0][1] <= replayed:
            replica.unreplayed.popleft()
        lag_bytes = max(0, primary_lsn - replayed)
        lag_s = now - replica.unreplayed[0][0] if replica.unreplayed else 0.0
        fit = lag_s <= self._settings.replica_max_lag_s
        behind = "" if fit else f"{lag_s:.1f} s behind (limit {self._settings.replica_max_lag_s} s)"
        replica.health = ReplicaHealth(replica.health.address, fit, lag_bytes, lag_s, behind)
