"""The search service behind every search function: embed the query, ask the catalog, fuse.

Inputs are checked here, once, for every front end (REST, GraphQL, Lambda, UI); a refused
query raises a typed error from :mod:`fashion_search.errors` and changes nothing.

Each search reads the catalog's serving record, asks the model server to embed with that
version, and compares the query only with that version's embeddings. An answer of another
version (or none, when the server does not hold it) is retried once with the record read
again, then refused with :class:`~fashion_search.errors.ServingVersionUnavailableError`.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np
from pydantic.alias_generators import to_camel, to_snake

from fashion_search.catalog.filters import Filters, check_filters
from fashion_search.catalog.limits import (
    MAX_SIMILARITY,
    MIN_SIMILARITY,
    check_candidates,
    check_k,
    check_text,
)
from fashion_search.catalog.models import Neighbor, Product
from fashion_search.catalog.repositories import Catalog
from fashion_search.catalog.versions import CatalogVersion
from fashion_search.embedding_client import (
    EmbeddingClient,
    Embeddings,
    ModelVersionNotLoadedError,
)
from fashion_search.errors import (
    ImageTooLargeError,
    InvalidArgumentError,
    InvalidImageError,
    ProductNotEmbeddedError,
    ServingVersionUnavailableError,
)
from fashion_search.ingest.classify import vote
from fashion_search.search.collapse import collapse
from fashion_search.search.facets import FacetCounts, count_facets
from fashion_search.search.image_urls import ImageUrls
from fashion_search.search.terms import (
    Term,
    check_terms,
    combine,
    parse_query,
    positive_text,
)
from fashion_search.search.understanding import Understood, Vocabulary
from fashion_search.settings import Settings
from fashion_search.storage import ObjectStore

SearchMode = Literal["vector", "hybrid"]
Collapse = Literal["image"]
Understanding = Literal["off", "boost", "filter"]
#: How many title matches a hybrid search adds to the vector candidates.
HYBRID_CANDIDATES = 50
#: The weight of a composed query's text modifier next to its image (weight 1).
MODIFIER_WEIGHT = 1.5
#: How long the query-understanding vocabulary (the catalog's values) is reused.
VOCABULARY_TTL_S = 60.0
#: What a composed query keeps of its image ("this, but in red": its gender and article type)
#: unless the modifier names another value; understood like the modifier's words.
IMAGE_ATTRIBUTES = ("gender", "article_type", "base_colour")


@dataclass(frozen=True)
class Refinements:
    """What a search does with its ranked candidates besides keeping the first k; None takes
    the setting (``settings.search``)."""

    min_score: float | None = None
    collapse: Collapse | None = None
    facets: bool = False
    candidates: int | None = None
    understand: Understanding | None = None


@dataclass(frozen=True)
class Hit:
    """A search result: the product, its ranking score, its cosine similarity to the query,
    a presigned URL of its image, and how many candidates it stands for (collapse)."""

    product: Product
    score: float
    image_url: str
    similarity: float | None = None
    collapsed: int = 1


@dataclass
class SearchResult:
    """Hits, best first, with the serving model version and where the time went; what the
    query was understood to name, the relevance cutoff and how many candidates it dropped, and
    facet counts over the kept candidates (when asked). ``below_cutoff``: no candidate passed
    the cutoff, so the hits are the nearest ones below it (never an empty page for a query
    the catalog has candidates for)."""

    hits: list[Hit]
    mode: str
    model_version: str | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    understood: Understood = field(default_factory=dict)
    cut: int = 0
    facets: FacetCounts | None = None
    min_score: float | None = None
    below_cutoff: bool = False


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


@dataclass
class _Candidate:
    """A ranked candidate: its score (similarity, then title and understanding boosts), and
    whether the query's words vouch for it (it has every understood value, or matches the
    title search): then it is never cut as weak."""

    product: Product
    score: float
    similarity: float
    vouched: bool = False


class SearchService:
    """Text, image, composed and similar-product search over one catalog, model server and
    store.

    Every search ranks candidates the same way (:meth:`_rank`): the nearest products (fused
    with title matches in hybrid mode), soft boosts for the attribute values the query names,
    the relevance cutoff, facet counts, collapse of identical images, then the first k.
    """

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        store: ObjectStore,
        embedder: EmbeddingClient,
        image_url: ImageUrls | None = None,
        version: str | None = None,
    ) -> None:
        """``version``: search that catalog version (a candidate being calibrated) instead of
        the serving one."""
        self.settings = settings
        self.pinned_version = version
        self.catalog = catalog
        self.store = store
        self.embedder = embedder
        self.image_url = image_url or ImageUrls(settings, store)
        self._lexical = ThreadPoolExecutor(4, thread_name_prefix="title-search")
        self._vocabulary: tuple[float, Vocabulary] | None = None

    def _version(self) -> CatalogVersion:
        """The catalog version searched: the serving one, or the pinned one."""
        versions = self.catalog.versions
        return (
            versions.serving() if self.pinned_version is None else versions.get(self.pinned_version)
        )

    def _embed(
        self, calls: Sequence[tuple[Callable[..., Embeddings], Sequence[str] | Sequence[bytes]]]
    ) -> tuple[list[Embeddings], CatalogVersion]:
        """Each call's inputs embedded by the version the catalog serves, and that version."""
        problem = ""
        for _ in range(2):  # the record may have switched since it was read: once more
            version = self._version()
            try:
                embeddings = [
                    embed(inputs, version=version.model_version) for embed, inputs in calls
                ]
            except ModelVersionNotLoadedError as error:
                problem = str(error)
                continue
            answered = {e.model_version for e in embeddings}
            if answered == {version.model_version}:
                return embeddings, version
            problem = f"the model server answered with version {', '.join(sorted(answered))}"
        raise ServingVersionUnavailableError(
            f"the catalog serves model version {version.model_version}, which the model server"
            f" could not embed with ({problem}); try again shortly"
        )

    def vocabulary(self) -> Vocabulary:
        """The catalog's attribute values for query understanding (re-read every minute)."""
        now = time.monotonic()
        if self._vocabulary is None or now - self._vocabulary[0] > VOCABULARY_TTL_S:
            products = self.catalog.products
            self._vocabulary = (now, Vocabulary.of(products.facets(), products.title_words()))
        return self._vocabulary[1]

    def _check(self, k: int, filters: Filters | None, refine: Refinements | None) -> Refinements:
        """``refine`` with the settings' defaults; typed errors for a bad k, filter or value."""
        check_k(k)
        check_filters(filters)
        refine = refine or Refinements()
        search = self.settings.search
        min_score = search.min_score if refine.min_score is None else refine.min_score
        if min_score is not None and not MIN_SIMILARITY <= min_score <= MAX_SIMILARITY:
            raise InvalidArgumentError(
                f"minScore must be from {MIN_SIMILARITY:g} to {MAX_SIMILARITY:g}, got {min_score}"
            )
        candidates = refine.candidates
        if candidates is None:  # facets count 500; the ranking alone re-ranks fewer
            candidates = search.candidates if refine.facets else search.rerank_candidates
        check_candidates(candidates)
        understand = refine.understand or search.understanding
        if understand not in get_args(Understanding):
            raise InvalidArgumentError(f"understand must be one of {get_args(Understanding)}")
        if refine.collapse not in (None, *get_args(Collapse)):
            raise InvalidArgumentError(f"collapse must be one of {get_args(Collapse)}")
        return Refinements(min_score, refine.collapse, refine.facets, candidates, understand)

    def _text(self, text: str, what: str) -> str:
        text = check_text(text, what).strip()
        if not text:
            raise InvalidArgumentError(f"{what} is empty")
        limit = self.settings.model_server.max_text_chars
        if len(text) > limit:
            raise InvalidArgumentError(f"{what} has {len(text)} characters; at most {limit}")
        return text

    def _understood(
        self,
        text: str,
        refine: Refinements,
        filters: Filters | None,
        known: Callable[[], Understood] | None = None,
    ) -> tuple[Understood, Filters | None]:
        """What ``text`` names (over what ``known`` gives), and the filters (with it, when
        understanding filters)."""
        if refine.understand == "off":
            return {}, filters
        understood = {**(known() if known else {}), **self.vocabulary().understand(text)}
        if refine.understand == "filter" and understood:
            return understood, {**understood, **(filters or {})}
        return understood, filters

    def _rewritten(self, terms: Sequence[Term], refine: Refinements) -> list[Term]:
        """The terms in the catalog's words (synonyms, Spanish and typos read), unless
        understanding is off."""
        if refine.understand == "off":
            return list(terms)
        vocabulary = self.vocabulary()
        return [Term(vocabulary.rewrite(t.text), t.weight) for t in terms]

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
        max_chars = self.settings.model_server.max_text_chars
        parsed = parse_query(self._text(query, "query")) if isinstance(query, str) else query
        terms = check_terms(parsed, max_chars)
        refine = self._check(k, filters, refine)
        mode = mode or self.settings.search.mode
        understood, filters = self._understood(positive_text(terms), refine, filters)
        terms = self._rewritten(terms, refine)
        title_ids: Future[list[tuple[int, float]]] | None = None
        if mode == "hybrid":  # the title search needs no embedding: it runs meanwhile
            negatives = [t.text for t in terms if t.weight < 0]
            title_ids = self._lexical.submit(
                self.catalog.vectors.title_match_ids, positive_text(terms), HYBRID_CANDIDATES,
                filters, negatives,
            )  # fmt: skip
        timings: dict[str, float] = {}
        with _timed(timings, "model"):
            (embedding,), version = self._embed(
                [(self.embedder.embed_texts, [t.text for t in terms])]
            )
        vector = combine(embedding.vectors, [t.weight for t in terms])
        return self._rank(
            version, vector, k, filters, refine, understood, timings, mode, title_ids=title_ids
        )

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
        if not image:
            raise InvalidImageError("image is empty")
        if len(image) > self.settings.search.max_upload_bytes:
            raise ImageTooLargeError(
                f"image has {len(image)} bytes; at most {self.settings.search.max_upload_bytes}"
            )
        refine = self._check(k, filters, refine)
        calls: list[tuple[Callable[..., Embeddings], Sequence[str] | Sequence[bytes]]]
        calls = [(self.embedder.embed_images, [image])]
        if modifier is not None:
            calls.append((self.embedder.embed_texts, [self._text(modifier, "modifier")]))
        timings: dict[str, float] = {}
        with _timed(timings, "model"):
            embeddings, version = self._embed(calls)
        vectors = [e.vectors[0] for e in embeddings]
        return self._composed(version, vectors, modifier, k, filters, refine, timings, "image")

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
        bucket = bucket or self.settings.storage.images_bucket
        allowed = (self.settings.storage.images_bucket, self.settings.storage.uploads_bucket)
        if bucket not in allowed:
            raise InvalidArgumentError(f"bucket must be one of {', '.join(allowed)}")
        limit = self.settings.search.max_upload_bytes
        data = self.store.read(bucket, key, max_bytes=limit).data
        return self.image(data, k, filters, refine, modifier)

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
        refine = self._check(k, filters, refine)
        timings: dict[str, float] = {}
        vectors: list[np.ndarray[Any, Any]] = []
        if modifier is not None:
            with _timed(timings, "model"):
                (embedding,), version = self._embed(
                    [(self.embedder.embed_texts, [self._text(modifier, "modifier")])]
                )
            vectors.append(embedding.vectors[0])
        else:
            version = self._version()
        with _timed(timings, "database"):
            product = self.catalog.products.get(product_id, version)
        if product.embedding is None:
            raise ProductNotEmbeddedError(product_id)
        return self._composed(
            version, [product.embedding, *vectors], modifier, k, filters, refine, timings,
            "similar", image_of=product,
        )  # fmt: skip

    def _composed(
        self,
        version: CatalogVersion,
        vectors: Sequence[np.ndarray[Any, Any]],
        modifier: str | None,
        k: int,
        filters: Filters | None,
        refine: Refinements,
        timings: dict[str, float],
        mode: str,
        image_of: Product | None = None,
    ) -> SearchResult:
        """An image's vector (the first; of the catalog product ``image_of``, which is left
        out), with the modifier's (the second) when there is one, ranked; the modifier's
        attribute values are understood, over the image's own (:data:`IMAGE_ATTRIBUTES`)."""
        understood: Understood = {}
        if modifier is not None:
            understood, filters = self._understood(
                modifier, refine, filters,
                lambda: self._attributes_of_image(version, vectors[0], image_of),
            )  # fmt: skip
        vector = combine(np.stack(vectors), [1.0, MODIFIER_WEIGHT][: len(vectors)])
        exclude_id = image_of.id if image_of else None
        return self._rank(
            version, vector, k, filters, refine, understood, timings, mode, exclude_id=exclude_id
        )

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

    def _depth(self, k: int, refine: Refinements, understood: Understood) -> int:
        """How many ranked candidates a search looks at: k, or the refinements' candidates."""
        boosted = bool(understood) and refine.understand == "boost"
        looks_further = refine.facets or refine.collapse is not None or boosted
        return max(k, refine.candidates or k) if looks_further else k

    def _rank(
        self,
        version: CatalogVersion,
        vector: np.ndarray[Any, Any],
        k: int,
        filters: Filters | None,
        refine: Refinements,
        understood: Understood,
        timings: dict[str, float],
        mode: str,
        title_ids: Future[list[tuple[int, float]]] | None = None,
        exclude_id: int | None = None,
    ) -> SearchResult:
        """Candidates: the ``depth`` nearest, with (boosting) the nearest that have every
        understood value and (hybrid) the title matches; scored by similarity plus the title
        and understanding boosts; cut, counted, collapsed, the first k kept."""
        depth = self._depth(k, refine, understood)
        boosted = refine.understand == "boost" and bool(understood)
        vectors = self.catalog.vectors
        with _timed(timings, "database"):
            neighbors = vectors.nearest(version, vector, depth, filters, exclude_id=exclude_id)
            if boosted:
                named = {**understood, **(filters or {})}
                neighbors += vectors.nearest(version, vector, depth, named, exclude_id=exclude_id)
            titles = dict(title_ids.result()) if title_ids is not None else {}
            pool = {n.product.id: _candidate(n) for n in neighbors}
            missing = [i for i in titles if i not in pool]
            if missing:
                pool |= {
                    n.product.id: _candidate(n) for n in vectors.of_ids(version, vector, missing)
                }
        with _timed(timings, "ranking"):
            ranked = self._scored(list(pool.values()), understood if boosted else {}, titles)
            ranked = ranked[: max(depth, len(titles))]  # the first candidates of the ranking
            min_score = refine.min_score if refine.min_score is not None else version.min_score
            kept = [
                c for c in ranked if min_score is None or c.similarity >= min_score or c.vouched
            ]
            below_cutoff = bool(ranked) and not kept
            if below_cutoff:  # nothing close: the nearest, marked as such, not an empty page
                kept = ranked
            facets = count_facets(c.product for c in kept) if refine.facets else None
            groups = _collapsed(kept) if refine.collapse == "image" else [(c, 1) for c in kept]
        with _timed(timings, "urls"):
            hits = [
                Hit(c.product, c.score, self.image_url(c.product), c.similarity, n)
                for c, n in groups[:k]
            ]
        return SearchResult(
            hits, mode, version.model_version, timings, understood,
            0 if below_cutoff else len(ranked) - len(kept), facets, min_score, below_cutoff,
        )  # fmt: skip

    def _scored(
        self, pool: list[_Candidate], understood: Understood, titles: dict[int, float]
    ) -> list[_Candidate]:
        """Candidates by score, best first: cosine similarity, plus ``title_weight`` times a
        title match's rank relative to the best title match (hybrid), plus
        ``understanding_boost`` for each understood value a candidate has; vouched for when it
        matches the title search or has every understood value."""
        search = self.settings.search
        best_title = max(titles.values(), default=0.0)
        wanted = {
            to_snake(name): {value} if isinstance(value, str) else set(value)
            for name, value in understood.items()
        }
        for c in pool:
            c.score = c.similarity
            if best_title > 0 and c.product.id in titles:
                c.score += search.title_weight * titles[c.product.id] / best_title
            named = sum(getattr(c.product, f) in values for f, values in wanted.items())
            c.score += search.understanding_boost * named
            c.vouched = c.product.id in titles or (bool(wanted) and named == len(wanted))
        return sorted(pool, key=lambda c: (-c.score, c.product.id))


def _candidate(neighbor: Neighbor) -> _Candidate:
    similarity = neighbor.score if neighbor.similarity is None else neighbor.similarity
    return _Candidate(neighbor.product, similarity, similarity)


def _collapsed(pool: list[_Candidate]) -> list[tuple[_Candidate, int]]:
    """The best candidate of each group of near-identical images, with the group's size."""
    return collapse(pool, lambda c: c.product.image_fingerprint)
