"""``GET /health``: the catalog, the object store and the model server answer; the catalog's
replicas (when it reads from some) with their lag."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from fashion_search.errors import FashionSearchError
from functions.api.dependencies import Products, Service

router = APIRouter(tags=["health"])


@router.get("/health", summary="Readiness of the catalog, object store and model server")
def health(service: Service, products: Products) -> JSONResponse:
    """200 when every dependency answers, else 503; each component with its state."""
    checks: dict[str, Any] = {}
    try:
        checks["catalog"] = {
            "ok": True, "products": products.count(),
            "servingVersion": service.catalog.versions.serving().model_version,
        }  # fmt: skip
    except Exception as error:  # any failure means "not ready"; the message says which
        checks["catalog"] = {"ok": False, "error": str(error)}
    if service.catalog.replicas is not None:  # reads fall back to the primary: not in "ok"
        checks["catalog"]["replicas"] = [r.as_dict() for r in service.catalog.replicas.health()]
    try:
        service.store.exists(service.settings.storage.images_bucket, "health-check")
        checks["objectStore"] = {"ok": True}
    except Exception as error:
        checks["objectStore"] = {"ok": False, "error": str(error)}
    try:
        info = service.embedder.info()
        checks["modelServer"] = {
            "ok": True, "model": info.registry_name, "version": info.registry_version,
            "loaded": sorted(info.versions), "providers": info.execution_providers,
        }  # fmt: skip
    except FashionSearchError as error:
        checks["modelServer"] = {"ok": False, "error": str(error)}
    ok = all(c["ok"] for c in checks.values())
    return JSONResponse({"ok": ok, **checks}, status_code=200 if ok else 503)
