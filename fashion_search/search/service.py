"""The search service behind every search function: a pipeline of one module per job.

A search checks its inputs (once, for every front end: REST, GraphQL, Lambda, UI; a refused
query raises a typed error from :mod:`fashion_search.errors` and changes nothing), reads what
its words name (:mod:`~fashion_search.search.understanding`), embeds the query by the version
the catalog serves (:mod:`~fashion_search.search.serving`), gathers candidates from the
catalog (nearest, nearest with the understood values, title matches), ranks and cuts them
with their business signals (:mod:`~fashion_search.search.ranking`,
:mod:`~fashion_search.search.signals`), counts facets (:mod:`~fashion_search.search.facets`)
collapses identical images (:mod:`~fashion_search.search.collapse`) and groups colour variants
(:mod:`~fashion_search.search.styles`).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from pydantic.alias_generators import to_camel, to_snake

from fashion_search.catalog.filters import Filters, filter_values
from fashion_search.catalog.models import Neighbor, Product
from fashion_search.catalog.repositories import Catalog
from fashion_search.catalog.signals import StoredSignals
from fashion_search.catalog.versions import CatalogVersion
from fashion_search.catalog.vote import vote
from fashion_search.errors import (
    ImageTooLargeError,
    InvalidArgumentError,
    InvalidImageError,
    ProductNotEmbeddedError,
)
from fashion_search.experiments.design import SETTING_VALUES, Arm
from fashion_search.experiments.routing import Shown, search_in
from fashion_search.experiments.service import Experiments
from fashion_search.search.collapse import collapse
from fashion_search.search.facets import FacetCounts, count_facets
from fashion_search.search.image_urls import ImageUrls
from fashion_search.search.merchandising import Merchandising
from fashion_search.search.ranking import Candidates, RankPlan, rank
from fashion_search.search.request import Refinements, SearchMode, SearchRequest
from fashion_search.search.rules import Effects, matching
from fashion_search.search.serving import Embedder, ServingEmbedder
from fashion_search.search.signals import SignalWeights, contributions
from fashion_search.search.styles import group_by_style
from fashion_search.search.terms import Term, combine, positive_text
from fashion_search.search.understanding import (
    QueryReader,
    Understood,
)
from fashion_search.settings import Settings
from fashion_search.storage import ObjectStore

#: How many title matches a hybrid search adds to the vector candidates.
HYBRID_CANDIDATES = 50
#: The weight of a composed query's text modifier next to its image (weight 1).
MODIFIER_WEIGHT = 1.5
#: What a composed query keeps of its image ("this, but in red": its gender and article type)
#: unless the modifier names another value; understood like the modifier's words.
IMAGE_ATTRIBUTES = ("gender", "article_type", "base_colour")


@dataclass(frozen=True)
class Variant:
    """Another colour of a hit's style: the product and a presigned URL of its image."""

    product: Product
    image_url: str


@dataclass(frozen=True)
class Hit:
    """A search result: the product, its ranking score, its cosine similarity to the query,
    a presigned URL of its image, how many candidates it stands for (collapse), and (when
    asked) what each part of the score contributed (a pinned hit: ``pinned``, its
    position); grouped by style, its other colours among the candidates; in an interleaved
    experiment, the arm that put it there."""

    product: Product
    score: float
    image_url: str
    similarity: float | None = None
    collapsed: int = 1
    explain: dict[str, float] | None = None
    variants: tuple[Variant, ...] = ()
    arm: str | None = None


@dataclass
class SearchResult:
    """Hits, best first, with the serving model version and where the time went; what the
    query was understood to name, the relevance cutoff and how many candidates it dropped, and
    facet counts over the kept candidates (when asked). ``below_cutoff``: no candidate passed
    the cutoff, so the hits are the nearest ones below it (never an empty page for a query
    the catalog has candidates for). ``rules``: the merchandising rules that applied, and
    ``redirect``, the filters they sent the search to. ``exact``: the vector candidates are
    exactly the nearest that pass the filters (else from the HNSW index: approximate).
    ``experiment``: the experiment and arm that answered, and the search's id there."""

    hits: list[Hit]
    mode: str
    model_version: str | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    understood: Understood = field(default_factory=dict)
    cut: int = 0
    facets: FacetCounts | None = None
    min_score: float | None = None
    below_cutoff: bool = False
    rules: tuple[int, ...] = ()
    redirect: Filters | None = None
    experiment: Shown | None = None
    exact: bool = False


@contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + (time.perf_counter() - started) * 1000


def decode_base64_image(data: str) -> bytes:
    """Bytes of a base64 image (a ``data:image/...;base64,`` prefix is allowed)."""
    payload = data.split(",", 1)[1] if data.startswith("data:") and "," in data else data
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as error:
        raise InvalidImageError("image is not valid base64") from error


@dataclass(frozen=True)
class _Search:
    """One search, ready to run: its vector (of ``version``), what it keeps, its filters and
    refinements, what its words name, its mode, its title matches (hybrid: running
    meanwhile), the catalog product it starts from (left out), whether business signals
    re-order its candidates, and what merchandising rules do to it."""

    version: CatalogVersion
    vector: np.ndarray[Any, Any]
    k: int
    filters: Filters | None
    refine: Refinements
    understood: Understood
    mode: str
    titles: Future[list[tuple[int, float]]] | None = None
    exclude_id: int | None = None
    signals: bool = False
    effects: Effects = field(default_factory=Effects)

    @property
    def boosted(self) -> bool:
        """Whether understood values boost candidates (rather than filter, or nothing)."""
        return self.refine.understand == "boost" and bool(self.understood)

    @property
    def depth(self) -> int:
        """How many ranked candidates the search looks at: k, or the refinements'
        candidates when something re-orders them."""
        refine = self.refine
        effects = self.effects
        looks_further = (
            refine.facets or refine.collapse is not None or refine.group is not None
            or self.boosted or self.signals
            or bool(effects.hidden or effects.adjustments)
        )  # fmt: skip
        return max(self.k, refine.candidates or self.k) if looks_further else self.k


class SearchService:
    """Text, image, composed and similar-product search over one catalog, model server and
    store: each search built as a :class:`_Search`, then run by :meth:`_run`."""

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        store: ObjectStore,
        embedder: Embedder,
        image_url: ImageUrls | None = None,
        version: str | None = None,
    ) -> None:
        """``version``: search that catalog version (a candidate being calibrated) instead of
        the serving one."""
        self.settings = settings
        self.catalog = catalog
        self.store = store
        self.embedder = embedder
        self.serving = ServingEmbedder(catalog, embedder, version)
        self.merchandising = Merchandising(catalog)
        self.reader = QueryReader(
            lambda: (catalog.products.facets(), catalog.products.title_words()),
            lambda: self.merchandising.book().synonym_sets,
        )
        self.image_url = image_url or ImageUrls(settings, store)
        self.signals = SignalWeights.of(settings.signals)
        self.experiments = Experiments(catalog, settings.experiments)
        self._versions: dict[str, SearchService] = {}
        self._lexical = ThreadPoolExecutor(4, thread_name_prefix="title-search")

    def reconfigured(self, settings: Settings) -> SearchService:
        """A service over the same catalog, store, model server and image URLs with other
        settings (an evaluation's variant)."""
        return SearchService(settings, self.catalog, self.store, self.embedder, self.image_url)

    def _refinements(self, request: SearchRequest) -> Refinements:
        """The request's refinements, the settings' where it leaves them out."""
        search = self.settings.search
        candidates = request.candidates
        if candidates is None:  # facets count 500; the ranking alone re-ranks fewer
            candidates = search.candidates if request.facets else search.rerank_candidates
        return Refinements(
            search.min_score if request.min_score is None else request.min_score,
            request.collapse, request.facets, candidates,
            request.understand or search.understanding, request.explain, request.rules,
            request.group,
        )  # fmt: skip

    def search(self, request: SearchRequest, session_id: str | None = None) -> SearchResult:
        """The products for a checked request (:class:`SearchRequest`); a shopper's session
        in a running experiment gets its arm's answer, which names the experiment and arm."""
        experiment = self.experiments.running() if session_id else None
        if experiment is None or session_id is None:
            return self._search(request)
        return search_in(
            experiment, request, session_id, self._arm_search, self.catalog.experiments
        )

    def _arm_search(self, arm: Arm, request: SearchRequest) -> SearchResult:
        """The search as an experiment's arm answers it: its setting, whatever the request
        asked for, or its catalog version."""
        if arm.kind in SETTING_VALUES:
            return self._search(request.model_copy(update={arm.kind: arm.value}))
        return self._version(arm.value)._search(request)

    def _version(self, version: str | None) -> SearchService:
        """The service that searches catalog version ``version`` (None: the serving one)."""
        if version is None:
            return self
        service = self._versions.get(version)
        if service is None:
            service = SearchService(
                self.settings, self.catalog, self.store, self.embedder, self.image_url, version
            )
            self._versions[version] = service
        return service

    def _search(self, request: SearchRequest) -> SearchResult:
        refine = self._refinements(request)
        if request.product_id is not None:
            return self._similar(request, refine)
        if request.query is None and request.terms is None:
            return self._image(request, refine)
        return self._text(request, refine)

    def text(
        self,
        query: str | Sequence[Term],
        k: int = 10,
        filters: Filters | None = None,
        mode: SearchMode | None = None,
        refine: Refinements | None = None,
    ) -> SearchResult:
        """Products for a text query (``-word`` terms push away from a word; or weighted
        terms): by embedding, or fused with full-text title search."""
        asked = (
            {"query": query}
            if isinstance(query, str)
            else {"terms": [{"text": t.text, "weight": t.weight} for t in query]}
        )
        return self.search(SearchRequest.of(asked, **_common(k, filters, refine), mode=mode))

    def image(
        self,
        image: bytes,
        k: int = 10,
        filters: Filters | None = None,
        refine: Refinements | None = None,
        modifier: str | None = None,
    ) -> SearchResult:
        """Products whose images look like ``image`` (encoded bytes), or, with a text
        ``modifier`` ("in red"), like it changed so."""
        request = SearchRequest.of(image=image, modifier=modifier, **_common(k, filters, refine))
        return self.search(request)

    def image_by_key(
        self,
        key: str,
        bucket: str | None = None,
        k: int = 10,
        filters: Filters | None = None,
        refine: Refinements | None = None,
        modifier: str | None = None,
    ) -> SearchResult:
        """Image search with an image already in the store (images or uploads bucket)."""
        request = SearchRequest.of(
            key=key, bucket=bucket, modifier=modifier, **_common(k, filters, refine)
        )
        return self.search(request)

    def similar(
        self,
        product_id: int,
        k: int = 10,
        filters: Filters | None = None,
        refine: Refinements | None = None,
        modifier: str | None = None,
    ) -> SearchResult:
        """Products closest to a catalog product's embedding of the serving version (the
        product left out), or, with a text ``modifier``, to it changed so."""
        request = SearchRequest.of(
            product_id=product_id, modifier=modifier, **_common(k, filters, refine)
        )
        return self.search(request)

    def _text(self, request: SearchRequest, refine: Refinements) -> SearchResult:
        mode = request.mode or self.settings.search.mode
        terms = request.query_terms()
        assert refine.understand is not None  # _refinements sets it
        text = positive_text(terms)
        understood, filters = self.reader.understand(text, refine.understand, request.filters)
        effects = self._effects(refine, text, understood, filters)
        filters = effects.redirected(filters)
        title_text, alternatives = self.reader.title_query(text, refine.understand)
        terms = self.reader.rewrite(terms, refine.understand)
        titles: Future[list[tuple[int, float]]] | None = None
        if mode == "hybrid":  # the title search needs no embedding: it runs meanwhile
            negatives = [t.text for t in terms if t.weight < 0]
            titles = self._lexical.submit(
                self.catalog.vectors.title_match_ids, title_text, HYBRID_CANDIDATES, filters,
                negatives, alternatives,
            )  # fmt: skip
        timings: dict[str, float] = {}
        with _timed(timings, "model"):
            vectors, version = self.serving.embed(texts=[t.text for t in terms])
        vector = combine(np.stack(vectors), [t.weight for t in terms])
        search = _Search(
            version, vector, request.k, filters, refine, understood, mode, titles,
            signals=self.signals.on, effects=effects,
        )  # fmt: skip
        return self._run(search, timings)

    def _effects(
        self, refine: Refinements, text: str | None, understood: Understood, filters: Filters | None
    ) -> Effects:
        """What the merchandising rules in force do to a search (none when it asks so)."""
        if not refine.rules:
            return Effects()
        return matching(self.merchandising.book().rules, text, understood, filters or {})

    def _image(self, request: SearchRequest, refine: Refinements) -> SearchResult:
        """An image's search: given, or read from the store (images or uploads bucket)."""
        limit = self.settings.search.max_upload_bytes
        if request.key is not None:
            storage = self.settings.storage
            bucket = request.bucket or storage.images_bucket
            allowed = (storage.images_bucket, storage.uploads_bucket)
            if bucket not in allowed:
                raise InvalidArgumentError(f"bucket must be one of {', '.join(allowed)}")
            image = self.store.read(bucket, request.key, max_bytes=limit).data
        else:
            image = request.image or b""
        if not image:
            raise InvalidImageError("image is empty")
        if len(image) > limit:
            raise ImageTooLargeError(f"image has {len(image)} bytes; at most {limit}")
        modifier = request.modifier
        timings: dict[str, float] = {}
        with _timed(timings, "model"):
            vectors, version = self.serving.embed(
                texts=[] if modifier is None else [modifier], images=[image]
            )
        search = self._composed(version, vectors, request, refine, "image")
        return self._run(search, timings)

    def _similar(self, request: SearchRequest, refine: Refinements) -> SearchResult:
        assert request.product_id is not None
        timings: dict[str, float] = {}
        vectors: list[np.ndarray[Any, Any]] = []
        if request.modifier is not None:
            with _timed(timings, "model"):
                vectors, version = self.serving.embed(texts=[request.modifier])
        else:
            version = self.serving.version()
        with _timed(timings, "database"):
            product = self.catalog.products.get(request.product_id, version)
        if product.embedding is None:
            raise ProductNotEmbeddedError(request.product_id)
        search = self._composed(
            version, [product.embedding, *vectors], request, refine, "similar", image_of=product
        )
        return self._run(search, timings)

    def _composed(
        self,
        version: CatalogVersion,
        vectors: Sequence[np.ndarray[Any, Any]],
        request: SearchRequest,
        refine: Refinements,
        mode: str,
        image_of: Product | None = None,
    ) -> _Search:
        """An image's vector (the first; of the catalog product ``image_of``, which is left
        out), with the modifier's (the second) when there is one; the modifier's attribute
        values are understood, over the image's own (:data:`IMAGE_ATTRIBUTES`)."""
        understood: Understood = {}
        filters: Filters | None = request.filters
        if request.modifier is not None:
            assert refine.understand is not None  # _refinements sets it
            understood, filters = self.reader.understand(
                request.modifier, refine.understand, filters,
                lambda: self._attributes_of_image(version, vectors[0], image_of),
            )  # fmt: skip
        effects = self._effects(refine, request.modifier, understood, filters)
        vector = combine(np.stack(vectors), [1.0, MODIFIER_WEIGHT][: len(vectors)])
        exclude_id = image_of.id if image_of else None
        return _Search(
            version, vector, request.k, effects.redirected(filters), refine, understood, mode,
            exclude_id=exclude_id, signals=self.signals.on, effects=effects,
        )  # fmt: skip

    def _attributes_of_image(
        self, version: CatalogVersion, vector: np.ndarray[Any, Any], product: Product | None
    ) -> Understood:
        """camelCase field -> value of :data:`IMAGE_ATTRIBUTES`: the catalog product's own, or
        what the image's 10 nearest labelled products vote for."""
        if product is None:
            (near,) = self.catalog.vectors.labelled_neighbours(version, [vector], 10)
            voted = vote([n.product for n in near], [n.score for n in near], IMAGE_ATTRIBUTES)
            values = {name: p.value for name, p in voted.items()}
        else:
            values = {name: getattr(product, name) for name in IMAGE_ATTRIBUTES}
        return {to_camel(name): value for name, value in values.items() if value}

    def _candidates(self, search: _Search) -> tuple[list[Neighbor], dict[int, float], bool]:
        """The search's candidates: the ``depth`` nearest, with (boosting) the nearest that
        have every understood value and (hybrid) the title matches; the title matches' ranks;
        and whether the nearest are exact."""
        vectors, version, vector = self.catalog.vectors, search.version, search.vector
        exclude_id = search.exclude_id
        nearest = vectors.nearest(
            version, vector, search.depth, search.filters, exclude_id=exclude_id
        )
        neighbors, exact = nearest.neighbors, nearest.exact
        if search.boosted:
            named = {**search.understood, **(search.filters or {})}
            nearest = vectors.nearest(version, vector, search.depth, named, exclude_id=exclude_id)
            neighbors, exact = neighbors + nearest.neighbors, exact and nearest.exact
        titles = dict(search.titles.result()) if search.titles is not None else {}
        unique = {n.product.id: n for n in neighbors}
        missing = [i for i in titles if i not in unique]
        if missing:
            unique |= {n.product.id: n for n in vectors.of_ids(version, vector, missing)}
        return list(unique.values()), titles, exact

    def _pinned(self, search: _Search) -> dict[int, Neighbor]:
        """The products the rules pin, by position, with their similarity to the query;
        those the search's filters exclude or a rule hides are not."""
        effects = search.effects
        if not effects.pins:
            return {}
        ids = list(effects.pins.values())
        found = {
            n.product.id: n for n in self.catalog.vectors.of_ids(search.version, search.vector, ids)
        }
        return {
            position: found[i]
            for position, i in effects.pins.items()
            if i in found and i != search.exclude_id
            and effects.pinnable(found[i].product, search.filters)
        }  # fmt: skip

    def _run(self, search: _Search, timings: dict[str, float]) -> SearchResult:
        """Candidates gathered, ranked and cut (:func:`~fashion_search.search.ranking.rank`),
        counted, collapsed, grouped by style, the first k kept with their image URLs."""
        effects = search.effects
        with _timed(timings, "database"):
            pool, titles, exact = self._candidates(search)
            pool = [n for n in pool if n.product.id not in effects.hidden]
            pinned = self._pinned(search)
            pinned_ids = {n.product.id for n in pinned.values()}
        stored: Mapping[int, StoredSignals] = {}
        if self.signals.stored and pool:
            with _timed(timings, "signals"):
                ids = [n.product.id for n in pool]
                stored = self.catalog.signals.of(ids, self.signals.popularity_half_life_s)
        with _timed(timings, "ranking"):
            settings = self.settings.search
            min_score = search.refine.min_score
            if min_score is None:
                min_score = search.version.min_score
            plan = RankPlan(
                search.depth, settings.title_weight, settings.understanding_boost, min_score
            )
            understood = search.understood if search.boosted else {}
            candidates = _arrays(pool, titles, understood, stored, self.signals, effects)
            ranking = rank(candidates, plan)
            kept = [int(i) for i in ranking.kept]
            facets = count_facets(pool[i].product for i in kept) if search.refine.facets else None
            groups = (
                collapse(kept, lambda i: pool[i].product.image_fingerprint)
                if search.refine.collapse == "image"
                else [(i, 1) for i in kept]
            )
            organic = [(i, n) for i, n in groups if pool[i].product.id not in pinned_ids]
            styled: list[tuple[tuple[int, int], list[tuple[int, int]]]] = [(g, []) for g in organic]
            if search.refine.group == "style":
                colours = self.reader.vocabulary().colours
                styled = group_by_style(organic, lambda g: pool[g[0]].product, colours)
        explain = search.refine.explain
        with _timed(timings, "urls"):
            hits = [
                Hit(pool[i].product, float(ranking.score[i]), self.image_url(pool[i].product),
                    float(candidates.similarity[i]), count,
                    _explain(ranking.parts, i) if explain else None,
                    tuple(Variant(pool[j].product, self.image_url(pool[j].product))
                          for j, _ in variants))
                for (i, count), variants in styled[: search.k]
            ]  # fmt: skip
            for position, near in sorted(pinned.items()):
                similarity = near.score if near.similarity is None else near.similarity
                hits.insert(
                    min(position, len(hits) + 1) - 1,
                    Hit(near.product, similarity, self.image_url(near.product), similarity,
                        explain={"pinned": float(position)} if explain else None),
                )  # fmt: skip
        return SearchResult(
            hits[: search.k], search.mode, search.version.model_version, timings,
            search.understood, ranking.cut, facets, min_score, ranking.below_cutoff,
            effects.rule_ids, effects.redirect or None, exact=exact,
        )  # fmt: skip


def _arrays(
    pool: list[Neighbor],
    titles: dict[int, float],
    understood: Understood,
    stored: Mapping[int, StoredSignals],
    weights: SignalWeights,
    effects: Effects,
) -> Candidates:
    """The ranking's arrays over ``pool``: similarities, title ranks, how many of the
    ``understood`` values (the boosted ones) each candidate has, its business signals and
    what the rules' boosts and burials add."""
    signals = contributions([n.product for n in pool], stored, weights, datetime.now(UTC))
    if effects.adjustments:
        signals["rules"] = np.array([effects.adjustment(n.product) for n in pool])
    wanted = [(to_snake(name), set(filter_values(value))) for name, value in understood.items()]
    return Candidates(
        ids=np.array([n.product.id for n in pool], dtype=np.int64),
        similarity=np.array(
            [n.score if n.similarity is None else n.similarity for n in pool], dtype=np.float64
        ),
        titled=np.array([n.product.id in titles for n in pool], dtype=bool),
        title=np.array([titles.get(n.product.id, 0.0) for n in pool], dtype=np.float64),
        named=np.array(
            [sum(getattr(n.product, f) in values for f, values in wanted) for n in pool],
            dtype=np.int64,
        ),
        understood=len(wanted),
        signals=signals,
    )


def _explain(parts: Mapping[str, np.ndarray[Any, Any]], index: int) -> dict[str, float]:
    """What each part of a candidate's score contributed, rounded."""
    return {name: round(float(values[index]), 6) for name, values in parts.items()}


def _common(k: int, filters: Filters | None, refine: Refinements | None) -> dict[str, Any]:
    """A request's fields besides what it searches for."""
    return {"k": k, "filters": filters or {}, **dataclasses.asdict(refine or Refinements())}
