"""A model version's relevance cutoff, calibrated on the judged queries.

Every model has its own scale of cosine similarities, so the cutoff below which a hit counts as
weak is measured per version, on its catalog embeddings: the judged queries are searched as the
defaults search them (mode, understanding), nothing cut, and the cutoff is the similarity that
keeps :data:`KEEP_RELEVANT` of the relevant hits in their top 10 (rounded down to 0.01). It is
stored with the version's catalog record (``catalog_versions.min_score``), which every search
reads, when its embeddings are complete (:func:`calibrate_when_due`).
"""

from __future__ import annotations

import logging
import math

import numpy as np

from fashion_search.catalog.repositories import Catalog
from fashion_search.catalog.versions import CatalogVersion
from fashion_search.embedding_client import EmbeddingClient
from fashion_search.learning.judged_queries import judged_queries
from fashion_search.search.request import Refinements
from fashion_search.search.service import SearchService
from fashion_search.settings import Settings
from fashion_search.storage import ObjectStore

log = logging.getLogger(__name__)
#: The share of relevant top-10 hits the cutoff keeps.
KEEP_RELEVANT = 0.95


def measure_cutoff(service: SearchService) -> float | None:
    """The cutoff keeping :data:`KEEP_RELEVANT` of the relevant hits of the judged queries'
    top 10 (as ``service`` searches by default, nothing cut); None when no hit is relevant."""
    similarities = []
    for query in judged_queries():
        for hit in service.text(query.text, 10, refine=Refinements(min_score=-1.0)).hits:
            if query.relevant(hit.product) and hit.similarity is not None:
                similarities.append(hit.similarity)
    if not similarities:
        return None
    kept = float(np.quantile(similarities, 1.0 - KEEP_RELEVANT))
    return max(-1.0, math.floor(kept * 100) / 100)


def calibrate(
    settings: Settings, catalog: Catalog, client: EmbeddingClient, version: CatalogVersion
) -> CatalogVersion:
    """Measure ``version``'s cutoff on its catalog embeddings and store it with its record."""
    service = SearchService(settings, catalog, ObjectStore(settings), client,
                            version=version.model_version)  # fmt: skip
    cutoff = measure_cutoff(service)
    log.info("model version %s: relevance cutoff %s", version.model_version, cutoff)
    return catalog.versions.set_min_score(version.model_version, cutoff)


def calibrate_when_due(
    settings: Settings, catalog: Catalog, client: EmbeddingClient, version: CatalogVersion
) -> CatalogVersion:
    """``version`` calibrated when it has no cutoff yet and covers the whole catalog."""
    if (
        version.min_score is not None
        or not catalog.versions.coverage(version.model_version).complete
    ):
        return version
    return calibrate(settings, catalog, client, version)
