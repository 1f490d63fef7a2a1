"""``api-keys``: create, list or revoke keys of the search API."""

from __future__ import annotations

import argparse
import os

from fashion_search.catalog.api_keys import SCOPES
from fashion_search.catalog.db import create_pool
from fashion_search.catalog.migrate import migrate
from fashion_search.catalog.repositories import Catalog
from fashion_search.errors import FashionSearchError
from fashion_search.settings import get_settings


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``api-keys`` command."""
    p = commands.add_parser("api-keys", help="create, list or revoke keys of the search API")
    actions = p.add_subparsers(dest="action", required=True)
    a = actions.add_parser("create", help="a new key (printed once)")
    a.add_argument("--name", required=True, help="who or what uses it (ui, merchant-tools, ...)")
    a.add_argument("--scope", choices=SCOPES, default="search", help="search (default) or admin")
    a.add_argument(
        "--key-from-env", metavar="VAR", help="register the key in this variable (a deployment's)"
    )
    a.set_defaults(run=_api_keys)
    actions.add_parser("list", help="every key: id, prefix, scope, state").set_defaults(
        run=_api_keys
    )
    a = actions.add_parser("revoke", help="revoke a key by id (refused from then on)")
    a.add_argument("id", type=int)
    a.set_defaults(run=_api_keys)


def _api_keys(args: argparse.Namespace) -> None:
    settings = get_settings()
    migrate(settings.database.url, settings.database.embedding_dim)
    with create_pool(settings) as pool:
        keys = Catalog.of(pool).api_keys
        if args.action == "create":
            given = os.environ.get(args.key_from_env, "") if args.key_from_env else None
            if args.key_from_env and not given:
                raise FashionSearchError(f"environment variable {args.key_from_env} is empty")
            record, key = keys.create(args.name, args.scope, given)
            shown = f"{key[:10]}... (from {args.key_from_env})" if given else key
            print(f"created key {record.id} ({record.name}, scope {record.scope}): {shown}")
            if not given:
                print("it is shown only now: keep it (the catalog stores only its hash)")
        elif args.action == "revoke":
            record = keys.revoke(args.id)
            print(
                f"revoked key {record.id} ({record.name}) at {record.revoked_at:%Y-%m-%d %H:%M:%S}"
            )
        else:
            for k in keys.list_keys():
                state = f"revoked {k.revoked_at:%Y-%m-%d}" if k.revoked_at else "active"
                print(f"{k.id:<5} {k.prefix}...  {k.scope:<7} {state:<18} {k.name}")
