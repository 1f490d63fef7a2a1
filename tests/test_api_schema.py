"""Property-based runs of the API's own schemas (schemathesis): the OpenAPI schema and the
GraphQL schema, against the real catalog and model server, a bounded number of examples per
operation. No answer is a 5xx, and every one conforms to its documented status, content type
and schema. The calls carry an admin key, so that every route runs past access control (the
access matrix is tests/test_api_access.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import graphql
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.graphql import nodes
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


def _json_node(value: Any) -> Any:
    """A JSON value as a GraphQL literal."""
    if isinstance(value, dict):
        return nodes.Object([
            graphql.ObjectFieldNode(name=graphql.NameNode(value=k), value=_json_node(v))
            for k, v in value.items()
        ])  # fmt: skip
    if isinstance(value, list):
        return nodes.List([_json_node(v) for v in value])
    if value is None:
        return nodes.Null
    if isinstance(value, bool):
        return nodes.Boolean(value)
    return (nodes.Int if isinstance(value, int) else nodes.String)(value)


#: The JSON scalar (a merchandising rule's body): rule-shaped names among random ones.
_NAMES = st.sampled_from(["when", "then", "query", "hide", "pin", "synonyms", "words"]) | (
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_NAMES, inner, max_size=3),
    max_leaves=8,
)
schemathesis.graphql.scalar("JSON", _JSON.map(_json_node))


@pytest.fixture(scope="module")
def admin_app(search_service: SearchService) -> Iterator[tuple[Any, str]]:
    """The API with an admin key; the merchandising rules its examples made are removed
    after (other tests' searches would see them)."""
    client = api_client(search_service, "key")
    _, key = search_service.catalog.api_keys.create("schemathesis", "admin")
    yield client.app, key
    for entry in search_service.merchandising.entries():
        search_service.merchandising.remove(entry.id)


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


def run_every_operation(schema: Any, check: Any) -> list[str]:
    """``check(case)`` on BOUNDED examples of each operation of ``schema``; the operations."""
    ran = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @BOUNDED
        @given(case=operation.as_strategy())
        def examples(case: Any) -> None:
            check(case)

        examples()
        ran.append(operation.label)
    return ran


def test_openapi_operations(openapi_schema: Any, admin_app: tuple[Any, str]) -> None:
    headers = {"X-API-Key": admin_app[1]}
    ran = run_every_operation(
        openapi_schema, lambda case: case.call_and_validate(headers=headers, checks=CHECKS)
    )
    assert "GET /search/text" in ran and "POST /search/image" in ran and "POST /graphql" in ran


def test_graphql_fields(graphql_schema: Any, admin_app: tuple[Any, str]) -> None:
    headers = {"X-API-Key": admin_app[1]}

    def check(case: Any) -> None:
        # A resolver's refusal of an argument (a field error with its 4xx in extensions) is how
        # GraphQL answers bad input (schemathesis's GraphQL checks call any error a server
        # error); a 5xx or a malformed answer is a failure.
        response = case.call(headers=headers)
        assert response.status_code < 500, (case.body, response.text)
        body = response.json()
        assert set(body) <= {"data", "errors", "extensions"}, body
        assert "data" in body or body["errors"], body
        for error in body.get("errors") or []:
            assert error["message"] and error["extensions"]["status"] < 500, error

    ran = run_every_operation(graphql_schema, check)
    assert {"Query.products", "Query.searchByText", "Query.searchSimilar"} <= set(ran), ran
