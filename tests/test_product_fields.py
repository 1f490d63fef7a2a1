"""One definition of a product's fields: a field added to it shows on every surface."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from fashion_search.settings import REPO_ROOT

DEFINITION = REPO_ROOT / "fashion_search" / "catalog" / "models.py"
USAGE_LINE = "    usage: Annotated[str | None, FILTERABLE] = None\n"
NEW_FIELD = "    material: Annotated[str | None, FILTERABLE] = None\n"

#: Run with the copy first on sys.path: every surface must show ``material``.
CHECKS = textwrap.dedent(
    """
    import inspect

    from fashion_search.catalog import filters, models, table
    from fashion_search.dataset import DATASET_COLUMNS
    from functions.api import parameters, schemas
    from functions.api.routes import graphql

    assert models.__file__.startswith(COPY), models.__file__
    assert "material" in models.ProductFields.model_fields
    assert "material" in models.METADATA_FIELDS and models.FILTER_FIELDS["material"] is str
    assert ("material", "text") in table.WRITE_COLUMNS
    assert '"material"' in table.READ_COLUMNS.as_string(None)
    where, params = filters.where_clause({"material": ["Silk", "Wool"]})
    assert params == {"f_material": ["Silk", "Wool"]}, params
    assert filters.FILTER_COLUMNS["material"] == "material"
    assert "material" in schemas.ProductOut.model_json_schema(by_alias=True)["properties"]
    assert "material" in inspect.signature(parameters.metadata_filters).parameters
    sdl = graphql.schema.as_str()
    product_type = sdl.split("type Product {", 1)[1].split("}", 1)[0]
    filter_input = sdl.split("input ProductFilter {", 1)[1].split("}", 1)[0]
    assert "material: String" in product_type, product_type
    assert "material: [String!]" in filter_input, filter_input
    assert "material" in DATASET_COLUMNS
    print("every surface has material")
    """
)


def _copy_with_field(tmp_path: Path, definition: str) -> Path:
    copy = tmp_path / "repo"
    for package in ("fashion_search", "functions"):
        shutil.copytree(
            REPO_ROOT / package, copy / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    (copy / "fashion_search" / "catalog" / "models.py").write_text(definition)
    return copy


def _run_checks(copy: Path) -> subprocess.CompletedProcess[str]:
    code = f"import sys\nsys.path.insert(0, {str(copy)!r})\nCOPY = {str(copy)!r}\n{CHECKS}"
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=copy, timeout=120
    )


def test_a_field_added_to_the_definition_shows_on_every_surface(tmp_path: Path) -> None:
    source = DEFINITION.read_text()
    assert source.count(USAGE_LINE) == 1
    copy = _copy_with_field(tmp_path, source.replace(USAGE_LINE, USAGE_LINE + NEW_FIELD))
    result = _run_checks(copy)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "every surface has material" in result.stdout


def test_the_checks_fail_without_the_field(tmp_path: Path) -> None:
    """The check above can fail: the unchanged definition has no ``material`` anywhere."""
    result = _run_checks(_copy_with_field(tmp_path, DEFINITION.read_text()))
    assert result.returncode != 0 and "AssertionError" in result.stderr
