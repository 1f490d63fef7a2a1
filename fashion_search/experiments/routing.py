"""A search inside the running experiment: the arm a session's search goes to (or both arms,
merged by team draft), recorded so that what the shopper does next is credited to the arm that
showed it; the answer names the experiment and the arm."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fashion_search.catalog.experiments import Experiment, ExperimentRepository
from fashion_search.experiments.assignment import assign
from fashion_search.experiments.design import Arm
from fashion_search.experiments.interleaving import INTERLEAVED, team_draft

if TYPE_CHECKING:  # the search service imports this module
    from fashion_search.search.request import SearchRequest
    from fashion_search.search.service import SearchResult


@dataclass(frozen=True)
class Shown:
    """The experiment and arm that answered a search, and the search's id (feedback names it:
    what the shopper did is credited to that arm)."""

    experiment_id: int
    arm: str
    search_id: int


def search_in(
    experiment: Experiment,
    request: SearchRequest,
    session_id: str,
    search_arm: Callable[[Arm, SearchRequest], SearchResult],
    searches: ExperimentRepository,
) -> SearchResult:
    """The answer of ``session_id``'s arm (``search_arm``), or with interleaving both arms'
    hits merged, each naming the arm that put it there (the first arm's answer otherwise: its
    mode, timings, understanding; exact only if both are); recorded in ``searches``."""
    if not experiment.design.interleave:
        arm = assign(experiment.id, experiment.design, session_id)
        result = search_arm(arm, request)
        search_id = searches.record_search(experiment.id, arm.name, session_id)
        return dataclasses.replace(result, experiment=Shown(experiment.id, arm.name, search_id))
    arms = experiment.design.arms
    results = [search_arm(arm, request) for arm in arms]
    hits = [{hit.product.id: hit for hit in result.hits} for result in results]
    merged = team_draft(list(hits[0]), list(hits[1]), request.k, random.Random())
    search_id = searches.record_search(experiment.id, INTERLEAVED, session_id, dict(merged))
    return dataclasses.replace(
        results[0],
        hits=[dataclasses.replace(hits[team][id_], arm=arms[team].name) for id_, team in merged],
        experiment=Shown(experiment.id, INTERLEAVED, search_id),
        exact=all(result.exact for result in results),
    )
