"""``python -m functions.local_invoke``: functions of template.yaml invoked in-process with event
files and generated events, against the real catalog and model server (what ``sam local
invoke`` does in Docker)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fashion_search.settings import REPO_ROOT, Settings
from functions.local_invoke import function_spec, generated_event
from tests.helpers import child_env

EVENTS = REPO_ROOT / "events"


def invoke(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "functions.local_invoke", *args],
        capture_output=True, text=True, env=child_env(settings), cwd=REPO_ROOT, timeout=120,
    )  # fmt: skip


def response(result: subprocess.CompletedProcess[str]) -> tuple[int, Any]:
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    return payload["statusCode"], json.loads(payload["body"])


@pytest.mark.parametrize(
    ("function", "event", "check"),
    [
        ("HealthFunction", "health", lambda b: b["ok"] and b["catalog"]["products"] == 300),
        ("TextSearchFunction", "text_search_get",
         lambda b: len(b["hits"]) == 5 and all(h["gender"] == "Men" for h in b["hits"])),
        ("TextSearchFunction", "text_search_post",
         lambda b: all(h["masterCategory"] == "Accessories" for h in b["hits"])),
        ("ImageSearchFunction", "image_search_key", lambda b: b["hits"][0]["id"] == 15970),
        ("MetadataFunction", "product_get", lambda b: b["baseColour"] == "Navy Blue"),
        ("MetadataFunction", "graphql_products",
         lambda b: len(b["data"]["products"]["edges"]) == 3),
    ],
)  # fmt: skip
def test_sample_events(search_settings: Settings, function: str, event: str, check: Any) -> None:
    status, body = response(invoke(search_settings, function, "--event", f"events/{event}.json"))
    assert status == 200, body
    assert check(body), body


def test_generated_http_event(search_settings: Settings) -> None:
    result = invoke(search_settings, "TextSearchFunction", "--query", "q=watch&k=2&gender=Women")
    status, body = response(result)
    assert status == 200 and len(body["hits"]) == 2
    assert all(h["gender"] == "Women" for h in body["hits"])
    status, body = response(invoke(search_settings, "TextSearchFunction", "--query", "q=&k=2"))
    assert status == 422 and "at least 1 character" in json.dumps(body)


def test_generated_events_follow_the_template_triggers() -> None:
    spec = function_spec(REPO_ROOT / "template.yaml", "MetadataFunction")
    args = type("Args", (), {"method": None, "path": None, "query": None, "body": None})()
    event = generated_event(spec, args)  # type: ignore[arg-type]
    assert event["requestContext"]["http"] == {**event["requestContext"]["http"],
                                               "method": "GET", "path": "/graphql"}  # fmt: skip


def test_invoker_errors_are_clear(search_settings: Settings, tmp_path: Path) -> None:
    result = invoke(search_settings, "NoSuchFunction")
    assert result.returncode == 2 and "no function 'NoSuchFunction'" in result.stderr
    bad = tmp_path / "event.json"
    bad.write_text("{not json")
    result = invoke(search_settings, "HealthFunction", "--event", str(bad))
    assert result.returncode == 2 and "error:" in result.stderr
