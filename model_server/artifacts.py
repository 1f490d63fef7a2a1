"""Where a registered version's export lies among its MLflow run's artifacts, and what its
``model.json`` says (no torch: the exporter writes this layout, the loader reads it).

``onnx/r{EXPORT_REVISION}/`` holds ``fp32/{image,text}.onnx``, ``int8/{image,text}.onnx``,
``fp16/{image,text}.onnx``, ``tokenizer.json`` and ``model.json``: the model's facts and the
SHA-256 of every other file.
``model.json`` is uploaded last, so a version whose folder has it has every file.

``model.json`` lies in the models bucket beside the files it names, so whoever can write the
bucket could replace both: the export therefore also records ``model.json``'s own SHA-256 in
the model registry, as the version's tag :data:`MANIFEST_SHA256_TAG`, and the loader serves
only a ``model.json`` with that SHA-256.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from fashion_search.model.factory import Clip

#: Exports of another revision are not reused: bump it when the export writes other files.
EXPORT_REVISION = 5
ARTIFACT_DIR = f"onnx/r{EXPORT_REVISION}"
MANIFEST = "model.json"
#: The registered version's tag with the hex SHA-256 of its ``model.json`` of this revision.
MANIFEST_SHA256_TAG = f"onnx_r{EXPORT_REVISION}_manifest_sha256"
TOKENIZER = "tokenizer.json"
TOWERS = ("image", "text")
VARIANTS = ("fp32", "int8", "fp16")  # fp16: for CUDA


def tower_file(variant: str, tower: str) -> str:
    """A tower's path in an export folder: ``fp32/image.onnx``."""
    return f"{variant}/{tower}.onnx"


#: Every file of an export but ``model.json``, in upload order.
EXPORT_FILES = (*(tower_file(v, t) for v in VARIANTS for t in TOWERS), TOKENIZER)


class ModelFacts(BaseModel):
    """What serving a version needs besides its towers and tokenizer."""

    model_config = ConfigDict(frozen=True)

    architecture: str
    embed_dim: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    context_length: int
    text_cleaning: str = "clip"  # model_server.tokenizer.CLEANINGS

    @classmethod
    def of(cls, clip: Clip) -> ModelFacts:
        """The facts of a built model."""
        return cls(
            architecture=clip.spec.architecture, embed_dim=clip.embed_dim,
            image_size=clip.image_size, mean=clip.mean, std=clip.std,
            context_length=clip.context_length,
            text_cleaning="whitespace" if clip.hf_text else "clip",
        )  # fmt: skip


class ExportManifest(ModelFacts):
    """``model.json``: the facts, the export revision and the SHA-256 of each file by path."""

    export_revision: int
    sha256: dict[str, str]


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()
