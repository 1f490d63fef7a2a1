"""Each deployable role's entry points load only what its extra in pyproject.toml declares: no
torch, open_clip, streamlit or playwright where the role does not install them; the core
imports no role."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from fashion_search.settings import REPO_ROOT
from tests.helpers import free_port

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
#: Heavy modules that a role may load only when its extra installs their distribution.
GUARDED = {
    "torch": "torch",
    "open_clip": "open-clip-torch",
    "streamlit": "streamlit",
    "playwright": "playwright",
    "psycopg": "psycopg",
}
#: What every role's image runs too: its entrypoint (the service's secrets) and healthcheck.
IMAGE = "import stack.secrets, stack.apps\n"
#: The model server's modules, and what it imports when it starts serving (its metrics).
SERVE = "import model_server.__main__, model_server.service, fashion_search.telemetry.metrics"
#: Each role's entry points: what its processes and functions import and build when they start.
ENTRY_POINTS = {
    "api": IMAGE + "import functions.__main__\n"
    "import functions.handlers.health, functions.handlers.image_search\n"
    "import functions.handlers.metadata, functions.handlers.text_search\n"
    "from functions.api.app import create_app\n"
    "create_app()",
    "ingest": IMAGE + "import functions.events.__main__, functions.handlers.bucket_event",
    "serve": IMAGE + SERVE,
    "serve-gpu": IMAGE + SERVE,
    "setup": IMAGE + "import stack.__main__, stack.access, fashion_search.cli",
    "ui": IMAGE + "from streamlit.testing.v1 import AppTest\n"
    "AppTest.from_file('ui/app.py', default_timeout=60).run()",
    "train": "import fashion_search.cli, fashion_search.model.pipeline, model_server.commands\n"
    "import fashion_search.workflows.catalog, fashion_search.workflows.finetune\n"
    "import fashion_search.workflows.splits",
}


def distributions(role: str) -> set[str]:
    """The distributions a role's extra installs directly, its own extras' included."""
    extras = PYPROJECT["project"]["optional-dependencies"]
    names: set[str] = set()
    for requirement in extras[role]:
        name = re.split(r"[\[<>=~! ;]", requirement, maxsplit=1)[0]
        if name == PYPROJECT["project"]["name"]:
            inner = requirement[requirement.index("[") + 1 : requirement.index("]")]
            for extra in inner.split(","):
                names |= distributions(extra.strip())
        else:
            names.add(name)
    return names


def loaded_guarded_modules(code: str) -> set[str]:
    """The guarded modules in ``sys.modules`` after ``code`` ran in a fresh interpreter."""
    probe = (
        f"{code}\nimport json, sys\nprint(json.dumps(sorted(set(sys.modules) & {set(GUARDED)!r})))"
    )
    env = {"FS_API_URL": f"http://127.0.0.1:{free_port()}", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def locked_distributions(role: str) -> set[str]:
    """Every distribution that installing the role's extra from the lock file installs."""
    uv = shutil.which("uv") or str(Path.home() / ".local" / "bin" / "uv")
    if not Path(uv).exists():
        pytest.skip("uv is not installed (scripts/bootstrap.sh installs it)")
    result = subprocess.run(
        [uv, "export", "--frozen", "--no-dev", "--no-emit-project", "--no-hashes", "--extra", role],
        capture_output=True, text=True, cwd=REPO_ROOT, check=True,
    )  # fmt: skip
    lines = (line.strip() for line in result.stdout.splitlines())
    return {line.split("==")[0] for line in lines if line and not line.startswith("#")}


@pytest.mark.parametrize("role", sorted(PYPROJECT["project"]["optional-dependencies"]))
def test_a_role_installs_only_what_it_declares(role: str) -> None:
    declared = distributions(role)
    installed = locked_distributions(role)
    assert declared <= installed | {PYPROJECT["project"]["name"]}
    foreign = {dist for dist in GUARDED.values() if dist not in declared}
    assert not installed & foreign, f"{role} installs {sorted(installed & foreign)}"


#: Extras that are parts of roles, not roles: no process of their own.
PARTS = {"export", "serve-common", "telemetry", "telemetry-sql"}


def test_every_role_has_entry_points() -> None:
    assert set(ENTRY_POINTS) == set(PYPROJECT["project"]["optional-dependencies"]) - PARTS


def test_the_cpu_and_gpu_model_servers_differ_only_in_their_onnx_runtime() -> None:
    cpu, gpu = distributions("serve"), distributions("serve-gpu")
    assert cpu ^ gpu == {"onnxruntime", "onnxruntime-gpu"}
    assert "onnxruntime-gpu" not in locked_distributions("serve")
    assert "onnxruntime" not in locked_distributions("serve-gpu")


@pytest.mark.parametrize("role", sorted(ENTRY_POINTS))
def test_a_role_loads_only_what_it_declares(role: str) -> None:
    declared = distributions(role)
    allowed = {module for module, dist in GUARDED.items() if dist in declared}
    loaded = loaded_guarded_modules(ENTRY_POINTS[role])
    assert loaded <= allowed, f"{role} loads {sorted(loaded - allowed)} it does not declare"


#: The serve role at run time: the export in {folder} served, one text and one image embedded.
SERVE_AN_EXPORT = """
import io
from pathlib import Path
from PIL import Image
from fashion_search.model.registry import RegisteredVersion
from model_server.loader import ExportedModel
from model_server.model import ServedModel
image = io.BytesIO()
Image.new("RGB", (60, 80), "navy").save(image, "JPEG")
for variant in ("fp32", "int8"):
    exported = ExportedModel.read(Path({folder!r}), RegisteredVersion("t", "1", None, ""), variant)
    model = ServedModel(exported)
    assert model.embed_texts(["navy blue shirt"]).shape == (1, model.dimension)
    pixels = model.preprocess(image.getvalue(), 1_000_000)
    assert model.embed_pixels([pixels]).shape == (1, model.dimension)
"""


def test_serving_an_export_loads_only_what_serve_declares(tmp_path: Path) -> None:
    """Beyond its imports: the serve role embeds with an export (tokenizer.json, towers)."""
    from fashion_search.model.factory import ModelSpec, create_clip
    from model_server.export import export_clip

    export_clip(create_clip(ModelSpec("fashion-tiny")), tmp_path)
    declared = distributions("serve")
    allowed = {module for module, dist in GUARDED.items() if dist in declared}
    loaded = loaded_guarded_modules(SERVE_AN_EXPORT.format(folder=str(tmp_path)))
    assert loaded <= allowed, f"serve loads {sorted(loaded - allowed)} it does not declare"


#: The roles' packages: the core (``fashion_search/``) is given what it needs of them.
ROLE_PACKAGES = {"functions", "model_server"}


def role_imports(source: str) -> list[str]:
    """The modules of :data:`ROLE_PACKAGES` that ``source`` imports, at any depth (lazy imports
    inside functions and ``TYPE_CHECKING`` blocks included)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [name for name in names if name.split(".")[0] in ROLE_PACKAGES]
    return found


def test_the_core_imports_no_role() -> None:
    offending = {
        str(path.relative_to(REPO_ROOT)): imported
        for path in sorted((REPO_ROOT / "fashion_search").rglob("*.py"))
        if (imported := role_imports(path.read_text()))
    }
    assert not offending, offending


def test_the_import_check_sees_a_lazy_import() -> None:
    """The check above can fail: an import inside a function is found."""
    lazy = "def f():\n    from model_server.export import export_version\n    import functions\n"
    assert role_imports(lazy) == ["model_server.export", "functions"]
    assert role_imports("from fashion_search.settings import Settings\nimport functionsx") == []


def test_the_probe_sees_a_guarded_module() -> None:
    """The check above can fail: an entry point that imports a guarded module is caught."""
    assert "streamlit" in loaded_guarded_modules("import streamlit")
