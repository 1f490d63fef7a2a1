"""template.yaml (AWS SAM) passes cfn-lint, and mirrors the LocalStack init resources."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fashion_search.settings import REPO_ROOT

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
