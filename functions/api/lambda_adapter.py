"""A Lambda handler from routers: the FastAPI app of those routes, wrapped by Mangum."""

from __future__ import annotations

from fastapi import APIRouter
from mangum import Mangum

from functions.api.app import create_app


def lambda_handler(*routers: APIRouter) -> Mangum:
    """``handler(event, context)`` for API Gateway (HTTP API v2 or REST) events."""
    return Mangum(create_app(*routers), lifespan="off")
