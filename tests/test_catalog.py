"""The catalog against the real PostgreSQL + pgvector and S3 server: bulk load, read back,
filters, keyset pagination, nearest neighbours, and refused input that changes nothing."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import psycopg
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from fashion_search.catalog.db import create_pool
from fashion_search.catalog.load import LoadSummary, load_catalog
from fashion_search.catalog.models import Product
from fashion_search.catalog.repositories import Catalog
from fashion_search.catalog.versions import CatalogVersion
from fashion_search.errors import (
    EmbeddingDimensionError,
    InvalidArgumentError,
    InvalidFilterError,
    InvalidProductError,
    ObjectNotFoundError,
    ProductNotFoundError,
)
from fashion_search.settings import Settings
from fashion_search.storage import ObjectStore

N_PRODUCTS = 2000
MODEL_VERSION = "test-synthetic"
DIM = 512


def _v(catalog: Catalog) -> CatalogVersion:
    return catalog.versions.get(MODEL_VERSION)


@pytest.fixture(scope="session")
def source_rows(settings: Settings) -> list[dict[str, Any]]:
    """The first 2,000 rows of the shared parquet, as pyarrow reads them."""
    table = pq.ParquetFile(settings.dataset_source).read_row_group(0)
    assert table.num_rows >= N_PRODUCTS
    return table.slice(0, N_PRODUCTS).to_pylist()


@pytest.fixture(scope="session")
def loaded(catalog: Catalog, store: ObjectStore, settings: Settings) -> LoadSummary:
    """2,000 shared products loaded once: images in S3, rows in PostgreSQL."""
    return load_catalog(catalog, store, settings.dataset_source, limit=N_PRODUCTS, progress=False)


@pytest.fixture(scope="session")
def embeddings(loaded: LoadSummary, catalog: Catalog) -> dict[int, np.ndarray]:
    """Clustered unit vectors (one cluster per articleType) stored for every product."""
    catalog.versions.bootstrap(MODEL_VERSION, DIM)
    products = _all_products(catalog)
    rng = np.random.default_rng(7)
    centers: dict[str | None, np.ndarray] = {}
    vectors = {}
    for p in products:
        center = centers.setdefault(p.article_type, rng.normal(size=DIM))
        v = center + 0.8 * rng.normal(size=DIM)
        vectors[p.id] = (v / np.linalg.norm(v)).astype(np.float32)
    with_vectors = [
        p.model_copy(update={"embedding": vectors[p.id], "model_version": MODEL_VERSION})
        for p in products
    ]
    catalog.products.upsert_many(with_vectors)
    return vectors


def _all_products(catalog: Catalog, **filters: Any) -> list[Product]:
    items, after = [], None
    while True:
        page = catalog.products.list_products(filters or None, limit=300, after=after)
        items.extend(page.items)
        if page.next_after is None:
            return items
        after = page.next_after


def _snapshot(catalog: Catalog) -> list[tuple[Any, ...]]:
    with catalog.pool.connection() as conn:
        return conn.execute(
            "SELECT id, product_display_name, image_key, e.model_version, e.embedding::text,"
            " updated_at FROM products p LEFT JOIN product_embeddings e ON e.product_id = p.id"
            " ORDER BY id, e.model_version"
        ).fetchall()


def test_bulk_load_reads_back_identical(
    loaded: LoadSummary,
    catalog: Catalog,
    store: ObjectStore,
    settings: Settings,
    source_rows: list[dict[str, Any]],
) -> None:
    assert loaded.loaded == N_PRODUCTS
    assert loaded.report.rejected == []
    assert catalog.products.count() == N_PRODUCTS
    for row in source_rows:
        product = catalog.products.get(row["id"])
        # The loader trims surrounding whitespace (a few titles end in a space).
        assert product.product_display_name == row["productDisplayName"].strip()
        assert product.article_type == row["articleType"]
        assert product.base_colour == row["baseColour"]
        assert product.master_category == row["masterCategory"]
        assert product.year == (None if row["year"] is None else int(row["year"]))
        image = store.get(settings.storage.images_bucket, product.image_key)
        assert image == row["image"]["bytes"], f"image of {row['id']} differs"


def test_reload_is_idempotent(
    loaded: LoadSummary, catalog: Catalog, store: ObjectStore, settings: Settings
) -> None:
    summary = load_catalog(catalog, store, settings.dataset_source, limit=50, progress=False)
    assert (summary.loaded, summary.skipped) == (50, 0)
    summary = load_catalog(
        catalog, store, settings.dataset_source, limit=60, skip_existing=True, progress=False
    )
    assert (summary.loaded, summary.skipped) == (0, 60)
    assert catalog.products.count() == N_PRODUCTS


def test_filters_match_the_source(
    loaded: LoadSummary, catalog: Catalog, source_rows: list[dict[str, Any]]
) -> None:
    expected = {
        r["id"] for r in source_rows if r["articleType"] == "Tshirts" and r["gender"] == "Men"
    }
    assert expected
    by_camel = {p.id for p in _all_products(catalog, articleType="Tshirts", gender="Men")}
    by_snake = {p.id for p in _all_products(catalog, article_type="Tshirts", gender="Men")}
    assert by_camel == by_snake == expected
    colours = {"Navy Blue", "Black"}
    assert {p.id for p in _all_products(catalog, baseColour=sorted(colours))} == {
        r["id"] for r in source_rows if r["baseColour"] in colours
    }
    year = Counter(r["year"] for r in source_rows if r["year"]).most_common(1)[0][0]
    assert catalog.products.count({"year": int(year)}) == sum(
        r["year"] == year for r in source_rows
    )


def test_keyset_pagination_visits_every_product_once(
    loaded: LoadSummary, catalog: Catalog, source_rows: list[dict[str, Any]]
) -> None:
    ids = [p.id for p in _all_products(catalog)]
    assert ids == sorted(r["id"] for r in source_rows)
    first = catalog.products.list_products(limit=7)
    second = catalog.products.list_products(limit=7, after=first.next_after)
    assert [p.id for p in first.items + second.items] == ids[:14]
    last = catalog.products.list_products(limit=10, after=ids[-3])
    assert [p.id for p in last.items] == ids[-2:]
    assert last.next_after is None


def _exact_top_k(
    embeddings: dict[int, np.ndarray], query: np.ndarray, k: int, allowed: set[int] | None = None
) -> list[int]:
    ids = [i for i in embeddings if allowed is None or i in allowed]
    matrix = np.stack([embeddings[i] for i in ids])
    scores = matrix @ query
    order = np.argsort(-scores, kind="stable")[:k]
    return [ids[j] for j in order]


def test_nearest_returns_exact_top_k_for_stored_vectors(
    embeddings: dict[int, np.ndarray], catalog: Catalog
) -> None:
    rng = np.random.default_rng(1)
    for product_id in rng.choice(sorted(embeddings), size=20, replace=False):
        query = embeddings[int(product_id)]
        expected = _exact_top_k(embeddings, query, 10)
        for exact in (True, False):
            hits = catalog.vectors.nearest(_v(catalog), query, k=10, exact=exact).neighbors
            assert [h.product.id for h in hits] == expected
            assert hits[0].product.id == product_id
            assert hits[0].score == pytest.approx(1.0, abs=1e-5)
            scores = [h.score for h in hits]
            assert scores == sorted(scores, reverse=True)
            expected_scores = [float(embeddings[i] @ query) for i in expected]
            assert scores == pytest.approx(expected_scores, abs=1e-5)


def test_nearest_returns_k_rows_under_a_one_percent_filter(
    embeddings: dict[int, np.ndarray],
    catalog: Catalog,
    source_rows: list[dict[str, Any]],
) -> None:
    counts = Counter(r["articleType"] for r in source_rows)
    # An articleType holding about 1% of the products, far from the query's cluster.
    article_type = min(counts, key=lambda a: (abs(counts[a] - N_PRODUCTS // 100), a))
    allowed = {r["id"] for r in source_rows if r["articleType"] == article_type}
    assert 10 <= len(allowed) <= 40
    outsider = next(r["id"] for r in source_rows if r["articleType"] != article_type)
    query = embeddings[outsider]
    nearest = catalog.vectors.nearest(
        _v(catalog), query, k=10, filters={"articleType": article_type}
    )
    assert nearest.exact  # a filter this small is ranked exactly, and the answer says so
    hits = nearest.neighbors
    assert len(hits) == 10
    assert all(h.product.article_type == article_type for h in hits)
    assert [h.product.id for h in hits] == _exact_top_k(embeddings, query, 10, allowed)
    # More requested than match: every match, and no more.
    hits = catalog.vectors.nearest(
        _v(catalog), query, k=len(allowed) + 5, filters={"articleType": article_type}
    ).neighbors
    assert {h.product.id for h in hits} == allowed


def test_the_repository_searches_with_its_pools_ef_search(
    embeddings: dict[int, np.ndarray], settings: Settings
) -> None:
    # One connection: a fresh catalog's first searches must not need a second one.
    one = settings.replace(database={"hnsw_ef_search": 8, "pool_max_size": 1})
    with create_pool(one) as pool:
        query = embeddings[min(embeddings)]
        catalog = Catalog.of(pool)
        [labelled] = catalog.vectors.labelled_neighbours(_v(catalog), [query], k=3)
        assert len(labelled) == 3
        hits = catalog.vectors.nearest(
            _v(catalog), query, k=30
        ).neighbors  # k above ef_search: raised for this query
        assert len(hits) == 30
        assert hits[0].product.id == min(embeddings)
        assert catalog.vectors.ef_search == 8


def test_wrong_dimension_is_refused_and_changes_nothing(
    embeddings: dict[int, np.ndarray], catalog: Catalog
) -> None:
    before = _snapshot(catalog)
    good = catalog.products.get(next(iter(embeddings)), _v(catalog))
    bad = good.model_copy(update={"id": good.id + 1, "embedding": np.ones(17, np.float32)})
    with pytest.raises(EmbeddingDimensionError, match="dimension 17"):
        catalog.products.upsert_many([good, bad])
    with pytest.raises(EmbeddingDimensionError):
        catalog.vectors.nearest(_v(catalog), np.ones(DIM + 1), k=5)
    with pytest.raises(InvalidArgumentError, match="NaN"):
        catalog.vectors.nearest(_v(catalog), np.full(DIM, np.nan), k=5)
    assert _snapshot(catalog) == before


def test_bad_arguments_get_typed_errors_and_change_nothing(
    embeddings: dict[int, np.ndarray], catalog: Catalog
) -> None:
    before = _snapshot(catalog)
    query = next(iter(embeddings.values()))
    with pytest.raises(InvalidFilterError, match="unknown filter field 'colour'"):
        catalog.vectors.nearest(_v(catalog), query, k=5, filters={"colour": "Red"})
    with pytest.raises(InvalidFilterError, match="unknown filter field"):
        catalog.products.list_products({"id; DROP TABLE products": 1})
    with pytest.raises(InvalidFilterError, match="integer"):
        catalog.products.count({"year": "twenty"})
    with pytest.raises(InvalidFilterError, match="1 to 100 values"):
        catalog.products.count({"gender": []})
    with pytest.raises(InvalidArgumentError):
        catalog.vectors.nearest(_v(catalog), query, k=0)
    with pytest.raises(InvalidArgumentError):
        catalog.products.list_products(limit=10_000)
    with pytest.raises(ProductNotFoundError, match="999999999"):
        catalog.products.get(999_999_999)
    duplicate = catalog.products.get(next(iter(embeddings)))
    with pytest.raises(InvalidProductError, match="more than once"):
        catalog.products.upsert_many([duplicate, duplicate])
    assert catalog.products.count({"gender": "Men'; DELETE FROM products; --"}) == 0
    assert _snapshot(catalog) == before


def test_invalid_image_key_is_refused(loaded: LoadSummary, store: ObjectStore) -> None:
    for key in ("", "../etc/passwd", "/abs/key.jpg", "a//b.jpg", "bad\x00key"):
        with pytest.raises(ValidationError, match="image_key"):
            Product(id=1, product_display_name="x", image_key=key)
    with pytest.raises(ObjectNotFoundError):
        store.get(store.settings.storage.images_bucket, "products/does-not-exist.jpg")


def test_upsert_keeps_embedding_when_none_given_and_delete(
    embeddings: dict[int, np.ndarray], catalog: Catalog
) -> None:
    product_id = max(embeddings)
    product = catalog.products.get(product_id)
    renamed = product.model_copy(update={"product_display_name": "Renamed Shirt"})
    catalog.products.upsert_many([renamed])
    stored = catalog.products.get(product_id, _v(catalog))
    assert stored.product_display_name == "Renamed Shirt"
    assert stored.model_version == MODEL_VERSION
    assert stored.embedding is not None
    np.testing.assert_allclose(stored.embedding, embeddings[product_id], atol=1e-6)
    new = Product(id=123_456_789, product_display_name="Temporary", image_key="products/t.jpg")
    assert catalog.products.upsert_many([new]) == 1
    assert catalog.products.delete([new.id, 987_654_321]) == 1
    with pytest.raises(ProductNotFoundError):
        catalog.products.get(new.id)
    catalog.products.upsert_many([product])


def test_labelled_neighbours_are_found_past_a_crowd_of_uploads(
    embeddings: dict[int, np.ndarray], catalog: Catalog
) -> None:
    """1,500 uploads nearer than any labelled product: more than pgvector's largest
    ef_search (1000) lets an index scan see; the labelled neighbours are still the exact
    nearest labelled ones."""
    version = _v(catalog)
    query = embeddings[min(embeddings)]
    rng = np.random.default_rng(3)
    crowd = query + 0.01 * rng.normal(size=(1500, DIM))
    crowd /= np.linalg.norm(crowd, axis=1, keepdims=True)
    ids = list(range(900_000_000, 900_001_500))
    with catalog.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO products (id, product_display_name, image_key, dataset, source_bucket,"
            " source_key, source_etag) VALUES (%s, 'upload', 'uploads/x', 'uploads', 'b', %s, 'e')",
            [(i, f"k{i}") for i in ids],
        )
        cur.executemany(
            "INSERT INTO product_embeddings (model_version, product_id, embedding)"
            " VALUES (%s, %s, %s)",
            [(MODEL_VERSION, i, v.astype(np.float32)) for i, v in zip(ids, crowd, strict=True)],
        )
    try:
        [labelled] = catalog.vectors.labelled_neighbours(version, [query], k=3)
        assert [n.product.id for n in labelled] == _exact_top_k(embeddings, query, 3)
    finally:
        catalog.products.delete(ids)


def test_a_statement_past_the_timeout_is_cancelled_and_the_pool_goes_on(
    loaded: LoadSummary, settings: Settings
) -> None:
    short = settings.replace(database={"statement_timeout_ms": 200, "pool_max_size": 1})
    with create_pool(short) as pool:
        with pool.connection() as conn:
            assert conn.execute("SHOW statement_timeout").fetchone() == ("200ms",)
            with pytest.raises(psycopg.errors.QueryCanceled, match="statement timeout"):
                conn.execute("SELECT pg_sleep(2)")
        assert Catalog.of(pool).products.count() == N_PRODUCTS  # the one connection serves on
