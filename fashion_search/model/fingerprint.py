"""Image fingerprints: an image shrunk to 8 x 8 RGB pixels (box filter), 192 bytes.

Byte-identical images have the same fingerprint; near-identical ones (re-encoded, rescaled)
have fingerprints within a few levels of each other at every pixel, while colour variants of
one product photo differ by much more where the colour differs
(:mod:`fashion_search.search.collapse` compares them; docs/decisions/0036).
"""

from __future__ import annotations

from PIL import Image

from fashion_search.model.preprocess import DEFAULT_MAX_PIXELS, decode_image
from fashion_search.search.collapse import SIDE


def fingerprint(image: Image.Image) -> bytes:
    """The fingerprint of a decoded image: SIDE x SIDE RGB bytes, row-major."""
    return image.convert("RGB").resize((SIDE, SIDE), Image.Resampling.BOX).tobytes()


def fingerprint_bytes(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes:
    """The fingerprint of encoded image bytes (errors as :func:`decode_image` raises them)."""
    return fingerprint(decode_image(data, max_pixels, max_side=SIDE * 16))
