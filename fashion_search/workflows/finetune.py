"""``finetune``'s first step: train with the run's parameters, evaluate against the champion on
the same test split, register and export the ONNX towers (the rollout of a better version is
:mod:`fashion_search.workflows.rollout`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fashion_search.catalog.db import create_pool
from fashion_search.catalog.repositories import Catalog
from fashion_search.errors import FashionSearchError
from fashion_search.learning.judgements import Judgements
from fashion_search.model import DEFAULT_ARCHITECTURE
from fashion_search.model.factory import ModelSpec
from fashion_search.model.pipeline import Exporter, train_and_register
from fashion_search.model.registry import configure_mlflow
from fashion_search.model.train import TrainConfig, recipe_for
from fashion_search.settings import Settings
from fashion_search.workflows.splits import split_ids


@dataclass(frozen=True)
class Trained:
    """What :func:`train_model` produced: the version, whether it beats the champion (is to be
    rolled out) or became the champion at once (the first version), the metrics, the feedback
    pairs used."""

    version: str
    better: bool
    promoted: bool
    metrics: dict[str, float]
    champion_metrics: dict[str, float] | None
    train_minutes: float
    feedback: dict[str, int]


@dataclass(frozen=True)
class LatestVersion:
    """The newest registered version and whether its training found it better."""

    version: str
    better: bool


def train_model(
    settings: Settings,
    source: str,
    export: Exporter,
    architecture: str | None = None,
    pretrained: str | None = None,
    split_version: str | None = None,
    limit: int | None = None,
    feedback: bool = False,
    **train_options: Any,
) -> Trained:
    """Train, register and ``export`` (:data:`~fashion_search.model.pipeline.Exporter`).

    ``split_version`` names a split made by ``process_train_test_dataset``; without one the
    content-hash split is used. ``feedback``: shoppers' logged judgements (the catalog's
    feedback) add (query, clicked product) pairs and "not relevant" hard negatives; the report
    says how many were used. ``train_options`` are TrainConfig fields (epochs, lr, ...).
    """
    architecture = architecture or DEFAULT_ARCHITECTURE
    recipe = recipe_for(architecture, pretrained)
    config = TrainConfig(**{**recipe, **{k: v for k, v in train_options.items() if v is not None}})
    split = None
    if split_version:
        ids = split_ids(settings, split_version)
        split = (split_version, ids["train"], ids["test"])
    judgements = _logged_judgements(settings) if feedback else None
    outcome = train_and_register(
        settings, ModelSpec(architecture, pretrained), config, source, export, limit=limit,
        split=split, progress=False, feedback=judgements,
    )  # fmt: skip
    return Trained(
        version=outcome.version.version,
        better=outcome.better,
        promoted=outcome.promoted,
        metrics=outcome.metrics,
        champion_metrics=outcome.champion_metrics,
        train_minutes=round(outcome.train_minutes, 2),
        feedback=outcome.feedback,
    )


def _logged_judgements(settings: Settings) -> Judgements:
    with create_pool(settings) as pool:
        return Judgements.of(Catalog.of(pool).feedback.records())


def latest_training(settings: Settings) -> LatestVersion:
    """The newest registered version and whether its training found it better than the
    champion (its run's ``better`` tag): what a rollout step takes when the training step's
    own report is gone (a run resumed after it)."""
    client = configure_mlflow(settings)
    name = settings.registry.model_name
    versions = client.search_model_versions(f"name='{name}'")
    if not versions:
        raise FashionSearchError(f"{name} has no registered version")
    newest = max(versions, key=lambda v: int(v.version))
    tags = client.get_run(newest.run_id).data.tags if newest.run_id else {}
    return LatestVersion(str(newest.version), tags.get("better") == "true")
