"""Build the Lambda artifacts of template.yaml: one folder per role, with that role's locked
dependencies only, for template.yaml's Lambda runtime (python3.13 on x86_64, Amazon Linux 2023).

    python scripts/build_lambda.py                      # api and ingest into build/lambda/
    python scripts/build_lambda.py api --python 3.11 --out /tmp/lambda

For each role R (an extra of pyproject.toml):

1. ``uv export --frozen --no-dev --no-emit-project --extra R``: the role's closure, pinned as
   in uv.lock, written to ``OUT/R.requirements.txt``;
2. ``uv pip install --target OUT/R --no-deps --only-binary :all:`` with the runtime's Python
   version and platform (``x86_64-manylinux_2_34``: Amazon Linux 2023's glibc 2.34), so binary
   wheels are the runtime's whatever Python runs this script;
3. the project's packages the handlers import (``fashion_search``, with its generated gRPC
   stubs, and ``functions``); console scripts (``bin/``) and ``__pycache__`` are dropped;
4. ``OUT/R.zip``, and the sizes Lambda checks (unzipped: the sum of the files' sizes; at most
   262,144,000 bytes) in ``OUT/sizes.json``.

``template.yaml`` points each function's ``CodeUri`` at ``build/lambda/<role>/``; ``sam deploy``
(or ``sam package``) zips and uploads those folders as they are, no ``sam build`` needed.
Exits 1 when an artifact is over the limit. Only the standard library: any Python 3.11+ runs it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
#: The Lambda runtime of template.yaml (Globals.Function.Runtime) and its platform.
PYTHON_VERSION = re.findall(
    r"^\s+Runtime: python(\S+)", (REPO_ROOT / "template.yaml").read_text(), re.M
)[0]
PLATFORM = "x86_64-manylinux_2_34"
#: The project's packages in every artifact: the handlers (functions/) and what they import.
PROJECT_PACKAGES = ("fashion_search", "functions")
#: Generated into fashion_search/rpc/ by scripts/gen_proto.sh (gitignored).
GENERATED = ("fashion_search/rpc/embedding_pb2.py", "fashion_search/rpc/embedding_pb2_grpc.py")
#: Lambda's limit on a function's unzipped code (with its layers), in bytes.
UNZIPPED_LIMIT = 262_144_000
DEFAULT_ROLES = ("api", "ingest")


def find_uv() -> str:
    """The uv binary: $UV, on PATH, or where scripts/bootstrap.sh installs it."""
    for candidate in (os.environ.get("UV"), shutil.which("uv"), Path.home() / ".local/bin/uv"):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    sys.exit("build_lambda: uv not found (scripts/bootstrap.sh installs it)")


def run(argv: list[str], cwd: Path) -> None:
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"build_lambda: {' '.join(argv[:3])} failed:\n{result.stdout}{result.stderr}")


def ensure_generated() -> None:
    """The gRPC stubs the embedding client imports (scripts/gen_proto.sh when missing)."""
    if all((REPO_ROOT / path).is_file() for path in GENERATED):
        return
    run([str(REPO_ROOT / "scripts" / "gen_proto.sh")], REPO_ROOT)


def copy_project(target: Path) -> None:
    """The project's packages, without caches or docs."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.md")
    for package in PROJECT_PACKAGES:
        shutil.copytree(REPO_ROOT / package, target / package, ignore=ignore)


def strip(target: Path) -> None:
    """Drop what the runtime never reads: console scripts and bytecode caches."""
    shutil.rmtree(target / "bin", ignore_errors=True)
    for cache in sorted(target.rglob("__pycache__"), reverse=True):
        shutil.rmtree(cache)


def zip_folder(folder: Path, archive: Path) -> tuple[int, int]:
    """Zip ``folder``'s files (deflated, paths relative to it); (unzipped, zipped) bytes."""
    archive.unlink(missing_ok=True)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            zf.write(path, path.relative_to(folder).as_posix())
    with zipfile.ZipFile(archive) as zf:
        unzipped = sum(info.file_size for info in zf.infolist())
    return unzipped, archive.stat().st_size


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@dataclasses.dataclass
class Artifact:
    """A built artifact and its sizes (bytes; ``zipped_bytes`` 0 when not zipped)."""

    role: str
    python: str
    platform: str
    path: str
    distributions: int
    unzipped_bytes: int
    zipped_bytes: int = 0
    build_s: float = 0.0

    def line(self) -> str:
        zipped = f", {self.zipped_bytes / 1e6:.1f} MB zipped" if self.zipped_bytes else ""
        verdict = "ok" if self.unzipped_bytes < UNZIPPED_LIMIT else "OVER Lambda's limit"
        return (
            f"{self.role}: {self.path} (python{self.python}, {self.platform}):"
            f" {self.distributions} distributions, {self.unzipped_bytes / 1e6:.1f} MB"
            f" ({self.unzipped_bytes:,} bytes) unzipped{zipped}; {verdict}; {self.build_s} s"
        )


def build_role(
    uv: str, role: str, out: Path, python_version: str, platform: str, make_zip: bool
) -> Artifact:
    """Build ``out/role``; its size report."""
    started = time.monotonic()
    requirements = out / f"{role}.requirements.txt"
    run([uv, "export", "--frozen", "--no-dev", "--no-emit-project", "--extra", role,
         "--format", "requirements.txt", "--no-hashes", "--no-header", "--quiet",
         "--output-file", str(requirements)], REPO_ROOT)  # fmt: skip
    target = out / role
    shutil.rmtree(target, ignore_errors=True)
    # Outside the project, so its [tool.uv] settings (compile-bytecode: with the interpreter
    # running uv, not the runtime's) do not apply; the user's uv.toml (indexes) still does.
    with tempfile.TemporaryDirectory() as cwd:
        run([uv, "pip", "install", "--quiet", "--target", str(target), "--no-deps",
             "--only-binary", ":all:", "--python-version", python_version,
             "--python-platform", platform, "--no-python-downloads", "--link-mode", "copy",
             "-r", str(requirements)], Path(cwd))  # fmt: skip
    copy_project(target)
    strip(target)
    artifact = Artifact(
        role=role,
        python=python_version,
        platform=platform,
        path=str(target),
        distributions=len(list(target.glob("*.dist-info"))),
        unzipped_bytes=folder_bytes(target),
    )
    if make_zip:
        artifact.unzipped_bytes, artifact.zipped_bytes = zip_folder(target, out / f"{role}.zip")
    artifact.build_s = round(time.monotonic() - started, 1)
    return artifact


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/build_lambda.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("roles", nargs="*", default=list(DEFAULT_ROLES), help="extras to build")
    parser.add_argument("--python", default=PYTHON_VERSION, help="runtime's Python version")
    parser.add_argument("--platform", default=PLATFORM, help="uv's --python-platform")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "build" / "lambda")
    parser.add_argument("--no-zip", action="store_true", help="folders only, no zip sizes")
    args = parser.parse_args(argv)
    uv = find_uv()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    ensure_generated()
    artifacts = []
    for role in args.roles:
        artifacts.append(build_role(uv, role, out, args.python, args.platform, not args.no_zip))
        print(artifacts[-1].line(), flush=True)
    report = [dataclasses.asdict(a) for a in artifacts]
    (out / "sizes.json").write_text(json.dumps(report, indent=2) + "\n")
    return 1 if any(a.unzipped_bytes >= UNZIPPED_LIMIT for a in artifacts) else 0


if __name__ == "__main__":
    sys.exit(main())
