"""``process_train_test_dataset``: a deterministic train/test split stratified by articleType,
stored as versioned parquet + manifest in the datasets bucket and logged to MLflow."""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from fashion_search.catalog.models import ProductFields
from fashion_search.dataset import iter_dataset
from fashion_search.errors import DatasetError
from fashion_search.settings import Settings
from fashion_search.storage import ObjectStore

SPLITS = ("train", "test")


@dataclass(frozen=True)
class SplitManifest:
    """What a stored split holds and how it was made."""

    version: str
    source: str
    limit: int | None
    test_percent: int
    seed: int
    counts: dict[str, int]
    article_types: dict[str, dict[str, int]]  # articleType -> split -> products
    files: dict[str, str]  # split -> s3 path

    @staticmethod
    def key(version: str, name: str = "manifest.json") -> str:
        """Key of a split's file in the datasets bucket."""
        return f"splits/{version}/{name}"


def assign_splits(
    products: list[tuple[ProductFields, bytes]], test_percent: int, seed: int
) -> dict[int, str]:
    """Product id -> "train"/"test": in each articleType, the ``test_percent`` share of
    products whose (seeded) image hash is smallest is test, so byte-identical images land
    together and the result depends only on the data, the share and the seed."""
    if not 0 < test_percent < 100:
        raise DatasetError(f"test_percent must be 1..99, got {test_percent}")
    by_class: dict[str | None, list[tuple[str, int]]] = defaultdict(list)
    for fields, image in products:
        digest = hashlib.sha1(f"{seed}:".encode() + image).hexdigest()
        by_class[fields.article_type].append((digest, fields.id))
    assignment = {}
    for members in by_class.values():
        members.sort()
        n_test = round(len(members) * test_percent / 100)
        for rank, (_, product_id) in enumerate(members):
            assignment[product_id] = "test" if rank < n_test else "train"
    return assignment


def make_split(
    settings: Settings,
    source: str,
    limit: int | None = None,
    test_percent: int = 20,
    seed: int = 0,
    experiment: str = "fashion-datasets",
) -> SplitManifest:
    """Split ``source`` (first ``limit`` rows), store it, log it to MLflow; idempotent: the
    same inputs give the same version, whose files are simply written again."""
    import mlflow

    from fashion_search.model.registry import configure_mlflow

    products = [(item.fields, item.image) for item in iter_dataset(source, limit=limit)]
    if not products:
        raise DatasetError(f"{source} has no products")
    assignment = assign_splits(products, test_percent, seed)
    fingerprint = hashlib.sha256(
        json.dumps(sorted(assignment.items())).encode() + f"{test_percent}:{seed}".encode()
    ).hexdigest()
    version = fingerprint[:12]
    rows = [{**fields.model_dump(), "split": assignment[fields.id]} for fields, _ in products]
    table = pa.Table.from_pylist(rows)
    store = ObjectStore(settings)
    store.ensure_buckets([settings.storage.datasets_bucket])
    files = {}
    for split in SPLITS:
        part = table.filter(pa.compute.equal(table["split"], split))
        buffer = io.BytesIO()
        pq.write_table(part, buffer)
        key = SplitManifest.key(version, f"{split}.parquet")
        store.put(
            settings.storage.datasets_bucket, key, buffer.getvalue(), "application/octet-stream"
        )
        files[split] = f"s3://{settings.storage.datasets_bucket}/{key}"
    per_class: dict[str, Counter[str]] = defaultdict(Counter)
    for fields, _ in products:
        per_class[fields.article_type or ""][assignment[fields.id]] += 1
    manifest = SplitManifest(
        version=version,
        source=source,
        limit=limit,
        test_percent=test_percent,
        seed=seed,
        counts=dict(Counter(assignment.values())),
        article_types={k: dict(v) for k, v in sorted(per_class.items())},
        files=files,
    )
    store.put(settings.storage.datasets_bucket, SplitManifest.key(version),
              json.dumps(asdict(manifest), indent=2).encode(), "application/json")  # fmt: skip
    configure_mlflow(settings)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=f"split-{version}"):
        mlflow.log_params({"version": version, "source": source, "limit": limit,
                           "test_percent": test_percent, "seed": seed})  # fmt: skip
        mlflow.log_metrics({f"{split}_products": n for split, n in manifest.counts.items()})
        frame = table.to_pandas()
        for split in SPLITS:
            dataset = mlflow.data.from_pandas(
                frame[frame["split"] == split], source=files[split], name=f"{version}-{split}"
            )
            mlflow.log_input(dataset, context=split)
    return manifest


def load_manifest(settings: Settings, version: str) -> SplitManifest:
    """A stored split's manifest."""
    data: dict[str, Any] = json.loads(
        ObjectStore(settings).get(settings.storage.datasets_bucket, SplitManifest.key(version))
    )
    return SplitManifest(**data)


def split_ids(settings: Settings, version: str) -> dict[str, set[int]]:
    """Split name -> product ids of a stored split."""
    store = ObjectStore(settings)
    result = {}
    for split in SPLITS:
        data = store.get(
            settings.storage.datasets_bucket, SplitManifest.key(version, f"{split}.parquet")
        )
        result[split] = set(pq.read_table(io.BytesIO(data), columns=["id"])["id"].to_pylist())
    return result
