"""The two CLIP towers as modules returning L2-normalised embeddings, and the token cut.

CLIP's text tower pools at the end-of-text token under a causal mask, so the tokens after the
batch's last end-of-text token never influence the result: :func:`cut_tokens` drops them, and
:class:`TextTower` accepts any length up to the context length. Training and the ONNX export
both use these modules.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.transformer import text_global_pool
from torch import nn

from fashion_search.model.factory import Clip


class ImageTower(nn.Module):
    """pixel_values ``[B, 3, S, S]`` -> L2-normalised embeddings ``[B, D]``."""

    def __init__(self, clip: Clip) -> None:
        super().__init__()
        self.clip = clip.model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Embed a batch of preprocessed images."""
        return F.normalize(self.clip.encode_image(pixel_values), dim=-1)


class TextTower(nn.Module):
    """input_ids ``[B, L]`` (L <= context length) -> L2-normalised embeddings ``[B, D]``."""

    def __init__(self, clip: Clip) -> None:
        super().__init__()
        self.clip = clip.model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Embed a batch of token ids, cut or not."""
        m = self.clip
        length = input_ids.shape[1]
        x = m.token_embedding(input_ids)
        x = x + m.positional_embedding[:length]
        x = m.transformer(x, attn_mask=m.attn_mask[:length, :length])
        x = m.ln_final(x)
        x = text_global_pool(x, input_ids, m.text_pool_type, getattr(m, "text_eos_id", None))
        x = (
            m.text_projection(x)
            if isinstance(m.text_projection, nn.Linear)
            else x @ m.text_projection
        )
        return F.normalize(x, dim=-1)


def cut_tokens(tokens: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Drop the columns after the batch's last end-of-text token (the highest id of a row)."""
    end = int(tokens.argmax(axis=1).max()) + 1
    return np.ascontiguousarray(tokens[:, :end])


def cut_tokens_torch(tokens: torch.Tensor) -> torch.Tensor:
    """:func:`cut_tokens` for a torch tensor."""
    end = int(tokens.argmax(dim=1).max()) + 1
    return tokens[:, :end]
