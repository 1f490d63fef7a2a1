"""Bring the local stack up and down, in dependency order, with fallbacks for missing tools."""

from __future__ import annotations

import json
import logging
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from fashion_search.settings import Settings
from stack import access, secrets
from stack.docker import DockerEngine
from stack.kafka import Kafka, Tansu
from stack.localstack import LocalStack
from stack.mlflow_server import MLflowServer
from stack.postgres import Postgres, PostgresReplica
from stack.s3 import MinIO, MotoS3
from stack.service import InstallUnavailableError, Service, StackError

log = logging.getLogger("stack")

#: Roles in start order, each with its implementations: native first, pip-only fallback last.
IMPLEMENTATIONS: dict[str, tuple[type[Service], ...]] = {
    "postgres": (Postgres,),
    "pg-replica": (PostgresReplica,),
    "kafka": (Kafka, Tansu),
    "s3": (MinIO, MotoS3),
    "mlflow": (MLflowServer,),
    "localstack": (LocalStack,),
    "docker": (DockerEngine,),
}
ROLES = tuple(IMPLEMENTATIONS)
#: Started only when named (``python -m stack up pg-replica docker``): the rest is the default
#: stack.
OPTIONAL_ROLES = ("pg-replica", "docker")
DEFAULT_ROLES = tuple(r for r in ROLES if r not in OPTIONAL_ROLES)


def _choices_file(settings: Settings) -> Path:
    return settings.stack.state_dir / "stack.json"


def _saved_choices(settings: Settings) -> dict[str, str]:
    try:
        return dict(json.loads(_choices_file(settings).read_text()))
    except (FileNotFoundError, ValueError):
        return {}


def _by_name(role: str, name: str) -> type[Service] | None:
    return next((cls for cls in IMPLEMENTATIONS[role] if cls.__name__ == name), None)


def _candidates(settings: Settings, role: str) -> tuple[type[Service], ...]:
    options = IMPLEMENTATIONS[role]
    return options[-1:] if settings.stack.profile == "pip" else options


def _install(settings: Settings, role: str) -> Service:
    """The first implementation of ``role`` that installs here (loudly falling back)."""
    saved = _by_name(role, _saved_choices(settings).get(role, ""))
    if saved is not None and saved(settings).process.pid() is not None:
        return saved(settings)  # keep what is running
    problems: list[str] = []
    for cls in _candidates(settings, role):
        service = cls(settings)
        try:
            started = time.perf_counter()
            service.install()
            log.info(
                "%s: %s installed (%.1f s)", role, cls.implementation, time.perf_counter() - started
            )
            if problems:
                log.warning("%s: FALLBACK to %s because %s", role, cls.implementation, problems)
            return service
        except (InstallUnavailableError, StackError) as error:
            problems.append(f"{cls.__name__}: {error}")
            log.warning("%s: cannot install %s: %s", role, cls.implementation, error)
    raise StackError(f"{role}: no implementation could be installed: {problems}")


@dataclass(frozen=True)
class ServiceStatus:
    """One row of ``status``."""

    role: str
    implementation: str
    fallback: bool
    pid: int | None
    endpoint: str
    log: Path


def up(settings: Settings, roles: tuple[str, ...] = DEFAULT_ROLES) -> list[str]:
    """Install (concurrently, cached) and start ``roles`` in order, each then given its users and
    passwords (:mod:`stack.access`); returns the roles started.

    The secrets file is created first if missing, and the owner's settings file rewritten once
    the broker is chosen: build ``settings`` after :func:`stack.secrets.prepare`, as their owner
    credentials come from that file."""
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise StackError(f"unknown services {sorted(unknown)}; known: {', '.join(ROLES)}")
    settings.stack.state_dir.mkdir(parents=True, exist_ok=True)
    if secrets.ensure(secrets.secrets_file(settings.stack)):
        log.info("generated the stack's secrets in %s", secrets.secrets_file(settings.stack))
    settings.cache_dir.mkdir(parents=True, exist_ok=True)
    ordered = [r for r in ROLES if r in roles]
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(ordered)) as pool:
        services = dict(
            zip(ordered, pool.map(lambda r: _install(settings, r), ordered), strict=True)
        )
    log.info("installs done in %.1f s", time.perf_counter() - started)
    choices = _saved_choices(settings)
    choices.update({role: type(service).__name__ for role, service in services.items()})
    _choices_file(settings).write_text(json.dumps(choices, indent=2))
    secrets.write_local_env(settings)  # the owner's Kafka user only on a broker with SASL
    newly_started = []
    for role, service in services.items():
        t0 = time.perf_counter()
        if service.start():
            newly_started.append(role)
            log.info(
                "%s: started in %.1f s at %s", role, time.perf_counter() - t0, service.endpoint
            )
        else:
            log.info("%s: already running at %s", role, service.endpoint)
        if role in access.PARTS and not service.is_fallback:  # the fallbacks have no users
            access.PARTS[role](service.settings, secrets.load_for(settings))
    log.info("stack up in %.1f s", time.perf_counter() - started)
    return newly_started


def setup(settings: Settings, roles: tuple[str, ...] = DEFAULT_ROLES) -> None:
    """Create databases, buckets, notifications and topics on servers run elsewhere
    (docker-compose, a cloud account): wait for each endpoint, then set it up."""
    for service in _services(settings, roles):
        service.wait_ready(watch_process=False)
        service.after_start()
        log.info("%s: set up at %s", service.role, service.endpoint)


def _services(settings: Settings, roles: tuple[str, ...]) -> list[Service]:
    choices = _saved_choices(settings)
    services = []
    for role in roles:
        cls = _by_name(role, choices.get(role, "")) or _candidates(settings, role)[0]
        services.append(cls(settings))
    return services


def down(settings: Settings, roles: tuple[str, ...] = ROLES, purge: bool = False) -> list[str]:
    """Stop ``roles`` in reverse start order; returns those that were running.

    ``purge`` also deletes their data (and the state directory when all roles are purged).
    """
    stopped = []
    for service in reversed(_services(settings, roles)):
        if service.stop():
            stopped.append(service.role)
            log.info("%s: stopped", service.role)
        if purge:
            shutil.rmtree(service.data_dir, ignore_errors=True)
    if purge and set(roles) == set(ROLES):
        shutil.rmtree(settings.stack.state_dir, ignore_errors=True)
    return stopped


def status(settings: Settings) -> list[ServiceStatus]:
    """What runs now, with which implementation (an optional role only while it runs)."""
    rows = [
        ServiceStatus(
            role=s.role,
            implementation=s.implementation,
            fallback=s.is_fallback,
            pid=s.process.pid(),
            endpoint=s.endpoint,
            log=s.process.log_file,
        )
        for s in _services(settings, ROLES)
    ]
    return [row for row in rows if row.pid or row.role not in OPTIONAL_ROLES]


def service(settings: Settings, role: str) -> Service:
    """The service playing ``role`` (as last started)."""
    return _services(settings, (role,))[0]
