"""Export a registered version once: its ONNX towers (fp32, int8, fp16), a torch-free tokenizer and
``model.json``, logged as artifacts of the version's MLflow run (:mod:`model_server.artifacts`).

Needs the ``export`` extra (torch, open_clip, onnx). Training runs it right after registering,
``python -m model_server export --version N`` on demand, and the model server only for a version
it must serve that has no export yet.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
from mlflow import MlflowClient
from open_clip.tokenizer import HFTokenizer, SimpleTokenizer

from fashion_search.model.factory import Clip
from fashion_search.model.onnx_export import (
    convert_fp16,
    export_image_tower,
    export_text_tower,
    quantize_int8,
)
from fashion_search.model.registry import RegisteredVersion, load_version
from fashion_search.settings import Settings
from model_server.artifacts import (
    ARTIFACT_DIR,
    EXPORT_FILES,
    EXPORT_REVISION,
    MANIFEST,
    MANIFEST_SHA256_TAG,
    TOKENIZER,
    ExportManifest,
    ModelFacts,
    sha256_of,
    tower_file,
)
from model_server.loader import ExportIntegrityError, remote_manifest, run_id_of
from model_server.tokenizer import TextTokenizer, build_tokenizer_json, wordpiece_tokenizer_json

log = logging.getLogger(__name__)
#: Texts the written tokenizer must tokenise as open_clip does before it is exported.
TOKENIZER_CHECK = [
    "Turtle Check Men Navy Blue Shirt",
    "Puma Men's  Running SHOES, size 9-10!",
    "Café crème & naïve <b>résumé</b> 123",
    "vestido rojo para niña\tcon\u00a0flores",
    " ".join(["a very long product description that goes on"] * 8),  # truncated
    "",
]


def export_clip(clip: Clip, directory: Path) -> ExportManifest:
    """Write the export of ``clip`` into ``directory`` (the layout of
    :mod:`model_server.artifacts`); returns its ``model.json``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / TOKENIZER).write_bytes(_tokenizer_json(clip))
    for tower, export in (("image", export_image_tower), ("text", export_text_tower)):
        fp32 = export(clip, directory / tower_file("fp32", tower))
        quantize_int8(fp32, directory / tower_file("int8", tower))
        convert_fp16(fp32, directory / tower_file("fp16", tower))
    manifest = ExportManifest(
        **ModelFacts.of(clip).model_dump(),
        export_revision=EXPORT_REVISION,
        sha256={name: sha256_of(directory / name) for name in EXPORT_FILES},
    )
    (directory / MANIFEST).write_text(manifest.model_dump_json(indent=2))
    return manifest


def _tokenizer_json(clip: Clip) -> bytes:
    """``tokenizer.json`` of ``clip``'s tokeniser (open_clip's default BPE one, or a Hugging
    Face text tower's WordPiece one); it must give open_clip's ids on :data:`TOKENIZER_CHECK`."""
    reference = clip.tokenizer
    if clip.text_tower is not None and type(reference) is HFTokenizer:
        data = wordpiece_tokenizer_json(reference.tokenizer.backend_tokenizer, clip.context_length)
    elif type(reference) is SimpleTokenizer and reference.context_length == clip.context_length:
        data = build_tokenizer_json(clip.context_length)
    else:
        raise ValueError(f"{clip.spec.architecture}: no torch-free tokenizer for {reference!r}")
    cleaning = ModelFacts.of(clip).text_cleaning
    ours = TextTokenizer.from_bytes(data, cleaning)(TOKENIZER_CHECK)
    if not np.array_equal(ours, clip.tokenize(TOKENIZER_CHECK).numpy()):
        raise ValueError(f"{clip.spec.architecture}: tokenizer.json differs from open_clip")
    return data


def export_version(
    settings: Settings, client: MlflowClient, version: RegisteredVersion
) -> ExportManifest:
    """Export ``version`` and log the files under ``onnx/r{revision}/`` of its run, model.json
    last, then record model.json's SHA-256 in the registry (the version's tag
    :data:`~model_server.artifacts.MANIFEST_SHA256_TAG`, which the loader checks). A version
    with an export of this revision that matches the registry's record is left as it is; one
    whose export does not match it, or that has no record (exported before the registry kept
    one), is exported again from its checkpoint."""
    try:
        existing = remote_manifest(client, version)
    except ExportIntegrityError as error:
        log.warning("%s: exporting version %s again", error, version.version)
        existing = None
    if existing is not None:
        log.info("version %s has its export (revision %d)", version.version, EXPORT_REVISION)
        return existing
    run_id = run_id_of(version)
    clip = load_version(version)
    settings.cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=settings.cache_dir, prefix="export-") as tmp:
        directory = Path(tmp)
        manifest = export_clip(clip, directory)
        for name in (*EXPORT_FILES, MANIFEST):
            folder = "/".join((ARTIFACT_DIR, *Path(name).parent.parts))
            client.log_artifact(run_id, str(directory / name), folder)
        recorded = sha256_of(directory / MANIFEST)  # the bytes just uploaded
        client.set_model_version_tag(version.name, version.version, MANIFEST_SHA256_TAG, recorded)
    log.info("version %s exported to %s of run %s", version.version, ARTIFACT_DIR, run_id)
    return manifest
