"""The upload path's repair commands, run through the bucket-event function in this process:
``reconcile`` (:mod:`fashion_search.workflows.uploads`) and ``dead-letters`` (list, show,
replay)."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

from fashion_search.errors import FashionSearchError
from fashion_search.settings import get_settings
from functions.events.bucket_event import build_bucket_event_function, get_bucket_event_function


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``reconcile`` and ``dead-letters``."""
    p = commands.add_parser(
        "reconcile",
        help="process the uploads the catalog lacks and remove those deleted from the bucket",
    )
    p.add_argument(
        "--min-age", type=float, help="seconds an object waits for its own event (default:"
        " FS_RECONCILE_MIN_AGE_S)",
    )  # fmt: skip
    p.set_defaults(run=_reconcile)

    p = commands.add_parser(
        "dead-letters", help="list, show or replay the upload path's dead letters"
    )
    actions = p.add_subparsers(dest="action", required=True)
    for action, text in (("list", "list them"), ("replay", "replay them through the function")):
        a = actions.add_parser(action, help=text)
        a.add_argument("--reason", help="only this reason (not-an-image, ...)")
        a.add_argument("--since", help="only those given up on at or after (ISO 8601, UTC)")
        if action == "replay":
            a.add_argument("--id", dest="ids", action="append", help="only this one (repeatable)")
        a.set_defaults(run=_dead_letters)
    a = actions.add_parser("show", help="one dead letter, whole")
    a.add_argument("id", help="partition:offset, as list prints it")
    a.set_defaults(run=_dead_letters)


def _reconcile(args: argparse.Namespace) -> None:
    from fashion_search.workflows.uploads import reconcile_uploads

    settings = get_settings()
    found = reconcile_uploads(settings, build_bucket_event_function(settings), args.min_age)
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(found.outcomes.items())) or "nothing"
    print(
        f"s3://{found.bucket}: {found.missing} objects missing from the catalog,"
        f" {found.deleted} products of deleted objects; {outcomes}"
    )


def _dead_letters(args: argparse.Namespace) -> None:
    from fashion_search.ingest.dead_letters import read_dead_letters, replay

    settings = get_settings()
    since = None
    if getattr(args, "since", None):
        since = datetime.fromisoformat(args.since)
        since = since if since.tzinfo else since.replace(tzinfo=UTC)
    letters = read_dead_letters(settings, getattr(args, "reason", None), since)
    if args.action == "show":
        chosen = [letter for letter in letters if letter.id == args.id]
        if not chosen:
            raise FashionSearchError(f"no dead letter {args.id} (partition:offset)")
        print(json.dumps(chosen[0].record, indent=2))
    elif args.action == "list":
        for letter in letters:
            r = letter.record
            where = f"s3://{r['bucket']}/{r['key']}" if r.get("key") else "-"
            print(f"{letter.id:<10} {r['failedAt'][:19]}  {r['reason']:<26} {where}")
        print(f"{len(letters)} dead letters")
    else:
        if args.ids:
            letters = [letter for letter in letters if letter.id in set(args.ids)]
        counts = replay(get_bucket_event_function(), letters)
        print(
            f"replayed {len(letters)}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        )
