"""``experiments``: start, read and stop an online experiment (shoppers split by session
between model versions or ranking settings; :mod:`fashion_search.experiments`)."""

from __future__ import annotations

import argparse
import getpass
import json
from collections.abc import Iterator
from contextlib import contextmanager

from fashion_search.catalog.db import create_pool
from fashion_search.catalog.migrate import migrate
from fashion_search.catalog.repositories import Catalog
from fashion_search.errors import InvalidRequestError
from fashion_search.experiments.design import Design
from fashion_search.experiments.service import Experiments, Status
from fashion_search.settings import get_settings


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``experiments`` command."""
    p = commands.add_parser("experiments", help="online experiments between arms")
    actions = p.add_subparsers(dest="action", required=True)
    a = actions.add_parser(
        "start",
        help="start one (one at a time)",
        description="e.g. --arm A=serving --arm B=version:3 --share B=0.1; an arm is serving,"
        " version:V (complete in the catalog), mode:vector|hybrid or"
        " understand:off|boost|filter; the first arm is the control",
    )
    a.add_argument("--arm", action="append", required=True, help="NAME=WHAT (two or more)")
    a.add_argument("--share", action="append", default=[], help="NAME=FRACTION (default: even)")
    a.add_argument(
        "--interleave", action="store_true", help="two arms merged in every list (team draft)"
    )
    a.add_argument("--by", default=getpass.getuser(), help="who starts it (default: you)")
    for name, helped in (("status", "an experiment's figures and verdict"), ("stop", "stop it")):
        a = actions.add_parser(name, help=helped)
        a.add_argument("--id", type=int, help="the experiment (default: the latest / running)")
        a.add_argument("--json", action="store_true", help="print the JSON the API answers")
        if name == "stop":
            a.add_argument("--by", default=getpass.getuser(), help="who stops it (default: you)")
    p.set_defaults(run=_experiments)


def _shares(given: list[str]) -> dict[str, float]:
    shares = {}
    for text in given:
        name, _, value = text.partition("=")
        try:
            shares[name.strip()] = float(value)
        except ValueError:
            raise InvalidRequestError(f"share {text!r}: write NAME=FRACTION, e.g. B=0.1") from None
    return shares


@contextmanager
def _experiments_of_settings() -> Iterator[Experiments]:
    settings = get_settings()
    migrate(settings.database.url, settings.database.embedding_dim)
    with create_pool(settings) as pool:
        yield Experiments(Catalog.of(pool), settings.experiments)


def _experiments(args: argparse.Namespace) -> None:
    with _experiments_of_settings() as experiments:
        if args.action == "start":
            design = Design.parse(args.arm, _shares(args.share), args.interleave)
            started = experiments.start(design, args.by)
            mode = "interleaved" if design.interleave else "split"
            print(f"experiment {started.id} ({mode}) started by {started.started_by}:")
            for arm in design.arms:
                share = "in every list" if design.interleave else f"{arm.share:.0%} of sessions"
                print(f"  {arm.name}: {arm.label} ({share})")
            return
        if args.action == "stop":
            status = experiments.stop(args.id, args.by)
        else:
            status = experiments.status(args.id)
    print(json.dumps(status.to_json(), indent=2) if args.json else report(status))


def report(status: Status) -> str:
    """An experiment's status as a table: per arm, its figures with 95% intervals, and the
    verdict."""
    e, shown = status.experiment, status.to_json()
    state = "running" if e.running else f"stopped {e.stopped_at:%Y-%m-%d %H:%M} by {e.stopped_by}"
    lines = [
        f"experiment {e.id} ({state}; started {e.started_at:%Y-%m-%d %H:%M} by {e.started_by})"
    ]
    names = list(shown["arms"][0]["figures"])
    lines.append(
        f"{'arm':<16}{'sessions':>9}{'searches':>9}  " + "  ".join(f"{n:<22}" for n in names)
    )
    for arm in shown["arms"]:
        cells = []
        for name in names:
            figure = arm["figures"][name]
            low, high = figure["interval"] or (float("nan"), float("nan"))
            cells.append(f"{figure['value']:.3f} [{low:.3f}, {high:.3f}]".ljust(22))
        label = f"{arm['name']}={arm['arm']}"
        lines.append(f"{label:<16}{arm['sessions']:>9}{arm['searches']:>9}  " + "  ".join(cells))
    measure = "preference per search" if e.design.interleave else "click-through at 10"
    for c in shown["comparisons"]:
        d = c["difference"]
        lines.append(
            f"{c['arm']} - control, {measure}: {d['value']:+.3f}; always-valid"
            f" p {c['pValue']:.3g}: {c['verdict']}"
        )
    lines.append(f"verdict: {shown['verdict']}")
    return "\n".join(lines)
