"""Invoke a function of template.yaml in-process, as ``sam local invoke`` would in Docker.

    python -m functions.local_invoke TextSearchFunction --event events/text_search.json
    python -m functions.local_invoke TextSearchFunction --path /search/text --query q=shirt
    python -m functions.local_invoke HealthFunction            # first HttpApi event, generated

Reads the template, finds the function's handler (``Handler``, ``Globals`` included) and
environment, builds the event (a file, or API Gateway HTTP API v2 / S3 events generated from the
function's own triggers), calls ``handler(event, context)`` and prints the result as JSON.

The handler runs from this checkout's source in this environment: the function's ``CodeUri`` is
its deployable artifact (``scripts/build_lambda.py``: the role's dependencies built for the
Lambda runtime's Python, which this interpreter may not be able to load), and
``tests/test_lambda_artifacts.py`` imports the handlers from it.
"""

from __future__ import annotations

import argparse
import base64
import importlib
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import yaml

from fashion_search.errors import FashionSearchError
from fashion_search.settings import REPO_ROOT

FUNCTION_TYPE = "AWS::Serverless::Function"


class TemplateError(FashionSearchError):
    """The template has no such function, or the function cannot be loaded."""


class _CfnLoader(yaml.SafeLoader):
    """YAML loader that reads CloudFormation short tags (!Ref, !Sub, ...) as ``{"Fn::X": v}``."""


def _cfn_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


@dataclass(frozen=True)
class FunctionSpec:
    """A function as the template declares it."""

    name: str
    handler: str
    code_dir: Path  # the handler's source: the template's checkout
    code_uri: Path  # the deployable artifact (CodeUri)
    environment: dict[str, str]
    events: dict[str, dict[str, Any]] = field(default_factory=dict)


def load_template(path: Path) -> dict[str, Any]:
    """The template as plain data (intrinsic functions as ``{"Fn::X": ...}``)."""
    data = yaml.load(path.read_text(), Loader=_CfnLoader)  # a SafeLoader subclass
    if not isinstance(data, dict):
        raise TemplateError(f"{path} is not a template")
    return data


def function_spec(template_path: Path, name: str) -> FunctionSpec:
    """The function ``name`` of the template, with Globals.Function applied."""
    template = load_template(template_path)
    resources = template.get("Resources", {})
    functions = sorted(n for n, r in resources.items() if r.get("Type") == FUNCTION_TYPE)
    if name not in functions:
        raise TemplateError(f"no function {name!r} in {template_path}; functions: {functions}")
    defaults = template.get("Globals", {}).get("Function", {})
    props = {**defaults, **resources[name].get("Properties", {})}
    if "Handler" not in props:
        raise TemplateError(f"function {name} has no Handler")
    parameters = {
        name: str(spec.get("Default", "")) for name, spec in template.get("Parameters", {}).items()
    }
    variables = {
        **defaults.get("Environment", {}).get("Variables", {}),
        **props.get("Environment", {}).get("Variables", {}),
    }
    # A Ref to a parameter is its default; other intrinsics (and pseudo parameters) are only
    # resolved on AWS: empty here.
    environment = {
        key: (parameters.get(value.get("Ref", ""), "") if isinstance(value, dict) else str(value))
        for key, value in variables.items()
    }
    return FunctionSpec(
        name=name,
        handler=props["Handler"],
        code_dir=template_path.parent.resolve(),
        code_uri=(template_path.parent / str(props.get("CodeUri", "."))).resolve(),
        environment=environment,
        events=props.get("Events", {}),
    )


def load_handler(spec: FunctionSpec) -> Callable[[dict[str, Any], Any], Any]:
    """Import ``module.attribute`` of the handler from the function's code directory."""
    module_name, _, attribute = spec.handler.rpartition(".")
    if str(spec.code_dir) not in sys.path:
        sys.path.insert(0, str(spec.code_dir))
    try:
        handler = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise TemplateError(f"cannot load handler {spec.handler}: {error}") from error
    if not callable(handler):
        raise TemplateError(f"handler {spec.handler} is not callable")
    return handler  # type: ignore[no-any-return]


def http_event(
    method: str,
    path: str,
    query: str = "",
    body: bytes | None = None,
    content_type: str = "application/json",
) -> dict[str, Any]:
    """An API Gateway HTTP API (payload 2.0) event."""
    now = time.time()
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": {"host": "localhost", "content-type": content_type},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": "localhost",
            "http": {
                "method": method.upper(),
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "local-invoke",
            },
            "requestId": uuid.uuid4().hex,
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": False,
    }
    if query:
        event["queryStringParameters"] = dict(parse_qsl(query, keep_blank_values=True))
    if body is not None:
        event["body"] = base64.b64encode(body).decode()
        event["isBase64Encoded"] = True
    return event


def s3_event(bucket: str, key: str, etag: str = "", size: int = 0) -> dict[str, Any]:
    """An S3 ObjectCreated:Put notification with one record."""
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "bucket": {"name": bucket},
                    "object": {"key": key, "size": size, "eTag": etag},
                },
            }
        ]
    }


def generated_event(spec: FunctionSpec, args: argparse.Namespace) -> dict[str, Any]:
    """An event for the function's first trigger, completed by the command-line options."""
    for trigger in spec.events.values():
        kind, props = trigger.get("Type"), trigger.get("Properties", {})
        if kind in ("HttpApi", "Api"):
            body = args.body.encode() if args.body is not None else None
            return http_event(
                args.method or props.get("Method", "GET"),
                args.path or str(props.get("Path", "/")).replace("{proxy+}", ""),
                args.query or "",
                body,
            )
        if kind in ("S3", "SQS"):
            if not args.key:
                raise TemplateError(f"an {kind}-triggered function needs --key (and --bucket)")
            event = s3_event(args.bucket or "fashion-uploads", args.key)
            return event if kind == "S3" else sqs_event([json.dumps(event)])
    raise TemplateError(f"{spec.name} has no HttpApi, S3 or SQS event to generate; pass --event")


def sqs_event(bodies: list[str]) -> dict[str, Any]:
    """An SQS event-source event with one record per message body."""
    return {
        "Records": [
            {
                "messageId": str(uuid.uuid4()),
                "receiptHandle": "local-invoke",
                "body": body,
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:fashion-uploads-events",
                "awsRegion": "us-east-1",
            }
            for body in bodies
        ]
    }


@dataclass
class LambdaContext:
    """The attributes of Lambda's context object that handlers use."""

    function_name: str
    memory_limit_in_mb: int = 1024
    timeout_s: float = 30.0
    aws_request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    started: float = field(default_factory=time.monotonic)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.timeout_s - (time.monotonic() - self.started)) * 1000))


def invoke(
    template_path: Path, name: str, event: dict[str, Any], environment: dict[str, str] | None = None
) -> Any:
    """Run the function's handler on ``event``. The template's environment variables (``Ref``s
    to parameters resolved to their defaults) apply unless this process already sets them; an
    empty one (on AWS: the default S3 endpoint, the role's credentials) leaves this machine's
    setting."""
    spec = function_spec(template_path, name)
    for key, value in {**spec.environment, **(environment or {})}.items():
        if value:
            os.environ.setdefault(key, value)
    handler = load_handler(spec)
    return handler(event, LambdaContext(name))


def build_parser() -> argparse.ArgumentParser:
    """The command line: see the module docstring."""
    parser = argparse.ArgumentParser(
        prog="python -m functions.local_invoke",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("function", help="logical id of the function in the template")
    parser.add_argument("--template", type=Path, default=REPO_ROOT / "template.yaml")
    parser.add_argument("--event", type=Path, help="event JSON file ('-' for stdin)")
    parser.add_argument("--method", help="HTTP method of a generated HTTP event")
    parser.add_argument("--path", help="path of a generated HTTP event")
    parser.add_argument("--query", help="query string of a generated HTTP event (a=1&b=2)")
    parser.add_argument("--body", help="body of a generated HTTP event")
    parser.add_argument("--bucket", help="bucket of a generated S3 event")
    parser.add_argument("--key", help="object key of a generated S3 event")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    args = build_parser().parse_args(argv)
    try:
        spec = function_spec(args.template, args.function)
        if args.event is not None:
            text = sys.stdin.read() if str(args.event) == "-" else args.event.read_text()
            event = json.loads(text)
        else:
            event = generated_event(spec, args)
        result = invoke(args.template, args.function, event)
    except (FashionSearchError, OSError, json.JSONDecodeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
