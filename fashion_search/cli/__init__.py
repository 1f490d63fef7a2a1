"""``fashion-search`` command: catalog administration, rollouts, evaluation, uploads, access,
merchandising, online experiments."""

from __future__ import annotations

import argparse
import logging

from fashion_search.cli import (
    access,
    catalog,
    evaluation,
    experiments,
    merchandising,
    rollout,
    uploads,
)
from fashion_search.commands import run


def build_parser() -> argparse.ArgumentParser:
    """The ``fashion-search`` command line; each command's function is its ``run`` default."""
    parser = argparse.ArgumentParser(prog="fashion-search", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for group in (catalog, evaluation, uploads, access, rollout, merchandising, experiments):
        group.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fashion-search`` command."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run(args)
