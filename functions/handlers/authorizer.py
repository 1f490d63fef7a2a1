"""Lambda REQUEST authorizer of the HTTP API (template.yaml: payload format 2.0, simple
responses): a request is let through when its ``X-API-Key`` header is a valid, unrevoked key of
the catalog's ``api_keys``; the key's scope (``search`` or ``admin``) reaches the function as
``requestContext.authorizer.lambda.scope``.

API Gateway asks only when the header is there (its identity source; without it the answer is
401 at once) and caches the answer per key for the template's ``AuthorizerCacheTtl`` seconds,
so a revoked key is refused within that time. Every route but ``GET /health`` has it.
"""

from __future__ import annotations

from typing import Any

from fashion_search.settings import API_KEY_HEADER

#: The header holding the key (HTTP API payload 2.0 lower-cases header names).
HEADER = API_KEY_HEADER.lower()


def _key(event: dict[str, Any]) -> str:
    """The request's key: its header, else the identity source API Gateway resolved."""
    headers = event.get("headers") or {}
    for name, value in headers.items():
        if name.lower() == HEADER and value:
            return str(value)
    identity = event.get("identitySource") or []
    return str(identity[0]) if identity and identity[0] else ""


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """``{"isAuthorized": True, "context": {"scope": ...}}`` for a valid key, else refused."""
    key = _key(event)
    if not key:
        return {"isAuthorized": False, "context": {}}
    # Imported here: the catalog's pool and settings are set up on the first request, once
    # per container, and a cold start that only refuses keyless requests stays light.
    from functions.api.access import scope_of_key

    scope = scope_of_key(key)
    if scope is None:
        return {"isAuthorized": False, "context": {}}
    return {"isAuthorized": True, "context": {"scope": scope}}
