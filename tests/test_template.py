"""template.yaml (AWS SAM) passes cfn-lint and ``sam validate --lint``; its handlers load."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

from fashion_search.settings import REPO_ROOT, Settings
from stack.lambda_runtime import template

CFN_LINT = Path(sys.executable).parent / "cfn-lint"


def test_template_lints_clean() -> None:
    result = subprocess.run(
        [str(CFN_LINT), str(REPO_ROOT / "template.yaml")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_lint_catches_a_broken_template(tmp_path: Path) -> None:
    broken = tmp_path / "template.yaml"
    text = (
        (REPO_ROOT / "template.yaml")
        .read_text()
        .replace("!GetAtt UploadsQueue.Arn", "!GetAtt Nope.Arn")
    )
    broken.write_text(text)
    result = subprocess.run([str(CFN_LINT), str(broken)], capture_output=True, text=True)
    assert result.returncode != 0
    assert "Nope" in result.stdout


def test_sam_validate_lint_passes(tmp_path: Path) -> None:
    sam = Settings().cache_dir / "bin" / "sam"
    assert sam.exists(), "scripts/bootstrap.sh installs the SAM CLI"
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1", "SAM_CLI_TELEMETRY": "0",
           "HOME": str(tmp_path)}  # fmt: skip
    result = subprocess.run(
        [str(sam), "validate", "--lint", "-t", str(REPO_ROOT / "template.yaml")],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is a valid SAM Template" in result.stdout + result.stderr


def test_functions_deploy_their_roles_artifact_on_the_runtime_built_here() -> None:
    """Each function's code is its role's artifact (scripts/build_lambda.py; an extra of
    pyproject.toml), for python3.13 (the runtime whose image stack.images builds); S3 is the
    region's, with the role's credentials."""
    from functions.local_invoke import FUNCTION_TYPE, function_spec, load_template

    template = load_template(REPO_ROOT / "template.yaml")
    defaults = template["Globals"]["Function"]
    assert defaults["Runtime"] == "python3.13" and "CodeUri" not in defaults
    variables = defaults["Environment"]["Variables"]
    assert variables["FS_S3_ACCESS_KEY"] == variables["FS_S3_SECRET_KEY"] == ""
    assert variables["FS_S3_REGION"] == {"Ref": "AWS::Region"}
    assert variables["FS_S3_ENDPOINT_URL"]["Fn::If"][0] == "RegionalS3"  # not the local stack's
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for name, resource in template["Resources"].items():
        if resource["Type"] != FUNCTION_TYPE:
            continue
        role = "ingest" if name == "BucketEventFunction" else "api"
        assert resource["Properties"]["CodeUri"] == f"build/lambda/{role}/", name
        assert role in extras
        spec = function_spec(REPO_ROOT / "template.yaml", name)
        assert spec.code_uri == REPO_ROOT / "build" / "lambda" / role
        assert spec.code_dir == REPO_ROOT  # local_invoke runs the source


def test_every_function_handler_exists() -> None:
    from functions.local_invoke import FUNCTION_TYPE, function_spec, load_handler, load_template

    template = load_template(REPO_ROOT / "template.yaml")
    names = [n for n, r in template["Resources"].items() if r["Type"] == FUNCTION_TYPE]
    assert {"HealthFunction", "TextSearchFunction", "ImageSearchFunction", "MetadataFunction",
            "BucketEventFunction", "AuthorizerFunction"} <= set(names)  # fmt: skip
    for name in names:
        spec = function_spec(REPO_ROOT / "template.yaml", name)
        assert callable(load_handler(spec)), name
        assert spec.environment["FS_MODEL_SERVER_ADDRESS"] == "127.0.0.1:50051"


def test_the_upload_queue_follows_aws_advice_for_lambda_and_matches_localstack() -> None:
    """Visibility timeout at least 6x the function timeout, maxReceiveCount at least 5 (AWS:
    using Lambda with Amazon SQS); the LocalStack queue is created with the same values."""
    resources = template()["Resources"]
    timeout = resources["BucketEventFunction"]["Properties"]["Timeout"]
    queue = resources["UploadsQueue"]["Properties"]
    visibility = template()["Parameters"]["UploadsVisibilityTimeout"]
    assert visibility["Default"] >= 6 * timeout and visibility["MinValue"] >= timeout
    assert queue["RedrivePolicy"]["maxReceiveCount"] >= 5
    init = (REPO_ROOT / "localstack" / "init" / "ready.d" / "10_resources.py").read_text()
    assert re.search(r'"VisibilityTimeout": "(\d+)"', init)[1] == str(visibility["Default"])  # type: ignore[index]
    received = re.search(r'"maxReceiveCount": "(\d+)"', init)[1]  # type: ignore[index]
    assert received == str(queue["RedrivePolicy"]["maxReceiveCount"])


def test_the_bucket_functions_retry_budget_fits_inside_its_timeout() -> None:
    """A batch retried for the whole budget (plus one try as long as a pool wait) still
    returns its partial batch response before Lambda stops the function."""
    from fashion_search.settings import Settings

    function = template()["Resources"]["BucketEventFunction"]["Properties"]
    settings = Settings()
    one_try = settings.database.pool_timeout_s + settings.ingest.retry_max_s
    assert settings.ingest.retry_budget_s + one_try < function["Timeout"]
    events = function["Events"]
    [sqs] = [e["Properties"] for e in events.values() if e["Type"] == "SQS"]
    assert sqs["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


AUTHORIZER = "ApiKeyAuthorizer"


def _http_routes(resources: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``"METHOD /path"`` -> its HttpApi event's properties, over every function."""
    routes = {}
    for resource in resources.values():
        for event in resource.get("Properties", {}).get("Events", {}).values():
            if event["Type"] == "HttpApi":
                props = event["Properties"]
                routes[f"{props['Method']} {props['Path']}"] = props
    return routes


def test_every_route_but_health_needs_an_api_key() -> None:
    """A Lambda REQUEST authorizer (payload 2.0, simple responses, the X-API-Key header as
    identity source, answers cached a few minutes) is the API's default; /health opts out."""
    from functions.local_invoke import load_template

    template = load_template(REPO_ROOT / "template.yaml")
    resources, parameters = template["Resources"], template["Parameters"]
    auth = resources["SearchApi"]["Properties"]["Auth"]
    assert auth["DefaultAuthorizer"] == AUTHORIZER
    authorizer = auth["Authorizers"][AUTHORIZER]
    assert authorizer["FunctionArn"] == {"Fn::GetAtt": ["AuthorizerFunction", "Arn"]}
    assert authorizer["AuthorizerPayloadFormatVersion"] == "2.0"
    assert authorizer["EnableSimpleResponses"] is True
    assert authorizer["Identity"]["Headers"] == ["X-API-Key"]
    ttl = parameters[authorizer["Identity"]["ReauthorizeEvery"]["Ref"]]
    assert 60 <= ttl["Default"] <= 900 and ttl["MaxValue"] <= 3600  # a few minutes
    routes = _http_routes(resources)
    assert {"GET /health", "GET /search/text", "POST /search/text", "POST /search/image",
            "GET /graphql", "POST /graphql", "GET /products/{id}",
            "GET /products/{id}/similar", "GET /facets"} <= set(routes)  # fmt: skip
    for route, props in routes.items():
        if route == "GET /health":
            assert props["Auth"] == {"Authorizer": "NONE"}
        else:  # the default authorizer: no route may opt out or pick another
            assert props.get("Auth", {}).get("Authorizer", AUTHORIZER) == AUTHORIZER, route
    # API Gateway may invoke the authorizer (SAM adds no permission for an HTTP API's).
    [permission] = [
        r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::Lambda::Permission"
        and r["Properties"]["FunctionName"] == {"Ref": "AuthorizerFunction"}
    ]
    assert permission["Principal"] == "apigateway.amazonaws.com"
    assert "/authorizers/" in permission["SourceArn"]["Fn::Sub"]
    # The functions refuse keyless searches too (behind the authorizer, and when run elsewhere).
    assert template["Globals"]["Function"]["Environment"]["Variables"]["FS_API_SEARCH_ACCESS"] == (
        "key"
    )


def test_routes_are_throttled_image_search_the_most() -> None:
    from functions.local_invoke import load_template

    template = load_template(REPO_ROOT / "template.yaml")
    api, parameters = template["Resources"]["SearchApi"]["Properties"], template["Parameters"]

    def limits(settings: dict[str, Any]) -> tuple[float, float]:
        burst, rate = settings["ThrottlingBurstLimit"], settings["ThrottlingRateLimit"]
        assert set(burst) == set(rate) == {"Ref"}  # from the template's parameters
        return parameters[burst["Ref"]]["Default"], parameters[rate["Ref"]]["Default"]

    default = limits(api["DefaultRouteSettings"])
    assert all(value > 0 for value in default)
    image = limits(api["RouteSettings"]["POST /search/image"])
    assert all(0 < i < d for i, d in zip(image, default, strict=True))
    assert set(api["RouteSettings"]) <= set(_http_routes(template["Resources"]))


def test_the_authorizer_handler_answers_with_the_keys_scope(
    monkeypatch: Any,
) -> None:
    """Its Handler resolves to a module with ``handler``; a valid key is let through with its
    scope, an unknown or missing one is refused (the key lookup stubbed: no catalog here)."""
    from functions.local_invoke import function_spec, load_handler

    spec = function_spec(REPO_ROOT / "template.yaml", "AuthorizerFunction")
    assert spec.handler == "functions.handlers.authorizer.handler"
    handler = load_handler(spec)
    import functions.api.access as access

    keys = {"fsk_valid": "search", "fsk_admin": "admin"}
    monkeypatch.setattr(access, "scope_of_key", keys.get)

    def event(headers: dict[str, str]) -> dict[str, Any]:
        return {"version": "2.0", "type": "REQUEST", "routeKey": "GET /facets",
                "identitySource": list(headers.values()), "headers": headers}  # fmt: skip

    assert handler(event({"x-api-key": "fsk_valid"}), None) == {
        "isAuthorized": True, "context": {"scope": "search"}
    }  # fmt: skip
    assert handler(event({"X-API-Key": "fsk_admin"}), None)["context"] == {"scope": "admin"}
    assert handler(event({"x-api-key": "fsk_unknown"}), None)["isAuthorized"] is False
    assert handler(event({}), None)["isAuthorized"] is False


def test_the_runtime_image_is_built_for_the_templates_runtime() -> None:
    """The names ``sam local`` and LocalStack ask for, and the stand-in's Python (its Dockerfile
    and bootstrap name the version) are the template's runtime."""
    from stack.lambda_runtime import function_roles, runtime, runtime_images

    version, architecture = runtime()
    assert (version, architecture) == ("3.13", "x86_64")
    assert runtime_images() == [
        "public.ecr.aws/lambda/python:3.13", "public.ecr.aws/lambda/python:3.13-x86_64",
    ]  # fmt: skip
    assets = REPO_ROOT / "stack" / "assets" / "images" / "lambda-python"
    for name in ("Dockerfile", "bootstrap"):
        assert f"python{version}" in (assets / name).read_text(), name
    assert set(function_roles().values()) == {"api", "ingest"}
