"""A candidate tried on shoppers before it serves (``finetune`` with
``FS_EXPERIMENTS__ROLLOUT_SHARE`` > 0): instead of the switch, an experiment gives the
candidate's built embeddings that share of sessions (:func:`trial`); ``decide_experiment``
reads it (:func:`decide`) and, once the sequential test calls it, switches to the candidate
with the zero-downtime rollout if it won, or retires it if it lost. Either way the experiment
stops with its figures as its decision, and the decision is logged to the candidate's MLflow
run (tags ``experiment_*``, metrics of each arm)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from fashion_search.catalog.db import create_pool
from fashion_search.catalog.repositories import Catalog
from fashion_search.experiments.design import Design
from fashion_search.experiments.service import EXPERIMENT_TTL_S, Experiments, Status
from fashion_search.model.registry import configure_mlflow
from fashion_search.settings import Settings
from fashion_search.workflows.rollout import retire, switch

#: Who starts and stops the experiments of a rollout.
BY = "finetune"
CONTROL, CANDIDATE = "champion", "candidate"


@dataclass(frozen=True)
class Trial:
    """The experiment started for ``version``, and the share of sessions it gets."""

    version: str
    experiment: int
    share: float


@dataclass(frozen=True)
class Decided:
    """What :func:`decide` did: ``promoted`` or ``retired`` the candidate, or ``waiting``
    (the test has not called it); the experiment and its verdict."""

    version: str
    experiment: int
    outcome: str
    verdict: str


def trial(settings: Settings, version: str) -> Trial:
    """Start the experiment of ``version`` (complete in the catalog) against the serving one."""
    share = settings.experiments.rollout_share
    design = Design.parse(
        [f"{CONTROL}=serving", f"{CANDIDATE}=version:{version}"], {CANDIDATE: share}
    )
    with create_pool(settings) as pool:
        started = Experiments(Catalog.of(pool), settings.experiments).start(design, BY)
    return Trial(version, started.id, share)


def decide(settings: Settings) -> Decided | None:
    """Act on the running rollout experiment's verdict (module docstring); None when no
    rollout experiment runs."""
    with create_pool(settings) as pool:
        experiments = Experiments(Catalog.of(pool), settings.experiments)
        status = experiments.running_status()
        if status is None or status.experiment.started_by != BY:
            return None
        version = status.experiment.design.arm(CANDIDATE).value
        assert version is not None
        verdict = status.analysis.verdict
        if verdict == "keep running":
            return Decided(version, status.experiment.id, "waiting", verdict)
        status = experiments.stop(status.experiment.id, BY)
    won = verdict.startswith(CANDIDATE)
    if won:
        switch(settings, version)
    else:
        # Search processes see the stop within EXPERIMENT_TTL_S; until then some still send
        # the candidate's sessions to its embeddings, which the retirement drops.
        time.sleep(2 * EXPERIMENT_TTL_S)
        retire(settings, version)
    decided = Decided(version, status.experiment.id, "promoted" if won else "retired", verdict)
    _log(settings, status, decided)
    return decided


def _log(settings: Settings, status: Status, decided: Decided) -> None:
    """The decision and its figures on the candidate's MLflow run."""
    client = configure_mlflow(settings)
    run_id = client.get_model_version(settings.registry.model_name, decided.version).run_id
    if not run_id:
        return
    client.set_tag(run_id, "experiment_id", str(decided.experiment))
    client.set_tag(run_id, "experiment_verdict", decided.verdict)
    client.set_tag(run_id, "experiment_outcome", decided.outcome)
    for arm in status.analysis.arms:
        client.log_metric(run_id, f"experiment_{arm.arm}_sessions", arm.sessions)
        for name, estimate in arm.figures.items():
            client.log_metric(run_id, f"experiment_{arm.arm}_{name}", estimate.value)
    for comparison in status.analysis.comparisons:
        client.log_metric(run_id, "experiment_p_value", comparison.p_value)
        client.log_metric(run_id, "experiment_ctr_difference", comparison.difference.value)
