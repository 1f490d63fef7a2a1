"""What the ranking's business signals read from the catalog: each product's popularity (its
clicks and add-to-carts, each weighed by how recent it is) and the boost a merchandiser set
(the ``product_boosts`` table, with who set it and when)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from fashion_search.catalog.table import Table
from fashion_search.errors import InvalidArgumentError, ProductNotFoundError

#: How much each feedback signal counts towards popularity ("not relevant" does not).
POPULARITY_SIGNALS = {"click": 1.0, "add_to_cart": 3.0}
#: A merchandising boost's range: -1 buries a product, 1 lifts it.
MAX_BOOST = 1.0


@dataclass(frozen=True)
class StoredSignals:
    """A product's popularity (decayed signal count) and merchandising boost."""

    popularity: float
    boost: float


@dataclass(frozen=True)
class Boost:
    """A merchandising boost: its product, value, who set it and when."""

    product_id: int
    boost: float
    set_by: str
    set_at: datetime


class SignalRepository(Table):
    """Popularity from ``feedback`` and boosts from ``product_boosts``."""

    def of(self, ids: Sequence[int], half_life_s: float) -> dict[int, StoredSignals]:
        """The signals of the products ``ids`` that have any: popularity is the sum over
        their clicks and add-to-carts of :data:`POPULARITY_SIGNALS`, each halved every
        ``half_life_s`` of its age."""
        weights = " ".join(f"WHEN '{s}' THEN {w}" for s, w in POPULARITY_SIGNALS.items())
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT p.id, coalesce(f.popularity, 0), coalesce(b.boost, 0) FROM products p"
                " LEFT JOIN LATERAL (SELECT sum(CASE signal " + weights + " ELSE 0 END"
                "   * exp(%s * extract(epoch FROM now() - created_at))) popularity"
                "   FROM feedback WHERE product_id = p.id) f ON true"
                " LEFT JOIN product_boosts b ON b.product_id = p.id"
                " WHERE p.id = ANY(%s) AND (f.popularity IS NOT NULL OR b.boost IS NOT NULL)",
                (-math.log(2) / half_life_s, list(ids)),
            ).fetchall()
        return {int(i): StoredSignals(float(p), float(b)) for i, p, b in rows}

    def set_boost(self, product_id: int, boost: float, set_by: str) -> Boost:
        """Set a product's boost (within +-:data:`MAX_BOOST`); ProductNotFoundError (nothing
        stored) for a product the catalog lacks, InvalidArgumentError for a boost out of range."""
        if not -MAX_BOOST <= boost <= MAX_BOOST:
            raise InvalidArgumentError(f"a boost is from {-MAX_BOOST} to {MAX_BOOST}, not {boost}")
        with self.pool.connection() as conn:
            row = conn.execute(
                "INSERT INTO product_boosts (product_id, boost, set_by)"
                " SELECT id, %s, %s FROM products WHERE id = %s"
                " ON CONFLICT (product_id) DO UPDATE SET boost = excluded.boost,"
                " set_by = excluded.set_by, set_at = now()"
                " RETURNING product_id, boost, set_by, set_at",
                (boost, set_by, product_id),
            ).fetchone()
        if row is None:
            raise ProductNotFoundError(product_id)
        return Boost(*row)

    def remove_boost(self, product_id: int) -> bool:
        """Remove a product's boost; whether it had one."""
        with self.pool.connection() as conn:
            cur = conn.execute("DELETE FROM product_boosts WHERE product_id = %s", (product_id,))
            return cur.rowcount > 0

    def boosts(self) -> list[Boost]:
        """Every boost, the most recent first."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT product_id, boost, set_by, set_at FROM product_boosts"
                " ORDER BY set_at DESC, product_id"
            ).fetchall()
        return [Boost(*row) for row in rows]
