"""``fashion-search`` command: catalog administration, training, evaluation, uploads."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from fashion_search.catalog.api_keys import SCOPES
from fashion_search.catalog.db import create_pool
from fashion_search.catalog.load import load_catalog
from fashion_search.catalog.migrate import migrate
from fashion_search.catalog.repositories import Catalog
from fashion_search.errors import FashionSearchError
from fashion_search.model import DEFAULT_ARCHITECTURE
from fashion_search.settings import Settings, get_settings
from fashion_search.storage import ObjectStore

if TYPE_CHECKING:
    from fashion_search.search.service import SearchService


def _migrate(args: argparse.Namespace) -> None:
    settings = get_settings()
    applied = migrate(settings.database.url, args.embedding_dim or settings.database.embedding_dim)
    print("applied: " + ", ".join(applied) if applied else "schema is current")


def _load(args: argparse.Namespace) -> None:
    settings = get_settings()
    migrate(settings.database.url, settings.database.embedding_dim)
    store = ObjectStore(settings)
    store.ensure_buckets()
    started = time.perf_counter()
    with create_pool(settings) as pool:
        summary = load_catalog(
            Catalog.of(pool),
            store,
            args.source or settings.dataset_source,
            dataset=args.dataset,
            offset=args.offset,
            limit=args.limit,
            skip_existing=args.skip_existing,
        )
    took = time.perf_counter() - started
    print(
        f"loaded {summary.loaded} products in {took:.1f} s ({summary.skipped} already there);"
        f" {len(summary.report.rejected)} rows rejected of {summary.report.read} read"
    )
    for row in summary.report.rejected[:20]:
        print(f"  rejected row {row.index} (id {row.product_id}): {row.reason}")


def _calibrate(args: argparse.Namespace) -> None:
    from fashion_search.embedding_client import EmbeddingClient
    from fashion_search.learning.calibration import calibrate

    settings = get_settings()
    with (
        create_pool(settings) as pool,
        EmbeddingClient(settings.model_server.address, timeout_s=120) as client,
    ):
        catalog = Catalog.of(pool)
        versions = catalog.versions
        version = versions.get(args.version) if args.version else versions.serving()
        calibrated = calibrate(settings, catalog, client, version)
    print(f"model version {calibrated.model_version}: relevance cutoff {calibrated.min_score}")


def _embed(args: argparse.Namespace) -> None:
    from fashion_search.workflows.catalog import embed_products

    settings = get_settings()
    migrate(settings.database.url, settings.database.embedding_dim)
    report = embed_products(settings, args.batch_size, progress=True)
    print(
        f"embedded {report['embedded']} products with model version {report['model_version']}"
        f" in {report['seconds']:.1f} s; {report['failed']} failed"
    )
    for product_id, reason in report["failures"].items():
        print(f"  product {product_id}: {reason}")


@contextmanager
def _search_service(settings: Settings) -> Iterator[SearchService]:
    """The search service in this process, on the configured catalog and model server."""
    from fashion_search.embedding_client import EmbeddingClient
    from fashion_search.search.service import SearchService

    with (
        create_pool(settings) as pool,
        EmbeddingClient(settings.model_server.address) as client,
    ):
        yield SearchService(settings, Catalog.of(pool), ObjectStore(settings), client)


def _eval_search(args: argparse.Namespace) -> None:
    import random

    from fashion_search.catalog.models import ProductFields
    from fashion_search.dataset import iter_dataset
    from fashion_search.model.data import in_test_split
    from fashion_search.model.evaluate import evaluate_ranker

    settings = get_settings()
    source = args.source or settings.dataset_source
    held_out = [i.fields for i in iter_dataset(source, limit=args.limit) if in_test_split(i.image)]
    titles = sorted({f.product_display_name for f in held_out})
    chosen = set(random.Random(0).sample(titles, min(args.queries, len(titles))))
    queries_from = [f for f in held_out if f.product_display_name in chosen]
    print(f"{len(chosen)} title queries sampled from {len(titles)} held-out titles")
    results: dict[str, dict[str, float]] = {}
    with _search_service(settings) as service:
        for mode in ("vector", "hybrid"):

            def rank(text: str, mode: str = mode) -> list[ProductFields]:
                return [h.product for h in service.text(text, args.depth, mode=mode).hits]  # type: ignore[arg-type]

            started = time.perf_counter()
            results[mode] = evaluate_ranker(rank, queries_from)
            print(f"{mode}: {time.perf_counter() - started:.0f} s")
    print(f"{'metric':<18} {'vector':>8} {'hybrid':>8} {'ratio':>7}")
    for name in results["vector"]:
        v, h = results["vector"][name], results["hybrid"][name]
        print(f"{name:<18} {v:>8.4f} {h:>8.4f} {h / v if v else float('nan'):>7.2f}")


def _eval(args: argparse.Namespace) -> None:
    from fashion_search.learning.judgements import Judgements, evaluate_judgements

    settings = get_settings()
    with _search_service(settings) as service:
        records = service.catalog.feedback.records()
        judgements = Judgements.of(records)
        print(
            f"{len(records)} feedback records: {len(judgements.queries)} queries with a"
            f" relevant product; searching in {args.mode or settings.search.mode} mode"
        )

        def rank(query: str) -> list[int]:
            return [h.product.id for h in service.text(query, args.depth, mode=args.mode).hits]

        metrics = evaluate_judgements(rank, judgements)
    for name, value in metrics.items():
        print(f"{name:<12} {value:>8.4f}")


def _eval_ingest(args: argparse.Namespace) -> None:
    import random

    from fashion_search.dataset import iter_dataset
    from fashion_search.embedding_client import EmbeddingClient
    from fashion_search.ingest.classify import CONFIDENT
    from fashion_search.ingest.evaluate import classification_accuracy
    from fashion_search.model.data import in_test_split

    settings = get_settings()
    held_out = [
        (item.fields, item.image)
        for item in iter_dataset(args.source or settings.dataset_source, limit=args.limit)
        if in_test_split(item.image)
    ]
    sample = random.Random(0).sample(held_out, min(args.uploads, len(held_out)))
    print(
        f"{len(sample)} held-out products classified as uploads; the {len(held_out)} held-out"
        f" products never vote (neighbours: {args.neighbours})"
    )
    with (
        create_pool(settings) as pool,
        EmbeddingClient(settings.model_server.address, timeout_s=120) as client,
    ):
        print(f"model {client.info().registry_name} version {client.info().registry_version}")
        report = classification_accuracy(
            Catalog.of(pool),
            client,
            sample,
            exclude_ids=(fields.id for fields, _ in held_out),
            k=args.neighbours,
        )
    print(
        f"{'label':<15} {'accuracy':>8} {'mean conf':>9}"
        f" {f'acc@conf>={CONFIDENT}':>15} {'coverage':>8}"
    )
    for label, r in report.items():
        print(
            f"{label:<15} {r['accuracy']:>8.3f} {r['mean_confidence']:>9.3f}"
            f" {r['confident_accuracy']:>15.3f} {r['confident_coverage']:>8.3f}"
        )


def _upload(args: argparse.Namespace) -> None:
    import json
    from pathlib import Path

    from confluent_kafka import Consumer

    from fashion_search.ingest.publisher import kafka_config

    settings = get_settings()
    consumer = Consumer(
        kafka_config(
            settings,
            {
                "group.id": f"upload-cli-{time.time_ns()}",
                "auto.offset.reset": "latest",
                "log_level": 4,
            },
        )
    )
    consumer.subscribe([settings.kafka.output_topic, settings.kafka.dead_letter_topic])
    consumer.poll(1.0)  # join the group before uploading, so no message is missed
    store = ObjectStore(settings)
    pending = {}
    for path in map(Path, args.files):
        key = f"{args.prefix.strip('/')}/{path.name}"
        pending[key] = store.put(settings.storage.uploads_bucket, key, path.read_bytes())
        print(f"uploaded s3://{settings.storage.uploads_bucket}/{key} (eTag {pending[key]})")
    deadline = time.monotonic() + args.wait
    while pending and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None or message.error():
            continue
        value = json.loads(message.value() or b"{}")
        if value.get("key") in pending and pending[value["key"]] == value.get("eTag"):
            del pending[value["key"]]
            print(json.dumps(value, indent=2))
    consumer.close()
    if pending:
        raise SystemExit(f"no output for {sorted(pending)} within {args.wait} s (dispatcher up?)")


def _api_keys(args: argparse.Namespace) -> None:
    import os

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


def _dead_letters(args: argparse.Namespace) -> None:
    import json
    from datetime import UTC, datetime

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
        from functions.events.bucket_event import get_bucket_event_function

        if args.ids:
            letters = [letter for letter in letters if letter.id in set(args.ids)]
        counts = replay(get_bucket_event_function(), letters)
        print(
            f"replayed {len(letters)}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        )


def _reconcile(args: argparse.Namespace) -> None:
    from fashion_search.workflows.uploads import reconcile_uploads

    found = reconcile_uploads(get_settings(), args.min_age)
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(found["outcomes"].items())) or "nothing"
    print(
        f"s3://{found['bucket']}: {found['missing']} objects missing from the catalog,"
        f" {found['deleted']} products of deleted objects; {outcomes}"
    )


def _rollout(args: argparse.Namespace) -> None:
    from fashion_search.workflows import rollout

    settings = get_settings()
    migrate(settings.database.url, settings.database.embedding_dim)
    prepared = rollout.prepare(settings, args.version)
    if prepared["state"] == "serving":
        print(f"version {args.version} already serves the catalog")
        return
    print(
        f"version {args.version} ({prepared['dimension']}-d) loaded beside the champion;"
        f" building its embeddings in {prepared['partition']}"
    )
    for retired in prepared["retired"]:
        print(f"  version {retired} retired (its rollback window closes with this rollout)")
    built = rollout.build(settings, args.version, args.batch_size, progress=True)
    print(
        f"embedded {built['embedded']} products in {built['seconds']:.1f} s;"
        f" coverage {built['coverage_percent']}%, {built['failed']} failed"
    )
    for product_id, reason in built["failures"].items():
        print(f"  product {product_id}: {reason}")
    if args.no_switch:
        print(f"not switched: `fashion-search switch {args.version}` serves it")
        return
    _print_switch(rollout.switch(settings, args.version))


def _print_switch(report: dict[str, object]) -> None:
    print(f"version {report['serving']} serves the catalog (switch {report['switch_ms']} ms)")
    if report["previous"]:
        print(
            f"version {report['previous']} kept until {report['rollback_until']}:"
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
    retired = [retire(settings, args.version)["version"]] if args.version else (
        retire_expired(settings)["retired"]
    )  # fmt: skip
    print("retired: " + ", ".join(retired) if retired else "nothing to retire")


def _versions(args: argparse.Namespace) -> None:
    from fashion_search.workflows.rollout import status

    rows = status(get_settings())
    print(
        f"{'version':<8} {'state':<9} {'dim':>5} {'coverage':>9} {'MB':>8}  since / rollback until"
    )
    for r in rows:
        coverage = "" if r["coverage_percent"] is None else f"{r['coverage_percent']:.1f}%"
        until = f" / {r['rollback_until']}" if r["rollback_until"] else ""
        print(
            f"{r['version']:<8} {r['state']:<9} {r['dimension']:>5} {coverage:>9}"
            f" {r['megabytes']:>8.1f}  {r['since']}{until}"
        )


def _train(args: argparse.Namespace) -> None:
    import torch

    from fashion_search.model.factory import ModelSpec
    from fashion_search.model.pipeline import train_and_register
    from fashion_search.model.train import TrainConfig, recipe_for
    from model_server.artifacts import ARTIFACT_DIR

    settings = get_settings()
    recipe = recipe_for(args.architecture, args.pretrained)
    overrides = {k: getattr(args, k) for k in ("epochs", "batch_size", "lr", "seed", "precision")}
    recipe.update({k: v for k, v in overrides.items() if v is not None})
    config = TrainConfig(**recipe)
    device = (
        args.device if args.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu"
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    outcome = train_and_register(
        settings,
        ModelSpec(args.architecture, args.pretrained),
        config,
        args.source or settings.dataset_source,
        limit=args.limit,
        device=device,
    )
    took = (time.perf_counter() - started) / 60
    print(
        f"run {outcome.run_id}: version {outcome.version.version}, {took:.1f} min on {device}"
        f" (training loop {outcome.train_minutes:.1f} min)"
    )
    print(f"{'metric':<22} {'candidate':>10} {'champion':>10}")
    for name, value in outcome.metrics.items():
        before = (outcome.champion_metrics or {}).get(name)
        print(f"{name:<22} {value:>10.4f} {'' if before is None else f'{before:>10.4f}'}")
    print(f"ONNX export: {ARTIFACT_DIR}/ of run {outcome.run_id}")
    if outcome.promoted:
        print("the first version: champion now")
    elif outcome.better:
        print(f"beats the champion: `fashion-search rollout {outcome.version.version}` serves it")
    else:
        print("does not beat the champion")


def _export(args: argparse.Namespace) -> None:
    from fashion_search.model.registry import configure_mlflow, registered_version
    from model_server.artifacts import ARTIFACT_DIR
    from model_server.export import export_version
    from model_server.loader import resolve

    settings = get_settings()
    client = configure_mlflow(settings)
    try:
        version = (
            registered_version(client, settings.registry.model_name, args.version)
            if args.version
            else resolve(settings, client)
        )
    except LookupError as error:
        raise FashionSearchError(str(error)) from error
    manifest = export_version(settings, client, version)
    print(
        f"{version.name} version {version.version}: ONNX export revision"
        f" {manifest.export_revision} in {ARTIFACT_DIR}/ of run {version.run_id}"
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``fashion-search`` command line; each command's function is its ``run`` default."""
    parser = argparse.ArgumentParser(prog="fashion-search", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("migrate", help="apply pending catalog migrations")
    p.add_argument("--embedding-dim", type=int, help="dimension for a new catalog")
    p.set_defaults(run=_migrate)

    p = commands.add_parser("load", help="load products (images + metadata) into the catalog")
    p.add_argument("--source", help="parquet path or Hugging Face dataset id (FS_DATASET_SOURCE)")
    p.add_argument("--limit", type=int, help="load at most this many rows")
    p.add_argument("--offset", type=int, default=0, help="skip this many rows first")
    p.add_argument("--dataset", default="catalog", help="value of the products.dataset column")
    p.add_argument("--skip-existing", action="store_true", help="leave loaded products as they are")
    p.set_defaults(run=_load)

    p = commands.add_parser(
        "embed", help="embed products whose embedding is missing or from another model version"
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.set_defaults(run=_embed)

    p = commands.add_parser(
        "calibrate", help="measure a model version's relevance cutoff on the judged queries"
    )
    p.add_argument("--version", help="catalog model version (default: the serving one)")
    p.set_defaults(run=_calibrate)

    p = commands.add_parser(
        "eval-search", help="vector vs hybrid search on the catalog, with the evaluation metrics"
    )
    p.add_argument("--source", help="dataset whose held-out split gives the queries")
    p.add_argument("--limit", type=int, help="read only the first N dataset rows")
    p.add_argument("--queries", type=int, default=1000, help="title queries to sample")
    p.add_argument("--depth", type=int, default=100, help="results per query (MRR cut-off)")
    p.set_defaults(run=_eval_search)

    p = commands.add_parser(
        "eval", help="P@10 and MRR of the served search against logged judgements"
    )
    p.add_argument(
        "--judgements", choices=["feedback"], default="feedback",
        help="feedback: shoppers' clicks, add-to-carts and not-relevant marks",
    )  # fmt: skip
    p.add_argument("--mode", choices=["vector", "hybrid"], help="search mode (FS_SEARCH_MODE)")
    p.add_argument("--depth", type=int, default=100, help="results per query (MRR cut-off)")
    p.set_defaults(run=_eval)

    p = commands.add_parser(
        "eval-ingest", help="accuracy of upload classification on held-out products"
    )
    p.add_argument("--source", help="dataset whose held-out split is classified")
    p.add_argument("--limit", type=int, help="read only the first N dataset rows")
    p.add_argument("--uploads", type=int, default=1000, help="held-out products to classify")
    p.add_argument("--neighbours", type=int, default=10, help="catalog products that vote")
    p.set_defaults(run=_eval_ingest)

    p = commands.add_parser(
        "upload", help="put images into the uploads bucket and print their output messages"
    )
    p.add_argument("files", nargs="+", help="image files")
    p.add_argument("--prefix", default="incoming", help="key prefix in the uploads bucket")
    p.add_argument("--wait", type=float, default=60, help="seconds to wait for the output")
    p.set_defaults(run=_upload)

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

    p = commands.add_parser("train", help="train, evaluate against the champion, register, export")
    p.add_argument("--architecture", default=DEFAULT_ARCHITECTURE, help="open_clip model name")
    p.add_argument(
        "--pretrained", help="pretrained tag (openai, laion2b_s34b_b79k) or checkpoint path"
    )
    p.add_argument("--source", help="dataset (FS_DATASET_SOURCE)")
    p.add_argument("--limit", type=int, help="use only the first N dataset rows")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"])
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.set_defaults(run=_train)

    p = commands.add_parser(
        "export", help="export a registered version's ONNX towers (once) into its MLflow run"
    )
    p.add_argument("--version", help="registry version of FS_MODEL_NAME (default: the alias's)")
    p.set_defaults(run=_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fashion-search`` command."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        args.run(args)
    except FashionSearchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
