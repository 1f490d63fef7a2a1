"""The README's commands work as written: the safe ones run against the test stack (the API on
the test catalog in place of ``make up``'s), the others are checked by their own programs'
argument parsers; ``make`` targets exist."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from fashion_search.settings import REPO_ROOT, Settings
from stack.process import ManagedProcess
from tests.helpers import jpeg

README = REPO_ROOT / "README.md"
MAKE_UP_API = "http://127.0.0.1:18000"


def readme_commands() -> list[list[str]]:
    """Every command of the README's ``bash`` blocks, as argv (comments dropped, continued and
    multi-line quoted arguments joined)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        buffer = ""
        for line in block.splitlines():
            buffer = f"{buffer}\n{line}" if buffer else line
            if buffer.endswith("\\"):
                buffer = buffer[:-1]
                continue
            try:
                argv = shlex.split(buffer, comments=True)
            except ValueError:  # a quoted argument goes on on the next line
                continue
            buffer = ""
            if argv:
                commands.append(argv)
    return commands


COMMANDS = readme_commands()


def _of(program: str) -> list[list[str]]:
    return [argv for argv in COMMANDS if argv[0] == program]


def _python_module(module: str) -> list[list[str]]:
    return [a[3:] for a in COMMANDS if a[:3] == [".venv/bin/python", "-m", module]]


def test_the_readme_starts_with_the_two_set_up_commands() -> None:
    assert COMMANDS[:2] == [["make", "up"], ["make", "test"]]
    programs = {argv[0] for argv in COMMANDS}
    assert programs <= {"make", "curl", ".venv/bin/fashion-search", ".venv/bin/python"}, programs


def test_make_targets_exist() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    for argv in _of("make"):
        assert re.search(rf"^{re.escape(argv[1])}:", makefile, re.M), argv


def test_cli_commands_parse() -> None:
    from fashion_search.cli import build_parser

    commands = _of(".venv/bin/fashion-search")
    assert len(commands) >= 5
    for argv in commands:
        build_parser().parse_args(argv[1:])  # exits (SystemExit) on a command it does not take


def test_module_commands_parse() -> None:
    from functions.events.__main__ import build_parser as events_parser
    from model_server.commands import build_parser as model_server_parser
    from stack.airflow import build_parser as airflow_parser

    for module, parser in (
        ("stack.airflow", airflow_parser),
        ("functions.events", events_parser),
        ("model_server", model_server_parser),
    ):
        assert _python_module(module), module
        for argv in _python_module(module):
            parser().parse_args(argv)


def test_uv_is_found_without_it_on_path(tmp_path: Path) -> None:
    """``stack.airflow`` and the stack's installs find the uv that bootstrap.sh put in
    ``~/.local/bin`` from a new shell whose PATH lacks it."""
    if not (Path.home() / ".local" / "bin" / "uv").exists():
        pytest.skip("uv is not in ~/.local/bin on this machine")
    result = subprocess.run(
        [sys.executable, "-c", "from stack.service import require_tool; print(require_tool('uv'))"],
        capture_output=True, text=True, cwd=REPO_ROOT, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(Path.home() / ".local" / "bin" / "uv")


def test_curl_commands_answer(
    api_server: ManagedProcess, search_settings: Settings, tmp_path: Path
) -> None:
    from fashion_search.catalog.db import create_pool
    from fashion_search.catalog.repositories import Catalog

    with create_pool(search_settings) as pool:
        product = Catalog.of(pool).products.list_products(limit=1).items[0]
    (tmp_path / "photo.jpg").write_bytes(jpeg(60, 80))
    commands = _of("curl")
    assert len(commands) >= 6
    for argv in commands:
        args = [
            a.replace(MAKE_UP_API, search_settings.search.api_url).replace("<id>", str(product.id))
            for a in argv[1:]
        ]
        result = subprocess.run(
            ["curl", "--fail-with-body", "-sS", *args],
            capture_output=True, text=True, cwd=tmp_path, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, (argv, result.stdout[-500:], result.stderr)
        body = json.loads(result.stdout)
        assert body and "errors" not in body, (argv, body)
