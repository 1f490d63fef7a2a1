"""Online experiments, the shoppers SIMULATED: how many sessions the sequential test needs to
call a better arm, split A/B or interleaved, and how often it calls a difference that is not
there.

Each arm is a ranking of a given quality: each of its 10 results is relevant with probability
``q`` (its P@10). A simulated shopper runs 1 to 5 searches; at each, they leave without
looking with probability 0.3, else look at position ``i`` with probability ``1/i`` (position
bias) and click a result they look at with probability 0.9 if it is relevant and 0.05 if not
(noise). Sessions are assigned by the real
assignment (:mod:`fashion_search.experiments.assignment`) to arms A and B (half each), and the
real analysis (:mod:`fashion_search.experiments.analysis`) is read every ``--look-every``
sessions, as an impatient experimenter would, until it says stop or ``--max-sessions``:

    .venv/bin/python -m bench.experiments --markdown docs/benchmarks.md
"""

from __future__ import annotations

import argparse

import numpy as np

from bench.report import Report, Table, add_markdown_option
from fashion_search.experiments.analysis import ArmFigures, compare, ratio, sequential_test
from fashion_search.experiments.assignment import assign
from fashion_search.experiments.design import Design
from fashion_search.settings import ExperimentSettings

#: Chance of leaving a search unlooked at, of looking at positions 1..10 (position bias), and
#: of clicking what one looks at.
ABANDON = 0.3
EXAMINE = 1 / np.arange(1, 11)
CLICK_RELEVANT, CLICK_IRRELEVANT = 0.9, 0.05


def sessions_of(quality: float, sessions: int, rng: np.random.Generator) -> np.ndarray:
    """Per session: (searches with a click in the top 10, searches)."""
    searches = rng.integers(1, 6, sessions)
    total = int(searches.sum())
    relevant = rng.random((total, 10)) < quality
    chance = EXAMINE * np.where(relevant, CLICK_RELEVANT, CLICK_IRRELEVANT)
    clicked = (rng.random((total, 10)) < chance).any(axis=1) & (rng.random(total) >= ABANDON)
    owner = np.repeat(np.arange(sessions), searches)
    return np.stack([np.bincount(owner, clicked, sessions), searches.astype(float)], axis=1)


def interleaved_sessions_of(
    qualities: tuple[float, float], sessions: int, rng: np.random.Generator
) -> np.ndarray:
    """Per session of team-draft interleaved lists (the two rankings share no product): (sum
    of the searches' preferences, +1 B won its clicks, -1 A did; searches)."""
    searches = rng.integers(1, 6, sessions)
    total = int(searches.sum())
    first = rng.integers(0, 2, (total, 5))  # the team that picks first in each pair
    teams = np.stack([first, 1 - first], axis=2).reshape(total, 10)  # 0: A's result, 1: B's
    relevant = rng.random((total, 10)) < np.where(teams == 1, qualities[1], qualities[0])
    chance = EXAMINE * np.where(relevant, CLICK_RELEVANT, CLICK_IRRELEVANT)
    clicked = (rng.random((total, 10)) < chance) & (rng.random((total, 1)) >= ABANDON)
    preference = np.sign((clicked & (teams == 1)).sum(1) - (clicked & (teams == 0)).sum(1))
    owner = np.repeat(np.arange(sessions), searches)
    return np.stack([np.bincount(owner, preference, sessions), searches.astype(float)], axis=1)


def run(
    qualities: tuple[float, float], settings: ExperimentSettings, look_every: int,
    max_sessions: int, experiment: int, rng: np.random.Generator,
) -> tuple[str, int]:  # fmt: skip
    """One A/B experiment: its verdict and the sessions it had when it stopped."""
    design = Design.parse(["A=serving", "B=mode:vector"])
    arms = np.array([assign(experiment, design, str(s)).name == "B" for s in range(max_sessions)])
    data = {
        arm: sessions_of(quality, int((arms == (arm == "B")).sum()), rng)
        for arm, quality in zip("AB", qualities, strict=True)
    }
    for looked in range(look_every, max_sessions + 1, look_every):
        seen = {"A": int((~arms[:looked]).sum()), "B": int(arms[:looked].sum())}
        figures = {
            arm: ArmFigures(arm, n, int(data[arm][:n, 1].sum()),
                            {"ctr_at_10": ratio(data[arm][:n, 0], data[arm][:n, 1])})
            for arm, n in seen.items()
        }  # fmt: skip
        comparison = compare(figures["A"], figures["B"], settings.alpha, settings.min_sessions)
        if comparison.verdict != "keep running":
            return comparison.verdict, looked
    return "keep running", max_sessions


def run_interleaved(
    qualities: tuple[float, float], settings: ExperimentSettings, look_every: int,
    max_sessions: int, rng: np.random.Generator,
) -> tuple[str, int]:  # fmt: skip
    """One interleaved experiment (every session sees both): its verdict and sessions."""
    data = interleaved_sessions_of(qualities, max_sessions, rng)
    for looked in range(look_every, max_sessions + 1, look_every):
        difference = ratio(data[:looked, 0], data[:looked, 1])
        enough = looked >= settings.min_sessions
        comparison = sequential_test("B", difference, settings.alpha, enough)
        if comparison.verdict != "keep running":
            return comparison.verdict, looked
    return "keep running", max_sessions


def main() -> None:
    """Each scenario repeated; the table of decisions and sessions needed."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--control", type=float, default=0.6, help="arm A's P@10")
    parser.add_argument("--candidates", type=float, nargs="+", default=[0.6, 0.63, 0.66, 0.7])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--look-every", type=int, default=100)
    parser.add_argument("--max-sessions", type=int, default=20_000)
    add_markdown_option(parser)
    args = parser.parse_args()
    settings = ExperimentSettings()
    report = Report("bench.experiments")
    report.add(
        f"SIMULATED shoppers (module docstring): A's P@10 {args.control}, sessions split evenly,"
        f" the status read every {args.look_every} sessions up to {args.max_sessions};"
        f" alpha {settings.alpha}, at least {settings.min_sessions} sessions per arm;"
        f" {args.repeats} repetitions per row. Interleaving: every session sees both arms'"
        " results merged by team draft (the two rankings share no product here)."
    )
    header = ["B's P@10", "B better", "A better", "undecided", "median sessions to a call",
              "p90 sessions"]  # fmt: skip
    tables = {
        "A/B split, mSPRT on click-through at 10": Table(
            "A/B split, mSPRT on click-through at 10", header
        ),
        "team-draft interleaving, mSPRT on the preference per search": Table(
            "team-draft interleaving, mSPRT on the preference per search", header
        ),
    }
    rng = np.random.default_rng(0)
    for title, table in tables.items():
        for quality in args.candidates:
            verdicts, needed = [], []
            for repeat in range(args.repeats):
                pair = (args.control, quality)
                verdict, sessions = (
                    run_interleaved(pair, settings, args.look_every, args.max_sessions, rng)
                    if title.startswith("team-draft")
                    else run(pair, settings, args.look_every, args.max_sessions, repeat + 1, rng)
                )
                verdicts.append(verdict)
                if verdict != "keep running":
                    needed.append(sessions)
            share = {v: verdicts.count(v) / len(verdicts) for v in set(verdicts)}
            table.rows.append([
                quality, share.get("better, stop", 0.0), share.get("worse, stop", 0.0),
                share.get("keep running", 0.0),
                int(np.median(needed)) if needed else "-",
                int(np.percentile(needed, 90)) if needed else "-",
            ])  # fmt: skip
        report.add(table)
    report.add(
        f"With equal arms (B's P@10 = {args.control}) every call is wrong: that row's B better"
        f" + A better is the false positive rate, to compare with alpha {settings.alpha}."
    )
    report.write_markdown(args.markdown)


if __name__ == "__main__":
    main()
