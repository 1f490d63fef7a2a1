"""``python -m stack up | down | status | logs``: the native local stack on 127.0.0.1."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from fashion_search.settings import Settings, get_settings, variable
from stack.orchestrator import DEFAULT_ROLES, ROLES, down, service, setup, status, up
from stack.secrets import prepare, secrets_file
from stack.service import StackError


def _role(value: str) -> str:
    if value not in ROLES:
        raise argparse.ArgumentTypeError(f"unknown service {value!r}; known: {', '.join(ROLES)}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m stack", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("up", "install what is missing and start"), ("down", "stop")):
        p = commands.add_parser(name, help=text)
        default = "the default stack (not pg-replica, docker)" if name == "up" else "all"
        p.add_argument(
            "services", nargs="*", type=_role, metavar="SERVICE", help=f"default: {default}"
        )
        if name == "up":
            p.add_argument("--profile", choices=["native", "pip"], help="FS_STACK__PROFILE")
        else:
            p.add_argument("--purge", action="store_true", help="also delete their data")
    commands.add_parser("status", help="what runs, with which implementation")
    p = commands.add_parser("setup", help="only create databases/buckets/topics on FS_* endpoints")
    p.add_argument("services", nargs="*", type=_role, metavar="SERVICE", help="default: all")
    p = commands.add_parser("logs", help="the end of a service's log")
    p.add_argument("service", choices=ROLES)
    p.add_argument("-n", "--lines", type=int, default=50)
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if getattr(args, "profile", None):
        os.environ[variable("stack.profile")] = args.profile  # before the settings are read
    settings = get_settings()
    if args.command == "up":
        prepare(settings)
        get_settings.cache_clear()  # the owner's credentials are in the file just written
        settings = get_settings()
    roles = tuple(
        getattr(args, "services", None) or (ROLES if args.command == "down" else DEFAULT_ROLES)
    )
    try:
        if args.command == "up":
            up(settings, roles)
            return _print_status(settings)
        if args.command == "down":
            down(settings, roles, purge=args.purge)
            return 0
        if args.command == "setup":
            setup(settings, roles)
            return 0
        if args.command == "logs":
            print(service(settings, args.service).process.log_tail(args.lines))
            return 0
        return _print_status(settings)
    except StackError as error:
        print(f"stack: {error}", file=sys.stderr)
        return 1


def _print_status(settings: Settings) -> int:
    rows = status(settings)
    print(f"{'service':<11} {'state':<14} {'endpoint':<48} implementation")
    for row in rows:
        state = f"running {row.pid}" if row.pid else "stopped"
        print(f"{row.role:<11} {state:<14} {row.endpoint:<48} {row.implementation}")
    for row in rows:
        if row.fallback:
            print(f"WARNING: {row.role} is a FALLBACK ({row.implementation})", file=sys.stderr)
    print(f"logs: {settings.stack.state_dir / 'logs'}")
    print(f"secrets: {secrets_file(settings.stack)} (mode 0600; owner and per-component users)")
    print(
        f"settings: {settings.stack.local_env_file} (the owner's, read unless FS_ENV_FILE is set)"
    )
    return 0 if all(r.pid for r in rows) else 3


if __name__ == "__main__":
    sys.exit(main())
