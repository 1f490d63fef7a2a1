"""Ranking of a search's candidates, over arrays: scores, the order, and the relevance cutoff.

A candidate's score is its cosine similarity to the query, plus ``title_weight`` times its
title match's rank relative to the best title match (hybrid search), plus
``understanding_boost`` for each understood value it has, plus its business signals
(:mod:`fashion_search.search.signals`). The first ``depth`` candidates by
score (and every title match) are ranked; those below ``min_score`` are cut unless the query's
words vouch for them (a title match, or every understood value); when the cutoff would leave
nothing, the ranked candidates are kept and marked as below it (never an empty page).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

Array = np.ndarray[Any, Any]


@dataclass(frozen=True)
class RankPlan:
    """How one search ranks: the candidates it looks at, its boosts and its cutoff."""

    depth: int
    title_weight: float
    understanding_boost: float
    min_score: float | None


@dataclass(frozen=True)
class Candidates:
    """Arrays over a search's candidates: product ids, cosine similarities, whether each
    matches the title search and its rank there (0 for none), how many understood values each
    has, how many values were understood, and each business signal's contribution."""

    ids: Array
    similarity: Array
    titled: Array
    title: Array
    named: Array
    understood: int
    signals: dict[str, Array] = field(default_factory=dict)


@dataclass(frozen=True)
class Ranking:
    """The candidates kept, best first (indices into :class:`Candidates`), every candidate's
    score and what each part of it contributed, how many ranked candidates the cutoff
    dropped, and whether none passed it."""

    kept: Array
    score: Array
    parts: dict[str, Array]
    cut: int
    below_cutoff: bool


def rank(candidates: Candidates, plan: RankPlan) -> Ranking:
    """The candidates scored, ordered (ties by product id), and cut (module docstring)."""
    c = candidates
    best_title = float(c.title.max(initial=0.0))
    parts = {"similarity": c.similarity, "understanding": plan.understanding_boost * c.named}
    if best_title > 0:
        parts["title"] = plan.title_weight * c.title / best_title
    parts |= c.signals
    score = np.sum(list(parts.values()), axis=0)
    ranked = np.lexsort((c.ids, -score))[: max(plan.depth, int(np.count_nonzero(c.titled)))]
    if plan.min_score is None:
        return Ranking(ranked, score, parts, 0, False)
    vouched = c.titled[ranked] | (c.understood > 0) & (c.named[ranked] == c.understood)
    kept = ranked[(c.similarity[ranked] >= plan.min_score) | vouched]
    if ranked.size and not kept.size:
        return Ranking(ranked, score, parts, 0, True)
    return Ranking(kept, score, parts, ranked.size - kept.size, False)
