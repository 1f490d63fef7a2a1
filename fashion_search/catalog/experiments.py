"""Where online experiments are kept: the ``experiments`` table (each one's design, who started
and stopped it, when, and the decision), the searches each answered (``experiment_searches``),
and what shoppers then did (``feedback`` rows naming a search). What a design is and how the
outcomes are read: :mod:`fashion_search.experiments`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from fashion_search.catalog.table import Table
from fashion_search.errors import ExperimentNotFoundError, ExperimentStateError
from fashion_search.experiments.analysis import SearchOutcome
from fashion_search.experiments.design import Design

_COLUMNS = "id, design, started_by, started_at, stopped_by, stopped_at, decision"


@dataclass(frozen=True)
class Experiment:
    """A stored experiment; it runs until ``stopped_at``."""

    id: int
    design: Design
    started_by: str
    started_at: datetime
    stopped_by: str | None = None
    stopped_at: datetime | None = None
    decision: dict[str, Any] | None = None

    @property
    def running(self) -> bool:
        return self.stopped_at is None

    @classmethod
    def of_row(cls, row: tuple[Any, ...]) -> Experiment:
        return cls(row[0], Design.model_validate(row[1]), *row[2:])


class ExperimentRepository(Table):
    """Experiments (at most one running), their searches and outcomes."""

    def start(self, design: Design, started_by: str) -> Experiment:
        """Store and start an experiment; ExperimentStateError (nothing stored) while another
        runs."""
        try:
            with self.pool.connection() as conn:
                row = conn.execute(
                    f"INSERT INTO experiments (design, started_by) VALUES (%s, %s)"
                    f" RETURNING {_COLUMNS}",
                    (Jsonb(design.model_dump()), started_by),
                ).fetchone()
        except psycopg.errors.UniqueViolation:
            running = self.running()
            raise ExperimentStateError(
                f"experiment {running.id if running else '?'} is running: stop it first"
            ) from None
        assert row is not None
        return Experiment.of_row(row)

    def running(self) -> Experiment | None:
        """The experiment that runs, if one does."""
        with self.pool.connection() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM experiments WHERE stopped_at IS NULL"
            ).fetchone()
        return Experiment.of_row(row) if row else None

    def get(self, experiment_id: int | None = None) -> Experiment:
        """The experiment ``experiment_id`` (None: the latest); ExperimentNotFoundError."""
        where, params = ("id = %s", (experiment_id,)) if experiment_id else ("true", ())
        with self.pool.connection() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM experiments WHERE {where} ORDER BY id DESC LIMIT 1",
                params,
            ).fetchone()
        if row is None:
            raise ExperimentNotFoundError(
                f"experiment {experiment_id} does not exist" if experiment_id else "no experiment"
            )
        return Experiment.of_row(row)

    def stop(self, experiment_id: int, stopped_by: str, decision: dict[str, Any]) -> Experiment:
        """Stop a running experiment with its decision; ExperimentStateError when it has
        stopped already, ExperimentNotFoundError when there is none."""
        with self.pool.connection() as conn:
            row = conn.execute(
                f"UPDATE experiments SET stopped_by = %s, stopped_at = now(), decision = %s"
                f" WHERE id = %s AND stopped_at IS NULL RETURNING {_COLUMNS}",
                (stopped_by, Jsonb(decision), experiment_id),
            ).fetchone()
        if row is None:
            self.get(experiment_id)  # not found, else:
            raise ExperimentStateError(f"experiment {experiment_id} has stopped already")
        return Experiment.of_row(row)

    def record_search(
        self, experiment_id: int, arm: str, session_id: str, teams: dict[int, int] | None = None
    ) -> int:
        """Record a search the experiment answered with ``arm`` (interleaved: which of its two
        arms put each product there, ``teams``); its id (feedback names it)."""
        with self.pool.connection() as conn:
            row = conn.execute(
                "INSERT INTO experiment_searches (experiment_id, arm, session_id, teams)"
                " VALUES (%s, %s, %s, %s) RETURNING id",
                (experiment_id, arm, session_id, None if teams is None else Jsonb(teams)),
            ).fetchone()
        assert row is not None
        return int(row[0])

    def outcomes(self, experiment_id: int) -> list[SearchOutcome]:
        """What shoppers did after each of the experiment's searches: the position of their
        first click (in time), any add-to-cart, any "not relevant"; for an interleaved search,
        the clicks on each arm's products."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT s.arm, s.session_id,"
                " (array_agg(f.position ORDER BY f.id) FILTER (WHERE f.signal = 'click'))[1],"
                " coalesce(bool_or(f.signal = 'add_to_cart'), false),"
                " coalesce(bool_or(f.signal = 'not_relevant'), false),"
                " s.teams IS NOT NULL,"
                " count(*) FILTER (WHERE f.signal = 'click'"
                "   AND s.teams ->> f.product_id::text = '0'),"
                " count(*) FILTER (WHERE f.signal = 'click'"
                "   AND s.teams ->> f.product_id::text = '1')"
                " FROM experiment_searches s LEFT JOIN feedback f ON f.search_id = s.id"
                " WHERE s.experiment_id = %s GROUP BY s.id ORDER BY s.id",
                (experiment_id,),
            ).fetchall()
        return [
            SearchOutcome(arm, session, click, cart, marked, (firsts, seconds) if teams else None)
            for arm, session, click, cart, marked, teams, firsts, seconds in rows
        ]
