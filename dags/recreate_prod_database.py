"""recreate_prod_database: (re)create the catalog schema, load the dataset (images to the object
store, each batch embedded through the model server, rows bulk-inserted with their
embeddings), then embed what is left (say, after the model server was unreachable).

The load and the embedding run as mapped tasks (``FS_DATABASE__SHARDS`` of each): the load by
ranges of dataset rows, the embedding by shards of product ids; each can run on any worker
against any model-server replica. Into an empty catalog the rows go without the HNSW index,
which the teardown task builds once at the end, whatever happened before.

Run conf: ``source`` (parquet path or hub id; default FS_DATASET_SOURCE), ``limit`` (rows;
default all), ``reset`` (drop the catalog first; default false). Idempotent and resumable.
The load updates the catalog asset (what ``retrain_on_new_data`` is scheduled on).
"""

from __future__ import annotations

from typing import Any

from _project import CATALOG_ASSET, CATALOG_SHARDS, DAG_DEFAULTS, PROJECT_PYTHON
from _tasks import items_of
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
    """Schema -> plan -> load parts (and embed) -> embed shards of what is left -> index."""

    @task.external_python(python=PROJECT_PYTHON, expect_airflow=False)
    def create_schema(reset: bool) -> dict[str, Any]:
        from dataclasses import asdict

        from fashion_search.settings import get_settings
        from fashion_search.workflows.catalog import create_schema

        return asdict(create_schema(get_settings(), reset=bool(reset)))

    @task.external_python(python=PROJECT_PYTHON, expect_airflow=False)
    def plan_load(source: str | None, limit: int | None) -> dict[str, Any]:
        from dataclasses import asdict

        from fashion_search.settings import get_settings
        from fashion_search.workflows.catalog import plan_load

        settings = get_settings()
        return asdict(
            plan_load(settings, source or settings.dataset_source, limit, settings.database.shards)
        )

    @task.external_python(python=PROJECT_PYTHON, expect_airflow=False, outlets=[CATALOG_ASSET])
    def load_part(source: str | None, offset: int, limit: int | None) -> dict[str, Any]:
        from dataclasses import asdict

        from fashion_search.settings import get_settings
        from fashion_search.workflows.catalog import load_part

        settings = get_settings()
        return asdict(load_part(settings, source or settings.dataset_source, offset, limit))

    @task.external_python(python=PROJECT_PYTHON, expect_airflow=False)
    def embed_shard(shard: dict[str, int]) -> dict[str, Any]:
        from dataclasses import asdict

        from fashion_search.catalog.shards import Shard
        from fashion_search.settings import get_settings
        from fashion_search.workflows.catalog import embed_products

        return asdict(embed_products(get_settings(), shard=Shard.from_dict(shard)))

    @task.external_python(python=PROJECT_PYTHON, expect_airflow=False)
    def finish_load() -> dict[str, Any]:
        from dataclasses import asdict

        from fashion_search.settings import get_settings
        from fashion_search.workflows.catalog import finish_load

        return asdict(finish_load(get_settings()))

    schema = create_schema(reset="{{ params.reset }}")
    plan = plan_load(source="{{ params.source }}", limit="{{ params.limit }}")
    parts = items_of.override(task_id="load_parts")(plan, "parts")
    loaded = load_part.partial(source="{{ params.source }}").expand_kwargs(parts)
    embedded = embed_shard.expand(shard=CATALOG_SHARDS)
    schema >> plan >> loaded >> embedded >> finish_load().as_teardown(setups=plan)


dag = recreate_prod_database()
