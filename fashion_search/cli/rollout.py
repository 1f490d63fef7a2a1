"""Rollout commands (:mod:`fashion_search.workflows.rollout`): ``rollout``, ``switch``,
``rollback``, ``retire``, ``versions``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from fashion_search.catalog.migrate import migrate
from fashion_search.settings import get_settings

if TYPE_CHECKING:
    from fashion_search.workflows.rollout import Switched


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the rollout commands."""
    p = commands.add_parser(
        "rollout",
        help="serve a registered version with zero downtime: load it beside the champion, embed"
        " the catalog by it, switch",
    )
    p.add_argument("version", help="registry version of FS_MODEL_NAME")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--no-switch", action="store_true", help="build only (then `switch`)")
    p.set_defaults(run=_rollout)

    p = commands.add_parser("switch", help="serve a version whose embeddings are built")
    p.add_argument("version")
    p.set_defaults(run=_switch)

    p = commands.add_parser(
        "rollback", help="serve the version the last switch replaced again (instant)"
    )
    p.set_defaults(run=_rollback)

    p = commands.add_parser(
        "retire", help="drop the embeddings of versions whose rollback window ended (or one)"
    )
    p.add_argument("--version", help="retire this version now (not the serving one)")
    p.set_defaults(run=_retire)

    p = commands.add_parser("versions", help="the catalog's model versions and their states")
    p.set_defaults(run=_versions)


def _rollout(args: argparse.Namespace) -> None:
    from fashion_search.workflows import rollout

    settings = get_settings()
    migrate(settings.database.url, settings.database.embedding_dim)
    prepared = rollout.prepare(settings, args.version)
    if prepared.state == "serving":
        print(f"version {args.version} already serves the catalog")
        return
    print(
        f"version {args.version} ({prepared.dimension}-d) loaded beside the champion;"
        f" building its embeddings in {prepared.partition}"
    )
    for retired in prepared.retired:
        print(f"  version {retired} retired (its rollback window closes with this rollout)")
    built = rollout.build(settings, args.version, args.batch_size, progress=True)
    print(
        f"embedded {built.embedded} products in {built.seconds:.1f} s;"
        f" coverage {built.coverage_percent}%, {built.failed} failed"
    )
    for product_id, reason in built.failures.items():
        print(f"  product {product_id}: {reason}")
    if args.no_switch:
        print(f"not switched: `fashion-search switch {args.version}` serves it")
        return
    _print_switch(rollout.switch(settings, args.version))


def _print_switch(switched: Switched) -> None:
    print(f"version {switched.serving} serves the catalog (switch {switched.switch_ms} ms)")
    if switched.previous:
        print(
            f"version {switched.previous} kept until {switched.rollback_until}:"
            " `fashion-search rollback` serves it again at once"
        )


def _switch(args: argparse.Namespace) -> None:
    from fashion_search.workflows.rollout import switch

    _print_switch(switch(get_settings(), args.version))


def _rollback(args: argparse.Namespace) -> None:
    from fashion_search.workflows.rollout import rollback

    _print_switch(rollback(get_settings()))


def _retire(args: argparse.Namespace) -> None:
    from fashion_search.workflows.rollout import retire, retire_expired

    settings = get_settings()
    retired = (
        [retire(settings, args.version).model_version] if args.version else retire_expired(settings)
    )
    print("retired: " + ", ".join(retired) if retired else "nothing to retire")


def _versions(args: argparse.Namespace) -> None:
    from fashion_search.workflows.rollout import status

    rows = status(get_settings())
    print(
        f"{'version':<8} {'state':<9} {'dim':>5} {'coverage':>9} {'MB':>8}  since / rollback until"
    )
    for r in rows:
        coverage = "" if r.coverage_percent is None else f"{r.coverage_percent:.1f}%"
        until = f" / {r.rollback_until}" if r.rollback_until else ""
        print(
            f"{r.version:<8} {r.state:<9} {r.dimension:>5} {coverage:>9}"
            f" {r.megabytes:>8.1f}  {r.since}{until}"
        )
