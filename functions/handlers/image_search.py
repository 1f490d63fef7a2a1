"""Lambda function: ``POST /search/image``."""

from __future__ import annotations

from functions.api.lambda_adapter import lambda_handler
from functions.api.routes import image_search

handler = lambda_handler(image_search.router)
