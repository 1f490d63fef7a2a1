"""Resolve the registry alias, and build (or fetch from cache) the ONNX towers of a version.

ONNX files are cached per model version and export revision, with the model facts serving needs
(``model.json``): locally under ``{cache_dir}/onnx/`` and in the models bucket under
``onnx/{model}/{version}/{variant}-r{revision}/``. A version is exported once, and a cached one
is served without loading its checkpoint.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient
from pydantic import BaseModel, ConfigDict

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
FACTS = "model.json"


class ModelFacts(BaseModel):
    """What serving a version needs besides its ONNX towers."""

    model_config = ConfigDict(frozen=True)

    architecture: str
    embed_dim: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def of(cls, clip: Clip) -> ModelFacts:
        """The facts of a built model."""
        return cls(
            architecture=clip.spec.architecture, embed_dim=clip.embed_dim,
            image_size=clip.image_size, mean=clip.mean, std=clip.std,
        )  # fmt: skip


@dataclass(frozen=True)
class ExportedModel:
    """A registered version's ONNX towers on local disk, and the model's facts."""

    version: RegisteredVersion
    variant: str
    files: dict[str, Path]
    facts: ModelFacts


def resolve(settings: Settings, client: MlflowClient) -> RegisteredVersion:
    """The version the configured alias points to; LookupError when there is none."""
    registry = settings.registry
    version = champion(client, registry.model_name, registry.model_alias)
    if version is None:
        name, alias = registry.model_name, registry.model_alias
        raise LookupError(f"no version of {name!r} has alias {alias!r}")
    return version


def onnx_prefix(version: RegisteredVersion, variant: str) -> str:
    """Where the exported towers of ``version`` lie, in the models bucket and the local cache."""
    return f"onnx/{version.name}/{version.version}/{variant}-r{EXPORT_REVISION}"


def export_version(settings: Settings, version: RegisteredVersion) -> ExportedModel:
    """ONNX towers of ``version`` (fp32, or int8 when configured) and its facts: from the local
    cache, else the models bucket, else exported now from the checkpoint."""
    variant = "int8" if settings.model_server.quantized else "fp32"
    store = ObjectStore(settings)
    prefix = onnx_prefix(version, variant)
    local = settings.cache_dir / prefix
    local.mkdir(parents=True, exist_ok=True)
    clip: Clip | None = None
    for name in (*(f"{tower}.onnx" for tower in TOWERS), FACTS):
        path = local / name
        if path.exists():
            continue
        try:
            _write_atomically(path, store.get(settings.storage.models_bucket, f"{prefix}/{name}"))
            log.info("%s of version %s from the object store cache", name, version.version)
            continue
        except ObjectNotFoundError:
            pass
        clip = clip or load_version(version)
        data = _build(name, clip, variant)
        _write_atomically(path, data)
        kind = "application/json" if name == FACTS else "application/onnx"
        store.put(settings.storage.models_bucket, f"{prefix}/{name}", data, kind)
        log.info("%s of version %s built (%s)", name, version.version, variant)
    files = {tower: local / f"{tower}.onnx" for tower in TOWERS}
    facts = ModelFacts.model_validate_json((local / FACTS).read_bytes())
    return ExportedModel(version, variant, files, facts)


def _build(name: str, clip: Clip, variant: str) -> bytes:
    """The model's facts, or one of its towers exported (and quantised when int8)."""
    if name == FACTS:
        return ModelFacts.of(clip).model_dump_json().encode()
    export = export_image_tower if name == "image.onnx" else export_text_tower
    with tempfile.TemporaryDirectory() as tmp:
        onnx = export(clip, Path(tmp) / name)
        if variant == "int8":
            onnx = quantize_int8(onnx, Path(tmp) / "int8.onnx")
        return onnx.read_bytes()


def _write_atomically(path: Path, data: bytes) -> None:
    """A download cut short never leaves a file the next start would take as cached."""
    part = path.with_name(path.name + ".part")
    part.write_bytes(data)
    part.replace(path)
