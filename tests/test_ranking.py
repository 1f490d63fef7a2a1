"""The ranking of a search's candidates (pure: arrays in, order out)."""

from __future__ import annotations

import numpy as np

from fashion_search.search.ranking import Candidates, RankPlan, rank


def _candidates(
    similarity: list[float],
    title: list[float] | None = None,
    named: list[int] | None = None,
    understood: int = 0,
    ids: list[int] | None = None,
) -> Candidates:
    n = len(similarity)
    titles = np.array(title or [0.0] * n)
    return Candidates(
        ids=np.array(ids or list(range(1, n + 1))),
        similarity=np.array(similarity),
        titled=titles > 0,
        title=titles,
        named=np.array(named or [0] * n),
        understood=understood,
    )


def _plan(depth: int = 10, min_score: float | None = None) -> RankPlan:
    return RankPlan(depth, title_weight=0.5, understanding_boost=0.5, min_score=min_score)


def test_candidates_rank_by_similarity_ties_by_id() -> None:
    ranking = rank(_candidates([0.2, 0.9, 0.5, 0.9], ids=[4, 3, 2, 1]), _plan())
    assert ranking.kept.tolist() == [3, 1, 2, 0]
    assert not ranking.below_cutoff and ranking.cut == 0


def test_title_matches_and_understood_values_boost() -> None:
    candidates = _candidates([0.6, 0.5, 0.4], title=[0.0, 0.2, 0.1], named=[0, 0, 2], understood=2)
    ranking = rank(candidates, _plan())
    # 0.6; 0.5 + 0.5 * 0.2 / 0.2 = 1.0; 0.4 + 0.5 * 0.1 / 0.2 + 0.5 * 2 = 1.65
    assert ranking.kept.tolist() == [2, 1, 0]
    np.testing.assert_allclose(ranking.score, [0.6, 1.0, 1.65])


def test_depth_keeps_the_first_candidates_at_least_as_many_as_title_matches() -> None:
    assert rank(_candidates([0.9, 0.8, 0.7]), _plan(depth=2)).kept.tolist() == [0, 1]
    candidates = _candidates([0.9, 0.8, 0.1, 0.2], title=[0, 0, 0.3, 0.3])  # 0.6 and 0.7
    assert rank(candidates, _plan(depth=1)).kept.tolist() == [0, 1]
    assert rank(candidates, _plan(depth=3)).kept.tolist() == [0, 1, 3]


def test_the_cutoff_spares_what_the_query_words_vouch_for() -> None:
    candidates = _candidates(
        [0.9, 0.3, 0.2, 0.1], title=[0, 0.5, 0, 0], named=[0, 0, 1, 0], understood=1
    )
    ranking = rank(candidates, _plan(min_score=0.5))
    assert sorted(ranking.kept.tolist()) == [0, 1, 2]
    assert ranking.cut == 1 and not ranking.below_cutoff


def test_the_cutoff_never_empties_the_page() -> None:
    ranking = rank(_candidates([0.3, 0.2]), _plan(min_score=0.5))
    assert ranking.kept.tolist() == [0, 1] and ranking.below_cutoff and ranking.cut == 0
    empty = rank(_candidates([]), _plan(min_score=0.5))
    assert empty.kept.size == 0 and not empty.below_cutoff
