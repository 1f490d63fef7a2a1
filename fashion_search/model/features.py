"""What locked pretrained towers output, computed once: the image trunk's pooled features and
the text transformer's pooled features, before each tower's projection head.

Locked-image-and-text tuning trains only the heads (and the logit scale), so each image and
caption goes through its tower once, not once per epoch. The image trunk runs on ONNX Runtime
(exported here, in memory): 105 images/s at 160 px against PyTorch's 39 (channels-last) on the
2-core AVX2 host, which decides how long ``make up``'s first training takes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fashion_search.model.embed import normalize_pixels
from fashion_search.model.factory import Clip
from fashion_search.model.onnx_export import IMAGE_INPUT, export_module

Array = np.ndarray[Any, np.dtype[np.float32]]


def locked(clip: Clip) -> bool:
    """Whether ``clip``'s towers are pretrained ones whose heads alone are trained (a timm
    image trunk and a Hugging Face text tower)."""
    return clip.hf_text and hasattr(clip.model.visual, "trunk")


class _Trunk(nn.Module):
    """The image trunk with its input named as the towers' (``pixel_values``)."""

    def __init__(self, trunk: nn.Module) -> None:
        super().__init__()
        self.trunk = trunk

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pooled features of a batch of preprocessed images."""
        features: torch.Tensor = self.trunk(pixel_values)
        return features


def _trunk_session(clip: Clip, folder: Path) -> Any:
    import onnxruntime as ort

    example = torch.zeros(2, 3, clip.image_size, clip.image_size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    path = export_module(
        _Trunk(clip.model.visual.trunk).eval(), example, IMAGE_INPUT, {0: batch},
        folder / "trunk.onnx",
    )  # fmt: skip
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def image_features(
    clip: Clip, *image_sets: np.ndarray[Any, Any], batch_size: int = 64
) -> list[Array]:
    """The trunk's pooled features ``[N, F]`` of each set of uint8 square images
    ``[N, S, S, 3]`` (the trunk exported once)."""
    width = clip.model.visual.trunk.num_features
    found = []
    with tempfile.TemporaryDirectory() as tmp:
        session = _trunk_session(clip, Path(tmp))
        for images in image_sets:
            out = [np.zeros((0, width), np.float32)]
            for start in range(0, len(images), batch_size):
                batch = torch.from_numpy(images[start : start + batch_size])
                pixels = normalize_pixels(batch, clip).numpy()
                out.append(session.run(None, {IMAGE_INPUT: pixels})[0])
            found.append(np.concatenate(out).astype(np.float32))
    return found


@torch.no_grad()
def text_features(clip: Clip, texts: list[str], batch_size: int = 256) -> Array:
    """The text transformer's pooled features ``[N, W]`` (before the projection head)."""
    from fashion_search.model.towers import cut_tokens_torch

    text: nn.Module = clip.model.text
    out = []
    for start in range(0, len(texts), batch_size):
        ids = cut_tokens_torch(clip.tokenize(texts[start : start + batch_size]))
        mask = (ids != text.config.pad_token_id).long()
        out.append(text.pooler(text.transformer(input_ids=ids, attention_mask=mask), mask))
    width = int(text.config.hidden_size)
    return torch.cat(out).float().numpy() if out else np.zeros((0, width), np.float32)


@torch.no_grad()
def image_embeddings(clip: Clip, features: Array) -> Array:
    """L2-normalised embeddings from trunk features (the image head applied)."""
    out = clip.model.visual.head(torch.from_numpy(features))
    embedded: Array = torch.nn.functional.normalize(out, dim=-1).numpy()
    return embedded
