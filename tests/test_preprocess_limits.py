"""Preprocessing cannot be made to exhaust the model server: a huge blank PNG of a few KB is
shrunk before it is padded (no canvas of its longer side), decompression bombs are refused on
their header, and the catalog's ordinary images give the same pixels as before the bound."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from fashion_search.errors import ImageTooLargeError
from fashion_search.model import preprocess
from fashion_search.model.preprocess import (
    MAX_PAD_SIDE,
    decode_image,
    pad_side_limit,
    pad_to_square,
    preprocess_image,
    shrink_to,
    to_pixels,
)
from fashion_search.settings import REPO_ROOT

MEAN = (0.48145466, 0.4578275, 0.40821073)  # open_clip's
STD = (0.26862954, 0.26130258, 0.27577711)
HUGE = [(39_000, 1_000), (65_000, 600), (600, 65_000), (65_000, 1)]


def png(width: int, height: int, mode: str = "1", fill: Any = 255) -> bytes:
    """A blank PNG (a few KB for the huge ones)."""
    buffer = io.BytesIO()
    Image.new(mode, (width, height), fill).save(buffer, "PNG")
    return buffer.getvalue()


def declared_png(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` pixels, with one row of data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grey
    row = zlib.compress(b"\0" * ((width + 7) // 8 + 1))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", row) + chunk(b"IEND", b"")


def old_pixels(data: bytes, size: int) -> np.ndarray:
    """The algorithm before the bound: decode to RGB, pad to a square of the longer side,
    resize bicubic, normalise."""
    image = Image.open(io.BytesIO(data))
    image.load()
    image = image.convert("RGB")
    width, height = image.size
    if width != height:
        side = max(width, height)
        canvas = Image.new("RGB", (side, side), (255, 255, 255))
        canvas.paste(image, ((side - width) // 2, (side - height) // 2))
        image = canvas
    channels_first = np.asarray(image.resize((size, size), Image.Resampling.BICUBIC))
    pixels = channels_first.transpose(2, 0, 1).astype(np.float32, order="C")
    std = np.asarray(STD, np.float32).reshape(3, 1, 1)
    mean = np.asarray(MEAN, np.float32).reshape(3, 1, 1)
    pixels *= np.float32(1.0 / 255.0) / std
    pixels -= mean / std
    return pixels


def photo(width: int, height: int, mode: str, fmt: str, seed: int = 0) -> bytes:
    """A product-like image: noise over a gradient, in ``mode``, encoded as ``fmt``."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 200, width, dtype=np.float32)[None, :, None]
    noise = rng.integers(0, 56, (height, width, 3)).astype(np.float32)
    rgb = Image.fromarray((ramp + noise).astype(np.uint8), "RGB")
    image = rgb.convert("P", palette=Image.Palette.ADAPTIVE) if mode == "P" else rgb.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


@pytest.fixture
def canvases(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The side of every square ``Image.new`` (a padding canvas) while the test runs; one wider
    than :data:`MAX_PAD_SIDE` fails the test before it is allocated."""
    sides: list[int] = []
    real: Callable[..., Image.Image] = Image.new

    def new(mode: str, size: tuple[int, int], *args: Any, **kwargs: Any) -> Image.Image:
        if size[0] == size[1]:
            sides.append(size[0])
            assert size[0] <= MAX_PAD_SIDE, f"a {size[0]}x{size[1]} canvas"
        return real(mode, size, *args, **kwargs)

    monkeypatch.setattr(Image, "new", new)
    return sides


@pytest.mark.parametrize("size", [32, 224])
@pytest.mark.parametrize(("width", "height"), HUGE, ids=[f"{w}x{h}" for w, h in HUGE])
def test_a_huge_blank_png_is_shrunk_before_it_is_padded(
    width: int, height: int, size: int, canvases: list[int]
) -> None:
    data = png(width, height)
    canvases.clear()
    assert len(data) < 20_000
    started = time.perf_counter()
    pixels = preprocess_image(data, size, MEAN, STD)
    took = time.perf_counter() - started
    assert pixels.shape == (3, size, size)
    assert took < 2.0
    limit = pad_side_limit(size)
    assert canvases and max(canvases) <= limit, canvases
    white = (1.0 - np.asarray(MEAN, np.float32)) / np.asarray(STD, np.float32)
    assert np.allclose(pixels, white.reshape(3, 1, 1), atol=1e-5)  # white on white


#: Preprocesses the PNG file argv[1] at input size argv[2] with the address space capped at
#: 1 GiB over what the interpreter holds (so an unbounded canvas fails at once instead of
#: taking the machine); prints the resident memory it added at its peak, in MiB.
MEASURE = """
import json, resource, sys, time
from pathlib import Path
from fashion_search.model.preprocess import preprocess_image

def status(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

data, size, unit = Path(sys.argv[1]).read_bytes(), int(sys.argv[2]), (0.5, 0.5, 0.5)
preprocess_image(Path(sys.argv[3]).read_bytes(), size, unit, unit)  # warm up
before = status("VmRSS")
resource.setrlimit(resource.RLIMIT_AS, (status("VmSize") + 2**30, resource.RLIM_INFINITY))
started = time.perf_counter()
try:
    preprocess_image(data, size, unit, unit)
except MemoryError:
    print(json.dumps({"error": "MemoryError"}))
else:
    print(json.dumps({
        "peak_mib": (status("VmHWM") - before) / 2**20,
        "seconds": time.perf_counter() - started,
    }))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="/proc/self/status")
@pytest.mark.parametrize(
    ("width", "height", "mode", "budget_mib"),
    [
        (39_000, 1_000, "1", 120),
        (65_000, 600, "1", 120),
        (39_000, 1_000, "L", 120),
        (39_000, 1_000, "RGB", 200),  # the decoded image alone is 149 MiB (4 bytes a pixel)
    ],
)
def test_peak_memory_of_a_huge_blank_png_is_bounded(
    width: int, height: int, mode: str, budget_mib: int, tmp_path: Path
) -> None:
    """In a fresh interpreter: the resident memory preprocessing adds stays under the budget
    (the old canvas of 39,000 x 39,000 was 5.7 GiB, and fails here on the address-space cap)."""
    fill = (255, 255, 255) if mode == "RGB" else 255
    (tmp_path / "huge.png").write_bytes(png(width, height, mode, fill))
    (tmp_path / "small.png").write_bytes(png(60, 80, mode, fill))
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(tmp_path / "huge.png"), "224",
         str(tmp_path / "small.png")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    measured = json.loads(done.stdout.splitlines()[-1])
    assert "error" not in measured, measured
    assert measured["peak_mib"] < budget_mib, measured
    assert measured["seconds"] < 2.0, measured


BOMBS = {
    "over-the-cap": (10_000, 5_000),  # 50 M pixels: over our 40 M, under Pillow's 89 M
    "pillow-warns": (10_000, 10_000),  # over Pillow's MAX_IMAGE_PIXELS: its warning, an error
    "pillow-refuses": (20_000, 20_000),  # over twice that: Pillow's DecompressionBombError
    "absurd": (2**31 - 1, 2**31 - 1),
}


@pytest.mark.parametrize(("width", "height"), BOMBS.values(), ids=BOMBS.keys())
def test_a_decompression_bomb_is_refused_on_its_header(
    width: int, height: int, canvases: list[int]
) -> None:
    data = declared_png(width, height)
    assert len(data) < 2**20
    started = time.perf_counter()
    with pytest.raises(ImageTooLargeError, match=r"pixels|too large"):
        preprocess_image(data, 224, MEAN, STD)
    with pytest.raises(ImageTooLargeError):
        decode_image(data)
    assert time.perf_counter() - started < 1.0
    assert canvases == []


@pytest.mark.parametrize("name", ["pillow-warns", "pillow-refuses", "absurd"])
def test_a_raised_cap_does_not_lift_pillows_bomb_check(name: str) -> None:
    """``max_pixels`` above Pillow's ``MAX_IMAGE_PIXELS`` (``FS_MODEL_MAX_IMAGE_PIXELS`` set
    high): Pillow's own check still refuses, as ImageTooLargeError."""
    assert Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < 10**12
    with pytest.raises(ImageTooLargeError, match="decompression bomb"):
        decode_image(declared_png(*BOMBS[name]), max_pixels=10**12)


ORDINARY = [
    (60, 80, "RGB", "JPEG"),
    (60, 80, "L", "JPEG"),
    (60, 80, "RGB", "PNG"),
    (60, 80, "RGBA", "PNG"),
    (60, 80, "LA", "PNG"),
    (60, 80, "P", "PNG"),
    (60, 80, "1", "PNG"),
    (80, 60, "RGB", "JPEG"),
    (1, 80, "RGB", "PNG"),
    (64, 64, "RGB", "JPEG"),
    (100, 128, "RGB", "JPEG"),  # 128: the limit at input size 32, not over it
    (600, 800, "RGB", "JPEG"),
]


@pytest.mark.parametrize("size", [32, 64, 224])
@pytest.mark.parametrize(
    ("width", "height", "mode", "fmt"),
    ORDINARY,
    ids=[f"{w}x{h}-{m}-{f}" for w, h, m, f in ORDINARY],
)
def test_images_within_the_limit_give_the_same_pixels_as_before(
    width: int, height: int, mode: str, fmt: str, size: int
) -> None:
    if max(width, height) > pad_side_limit(size):
        pytest.skip("over the limit at this size: shrunk first")
    data = photo(width, height, mode, fmt)
    got = preprocess_image(data, size, MEAN, STD)
    assert got.tobytes() == old_pixels(data, size).tobytes()


@pytest.mark.parametrize(
    ("width", "height", "size"), [(600, 800, 32), (1800, 2400, 224), (4000, 3000, 64)]
)
def test_larger_images_are_shrunk_first_and_look_the_same(
    width: int, height: int, size: int
) -> None:
    """Over the limit the pixels differ from padding at full size only by resampling noise."""
    data = photo(width, height, "RGB", "JPEG")
    difference = np.abs(preprocess_image(data, size, MEAN, STD) - old_pixels(data, size))
    assert float(difference.mean()) < 0.01
    assert float(difference.max()) < 0.1


@pytest.mark.parametrize("mode", ["1", "L", "RGB", "P", "RGBA"])
def test_serving_and_training_preprocess_a_large_image_alike(mode: str) -> None:
    """The server shrinks bilevel, grey and RGB images before converting them to RGB; training
    (``resize_square(decode_image(...))``) converts first: the same pixels either way."""
    data = photo(3000, 700, mode, "PNG", seed=1)
    served = preprocess_image(data, 32, MEAN, STD)
    trained = to_pixels(decode_image(data), 32, MEAN, STD)
    assert served.tobytes() == trained.tobytes()


@pytest.mark.parametrize(
    ("size", "limit", "expected"),
    [
        ((65_000, 1), 128, (128, 1)),
        ((1, 65_000), 128, (1, 128)),
        ((39_000, 1_000), 896, (896, 23)),
        ((60, 80), 128, (60, 80)),
        ((128, 5), 128, (128, 5)),
        ((129, 5), 128, (128, 5)),
    ],
)
def test_shrinking_keeps_the_aspect_and_at_least_one_pixel(
    size: tuple[int, int], limit: int, expected: tuple[int, int]
) -> None:
    image = Image.new("L", size, 255)
    shrunk = shrink_to(image, limit)
    assert shrunk.size == expected
    assert shrunk is image or np.asarray(shrunk).min() == 255


def test_no_canvas_is_wider_than_the_limit(canvases: list[int]) -> None:
    wide = Image.new("RGB", (5_000, 10))
    with pytest.raises(ImageTooLargeError, match="padded to 5000x5000"):
        pad_to_square(wide)
    with pytest.raises(ImageTooLargeError, match="at most 128"):
        pad_to_square(wide.crop((0, 0, 129, 10)), max_side=128)
    assert canvases == []
    assert pad_side_limit(32) == 128
    assert pad_side_limit(224) == 896
    assert pad_side_limit(10_000) == MAX_PAD_SIDE
    assert preprocess.PAD_SIDE_FACTOR * 224 <= MAX_PAD_SIDE
