"""``boosts``: the merchandising boost of products (a business signal of the ranking)."""

from __future__ import annotations

import argparse
import getpass

from fashion_search.catalog.db import create_pool
from fashion_search.catalog.migrate import migrate
from fashion_search.catalog.repositories import Catalog
from fashion_search.catalog.signals import MAX_BOOST
from fashion_search.settings import get_settings


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``boosts`` command."""
    p = commands.add_parser("boosts", help="set, list or remove products' merchandising boosts")
    actions = p.add_subparsers(dest="action", required=True)
    a = actions.add_parser("set", help=f"a product's boost, -{MAX_BOOST} (bury) to {MAX_BOOST}")
    a.add_argument("product_id", type=int)
    a.add_argument("boost", type=float)
    a.add_argument("--by", default=getpass.getuser(), help="who sets it (default: you)")
    a.set_defaults(run=_boosts)
    actions.add_parser("list", help="every boost, the latest first").set_defaults(run=_boosts)
    a = actions.add_parser("remove", help="a product's boost")
    a.add_argument("product_id", type=int)
    a.set_defaults(run=_boosts)


def _boosts(args: argparse.Namespace) -> None:
    settings = get_settings()
    migrate(settings.database.url, settings.database.embedding_dim)
    with create_pool(settings) as pool:
        signals = Catalog.of(pool).signals
        if args.action == "set":
            boost = signals.set_boost(args.product_id, args.boost, args.by)
            print(f"product {boost.product_id}: boost {boost.boost:+.2f} (by {boost.set_by})")
        elif args.action == "remove":
            had = signals.remove_boost(args.product_id)
            print(f"product {args.product_id}: {'boost removed' if had else 'had no boost'}")
        else:
            for b in signals.boosts():
                print(f"{b.product_id:<10} {b.boost:+.2f}  {b.set_at:%Y-%m-%d %H:%M}  {b.set_by}")
