"""Judged queries: queries as shoppers write them, in groups, each with a metadata rule that
says which products are relevant (built from the catalog by rules: ``python -m bench.judged
build``; kept in ``judged_queries.jsonl`` beside this module).

A product is relevant to a query when each field the rule names has one of the rule's values,
and its title has each of the rule's title words (a word of the title that starts with it:
``stripe`` finds "Striped" and "Stripes"). Any ranker (query -> products, best first) is
scored per group: P@10, nDCG@10 (binary gains) and the share of empty pages. Evaluation of
the search (``bench.judged``), training's comparison with the champion (model alone, on the
held-out split) and the calibration of a version's cutoff all read these queries.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from fashion_search.catalog.models import ProductFields

#: The judged queries of this repository.
JUDGED_QUERIES = Path(__file__).with_name("judged_queries.jsonl")
#: The groups, in reporting order.
GROUPS = (
    "attribute", "attribute-shopper", "synonym", "brand", "pattern", "occasion", "typo",
    "spanish", "description",
)  # fmt: skip
#: The groups in the catalog's own words; the others are "outside the vocabulary".
IN_VOCABULARY = ("attribute", "attribute-shopper")
_WORD = re.compile(r"[a-z0-9]+")


class JudgedQuery(BaseModel):
    """A query, its group, and the rule of what is relevant (snake_case field -> values;
    title words, lower case)."""

    model_config = ConfigDict(frozen=True)

    text: str
    group: str
    fields: dict[str, list[str]]
    title_words: list[str] = []

    def relevant(self, product: ProductFields) -> bool:
        """Whether ``product`` is relevant to the query."""
        if any(getattr(product, f) not in values for f, values in self.fields.items()):
            return False
        if not self.title_words:
            return True
        title = _WORD.findall(product.product_display_name.lower())
        return all(any(w.startswith(word) for w in title) for word in self.title_words)


@cache
def judged_queries(path: Path = JUDGED_QUERIES) -> tuple[JudgedQuery, ...]:
    """The judged queries stored at ``path``."""
    lines = path.read_text().splitlines()
    return tuple(JudgedQuery.model_validate_json(line) for line in lines if line.strip())


def ndcg(relevance: Sequence[bool], relevant_total: int, k: int = 10) -> float:
    """nDCG@k of a ranking's binary relevance, against an ideal of ``relevant_total``."""
    dcg = sum(1 / math.log2(i + 2) for i, r in enumerate(relevance[:k]) if r)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(k, relevant_total)))
    return dcg / ideal if ideal else 0.0


Ranker = Callable[[str], Sequence[ProductFields]]


def evaluate_judged(
    rank: Ranker,
    queries: Sequence[JudgedQuery],
    relevant_total: Callable[[JudgedQuery], int],
    k: int = 10,
) -> dict[str, dict[str, float]]:
    """Per group (and ``all``, and ``outside`` the vocabulary): the queries, mean P@k, nDCG@k
    and the share of empty pages of ``rank``; ``relevant_total`` says how many relevant
    products the searched collection has for a query."""
    rows: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for query in queries:
        hits = list(rank(query.text))[:k]
        flags = [query.relevant(p) for p in hits]
        row = (sum(flags) / k, ndcg(flags, relevant_total(query), k), float(not hits))
        for name in (query.group, "all", *(() if query.group in IN_VOCABULARY else ("outside",))):
            rows[name].append(row)
    return {
        name: {
            "queries": float(len(values)),
            "p10": float(np.mean([v[0] for v in values])),
            "ndcg10": float(np.mean([v[1] for v in values])),
            "empty": float(np.mean([v[2] for v in values])),
        }
        for name, values in rows.items()
    }


def answerable(
    queries: Sequence[JudgedQuery], products: Sequence[ProductFields], at_least: int
) -> list[tuple[JudgedQuery, int]]:
    """The queries with at least ``at_least`` relevant ``products``, with how many."""
    counted = [(q, sum(q.relevant(p) for p in products)) for q in queries]
    return [(q, n) for q, n in counted if n >= at_least]
