"""recreate_prod_database benchmark: the DAG run with ``dag.test()`` against the running stack
(``make up``: model server serving the champion), into a scratch database:

    .venv/bin/python -m bench.recreate              # all 44,072 products
    .venv/bin/python -m bench.recreate --limit 2000
    .venv/bin/python -m bench.recreate --keep       # keep the scratch database (for bench.search)

Prints the DAG's duration and products/s, each task's own report (load, embed), and the model
server's raw image embedding rate measured in the same process as the baseline.
"""

from __future__ import annotations

import argparse
import os
import re
import time
import uuid

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from bench.baseline import raw_image_rate
from bench.report import Report, Table, add_markdown_option
from fashion_search.dataset import iter_dataset
from fashion_search.embedding_client import EmbeddingClient
from fashion_search.settings import get_settings, variable
from stack.airflow import LocalAirflow
from stack.postgres import create_database


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit", type=int, help="products to load (default: all)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    add_markdown_option(parser)
    args = parser.parse_args()
    report = Report("bench.recreate")
    settings = get_settings()
    images = [item.image for item in iter_dataset(settings.dataset_source, limit=512)]
    with EmbeddingClient(settings.model_server.address, timeout_s=120) as client:
        info = client.info()
        raw_rate = raw_image_rate(client, images, 64)

    database = f"{settings.database.name}_bench_{uuid.uuid4().hex[:6]}"
    admin = make_conninfo(settings.database.url, dbname="postgres")
    create_database(admin, database)
    url = make_conninfo(settings.database.url, dbname=database)
    env = {**os.environ, variable("database.name"): database, variable("database.url"): url,
           "FS_DAG_TASK_RETRIES": "0"}  # fmt: skip
    try:
        airflow = LocalAirflow(settings, settings.stack.state_dir / "airflow")
        started = time.perf_counter()
        result = airflow.test_dag("recreate_prod_database", {"limit": args.limit}, env)
        took = time.perf_counter() - started
        if result.state != "success":
            raise SystemExit(f"DAG run {result.state}:\n{result.log[-5000:]}")
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM products), count(*) FROM product_embeddings e"
                " JOIN catalog_versions v USING (model_version) WHERE v.state = 'serving'"
            ).fetchone()
        products, embedded = row if row else (0, 0)
    finally:
        if args.keep:
            report.add(f"kept database {database}: FS_DATABASE={database} FS_DATABASE_URL={url}")
        else:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(database)))  # fmt: skip
    reports = re.findall(r"Returned value was: (\{.*\})", result.log)
    report.add(info.describe())
    raw_s = len(images) / raw_rate
    rate = embedded / took
    header = ["run", "products", "seconds", "images/s", "ratio"]
    report.add(Table("recreate_prod_database with dag.test()", header, [
        ["model server raw (batches of 64)", len(images), f"{raw_s:.1f}", f"{raw_rate:.1f}", 1.0],
        ["recreate_prod_database (whole DAG)", products, f"{took:.1f}", f"{rate:.1f}",
         rate / raw_rate],
    ]))  # fmt: skip
    for task_report in dict.fromkeys(reports):
        report.add(f"  task report: {task_report}")
    report.write_markdown(args.markdown)


if __name__ == "__main__":
    main()
