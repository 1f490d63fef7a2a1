"""Turn object-created events into classified catalog products (the bucket-event function's core).

Per batch: skip versions already processed, read and check every object, embed the images in
one model-server call with the catalog's serving model version and in one call with each other
live version (a rollout's candidate, or the version a rollback would return to), label each
image from its nearest labelled catalog products of the serving version (a duplicate's labels,
else their vote: :mod:`fashion_search.ingest.classify`), copy the
image into the images bucket and store the product idempotently on (bucket, key, ETag) with its
embeddings, only while that ETag is still the object's (so the newest version always wins). A
switch of the serving version in the meantime makes the events it touched run once more.

An event that can never succeed (another bucket, its object gone, not an image, too large)
ends as a :class:`Failure` with a reason. A dependency's error (database, object store, model
server; see :mod:`fashion_search.faults`) propagates, so that the caller retries the batch.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from PIL import Image
from pydantic.alias_generators import to_camel

from fashion_search.catalog.models import Neighbor, Product, UploadedProduct
from fashion_search.catalog.repositories import Catalog
from fashion_search.catalog.versions import CatalogVersion
from fashion_search.embedding_client import (
    Array,
    EmbeddingClient,
    EmbeddingRequestError,
    ModelServerUnavailableError,
    ModelVersionNotLoadedError,
)
from fashion_search.errors import (
    ImageTooLargeError,
    InvalidImageError,
    NoServingVersionError,
    ObjectChangedError,
    ObjectNotFoundError,
    ServingVersionChangedError,
)
from fashion_search.ingest.classify import PREDICTED_LABELS, predict_labels
from fashion_search.ingest.events import ObjectCreated, ObjectRemoved
from fashion_search.ingest.messages import ClassifiedProduct, Status, UploadProcessed
from fashion_search.model.fingerprint import fingerprint_bytes
from fashion_search.model.preprocess import decode_image
from fashion_search.settings import Settings
from fashion_search.storage import ObjectStore, StoredObject

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Failure:
    """An event given up on: a stable reason slug and the error text."""

    reason: str
    error: str


Outcome = UploadProcessed | Failure


class _Switched:
    """An event to process again: the serving version switched while it was embedded."""


_SWITCHED = _Switched()


def upload_image_key(event: ObjectCreated) -> str:
    """Key of an uploaded object's copy in the images bucket (one per object version)."""
    digest = hashlib.sha256(f"{event.bucket}/{event.key}/{event.etag}".encode()).hexdigest()
    return f"uploads/{digest[:32]}"


class UploadProcessor:
    """Processes batches of object-created events."""

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        store: ObjectStore,
        embedder: EmbeddingClient,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.store = store
        self.embedder = embedder
        self._io = ThreadPoolExecutor(8, thread_name_prefix="ingest-io")

    def remove(self, event: ObjectRemoved) -> UploadProcessed:
        """The product of a deleted upload leaves the catalog (and search), unless the key holds
        an object again (uploaded anew after the delete: its own event made or makes it).
        Another bucket's removal leaves nothing (no product is made from it, and the ingest
        user may not even look into that bucket)."""
        if event.bucket != self.settings.storage.uploads_bucket:
            return UploadProcessed(
                bucket=event.bucket, key=event.key, e_tag="", status="removed", results=[]
            )
        removed = self.catalog.uploads.remove_upload(
            event.bucket, event.key, lambda: self.store.etag(event.bucket, event.key) is None
        )
        if removed == "superseded":
            return UploadProcessed(
                bucket=event.bucket, key=event.key, e_tag="", status="superseded", results=[]
            )
        results = [] if removed is None else [_result(event, removed, {})]
        return UploadProcessed(
            bucket=event.bucket, key=event.key, e_tag="", status="removed", results=results
        )

    def process(self, events: Sequence[ObjectCreated]) -> list[Outcome]:
        """One outcome per event, in order."""
        outcomes = self._process(events)
        again = [i for i, outcome in enumerate(outcomes) if isinstance(outcome, _Switched)]
        if again:  # the serving version switched while they were embedded: once more
            log.info("serving version switched during the batch: %d events again", len(again))
            for index, outcome in zip(
                again, self._process([events[i] for i in again]), strict=True
            ):
                if isinstance(outcome, _Switched):
                    raise ServingVersionChangedError(self.catalog.versions.serving().model_version)
                outcomes[index] = outcome
        return [o for o in outcomes if not isinstance(o, _Switched)]

    def _process(self, events: Sequence[ObjectCreated]) -> list[Outcome | _Switched]:
        events = list(events)
        outcomes: dict[int, Outcome | _Switched] = {}
        todo = []
        known = {
            (bucket, key): product
            for bucket in {e.bucket for e in events}
            for key, product in self.catalog.uploads.uploaded_products(
                bucket, [e.key for e in events if e.bucket == bucket]
            ).items()
        }
        for index, event in enumerate(events):
            stored = known.get((event.bucket, event.key))
            if event.bucket != self.settings.storage.uploads_bucket:
                outcomes[index] = Failure(
                    "foreign-bucket",
                    f"s3://{event.bucket}/{event.key}: uploads are taken from"
                    f" {self.settings.storage.uploads_bucket} only",
                )
            elif stored is not None and stored[1] == event.etag:
                outcomes[index] = _processed(event, "duplicate", stored[0], stored[2])
            else:
                todo.append(index)
        objects: dict[int, StoredObject] = {}
        reads = self._io.map(lambda i: self._read(events[i]), todo)
        for index, read in zip(todo, reads, strict=True):
            if isinstance(read, StoredObject):
                objects[index] = read
                events[index] = replace(events[index], etag=events[index].etag or read.etag)
            else:
                outcomes[index] = read
        live = self.catalog.versions.live()
        if not live or live[0].state != "serving":
            raise NoServingVersionError("the catalog serves no model version yet")
        serving, *others = live
        images = {i: o.data for i, o in objects.items()}
        embedded: dict[int, dict[str, Array]] = {}
        for index, result in self._embed(images, serving.model_version).items():
            if isinstance(result, Failure):
                outcomes[index] = result
            else:
                embedded[index] = {serving.model_version: result}
        for version in others:
            for index, vector in self._embed_also({i: images[i] for i in embedded}, version):
                embedded[index][version.model_version] = vector
        neighbours = self.catalog.vectors.labelled_neighbours(
            serving,
            [vectors[serving.model_version] for vectors in embedded.values()],
            self.settings.ingest.neighbours,
        )
        stored_outcomes = self._io.map(
            lambda item: self._store(
                events[item[0]], objects[item[0]], serving.model_version, embedded[item[0]],
                item[1],
            ),
            zip(embedded, neighbours, strict=True),
        )  # fmt: skip
        outcomes.update(zip(embedded, stored_outcomes, strict=True))
        return [outcomes[i] for i in range(len(events))]

    def _read(self, event: ObjectCreated) -> StoredObject | Outcome:
        try:
            obj = self.store.read(
                event.bucket,
                event.key,
                event.etag or None,
                self.settings.model_server.max_image_bytes,
            )
            image = decode_image(obj.data, self.settings.model_server.max_image_pixels)
        except ObjectNotFoundError as error:
            return Failure("object-not-found", str(error))
        except ObjectChangedError:
            return _superseded(event)
        except ImageTooLargeError as error:
            return Failure("too-large", str(error))
        except InvalidImageError as error:
            return Failure("not-an-image", f"s3://{event.bucket}/{event.key}: {error}")
        # The copy in the images bucket is served to browsers: its type is the decoded image's,
        # never the one the uploader claimed.
        return replace(obj, content_type=Image.MIME.get(image.format or "", ""))

    def _embed(self, images: dict[int, bytes], version: str) -> dict[int, Array | Failure]:
        """Embed with ``version`` in one call; when the server refuses the batch, one by one to
        isolate why. The server down, overloaded or still loading ``version`` raises."""
        if not images:
            return {}
        try:
            result = self.embedder.embed_images(list(images.values()), version)
        except ModelVersionNotLoadedError:
            raise  # a transient state of the server, not a fault of these images
        except EmbeddingRequestError as error:
            if len(images) == 1:
                return {i: Failure("rejected-by-model-server", str(error)) for i in images}
            return {
                k: v
                for i, data in images.items()
                for k, v in self._embed({i: data}, version).items()
            }
        return dict(zip(images, result.vectors, strict=True))

    def _embed_also(
        self, images: dict[int, bytes], version: CatalogVersion
    ) -> list[tuple[int, Array]]:
        """Embeddings by a live version besides the serving one, in one call; none when the
        model server cannot give them (the rollout that builds the version embeds what is
        missing before it switches)."""
        if not images:
            return []
        try:
            result = self.embedder.embed_images(list(images.values()), version.model_version)
        except (ModelServerUnavailableError, EmbeddingRequestError) as error:
            log.warning("uploads not embedded by version %s: %s", version.model_version, error)
            return []
        return list(zip(images, result.vectors, strict=True))

    def _store(
        self,
        event: ObjectCreated,
        obj: StoredObject,
        model_version: str,
        embeddings: dict[str, Array],
        neighbours: list[Neighbor],
    ) -> UploadProcessed | _Switched:
        image_print = fingerprint_bytes(obj.data, self.settings.model_server.max_image_pixels)
        predicted = predict_labels(
            neighbours, self.settings.ingest.label_rule, image_fingerprint=image_print
        )
        labels = {label: p.value for label, p in predicted.items()}
        confidence = {to_camel(label): round(p.confidence, 4) for label, p in predicted.items()}
        image_key = upload_image_key(event)
        try:
            self.store.copy(
                event.bucket, event.key, self.settings.storage.images_bucket, image_key,
                if_match=event.etag, content_type=obj.content_type or "application/octet-stream",
            )  # fmt: skip
        except (ObjectChangedError, ObjectNotFoundError):
            return _superseded(event)  # a newer version (or a delete) came since the read
        upload = UploadedProduct(
            source_bucket=event.bucket,
            source_key=event.key,
            source_etag=event.etag,
            labels=labels,
            confidence=confidence,
            product_display_name=_title(obj, labels),
            image_key=image_key,
            image_fingerprint=image_print,
            model_version=model_version,
            embeddings=embeddings,
        )
        try:
            saved = self.catalog.uploads.save_upload(
                upload, lambda: self.store.etag(event.bucket, event.key) == event.etag
            )
        except ServingVersionChangedError:
            return _SWITCHED
        if saved == "superseded":
            return _superseded(event)
        product_id, status = saved
        if status == "duplicate":  # a concurrent delivery stored it first: report what is stored
            product, _, confidence = self.catalog.uploads.uploaded_products(
                event.bucket, [event.key]
            )[event.key]
            return _processed(event, status, product, confidence)
        product = Product(
            id=product_id, product_display_name=upload.product_display_name, image_key=image_key,
            model_version=model_version, **labels,
        )  # fmt: skip
        return _processed(event, status, product, confidence)


def _title(obj: StoredObject, labels: dict[str, str | None]) -> str:
    """The uploader's ``title`` metadata, else "{baseColour} {articleType}"."""
    given = obj.metadata.get("title", "").strip()
    if given:
        return given[:1000]
    words = [labels.get("base_colour"), labels.get("article_type")]
    return " ".join(w for w in words if w) or "Uploaded product"


def _superseded(event: ObjectCreated) -> UploadProcessed:
    return UploadProcessed(
        bucket=event.bucket, key=event.key, e_tag=event.etag, status="superseded", results=[]
    )


def _processed(
    event: ObjectCreated, status: Status, product: Product, confidence: dict[str, float]
) -> UploadProcessed:
    return UploadProcessed(
        bucket=event.bucket,
        key=event.key,
        e_tag=event.etag,
        status=status,
        results=[_result(event, product, confidence)],
    )


def _result(
    event: ObjectCreated | ObjectRemoved, product: Product, confidence: dict[str, float]
) -> ClassifiedProduct:
    return ClassifiedProduct(
        id=product.id,
        filename=event.key.rsplit("/", 1)[-1],
        s3_path=event.s3_path,
        labels={name: getattr(product, name) for name in PREDICTED_LABELS},
        confidence=confidence,
        model_version=product.model_version,
    )
