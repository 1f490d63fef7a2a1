"""Evaluation commands: ``eval-search`` (sampled title queries), ``eval`` (logged judgements),
``eval-ingest`` (upload classification on sampled held-out products)."""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from fashion_search.catalog.db import create_pool
from fashion_search.catalog.repositories import Catalog
from fashion_search.settings import Settings, get_settings
from fashion_search.storage import ObjectStore

if TYPE_CHECKING:
    from fashion_search.search.service import SearchService


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the evaluation commands."""
    p = commands.add_parser(
        "eval-search", help="vector vs hybrid search on the catalog, with the evaluation metrics"
    )
    p.add_argument("--source", help="dataset whose held-out split gives the queries")
    p.add_argument("--limit", type=int, help="read only the first N dataset rows")
    p.add_argument("--queries", type=int, default=1000, help="title queries to sample")
    p.add_argument("--depth", type=int, default=100, help="results per query (MRR cut-off)")
    p.set_defaults(run=_eval_search)

    p = commands.add_parser(
        "eval", help="P@10 and MRR of the served search against logged judgements"
    )
    p.add_argument(
        "--judgements", choices=["feedback"], default="feedback",
        help="feedback: shoppers' clicks, add-to-carts and not-relevant marks",
    )  # fmt: skip
    p.add_argument("--mode", choices=["vector", "hybrid"], help="search mode (FS_SEARCH_MODE)")
    p.add_argument("--depth", type=int, default=100, help="results per query (MRR cut-off)")
    p.set_defaults(run=_eval)

    p = commands.add_parser(
        "eval-ingest", help="accuracy of upload classification on held-out products"
    )
    p.add_argument("--source", help="dataset whose held-out split is classified")
    p.add_argument("--limit", type=int, help="read only the first N dataset rows")
    p.add_argument("--uploads", type=int, default=1000, help="held-out products to classify")
    p.add_argument("--neighbours", type=int, default=10, help="catalog products that vote")
    p.set_defaults(run=_eval_ingest)


@contextmanager
def search_service(settings: Settings) -> Iterator[SearchService]:
    """The search service in this process, on the configured catalog and model server."""
    from fashion_search.embedding_client import EmbeddingClient
    from fashion_search.search.service import SearchService

    with (
        create_pool(settings) as pool,
        EmbeddingClient(settings.model_server.address) as client,
    ):
        yield SearchService(settings, Catalog.of(pool), ObjectStore(settings), client)


def _eval_search(args: argparse.Namespace) -> None:
    from fashion_search.catalog.models import ProductFields
    from fashion_search.dataset import iter_dataset
    from fashion_search.model.data import in_test_split
    from fashion_search.model.evaluate import evaluate_ranker

    settings = get_settings()
    source = args.source or settings.dataset_source
    held_out = [i.fields for i in iter_dataset(source, limit=args.limit) if in_test_split(i.image)]
    titles = sorted({f.product_display_name for f in held_out})
    chosen = set(random.Random(0).sample(titles, min(args.queries, len(titles))))
    queries_from = [f for f in held_out if f.product_display_name in chosen]
    print(f"{len(chosen)} title queries sampled from {len(titles)} held-out titles")
    results: dict[str, dict[str, float]] = {}
    with search_service(settings) as service:
        for mode in ("vector", "hybrid"):

            def rank(text: str, mode: str = mode) -> list[ProductFields]:
                return [h.product for h in service.text(text, args.depth, mode=mode).hits]  # type: ignore[arg-type]

            started = time.perf_counter()
            results[mode] = evaluate_ranker(rank, queries_from)
            print(f"{mode}: {time.perf_counter() - started:.0f} s")
    print(f"{'metric':<18} {'vector':>8} {'hybrid':>8} {'ratio':>7}")
    for name in results["vector"]:
        v, h = results["vector"][name], results["hybrid"][name]
        print(f"{name:<18} {v:>8.4f} {h:>8.4f} {h / v if v else float('nan'):>7.2f}")


def _eval(args: argparse.Namespace) -> None:
    from fashion_search.learning.judgements import Judgements, evaluate_judgements

    settings = get_settings()
    with search_service(settings) as service:
        records = service.catalog.feedback.records()
        judgements = Judgements.of(records)
        print(
            f"{len(records)} feedback records: {len(judgements.queries)} queries with a"
            f" relevant product; searching in {args.mode or settings.search.mode} mode"
        )

        def rank(query: str) -> list[int]:
            return [h.product.id for h in service.text(query, args.depth, mode=args.mode).hits]

        metrics = evaluate_judgements(rank, judgements)
    for name, value in metrics.items():
        print(f"{name:<12} {value:>8.4f}")


def _eval_ingest(args: argparse.Namespace) -> None:
    from fashion_search.dataset import iter_dataset
    from fashion_search.embedding_client import EmbeddingClient
    from fashion_search.ingest.classify import CONFIDENT
    from fashion_search.ingest.evaluate import classification_accuracy
    from fashion_search.model.data import in_test_split

    settings = get_settings()
    held_out = [
        (item.fields, item.image)
        for item in iter_dataset(args.source or settings.dataset_source, limit=args.limit)
        if in_test_split(item.image)
    ]
    sample = random.Random(0).sample(held_out, min(args.uploads, len(held_out)))
    print(
        f"{len(sample)} held-out products classified as uploads; the {len(held_out)} held-out"
        f" products never vote (neighbours: {args.neighbours})"
    )
    with (
        create_pool(settings) as pool,
        EmbeddingClient(settings.model_server.address, timeout_s=120) as client,
    ):
        print(f"model {client.info().registry_name} version {client.info().registry_version}")
        report = classification_accuracy(
            Catalog.of(pool),
            client,
            sample,
            exclude_ids=(fields.id for fields, _ in held_out),
            k=args.neighbours,
        )
    print(
        f"{'label':<15} {'accuracy':>8} {'mean conf':>9}"
        f" {f'acc@conf>={CONFIDENT}':>15} {'coverage':>8}"
    )
    for label, r in report.items():
        print(
            f"{label:<15} {r.accuracy:>8.3f} {r.mean_confidence:>9.3f}"
            f" {r.confident_accuracy:>15.3f} {r.confident_coverage:>8.3f}"
        )
