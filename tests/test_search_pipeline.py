"""The search pipeline against PostgreSQL with a deterministic stand-in embedder (no model
server): each stage (understanding, serving version, candidates, ranking, cutoff, facets,
collapse, similar) on a slice of the dataset whose products are embedded by their titles.
Under a minute once the stack is up."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import grpc
import numpy as np
import pytest

from fashion_search.catalog.models import ProductFields
from fashion_search.embedding_client import Embeddings, ModelVersionNotLoadedError
from fashion_search.errors import ServingVersionUnavailableError
from fashion_search.search.collapse import FINGERPRINT_BYTES
from fashion_search.search.request import Refinements
from fashion_search.search.service import SearchResult, SearchService
from fashion_search.search.understanding import words
from fashion_search.settings import Settings
from fashion_search.storage import ObjectStore
from tests.stand_in import StandInEmbedder, stand_in_catalog

#: Products of the slice.
ROWS = 3000


@dataclass
class Pipeline:
    """The search service on the slice, its stand-in embedder, the slice's products, and the
    product nearest the first one (their images are the same)."""

    service: SearchService
    embedder: StandInEmbedder
    products: list[ProductFields]
    twin: ProductFields


@pytest.fixture(scope="module")
def pipeline(stack_settings: Settings, dataset_products: list[ProductFields]) -> Iterator[Pipeline]:
    fields = dataset_products[:ROWS]
    with stand_in_catalog(stack_settings, fields, "pipeline") as (settings, catalog, vectors):
        # the first product and its nearest other product share one image (collapse)
        twin = fields[int(np.argsort(-(vectors @ vectors[0]))[1])]
        rng = np.random.default_rng(0)
        prints = {f.id: rng.integers(0, 256, FINGERPRINT_BYTES, np.uint8).tobytes()
                  for f in fields}  # fmt: skip
        prints[twin.id] = prints[fields[0].id]
        catalog.products.fill_fingerprints(prints)
        embedder = StandInEmbedder()
        service = SearchService(settings, catalog, ObjectStore(settings), embedder)
        yield Pipeline(service, embedder, fields, twin)


def _titles(result: SearchResult) -> list[set[str]]:
    return [set(words(hit.product.product_display_name)) for hit in result.hits]


OFF = Refinements(understand="off")


def test_text_search_finds_the_titles_that_share_the_query_words(pipeline: Pipeline) -> None:
    result = pipeline.service.text("red tshirt", 5, mode="vector", refine=OFF)
    assert len(result.hits) == 5 and result.understood == {}
    assert all({"red", "tshirt"} <= title for title in _titles(result)), _titles(result)
    assert result.model_version == pipeline.embedder.version
    similarities = [hit.similarity or 0.0 for hit in result.hits]
    assert similarities == sorted(similarities, reverse=True)


def test_spanish_is_understood_and_rewritten_in_the_catalogs_words(pipeline: Pipeline) -> None:
    result = pipeline.service.text("camiseta roja", 10, mode="vector")
    assert result.understood == {"articleType": "Tshirts", "baseColour": "Red"}
    assert all(
        (hit.product.article_type, hit.product.base_colour) == ("Tshirts", "Red")
        for hit in result.hits
    )
    assert pipeline.service.text("camiseta roja", 10, refine=OFF).understood == {}


def test_understanding_as_a_filter_keeps_only_the_named_values(pipeline: Pipeline) -> None:
    refine = Refinements(understand="filter")
    result = pipeline.service.text("black watches", 20, mode="vector", refine=refine)
    assert len(result.hits) == 20
    assert {(h.product.article_type, h.product.base_colour) for h in result.hits} == {
        ("Watches", "Black")
    }


def test_the_cutoff_never_empties_the_page(pipeline: Pipeline) -> None:
    refine = Refinements(min_score=0.99, understand="off")
    result = pipeline.service.text("zzz qqq", 5, mode="vector", refine=refine)
    assert len(result.hits) == 5 and result.below_cutoff and result.cut == 0
    assert result.min_score == 0.99


def test_title_matches_are_never_cut(pipeline: Pipeline) -> None:
    refine = Refinements(min_score=0.99, understand="off")
    result = pipeline.service.text("red tshirt", 5, mode="hybrid", refine=refine)
    assert result.hits and not result.below_cutoff
    stems = [{word.rstrip("s") for word in title} for title in _titles(result)]  # as PostgreSQL
    assert all({"red", "tshirt"} <= title for title in stems), stems
    assert all((hit.similarity or 0.0) < 0.99 for hit in result.hits)  # kept though below it


def test_facets_count_the_kept_candidates(pipeline: Pipeline) -> None:
    refine = Refinements(facets=True, candidates=50, understand="filter")
    result = pipeline.service.text("black watches", 5, mode="vector", refine=refine)
    assert result.facets is not None
    assert [(c.value, c.count) for c in result.facets["articleType"]] == [("Watches", 50)]


def test_collapse_keeps_one_hit_per_image(pipeline: Pipeline) -> None:
    first, twin = pipeline.products[0], pipeline.twin
    query = first.product_display_name
    plain = pipeline.service.text(query, 5, mode="vector", refine=OFF)
    assert [h.product.id for h in plain.hits[:2]] == [first.id, twin.id]
    collapsed = pipeline.service.text(
        query, 5, mode="vector", refine=Refinements(collapse="image", understand="off")
    )
    assert collapsed.hits[0].product.id == first.id and collapsed.hits[0].collapsed == 2
    assert twin.id not in {h.product.id for h in collapsed.hits}


def test_similar_leaves_the_product_out(pipeline: Pipeline) -> None:
    first = pipeline.products[0]
    result = pipeline.service.similar(first.id, 5, refine=OFF)
    assert first.id not in {h.product.id for h in result.hits}
    assert result.hits[0].product.id == pipeline.twin.id


class _NotLoadedOnce(StandInEmbedder):
    """Does not hold the version asked for at its first call (a model server still loading)."""

    def embed_texts(self, texts: Sequence[str], version: str | None = None) -> Embeddings:
        if not self.calls:
            self.calls.append(version or "")
            raise ModelVersionNotLoadedError(grpc.StatusCode.FAILED_PRECONDITION, "loading")
        return super().embed_texts(texts, version)


def test_the_serving_version_is_asked_again_once_then_refused(pipeline: Pipeline) -> None:
    catalog, settings, store = (
        pipeline.service.catalog, pipeline.service.settings, pipeline.service.store,
    )  # fmt: skip
    version = pipeline.embedder.version
    flaky = _NotLoadedOnce(version)
    result = SearchService(settings, catalog, store, flaky).text("red tshirt", 3, refine=OFF)
    assert result.hits and flaky.calls == [version, version]
    other = StandInEmbedder("another-version")
    with pytest.raises(ServingVersionUnavailableError, match="another-version"):
        SearchService(settings, catalog, store, other).text("red tshirt", 3, refine=OFF)
    assert other.calls == [version, version]
