"""Fine-tuning with shoppers' feedback, the shoppers SIMULATED: does training on logged clicks
help queries nobody clicked on?

The served champion (``make up``) ranks the training split's products for attribute queries
in shoppers' words ("navy blue shirt for men's", "Navy Blue Shirts for Men"). A simulated
shopper clicks every metadata-relevant product (same gender, baseColour and articleType) in
each top 10 and marks the irrelevant ones of the top 5 "not relevant". Those records become
judgements and training pairs exactly as logged feedback does
(:mod:`fashion_search.learning.judgements`). The champion is then fine-tuned twice with the same
seed and recipe, without and with them, and both are evaluated on a held-out judged set:
queries of other attribute combinations (disjoint from the clicked ones) over the test split's
products (never trained on), judged by metadata, plus the training run's own metrics:

    .venv/bin/python -m bench.feedback --markdown docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import copy
import random
import time
from collections import defaultdict

import numpy as np

from bench.relevance import shopper_words
from bench.report import Report, Table, add_markdown_option
from fashion_search.learning.feedback import Feedback, normalize_query
from fashion_search.learning.judgements import (
    Judgements,
    TrainingPairs,
    evaluate_judgements,
    training_pairs,
)
from fashion_search.model.data import ProductImages, attribute_text, load_split
from fashion_search.model.embed import embed_images, embed_texts
from fashion_search.model.evaluate import UNSEEN_PHRASING, evaluate
from fashion_search.model.factory import Clip
from fashion_search.model.registry import champion, configure_mlflow, load_version
from fashion_search.model.train import TrainConfig, train
from fashion_search.settings import get_settings

Key = tuple[str, str, str]


def phrasings(key: Key) -> list[str]:
    """The queries a shopper might type for an attribute combination."""
    return [shopper_words(*key), attribute_text(*key, UNSEEN_PHRASING)]


def combos(data: ProductImages, at_least: int) -> dict[Key, list[int]]:
    """Attribute combination -> indices of its products, for those with ``at_least``."""
    by_key: dict[Key, list[int]] = defaultdict(list)
    for i, f in enumerate(data.fields):
        if f.gender and f.base_colour and f.article_type:
            by_key[(f.gender, f.base_colour, f.article_type)].append(i)
    return {k: v for k, v in by_key.items() if len(v) >= at_least}


def simulate_shoppers(clip: Clip, data: ProductImages, keys: list[Key]) -> list[Feedback]:
    """Clicks on the relevant products of each top 10, "not relevant" on the top 5's others."""
    images = embed_images(clip, data.images)
    records = []
    for n, key in enumerate(keys):
        for query in phrasings(key):
            top = np.argsort(-(embed_texts(clip, [query])[0] @ images.T))[:10]
            for position, i in enumerate(top.tolist(), 1):
                f = data.fields[i]
                relevant = (f.gender, f.base_colour, f.article_type) == key
                if relevant or position <= 5:
                    records.append(Feedback(
                        signal="click" if relevant else "not_relevant", query=query,
                        product_id=f.id, position=position, session_id=f"simulated-{n}",
                    ))  # fmt: skip
    return records


def judged_set(data: ProductImages, keys: list[Key]) -> Judgements:
    """Held-out judgements by metadata: every product of the combination is relevant."""
    wanted = combos(data, 1)
    judged = Judgements()
    for key in keys:
        for query in phrasings(key):
            judged.relevant[normalize_query(query)] = {data.fields[i].id for i in wanted[key]}
    return judged


def search_metrics(clip: Clip, data: ProductImages, judged: Judgements) -> dict[str, float]:
    """P@10 and MRR of exact search over ``data`` by ``clip`` on the judged queries."""
    images = embed_images(clip, data.images)
    ids = [f.id for f in data.fields]

    def rank(query: str) -> list[int]:
        scores = embed_texts(clip, [query])[0] @ images.T
        return [ids[i] for i in np.argsort(-scores)[:100]]

    return evaluate_judgements(rank, judged)


def main() -> None:
    """Simulate, fine-tune twice, evaluate, print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit", type=int, default=12000, help="dataset rows")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--batch-size", type=int, default=64)
    add_markdown_option(parser)
    args = parser.parse_args()
    settings = get_settings()
    report = Report("bench.feedback")
    client = configure_mlflow(settings)
    current = champion(client, settings.registry.model_name, settings.registry.model_alias)
    if current is None:
        raise SystemExit("no champion: run `make up` first")
    base = load_version(current)
    train_data = load_split(settings.dataset_source, base.image_size, "train", args.limit)
    test_data = load_split(settings.dataset_source, base.image_size, "test", args.limit)
    keys = sorted(set(combos(train_data, 10)) & set(combos(test_data, 5)))
    random.Random(0).shuffle(keys)
    clicked, held_out = keys[: len(keys) // 2], keys[len(keys) // 2 :]
    records = simulate_shoppers(base, train_data, clicked)
    pairs = training_pairs(Judgements.of(records), [f.id for f in train_data.fields])
    report.add(
        f"SIMULATED shoppers. Champion {current.name} v{current.version}; first {args.limit}"
        f" dataset rows: {len(train_data)} train, {len(test_data)} test products."
        f" {len(clicked)} attribute combinations clicked on ({len(records)} records:"
        f" {sum(r.signal == 'click' for r in records)} clicks,"
        f" {sum(r.signal == 'not_relevant' for r in records)} not relevant; {len(pairs)}"
        f" training pairs, {pairs.hard_negatives} with a hard negative); {len(held_out)} other"
        f" combinations judged on the test split (2 phrasings each). Fine-tuning: {args.epochs}"
        f" epochs, lr {args.lr}, batch {args.batch_size}, seed 0."
    )
    judged = judged_set(test_data, held_out)
    config = TrainConfig(
        epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, warmup_steps=20
    )
    table = Table(
        "Fine-tuning without and with simulated clicks (held-out queries and products)",
        ["model", "pairs", "P@10", "MRR", "title R@1", "attr P@10 seen", "attr P@10 unseen",
         "train s"],
    )  # fmt: skip
    runs: list[tuple[str, TrainingPairs | None]] = [
        ("champion", None), ("fine-tuned, no clicks", None), ("fine-tuned, clicks", pairs),
    ]  # fmt: skip
    for name, extra in runs:
        clip, took = base, 0.0
        if name != "champion":
            clip = copy.deepcopy(base)
            started = time.perf_counter()
            train(clip, train_data, config, progress=False, pairs=extra)
            took = time.perf_counter() - started
        found = search_metrics(clip, test_data, judged)
        metrics = evaluate(clip, test_data)
        table.rows.append([
            name, len(extra) if extra else 0, round(found["p_at_10"], 3), round(found["mrr"], 3),
            round(metrics["title_r1"], 3), round(metrics["attr_p10_seen"], 3),
            round(metrics["attr_p10_unseen"], 3), round(took),
        ])  # fmt: skip
        print(table.rows[-1], flush=True)
    report.add(table)
    report.write_markdown(args.markdown)


if __name__ == "__main__":
    main()
