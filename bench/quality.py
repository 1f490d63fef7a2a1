"""Retrieval quality of a registered model: PyTorch vs its ONNX fp32 and int8 exports, next to
the random-init floor of the same architecture, on the held-out split.

    .venv/bin/python -m bench.quality                 # the champion of FS_MODEL_NAME
    .venv/bin/python -m bench.quality --version 3 --limit 5000

Needs the stack (MLflow + S3) for the registered weights.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.report import Report, Table, add_markdown_option
from fashion_search.model.data import load_split
from fashion_search.model.embed import normalize_pixels
from fashion_search.model.evaluate import evaluate, evaluate_embeddings
from fashion_search.model.factory import Clip, ModelSpec, create_clip
from fashion_search.model.registry import (
    RegisteredVersion,
    champion,
    configure_mlflow,
    load_version,
)
from fashion_search.settings import get_settings
from model_server.export import export_clip
from model_server.loader import ExportedModel
from model_server.model import ServedModel


def _onnx_metrics(
    clip: Clip, variant: str, export: Path, test: Any, train: Any
) -> dict[str, float]:
    served = ServedModel(
        ExportedModel.read(export, RegisteredVersion("bench", "0", None, ""), variant)
    )

    def embed_images(images: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(images), 256):
            pixels = normalize_pixels(torch.from_numpy(images[start : start + 256]), clip).numpy()
            out.append(served.image.run(pixels))
        return np.concatenate(out)

    def embed_texts(texts: list[str]) -> np.ndarray:
        return np.concatenate(
            [served.embed_texts(texts[start : start + 256]) for start in range(0, len(texts), 256)]
        )

    return evaluate_embeddings(
        embed_texts,
        embed_images(test.images),
        test.fields,
        embed_images(train.images),
        train.fields,
    )


def main() -> None:
    """Evaluate and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--version", help="registry version (default: the champion)")
    parser.add_argument("--limit", type=int, help="dataset rows (default: all)")
    add_markdown_option(parser)
    args = parser.parse_args()
    report = Report("bench.quality")
    settings = get_settings()
    client = configure_mlflow(settings)
    if args.version:
        version = RegisteredVersion(settings.registry.model_name, args.version, None, "")
    else:
        found = champion(client, settings.registry.model_name, settings.registry.model_alias)
        if found is None:
            raise SystemExit(
                f"{settings.registry.model_name} has no {settings.registry.model_alias}"
            )
        version = found
    clip = load_version(version)
    train = load_split(settings.dataset_source, clip.image_size, "train", args.limit)
    test = load_split(settings.dataset_source, clip.image_size, "test", args.limit)
    tmp = Path(tempfile.mkdtemp())
    export_clip(clip, tmp)  # fp32 and int8 towers, tokenizer.json, model.json
    rows: dict[str, dict[str, float]] = {}
    for label, run in (
        (
            "random init",
            lambda: evaluate(create_clip(ModelSpec(clip.spec.architecture)), test, train),
        ),
        (f"v{version.version} PyTorch", lambda: evaluate(clip, test, train)),
        (f"v{version.version} ONNX fp32", lambda: _onnx_metrics(clip, "fp32", tmp, test, train)),
        (f"v{version.version} ONNX int8", lambda: _onnx_metrics(clip, "int8", tmp, test, train)),
    ):
        started = time.perf_counter()
        rows[label] = run()
        report.add(f"{label}: evaluated in {time.perf_counter() - started:.0f} s")
    names = [n for n in rows[f"v{version.version} PyTorch"] if n != "title_queries"]
    title = f"{len(train)} train / {len(test)} test products, {clip.spec.architecture}"
    report.add(Table(title, ["metric", *rows], [
        [name, *(f"{rows[label][name]:.3f}" for label in rows)] for name in names
    ]))  # fmt: skip
    report.write_markdown(args.markdown)


if __name__ == "__main__":
    main()
