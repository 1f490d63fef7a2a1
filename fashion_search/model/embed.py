"""Batch embedding with the PyTorch model (training-side evaluation; serving uses ONNX)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fashion_search.model.factory import Clip
from fashion_search.model.towers import TextTower, cut_tokens_torch


def normalize_pixels(images: torch.Tensor, clip: Clip) -> torch.Tensor:
    """uint8 ``[B, S, S, 3]`` -> normalised float ``[B, 3, S, S]``."""
    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(clip.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(clip.std, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def embed_images(
    clip: Clip, images: np.ndarray[Any, Any], batch_size: int = 256
) -> np.ndarray[Any, np.dtype[np.float32]]:
    """L2-normalised embeddings of uint8 square images."""
    device = next(clip.model.parameters()).device
    out = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(images[start : start + batch_size]).to(device)
        out.append(F.normalize(clip.model.encode_image(normalize_pixels(batch, clip)), dim=-1))
    return _stack(out, clip.embed_dim)


@torch.no_grad()
def embed_texts(
    clip: Clip, texts: list[str], batch_size: int = 512
) -> np.ndarray[Any, np.dtype[np.float32]]:
    """L2-normalised embeddings of texts."""
    device = next(clip.model.parameters()).device
    tower, out = TextTower(clip), []
    for start in range(0, len(texts), batch_size):
        tokens = cut_tokens_torch(clip.tokenize(texts[start : start + batch_size])).to(device)
        out.append(tower(tokens))
    return _stack(out, clip.embed_dim)


def _stack(chunks: list[torch.Tensor], dim: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    if not chunks:
        return np.zeros((0, dim), np.float32)
    array: np.ndarray[Any, np.dtype[np.float32]] = torch.cat(chunks).float().cpu().numpy()
    return array
