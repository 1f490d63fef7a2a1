"""Team-draft interleaving (Radlinski, Kurup and Joachims, "How does clickthrough data reflect
retrieval quality?", 2008): two rankings merged into one list, each result credited to the
ranking (team) that put it there, so a shopper's clicks say which ranking they preferred
within one page: more sensitive than splitting shoppers, since both arms meet the same
shopper and query.

Each round a coin decides which team picks first when both have picked as often; a team
picks its best result not already in the list.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Sequence
from typing import TypeVar

Item = TypeVar("Item", bound=Hashable)
#: The arm an interleaved search is recorded under (each hit names its own).
INTERLEAVED = "interleaved"


def team_draft(
    first: Sequence[Item], second: Sequence[Item], k: int, rng: random.Random
) -> list[tuple[Item, int]]:
    """The first ``k`` of the interleaved list of two rankings, each item with its team (0:
    ``first``'s, 1: ``second``'s); fewer when the rankings hold fewer distinct items."""
    rankings, picked, cursors = (first, second), [0, 0], [0, 0]
    merged: list[tuple[Item, int]] = []
    chosen: set[Item] = set()
    while len(merged) < k:
        if picked[0] < picked[1]:
            team = 0
        elif picked[1] < picked[0]:
            team = 1
        else:
            team = rng.randrange(2)
        for attempt in (team, 1 - team):  # a team with nothing left lets the other pick
            ranking, cursor = rankings[attempt], cursors[attempt]
            while cursor < len(ranking) and ranking[cursor] in chosen:
                cursor += 1
            cursors[attempt] = cursor
            if cursor < len(ranking):
                item = ranking[cursor]
                chosen.add(item)
                merged.append((item, attempt))
                picked[attempt] += 1
                break
        else:
            break  # both exhausted
    return merged


def preference(first_clicks: int, second_clicks: int) -> int:
    """A search's verdict from the clicks credited to each team: +1 when the second team got
    more, -1 when the first did, 0 for a tie (no click included)."""
    return (second_clicks > first_clicks) - (first_clicks > second_clicks)
