"""Weighted and negative query terms, and their combination in embedding space.

A query is one or more terms with weights: ``summer dress -red -long`` is ``summer dress``
(weight 1) and ``red`` and ``long`` (weight :data:`NEGATIVE_WEIGHT` each); the JSON form names
the weights, ``[{"text": "summer dress", "weight": 1}, {"text": "red", "weight": -0.5}]``. The
query vector is the normalised weighted sum of the terms' (unit) embeddings, as in Marqo's
multi-term queries; a composed image + text query is the same sum with the image as a term.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fashion_search.catalog.limits import check_text
from fashion_search.errors import InvalidArgumentError

#: The weight of a ``-word`` of the query string.
NEGATIVE_WEIGHT = -0.25
#: Limits of a query's terms.
MAX_TERMS = 10
MAX_WEIGHT = 10.0
#: A ``-word`` or ``-"quoted words"`` of the query string (a hyphen inside a word, as in
#: t-shirt, is not one).
_NEGATED = re.compile(r'(?:(?<=\s)|^)-(?:"([^"]+)"|(\S+))')


@dataclass(frozen=True)
class Term:
    """A piece of a query and its weight (negative: away from it)."""

    text: str
    weight: float = 1.0


def parse_query(query: str) -> list[Term]:
    """The terms of a query string: the words left after removing ``-word`` and ``-"two
    words"``, as one term of weight 1, then each negated piece with :data:`NEGATIVE_WEIGHT`."""
    negated = [quoted or word for quoted, word in _NEGATED.findall(query)]
    positive = " ".join(_NEGATED.sub(" ", query).split())
    terms = [Term(positive)] if positive else []
    return terms + [Term(" ".join(text.split()), NEGATIVE_WEIGHT) for text in negated]


def check_terms(terms: Sequence[Term], max_chars: int) -> list[Term]:
    """Terms with their text stripped; InvalidArgumentError unless there are 1 to MAX_TERMS,
    each with text of 1 to ``max_chars`` characters and a finite weight within MAX_WEIGHT, and
    at least one weighs more than zero."""
    if not 1 <= len(terms) <= MAX_TERMS:
        raise InvalidArgumentError(f"a query needs 1 to {MAX_TERMS} terms, got {len(terms)}")
    checked = []
    for term in terms:
        text = check_text(term.text, "query term").strip()
        if not 1 <= len(text) <= max_chars:
            raise InvalidArgumentError(
                f"a query term needs 1 to {max_chars} characters, got {len(text)}"
            )
        weight = term.weight
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise InvalidArgumentError(f"the weight of {text!r} is not a number")
        if not math.isfinite(weight) or abs(weight) > MAX_WEIGHT:
            raise InvalidArgumentError(
                f"the weight of {text!r} must be a number from {-MAX_WEIGHT} to {MAX_WEIGHT}"
            )
        checked.append(Term(text, float(weight)))
    if not any(t.weight > 0 for t in checked):
        raise InvalidArgumentError("a query needs a term with a positive weight")
    return checked


def positive_text(terms: Sequence[Term]) -> str:
    """The words of the terms that weigh more than zero (what a title search looks for)."""
    return " ".join(t.text for t in terms if t.weight > 0)


def combine(vectors: np.ndarray[Any, Any], weights: Sequence[float]) -> np.ndarray[Any, Any]:
    """The unit vector along the weighted sum of ``vectors`` (one per row)."""
    total = np.asarray(weights, dtype=np.float32) @ np.asarray(vectors, dtype=np.float32)
    norm = float(np.linalg.norm(total))
    if norm < 1e-6:
        raise InvalidArgumentError("the query's terms cancel out; change their weights")
    return total / norm
