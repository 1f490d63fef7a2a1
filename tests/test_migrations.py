"""Versioned migrations on the real PostgreSQL: re-runnable, an existing catalog moved to
per-version embeddings without re-embedding, and each role's grants."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector
from psycopg import sql

from fashion_search.catalog.experiments import ExperimentRepository
from fashion_search.catalog.migrate import discover_migrations, migrate
from fashion_search.catalog.models import FILTER_FIELDS
from fashion_search.catalog.rules import RuleRepository
from fashion_search.experiments.design import Design


def test_migrations_apply_once_then_noop(scratch_database: str) -> None:
    applied = migrate(scratch_database, 512)
    assert applied == [f"{m.version:04d}_{m.name}" for m in discover_migrations()]
    assert migrate(scratch_database, 512) == []
    with psycopg.connect(scratch_database) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations")]
        assert versions == [m.version for m in discover_migrations()]
        columns = {
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'products'"
            )
        }
        assert "embedding" not in columns and "model_version" not in columns
        assert conn.execute("SELECT count(*) FROM catalog_versions").fetchone() == (0,)


def test_an_existing_catalog_moves_over_without_re_embedding(scratch_database: str) -> None:
    migrate(scratch_database, 64, upto=4)  # the schema before per-version embeddings
    vectors = np.random.default_rng(0).normal(size=(4, 64)).astype(np.float32)
    with psycopg.connect(scratch_database) as conn:
        register_vector(conn)
        for i, version in enumerate(["v1", "v1", "v1", "v0"], start=1):
            conn.execute(
                "INSERT INTO products (id, product_display_name, image_key, dataset,"
                " model_version, embedding) VALUES (%s, 'x', 'products/1.jpg', 't', %s, %s)",
                (i, version, vectors[i - 1]),
            )
        conn.execute(
            "INSERT INTO products (id, product_display_name, image_key, dataset)"
            " VALUES (5, 'not embedded', 'products/5.jpg', 't')"
        )
        conn.commit()
    assert migrate(scratch_database, 64, upto=5) == ["0005_embeddings_per_model_version"]
    with psycopg.connect(scratch_database) as conn:
        register_vector(conn)
        record = conn.execute(
            "SELECT model_version, dimension, state, partition FROM catalog_versions"
        ).fetchall()
        assert record == [("v1", 64, "serving", "product_embeddings_v1")]
        rows = conn.execute(
            "SELECT product_id, embedding FROM product_embeddings_v1 ORDER BY product_id"
        ).fetchall()
        assert [r[0] for r in rows] == [1, 2, 3]  # v0's vector (a re-embed cut short) is gone
        for product_id, stored in rows:
            np.testing.assert_array_equal(stored.to_numpy(), vectors[product_id - 1])
        assert conn.execute("SELECT count(*) FROM products").fetchone() == (5,)
        indexes = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes")}
        assert "product_embeddings_v1_hnsw" in indexes
        with pytest.raises(psycopg.errors.CheckViolation):  # the partition's own dimension
            conn.execute(
                "INSERT INTO product_embeddings VALUES ('v1', 5, %s)", (np.ones(32, np.float32),)
            )
    # The roles' grants (0007) reach the partition that existed before them.
    assert "0007_roles" in migrate(scratch_database, 64)
    with psycopg.connect(scratch_database) as conn:
        granted = conn.execute(
            "SELECT has_table_privilege('fashion_ingest', 'product_embeddings_v1', 'INSERT'),"
            " has_table_privilege('fashion_api', 'product_embeddings_v1', 'SELECT'),"
            " has_table_privilege('fashion_api', 'product_embeddings_v1', 'INSERT')"
        ).fetchone()
        assert granted == (True, True, False)


def test_new_titles_skip_the_gin_pending_list(scratch_database: str) -> None:
    """Every title search would scan a pending list linearly until a vacuum merged it."""
    migrate(scratch_database, 8)
    with psycopg.connect(scratch_database, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
        conn.execute(
            "INSERT INTO products (id, product_display_name, image_key, dataset)"
            " SELECT i, 'Navy shirt ' || i, 'products/' || i || '.jpg', 't'"
            " FROM generate_series(1, 500) AS i"
        )
        pending = "SELECT pending_tuples FROM pgstatginindex('products_title_search')"
        assert conn.execute(pending).fetchone() == (0,)


def test_discover_refuses_gaps_and_bad_names(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "0003_c.sql").write_text("SELECT 1;")
    with pytest.raises(ValueError, match="without gaps"):
        discover_migrations(tmp_path)
    (tmp_path / "3_bad.sql").write_text("SELECT 1;")
    with pytest.raises(ValueError, match="NNNN_name"):
        discover_migrations(tmp_path)


def test_the_api_role_manages_rules_and_experiments_and_the_upload_path_cannot(
    scratch_database: str,
) -> None:
    migrate(scratch_database, 8)

    class AsRole:
        def __init__(self, role: str) -> None:
            self.role = role

        @contextmanager
        def connection(self) -> Iterator[psycopg.Connection[Any]]:
            with psycopg.connect(scratch_database) as conn:
                conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(self.role)))
                yield conn

    rules = RuleRepository(AsRole("fashion_api"))  # type: ignore[arg-type]
    entry = rules.add("synonyms", {"synonyms": ["jumper", "sweater"]}, "test")
    assert rules.all() == [entry] and rules.version() == (1, entry.id)
    assert rules.remove(entry.id) and rules.all() == []
    upload_path = RuleRepository(AsRole("fashion_ingest"))  # type: ignore[arg-type]
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        upload_path.add("synonyms", {"synonyms": ["a", "b"]}, "test")
    # Experiments likewise: the API starts, records searches and stops; the upload path cannot.
    design = Design.parse(["A=serving", "B=mode:vector"])
    experiments = ExperimentRepository(AsRole("fashion_api"))  # type: ignore[arg-type]
    started = experiments.start(design, "test")
    assert experiments.record_search(started.id, "A", "s1") >= 1
    assert not experiments.stop(started.id, "test", {"verdict": "keep running"}).running
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        ExperimentRepository(AsRole("fashion_ingest")).start(design, "test")  # type: ignore[arg-type]


def test_filter_columns_move_beside_the_vectors_and_stay_in_step(scratch_database: str) -> None:
    """0014 copies each product's filter columns into every version's embedding rows, without
    re-embedding; later writes of products or embeddings, by any role, keep them in step."""
    migrate(scratch_database, 8, upto=13)
    vectors = np.random.default_rng(1).normal(size=(3, 8)).astype(np.float32)
    with psycopg.connect(scratch_database) as conn:
        register_vector(conn)
        conn.execute("SELECT create_embedding_partition('v1', 8)")
        for i in (1, 2, 3):
            conn.execute(
                "INSERT INTO products (id, product_display_name, image_key, dataset,"
                " article_type, gender, year) VALUES (%s, 'x', 'products/1.jpg', 'catalog',"
                " %s, 'Women', 2012)",
                (i, "Sarees" if i == 1 else "Tops"),
            )
            if i < 3:
                conn.execute(
                    "INSERT INTO product_embeddings (model_version, product_id, embedding)"
                    " VALUES ('v1', %s, %s)",
                    (i, vectors[i - 1]),
                )
        conn.commit()
    assert migrate(scratch_database, 8) == ["0014_filters_beside_vectors"]
    copies = (
        "SELECT product_id, article_type, gender, year, dataset FROM product_embeddings_v1"
        " ORDER BY product_id"
    )
    with psycopg.connect(scratch_database) as conn:
        register_vector(conn)
        assert conn.execute(copies).fetchall() == [
            (1, "Sarees", "Women", 2012, "catalog"),
            (2, "Tops", "Women", 2012, "catalog"),
        ]
        stored = conn.execute("SELECT embedding FROM product_embeddings_v1 ORDER BY product_id")
        for row, vector in zip(stored.fetchall(), vectors, strict=False):
            np.testing.assert_array_equal(row[0].to_numpy(), vector)
        columns = {
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_name = 'product_embeddings_v1'"
            )
        }
        assert set(FILTER_FIELDS) <= columns  # a new filter field needs its copy too
        inline = "SELECT pg_relation_size(reltoastrelid) FROM pg_class WHERE relname = %s"
        conn.execute("SELECT create_embedding_partition('v2', 512)")
        conn.execute(
            "INSERT INTO product_embeddings_v2 (model_version, product_id, embedding)"
            " VALUES ('v2', 1, %s)",
            (np.ones(512, np.float32),),
        )
        assert conn.execute(inline, ("product_embeddings_v2",)).fetchone() == (0,)
        indexes = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes")}
        assert {"product_embeddings_v1_hnsw", "product_embeddings_v2_article_type_idx"} <= indexes
        # The upload path relabels a product and embeds another; the copies follow.
        conn.execute("SET ROLE fashion_ingest")
        conn.execute("UPDATE products SET article_type = 'Kurtas' WHERE id = 2")
        conn.execute(
            "INSERT INTO product_embeddings_v1 (model_version, product_id, embedding)"
            " VALUES ('v1', 3, %s)",
            (vectors[2],),
        )
        conn.commit()
        assert [r[1] for r in conn.execute(copies).fetchall()] == ["Sarees", "Kurtas", "Tops"]
