"""Training/evaluation data: products with preprocessed images, split by image content.

The split hashes each image's bytes, so byte-identical images (the same product listed under
several ids) always fall into the same split, and the split never depends on row order.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import numpy as np

from fashion_search.catalog.models import ProductFields
from fashion_search.catalog.precomputed import image_digest
from fashion_search.dataset import iter_dataset
from fashion_search.model.preprocess import decode_image, resize_square

TEST_PERCENT = 20


def in_test_split(image: bytes, test_percent: int = TEST_PERCENT) -> bool:
    """Whether an image belongs to the held-out split."""
    return int(hashlib.sha1(image).hexdigest()[:8], 16) % 100 < test_percent


#: The attribute phrasing used for training captions: "{gender} {baseColour} {articleType}".
TRAINING_PHRASING = "{g} {c} {a}"


def attribute_text(
    gender: str | None, colour: str | None, article: str | None, template: str
) -> str:
    """Attributes written with ``template`` (``{g}``, ``{c}``, ``{a}``), spaces collapsed."""
    return " ".join(template.format(g=gender or "", c=colour or "", a=article or "").split())


def attribute_caption(fields: ProductFields, template: str = TRAINING_PHRASING) -> str:
    """A product's attributes as a caption (the training phrasing by default)."""
    return attribute_text(fields.gender, fields.base_colour, fields.article_type, template)


@dataclass
class ProductImages:
    """Products with their images resized to a square uint8 array ``[N, S, S, 3]``, and each
    image's :func:`~fashion_search.catalog.precomputed.image_digest`."""

    fields: list[ProductFields]
    images: np.ndarray[Any, np.dtype[np.uint8]]
    digests: list[str]

    def __len__(self) -> int:
        return len(self.fields)

    def caption(self, index: int, rng: random.Random, title_share: float = 0.5) -> str:
        """A training caption: the title (with probability ``title_share``) or the attributes."""
        fields = self.fields[index]
        if rng.random() < title_share:
            return fields.product_display_name
        return attribute_caption(fields)


def load_split(
    source: str,
    image_size: int,
    split: str,
    limit: int | None = None,
    offset: int = 0,
    ids: Collection[int] | None = None,
) -> ProductImages:
    """The ``split`` ("train" or "test") products among rows ``offset..offset+limit``: the
    products listed in ``ids`` (that split of a stored split) when given, else those that
    :func:`in_test_split` puts there."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    fields, images, digests = [], [], []
    for item in iter_dataset(source, offset=offset, limit=limit):
        if ids is not None:
            keep = item.fields.id in ids
        else:
            keep = in_test_split(item.image) == (split == "test")
        if not keep:
            continue
        fields.append(item.fields)
        digests.append(image_digest(item.image))
        images.append(np.asarray(resize_square(decode_image(item.image), image_size), np.uint8))
    array = np.stack(images) if images else np.zeros((0, image_size, image_size, 3), np.uint8)
    return ProductImages(fields, array, digests)
