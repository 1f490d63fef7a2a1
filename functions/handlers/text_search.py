"""Lambda function: ``GET|POST /search/text``."""

from __future__ import annotations

from functions.api.lambda_adapter import lambda_handler
from functions.api.routes import text_search

handler = lambda_handler(text_search.router)
