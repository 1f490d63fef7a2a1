"""Lambda function: product metadata (``/graphql``, ``/products/{id}[/similar]``,
``/facets[/counts]``, ``/suggest``), ``POST /feedback``, the merchandising rules (``/rules``)
and online experiments (``/experiments``)."""

from __future__ import annotations

from functions.api.lambda_adapter import lambda_handler
from functions.api.routes import experiments, feedback, graphql, merchandising, products

handler = lambda_handler(
    graphql.router, products.router, feedback.router, merchandising.router, experiments.router
)
