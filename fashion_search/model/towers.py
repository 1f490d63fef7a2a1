"""The two CLIP towers as modules returning L2-normalised embeddings; the token cut in torch.

:class:`TextTower` accepts any length up to the context length, so token ids cut after the
batch's last non-padding token (:func:`~fashion_search.model.tokens.cut_tokens`, numpy, for
serving; :func:`cut_tokens_torch` here) give the same embeddings. Training and the ONNX export
both use these modules.
"""

from __future__ import annotations

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
        if hasattr(m, "text"):  # a tower of its own (Hugging Face): it masks the padding
            return F.normalize(m.encode_text(input_ids), dim=-1)
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


def cut_tokens_torch(tokens: torch.Tensor) -> torch.Tensor:
    """:func:`~fashion_search.model.tokens.cut_tokens` for a torch tensor."""
    used = torch.nonzero(tokens.any(dim=0)).flatten()
    end = int(used[-1]) + 1 if used.numel() else 1
    return tokens[:, :end]
