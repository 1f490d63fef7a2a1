"""Small helpers shared by the tests."""

from __future__ import annotations

import io
import socket
from collections.abc import Sequence

import numpy as np
from PIL import Image

from fashion_search.model.preprocess import decode_image, resize_square


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def jpeg(width: int, height: int, colour: str = "navy") -> bytes:
    """A plain JPEG of the given size."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, "JPEG", quality=50)
    return buffer.getvalue()


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Smallest row-wise cosine similarity of two ``[N, D]`` arrays."""
    return float(np.min(np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))


def squares(images: Sequence[bytes], size: int) -> np.ndarray:
    """uint8 ``[N, size, size, 3]`` as training sees the images."""
    return np.stack([np.asarray(resize_square(decode_image(b), size)) for b in images])
