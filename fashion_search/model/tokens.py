"""The dynamic-length cut of token ids, in numpy (no torch: the model server uses it).

Token ids are zero-padded after each text's last token (CLIP's end-of-text, BERT's [SEP]); a
CLIP text tower pools at the end-of-text token under a causal mask, a BERT one averages the
unpadded tokens, so the columns after the batch's last non-padding token never influence the
result: :func:`cut_tokens` drops them, and the exported text tower accepts any length up to
the context length.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def cut_tokens(tokens: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Drop the columns after the batch's last non-padding (non-zero) token."""
    used = np.flatnonzero(tokens.any(axis=0))
    end = int(used[-1]) + 1 if used.size else 1
    return np.ascontiguousarray(tokens[:, :end])
