"""Keys of the search API: created (the key shown once), listed, revoked, and looked up.

A key is ``fsk_`` and 43 URL-safe characters (256 random bits); the catalog keeps only its
SHA-256 and its first characters (to tell keys apart in a listing). A key of scope ``admin``
may do everything one of scope ``search`` may.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from typing import Literal, get_args

from psycopg.rows import class_row
from pydantic import BaseModel

from fashion_search.catalog.table import Table
from fashion_search.errors import InvalidArgumentError

Scope = Literal["search", "admin"]
SCOPES: tuple[Scope, ...] = get_args(Scope)
KEY_PREFIX = "fsk_"
#: Characters of a key kept in the clear (its prefix included) to tell keys apart.
SHOWN_CHARS = 10


class ApiKey(BaseModel):
    """A key as the catalog has it (never the key itself)."""

    id: int
    name: str
    scope: Scope
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


def new_key() -> str:
    """A fresh random key."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_digest(key: str) -> bytes:
    """What the catalog stores of a key."""
    return hashlib.sha256(key.encode()).digest()


def covers(scope: Scope, needed: Scope) -> bool:
    """Whether a key of ``scope`` may do what needs ``needed``."""
    return scope == "admin" or scope == needed


_COLUMNS = "id, name, scope, prefix, created_at, revoked_at"


class ApiKeyRepository(Table):
    """The ``api_keys`` table."""

    def create(self, name: str, scope: Scope, key: str | None = None) -> tuple[ApiKey, str]:
        """A new key named ``name`` (``key``: register this one, e.g. a deployment's generated
        UI key; it must look like one); returns its record and the key."""
        if scope not in SCOPES:
            raise InvalidArgumentError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
        if not 1 <= len(name) <= 100:
            raise InvalidArgumentError("a key's name needs 1 to 100 characters")
        key = key or new_key()
        if not key.startswith(KEY_PREFIX) or len(key) < len(KEY_PREFIX) + 32:
            raise InvalidArgumentError(
                f"a key starts with {KEY_PREFIX} and has 32+ more characters"
            )
        with self.pool.connection() as conn, conn.cursor(row_factory=class_row(ApiKey)) as cur:
            record = cur.execute(
                f"INSERT INTO api_keys (name, scope, key_sha256, prefix) VALUES (%s, %s, %s, %s)"
                f" ON CONFLICT (key_sha256) DO UPDATE SET name = EXCLUDED.name"
                f" RETURNING {_COLUMNS}",
                (name, scope, key_digest(key), key[:SHOWN_CHARS]),
            ).fetchone()
        assert record is not None
        return record, key

    def list_keys(self) -> list[ApiKey]:
        """Every key, revoked ones included, oldest first."""
        with self.pool.connection() as conn, conn.cursor(row_factory=class_row(ApiKey)) as cur:
            keys: list[ApiKey] = cur.execute(
                f"SELECT {_COLUMNS} FROM api_keys ORDER BY id"
            ).fetchall()
        return keys

    def revoke(self, key_id: int) -> ApiKey:
        """Revoke key ``key_id`` (kept, for the record); InvalidArgumentError when none has it."""
        with self.pool.connection() as conn, conn.cursor(row_factory=class_row(ApiKey)) as cur:
            record: ApiKey | None = cur.execute(
                f"UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = %s"
                f" RETURNING {_COLUMNS}",
                (key_id,),
            ).fetchone()
        if record is None:
            raise InvalidArgumentError(f"no API key has id {key_id}")
        return record

    def find(self, key: str) -> ApiKey | None:
        """The unrevoked key ``key``, or None."""
        with self.pool.connection() as conn, conn.cursor(row_factory=class_row(ApiKey)) as cur:
            found: ApiKey | None = cur.execute(
                f"SELECT {_COLUMNS} FROM api_keys WHERE key_sha256 = %s AND revoked_at IS NULL",
                (key_digest(key),),
            ).fetchone()
        return found
