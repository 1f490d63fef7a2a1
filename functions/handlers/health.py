"""Lambda function: ``GET /health``."""

from __future__ import annotations

from functions.api.lambda_adapter import lambda_handler
from functions.api.routes import health

handler = lambda_handler(health.router)
