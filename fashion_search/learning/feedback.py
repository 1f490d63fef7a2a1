"""What a shopper did with a search result: one record, validated once here for every way in
(REST, GraphQL, the UI), stored by :mod:`fashion_search.catalog.feedback` and relayed to the
feedback topic."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel

from fashion_search.catalog.limits import (
    MAX_CANDIDATES,
    MAX_PRODUCT_ID,
    MAX_QUERY_CHARS,
    NO_NUL_PATTERN,
)

#: ``click``: the shopper opened the product; ``add_to_cart``: put it in the cart;
#: ``not_relevant``: marked it as not what the query asked for.
Signal = Literal["click", "add_to_cart", "not_relevant"]
POSITIVE_SIGNALS = frozenset({"click", "add_to_cart"})
#: Longest session id a client may send.
MAX_SESSION_ID_CHARS = 128
#: Longest model version name (the registry's versions are numbers).
MAX_MODEL_VERSION_CHARS = 100


def _text(max_length: int) -> object:
    return StringConstraints(
        strip_whitespace=True, min_length=1, max_length=max_length, pattern=NO_NUL_PATTERN
    )


class Feedback(BaseModel):
    """One signal on one product shown at ``position`` (1 = the top hit) for ``query``; in an
    experiment, the search that showed it."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    signal: Signal
    query: Annotated[str, _text(MAX_QUERY_CHARS)]
    product_id: Annotated[int, Field(strict=True, ge=1, le=MAX_PRODUCT_ID)]
    position: Annotated[int, Field(strict=True, ge=1, le=MAX_CANDIDATES)]
    session_id: Annotated[str, _text(MAX_SESSION_ID_CHARS)]
    model_version: Annotated[str, _text(MAX_MODEL_VERSION_CHARS)] | None = None
    #: The experiment's search the product was shown by (its answer's ``experiment.searchId``).
    search_id: Annotated[int, Field(strict=True, ge=1, le=2**63 - 1)] | None = None


class FeedbackRecord(Feedback):
    """A stored feedback: its id and when it was recorded (the feedback topic's message)."""

    id: int
    created_at: datetime

    def to_json(self) -> bytes:
        """The message as sent (camelCase)."""
        return self.model_dump_json(by_alias=True).encode()


def normalize_query(query: str) -> str:
    """The form judgements group queries by: case-folded, spaces collapsed."""
    return " ".join(query.casefold().split())
