"""Relevance on the judged queries (``fashion_search/learning/judged_queries.jsonl``, every kind
of query a shopper writes), per group, through the search service in process against the
running catalog (``make up``: the whole catalog, embedded by the served model):

    .venv/bin/python -m bench.judged --markdown docs/benchmarks.md

For each configuration (mode, query understanding, boost and title weights, the cutoff), P@10,
nDCG@10 and the share of empty pages per group; then the default configuration's table. The
defaults are chosen on all groups: the best mean P@10 outside the vocabulary among those no
worse than 0.02 on any group than the best of the others.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.relevance import all_products
from bench.report import Report, Table, add_markdown_option
from fashion_search.catalog.db import create_pool
from fashion_search.catalog.repositories import Catalog
from fashion_search.embedding_client import EmbeddingClient
from fashion_search.learning.judged_queries import (
    GROUPS,
    JudgedQuery,
    answerable,
    evaluate_judged,
    judged_queries,
)
from fashion_search.search.request import Refinements, SearchMode
from fashion_search.search.service import SearchService
from fashion_search.settings import Settings, get_settings
from fashion_search.storage import ObjectStore

COLUMNS = [*GROUPS, "outside", "all"]


@dataclass(frozen=True)
class Config:
    """A configuration of the search: its name, mode, understanding and settings."""

    name: str
    mode: SearchMode
    understand: str
    search: dict[str, Any]
    min_score: float | None = -1.0  # None: the version's cutoff


def configs(boosts: Sequence[float], title_weights: Sequence[float]) -> list[Config]:
    """The configurations compared: understanding off, filter and boosts, vector and hybrid."""
    found = []
    for mode in ("vector", "hybrid"):
        weights = title_weights if mode == "hybrid" else (0.0,)
        for weight in weights:
            title = f", title {weight}" if mode == "hybrid" else ""
            found.append(Config(f"{mode}{title}, off", mode, "off", {"title_weight": weight}))
            found.append(Config(f"{mode}{title}, filter", mode, "filter", {"title_weight": weight}))
            for boost in boosts:
                search = {"title_weight": weight, "understanding_boost": boost}
                found.append(Config(f"{mode}{title}, boost {boost}", mode, "boost", search))
    return found


def run(
    settings: Settings,
    service: SearchService,
    config: Config,
    queries: list[tuple[JudgedQuery, int]],
) -> dict[str, dict[str, float]]:
    """Per group metrics of one configuration."""
    searcher = service.reconfigured(settings.replace(search=config.search))
    refine = Refinements(min_score=config.min_score, understand=config.understand)  # type: ignore[arg-type]
    totals = {q.text: n for q, n in queries}

    def rank(text: str) -> list[Any]:
        return [h.product for h in searcher.text(text, 10, mode=config.mode, refine=refine).hits]

    return evaluate_judged(rank, [q for q, _ in queries], lambda q: totals[q.text])


def table(title: str, results: list[tuple[str, dict[str, dict[str, float]]]], metric: str) -> Table:
    """One row per configuration, one column per group."""
    out = Table(title, ["configuration", *COLUMNS])
    for name, metrics in results:
        out.rows.append([name, *(metrics.get(c, {}).get(metric, 0.0) for c in COLUMNS)])
    return out


def chosen(results: list[tuple[str, dict[str, dict[str, float]]]]) -> str:
    """The configuration with the best P@10 outside the vocabulary among those within 0.02 of
    the best on every group."""
    best = {g: max(m[g]["p10"] for _, m in results) for g in GROUPS}
    fit = [(n, m) for n, m in results if all(m[g]["p10"] >= best[g] - 0.02 for g in GROUPS)]
    pool = fit or results
    return max(pool, key=lambda r: (r[1]["outside"]["p10"], r[1]["all"]["p10"]))[0]


def main() -> None:
    """Run the configurations and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--boosts", type=float, nargs="+", default=[0.1, 0.2, 0.5])
    parser.add_argument("--title-weights", type=float, nargs="+", default=[0.05, 0.1, 0.2])
    add_markdown_option(parser)
    args = parser.parse_args()
    report = Report("bench.judged")
    settings = get_settings()
    with create_pool(settings) as pool, EmbeddingClient(settings.model_server.address) as client:
        catalog = Catalog.of(pool)
        service = SearchService(settings, catalog, ObjectStore(settings), client)
        info = client.info()
        products = all_products(catalog)
        queries = answerable(judged_queries(), products, 1)
        serving = catalog.versions.serving()
        report.add(
            f"catalog: {len(products)} products; model {info.registry_name}"
            f" v{info.registry_version} ({info.model_name}); {len(queries)} judged queries"
            f" (of {len(judged_queries())}) with a relevant product; the version's cutoff"
            f" {serving.min_score}"
        )
        results = [(c.name, run(settings, service, c, queries))
                   for c in configs(args.boosts, args.title_weights)]  # fmt: skip
        for metric, what in (("p10", "P@10"), ("ndcg10", "nDCG@10")):
            report.add(table(f"{what} per group, nothing cut", results, metric))
        report.add(f"chosen on all groups: {chosen(results)}")
        search = settings.search
        defaults = Config("the defaults (the version's cutoff)", search.mode, search.understanding,
                          {}, None)  # fmt: skip
        default = run(settings, service, defaults, queries)
        for metric, what in (("p10", "P@10"), ("ndcg10", "nDCG@10"), ("empty", "empty pages")):
            report.add(table(f"{what} per group, the defaults", [(defaults.name, default)], metric))
    report.write_markdown(args.markdown)


if __name__ == "__main__":
    main()
