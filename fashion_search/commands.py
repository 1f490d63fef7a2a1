"""How every command line of the project runs a parsed command (``fashion-search``,
``python -m model_server``, ``python -m functions.events``)."""

from __future__ import annotations

import argparse
import sys

from fashion_search.errors import FashionSearchError


def run(args: argparse.Namespace) -> int:
    """Run a parsed command (``args.run``): 0, or 2 with the message of a typed error."""
    try:
        args.run(args)
    except FashionSearchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
