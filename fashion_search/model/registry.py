"""The MLflow model registry: register trained CLIP checkpoints, judge whether a new version
beats the champion on the primary metric, and load a version back.

Importing it needs no torch (the model server resolves aliases with it); registering and
loading checkpoints import torch and open_clip when called.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from fashion_search.settings import Settings

if TYPE_CHECKING:
    from fashion_search.model.factory import Clip

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
SPEC = "model.json"
ARTIFACT_PATH = "clip"
#: A Hugging Face text tower's config and tokenizer, beside the checkpoint.
TEXT_TOWER = "text_tower"
#: Higher is better; the caller measures candidate and champion on the same test split: the
#: held-out titles' MRR, and the judged queries' P@10 (every kind of query shoppers write).
PRIMARY_METRIC = "title_mrr"
JUDGED_METRIC = "judged_p10"
#: How much a candidate may lose on one of the two metrics while it wins on the other.
TOLERANCE = 0.01


def configure_mlflow(settings: Settings) -> MlflowClient:
    """Point MLflow (tracking + artifact S3 endpoint) at the configured servers."""
    os.environ.setdefault("MLFLOW_S3_ENDPOINT_URL", settings.storage.endpoint_url)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", settings.storage.access_key)
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", settings.storage.secret_key)
    mlflow.set_tracking_uri(settings.registry.tracking_uri)
    return MlflowClient(settings.registry.tracking_uri)


@dataclass(frozen=True)
class RegisteredVersion:
    """A registered model version and where its files are."""

    name: str
    version: str
    run_id: str | None
    source: str


def register_clip(
    client: MlflowClient,
    clip: Clip,
    run_id: str,
    name: str,
    split_id: str,
    metrics: dict[str, float],
) -> RegisteredVersion:
    """Log the checkpoint and spec as run artifacts and register them as a new version.

    The version carries its test-split id and metrics as tags.
    """
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        torch.save(clip.model.state_dict(), Path(tmp) / CHECKPOINT)
        (Path(tmp) / SPEC).write_text(json.dumps(clip.spec.to_dict()))
        if clip.text_tower is not None:
            from fashion_search.model.pretrained_towers import TEXT_TOWER_FILES

            (Path(tmp) / TEXT_TOWER).mkdir()
            for kept in TEXT_TOWER_FILES:
                if (Path(clip.text_tower) / kept).exists():
                    shutil.copy(Path(clip.text_tower) / kept, Path(tmp) / TEXT_TOWER / kept)
        client.log_artifacts(run_id, tmp, ARTIFACT_PATH)
    try:
        client.create_registered_model(name)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    run = client.get_run(run_id)
    source = f"{run.info.artifact_uri}/{ARTIFACT_PATH}"
    version = client.create_model_version(name, source, run_id=run_id)
    client.set_model_version_tag(name, version.version, "split_id", split_id)
    for key, value in metrics.items():
        client.set_model_version_tag(name, version.version, key, f"{value:.6f}")
    return RegisteredVersion(name, str(version.version), run_id, source)


def champion(client: MlflowClient, name: str, alias: str = "champion") -> RegisteredVersion | None:
    """The version the alias points to, or None."""
    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None
    return RegisteredVersion(name, str(version.version), version.run_id, str(version.source))


def registered_version(client: MlflowClient, name: str, version: str) -> RegisteredVersion:
    """Version ``version`` of ``name``; LookupError when there is none."""
    try:
        found = client.get_model_version(name, version)
    except MlflowException as error:
        raise LookupError(f"{name!r} has no version {version}") from error
    return RegisteredVersion(name, str(found.version), found.run_id, str(found.source))


def beats(
    candidate: RegisteredVersion,
    candidate_metrics: dict[str, float],
    champion_metrics: dict[str, float] | None,
) -> bool:
    """Whether ``candidate`` should replace the champion: there is none, or it scores higher on
    :data:`PRIMARY_METRIC` or :data:`JUDGED_METRIC` and at most :data:`TOLERANCE` lower on the
    other (both measured on the same test split by the caller; a champion measured without the
    judged queries is compared on the primary metric alone)."""
    if champion_metrics is None:
        better = True
    else:
        names = [m for m in (PRIMARY_METRIC, JUDGED_METRIC)
                 if m in champion_metrics and m in candidate_metrics]  # fmt: skip
        gains = [candidate_metrics[m] - champion_metrics[m] for m in names]
        better = any(g > 0 for g in gains) and all(g >= -TOLERANCE for g in gains)
    log.info(
        "version %s %s the champion (%s against %s)", candidate.version,
        "beats" if better else "does not beat",
        {m: round(candidate_metrics.get(m, 0.0), 4) for m in (PRIMARY_METRIC, JUDGED_METRIC)},
        None if champion_metrics is None else
        {m: round(champion_metrics.get(m, 0.0), 4) for m in (PRIMARY_METRIC, JUDGED_METRIC)},
    )  # fmt: skip
    return better


def load_version(version: RegisteredVersion, device: str = "cpu") -> Clip:
    """Download a registered version's files and build its model (a Hugging Face text tower
    from the config and tokenizer it keeps, copied to the cache)."""
    import torch

    from fashion_search.model.factory import ModelSpec, create_clip
    from fashion_search.settings import get_settings

    with tempfile.TemporaryDirectory() as tmp:
        local = Path(
            mlflow.artifacts.download_artifacts(
                f"models:/{version.name}/{version.version}", dst_path=tmp
            )
        )
        spec = ModelSpec(**json.loads((local / SPEC).read_text()))
        text_tower = None
        if (local / TEXT_TOWER).is_dir():
            kept = get_settings().cache_dir / "towers" / f"{version.name}-v{version.version}"
            shutil.copytree(local / TEXT_TOWER, kept, dirs_exist_ok=True)
            text_tower = str(kept)
        clip = create_clip(
            ModelSpec(spec.architecture, None), device, text_tower, tower_weights=False
        )
        state = torch.load(local / CHECKPOINT, map_location=device, weights_only=True)
    clip.model.load_state_dict(state)
    clip.spec = spec
    return clip
