"""``boosts`` and ``rules``: a merchandiser's controls of the ranking (a product's boost, a
business signal; rules that pin, hide, boost, bury or redirect, and synonym sets)."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path

from fashion_search.catalog.db import create_pool
from fashion_search.catalog.migrate import migrate
from fashion_search.catalog.repositories import Catalog
from fashion_search.catalog.signals import MAX_BOOST
from fashion_search.errors import InvalidRequestError
from fashion_search.settings import get_settings


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``boosts`` and ``rules`` commands."""
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

    p = commands.add_parser("rules", help="merchandising rules and synonym sets")
    actions = p.add_subparsers(dest="action", required=True)
    a = actions.add_parser(
        "add",
        help="a rule or synonym set, as JSON (docs/search-api.md, Merchandising rules)",
        description='e.g. \'{"when": {"query": "running shoes"}, "then": {"pin": [{"productId":'
        ' 9204, "position": 1}]}}\' or \'{"synonyms": ["jumper", "sweater"]}\'',
    )
    a.add_argument("body", help="the JSON body, @file for a file's, or - for stdin's")
    a.add_argument("--by", default=getpass.getuser(), help="who creates it (default: you)")
    a.set_defaults(run=_rules)
    actions.add_parser("list", help="every rule and set, oldest first").set_defaults(run=_rules)
    a = actions.add_parser("remove", help="a rule or set, by id")
    a.add_argument("rule_id", type=int)
    a.set_defaults(run=_rules)
    a = actions.add_parser("test", help="a query's hits with and without the rules")
    a.add_argument("query")
    a.add_argument("-k", type=int, default=10)
    a.set_defaults(run=_test_rules)


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


def _body(given: str) -> dict[str, object]:
    """The JSON object given, read from a file (``@path``) or stdin (``-``)."""
    text = sys.stdin.read() if given == "-" else given
    if given.startswith("@"):
        text = Path(given[1:]).read_text()
    try:
        body = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidRequestError(f"the body is not JSON: {error}") from None
    if not isinstance(body, dict):
        raise InvalidRequestError("the body must be a JSON object")
    return body


def _rules(args: argparse.Namespace) -> None:
    from fashion_search.search.merchandising import Merchandising

    settings = get_settings()
    migrate(settings.database.url, settings.database.embedding_dim)
    with create_pool(settings) as pool:
        rules = Merchandising(Catalog.of(pool))
        if args.action == "add":
            entry = rules.add(_body(args.body), args.by)
            print(f"{entry.kind} {entry.id} added by {entry.created_by}")
        elif args.action == "remove":
            rules.remove(args.rule_id)
            print(f"rule {args.rule_id} removed")
        else:
            for e in rules.entries():
                body = json.dumps(e.body, ensure_ascii=False)
                print(
                    f"{e.id:<6} {e.kind:<9} {e.created_at:%Y-%m-%d %H:%M}  {e.created_by}  {body}"
                )


def _test_rules(args: argparse.Namespace) -> None:
    from fashion_search.cli.evaluation import search_service
    from fashion_search.search.request import SearchRequest

    with search_service(get_settings()) as service:
        results = [
            service.search(SearchRequest.of(query=args.query, k=args.k, rules=rules))
            for rules in (True, False)
        ]
    applied, plain = results
    print(f"rules applied: {list(applied.rules) or 'none'}", end="")
    print(f"; redirected to {dict(applied.redirect)}" if applied.redirect else "")
    print(f"{'#':>3}  {'with the rules':<48}  without them")
    for position in range(max(len(applied.hits), len(plain.hits))):
        row = [
            f"{h.product.id:>6} {h.product.product_display_name or ''}"[:48] if h else ""
            for h in (
                applied.hits[position] if position < len(applied.hits) else None,
                plain.hits[position] if position < len(plain.hits) else None,
            )
        ]
        print(f"{position + 1:>3}  {row[0]:<48}  {row[1]}")
