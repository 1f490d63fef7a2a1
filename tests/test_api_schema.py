"""Property-based runs of the API's own schemas (schemathesis): the OpenAPI schema and the
GraphQL schema, against the real catalog and model server, a bounded number of examples per
operation. No answer is a 5xx, and every one conforms to its documented status, content type
and schema. The calls carry an admin key, so that every route runs past access control (the
access matrix is tests/test_api_access.py)."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from fashion_search.search.service import SearchService
from functions.api.routes.graphql import build_schema
from tests.helpers import api_client

#: Examples per operation: enough to find a 500 on a parameter (the out-of-range year took 12 s
#: of the CLI's run) while the whole file stays about a minute.
EXAMPLES = 25
CHECKS = [
    schemathesis.checks.not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
BOUNDED = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def admin_app(search_service: SearchService) -> tuple[Any, str]:
    client = api_client(search_service, "key")
    _, key = search_service.catalog.api_keys.create("schemathesis", "admin")
    return client.app, key


@pytest.fixture(scope="module")
def openapi_schema(admin_app: tuple[Any, str]) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", admin_app[0])


@pytest.fixture(scope="module")
def graphql_schema(admin_app: tuple[Any, str], search_service: SearchService) -> Any:
    # The served schema refuses introspection: read its SDL from the code instead.
    loaded = schemathesis.graphql.from_file(str(build_schema(search_service.settings.access)))
    loaded.app = admin_app[0]
    loaded.location = "/graphql"
    return loaded


@schemathesis.pytest.from_fixture("openapi_schema").parametrize()
@BOUNDED
def test_openapi_operations(case: Any, admin_app: tuple[Any, str]) -> None:
    case.call_and_validate(headers={"X-API-Key": admin_app[1]}, checks=CHECKS)


@schemathesis.pytest.from_fixture("graphql_schema").parametrize()
@BOUNDED
def test_graphql_fields(case: Any, admin_app: tuple[Any, str]) -> None:
    response = case.call_and_validate(headers={"X-API-Key": admin_app[1]})
    body = response.json()
    assert set(body) <= {"data", "errors", "extensions"} and ("data" in body or body["errors"])
    for error in body.get("errors") or []:
        assert error["message"] and error["extensions"]["status"] < 500, error
