"""template.yaml (AWS SAM) passes cfn-lint and ``sam validate --lint``; its handlers load."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import yaml

from fashion_search.settings import REPO_ROOT, Settings

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


def test_functions_deploy_their_roles_artifact_on_python312() -> None:
    """Each function's code is its role's artifact (scripts/build_lambda.py; an extra of
    pyproject.toml), for python3.12; S3 is the region's, with the role's credentials."""
    from functions.local_invoke import FUNCTION_TYPE, function_spec, load_template

    template = load_template(REPO_ROOT / "template.yaml")
    defaults = template["Globals"]["Function"]
    assert defaults["Runtime"] == "python3.12" and "CodeUri" not in defaults
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
    assert {"HealthFunction", "TextSearchFunction", "ImageSearchFunction",
            "MetadataFunction", "BucketEventFunction"} <= set(names)  # fmt: skip
    for name in names:
        spec = function_spec(REPO_ROOT / "template.yaml", name)
        assert callable(load_handler(spec)), name
        assert spec.environment["FS_MODEL_SERVER_ADDRESS"] == "127.0.0.1:50051"


def _template() -> dict[str, Any]:
    class Loader(yaml.SafeLoader):
        """CloudFormation's short tags (!Ref, !GetAtt, ...) read as plain values."""

    Loader.add_multi_constructor("!", lambda loader, _, node: None)
    return dict(yaml.load((REPO_ROOT / "template.yaml").read_text(), Loader=Loader))


def test_the_upload_queue_follows_aws_advice_for_lambda_and_matches_localstack() -> None:
    """Visibility timeout at least 6x the function timeout, maxReceiveCount at least 5 (AWS:
    using Lambda with Amazon SQS); the LocalStack queue is created with the same values."""
    resources = _template()["Resources"]
    timeout = resources["BucketEventFunction"]["Properties"]["Timeout"]
    queue = resources["UploadsQueue"]["Properties"]
    assert queue["VisibilityTimeout"] >= 6 * timeout
    assert queue["RedrivePolicy"]["maxReceiveCount"] >= 5
    init = (REPO_ROOT / "localstack" / "init" / "ready.d" / "10_resources.py").read_text()
    assert re.search(r'"VisibilityTimeout": "(\d+)"', init)[1] == str(queue["VisibilityTimeout"])  # type: ignore[index]
    received = re.search(r'"maxReceiveCount": "(\d+)"', init)[1]  # type: ignore[index]
    assert received == str(queue["RedrivePolicy"]["maxReceiveCount"])


def test_the_bucket_functions_retry_budget_fits_inside_its_timeout() -> None:
    """A batch retried for the whole budget (plus one try as long as a pool wait) still
    returns its partial batch response before Lambda stops the function."""
    from fashion_search.settings import Settings

    function = _template()["Resources"]["BucketEventFunction"]["Properties"]
    settings = Settings()
    one_try = settings.database.pool_timeout_s + settings.ingest.retry_max_s
    assert settings.ingest.retry_budget_s + one_try < function["Timeout"]
    events = function["Events"]
    [sqs] = [e["Properties"] for e in events.values() if e["Type"] == "SQS"]
    assert sqs["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
