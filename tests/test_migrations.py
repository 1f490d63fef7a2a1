"""Versioned migrations on the real PostgreSQL: re-runnable, and the embedding dimension."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

from fashion_search.catalog.migrate import (
    discover_migrations,
    embedding_dimension,
    migrate,
    set_embedding_dimension,
)


def test_migrations_apply_once_then_noop(scratch_database: str) -> None:
    applied = migrate(scratch_database, 512)
    assert applied == [f"{m.version:04d}_{m.name}" for m in discover_migrations()]
    assert migrate(scratch_database, 512) == []
    with psycopg.connect(scratch_database) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations")]
        assert versions == [m.version for m in discover_migrations()]
        assert embedding_dimension(conn) == 512
        indexes = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes")}
        assert "products_embedding_hnsw" in indexes


def test_catalog_for_another_dimension(scratch_database: str) -> None:
    migrate(scratch_database, 64)
    with psycopg.connect(scratch_database) as conn:
        register_vector(conn)
        assert embedding_dimension(conn) == 64
        conn.execute(
            "INSERT INTO products (id, product_display_name, image_key, dataset, model_version,"
            " embedding) VALUES (1, 'x', 'products/1.jpg', 't', 'v1', %s)",
            (np.ones(64, np.float32),),
        )
        conn.commit()
    assert set_embedding_dimension(scratch_database, 64) is False
    assert set_embedding_dimension(scratch_database, 32) is True
    with psycopg.connect(scratch_database) as conn:
        assert embedding_dimension(conn) == 32
        row = conn.execute("SELECT embedding, model_version, product_display_name FROM products")
        assert row.fetchone() == (None, None, "x")  # the row stays, the old embedding goes


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
