"""Image preprocessing shared by training and serving (PIL + numpy, no torch).

Product photos are portrait (60x80 in the catalog): they are padded to a white square, so the
whole product stays in view, then resized to the model's input size and normalised.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from fashion_search.errors import ImageTooLargeError, InvalidImageError

DEFAULT_MAX_PIXELS = 40_000_000


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode to RGB; InvalidImageError for non-images, ImageTooLargeError over the pixel cap."""
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
    return image.convert("RGB")


def pad_to_square(image: Image.Image, fill: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Centre the image on a square canvas of its longer side."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def resize_square(image: Image.Image, size: int) -> Image.Image:
    """Pad to a white square, then resize to ``size`` x ``size`` (bicubic)."""
    return pad_to_square(image).resize((size, size), Image.Resampling.BICUBIC)


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
    """Decode, pad, resize and normalise encoded image bytes."""
    return to_pixels(decode_image(data, max_pixels), size, mean, std)
