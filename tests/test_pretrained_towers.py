"""The pretrained-tower CLIP (EfficientNet-Lite2 + all-MiniLM-L6-v2 from their packages): its
weights are the packages', its export computes what PyTorch computes, and the model server
tokenises it without torch as open_clip's Hugging Face tokeniser does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fashion_search.dataset import iter_dataset
from fashion_search.model import DEFAULT_ARCHITECTURE
from fashion_search.model.embed import embed_images, embed_texts
from fashion_search.model.factory import Clip, ModelSpec, create_clip
from fashion_search.model.features import image_embeddings, image_features, text_features
from fashion_search.model.preprocess import preprocess_image
from fashion_search.model.pretrained_towers import image_tower_weights
from fashion_search.model.registry import RegisteredVersion
from fashion_search.settings import get_settings
from model_server.export import export_clip
from model_server.loader import ExportedModel
from model_server.model import ServedModel
from tests.helpers import min_cosine, squares
from tests.test_tokenizer import HARD, NO_TORCH, ROOT


@pytest.fixture(scope="module")
def clip() -> Clip:
    return create_clip(ModelSpec(DEFAULT_ARCHITECTURE))


@pytest.fixture(scope="module")
def products() -> list[Any]:
    return list(iter_dataset(get_settings().dataset_source, limit=64))


@pytest.fixture(scope="module")
def exported(clip: Clip, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("towers-export")
    export_clip(clip, folder)
    return folder


def test_the_towers_start_from_the_packages_pretrained_weights(clip: Clip) -> None:
    weights = image_tower_weights("tf_efficientnet_lite2")
    assert weights is not None
    first = next(iter(torch.load(weights, map_location="cpu", weights_only=True).values()))
    assert torch.equal(clip.model.visual.trunk.conv_stem.weight, first)
    assert clip.mean == (0.5, 0.5, 0.5) and clip.image_size == 160
    # Pretrained sentence embeddings know shoppers' words (random weights would not).
    texts = ["a red dress", "crimson gown", "laptop charger", "sneakers", "running shoes"]
    pooled = text_features(clip, texts)
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
    similar = pooled @ pooled.T
    assert similar[0, 1] > similar[0, 2] + 0.2 and similar[3, 4] > similar[3, 2] + 0.2


def test_the_export_computes_what_pytorch_computes(
    clip: Clip, exported: Path, products: list[Any]
) -> None:
    titles = [p.fields.product_display_name for p in products]
    texts = [*titles, "vestido rojo para niña", "sneakers for men", "word " * 60]
    pixels = [preprocess_image(p.image, clip.image_size, clip.mean, clip.std) for p in products]
    reference = embed_images(clip, squares([p.image for p in products], clip.image_size))
    for variant, text_close, image_close in (("fp32", 0.9999, 0.9999), ("int8", 0.9, 0.99)):
        served = ServedModel(
            ExportedModel.read(exported, RegisteredVersion("t", "1", None, ""), variant)
        )
        assert min_cosine(served.embed_texts(texts), embed_texts(clip, texts)) >= text_close
        assert min_cosine(served.embed_pixels(pixels), reference) >= image_close
    (trunk,) = image_features(clip, squares([p.image for p in products], clip.image_size))
    assert min_cosine(image_embeddings(clip, trunk), reference) >= 0.9999  # the training path


def test_the_model_server_tokenises_without_torch_as_open_clip_does(
    clip: Clip, exported: Path, products: list[Any]
) -> None:
    texts = [*HARD, *(p.fields.product_display_name for p in products)]
    done = subprocess.run(
        [sys.executable, "-c", NO_TORCH, str(exported / "tokenizer.json"), json.dumps(texts),
         "whitespace"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == clip.tokenize(texts).tolist()
