"""When to retrain: the check the ``retrain_on_new_data`` DAG runs each time ingestion updates
the catalog asset. Retraining is due when

- at least ``FS_RETRAIN_MIN_NEW_PRODUCTS`` products arrived since the champion was trained
  (created after its training run started), or
- labels drift: the mean articleType confidence of the last ``FS_RETRAIN_DRIFT_UPLOADS``
  uploads fell by at least ``FS_RETRAIN_DRIFT_THRESHOLD`` below the champion's own baseline,
  the mean confidence of the same vote for its test split against its train split
  (``knn_article_type_confidence``, logged when it was trained). Uploads the model no longer
  recognises get less unanimous neighbours: the drop measures how far they moved from what it
  was trained on. Fewer uploads than that measure nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from fashion_search.catalog.db import create_pool
from fashion_search.catalog.repositories import Catalog
from fashion_search.model.evaluate import DRIFT_BASELINE
from fashion_search.model.registry import champion, configure_mlflow
from fashion_search.settings import Settings


@dataclass(frozen=True)
class RetrainingCheck:
    """The decision and what it was made of."""

    retrain: bool
    reason: str
    champion: str | None
    trained_at: str | None
    new_products: int
    min_new_products: int
    recent_uploads: int
    recent_confidence: float | None
    baseline_confidence: float | None
    drift: float | None  # baseline minus recent confidence; None when not measured
    drift_threshold: float

    def to_dict(self) -> dict[str, Any]:
        """The decision as a task's report."""
        return asdict(self)


def check_retraining(settings: Settings) -> RetrainingCheck:
    """Whether the catalog has changed enough since the champion was trained to retrain."""
    rules = settings.retrain
    client = configure_mlflow(settings)
    current = champion(client, settings.registry.model_name, settings.registry.model_alias)
    if current is None or current.run_id is None:
        return RetrainingCheck(
            False, "no champion to retrain yet", None, None, 0, rules.min_new_products, 0,
            None, None, None, rules.drift_threshold,
        )  # fmt: skip
    run = client.get_run(current.run_id)
    trained_at = datetime.fromtimestamp(run.info.start_time / 1000, UTC)
    baseline = run.data.metrics.get(DRIFT_BASELINE)
    with create_pool(settings) as pool:
        new, confidences = Catalog.of(pool).uploads.arrivals(
            trained_at, "articleType", rules.drift_uploads
        )
    recent = sum(confidences) / len(confidences) if confidences else None
    drift = None
    if baseline is not None and recent is not None and len(confidences) >= rules.drift_uploads:
        drift = baseline - recent
    reasons = []
    if new >= rules.min_new_products:
        reasons.append(f"{new} new products >= {rules.min_new_products}")
    if drift is not None and drift >= rules.drift_threshold:
        reasons.append(f"drift {drift:.3f} >= {rules.drift_threshold}")
    reason = " and ".join(reasons) or (
        f"{new} new products < {rules.min_new_products}; "
        + (f"drift {drift:.3f} < {rules.drift_threshold}" if drift is not None
           else f"drift not measured ({len(confidences)} of {rules.drift_uploads} uploads)")
    )  # fmt: skip
    return RetrainingCheck(
        bool(reasons), reason, current.version, trained_at.isoformat(), new,
        rules.min_new_products, len(confidences), recent, baseline, drift, rules.drift_threshold,
    )  # fmt: skip
