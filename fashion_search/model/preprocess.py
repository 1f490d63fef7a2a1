"""Image preprocessing shared by training and serving (PIL + numpy, no torch).

Product photos are portrait (60x80 in the catalog): they are padded to a white square, so the
whole product stays in view, then resized to the model's input size and normalised.

What an image may cost is bounded before anything is allocated for it: decoding refuses more
than ``max_pixels`` pixels (:data:`DEFAULT_MAX_PIXELS`, and Pillow's decompression-bomb check),
and an image whose longer side exceeds :func:`pad_side_limit` is shrunk (aspect kept) before it
is padded, so the square canvas never grows with the image: a blank 65,000 x 600 PNG of a few
KB would otherwise be padded onto a 65,000 x 65,000 canvas (~17 GB).
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from fashion_search.errors import ImageTooLargeError, InvalidImageError

DEFAULT_MAX_PIXELS = 40_000_000
#: An image whose longer side is over this many times the model's input size is shrunk to it
#: (aspect kept) before padding. Every image up to that size gives exactly the pixels it gave
#: before the bound (the catalog's 60x80 photos at input size 32, 64 and 224 included); a larger
#: one is still resized by a factor of 4 after shrinking, so the input differs from padding at
#: full size only by resampling noise (tests/test_preprocess_limits.py), while the canvas stays
#: at most (4 x size)^2 pixels: 896 x 896, 3 MiB, at 224, instead of the image's longer side
#: squared (a blank 65,000 x 600 PNG of a few KB: ~17 GB).
PAD_SIDE_FACTOR = 4
#: No canvas is ever wider than this (4096 x 4096 RGB: 64 MiB), whatever the input size.
MAX_PAD_SIDE = 4096
#: Shrinking first box-reduces by whole factors to within 2x of the target, then resamples
#: bicubic (as :meth:`PIL.Image.Image.thumbnail`): it allocates only the reduced images.
_REDUCING_GAP = 2.0
#: Modes shrunk before their conversion to RGB (the conversion commutes with the resize
#: exactly), so a huge bilevel or grey image is never expanded to 4 bytes a pixel at full size.
_SHRINK_BEFORE_RGB = ("1", "L", "RGB")


def pad_side_limit(size: int) -> int:
    """The longest side an image is padded at for input size ``size``: :data:`PAD_SIDE_FACTOR`
    times it, at most :data:`MAX_PAD_SIDE`."""
    return min(PAD_SIDE_FACTOR * size, MAX_PAD_SIDE)


def decode_image(
    data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, max_side: int | None = None
) -> Image.Image:
    """Decode to RGB; InvalidImageError for non-images, ImageTooLargeError over the pixel cap
    (checked on the header, before the pixels are decoded). With ``max_side``, an image with a
    longer side is shrunk to it (:func:`shrink_to`) before it is converted to RGB."""
    if not data:
        raise InvalidImageError("image is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageTooLargeError(
                    f"image has {width}x{height} pixels, more than the {max_pixels:,} allowed"
                )
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageTooLargeError(f"image is too large: {error}") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise InvalidImageError(f"not a decodable image: {error}") from error
    decoded: Image.Image = image
    if max_side is not None and decoded.mode in _SHRINK_BEFORE_RGB:
        decoded = shrink_to(decoded, max_side)
    # An RGB image is returned as decoded: converting would copy it (4 bytes a pixel).
    return decoded if decoded.mode == "RGB" else decoded.convert("RGB")


def shrink_to(image: Image.Image, max_side: int) -> Image.Image:
    """``image`` when its longer side is at most ``max_side``, else shrunk so that it is (aspect
    kept, each side at least 1 pixel); only the smaller images are allocated."""
    width, height = image.size
    longest = max(width, height)
    if longest <= max_side:
        return image
    if image.mode == "1":  # resized in "1" Pillow would pick pixels (nearest), not average them
        image = image.convert("L")
    target = (
        max(1, round(width * max_side / longest)),
        max(1, round(height * max_side / longest)),
    )
    return image.resize(target, Image.Resampling.BICUBIC, reducing_gap=_REDUCING_GAP)


def pad_to_square(
    image: Image.Image,
    fill: tuple[int, int, int] = (255, 255, 255),
    max_side: int = MAX_PAD_SIDE,
) -> Image.Image:
    """Centre the image on a square canvas of its longer side; ImageTooLargeError, before
    anything is allocated, when that side is over ``max_side`` (shrink it first)."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    if side > max_side:
        raise ImageTooLargeError(
            f"a {width}x{height} image would be padded to {side}x{side}; at most {max_side}"
        )
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def resize_square(image: Image.Image, size: int) -> Image.Image:
    """Shrink to :func:`pad_side_limit` when larger, pad to a white square, then resize to
    ``size`` x ``size`` (bicubic)."""
    limit = pad_side_limit(size)
    square = pad_to_square(shrink_to(image, limit), max_side=limit)
    return square.resize((size, size), Image.Resampling.BICUBIC)


def to_pixels(
    image: Image.Image, size: int, mean: tuple[float, ...], std: tuple[float, ...]
) -> np.ndarray[Any, np.dtype[np.float32]]:
    """``[3, size, size]`` float32, normalised, from an RGB image."""
    channels_first = np.asarray(resize_square(image, size)).transpose(2, 0, 1)
    std_ = np.asarray(std, np.float32).reshape(3, 1, 1)
    mean_ = np.asarray(mean, np.float32).reshape(3, 1, 1)
    pixels = channels_first.astype(np.float32, order="C")
    pixels *= np.float32(1.0 / 255.0) / std_
    pixels -= mean_ / std_
    return pixels


def preprocess_image(
    data: bytes,
    size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Decode, shrink (when over :func:`pad_side_limit`), pad, resize and normalise encoded
    image bytes; the same pixels as :func:`to_pixels` of :func:`decode_image`."""
    return to_pixels(decode_image(data, max_pixels, pad_side_limit(size)), size, mean, std)
