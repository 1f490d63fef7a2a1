"""Labels of uploads on the running catalog (``make up``: the whole catalog embedded by the
served model): how often the predicted articleType, baseColour (and the other labels) are
right for uploads of

- exact duplicates: catalog photos uploaded again, byte for byte;
- near duplicates: the same photos flipped, re-encoded (JPEG quality 50) or cropped (the
  central 85%, scaled back);
- held-out products: the test split's photos, with every test product kept out of the voters;

before (the similarity-weighted vote of 10 neighbours) and after (a duplicate's labels at
cosine >= FS_INGEST_DUPLICATE_SIMILARITY, else a softmax vote at FS_INGEST_VOTE_TEMPERATURE).
The temperature is chosen on one half of the held-out products and reported on the other;
the duplicate threshold by what it catches of near duplicates and wrongly takes of held-out
products:

    .venv/bin/python -m bench.labels --markdown docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import io
import random
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageOps

from bench.report import Report, Table, add_markdown_option
from fashion_search.catalog.db import create_pool
from fashion_search.catalog.models import Neighbor, ProductFields
from fashion_search.catalog.repositories import Catalog
from fashion_search.dataset import iter_dataset
from fashion_search.embedding_client import EmbeddingClient
from fashion_search.ingest.classify import LabelRule, duplicate_of, predict_labels
from fashion_search.model.data import in_test_split
from fashion_search.model.fingerprint import fingerprint_bytes
from fashion_search.settings import get_settings

LABELS = ("article_type", "base_colour", "master_category", "sub_category", "gender")
BEFORE = LabelRule(duplicate_similarity=2.0, temperature=0.0)  # never a duplicate, linear vote
TEMPERATURES = (0.0, 0.1, 0.05, 0.02, 0.01, 0.005)
THRESHOLDS = (0.9, 0.95, 0.97, 0.98, 0.99)
#: Each upload's product, its nearest labelled catalog products, and its image fingerprint.
Case = list[tuple[ProductFields, list[Neighbor], bytes]]


def _jpeg(image: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=quality)
    return out.getvalue()


def flipped(data: bytes) -> bytes:
    return _jpeg(ImageOps.mirror(Image.open(io.BytesIO(data))), 95)


def reencoded(data: bytes) -> bytes:
    return _jpeg(Image.open(io.BytesIO(data)), 50)


def cropped(data: bytes) -> bytes:
    image = Image.open(io.BytesIO(data))
    w, h = image.size
    box = (round(w * 0.075), round(h * 0.075), round(w * 0.925), round(h * 0.925))
    return _jpeg(image.crop(box).resize((w, h)), 95)


CHANGES: dict[str, Callable[[bytes], bytes]] = {
    "exact duplicate": lambda data: data,
    "flipped": flipped,
    "re-encoded": reencoded,
    "cropped": cropped,
}


def neighbours_of(
    catalog: Catalog,
    client: EmbeddingClient,
    products: Sequence[tuple[ProductFields, bytes]],
    k: int,
    exclude: set[int],
) -> Case:
    """Each upload's product, its k nearest labelled catalog products (not ``exclude``) and its
    image fingerprint."""
    version = catalog.versions.serving()
    out: Case = []
    for start in range(0, len(products), 64):
        batch = products[start : start + 64]
        vectors = client.embed_images([image for _, image in batch], version.model_version).vectors
        near = catalog.vectors.labelled_neighbours(version, vectors, k, exclude)
        out += [
            (fields, n, fingerprint_bytes(image))
            for (fields, image), n in zip(batch, near, strict=True)
        ]
    return out


def accuracy(case: Case, rule: LabelRule, fingerprints: bool = False) -> dict[str, float]:
    """Share of uploads whose label is right, per label (``fingerprints``: near-identical
    fingerprints make duplicates too, as ingestion does)."""
    right = dict.fromkeys(LABELS, 0)
    for fields, near, image_print in case:
        found = predict_labels(near, rule, LABELS, image_print if fingerprints else None)
        for label, prediction in found.items():
            right[label] += prediction.value == getattr(fields, label)
    return {label: n / max(len(case), 1) for label, n in right.items()}


def duplicates(
    case: Case, threshold: float, fingerprints: bool = False
) -> list[tuple[ProductFields, Neighbor]]:
    """The uploads taken as duplicates, each with the product it copies: the nearest labelled
    product at least ``threshold`` similar (or, with ``fingerprints``, one with a
    near-identical fingerprint)."""
    rule = LabelRule(threshold, 0.0)
    found = (
        (fields, duplicate_of(near, rule, image_print if fingerprints else None))
        for fields, near, image_print in case
    )
    return [(fields, original) for fields, original in found if original is not None]


def main() -> None:
    """Measure and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--uploads", type=int, default=400, help="uploads per case")
    parser.add_argument("--neighbours", type=int, default=10)
    add_markdown_option(parser)
    args = parser.parse_args()
    settings = get_settings()
    report = Report("bench.labels")
    rng = random.Random(0)
    items = [(i.fields, i.image) for i in iter_dataset(settings.dataset_source)]
    held_out = [(f, image) for f, image in items if in_test_split(image)]
    held_ids = {f.id for f, _ in held_out}
    catalog_photos = rng.sample([p for p in items if p[0].id not in held_ids], args.uploads)
    tune, report_on = held_out[::2], held_out[1::2]
    tune, report_on = rng.sample(tune, args.uploads), rng.sample(report_on, args.uploads)
    with create_pool(settings) as pool, EmbeddingClient(settings.model_server.address) as client:
        catalog = Catalog.of(pool)
        info = client.info()
        report.add(
            f"{len(items)} products, {len(held_out)} held out; model {info.registry_name}"
            f" v{info.registry_version} ({info.model_name}); {args.uploads} uploads per case,"
            f" {args.neighbours} neighbours"
        )
        k = args.neighbours
        cases = {
            name: neighbours_of(
                catalog, client, [(f, change(b)) for f, b in catalog_photos], k, held_ids
            )
            for name, change in CHANGES.items()
        }
        tuning = neighbours_of(catalog, client, tune, k, held_ids)
        cases["held-out product"] = neighbours_of(catalog, client, report_on, k, held_ids)

    sweep = Table(
        "Vote temperature on held-out products (tuning half; accuracy)",
        ["temperature", "articleType", "baseColour", "masterCategory", "subCategory", "gender"],
    )
    scores = {}
    for t in TEMPERATURES:
        acc = accuracy(tuning, LabelRule(2.0, t))
        scores[t] = acc["article_type"] + acc["base_colour"]
        sweep.rows.append([str(t or "linear"), *(round(acc[label], 3) for label in LABELS)])
    report.add(sweep)
    best = max(TEMPERATURES, key=lambda t: scores[t])
    gain = (scores[best] - scores[0.0]) * 100
    report.add(
        f"best on the tuning half (articleType + baseColour): {best or 'linear'}, {gain:.1f}"
        " points over linear (FS_INGEST_VOTE_TEMPERATURE)"
    )

    near_cases = [cases[name] for name in ("flipped", "re-encoded", "cropped")]
    thresholds = Table(
        "Duplicate rule: share taken as duplicates (near duplicates; held-out products,"
        " tuning half, wrongly), and accuracy with the rule",
        ["duplicate when", "flipped", "re-encoded", "cropped", "held-out", "held-out copied right",
         "held-out articleType", "baseColour", "flipped articleType", "baseColour"],
    )  # fmt: skip
    shipped = settings.ingest.duplicate_similarity
    rules = [(f"cosine >= {t}", t, False) for t in THRESHOLDS]
    rules += [(f"cosine >= {shipped} or fingerprint", shipped, True), ("never", 2.0, False)]
    for name, threshold, fingerprints in rules:
        taken = duplicates(tuning, threshold, fingerprints)
        copied = sum(o.product.article_type == f.article_type for f, o in taken)
        rule = LabelRule(threshold, settings.ingest.vote_temperature)
        held = accuracy(tuning, rule, fingerprints)
        flip = accuracy(cases["flipped"], rule, fingerprints)
        thresholds.rows.append([
            name,
            *(round(len(duplicates(c, threshold, fingerprints)) / len(c), 3) for c in near_cases),
            round(len(taken) / len(tuning), 3), f"{copied}/{len(taken)}",
            *(round(a[x], 3) for a in (held, flip) for x in ("article_type", "base_colour")),
        ])  # fmt: skip
    report.add(thresholds)

    after = LabelRule(shipped, settings.ingest.vote_temperature)
    table = Table(
        f"Upload labels, before (linear vote) and after (duplicate at cosine >= {shipped} or a"
        f" near-identical fingerprint, vote temperature {after.temperature or 'linear'})",
        ["uploads", "articleType before", "after", "baseColour before", "after",
         "subCategory before", "after", "gender before", "after"],
    )  # fmt: skip
    for name, case in cases.items():
        b, a = accuracy(case, BEFORE), accuracy(case, after, fingerprints=True)
        table.rows.append([
            name, *(round(x, 3) for label in ("article_type", "base_colour", "sub_category",
                                               "gender") for x in (b[label], a[label]))
        ])  # fmt: skip
    report.add(table)
    sims = np.array([n[0].score for _, n, _ in cases["held-out product"] if n])
    report.add(
        f"nearest labelled product of a held-out upload: cosine p50 {np.median(sims):.3f},"
        f" p95 {np.percentile(sims, 95):.3f}, max {sims.max():.3f}"
    )
    report.write_markdown(args.markdown)


if __name__ == "__main__":
    main()
