"""Resolve the registry alias, and build (or fetch from cache) the ONNX towers of a version.

ONNX files are cached per model version and export revision: locally under ``{cache_dir}/onnx/``
and in the models bucket under ``onnx/{model}/{version}/{variant}-r{revision}/{tower}.onnx``, so a
version is exported once.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient

from fashion_search.errors import ObjectNotFoundError
from fashion_search.model.factory import Clip
from fashion_search.model.onnx_export import (
    EXPORT_REVISION,
    export_image_tower,
    export_text_tower,
    quantize_int8,
)
from fashion_search.model.registry import RegisteredVersion, champion, load_version
from fashion_search.settings import Settings
from fashion_search.storage import ObjectStore

log = logging.getLogger(__name__)
TOWERS = ("image", "text")


@dataclass(frozen=True)
class ExportedModel:
    """A registered version's ONNX towers on local disk, and the model's facts."""

    version: RegisteredVersion
    variant: str
    files: dict[str, Path]
    clip: Clip


def resolve(settings: Settings, client: MlflowClient) -> RegisteredVersion:
    """The version the configured alias points to; LookupError when there is none."""
    version = champion(client, settings.model_name, settings.model_alias)
    if version is None:
        raise LookupError(
            f"no version of {settings.model_name!r} has alias {settings.model_alias!r}"
        )
    return version


def onnx_prefix(version: RegisteredVersion, variant: str) -> str:
    """Where the exported towers of ``version`` lie, in the models bucket and the local cache."""
    return f"onnx/{version.name}/{version.version}/{variant}-r{EXPORT_REVISION}"


def export_version(settings: Settings, version: RegisteredVersion) -> ExportedModel:
    """ONNX towers of ``version`` (fp32, or int8 when configured), from cache or exported now."""
    variant = "int8" if settings.model_quantized else "fp32"
    store = ObjectStore(settings)
    prefix = onnx_prefix(version, variant)
    local = settings.cache_dir / prefix
    clip = load_version(version)
    files = {tower: local / f"{tower}.onnx" for tower in TOWERS}
    for tower, path in files.items():
        if path.exists():
            continue
        local.mkdir(parents=True, exist_ok=True)
        try:
            path.write_bytes(store.get(settings.models_bucket, f"{prefix}/{tower}.onnx"))
            log.info("%s tower of version %s from the object store cache", tower, version.version)
            continue
        except ObjectNotFoundError:
            pass
        with tempfile.TemporaryDirectory() as tmp:
            fp32 = Path(tmp) / f"{tower}.onnx"
            (export_image_tower if tower == "image" else export_text_tower)(clip, fp32)
            built = quantize_int8(fp32, Path(tmp) / "int8.onnx") if variant == "int8" else fp32
            shutil.move(built, path)
        store.put(
            settings.models_bucket,
            f"{prefix}/{tower}.onnx",
            path.read_bytes(),
            "application/onnx",
        )
        log.info("%s tower of version %s exported (%s)", tower, version.version, variant)
    return ExportedModel(version, variant, files, clip)
