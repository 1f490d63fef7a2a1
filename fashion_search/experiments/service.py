"""Start, read and stop experiments over a catalog, and the running one as searches see it.

A start checks the design against the catalog: a version arm must name a version whose
embeddings are complete (``ready`` or ``serving``: ``fashion-search rollout --no-switch`` or
the finetune DAG builds one), so every shopper of that arm gets a full catalog; nothing is
stored otherwise. Searches read the running experiment at most every
:data:`EXPERIMENT_TTL_S`, so a start or stop reaches every process within that.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from threading import Lock
from typing import Any

from pydantic.alias_generators import to_camel

from fashion_search.catalog.experiments import Experiment
from fashion_search.catalog.repositories import Catalog
from fashion_search.errors import InvalidRequestError, VersionNotFoundError
from fashion_search.experiments.analysis import Analysis, Estimate, analyse, analyse_interleaved
from fashion_search.experiments.design import Design
from fashion_search.settings import ExperimentSettings

#: Seconds a search process keeps its reading of the running experiment.
EXPERIMENT_TTL_S = 2.0
#: The version states an arm may search (complete embeddings).
SEARCHABLE_STATES = ("ready", "serving")


@dataclass(frozen=True)
class Status:
    """An experiment and its analysis now."""

    experiment: Experiment
    analysis: Analysis

    def to_json(self) -> dict[str, Any]:
        """The status as the CLI and the API show it."""
        e, a = self.experiment, self.analysis
        return {
            "id": e.id,
            "running": e.running,
            "startedBy": e.started_by,
            "startedAt": e.started_at.isoformat(),
            "stoppedBy": e.stopped_by,
            "stoppedAt": e.stopped_at.isoformat() if e.stopped_at else None,
            "interleave": e.design.interleave,
            "arms": [
                {
                    "name": arm.name,
                    "arm": arm.label,
                    "share": arm.share,
                    "sessions": f.sessions,
                    "searches": f.searches,
                    "figures": {to_camel(name): _shown(est) for name, est in f.figures.items()},
                }
                for arm, f in zip(e.design.arms, a.arms, strict=True)
            ],
            "comparisons": [
                {
                    "arm": c.arm,
                    "difference": _shown(c.difference),
                    "likelihoodRatio": _finite(c.likelihood_ratio),
                    "pValue": c.p_value,
                    "verdict": c.verdict,
                }
                for c in a.comparisons
            ],
            "verdict": a.verdict,
            "decision": e.decision,
        }


def _finite(value: float) -> float | None:
    """``value``, None when infinite (JSON has no infinity)."""
    return value if math.isfinite(value) else None


def _shown(estimate: Estimate) -> dict[str, Any]:
    """An estimate and its 95% interval (None until there are two sessions)."""
    low, high = estimate.interval
    interval = [low, high] if math.isfinite(estimate.variance) else None
    return {"value": estimate.value, "interval": interval}


class Experiments:
    """Experiments over ``catalog`` (module docstring)."""

    def __init__(self, catalog: Catalog, settings: ExperimentSettings) -> None:
        self.catalog = catalog
        self.settings = settings
        self._lock = Lock()
        self._read_at = -float("inf")
        self._running: Experiment | None = None

    def start(self, design: Design, started_by: str) -> Experiment:
        """Check ``design`` against the catalog and start it (module docstring)."""
        for arm in design.arms:
            if arm.kind != "version" or arm.value is None:
                continue
            try:
                version = self.catalog.versions.get(arm.value)
            except VersionNotFoundError:
                raise InvalidRequestError(
                    f"arm {arm.name}: the catalog holds no embeddings of version {arm.value}"
                ) from None
            if version.state not in SEARCHABLE_STATES:
                raise InvalidRequestError(
                    f"arm {arm.name}: version {arm.value} is {version.state}, not complete"
                    f" ({' or '.join(SEARCHABLE_STATES)})"
                )
        experiment = self.catalog.experiments.start(design, started_by)
        self._forget()
        return experiment

    def status(self, experiment_id: int | None = None) -> Status:
        """The experiment (None: the latest) and its analysis now."""
        return self._status_of(self.catalog.experiments.get(experiment_id))

    def stop(self, experiment_id: int | None, stopped_by: str) -> Status:
        """Stop the experiment (None: the running one), its analysis now as the decision."""
        if experiment_id is None:
            running = self.catalog.experiments.running()
            if running is None:
                raise InvalidRequestError("no experiment is running")
            status = self._status_of(running)
        else:
            status = self.status(experiment_id)
        decision = {
            "verdict": status.analysis.verdict,
            "comparisons": status.to_json()["comparisons"],
        }
        experiment = self.catalog.experiments.stop(status.experiment.id, stopped_by, decision)
        self._forget()
        return Status(experiment, status.analysis)

    def running_status(self) -> Status | None:
        """The running experiment's status, None when none runs (its metrics)."""
        running = self.catalog.experiments.running()
        return None if running is None else self._status_of(running)

    def _status_of(self, experiment: Experiment) -> Status:
        """``experiment`` with the analysis of its outcomes now."""
        outcomes = self.catalog.experiments.outcomes(experiment.id)
        arms = [arm.name for arm in experiment.design.arms]
        analysed = analyse_interleaved if experiment.design.interleave else analyse
        analysis = analysed(arms, outcomes, self.settings.alpha, self.settings.min_sessions)
        return Status(experiment, analysis)

    def running(self) -> Experiment | None:
        """The running experiment, as read at most :data:`EXPERIMENT_TTL_S` ago."""
        now = time.monotonic()
        if now - self._read_at >= EXPERIMENT_TTL_S:
            with self._lock:
                if now - self._read_at >= EXPERIMENT_TTL_S:
                    self._running = self.catalog.experiments.running()
                    self._read_at = time.monotonic()
        return self._running

    def _forget(self) -> None:
        """Read the running experiment again at the next search (this process changed it)."""
        self._read_at = -float("inf")
