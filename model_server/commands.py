"""``python -m model_server``: ``serve`` (the default) the registry's champion over gRPC, or make
what it serves: ``train`` a version (trained, evaluated against the champion, registered and
exported) or ``export`` a registered one's ONNX towers (once) into its MLflow run."""

from __future__ import annotations

import argparse
import logging
import time

from fashion_search.commands import run
from fashion_search.errors import FashionSearchError
from fashion_search.model import DEFAULT_ARCHITECTURE
from fashion_search.settings import get_settings
from model_server.artifacts import ARTIFACT_DIR


def build_parser() -> argparse.ArgumentParser:
    """The command line; each command's function is its ``run`` default (``serve`` when none)."""
    parser = argparse.ArgumentParser(prog="python -m model_server", description=__doc__)
    parser.set_defaults(run=_serve)
    commands = parser.add_subparsers(dest="command")

    p = commands.add_parser("serve", help="serve the champion (and the candidate) over gRPC")
    p.set_defaults(run=_serve)

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
    p.add_argument(
        "--unless-champion", action="store_true", help="do nothing when the registry has one"
    )
    p.set_defaults(run=_train)

    p = commands.add_parser(
        "export", help="export a registered version's ONNX towers (once) into its MLflow run"
    )
    p.add_argument("--version", help="registry version of FS_MODEL_NAME (default: the alias's)")
    p.set_defaults(run=_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m model_server``."""
    args = build_parser().parse_args(argv)
    return run(args)


def _serve(args: argparse.Namespace) -> None:
    """Serve until SIGTERM, with metrics on ``FS_METRICS_PORT`` and traces when an OTLP
    endpoint is set."""
    from fashion_search.telemetry.logs import configure_logging
    from fashion_search.telemetry.metrics import serve_metrics
    from fashion_search.telemetry.tracing import configure_tracing
    from model_server.service import serve

    settings = get_settings()
    configure_logging(settings)
    configure_tracing("fashion-search-model-server", settings)
    serve_metrics(settings)
    serve(settings)
    logging.getLogger("model_server").info("stopped")


def _train(args: argparse.Namespace) -> None:
    import torch

    from fashion_search.model.factory import ModelSpec
    from fashion_search.model.pipeline import train_and_register
    from fashion_search.model.train import TrainConfig, recipe_for
    from model_server.export import export_version

    _log_to_stderr()
    settings = get_settings()
    if args.unless_champion:
        from fashion_search.model.registry import champion, configure_mlflow

        registry = settings.registry
        if champion(configure_mlflow(settings), registry.model_name, registry.model_alias):
            print(f"{registry.model_name} has a champion already: nothing to train")
            return
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
        export_version,
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
    from model_server.export import export_version
    from model_server.loader import resolve

    _log_to_stderr()
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


def _log_to_stderr() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
