"""The dynamic-length cut of token ids, in numpy (no torch: the model server uses it).

CLIP's text tower pools at the end-of-text token under a causal mask, so the tokens after the
batch's last end-of-text token never influence the result: :func:`cut_tokens` drops them, and
the exported text tower accepts any length up to the context length.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def cut_tokens(tokens: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Drop the columns after the batch's last end-of-text token (the highest id of a row)."""
    end = int(tokens.argmax(axis=1).max()) + 1
    return np.ascontiguousarray(tokens[:, :end])
