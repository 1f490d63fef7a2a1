"""Give each component its own credentials and only the access it needs, as the owner.

``python -m stack.access apply`` (the native stack runs each part after the server starts; a
compose setup container runs it with the owner's ``FS_*`` settings and the secrets file's
variables in its environment) is idempotent:

- PostgreSQL: roles ``fashion_api`` and ``fashion_ingest`` get LOGIN and their passwords
  (their grants are per database, in migration 0007_roles), ``fashion_replication`` LOGIN
  REPLICATION (what a streaming replica connects as);
- MinIO: users ``fashion-api``, ``fashion-ingest``, ``fashion-model-server``,
  ``fashion-mlflow`` and ``fashion-uploader``, each with its policy (:func:`s3_policies`);
- Kafka: the SCRAM-SHA-256 users ``fashion-admin`` (super user), ``fashion-minio`` and
  ``fashion-ingest``, with their ACLs (:func:`kafka_acls`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from fashion_search.settings import Settings
from stack.secrets import (
    CREDENTIALS,
    KAFKA_INGEST_USER,
    KAFKA_MINIO_USER,
    PG_REPLICATION_ROLE,
    S3_API_USER,
    S3_INGEST_USER,
    S3_MLFLOW_USER,
    S3_MODEL_SERVER_USER,
    S3_UPLOADER_USER,
    Secrets,
    load,
    secrets_file,
)

log = logging.getLogger("stack.access")

#: The prefix of the models bucket that MLflow keeps its artifacts under.
MLFLOW_PREFIX = "mlflow/"


def apply_postgres(settings: Settings, secrets: Secrets) -> None:
    """Create the login roles if missing (NOLOGIN, as migration 0007 would) and give them LOGIN
    and their passwords (hashed with SCRAM-SHA-256 by the server); the replication role may
    stream WAL and nothing else (it is granted no database)."""
    admin = make_conninfo(settings.database.url, dbname="postgres", connect_timeout=5)
    with psycopg.connect(admin, autocommit=True) as conn:
        for role, password in secrets.pg_passwords.items():
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                statement = "ALTER ROLE {} LOGIN{} PASSWORD {}"
            else:
                statement = "CREATE ROLE {} LOGIN{} PASSWORD {}"
            replication = sql.SQL(" REPLICATION" if role == PG_REPLICATION_ROLE else "")
            conn.execute(
                sql.SQL(statement).format(sql.Identifier(role), replication, sql.Literal(password))
            )
    log.info("postgres: roles %s can log in", ", ".join(secrets.pg_passwords))


def _statement(actions: list[str], resources: list[str], **condition: Any) -> dict[str, Any]:
    statement: dict[str, Any] = {"Effect": "Allow", "Action": actions, "Resource": resources}
    if condition:
        statement["Condition"] = condition
    return statement


def s3_policies(settings: Settings) -> dict[str, dict[str, Any]]:
    """Each MinIO user's policy (named as the user), on the buckets of the settings."""
    s = settings.storage

    def objects(bucket: str, prefix: str = "") -> str:
        return f"arn:aws:s3:::{bucket}/{prefix}*"

    def bucket(name: str) -> str:
        return f"arn:aws:s3:::{name}"

    statements: dict[str, list[dict[str, Any]]] = {
        # Presigned image URLs are signed with its key; admin image search reads uploads.
        S3_API_USER: [
            _statement(["s3:GetObject"], [objects(s.images_bucket), objects(s.uploads_bucket)])
        ],
        # Reads (and lists, for reconciliation and ETag checks) uploads, copies them into images.
        S3_INGEST_USER: [
            _statement(["s3:GetObject"], [objects(s.uploads_bucket)]),
            _statement(["s3:ListBucket"], [bucket(s.uploads_bucket)]),
            _statement(["s3:PutObject"], [objects(s.images_bucket)]),
        ],
        # Reads model artifacts (the registry's runs keep them under mlflow/ of the models
        # bucket; through the MLflow server it needs none, with s3:// artifact URIs these).
        S3_MODEL_SERVER_USER: [
            _statement(["s3:GetObject"], [objects(s.models_bucket)]),
            _statement(["s3:ListBucket"], [bucket(s.models_bucket)]),
        ],
        # The MLflow server's artifact store: its prefix of the models bucket only.
        S3_MLFLOW_USER: [
            _statement(
                ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                [objects(s.models_bucket, MLFLOW_PREFIX)],
            ),
            _statement(
                ["s3:ListBucket"],
                [bucket(s.models_bucket)],
                StringLike={"s3:prefix": [f"{MLFLOW_PREFIX}*", MLFLOW_PREFIX.rstrip("/")]},
            ),
        ],
        # Merchants' drops: write-only into uploads.
        S3_UPLOADER_USER: [_statement(["s3:PutObject"], [objects(s.uploads_bucket)])],
    }
    return {user: {"Version": "2012-10-17", "Statement": body} for user, body in statements.items()}


def apply_minio(settings: Settings, secrets: Secrets) -> None:
    """Create or update each MinIO user (its secret key) and its policy, as the root user."""
    from minio import MinioAdmin
    from minio.credentials.providers import StaticProvider

    endpoint = urlsplit(settings.storage.endpoint_url)
    admin = MinioAdmin(
        endpoint=endpoint.netloc,
        credentials=StaticProvider(settings.storage.access_key, settings.storage.secret_key),
        region=settings.storage.region,
        secure=endpoint.scheme == "https",
    )
    policies = s3_policies(settings)
    for user, secret_key in secrets.s3_users.items():
        admin.policy_add(user, policy=policies[user])
        admin.user_add(user, secret_key)
        admin.policy_set(user, user=user)
    log.info("s3: users %s with their policies", ", ".join(policies))


def apply_kafka(settings: Settings, secrets: Secrets) -> None:
    """Create or update the SCRAM-SHA-256 users, as the admin user (the broker's storage was
    formatted with the admin's credential)."""
    from confluent_kafka.admin import (  # type: ignore[attr-defined]
        AdminClient,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialAlteration,
        UserScramCredentialUpsertion,
    )

    from fashion_search.ingest.publisher import kafka_config

    admin = AdminClient(kafka_config(settings, {"log_level": 4}))
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096)
    upserts: list[UserScramCredentialAlteration] = [
        UserScramCredentialUpsertion(user, info, password.encode())
        for user, password in secrets.kafka_users.items()
    ]
    for future in admin.alter_user_scram_credentials(upserts, request_timeout=15).values():
        future.result()
    for future in admin.create_acls(kafka_acls(settings), request_timeout=15).values():
        future.result()
    log.info("kafka: SCRAM users %s with their ACLs", ", ".join(secrets.kafka_users))


def kafka_acls(settings: Settings) -> list[Any]:
    """What each Kafka user other than the admin (the broker's super user) may do: MinIO
    produces bucket events; the ingest path consumes them in its group and produces results,
    dead letters and relayed feedback (READ and WRITE imply DESCRIBE)."""
    from confluent_kafka.admin import (  # type: ignore[attr-defined]
        AclBinding,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    k = settings.kafka
    allowed = [
        (KAFKA_MINIO_USER, ResourceType.TOPIC, k.uploads_topic, AclOperation.WRITE),
        (KAFKA_INGEST_USER, ResourceType.TOPIC, k.uploads_topic, AclOperation.READ),
        (KAFKA_INGEST_USER, ResourceType.GROUP, settings.ingest.group_id, AclOperation.READ),
        (KAFKA_INGEST_USER, ResourceType.TOPIC, k.output_topic, AclOperation.WRITE),
        (KAFKA_INGEST_USER, ResourceType.TOPIC, k.dead_letter_topic, AclOperation.WRITE),
        (KAFKA_INGEST_USER, ResourceType.TOPIC, k.feedback_topic, AclOperation.WRITE),
    ]
    return [
        AclBinding(kind, name, ResourcePatternType.LITERAL, f"User:{user}", "*", operation,
                   AclPermissionType.ALLOW)
        for user, kind, name, operation in allowed
    ]  # fmt: skip


PARTS = {"postgres": apply_postgres, "s3": apply_minio, "kafka": apply_kafka}


def apply(settings: Settings, secrets: Secrets, parts: tuple[str, ...] = tuple(PARTS)) -> None:
    """Every part (or those named) on the servers of ``settings``, as their owner."""
    for part in parts:
        PARTS[part](settings, secrets)


def main(argv: list[str] | None = None) -> int:
    """``python -m stack.access apply [PART...]``."""
    parser = argparse.ArgumentParser(prog="python -m stack.access", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("apply", help="create/update roles, users, passwords and policies")
    p.add_argument("parts", nargs="*", metavar="PART", help=f"default: all of {', '.join(PARTS)}")
    args = parser.parse_args(argv)
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}; known: {', '.join(PARTS)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = Settings()
    secrets = load(secrets_file(settings.stack), names=CREDENTIALS)  # of these servers only
    apply(settings, secrets, tuple(args.parts) or tuple(PARTS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
