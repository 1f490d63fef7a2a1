"""Disjoint parts of the catalog for work split over parallel tasks (Airflow mapped tasks):
shard ``index`` of ``count`` holds the products whose id modulo ``count`` is ``index``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fashion_search.errors import InvalidArgumentError


@dataclass(frozen=True)
class Shard:
    """One of ``count`` disjoint parts of the catalog (the whole catalog by default)."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise InvalidArgumentError(f"shard {self.index} of {self.count} does not exist")

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> Shard:
        """The shard of a task argument (``{"index": i, "count": n}``)."""
        return cls(int(value["index"]), int(value["count"]))


#: The whole catalog: one shard.
WHOLE = Shard()
