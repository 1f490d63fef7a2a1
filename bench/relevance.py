"""Relevance of the search features on the running catalog (``make up``: the whole catalog
embedded by the served model), through the search service in process:

    .venv/bin/python -m bench.relevance --markdown docs/benchmarks.md

- relevance cutoff: cosine similarity of relevant vs irrelevant hits of the evaluation
  module's attribute queries (unseen phrasing), and the cutoff that keeps 95% of relevant hits;
  what it cuts of queries the catalog cannot answer;
- negative terms: for "{articleType} -{colour}" queries, the share of the top 10 that still has
  the colour, plain vs negative, per weight, vector and hybrid;
- composed image + text: for held-out products and "in {colour}" (another colour of the same
  gender and article type), P@10 of image-only, text-only and composed queries, per modifier
  weight;
- query understanding: P@10 of attribute queries off / boost / filter, vector and hybrid, in
  the catalog's words and in a shopper's (lower case, singular, "men's"); P@10 and latency by
  how many candidates the boosts re-rank;
- collapse: groups of byte-identical and near-identical images, how many top 10s they crowd,
  and the threshold: re-encoded photos merged vs visually nearest other photos kept apart.

Relevant means the same gender, baseColour and articleType (the colour asked for, composed).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import random
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image

from bench.report import Report, Table, add_markdown_option
from fashion_search.catalog.db import create_pool
from fashion_search.catalog.models import Product
from fashion_search.catalog.repositories import Catalog
from fashion_search.dataset import iter_dataset
from fashion_search.embedding_client import EmbeddingClient
from fashion_search.model.data import attribute_text, in_test_split
from fashion_search.model.evaluate import UNSEEN_PHRASING
from fashion_search.model.fingerprint import fingerprint_bytes
from fashion_search.search.collapse import NEAR_IDENTICAL_MAX_DIFF, collapse
from fashion_search.search.request import Refinements, SearchMode
from fashion_search.search.service import SearchResult, SearchService
from fashion_search.search.terms import Term, combine
from fashion_search.search.words import singular, words
from fashion_search.settings import Settings, get_settings
from fashion_search.storage import ObjectStore

Key = tuple[str | None, str | None, str | None]  # gender, baseColour, articleType
OFF = Refinements(understand="off")
#: Queries no fashion catalog answers: what a relevance cutoff is for.
UNANSWERABLE = ("pizza with extra cheese", "laptop charger", "garden hose", "car tyres",
                "kitchen blender", "office chair", "football stadium", "mountain landscape",
                "dog food", "smartphone case")  # fmt: skip
SHOPPER_GENDER = {"Men": "men's", "Women": "women's", "Boys": "boys", "Girls": "girls",
                  "Unisex": "unisex"}  # fmt: skip


def key_of(product: Product) -> Key:
    return (product.gender, product.base_colour, product.article_type)


def all_products(catalog: Catalog) -> list[Product]:
    """Every product of the catalog, page by page."""
    products: list[Product] = []
    after: int | None = None
    while True:
        page = catalog.products.list_products(limit=1000, after=after)
        products += page.items
        if page.next_after is None:
            return products
        after = page.next_after


def precision(result: SearchResult, wanted: Callable[[Product], bool]) -> float:
    """Precision@10 of a result."""
    return sum(wanted(h.product) for h in result.hits[:10]) / 10


def shopper_words(gender: str, colour: str, article: str) -> str:
    """An attribute query as a shopper types it: "navy blue shirt for men's"."""
    article_words = words(article)
    article_words[-1] = singular(article_words[-1])
    return f"{colour.lower()} {' '.join(article_words)} for {SHOPPER_GENDER.get(gender, gender)}"


def _percentiles(values: Sequence[float]) -> list[float]:
    return [round(float(np.percentile(values, q)), 3) for q in (5, 25, 50, 75, 95)]


def cutoff_table(
    service: SearchService, queries: list[tuple[Key, str]], depth: int
) -> tuple[Table, float]:
    relevant: list[float] = []
    irrelevant: list[float] = []
    for key, text in queries:
        for hit in service.text(text, depth, mode="vector", refine=OFF).hits:
            assert hit.similarity is not None
            (relevant if key_of(hit.product) == key else irrelevant).append(hit.similarity)
    cutoff = float(np.floor(np.percentile(relevant, 5) * 100) / 100)
    unanswerable = [
        h.similarity or 0.0
        for q in UNANSWERABLE
        for h in service.text(q, 10, mode="vector", refine=OFF).hits
    ]
    table = Table(
        f"relevance cutoff: cosine similarity of the top {depth} hits of {len(queries)}"
        " attribute queries (unseen phrasing), vector mode",
        ["hits", "n", "p5", "p25", "p50", "p75", "p95", f"cut at {cutoff:.2f}"],
    )
    for name, values in (("relevant", relevant), ("irrelevant", irrelevant),
                         ("unanswerable queries (top 10)", unanswerable)):  # fmt: skip
        share = sum(v < cutoff for v in values) / max(len(values), 1)
        table.rows.append([name, len(values), *_percentiles(values), f"{share:.1%}"])
    return table, cutoff


def negative_table(
    service: SearchService, pairs: list[tuple[str, str]], weights: Sequence[float]
) -> Table:
    table = Table(
        f'negative terms: "{{articleType}} -{{colour}}" for {len(pairs)} pairs; share of the'
        " top 10 with the colour, and with the article type",
        ["mode", "query", "colour in top 10", "articleType in top 10"],
    )
    modes: tuple[SearchMode, ...] = ("vector", "hybrid")
    for mode in modes:
        for weight in (0.0, *weights):
            colour, article = [], []
            for a, c in pairs:
                terms = [Term(a), Term(c, weight)] if weight else [Term(a)]
                hits = service.text(terms, 10, mode=mode, refine=OFF).hits
                colour.append(sum(h.product.base_colour == c for h in hits) / 10)
                article.append(sum(h.product.article_type == a for h in hits) / 10)
            name = f"{{a}} -{{c}}, weight {weight}" if weight else "plain {a}"
            table.rows.append([mode, name, statistics.mean(colour), statistics.mean(article)])
    return table


def composed_table(
    service: SearchService,
    sources: list[tuple[Product, str]],
    weights: Sequence[float],
) -> Table:
    """P@10 for each held-out product and target colour: image only, text only, composed."""
    catalog = service.catalog
    serving = catalog.versions.serving()
    scores: dict[str, list[float]] = defaultdict(list)
    for product, colour in sources:
        target = (product.gender, colour, product.article_type)

        def wanted(p: Product, target: Key = target) -> bool:
            return key_of(p) == target

        def p10(vector: np.ndarray[Any, Any], source: Product = product) -> float:
            near = catalog.vectors.nearest(serving, vector, 10, exclude_id=source.id).neighbors
            return sum(wanted(n.product) for n in near) / 10

        stored = catalog.products.get(product.id, serving)
        assert stored.embedding is not None
        image = stored.embedding / np.linalg.norm(stored.embedding)
        modifier = service.embedder.embed_texts([f"in {colour}"]).vectors[0]
        scores["image only"].append(p10(image))
        text = f"{colour} {product.article_type}"
        for refine in (Refinements(understand="off"), Refinements(understand="boost")):
            result = service.text(text, 10, mode="vector", refine=refine)
            scores[
                f'text only "{{colour}} {{articleType}}", understand={refine.understand}'
            ].append(precision(result, wanted))
        for w in weights:
            composed = combine(np.stack([image, modifier]), [1.0, w])
            scores[f'image + "in {{colour}}", weight {w}'].append(p10(composed))
        for refine in (Refinements(understand="off"), Refinements(understand="boost")):
            result = service.similar(product.id, 10, refine=refine, modifier=f"in {colour}")
            scores[f"composed (service), understand={refine.understand}"].append(
                precision(result, wanted)
            )
    table = Table(
        f"composed image + text: {len(sources)} held-out products, another colour of their"
        " gender and article type; P@10 (relevant: gender, article type and that colour)",
        ["query", "P@10"],
    )
    table.rows += [[name, statistics.mean(values)] for name, values in scores.items()]
    return table


def understanding_table(
    settings: Settings,
    service: SearchService,
    queries: dict[str, list[tuple[Key, str]]],
    boosts: Sequence[float],
) -> Table:
    table = Table(
        "query understanding: P@10 of attribute queries (relevant: all three attributes)",
        ["phrasing", "queries", "mode", "off", *(f"boost {b}" for b in boosts), "filter"],
    )
    runs = [(service, Refinements(understand="off"))]
    runs += [
        (service.reconfigured(settings.replace(search={"understanding_boost": b})),
         Refinements(understand="boost"))
        for b in boosts
    ]  # fmt: skip
    runs.append((service, Refinements(understand="filter")))
    modes: tuple[SearchMode, ...] = ("vector", "hybrid")
    for phrasing, asked in queries.items():
        for mode in modes:
            row: list[Any] = [phrasing, len(asked), mode]
            for searcher, refine in runs:
                p10 = []
                for key, text in asked:
                    hits = searcher.text(text, 10, mode=mode, refine=refine).hits
                    p10.append(sum(key_of(h.product) == key for h in hits) / 10)
                row.append(statistics.mean(p10))
            table.rows.append(row)
    return table


def _max_diff(a: bytes, b: bytes) -> int:
    return int(np.abs(np.frombuffer(a, np.uint8).astype(int) - np.frombuffer(b, np.uint8)).max())


def _reencoded(image: bytes) -> bytes:
    """A catalog photo as a merchant might list it again: rescaled to 90%, JPEG quality 70."""
    decoded = Image.open(io.BytesIO(image)).convert("RGB")
    smaller = decoded.resize((decoded.width * 9 // 10, decoded.height * 9 // 10))
    out = io.BytesIO()
    smaller.save(out, "JPEG", quality=70)
    return out.getvalue()


def threshold_table(
    service: SearchService, samples: dict[int, bytes], sha_of: dict[int, str]
) -> Table:
    """How far apart fingerprints of the same photo re-encoded are, and those of each sampled
    product's visually nearest other photo (mostly its colour variants and look-alikes)."""
    serving = service.catalog.versions.serving()
    same, other = [], []
    for product_id, image in samples.items():
        stored = service.catalog.products.get(product_id, serving)
        assert stored.image_fingerprint is not None
        assert stored.embedding is not None
        same.append(_max_diff(stored.image_fingerprint, fingerprint_bytes(_reencoded(image))))
        near = service.catalog.vectors.nearest(serving, stored.embedding, 20).neighbors
        nearest = next(n.product for n in near if sha_of.get(n.product.id) != sha_of[product_id])
        assert nearest.image_fingerprint is not None
        other.append(_max_diff(stored.image_fingerprint, nearest.image_fingerprint))
    table = Table(
        f"collapse threshold: {len(samples)} sampled products; share of pairs whose fingerprints"
        " are within the threshold at every pixel and channel",
        ["max difference", "photo and its re-encoding (merge)", "photo and its nearest other"
         " photo (keep apart)"],
    )  # fmt: skip
    for threshold in (4, 8, 12, 16, 24):
        mark = " (NEAR_IDENTICAL_MAX_DIFF)" if threshold == NEAR_IDENTICAL_MAX_DIFF else ""
        table.rows.append([
            f"{threshold}{mark}", f"{np.mean(np.array(same) <= threshold):.1%}",
            f"{np.mean(np.array(other) <= threshold):.1%}",
        ])  # fmt: skip
    return table


def depth_table(service: SearchService, queries: list[tuple[Key, str]]) -> Table:
    """P@10 and in-process latency of boosted searches by how many candidates they re-rank,
    next to understanding off (the baseline, same run)."""
    table = Table(
        f"query understanding by candidates re-ranked: {len(queries)} attribute queries in"
        " shoppers' words, in process",
        ["mode", "candidates", "P@10", "p50 ms", "p50/off"],
    )
    modes: tuple[SearchMode, ...] = ("hybrid", "vector")
    for mode in modes:
        rows: list[list[Any]] = []
        for name, refine in [("off", Refinements(understand="off"))] + [
            (str(n), Refinements(understand="boost", candidates=n)) for n in (50, 100, 200, 500)
        ]:
            p10, took = [], []
            for key, text in queries:
                started = time.perf_counter()
                hits = service.text(text, 10, mode=mode, refine=refine).hits
                took.append((time.perf_counter() - started) * 1000)
                p10.append(sum(key_of(h.product) == key for h in hits) / 10)
            rows.append([mode, name, statistics.mean(p10), statistics.median(took)])
        table.rows += [[*row, row[3] / rows[0][3]] for row in rows]
    return table


def collapse_table(
    service: SearchService, identical: int, identical_products: int, queries: list[str]
) -> Table:
    with service.catalog.pool.connection() as conn:
        row = conn.execute(
            "SELECT count(*), coalesce(sum(n), 0) FROM (SELECT count(*) AS n FROM products"
            " GROUP BY image_fingerprint HAVING count(*) > 1) g"
        ).fetchone()
    assert row is not None
    crowded, stood_for = 0, []
    for text in queries:
        result = service.text(text, 10, mode="vector", refine=Refinements(collapse="image"))
        stood_for.append(sum(h.collapsed for h in result.hits))
        plain = service.text(text, 10, mode="vector", refine=OFF).hits
        groups = collapse(plain, lambda h: h.product.image_fingerprint)
        crowded += len(groups) < len(plain)
    table = Table("collapse: groups of identical images", ["what", "value"])
    table.rows += [
        ["groups of byte-identical images in the catalog (products in them)",
         f"{identical} ({identical_products})"],
        ["groups of identical fingerprints (products in them)", f"{row[0]} ({row[1]})"],
        [f"plain top 10s with near-identical images, of {len(queries)} attribute queries",
         crowded],
        ["candidates a collapsed top 10 stands for (mean)", statistics.mean(stood_for)],
    ]  # fmt: skip
    return table


def main() -> None:
    """Run the measurements and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queries", type=int, default=200, help="attribute queries per table")
    parser.add_argument("--pairs", type=int, default=100, help="negative queries")
    parser.add_argument("--sources", type=int, default=200, help="composed queries")
    parser.add_argument("--depth", type=int, default=50, help="hits per query for the cutoff")
    parser.add_argument("--samples", type=int, default=500, help="photos for the threshold")
    add_markdown_option(parser)
    args = parser.parse_args()
    report = Report("bench.relevance")
    settings = get_settings().replace(search={"min_score": -1.0})  # no cutoff unless measured

    def rng(table: int) -> random.Random:  # a sample per table, whatever the others' sizes
        return random.Random(table)

    photos = rng(0)
    held_out: set[int] = set()
    sha_of: dict[int, str] = {}
    samples: dict[int, bytes] = {}
    for item in iter_dataset(settings.dataset_source):
        sha_of[item.fields.id] = hashlib.sha1(item.image).hexdigest()
        if in_test_split(item.image):
            held_out.add(item.fields.id)
        if photos.random() < args.samples / 44_072:
            samples[item.fields.id] = item.image
    identical = [n for n in Counter(sha_of.values()).values() if n > 1]

    with create_pool(settings) as pool, EmbeddingClient(settings.model_server.address) as client:
        catalog = Catalog.of(pool)
        service = SearchService(settings, catalog, ObjectStore(settings), client)
        info = client.info()
        products = all_products(catalog)
        report.add(f"catalog: {len(products)} products ({len(held_out)} held out of training);"
                   f" model {info.registry_name} v{info.registry_version}")  # fmt: skip
        counts = Counter(key_of(p) for p in products)
        combos = sorted(k for k, n in counts.items() if n >= 10 and all(k))
        sample = rng(1).sample(combos, min(args.queries, len(combos)))
        catalog_words = [(k, attribute_text(*k, UNSEEN_PHRASING)) for k in sample]
        shopper = [(k, shopper_words(*k)) for k in sample]  # type: ignore[arg-type]

        table, cutoff = cutoff_table(service, catalog_words, args.depth)
        report.add(table)
        report.add(f"cutoff keeping 95% of relevant hits: {cutoff:.2f} (FS_SEARCH_MIN_SCORE)")

        colours_of: dict[str, Counter[str]] = defaultdict(Counter)
        for p in products:
            if p.article_type and p.base_colour:
                colours_of[p.article_type][p.base_colour] += 1
        pairs = [(a, c) for a, cs in colours_of.items() for c, n in cs.items()
                 if n >= 10 and sum(cs.values()) - n >= 10]  # fmt: skip
        pairs = rng(2).sample(pairs, min(args.pairs, len(pairs)))
        report.add(negative_table(service, pairs, (-0.25, -0.5, -1.0)))

        colours: dict[tuple[str | None, str | None], set[str]] = defaultdict(set)
        for (g, c, a), n in counts.items():
            if n >= 10 and c:
                colours[(g, a)].add(c)
        candidates = [
            p for p in products
            if p.id in held_out and colours[(p.gender, p.article_type)] - {p.base_colour}
        ]  # fmt: skip
        sources: list[tuple[Product, str]] = []
        composed = rng(3)
        for p in composed.sample(candidates, min(args.sources, len(candidates))):
            others = sorted(colours[(p.gender, p.article_type)] - {p.base_colour})
            sources.append((p, composed.choice(others)))
        report.add(composed_table(service, sources, (0.5, 1.0, 1.5, 2.0)))

        report.add(understanding_table(
            settings, service, {"catalog words": catalog_words, "shopper words": shopper},
            (0.05, 0.1, 0.2),
        ))  # fmt: skip
        report.add(depth_table(service, shopper))
        report.add(collapse_table(service, len(identical), sum(identical),
                                  [t for _, t in catalog_words]))  # fmt: skip
        report.add(threshold_table(service, samples, sha_of))
    report.write_markdown(args.markdown)


if __name__ == "__main__":
    main()
