"""Shoppers' feedback as relevance judgements: for a query, a product is relevant when it got
more positive signals (clicks, add-to-carts) than "not relevant" marks, and judged not
relevant when it got at least as many marks as positive signals. Judgements give an offline
evaluation of any ranker (P@10, MRR) and fine-tuning's extra pairs and hard negatives."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from fashion_search.learning.feedback import POSITIVE_SIGNALS, Feedback, normalize_query


@dataclass
class Judgements:
    """Per normalized query: the products judged relevant and those judged not relevant."""

    relevant: dict[str, set[int]] = field(default_factory=dict)
    not_relevant: dict[str, set[int]] = field(default_factory=dict)

    @classmethod
    def of(cls, records: Iterable[Feedback]) -> Judgements:
        """The judgements ``records`` make."""
        votes: Counter[tuple[str, int]] = Counter()
        for record in records:
            key = (normalize_query(record.query), record.product_id)
            votes[key] += 1 if record.signal in POSITIVE_SIGNALS else -1
        judged = cls()
        for (query, product_id), vote in sorted(votes.items()):
            side = judged.relevant if vote > 0 else judged.not_relevant
            side.setdefault(query, set()).add(product_id)
        return judged

    @property
    def queries(self) -> list[str]:
        """The queries with at least one relevant product (what evaluation asks)."""
        return sorted(self.relevant)


Ranker = Callable[[str], Sequence[int]]


def evaluate_judgements(rank: Ranker, judgements: Judgements, k: int = 10) -> dict[str, float]:
    """P@k, MRR and judged@k (the share of the top k with any judgement) of ``rank`` (query ->
    product ids, best first) over the judged queries; MRR counts the ranks ``rank`` returns."""
    precision, reciprocal, judged = [], [], []
    for query in judgements.queries:
        relevant = judgements.relevant[query]
        known = relevant | judgements.not_relevant.get(query, set())
        ranked = list(rank(query))
        precision.append(sum(p in relevant for p in ranked[:k]) / k)
        first = next((i for i, p in enumerate(ranked, 1) if p in relevant), None)
        reciprocal.append(1 / first if first else 0.0)
        judged.append(sum(p in known for p in ranked[:k]) / k)
    n = max(len(precision), 1)
    return {
        "queries": float(len(precision)),
        f"p_at_{k}": sum(precision) / n,
        "mrr": sum(reciprocal) / n,
        f"judged_at_{k}": sum(judged) / n,
    }


@dataclass(frozen=True)
class TrainingPairs:
    """Fine-tuning's extra examples: (query, index of a relevant product's image) pairs, each
    with the index of a product judged not relevant for that query (a hard negative) or -1;
    indices into the training split."""

    queries: list[str]
    positives: list[int]
    negatives: list[int]
    skipped: int  # judged products outside the training split (test products never train)

    def __len__(self) -> int:
        return len(self.queries)

    @property
    def hard_negatives(self) -> int:
        """How many pairs carry a hard negative."""
        return sum(n >= 0 for n in self.negatives)


def training_pairs(judgements: Judgements, train_ids: Sequence[int]) -> TrainingPairs:
    """Every (query, relevant product) pair whose product is in the training split, each given
    (in turn) one of the query's not-relevant products in the split as its hard negative."""
    index = {product_id: i for i, product_id in enumerate(train_ids)}
    queries, positives, negatives, skipped = [], [], [], 0
    for query in judgements.queries:
        relevant = sorted(judgements.relevant[query])
        wrong = sorted(index[p] for p in judgements.not_relevant.get(query, ()) if p in index)
        skipped += sum(p not in index for p in judgements.not_relevant.get(query, ()))
        for n, product_id in enumerate(relevant):
            if product_id not in index:
                skipped += 1
                continue
            queries.append(query)
            positives.append(index[product_id])
            negatives.append(wrong[n % len(wrong)] if wrong else -1)
    return TrainingPairs(queries, positives, negatives, skipped)
