"""Train, evaluate against the champion, register and export a CLIP: what the training CLI and
the finetune DAG run. Every run logs its parameters (how many feedback pairs it used among
them), per-epoch loss and metrics to MLflow."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
from mlflow import MlflowClient

from fashion_search.catalog.precomputed import save_image_embeddings
from fashion_search.errors import FashionSearchError
from fashion_search.learning.judgements import Judgements, training_pairs
from fashion_search.model.data import TEST_PERCENT, load_split
from fashion_search.model.evaluate import evaluate
from fashion_search.model.factory import ModelSpec, create_clip
from fashion_search.model.features import image_embeddings, image_features, locked
from fashion_search.model.registry import (
    RegisteredVersion,
    beats,
    champion,
    configure_mlflow,
    load_version,
    register_clip,
)
from fashion_search.model.train import TrainConfig, train, train_heads
from fashion_search.settings import Settings
from fashion_search.storage import ObjectStore

log = logging.getLogger(__name__)
#: ``pretrained`` that starts from the champion's weights (what retraining does).
START_FROM_CHAMPION = "champion"
#: The one-time ONNX export of a registered version for serving; the model server's
#: (:func:`model_server.export.export_version`), passed in by whoever runs the training.
Exporter = Callable[[Settings, MlflowClient, RegisteredVersion], object]


@dataclass(frozen=True)
class TrainingOutcome:
    """What a training run produced."""

    run_id: str
    version: RegisteredVersion
    metrics: dict[str, float]
    champion_metrics: dict[str, float] | None
    better: bool  # beats the champion (or there is none): roll it out
    promoted: bool  # became the champion at once: the first version, with nothing to roll out from
    train_minutes: float
    feedback: dict[str, int]  # feedback pairs used, those with a hard negative, those skipped


def train_and_register(
    settings: Settings,
    spec: ModelSpec,
    config: TrainConfig,
    source: str,
    export: Exporter,
    limit: int | None = None,
    device: str = "cpu",
    experiment: str = "fashion-clip",
    progress: bool = True,
    split: tuple[str, set[int], set[int]] | None = None,
    feedback: Judgements | None = None,
) -> TrainingOutcome:
    """Train ``spec`` on the train split of ``source``, evaluate it and the current champion on
    the same test split, register it and ``export`` its ONNX towers: a served version always
    has its export. Whether it scores higher is ``better``; the
    champion alias moves only by a rollout (:mod:`fashion_search.workflows.rollout`), except
    for the first version (``promoted``), which has no catalog to keep searchable.

    ``spec.pretrained`` :data:`START_FROM_CHAMPION` trains on from the champion's weights.
    ``split`` is a stored split (version, train ids, test ids); without it the split is by
    image content hash (:func:`~fashion_search.model.data.in_test_split`). ``feedback``
    judgements add (query, relevant product) pairs with hard negatives, for the products of
    the train split only (:func:`~fashion_search.learning.judgements.training_pairs`).
    """
    client = configure_mlflow(settings)
    if spec.pretrained == START_FROM_CHAMPION:  # retraining: the champion's weights, trained on
        current = champion(client, settings.registry.model_name, settings.registry.model_alias)
        if current is None:
            raise FashionSearchError("no champion to start from")
        clip = load_version(current, device)
        spec = ModelSpec(clip.spec.architecture, f"{current.name} v{current.version}")
    else:
        clip = create_clip(spec, device)
    if split is None:
        split_id = f"{Path(source).name}:rows={limit or 'all'}:test={TEST_PERCENT}%:sha1-image"
        train_ids = test_ids = None
    else:
        split_id, train_ids, test_ids = split
    train_data = load_split(source, clip.image_size, "train", limit, ids=train_ids)
    test_data = load_split(source, clip.image_size, "test", limit, ids=test_ids)
    log.info("split %s: %d train, %d test products", split_id, len(train_data), len(test_data))
    pairs = training_pairs(feedback, [f.id for f in train_data.fields]) if feedback else None
    used = {
        "feedback_pairs": len(pairs) if pairs else 0,
        "feedback_hard_negatives": pairs.hard_negatives if pairs else 0,
        "feedback_skipped": pairs.skipped if pairs else 0,
    }
    log.info("feedback: %s", used)
    mlflow.set_experiment(experiment)
    with mlflow.start_run() as run:
        mlflow.log_params(
            {
                "architecture": spec.architecture,
                "pretrained": spec.pretrained,
                **config.to_dict(),
                "device": device,
                "split_id": split_id,
                "train_products": len(train_data),
                "test_products": len(test_data),
                **used,
            }
        )
        started = time.perf_counter()

        def log_loss(epoch: int, loss: float) -> None:
            mlflow.log_metric("train_loss", loss, step=epoch)

        embedded = None
        if locked(clip):  # the towers' features once, then the heads
            features = image_features(clip, train_data.images, test_data.images)
            train_heads(clip, train_data, features[0], config, log_loss, progress, pairs)
            embedded = (image_embeddings(clip, features[1]), image_embeddings(clip, features[0]))
        else:
            train(clip, train_data, config, log_loss, progress=progress, pairs=pairs)
        train_minutes = (time.perf_counter() - started) / 60
        metrics = evaluate(clip, test_data, train_data, embedded)
        mlflow.log_metrics({**metrics, "train_minutes": train_minutes})
        version = register_clip(
            client, clip, run.info.run_id, settings.registry.model_name, split_id, metrics
        )
        export(settings, client, version)
        if embedded is not None:  # for embedding the catalog (fashion_search.catalog.precomputed)
            save_image_embeddings(
                ObjectStore(settings), version.name, version.version,
                test_data.digests + train_data.digests, np.concatenate(embedded),
            )  # fmt: skip
        current = champion(client, settings.registry.model_name, settings.registry.model_alias)
        champion_metrics = None
        if current is not None:
            reigning = load_version(current, device)
            if reigning.image_size != clip.image_size:  # its own input size, the same products
                size, tested = reigning.image_size, {f.id for f in test_data.fields}
                trained = {f.id for f in train_data.fields}
                test_data = load_split(source, size, "test", limit, ids=tested)
                train_data = load_split(source, size, "train", limit, ids=trained)
            champion_metrics = evaluate(reigning, test_data, train_data)
            mlflow.log_metrics({f"champion_{k}": v for k, v in champion_metrics.items()})
        better = beats(version, metrics, champion_metrics)
        promoted = current is None
        if promoted:
            client.set_registered_model_alias(
                version.name, settings.registry.model_alias, version.version
            )
        mlflow.set_tag("better", str(better).lower())
    return TrainingOutcome(
        run.info.run_id, version, metrics, champion_metrics, better, promoted, train_minutes, used
    )
