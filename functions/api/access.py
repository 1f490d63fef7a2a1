"""Who is calling and may they: API keys (header ``X-API-Key``) and rate limits.

Each route declares what it needs with :func:`requires`: ``search`` routes answer without a key
when ``FS_API_SEARCH_ACCESS=open`` (the local demo) and need a key of scope search or admin when
it is ``key``; ``admin`` routes always need an admin key. A key that is sent must be valid even
where none is needed (401 otherwise). Requests with a valid key count against that key's rate
limit, the others against their address's (the `limits` library, moving window); past it, 429
with ``Retry-After``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from threading import Lock
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.params import Depends as DependsParam
from fastapi.security import APIKeyHeader
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from starlette.concurrency import run_in_threadpool

from fashion_search.catalog.api_keys import ApiKey, ApiKeyRepository, Scope, covers, key_digest
from fashion_search.errors import (
    InsufficientScopeError,
    InvalidApiKeyError,
    MissingApiKeyError,
    RateLimitedError,
)
from fashion_search.settings import API_KEY_HEADER, AccessSettings, get_settings
from functions.api.dependencies import build_service

_api_key = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    description="an API key (`fashion-search api-keys create`)",
)


class KeyLookup:
    """Keys looked up in the catalog, each answer trusted for ``ttl_s`` (found or not);
    ``keys`` gives the catalog's keys when a first key is looked up (requests without one never
    touch the catalog)."""

    def __init__(self, keys: Callable[[], ApiKeyRepository], ttl_s: float) -> None:
        self.keys = keys
        self.ttl_s = ttl_s
        self._cache: dict[bytes, tuple[float, ApiKey | None]] = {}
        self._lock = Lock()

    def find(self, key: str) -> ApiKey | None:
        """The unrevoked key ``key``, or None (blocking: call it off the event loop)."""
        digest, now = key_digest(key), time.monotonic()
        with self._lock:
            cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        found = self.keys().find(key)
        with self._lock:
            if len(self._cache) > 10_000:  # a flood of made-up keys stays bounded
                self._cache.clear()
            self._cache[digest] = (now + self.ttl_s, found)
        return found


class RateLimits:
    """The per-key and per-address limits over one in-process store."""

    def __init__(self, per_key: str, per_address: str) -> None:
        self.per_key: RateLimitItem = parse(per_key)
        self.per_address: RateLimitItem = parse(per_address)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def hit(self, key: ApiKey | None, address: str) -> None:
        """Count one request; RateLimitedError when its key or address is over its limit."""
        item, who = (self.per_key, f"key {key.id}") if key else (self.per_address, address)
        if self._limiter.hit(item, who):
            return
        reset_at, _ = self._limiter.get_window_stats(item, who)
        wait = max(1, math.ceil(reset_at - time.time()))
        raise RateLimitedError(f"rate limit of {item} exceeded for {who}; retry later", wait)


@dataclass(frozen=True)
class AccessControl:
    """What :func:`requires` checks against: the settings, the keys and the rate limits."""

    settings: AccessSettings
    keys: KeyLookup
    limits: RateLimits

    @classmethod
    def of(cls, settings: AccessSettings, keys: Callable[[], ApiKeyRepository]) -> AccessControl:
        """From the access settings, over a catalog's keys (see :class:`KeyLookup`)."""
        return cls(
            settings,
            KeyLookup(keys, settings.key_cache_s),
            RateLimits(settings.rate_limit_per_key, settings.rate_limit_per_address),
        )


@lru_cache(maxsize=1)
def _build_access() -> AccessControl:
    return AccessControl.of(get_settings().access, lambda: build_service().catalog.api_keys)


async def get_access() -> AccessControl:
    """The process-wide access control (``async``: see
    :func:`~functions.api.dependencies.get_service`)."""
    return _build_access()


def scope_of_key(key: str) -> Scope | None:
    """The scope of a valid, unrevoked key, else None (for the Lambda authorizer)."""
    found = _build_access().keys.find(key)
    return found.scope if found else None


def require_scope(found: ApiKey | None, needed: Scope) -> None:
    """MissingApiKeyError without a key, InsufficientScopeError when its scope falls short."""
    if found is None:
        raise MissingApiKeyError(f"this needs an API key of scope {needed} in {API_KEY_HEADER}")
    if not covers(found.scope, needed):
        raise InsufficientScopeError(f"this needs a key of scope {needed}, not {found.scope}")


def recorded_as(caller: ApiKey | None) -> str:
    """Who a change made through the API is recorded as: the caller's key, by its name."""
    return f"api-key:{caller.name}" if caller else "api"


def requires(needed: Scope) -> DependsParam:
    """A route dependency: the caller may use a route that needs ``needed``, within its rate."""

    async def check(
        request: Request,
        access: Annotated[AccessControl, Depends(get_access)],
        key: Annotated[str | None, Security(_api_key)],
    ) -> ApiKey | None:
        found = await run_in_threadpool(access.keys.find, key) if key else None
        access.limits.hit(found, request.client.host if request.client else "unknown")
        if key and found is None:
            raise InvalidApiKeyError(f"the {API_KEY_HEADER} sent is not a valid key (or revoked)")
        if not (needed == "search" and access.settings.search == "open"):
            require_scope(found, needed)
        return found

    dependency: DependsParam = Depends(check)
    return dependency
