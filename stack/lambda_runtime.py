"""The functions' Lambda runtime as ``template.yaml`` declares it, the images that run it, and
the functions beside a compose deployment: on its network, with each role's settings there.

LocalStack starts ``public.ecr.aws/lambda/python:<version>`` and ``sam local``
``public.ecr.aws/lambda/python:<version>-<architecture>``; without a registry,
``python -m stack.images build`` builds both names from one stand-in.

    python -m stack.lambda_runtime env      # build/lambda/env.json; prints sam local's options
    sam local start-api --skip-pull-image --env-vars build/lambda/env.json \
        --docker-network fashion-search_default
    python -m stack.lambda_runtime deploy   # sam deploy to the deployment's LocalStack
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import yaml

from fashion_search.settings import REPO_ROOT, Settings, get_settings
from stack.compose_cli import COMPOSE_FILE, compose_command, compose_config, deployment_secrets
from stack.secrets import resolve
from stack.service import StackError, run_checked

TEMPLATE = REPO_ROOT / "template.yaml"
LAMBDA_REPOSITORY = "public.ecr.aws/lambda/python"
#: Where ``make lambda`` puts the artifacts (template.yaml's CodeUri folders).
BUILD = REPO_ROOT / "build" / "lambda"
#: On LocalStack: the stack's name, the bucket ``sam deploy`` uploads the artifacts to, and
#: LocalStack as the functions reach it on the compose network.
STACK_NAME = "fashion-search"
ARTIFACTS_BUCKET = "fashion-functions"
LOCALSTACK_ON_NETWORK = "http://localstack:4566"


@cache
def template() -> dict[str, Any]:
    """template.yaml, its intrinsic functions (``!Ref``, ``!GetAtt``...) read as None."""

    class Loader(yaml.SafeLoader):  # type: ignore[misc]
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    return dict(yaml.load(TEMPLATE.read_text(), Loader=Loader))


def runtime() -> tuple[str, str]:
    """(Python version, architecture) of the functions: ``("3.13", "x86_64")``."""
    function = template()["Globals"]["Function"]
    found = re.fullmatch(r"python(\d+\.\d+)", function["Runtime"])
    if found is None:
        raise ValueError(f"template.yaml: not a Python runtime: {function['Runtime']}")
    return found[1], function["Architectures"][0]


def runtime_images() -> list[str]:
    """The runtime's image under the names LocalStack and ``sam local`` ask for."""
    version, architecture = runtime()
    return [f"{LAMBDA_REPOSITORY}:{version}", f"{LAMBDA_REPOSITORY}:{version}-{architecture}"]


#: The compose service whose environment (endpoints on the compose network, role credentials)
#: the functions of each role get: the search API's, the upload path's.
ROLE_SERVICES = {"api": "api", "ingest": "dispatcher"}


def function_roles() -> dict[str, str]:
    """Each function of the template and its role (its ``CodeUri``: ``build/lambda/<role>/``)."""
    resources = template()["Resources"]
    return {
        name: Path(resource["Properties"]["CodeUri"]).name
        for name, resource in resources.items()
        if resource["Type"] == "AWS::Serverless::Function"
    }


@dataclass
class ComposeFunctions:
    """How the functions run beside a compose deployment: its network, and per role the
    environment of that role's service there."""

    network: str
    roles: dict[str, dict[str, str]]
    secrets: dict[str, str]  # the deployment's (the secrets service's)

    def env_vars(self) -> dict[str, dict[str, str]]:
        """``sam local --env-vars``: each function's role environment (SAM sets those of its
        variables the template declares)."""
        return {function: self.roles[role] for function, role in function_roles().items()}

    def parameters(self) -> dict[str, str]:
        """template.yaml's parameters for the functions deployed to the deployment's LocalStack:
        each role's endpoints and credentials as its service has them, S3 LocalStack's (the
        uploads bucket the template declares)."""
        api, ingest = self.roles["api"], self.roles["ingest"]
        return {
            "DatabaseUrl": api["FS_DATABASE_URL"],
            "DatabaseReplicas": api.get("FS_DATABASE_REPLICAS", ""),
            "IngestDatabaseUrl": ingest["FS_DATABASE_URL"],
            "S3EndpointUrl": LOCALSTACK_ON_NETWORK,
            "ModelServerAddress": api["FS_MODEL_SERVER_ADDRESS"],
            "KafkaBootstrap": ingest["FS_KAFKA_BOOTSTRAP"],
            "KafkaUsername": ingest["FS_KAFKA_USERNAME"],
            "KafkaPassword": ingest["FS_KAFKA_PASSWORD"],
            # LocalStack's community edition has no HTTP API: the functions' own URLs instead.
            "FunctionUrls": "true",
        }


def beside_compose(compose: list[str], secrets: dict[str, str]) -> ComposeFunctions:
    """Read from the deployment ``compose`` (the argv prefix naming its project) the service
    environments (``compose config``), their secrets given by ``secrets``
    (:func:`~stack.compose_cli.deployment_secrets`)."""
    config = compose_config(compose)
    roles = {}
    for role, service in ROLE_SERVICES.items():
        variables = config["services"][service]["environment"]  # `$$` as in the file
        roles[role] = resolve({k: v.replace("$$", "$") for k, v in variables.items()}, secrets)
    return ComposeFunctions(config["networks"]["default"]["name"], roles, secrets)


def sam_environment(settings: Settings, **extra: str) -> dict[str, str]:
    """The SAM CLI's process environment: no telemetry, a region, placeholder AWS credentials
    (the functions' own come from their settings)."""
    return {**os.environ, "SAM_CLI_TELEMETRY": "0", "AWS_DEFAULT_REGION": settings.storage.region,
            "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", **extra}  # fmt: skip


def sam(settings: Settings) -> Path:
    """The SAM CLI scripts/bootstrap.sh installs."""
    return settings.cache_dir / "bin" / "sam"


def sam_local(
    settings: Settings, command: str, env_file: Path, network: str, *args: str
) -> list[str]:
    """``sam local COMMAND ARGS`` on template.yaml (the artifacts of ``make lambda``), the
    runtime image as built here, the functions on ``network`` with ``env_file``'s settings."""
    return [
        str(sam(settings)), "local", command, *args, "--template", str(TEMPLATE),
        "--skip-pull-image", "--env-vars", str(env_file), "--docker-network", network,
    ]  # fmt: skip


def localstack(service: str, settings: Settings) -> Any:
    """A boto3 client of LocalStack's ``service`` on its published endpoint."""
    return boto3.client(  # type: ignore[call-overload]
        service, endpoint_url=settings.ingest.sqs_endpoint_url,
        region_name=settings.storage.region,
        aws_access_key_id="test", aws_secret_access_key="test",
    )  # fmt: skip


def deployed_function(name: str, settings: Settings) -> str:
    """The deployed name of the template's function ``name`` on LocalStack (the stack's
    prefix, a suffix)."""
    functions = localstack("lambda", settings).list_functions()["Functions"]
    [found] = [f["FunctionName"] for f in functions
               if f["FunctionName"].startswith(f"{STACK_NAME}-{name}-")]  # fmt: skip
    return str(found)


def url_functions() -> list[str]:
    """The functions template.yaml gives a function URL (``<function>Url``, FunctionUrls=true)."""
    resources = template()["Resources"].items()
    return [name.removesuffix("Url") for name, r in resources if r["Type"] == "AWS::Lambda::Url"]


def function_url(name: str, settings: Settings) -> tuple[str, str]:
    """Where the function URL of the template's function ``name`` on LocalStack answers: its
    published endpoint, and the ``Host`` header that routes there (the URL's host,
    ``<id>.lambda-url.<region>.localhost.localstack.cloud``, needs public DNS)."""
    function = deployed_function(name, settings)
    url = localstack("lambda", settings).get_function_url_config(FunctionName=function)
    return settings.ingest.sqs_endpoint_url, urlsplit(url["FunctionUrl"]).netloc


@contextmanager
def start_api(settings: Settings, env_file: Path, network: str) -> Iterator[str]:
    """``sam local start-api`` (each function's container started on its first request) on a
    free port until the block ends; its URL once it listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        sam_local(settings, "start-api", env_file, network, "--port", str(port),
                  "--warm-containers", "LAZY"),
        cwd=REPO_ROOT, env=sam_environment(settings), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise StackError("sam local start-api did not start") from None
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # SAM stops its containers
        process.wait(timeout=60)


def deploy(settings: Settings, functions: ComposeFunctions, **parameters: str) -> None:
    """``sam deploy`` of template.yaml (the artifacts of ``make lambda``) to LocalStack (its
    published endpoint), its parameters from ``functions`` (and ``parameters``)."""
    localstack("s3", settings).create_bucket(Bucket=ARTIFACTS_BUCKET)
    values = {**functions.parameters(), **parameters}
    overrides = [f"{key}={value}" for key, value in values.items()]
    run_checked(
        [str(sam(settings)), "deploy", "--template", str(TEMPLATE), "--stack-name", STACK_NAME,
         "--s3-bucket", ARTIFACTS_BUCKET, "--capabilities", "CAPABILITY_IAM",
         "--no-confirm-changeset", "--no-fail-on-empty-changeset",
         "--parameter-overrides", *overrides],
        "sam deploy", timeout_s=1200, cwd=REPO_ROOT,
        env=sam_environment(settings, AWS_ENDPOINT_URL=settings.ingest.sqs_endpoint_url),
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """``env``: write the functions' environment beside a compose deployment as ``sam local``'s
    --env-vars file and print what to pass ``sam local``; ``deploy``: deploy them to its
    LocalStack."""
    parser = argparse.ArgumentParser(prog="python -m stack.lambda_runtime", description=__doc__)
    parser.add_argument("-p", "--project", default="fashion-search", help="compose project name")
    commands = parser.add_subparsers(dest="command", required=True)
    env = commands.add_parser("env", help="write sam local's --env-vars for the project")
    env.add_argument("-o", "--output", type=Path, default=BUILD / "env.json")
    commands.add_parser("deploy", help="sam deploy template.yaml to the project's LocalStack")
    args = parser.parse_args(argv)
    settings = get_settings()
    compose = [*compose_command(settings), "-p", args.project, "-f", str(COMPOSE_FILE)]
    functions = beside_compose(compose, deployment_secrets(compose))
    if args.command == "deploy":
        deploy(settings, functions)
        print(f"deployed stack {STACK_NAME} to {settings.ingest.sqs_endpoint_url}")
        for name in url_functions():
            endpoint, host = function_url(name, settings)
            print(f"{name}: curl -H 'Host: {host}' -H 'X-API-Key: ...' {endpoint}/...")
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(functions.env_vars(), indent=2) + "\n")
    args.output.chmod(0o600)  # role credentials
    print(f"--env-vars {args.output} --docker-network {functions.network}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
