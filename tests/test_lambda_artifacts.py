"""The Lambda artifacts template.yaml deploys (``scripts/build_lambda.py``): built for the
runtime's Python (template.yaml's: 3.13) from the lock, one per role with that role's
dependencies only, each under Lambda's 250 MB unzipped limit, and every handler of the role
importable - and, for the HTTP ones, invocable - from the artifact alone in a clean interpreter.

Building both roles takes 10-20 s (2 cores; uv's cache warm, or empty: 211 MB of wheels from
PyPI, ~20 s), the whole module ~45 s. The clean interpreter is the runtime's CPython when this
machine has one (``uv python find``, PATH, pyenv); else the same roles are also built for this
interpreter's version and imported there, and the runtime's artifacts are only checked for
their binaries' tags. ``tests/test_functions_emulated.py`` runs them in the runtime's image.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fashion_search.settings import REPO_ROOT
from functions.local_invoke import FUNCTION_TYPE, load_template
from stack.lambda_runtime import runtime

pytestmark = pytest.mark.build

BUILD = REPO_ROOT / "scripts" / "build_lambda.py"
TEMPLATE = REPO_ROOT / "template.yaml"
RUNTIME = runtime()[0]
CPYTHON = "cp" + RUNTIME.replace(".", "")  # cp313
#: Lambda's limit on a function's unzipped code, as AWS defines 250 MB.
UNZIPPED_LIMIT = 262_144_000
#: Heavy dependencies of other roles (training, export, serving, UI, browser tests).
FOREIGN = ("torch", "open_clip", "streamlit", "playwright", "onnxruntime", "onnx", "mlflow",
           "datasets", "pyarrow", "tokenizers", "transformers")  # fmt: skip
#: Parts of the repository that are no function's code.
NOT_CODE = ("stack", "model_server", "ui", "tests", "bench", "dags")
#: Glibc of Lambda's Python runtimes (Amazon Linux 2023).
RUNTIME_GLIBC = (2, 34)

#: Run by the clean interpreter: import the handlers from the artifact alone (argv[1]), invoke
#: the HTTP ones on a route none of them has, and report what was loaded from where.
PROBE = r"""
import importlib, json, sys
artifact, handlers = sys.argv[1], sys.argv[2:]
sys.path.insert(0, artifact)
event = {"version": "2.0", "routeKey": "$default", "rawPath": "/artifact-probe",
         "rawQueryString": "", "headers": {"host": "probe"}, "isBase64Encoded": False,
         "requestContext": {"http": {"method": "GET", "path": "/artifact-probe",
                                     "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1",
                                     "userAgent": "probe"},
                            "stage": "$default", "requestId": "probe", "timeEpoch": 0}}
statuses = {}
for name in handlers:
    module, _, attribute = name.rpartition(".")
    handler = getattr(importlib.import_module(module), attribute)
    assert callable(handler), name
    if type(handler).__name__ == "Mangum":
        statuses[name] = handler(event, None)["statusCode"]
    elif module.endswith(".authorizer"):  # a request without a key is refused at once
        statuses[name] = handler(event, None)["isAuthorized"]
import psycopg
files = {n: getattr(m, "__file__", None) or "" for n, m in list(sys.modules.items())}
print(json.dumps({
    "version": "%d.%d" % sys.version_info[:2],
    "statuses": statuses,
    "psycopg": psycopg.pq.__impl__,
    "outside": sorted(n for n, f in files.items()
                      if f and not f.startswith((artifact, sys.base_prefix))),
    "extensions": sorted(n for n, f in files.items() if f.endswith(".so")),
}))
"""


@dataclass(frozen=True)
class Built:
    """An artifact as the build script reported it."""

    role: str
    path: Path
    python: str
    unzipped_bytes: int
    distributions: int


def role_handlers() -> dict[str, list[str]]:
    """Handlers of template.yaml by role, read from their ``CodeUri: build/lambda/<role>/``."""
    template = load_template(TEMPLATE)
    roles: dict[str, list[str]] = defaultdict(list)
    for resource in template["Resources"].values():
        if resource["Type"] == FUNCTION_TYPE:
            props = resource["Properties"]
            match = re.fullmatch(r"build/lambda/(\w+)/?", props["CodeUri"])
            assert match, props["CodeUri"]
            roles[match.group(1)].append(props["Handler"])
    return dict(roles)


def build(out: Path, python: str) -> dict[str, Built]:
    roles = sorted(role_handlers())
    result = subprocess.run(
        [sys.executable, str(BUILD), *roles, "--python", python, "--out", str(out), "--no-zip"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    print(result.stdout)
    report = json.loads((out / "sizes.json").read_text())
    return {
        r["role"]: Built(
            r["role"], Path(r["path"]), r["python"], r["unzipped_bytes"], r["distributions"]
        )
        for r in report
    }


def interpreter_version(python: str) -> str | None:
    try:
        result = subprocess.run(
            [python, "-I", "-S", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    except OSError:
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def find_python(version: str) -> str | None:
    """A CPython ``version`` on this machine (none downloaded)."""
    candidates: list[str] = []
    uv = shutil.which("uv") or str(Path.home() / ".local/bin/uv")
    if Path(uv).is_file():
        found = subprocess.run(
            [uv, "python", "find", "--no-python-downloads", "--no-project", version],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        candidates += found.stdout.split()
    candidates += filter(None, [shutil.which(f"python{version}")])
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates += sorted(str(p) for p in pyenv.glob(f"versions/{version}*/bin/python{version}"))
    candidates += [f"/usr/local/bin/python{version}", f"/usr/bin/python{version}"]
    return next((c for c in candidates if interpreter_version(c) == version), None)


def probe(python: str, artifact: Path, handlers: list[str], cwd: Path) -> dict[str, Any]:
    """Run PROBE in ``python -I -S`` (no site-packages, no PYTHONPATH, no user site) from an
    empty folder, with a bare environment."""
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(cwd)}
    result = subprocess.run(
        [python, "-I", "-S", "-c", PROBE, str(artifact), *handlers],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    return report


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Built]:
    """Every role of template.yaml built for the runtime."""
    return build(tmp_path_factory.mktemp("lambda-runtime"), RUNTIME)


@pytest.fixture(scope="session")
def importable(
    artifacts: dict[str, Built], tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, dict[str, Built]]:
    """(interpreter, artifacts it can load): the runtime's CPython and its artifacts, or
    this interpreter's version and artifacts built for it."""
    python = find_python(RUNTIME)
    if python is not None:
        return python, artifacts
    version = "{}.{}".format(*sys.version_info[:2])
    python = find_python(version) or sys.executable
    return python, build(tmp_path_factory.mktemp(f"lambda-{version}"), version)


def test_template_roles_are_the_search_and_bucket_event_artifacts() -> None:
    handlers = role_handlers()
    assert set(handlers) == {"api", "ingest"}
    assert handlers["ingest"] == ["functions.handlers.bucket_event.handler"]
    assert len(handlers["api"]) == 5  # the search API's four and its key authorizer
    assert "functions.handlers.authorizer.handler" in handlers["api"]


def test_artifacts_fit_lambdas_unzipped_limit(artifacts: dict[str, Built]) -> None:
    for built in artifacts.values():
        measured = sum(p.stat().st_size for p in built.path.rglob("*") if p.is_file())
        assert measured == built.unzipped_bytes
        assert built.python == RUNTIME
        assert measured < UNZIPPED_LIMIT, f"{built.role}: {measured:,} bytes"


def test_artifacts_hold_their_role_only(artifacts: dict[str, Built]) -> None:
    for built in artifacts.values():
        top = {p.name.split("-")[0].lower() for p in built.path.iterdir()}
        assert not top & {*FOREIGN, *NOT_CODE}, built.role
        assert {"fashion_search", "functions"} <= top
        assert (built.path / "fashion_search/rpc/embedding_pb2_grpc.py").is_file()
        assert not list(built.path.rglob("__pycache__")), built.role
        exported = {
            line.split("==")[0].replace("-", "_").lower()
            for line in (built.path.parent / f"{built.role}.requirements.txt").read_text().split()
            if "==" in line
        }
        installed = {
            p.name.split("-")[0].lower() for p in built.path.glob("*.dist-info")
        }  # fmt: skip
        assert installed <= exported and len(installed) == built.distributions
    api, ingest = (artifacts[r].path for r in ("api", "ingest"))
    assert (api / "fastapi").is_dir() and not (api / "confluent_kafka").exists()
    assert (ingest / "confluent_kafka").is_dir() and not (ingest / "fastapi").exists()


def _glibc(platform_tag: str) -> tuple[int, int] | None:
    legacy = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
    if match := re.fullmatch(r"manylinux_(\d+)_(\d+)_x86_64", platform_tag):
        return int(match.group(1)), int(match.group(2))
    name, _, arch = platform_tag.partition("_")
    return legacy.get(name) if arch == "x86_64" else None


def _runs_on_the_runtime(tag: str) -> bool:
    python, abi, platform = tag.split("-")
    if platform == "any":
        return abi == "none" and python.startswith(("py3", "py2.py3", "cp3"))
    glibc = _glibc(platform)
    if glibc is None or glibc > RUNTIME_GLIBC:
        return False
    if abi == "abi3":
        return bool(re.fullmatch(r"cp3\d+", python)) and int(python[3:]) <= int(CPYTHON[3:])
    return python == abi == CPYTHON


def test_binaries_are_built_for_the_runtime(artifacts: dict[str, Built]) -> None:
    """Every wheel has a tag the runtime accepts (its CPython or abi3, x86_64, glibc <= 2.34)
    and every extension module is its CPython's or the stable ABI's."""
    for built in artifacts.values():
        for wheel in built.path.glob("*.dist-info/WHEEL"):
            tags = [line.split(": ", 1)[1] for line in wheel.read_text().splitlines()
                    if line.startswith("Tag: ")]  # fmt: skip
            assert any(_runs_on_the_runtime(t) for t in tags), (wheel.parent.name, tags)
        extensions = [p.name for p in built.path.rglob("*.so") if ".cpython-" in p.name]
        assert extensions, built.role
        for name in extensions:
            assert name.endswith(f".cpython-{CPYTHON[2:]}-x86_64-linux-gnu.so"), (built.role, name)


def test_handlers_import_from_the_artifact_alone(
    importable: tuple[str, dict[str, Built]], tmp_path: Path
) -> None:
    python, built = importable
    for role, handlers in role_handlers().items():
        report = probe(python, built[role].path, handlers, tmp_path)
        print(role, built[role].python, python, report)
        assert report["version"] == built[role].python
        assert report["outside"] == [], role  # nothing from this checkout or its .venv
        assert report["psycopg"] == "binary"  # libpq comes with the artifact, not the system
        loaded = {name.split(".")[0] for name in report["extensions"]}
        assert not loaded & set(FOREIGN)
        if role == "api":
            expected: dict[str, Any] = dict.fromkeys(handlers, 404)  # Mangum -> FastAPI
            expected["functions.handlers.authorizer.handler"] = False
            assert report["statuses"] == expected
            assert {"pydantic_core", "grpc", "numpy"} <= loaded
        else:
            assert {"confluent_kafka", "PIL", "grpc", "numpy"} <= loaded
