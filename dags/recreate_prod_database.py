"""recreate_prod_database: (re)create the catalog schema, load the dataset (images to the object
store, each batch embedded through the model server, rows bulk-inserted with their
embeddings), then embed what is left (say, after the model server was unreachable).

Run conf: ``source`` (parquet path or hub id; default FS_DATASET_SOURCE), ``limit`` (rows;
default all), ``reset`` (drop the catalog first; default false). Idempotent and resumable.
The load updates the catalog asset (what ``retrain_on_new_data`` is scheduled on).
"""

from __future__ import annotations

from typing import Any

from _project import CATALOG_ASSET, DAG_DEFAULTS, PROJECT_PYTHON
from airflow.sdk import Param, dag, task


@dag(
    dag_id="recreate_prod_database",
    params={
        "source": Param(None, type=["null", "string"]),
        "limit": Param(None, type=["null", "integer"], minimum=1),
        "reset": Param(False, type="boolean"),
    },
    tags=["fashion-search", "catalog"],
    **DAG_DEFAULTS,
)
def recreate_prod_database() -> None:
    """Schema -> load (and embed) -> embed what is left."""

    @task.external_python(python=PROJECT_PYTHON, expect_airflow=False)
    def create_schema(reset: bool) -> dict[str, Any]:
        from fashion_search.settings import get_settings
        from fashion_search.workflows.catalog import create_schema

        return create_schema(get_settings(), reset=bool(reset))

    @task.external_python(python=PROJECT_PYTHON, expect_airflow=False, outlets=[CATALOG_ASSET])
    def load_products(source: str | None, limit: int | None) -> dict[str, Any]:
        from fashion_search.settings import get_settings
        from fashion_search.workflows.catalog import load_products

        settings = get_settings()
        return load_products(settings, source or settings.dataset_source, limit)

    @task.external_python(python=PROJECT_PYTHON, expect_airflow=False)
    def embed_products() -> dict[str, Any]:
        from fashion_search.settings import get_settings
        from fashion_search.workflows.catalog import embed_products

        return embed_products(get_settings())

    schema = create_schema(reset="{{ params.reset }}")
    loaded = load_products(source="{{ params.source }}", limit="{{ params.limit }}")
    schema >> loaded >> embed_products()


dag = recreate_prod_database()
