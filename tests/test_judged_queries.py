"""The judged queries: enough of every kind, each answerable by the catalog, and the metrics."""

from __future__ import annotations

from collections import Counter

import pytest

from fashion_search.catalog.models import ProductFields
from fashion_search.learning.judged_queries import (
    GROUPS,
    JudgedQuery,
    answerable,
    evaluate_judged,
    judged_queries,
    ndcg,
)

MIN_RELEVANT = 10  # bench/judged_build.py keeps only queries with this many relevant products


def _product(id_: int, title: str, **fields: str) -> ProductFields:
    return ProductFields(id=id_, product_display_name=title, **fields)  # type: ignore[arg-type]


def test_there_are_400_judged_queries_in_every_group_each_answerable(
    dataset_products: list[ProductFields],
) -> None:
    queries = judged_queries()
    groups = Counter(q.group for q in queries)
    assert len(queries) >= 400 and set(groups) == set(GROUPS)
    assert min(groups.values()) >= 30, groups
    assert len({q.text for q in queries}) == len(queries)
    assert len(answerable(queries, dataset_products, MIN_RELEVANT)) == len(queries)


def test_relevance_needs_every_field_and_title_word() -> None:
    query = JudgedQuery(text="striped shirt for men", group="pattern",
                        fields={"gender": ["Men"], "article_type": ["Shirts"]},
                        title_words=["stripe"])  # fmt: skip
    assert query.relevant(_product(1, "Peter England Men Striped Shirt", gender="Men",
                                   article_type="Shirts"))  # fmt: skip
    assert query.relevant(_product(2, "Men Stripes Shirt", gender="Men", article_type="Shirts"))
    assert not query.relevant(_product(3, "Men Check Shirt", gender="Men", article_type="Shirts"))
    assert not query.relevant(_product(4, "Women Striped Shirt", gender="Women",
                                       article_type="Shirts"))  # fmt: skip


def test_metrics_per_group() -> None:
    assert ndcg([True, False, True], 2) == pytest.approx((1 + 1 / 2) / (1 + 1 / 1.5849625), 1e-6)
    assert ndcg([False] * 10, 5) == 0.0
    red = JudgedQuery(text="red", group="attribute", fields={"base_colour": ["Red"]})
    blue = JudgedQuery(text="azul", group="spanish", fields={"base_colour": ["Blue"]})
    products = {
        "red": [_product(i, "x", base_colour="Red" if i <= 5 else "Blue") for i in range(1, 11)],
        "azul": [],
    }
    got = evaluate_judged(products.__getitem__, [red, blue], lambda q: 10)
    assert got["attribute"]["p10"] == 0.5 and got["attribute"]["empty"] == 0.0
    assert got["spanish"] == {"queries": 1.0, "p10": 0.0, "ndcg10": 0.0, "empty": 1.0}
    assert got["outside"]["queries"] == 1 and got["all"]["p10"] == 0.25
