"""The ``python -m stack`` command line: arguments and the status table."""

from __future__ import annotations

import pytest

from fashion_search.settings import Settings
from stack.__main__ import main


def test_unknown_service_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["down", "redis"])
    assert exit_info.value.code == 2
    assert "unknown service 'redis'" in capsys.readouterr().err


def test_status_names_every_running_implementation(
    stack_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    for role in ("postgres", "kafka", "s3", "mlflow", "localstack"):
        assert any(line.startswith(role) and "running" in line for line in out.splitlines())
    assert "PostgreSQL 18 + pgvector" in out
