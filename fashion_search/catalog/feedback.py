"""The ``feedback`` table: shoppers' signals recorded, relayed to Kafka once, read back as
judgements (:mod:`fashion_search.learning.feedback` says what a record is)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import psycopg
from psycopg.rows import class_row

from fashion_search.catalog.table import Table
from fashion_search.errors import InvalidRequestError, ProductNotFoundError
from fashion_search.learning.feedback import Feedback, FeedbackRecord

_ROWS = class_row(FeedbackRecord)
_COLUMNS = (
    "id, created_at, signal, query, product_id, position, session_id, model_version, search_id"
)


class FeedbackRepository(Table):
    """Feedback records: written by the API, relayed by the dispatcher, read by evaluation
    and fine-tuning."""

    def record(self, feedback: Feedback) -> FeedbackRecord:
        """Store ``feedback``; ProductNotFoundError (nothing stored) when its product is not in
        the catalog, InvalidRequestError when it names a search no experiment answered."""
        try:
            with self.pool.connection() as conn, conn.cursor(row_factory=_ROWS) as cur:
                stored: FeedbackRecord | None = cur.execute(
                    f"INSERT INTO feedback (signal, query, product_id, position, session_id,"
                    f" model_version, search_id) SELECT %s, %s, p.id, %s, %s, %s, %s"
                    f" FROM products p WHERE p.id = %s RETURNING {_COLUMNS}",
                    (feedback.signal, feedback.query, feedback.position, feedback.session_id,
                     feedback.model_version, feedback.search_id, feedback.product_id),
                ).fetchone()  # fmt: skip
        except psycopg.errors.ForeignKeyViolation:
            raise InvalidRequestError(
                f"searchId: {feedback.search_id} is not a search of an experiment"
            ) from None
        if stored is None:
            raise ProductNotFoundError(feedback.product_id)
        return stored

    def relay(self, publish: Callable[[Sequence[FeedbackRecord]], None], limit: int = 500) -> int:
        """Hand the oldest unpublished records (at most ``limit``) to ``publish`` and mark them
        published when it returns; returns how many. Rows are locked meanwhile (a second relay
        skips them); when ``publish`` raises, nothing is marked and they are handed again."""
        with (
            self.pool.connection() as conn,
            conn.transaction(),
            conn.cursor(row_factory=_ROWS) as cur,
        ):
            records = cur.execute(
                f"SELECT {_COLUMNS} FROM feedback WHERE published_at IS NULL ORDER BY id"
                f" LIMIT %s FOR UPDATE SKIP LOCKED",
                (limit,),
            ).fetchall()
            if records:
                publish(records)
                cur.execute(
                    "UPDATE feedback SET published_at = now() WHERE id = ANY(%s)",
                    ([r.id for r in records],),
                )
        return len(records)

    def records(self) -> list[FeedbackRecord]:
        """Every record, oldest first (what judgements and training pairs are made of)."""
        with self.pool.connection() as conn, conn.cursor(row_factory=_ROWS) as cur:
            found: list[FeedbackRecord] = cur.execute(
                f"SELECT {_COLUMNS} FROM feedback ORDER BY id"
            ).fetchall()
        return found

    def count(self) -> int:
        """How many records there are."""
        with self.pool.connection() as conn:
            row = conn.execute("SELECT count(*) FROM feedback").fetchone()
        return int(row[0]) if row else 0
