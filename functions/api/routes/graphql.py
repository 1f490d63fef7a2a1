"""``/graphql``: product metadata and search as a GraphQL schema (strawberry).

``products`` is a Relay-style connection with opaque cursors; depth, token, alias and cost
limits (:mod:`functions.api.graphql_cost`) refuse expensive documents before they run, and
introspection and the GraphiQL page are off unless ``FS_GRAPHQL_INTROSPECTION`` turns them on.
``recordFeedback`` records a shopper's signal; ``rules``, ``addRule`` and ``removeRule`` (an
admin key) manage merchandising rules and synonym sets. A request that fails as a whole
(syntax, validation, limits, bad arguments) is answered with a 4xx status and the GraphQL
errors, each with its status in ``extensions``; field errors in an otherwise answered query
keep GraphQL's 200.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar, cast

import strawberry
from cross_web import HTTPException
from fastapi import Depends
from graphql import GraphQLError
from pydantic import ValidationError
from pydantic.alias_generators import to_camel
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from strawberry.extensions import (
    DisableIntrospection,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
    SchemaExtension,
)
from strawberry.fastapi import GraphQLRouter
from strawberry.http import GraphQLHTTPResponse
from strawberry.scalars import JSON
from strawberry.types import ExecutionContext, ExecutionResult, Info
from strawberry.types.unset import UNSET

from fashion_search.catalog import models
from fashion_search.catalog.api_keys import ApiKey
from fashion_search.catalog.filters import Filters, filter_values
from fashion_search.catalog.limits import MAX_K, MAX_PAGE_SIZE, MAX_PRODUCT_ID, MAX_SUGGESTIONS
from fashion_search.catalog.models import METADATA_FIELDS, ProductFields, values_annotation
from fashion_search.catalog.rules import StoredEntry
from fashion_search.errors import InvalidArgumentError, InvalidRequestError
from fashion_search.learning.feedback import Feedback
from fashion_search.search.facets import FacetCounts
from fashion_search.search.products import ProductService
from fashion_search.search.request import SearchRequest
from fashion_search.search.service import Hit, SearchResult, SearchService, decode_base64_image
from fashion_search.settings import AccessSettings, get_settings
from functions.api.access import recorded_as, require_scope, requires
from functions.api.dependencies import Session, get_products, get_service
from functions.api.errors import ERROR_RESPONSES, RETRY_AFTER_S, detail_of, status_of
from functions.api.graphql_cost import QueryCostLimiter

log = logging.getLogger(__name__)
MAX_DEPTH = 6
MAX_TOKENS = 1000
MAX_ALIASES = 10
#: Most products one ``products`` page returns.
MAX_FIRST = MAX_PAGE_SIZE // 10
_CURSOR_PREFIX = "product:"
T = TypeVar("T")


def _with_fields(fields: dict[str, Any], default: object = dataclasses.MISSING) -> Callable[[T], T]:
    """Adds ``fields`` (name -> annotation) to a class after its first annotated field, before
    strawberry reads it: the GraphQL types take the product's fields from its definition."""

    def add(cls: T) -> T:
        first, *rest = cls.__annotations__.items()
        cls.__annotations__ = {first[0]: first[1], **fields, **dict(rest)}
        if default is not dataclasses.MISSING:
            for name in fields:
                setattr(cls, name, default)
        return cls

    return add


@strawberry.type(description="A catalog product.")
@_with_fields(
    {name: field.annotation for name, field in ProductFields.model_fields.items() if name != "id"}
)
class Product:
    id: strawberry.ID
    model_version: str | None
    image_url: str = strawberry.field(description="presigned URL of the product image")

    @strawberry.field(description="Products that look like this one, best first.")
    async def similar(self, info: Info[dict[str, Any], None], k: int = 5) -> list[SearchHit]:
        service: SearchService = info.context["service"]
        request = SearchRequest.of(product_id=int(self.id), k=k)
        result = await run_in_threadpool(service.search, request)
        return [SearchHit.of(hit) for hit in result.hits]

    @classmethod
    def of(cls, product: models.Product, image_url: str) -> Product:
        """From a catalog product."""
        return cls(
            id=strawberry.ID(str(product.id)),
            image_url=image_url,
            **product.model_dump(
                include=set(ProductFields.model_fields) - {"id"} | {"model_version"}
            ),
        )


@strawberry.type(description="What one part of a hit's score contributed to it.")
class ScorePart:
    name: str
    value: float


@strawberry.type(description="Another colour of a hit's style.")
class Variant:
    id: strawberry.ID
    base_colour: str | None
    image_url: str


@strawberry.type(description="A search hit: ranking score, cosine similarity and product.")
class SearchHit:
    score: float
    similarity: float | None
    collapsed: int = strawberry.field(description="near-identical images it stands for")
    product: Product
    explain: list[ScorePart] | None = strawberry.field(
        description="the score's parts (similarity, title, understanding, business signals),"
        " when the search asked (refine: {explain: true})"
    )
    variants: list[Variant] = strawberry.field(
        description='the other colours of its style (refine: {group: "style"})'
    )
    arm: str | None = strawberry.field(
        description="in an interleaved experiment, the arm that put it there"
    )

    @classmethod
    def of(cls, hit: Hit) -> SearchHit:
        """From a service hit."""
        return cls(
            score=hit.score, similarity=hit.similarity, collapsed=hit.collapsed,
            product=Product.of(hit.product, hit.image_url),
            explain=None if hit.explain is None else [
                ScorePart(name=name, value=value) for name, value in hit.explain.items()
            ],
            variants=[Variant(id=strawberry.ID(str(v.product.id)),
                              base_colour=v.product.base_colour, image_url=v.image_url)
                      for v in hit.variants],
            arm=hit.arm,
        )  # fmt: skip


@strawberry.type(description="A metadata field and a value of it.")
class FieldValue:
    field: str
    value: str


@strawberry.type(description="A value of a field and how many products have it.")
class FacetValue:
    value: str
    count: int


@strawberry.type(description="The values of a metadata field, most frequent first.")
class Facet:
    field: str
    values: list[FacetValue]

    @staticmethod
    def all_of(counts: FacetCounts) -> list[Facet]:
        """From service facet counts."""
        return [
            Facet(field=name, values=[FacetValue(value=str(c.value), count=c.count) for c in cs])
            for name, cs in counts.items()
        ]


@strawberry.type(description="A completion: an attribute value (its field) or a title.")
class Suggestion:
    text: str
    kind: str


@strawberry.type(description="The running experiment and arm that answered a search.")
class ExperimentShown:
    id: strawberry.ID
    arm: str
    search_id: strawberry.ID = strawberry.field(description="what feedback's searchId names")


@strawberry.type(description="Search hits, best first, and the model version that produced them.")
class SearchResults:
    mode: str
    model_version: str | None
    hits: list[SearchHit]
    understood: list[FieldValue] = strawberry.field(description="attribute values the query names")
    cut: int = strawberry.field(description="candidates below the relevance cutoff")
    min_score: float | None = strawberry.field(
        description="the relevance cutoff applied (the serving version's unless asked)"
    )
    below_cutoff: bool = strawberry.field(
        description="no candidate passed the cutoff: the hits are the nearest below it"
    )
    exact: bool = strawberry.field(
        description="the vector candidates are exactly the nearest that pass the filters"
        " (false: approximate, from the HNSW index)"
    )
    facets: list[Facet] | None = strawberry.field(description="counts over the candidates")
    rules: list[int] = strawberry.field(description="the merchandising rules that applied")
    redirect: list[FieldValue] | None = strawberry.field(
        description="the filters a rule redirected the search to"
    )
    experiment: ExperimentShown | None = strawberry.field(
        description="the running experiment and arm that answered (header X-Session-Id)"
    )

    @classmethod
    def of(cls, result: SearchResult) -> SearchResults:
        """From a service result."""
        return cls(
            mode=result.mode,
            model_version=result.model_version,
            hits=[SearchHit.of(h) for h in result.hits],
            understood=_field_values(result.understood),
            cut=result.cut,
            min_score=result.min_score,
            below_cutoff=result.below_cutoff,
            exact=result.exact,
            facets=None if result.facets is None else Facet.all_of(result.facets),
            rules=list(result.rules),
            redirect=None if result.redirect is None else _field_values(result.redirect),
            experiment=None
            if result.experiment is None
            else ExperimentShown(
                id=strawberry.ID(str(result.experiment.experiment_id)),
                arm=result.experiment.arm,
                search_id=strawberry.ID(str(result.experiment.search_id)),
            ),
        )


def _field_values(values: Filters) -> list[FieldValue]:
    """Each field's value, or each of its values, as a pair (camelCase field)."""
    return [
        FieldValue(field=to_camel(f), value=str(v))
        for f, given in values.items()
        for v in filter_values(given)
    ]


@strawberry.input(description="What a search does with its ranked candidates.")
class Refine:
    min_score: float | None = strawberry.field(
        default=None, description="hits below this cosine similarity (-1..1) are cut"
    )
    collapse: str | None = strawberry.field(
        default=None, description="image: one hit per near-identical image"
    )
    facets: bool = strawberry.field(default=False, description="facet counts over candidates")
    candidates: int | None = strawberry.field(
        default=None, description="ranked candidates facets and collapse look at"
    )
    understand: str | None = strawberry.field(
        default=None, description="query understanding: off, boost or filter"
    )
    explain: bool = strawberry.field(default=False, description="each hit's score parts")
    rules: bool = strawberry.field(
        default=True, description="apply the merchandising rules (false: preview without)"
    )
    group: str | None = strawberry.field(
        default=None, description="style: one hit per style, its other colours as variants"
    )

    @staticmethod
    def values(refine: Refine | None) -> dict[str, Any]:
        """The refinements as a search request's values (the request checks them)."""
        return {} if refine is None else dataclasses.asdict(refine)


@strawberry.input(description="A weighted query term (a negative weight pushes away from it).")
class TermInput:
    text: str
    weight: float = 1.0


@strawberry.input(description="Metadata filters; each field takes one or more allowed values.")
@_with_fields({name: values_annotation(name) for name in METADATA_FIELDS}, None)
class ProductFilter:
    _: strawberry.Private[None] = None

    def to_filters(self) -> Filters:
        """As catalog filters."""
        return {k: v for k, v in vars(self).items() if k in METADATA_FIELDS and v is not None}


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class ProductEdge:
    cursor: str
    node: Product


@strawberry.type(description="A page of products in id order.")
class ProductConnection:
    edges: list[ProductEdge]
    page_info: PageInfo
    filters: strawberry.Private[Filters]

    @strawberry.field(description="How many products match the filter (all pages).")
    async def total_count(self, info: Info[dict[str, Any], None]) -> int:
        products: ProductService = info.context["products"]
        return await run_in_threadpool(products.count, self.filters)


def _cursor(product_id: int) -> str:
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{product_id}".encode()).decode()


def _after_id(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
        if text.startswith(_CURSOR_PREFIX):
            return int(text.removeprefix(_CURSOR_PREFIX))
    except ValueError:
        pass
    raise InvalidArgumentError(f"cursor {cursor!r} is not one this API returned")


def _product_id(id: strawberry.ID, what: str = "product") -> int:
    if not str(id).isdigit() or not 1 <= int(id) <= MAX_PRODUCT_ID:
        raise InvalidArgumentError(f"{what} id must be an integer from 1 to {MAX_PRODUCT_ID}")
    return int(id)


def _filters(filter: ProductFilter | None) -> Filters:
    return filter.to_filters() if filter is not None else {}


@strawberry.type
class Query:
    @strawberry.field(description="Products in id order, `first` per page, after a cursor.")
    async def products(
        self,
        info: Info[dict[str, Any], None],
        filter: ProductFilter | None = None,
        first: int = 20,
        after: str | None = None,
    ) -> ProductConnection:
        products: ProductService = info.context["products"]
        if not 1 <= first <= MAX_FIRST:
            raise InvalidArgumentError(f"first must be between 1 and {MAX_FIRST}")
        filters = _filters(filter)
        page = await run_in_threadpool(products.page, filters, first, _after_id(after))
        edges = [ProductEdge(cursor=_cursor(p.id), node=Product.of(p, products.image_url(p)))
                 for p in page.items]  # fmt: skip
        return ProductConnection(
            edges=edges,
            page_info=PageInfo(
                has_next_page=page.next_after is not None,
                end_cursor=edges[-1].cursor if edges else None,
            ),
            filters=filters,
        )

    @strawberry.field(description="One product, or null when no product has that id.")
    async def product(self, info: Info[dict[str, Any], None], id: strawberry.ID) -> Product | None:
        products: ProductService = info.context["products"]
        found = await run_in_threadpool(products.find, _product_id(id))
        return Product.of(found, products.image_url(found)) if found else None

    @strawberry.field(
        description="Products for a text query (`-word` negates) or weighted terms (one of"
        " them), vector or hybrid."
    )
    async def search_by_text(
        self,
        info: Info[dict[str, Any], None],
        query: str | None = None,
        terms: list[TermInput] | None = None,
        k: int = 10,
        filter: ProductFilter | None = None,
        mode: str | None = None,
        refine: Refine | None = None,
    ) -> SearchResults:
        service: SearchService = info.context["service"]
        request = SearchRequest.of(
            Refine.values(refine), query=query, k=k, filters=_filters(filter), mode=mode,
            terms=None if terms is None else [dataclasses.asdict(t) for t in terms],
        )  # fmt: skip
        result = await run_in_threadpool(service.search, request, info.context["session"])
        return SearchResults.of(result)

    @strawberry.field(
        description="Products that look like the product `id`, or like it changed by a text"
        ' `modifier` ("in red").'
    )
    async def search_similar(
        self,
        info: Info[dict[str, Any], None],
        id: strawberry.ID,
        k: int = 10,
        filter: ProductFilter | None = None,
        refine: Refine | None = None,
        modifier: str | None = None,
    ) -> SearchResults:
        service: SearchService = info.context["service"]
        request = SearchRequest.of(
            Refine.values(refine), product_id=_product_id(id), k=k, filters=_filters(filter),
            modifier=modifier,
        )  # fmt: skip
        result = await run_in_threadpool(service.search, request, info.context["session"])
        return SearchResults.of(result)

    @strawberry.field(
        description="Products that look like a base64 image, or like it changed by a text"
        " `modifier`."
    )
    async def search_by_image(
        self,
        info: Info[dict[str, Any], None],
        image_base64: str,
        k: int = 10,
        filter: ProductFilter | None = None,
        refine: Refine | None = None,
        modifier: str | None = None,
    ) -> SearchResults:
        service: SearchService = info.context["service"]
        request = SearchRequest.of(
            Refine.values(refine), image=decode_base64_image(image_base64), k=k,
            filters=_filters(filter), modifier=modifier,
        )  # fmt: skip
        result = await run_in_threadpool(service.search, request, info.context["session"])
        return SearchResults.of(result)

    @strawberry.field(description="How many products matching the filter have each value.")
    async def facet_counts(
        self, info: Info[dict[str, Any], None], filter: ProductFilter | None = None
    ) -> list[Facet]:
        products: ProductService = info.context["products"]
        return Facet.all_of(await run_in_threadpool(products.facet_counts, _filters(filter)))

    @strawberry.field(description="Merchandising rules and synonym sets, oldest first (admin).")
    async def rules(self, info: Info[dict[str, Any], None]) -> list[MerchandisingRule]:
        require_scope(info.context["caller"], "admin")
        service: SearchService = info.context["service"]
        entries = await run_in_threadpool(service.merchandising.entries)
        return [MerchandisingRule.of(e) for e in entries]

    @strawberry.field(description="Completions of a prefix: attribute values, then titles.")
    async def suggest(
        self, info: Info[dict[str, Any], None], prefix: str, limit: int = 8
    ) -> list[Suggestion]:
        products: ProductService = info.context["products"]
        found = await run_in_threadpool(products.suggest, prefix, limit)
        return [Suggestion(text=s.text, kind=s.kind) for s in found]


@strawberry.type(description="A merchandising rule or synonym set, who created it and when.")
class MerchandisingRule:
    id: strawberry.ID
    kind: str = strawberry.field(description="rule or synonyms")
    body: JSON = strawberry.field(description="what it says (the REST body of POST /rules)")
    created_by: str
    created_at: datetime

    @classmethod
    def of(cls, entry: StoredEntry) -> MerchandisingRule:
        """From a stored entry."""
        return cls(
            id=strawberry.ID(str(entry.id)), kind=entry.kind, body=cast(JSON, entry.body),
            created_by=entry.created_by, created_at=entry.created_at,
        )  # fmt: skip


@strawberry.type(description="A recorded feedback: its id and when it was recorded.")
class FeedbackReceipt:
    id: strawberry.ID
    created_at: datetime


@strawberry.type
class Mutation:
    @strawberry.mutation(
        description="Record what a shopper did with a result: `click`, `add_to_cart` or"
        " `not_relevant`, on the product shown at `position` (1 = top) for `query`."
    )
    async def record_feedback(
        self,
        info: Info[dict[str, Any], None],
        signal: str,
        query: str,
        product_id: strawberry.ID,
        position: int,
        session_id: str,
        model_version: str | None = None,
        search_id: strawberry.ID | None = None,
    ) -> FeedbackReceipt:
        service: SearchService = info.context["service"]
        try:
            feedback = Feedback(
                signal=signal, query=query, product_id=_product_id(product_id),
                position=position, session_id=session_id, model_version=model_version,
                search_id=None if search_id is None else _product_id(search_id, "search"),
            )  # fmt: skip
        except ValidationError as error:
            raise InvalidArgumentError(
                "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
            ) from error
        stored = await run_in_threadpool(service.catalog.feedback.record, feedback)
        return FeedbackReceipt(id=strawberry.ID(str(stored.id)), created_at=stored.created_at)

    @strawberry.mutation(
        description="Add a merchandising rule or synonym set (admin): the body of POST /rules."
    )
    async def add_rule(self, info: Info[dict[str, Any], None], body: JSON) -> MerchandisingRule:
        caller: ApiKey | None = info.context["caller"]
        require_scope(caller, "admin")
        if not isinstance(body, dict):
            raise InvalidRequestError("body must be an object")
        service: SearchService = info.context["service"]
        by = recorded_as(caller)
        return MerchandisingRule.of(await run_in_threadpool(service.merchandising.add, body, by))

    @strawberry.mutation(description="Remove a merchandising rule or synonym set (admin).")
    async def remove_rule(self, info: Info[dict[str, Any], None], id: strawberry.ID) -> bool:
        require_scope(info.context["caller"], "admin")
        service: SearchService = info.context["service"]
        await run_in_threadpool(service.merchandising.remove, _product_id(id, "rule"))
        return True


def _status(error: GraphQLError) -> int:
    """400 for document errors (syntax, validation, limits, variables of the wrong type), else
    the error's HTTP status (a typed error's own, 503 for a dependency's transient fault, 500)."""
    original = error.original_error
    if original is None or isinstance(original, GraphQLError):
        return 400
    return status_of(original)


class _Schema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """Log only server-side failures (a dependency's fault in one line); the client's own
        mistakes are in the response."""
        unexpected = []
        for error in errors:
            status = _status(error)
            if status == 503:
                log.warning("503: %s", detail_of(error.original_error or error))
            elif status >= 500:
                unexpected.append(error)
        if unexpected:
            super().process_errors(unexpected, execution_context)


class _Router(GraphQLRouter[dict[str, Any], None]):
    async def run(self, request: Any, context: Any = UNSET, root_value: Any = UNSET) -> Any:
        """Strawberry's own refusals (an unsupported content type or method) in JSON, like
        every other error of the API."""
        try:
            return await super().run(request, context=context, root_value=root_value)
        except HTTPException as error:
            return JSONResponse({"detail": error.reason}, status_code=error.status_code)

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        response = await super().process_result(request, result)
        formatted_errors: list[dict[str, Any]] = response.get("errors") or []  # type: ignore[assignment]
        for formatted, error in zip(formatted_errors, result.errors or [], strict=True):
            status = _status(error)
            formatted.setdefault("extensions", {})["status"] = status
            if status == 503 and error.original_error is not None:
                formatted["message"] = detail_of(error.original_error)
        return response

    def create_response(
        self,
        response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse],
        sub_response: Response,
    ) -> Response:
        response = super().create_response(response_data, sub_response)
        if not isinstance(response_data, dict):
            return response
        errors: list[dict[str, Any]] = response_data.get("errors") or []  # type: ignore[assignment]
        statuses = [e.get("extensions", {}).get("status", 400) for e in errors]
        if 503 in statuses:  # a dependency's fault, even beside partial data: worth a retry
            response.status_code = 503
            response.headers["Retry-After"] = str(RETRY_AFTER_S)
        elif statuses and response_data.get("data") is None:
            response.status_code = statuses[0]
        return response


def build_schema(access: AccessSettings) -> strawberry.Schema:
    """The schema with its limits; introspection only where ``access`` allows it."""
    extensions: list[type[SchemaExtension] | Callable[[], SchemaExtension]] = [
        lambda: QueryDepthLimiter(max_depth=MAX_DEPTH),
        lambda: MaxTokensLimiter(max_token_count=MAX_TOKENS),
        lambda: MaxAliasesLimiter(max_alias_count=MAX_ALIASES),
        lambda: QueryCostLimiter(
            access.graphql_max_cost, {"first": MAX_FIRST, "k": MAX_K, "limit": MAX_SUGGESTIONS}
        ),
    ]
    if not access.graphql_introspection:
        extensions.append(DisableIntrospection)
    return _Schema(query=Query, mutation=Mutation, extensions=extensions)


#: The router's access check; the context reuses its answer (FastAPI runs it once).
_search_access = requires("search")


async def _context(
    session: Session,
    service: SearchService = Depends(get_service),  # noqa: B008
    products: ProductService = Depends(get_products),  # noqa: B008
    caller: ApiKey | None = _search_access,  # type: ignore[assignment]
) -> dict[str, Any]:
    return {"service": service, "products": products, "caller": caller, "session": session}


def build_router(access: AccessSettings) -> GraphQLRouter[dict[str, Any], None]:
    """``/graphql`` (a search route: see :func:`functions.api.access.requires`); GraphiQL on
    GET only with introspection."""
    return _Router(
        build_schema(access),
        path="/graphql",
        context_getter=_context,
        tags=["graphql"],
        graphql_ide="graphiql" if access.graphql_introspection else None,
        dependencies=[_search_access],
        responses=ERROR_RESPONSES,
    )


router = build_router(get_settings().access)
schema = router.schema
