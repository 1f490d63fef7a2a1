"""``finetune``: train with the run's parameters, evaluate against the champion on the same
test split, register, export the ONNX towers, promote if better, wait until the model server
serves the champion, then re-embed the catalog so that stored embeddings come from the served
version."""

from __future__ import annotations

import time
from typing import Any

from fashion_search.embedding_client import EmbeddingClient, ModelServerUnavailableError
from fashion_search.errors import FashionSearchError
from fashion_search.model.factory import ModelSpec
from fashion_search.model.pipeline import train_and_register
from fashion_search.model.registry import champion, configure_mlflow
from fashion_search.model.train import TrainConfig
from fashion_search.settings import Settings
from fashion_search.workflows.splits import split_ids


def train_model(
    settings: Settings,
    source: str,
    architecture: str = "fashion-compact",
    pretrained: str | None = None,
    split_version: str | None = None,
    limit: int | None = None,
    **train_options: Any,
) -> dict[str, Any]:
    """Train, register and export; returns the version, whether it was promoted, and the
    metrics.

    ``split_version`` names a split made by ``process_train_test_dataset``; without one the
    content-hash split is used. ``train_options`` are TrainConfig fields (epochs, lr, ...).
    """
    config = TrainConfig(**{k: v for k, v in train_options.items() if v is not None})
    split = None
    if split_version:
        ids = split_ids(settings, split_version)
        split = (split_version, ids["train"], ids["test"])
    outcome = train_and_register(
        settings, ModelSpec(architecture, pretrained), config, source, limit=limit,
        split=split, progress=False,
    )  # fmt: skip
    return {
        "version": outcome.version.version,
        "promoted": outcome.promoted,
        "metrics": outcome.metrics,
        "champion_metrics": outcome.champion_metrics,
        "train_minutes": round(outcome.train_minutes, 2),
    }


def wait_until_served(settings: Settings) -> dict[str, Any]:
    """Wait until the model server serves the registry's champion (it polls the alias), at
    most ``settings.registry.serve_timeout_s``."""
    registry = settings.registry
    timeout_s = registry.serve_timeout_s
    current = champion(configure_mlflow(settings), registry.model_name, registry.model_alias)
    if current is None:
        raise FashionSearchError(f"{registry.model_name} has no {registry.model_alias!r} version")
    deadline = time.monotonic() + timeout_s
    with EmbeddingClient(settings.model_server.address, timeout_s=10) as client:
        while True:
            try:
                served = client.info().registry_version
            except ModelServerUnavailableError:
                served = None
            if served == current.version:
                return {"served_version": served}
            if time.monotonic() > deadline:
                raise FashionSearchError(
                    f"the model server serves version {served}, not the champion"
                    f" {current.version}, after {timeout_s} s"
                )
            time.sleep(2)
