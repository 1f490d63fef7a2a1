"""Each arm's figures and the sequential test that says when to stop.

The unit is the session (assignment is by session, so a session's searches are not
independent): each figure is a ratio of sums over sessions (clicked searches over searches),
and its variance is the session-clustered (delta method) one. The 95% intervals are normal.

An interleaved experiment (:mod:`.interleaving`) compares the arms within each search instead:
its figure is each arm's win rate, and the test runs on the mean preference per search.

The test is the mixture sequential probability ratio test (mSPRT; Johari, Pekelis and Walsh,
"Always valid inference", 2017) on the difference in click-through at 10 between each arm and
the first (the control): with the difference ``d``, its variance ``V`` and a normal mixture of
effects of standard deviation ``tau``, ``L = sqrt(V/(V+tau^2)) exp(tau^2 d^2 / (2V(V+tau^2)))``.
Stopping the first time ``L >= 1/alpha`` keeps the chance of a wrong "better" or "worse" at
most ``alpha`` however often the status is read, so ``status`` may be read after every
search. Several arms against the control share alpha (Bonferroni). Until each arm has
``min_sessions`` sessions the plug-in variance is too rough to trust: keep running.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from fashion_search.experiments.interleaving import preference

#: Standard deviation of the effects the test mixes over (click-through at 10, or the mean
#: preference of an interleaving, absolute): a few points are what a ranking or model moves.
MIXTURE_SD = 0.05
#: The figures reported per arm: name -> what a search counts for it.
FIGURES = ("ctr_at_10", "add_to_cart_rate", "mrr_first_click", "not_relevant_rate")
_Z95 = 1.959964

Verdict = Literal["keep running", "better, stop", "worse, stop"]


@dataclass(frozen=True)
class SearchOutcome:
    """What a shopper did after one search: the arm and session it was in, the position of
    their first click (None: no click), whether they added a shown product to the cart, or
    marked one not relevant; for an interleaved search, the clicks each arm's results got."""

    arm: str
    session_id: str
    first_click: int | None
    added_to_cart: bool
    not_relevant: bool
    #: An interleaved search's clicks credited to the first and the second arm.
    credits: tuple[int, int] | None = None

    def value(self, figure: str) -> float:
        """What this search counts for ``figure`` (one of :data:`FIGURES`)."""
        if figure == "ctr_at_10":
            return float(self.first_click is not None and self.first_click <= 10)
        if figure == "mrr_first_click":
            return 0.0 if self.first_click is None else 1.0 / self.first_click
        if figure == "add_to_cart_rate":
            return float(self.added_to_cart)
        return float(self.not_relevant)


@dataclass(frozen=True)
class Estimate:
    """A figure with its variance and 95% interval."""

    value: float
    variance: float

    @property
    def interval(self) -> tuple[float, float]:
        half = _Z95 * math.sqrt(self.variance)
        return (self.value - half, self.value + half)


@dataclass(frozen=True)
class ArmFigures:
    """One arm: its sessions, searches, and each figure of :data:`FIGURES`."""

    arm: str
    sessions: int
    searches: int
    figures: dict[str, Estimate]


@dataclass(frozen=True)
class Comparison:
    """An arm against the control (click-through at 10, or an interleaving's preference): the
    difference, the mixture likelihood ratio, the always-valid p-value at this look, and the
    verdict."""

    arm: str
    difference: Estimate
    likelihood_ratio: float
    p_value: float
    verdict: Verdict


def ratio(totals: np.ndarray, counts: np.ndarray) -> Estimate:
    """The ratio of sums ``sum(totals)/sum(counts)`` over sessions, with its session-clustered
    (delta method) variance."""
    n = len(counts)
    if n == 0 or counts.sum() == 0:
        return Estimate(0.0, math.inf)
    value = float(totals.sum() / counts.sum())
    if n < 2:
        return Estimate(value, math.inf)
    residuals = totals - value * counts
    variance = float(residuals.var(ddof=1) / (n * counts.mean() ** 2))
    return Estimate(value, variance)


def figures_of(arm: str, outcomes: Sequence[SearchOutcome]) -> ArmFigures:
    """An arm's figures over its searches' outcomes."""
    sessions: dict[str, list[SearchOutcome]] = {}
    for outcome in outcomes:
        sessions.setdefault(outcome.session_id, []).append(outcome)
    counts = np.array([len(s) for s in sessions.values()], dtype=float)
    figures = {
        figure: ratio(
            np.array([sum(o.value(figure) for o in s) for s in sessions.values()], dtype=float),
            counts,
        )
        for figure in FIGURES
    }
    return ArmFigures(arm, len(sessions), len(outcomes), figures)


def msprt(difference: Estimate, tau: float = MIXTURE_SD) -> float:
    """The normal-mixture likelihood ratio of a difference against none (1: no evidence, as
    when the variance is unknown, or zero with no difference)."""
    v, tau2 = difference.variance, tau * tau
    if not math.isfinite(v) or v <= 0:
        return math.inf if v == 0 and difference.value != 0 else 1.0
    exponent = tau2 * difference.value**2 / (2 * v * (v + tau2))
    return math.sqrt(v / (v + tau2)) * math.exp(min(exponent, 700.0))


def sequential_test(arm: str, difference: Estimate, alpha: float, enough: bool) -> Comparison:
    """``arm``'s difference from the control judged by the mSPRT: its always-valid p-value at
    this look, and the call, once there is ``enough`` data (module docstring)."""
    likelihood = msprt(difference)
    p_value = min(1.0, 1.0 / likelihood)
    verdict: Verdict = "keep running"
    if enough and p_value <= alpha:
        verdict = "better, stop" if difference.value > 0 else "worse, stop"
    return Comparison(arm, difference, likelihood, p_value, verdict)


def compare(control: ArmFigures, arm: ArmFigures, alpha: float, min_sessions: int) -> Comparison:
    """``arm`` against ``control`` on click-through at 10 (module docstring)."""
    a, b = control.figures["ctr_at_10"], arm.figures["ctr_at_10"]
    difference = Estimate(b.value - a.value, a.variance + b.variance)
    enough = min(control.sessions, arm.sessions) >= min_sessions
    return sequential_test(arm.arm, difference, alpha, enough)


@dataclass(frozen=True)
class Analysis:
    """Every arm's figures (the control first) and each other arm against the control."""

    arms: list[ArmFigures]
    comparisons: list[Comparison]

    @property
    def verdict(self) -> str:
        """What to do now: "keep running", or the arm that won or lost and "stop"."""
        decided = [c for c in self.comparisons if c.verdict != "keep running"]
        better = [c for c in decided if c.verdict == "better, stop"]
        if better:
            best = max(better, key=lambda c: c.difference.value)
            return f"{best.arm} better, stop"
        if decided and len(decided) == len(self.comparisons):
            return f"{self.arms[0].arm} better, stop"
        return "keep running"


def analyse_interleaved(
    arms: Sequence[str], outcomes: Iterable[SearchOutcome], alpha: float, min_sessions: int
) -> Analysis:
    """The analysis of an interleaving of two arms: each arm's win rate (the share of searches
    whose clicks went more to its results), and the second against the first on the mean
    preference (+1 a search the second won, -1 the first, 0 a tie), by the same test."""
    sessions: dict[str, list[int]] = {}
    for outcome in outcomes:
        firsts, seconds = outcome.credits or (0, 0)
        sessions.setdefault(outcome.session_id, []).append(preference(firsts, seconds))
    counts = np.array([len(s) for s in sessions.values()], dtype=float)
    wins = [np.array([s.count(side) for s in sessions.values()], dtype=float) for side in (-1, 1)]
    figures = [
        ArmFigures(arm, len(sessions), int(counts.sum()), {"win_rate": ratio(won, counts)})
        for arm, won in zip(arms, wins, strict=True)
    ]
    difference = ratio(wins[1] - wins[0], counts)
    comparison = sequential_test(arms[1], difference, alpha, len(sessions) >= min_sessions)
    return Analysis(figures, [comparison])


def analyse(
    arms: Sequence[str], outcomes: Iterable[SearchOutcome], alpha: float, min_sessions: int
) -> Analysis:
    """The analysis of an experiment with ``arms`` (the first the control) over its searches'
    outcomes; alpha is shared by the comparisons with the control."""
    by_arm: dict[str, list[SearchOutcome]] = {arm: [] for arm in arms}
    for outcome in outcomes:
        by_arm.setdefault(outcome.arm, []).append(outcome)
    figures = [figures_of(arm, by_arm[arm]) for arm in arms]
    share = alpha / max(1, len(arms) - 1)
    comparisons = [compare(figures[0], other, share, min_sessions) for other in figures[1:]]
    return Analysis(figures, comparisons)
