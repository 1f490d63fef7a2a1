"""Collapse: one hit per group of identical or near-identical images.

Two images are near-identical when their fingerprints (:mod:`fashion_search.model.fingerprint`)
differ by at most :data:`NEAR_IDENTICAL_MAX_DIFF` levels (of 255) at every pixel and channel:
byte-identical images differ by 0, 89% of catalog photos rescaled and re-encoded as JPEG by at
most 16, and 97% of the visually nearest other photos by more (docs/decisions/0036).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")

NEAR_IDENTICAL_MAX_DIFF = 16
#: A fingerprint is an image shrunk to SIDE x SIDE RGB pixels: FINGERPRINT_BYTES bytes.
SIDE = 8
FINGERPRINT_BYTES = SIDE * SIDE * 3


def near_identical(a: bytes, b: bytes) -> bool:
    """Whether two fingerprints are of near-identical images, or of one image and its mirror
    image (a flipped copy)."""
    if len(a) != FINGERPRINT_BYTES or len(b) != FINGERPRINT_BYTES:
        return False
    first = np.frombuffer(a, dtype=np.uint8).astype(np.int16).reshape(SIDE, SIDE, 3)
    second = np.frombuffer(b, dtype=np.uint8).astype(np.int16).reshape(SIDE, SIDE, 3)
    return any(
        int(np.abs(first - other).max()) <= NEAR_IDENTICAL_MAX_DIFF
        for other in (second, second[:, ::-1])
    )


def collapse(items: Sequence[T], fingerprint: Callable[[T], bytes | None]) -> list[tuple[T, int]]:
    """The first item of each group of near-identical fingerprints, with the group's size, in
    the order given (an item without a fingerprint, or with one of another size, is a group of
    its own)."""
    kept: list[list[Any]] = []  # [item, group size]
    prints = np.empty((len(items), FINGERPRINT_BYTES), dtype=np.int16)
    owners: list[int] = []  # the index in kept of each row of prints filled so far
    for item in items:
        raw = fingerprint(item)
        if raw is None or len(raw) != FINGERPRINT_BYTES:
            kept.append([item, 1])
            continue
        pixels = np.frombuffer(raw, dtype=np.uint8)
        near = np.abs(prints[: len(owners)] - pixels).max(axis=1) <= NEAR_IDENTICAL_MAX_DIFF
        if near.any():
            kept[owners[int(near.argmax())]][1] += 1
        else:
            prints[len(owners)] = pixels
            owners.append(len(kept))
            kept.append([item, 1])
    return [(item, size) for item, size in kept]
