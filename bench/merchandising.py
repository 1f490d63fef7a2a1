"""What merchandising costs and does, against the running catalog (``make up``: the whole catalog
embedded by the served model), through the search service in process:

    .venv/bin/python -m bench.merchandising --markdown docs/benchmarks.md

- cost: text search p50/p95 on the judged queries, plain (signals off, rules off, no grouping)
  against business signals at their defaults, ``--rules`` rules in force, one result per
  style, and all three; the variants interleaved, ``--rounds`` times. The rules are random but
  of every kind (pin, hide, boost, bury, redirect; conditions on words that the judged queries
  contain, on understood values and on filters) and ``--synonym-sets`` synonym sets, all
  removed afterwards; the plain search reads the same synonym sets (they feed understanding).
- rules: what keeping up with them costs a process (the version check every 2 s, a read after
  a change).
- styles: how many style groups the catalog has (and with two colours or more), and a few
  queries' first hits with and without grouping, to check by eye.
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter
from dataclasses import replace
from typing import Any

from bench.relevance import all_products
from bench.report import Report, Table, add_markdown_option
from bench.search import percentile
from bench.signals import searcher, weights
from fashion_search.cli.evaluation import search_service
from fashion_search.learning.judged_queries import answerable, judged_queries
from fashion_search.search.merchandising import Merchandising
from fashion_search.search.request import Refinements
from fashion_search.search.service import SearchService
from fashion_search.search.styles import colour_words, group_by_style, style_key
from fashion_search.search.words import words
from fashion_search.settings import get_settings

#: Queries whose first hits are shown plain and one per style: the issue's example (one
#: T-shirt in many colours), and two that name no colour.
EXAMPLES = ("Puma Men Grey T-shirt", "puma t-shirt for men", "nike sports shoes")


def random_rules(
    service: SearchService, texts: list[str], n: int, sets: int, seed: int
) -> list[dict[str, Any]]:
    """``n`` rules of every kind and ``sets`` one-way synonym sets, as bodies."""
    rng = random.Random(seed)
    facets = service.catalog.products.facets()
    ids = [p.id for p in service.catalog.products.list_products(limit=1000).items]
    vocabulary = sorted({w for t in texts for w in words(t) if len(w) > 3})

    def value(field: str) -> str:
        return str(rng.choice(facets[field]))

    bodies: list[dict[str, Any]] = []
    for i in range(n):
        when = rng.choice([
            {"query": rng.choice(vocabulary), "match": "contains"},
            {"query": rng.choice(texts)},
            {"attributes": {"articleType": value("articleType")}},
            {"filters": {"gender": value("gender")}},
        ])  # fmt: skip
        then = [
            {"pin": [{"productId": rng.choice(ids), "position": rng.randint(1, 10)}]},
            {"hide": rng.sample(ids, 3)},
            {"boost": {"attributes": {"baseColour": value("baseColour")}, "weight": 0.1}},
            {"bury": {"productIds": rng.sample(ids, 5), "weight": 0.2}},
            {"redirect": {"season": value("season")}},
        ][i % 5]
        bodies.append({"when": when, "then": then})
    targets = [str(v) for v in facets["articleType"]]
    bodies += [{"words": [f"merch{i}word"], "synonyms": [rng.choice(targets)]} for i in range(sets)]
    return bodies


def reading(merchandising: Merchandising, times: int = 50) -> Table:
    """What a process pays to keep up with the rules: the version check every
    ``RULES_TTL_S``, and reading and parsing every entry after a change."""
    check, read = [], []
    for _ in range(times):
        started = time.perf_counter()
        merchandising.catalog.rules.version()
        check.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        merchandising.read()
        read.append((time.perf_counter() - started) * 1000)
    entries = len(merchandising.entries())
    table = Table(f"keeping up with {entries} rules and sets", ["step", "p50 ms", "p95 ms"])
    for name, values in (("version check (every 2 s)", check), ("read after a change", read)):
        table.rows.append([name, percentile(values, 50), percentile(values, 95)])
    return table


def style_groups(service: SearchService) -> Table:
    """How many style groups the whole catalog has."""
    products = all_products(service.catalog)
    colours = colour_words(service.catalog.products.facets()["baseColour"])
    groups = group_by_style(products, lambda p: p, colours)
    sizes = Counter(min(1 + len(v), 5) for _, v in groups)
    columns = ["products", "groups", "styles", "with 2+ colours", "colours: 1 / 2 / 3 / 4 / 5+"]
    table = Table("style groups of the catalog", columns)
    table.rows.append([
        len(products), len(groups), len({style_key(p, colours) for p in products}),
        sum(1 for _, v in groups if v), " / ".join(str(sizes[i]) for i in range(1, 6)),
    ])  # fmt: skip
    return table


def example(service: SearchService, query: str) -> Table:
    """A query's first hits, plain and one per style."""
    refine = Refinements(rules=False)
    plain = service.text(query, 10, refine=refine).hits
    styled = service.text(query, 10, refine=replace(refine, group="style")).hits
    table = Table(f'"{query}": the first hits', ["#", "plain", "one per style", "its variants"])
    for i in range(10):
        left = plain[i].product.product_display_name if i < len(plain) else ""
        hit = styled[i] if i < len(styled) else None
        table.rows.append([
            i + 1, left, hit.product.product_display_name if hit else "",
            ", ".join(v.product.base_colour or "?" for v in hit.variants) if hit else "",
        ])  # fmt: skip
    return table


def main() -> None:
    """Run both parts and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rules", type=int, default=100)
    parser.add_argument("--synonym-sets", type=int, default=20)
    add_markdown_option(parser)
    args = parser.parse_args()
    report = Report("bench.merchandising")
    with search_service(get_settings()) as base:
        catalog = base.catalog
        plain, signals = searcher(base, weights(0)), searcher(base, weights(1))
        texts = [q.text for q, _ in answerable(judged_queries(), all_products(catalog), 1)]
        run = f"bench-merchandising-{time.time_ns()}"
        added = [base.merchandising.add(body, run) for body in random_rules(
            base, texts, args.rules, args.synonym_sets, 7)]  # fmt: skip
        try:
            variants: dict[str, tuple[SearchService, Refinements]] = {
                "plain": (plain, Refinements(rules=False)),
                "signals (defaults)": (signals, Refinements(rules=False)),
                f"{args.rules} rules": (plain, Refinements()),
                "one per style": (plain, Refinements(rules=False, group="style")),
                "all three": (signals, Refinements(group="style")),
            }
            timings: dict[str, list[float]] = {name: [] for name in variants}
            applied: Counter[str] = Counter()
            for _ in range(args.rounds):
                for name, (search, refine) in variants.items():
                    for text in texts:
                        started = time.perf_counter()
                        result = search.text(text, 10, refine=refine)
                        timings[name].append((time.perf_counter() - started) * 1000)
                        applied[name] += bool(result.rules)
            report.add(
                f"catalog: {len(all_products(catalog))} products; {len(texts)} judged queries;"
                f" {args.rules} random rules and {args.synonym_sets} synonym sets in force"
            )
            cost = Table("text search, in process", ["variant", "searches", "with a rule applied",
                                                     "p50 ms", "p95 ms", "ratio"])  # fmt: skip
            baseline = percentile(timings["plain"], 50)
            for name, values in timings.items():
                p50 = percentile(values, 50)
                cost.rows.append([name, len(values), applied[name], p50, percentile(values, 95),
                                  p50 / baseline])  # fmt: skip
            report.add(cost)
            report.add(reading(base.merchandising))
        finally:
            for entry in added:
                base.merchandising.remove(entry.id)
        report.add(style_groups(base))
        for query in EXAMPLES:
            report.add(example(plain, query))
    report.write_markdown(args.markdown)


if __name__ == "__main__":
    main()
