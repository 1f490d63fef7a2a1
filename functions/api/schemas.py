"""Request and response bodies of the REST API (camelCase on the wire, like the dataset)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Self, cast

from fastapi import Response
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from fashion_search.catalog.models import Product, ProductFields
from fashion_search.errors import InvalidRequestError
from fashion_search.search.facets import FacetCount
from fashion_search.search.request import SearchRequest
from fashion_search.search.service import Hit, SearchResult


class _Body(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class ProductOut(ProductFields):
    """A product's fields (:class:`~fashion_search.catalog.models.ProductFields`), where its
    image is, a presigned URL of it, and the model version of its embedding."""

    model_config = ConfigDict(frozen=False, extra="forbid")

    image_key: str
    image_url: str
    model_version: str | None

    @classmethod
    def of(cls, product: Product, image_url: str, **extra: object) -> Self:
        """From a catalog product (``extra``: the fields a subclass adds)."""
        fields = product.model_dump(include=set(ProductOut.model_fields) - {"image_url"})
        values: dict[str, Any] = {**fields, "image_url": image_url, **extra}
        return cast(Self, cls.model_construct(**values))  # the catalog's own: not validated


class VariantOut(_Body):
    """Another colour of a hit's style (``group=style``): its product id, colour and image."""

    id: int
    base_colour: str | None
    image_url: str


class HitOut(ProductOut):
    """A search hit: the product, its ranking score (cosine similarity, or fused rank score
    plus boosts), its cosine similarity to the query, how many near-identical images it
    stands for (1 unless the search collapsed them), (``explain``) the score's parts,
    (``group=style``) the other colours of its style, and in an interleaved experiment the arm
    that put it there."""

    score: float
    similarity: float | None
    collapsed: int
    explain: dict[str, float] | None
    variants: list[VariantOut]
    arm: str | None

    @classmethod
    def of_hit(cls, hit: Hit) -> HitOut:
        """From a service hit."""
        return cls.of(
            hit.product, hit.image_url, score=hit.score, similarity=hit.similarity,
            collapsed=hit.collapsed, explain=hit.explain,
            variants=[VariantOut(id=v.product.id, base_colour=v.product.base_colour,
                                 image_url=v.image_url) for v in hit.variants],
            arm=hit.arm,
        )  # fmt: skip


class FacetCountOut(BaseModel):
    """One value of a field and how many products have it."""

    value: str | int
    count: int


FacetCountsOut = dict[str, list[FacetCountOut]]


class SuggestionOut(BaseModel):
    """A completion and what it is: a metadata field's camelCase name, or ``title``."""

    text: str
    kind: str


def facet_counts_out(counts: dict[str, list[FacetCount]]) -> FacetCountsOut:
    """Service facet counts on the wire."""
    return {
        name: [FacetCountOut(value=c.value, count=c.count) for c in values]
        for name, values in counts.items()
    }


class ExperimentOut(_Body):
    """The experiment and arm that answered a search, and the search's id there (feedback's
    ``searchId``)."""

    id: int
    arm: str
    search_id: int


class SearchOut(_Body):
    """Hits, best first, with the model version that embedded the query and timings; the
    attribute values the query was understood to name (a value, or several), the relevance
    cutoff applied and how many candidates it dropped, whether no candidate passed it (then
    the hits are the nearest below it), whether the vector candidates are exactly the nearest
    that pass the filters (else approximate, from the HNSW index), facet counts over the
    candidates (when asked), the merchandising rules that applied and the filters they
    redirected the search to; in a running experiment, the experiment and arm that
    answered."""

    mode: str
    model_version: str | None
    hits: list[HitOut]
    timings_ms: dict[str, float]
    understood: dict[str, str | list[str]]
    cut: int
    min_score: float | None
    below_cutoff: bool
    exact: bool
    facets: FacetCountsOut | None
    rules: list[int]
    redirect: dict[str, Any] | None
    experiment: ExperimentOut | None

    @classmethod
    def of(cls, result: SearchResult) -> SearchOut:
        """From a service result."""
        return cls(
            mode=result.mode,
            model_version=result.model_version,
            hits=[HitOut.of_hit(h) for h in result.hits],
            timings_ms={name: round(ms, 3) for name, ms in result.timings_ms.items()},
            understood=result.understood,
            cut=result.cut,
            min_score=result.min_score,
            below_cutoff=result.below_cutoff,
            exact=result.exact,
            facets=None if result.facets is None else facet_counts_out(result.facets),
            rules=list(result.rules),
            redirect=None if result.redirect is None else dict(result.redirect),
            experiment=None
            if result.experiment is None
            else ExperimentOut(
                id=result.experiment.experiment_id,
                arm=result.experiment.arm,
                search_id=result.experiment.search_id,
            ),
        )


def search_response(result: SearchResult) -> Response:
    """A search result's JSON (:class:`SearchOut`), serialised once: a route that returned the
    model would have FastAPI validate it again and encode it through ``jsonable_encoder``."""
    body = SearchOut.of(result).model_dump_json(by_alias=True)
    return Response(body, media_type="application/json")


def request_schema(*names: str, **extra: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI schema of a search body: the fields ``names`` of
    :class:`~fashion_search.search.request.SearchRequest` (camelCase, references inlined) and
    the ``extra`` properties."""
    schema = SearchRequest.model_json_schema(by_alias=True)
    definitions = schema.get("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(definitions[node["$ref"].rsplit("/", 1)[1]])
            return {key: inline(value) for key, value in node.items()}
        return [inline(item) for item in node] if isinstance(node, list) else node

    properties = {name: inline(schema["properties"][name]) for name in names}
    return {"type": "object", "properties": {**extra, **properties}}


#: A search body's fields besides what it searches for.
REFINED = (
    "k", "filters", "minScore", "collapse", "facets", "candidates", "understand", "explain",
    "rules", "group",
)  # fmt: skip


def request_from_body(
    body: Mapping[str, Any], schema: dict[str, Any], **renamed: Callable[[Any], str]
) -> SearchRequest:
    """The search request of a JSON body of ``schema`` (its properties only); a property of
    ``renamed`` becomes the request field its function names for its value."""
    unknown = sorted(set(body) - set(schema["properties"]))
    if unknown:
        known = ", ".join(schema["properties"])
        raise InvalidRequestError(f"unknown field(s) {', '.join(unknown)}; known: {known}")
    values = {
        (renamed[name](value) if name in renamed else name): value for name, value in body.items()
    }
    return SearchRequest.of(values)
