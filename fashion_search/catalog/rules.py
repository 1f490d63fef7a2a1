"""Where merchandising rules and synonym sets are kept: the ``merchandising_rules`` table, each
entry its JSON body with who created it and when (what the bodies mean:
:mod:`fashion_search.search.rules`, :mod:`fashion_search.search.synonyms`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeAlias

from psycopg.types.json import Jsonb

from fashion_search.catalog.table import Table

EntryKind: TypeAlias = Literal["rule", "synonyms"]


@dataclass(frozen=True)
class StoredEntry:
    """A stored rule or synonym set."""

    id: int
    kind: EntryKind
    body: dict[str, Any]
    created_by: str
    created_at: datetime


class RuleRepository(Table):
    """Rules and synonym sets, in the order they were created."""

    def add(
        self,
        kind: EntryKind,
        body: dict[str, Any],
        created_by: str,
        check: Callable[[list[StoredEntry]], None] = lambda _: None,
    ) -> StoredEntry:
        """Store an entry once ``check`` passes over every entry stored and the new one (id 0);
        adds are serialised, so two of them never pass a check the pair would fail."""
        with self.pool.connection() as conn, conn.transaction():
            conn.execute("LOCK TABLE merchandising_rules IN SHARE ROW EXCLUSIVE MODE")
            check([*self._all(conn), StoredEntry(0, kind, body, created_by, datetime.now())])
            row = conn.execute(
                "INSERT INTO merchandising_rules (kind, body, created_by) VALUES (%s, %s, %s)"
                " RETURNING id, kind, body, created_by, created_at",
                (kind, Jsonb(body), created_by),
            ).fetchone()
        assert row is not None
        return StoredEntry(*row)

    def remove(self, entry_id: int) -> bool:
        """Remove an entry; whether there was one."""
        with self.pool.connection() as conn:
            cur = conn.execute("DELETE FROM merchandising_rules WHERE id = %s", (entry_id,))
            return cur.rowcount > 0

    def version(self) -> tuple[int, int]:
        """What changes whenever an entry is added or removed (entries are never edited): how
        many there are and the sum of their ids."""
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT count(*), coalesce(sum(id), 0) FROM merchandising_rules"
            ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    def all(self) -> list[StoredEntry]:
        """Every entry, oldest first."""
        with self.pool.connection() as conn:
            return self._all(conn)

    def unknown_products(self, ids: Sequence[int]) -> list[int]:
        """Those of ``ids`` that no product has."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT i FROM unnest(%s::bigint[]) i"
                " WHERE NOT EXISTS (SELECT FROM products WHERE id = i) ORDER BY i",
                (list(ids),),
            ).fetchall()
        return [int(r[0]) for r in rows]

    @staticmethod
    def _all(conn: Any) -> list[StoredEntry]:
        rows = conn.execute(
            "SELECT id, kind, body, created_by, created_at FROM merchandising_rules ORDER BY id"
        ).fetchall()
        return [StoredEntry(*row) for row in rows]
