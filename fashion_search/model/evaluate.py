"""Retrieval and classification metrics on a held-out split (one function for training runs,
the DAGs and the benchmarks).

- title -> image: each distinct product title is a query; relevant images are the products
  with that title. Recall@1, Recall@10, MRR.
- attribute queries: ``"{gender} {baseColour} {articleType}"`` (the training phrasing) and
  ``"{baseColour} {articleType} for {gender}"`` (unseen) -> Precision@10, relevant when all
  three attributes match; one query per combination with at least 10 matching test products
  (so a perfect ranking scores 1).
- kNN-10 classification of masterCategory, articleType and baseColour from the train split's
  image embeddings (similarity-weighted vote), and the mean confidence of the articleType vote
  (``knn_article_type_confidence``: the baseline retraining's drift check compares uploads
  with).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from fashion_search.catalog.models import ProductFields
from fashion_search.catalog.vote import vote
from fashion_search.learning.judged_queries import answerable, evaluate_judged, judged_queries
from fashion_search.model.data import TRAINING_PHRASING, ProductImages, attribute_text
from fashion_search.model.embed import embed_images, embed_texts
from fashion_search.model.factory import Clip

Array = np.ndarray[Any, np.dtype[np.float32]]
TextEmbedder = Callable[[list[str]], Array]
SEEN_PHRASING = TRAINING_PHRASING
UNSEEN_PHRASING = "{c} {a} for {g}"
KNN_LABELS = ("master_category", "article_type", "base_colour")
#: The metric retraining's drift check compares the confidence of recent uploads with.
DRIFT_BASELINE = "knn_article_type_confidence"


def _top_k(queries: Array, keys: Array, k: int) -> np.ndarray[Any, Any]:
    """Indices of the k best keys per query, best first (chunked to bound memory)."""
    out = []
    for start in range(0, len(queries), 1024):
        scores = queries[start : start + 1024] @ keys.T
        part = np.argpartition(-scores, min(k, keys.shape[0] - 1), axis=1)[:, :k]
        order = np.take_along_axis(scores, part, axis=1).argsort(axis=1)[:, ::-1]
        out.append(np.take_along_axis(part, order, axis=1))
    return np.concatenate(out) if out else np.zeros((0, k), int)


def title_retrieval(
    embed_text: TextEmbedder, images: Array, fields: Sequence[ProductFields]
) -> dict[str, float]:
    """Recall@1, Recall@10 and MRR of product titles as queries."""
    by_title: dict[str, list[int]] = defaultdict(list)
    for i, f in enumerate(fields):
        by_title[f.product_display_name].append(i)
    titles = sorted(by_title)
    queries = embed_text(titles)
    ranks = np.empty(len(titles))
    for start in range(0, len(titles), 1024):
        scores = queries[start : start + 1024] @ images.T
        for row, title in enumerate(titles[start : start + 1024]):
            best = scores[row, by_title[title]].max()
            ranks[start + row] = 1 + np.count_nonzero(scores[row] > best)
    return {
        "title_r1": float(np.mean(ranks <= 1)),
        "title_r10": float(np.mean(ranks <= 10)),
        "title_mrr": float(np.mean(1.0 / ranks)),
        "title_queries": float(len(titles)),
    }


def attribute_precision(
    embed_text: TextEmbedder,
    images: Array,
    fields: Sequence[ProductFields],
    template: str,
    min_relevant: int = 10,
) -> float:
    """Mean Precision@10 of attribute queries written with ``template``."""
    keys = [(f.gender, f.base_colour, f.article_type) for f in fields]
    counts = Counter(k for k in keys if all(k))
    combos = sorted(k for k, n in counts.items() if n >= min_relevant)
    if not combos:
        return 0.0
    texts = [attribute_text(g, c, a, template) for g, c, a in combos]
    top = _top_k(embed_text(texts), images, 10)
    key_array = np.array(keys, dtype=object)
    precisions = [
        np.mean([tuple(key_array[j]) == combo for j in top[q]]) for q, combo in enumerate(combos)
    ]
    return float(np.mean(precisions))


def knn_accuracy(
    test_images: Array,
    test_fields: Sequence[ProductFields],
    train_images: Array,
    train_fields: Sequence[ProductFields],
    k: int = 10,
) -> dict[str, float]:
    """Accuracy of a similarity-weighted kNN vote for each label in KNN_LABELS, and the mean
    confidence of the articleType vote."""
    top = _top_k(test_images, train_images, k)
    scores = np.take_along_axis(test_images @ train_images.T, top, axis=1) if len(top) else top
    correct: Counter[str] = Counter()
    confidence = 0.0
    for row, neighbours in enumerate(top):
        predicted = vote([train_fields[j] for j in neighbours], scores[row].tolist(), KNN_LABELS)
        correct.update(
            label
            for label, prediction in predicted.items()
            if prediction.value == getattr(test_fields[row], label)
        )
        confidence += predicted["article_type"].confidence
    n = max(len(top), 1)
    return {
        **{f"knn_{label}": correct[label] / n for label in KNN_LABELS},
        DRIFT_BASELINE: confidence / n,
    }


#: A judged query counts on a held-out split with at least this many relevant products.
JUDGED_MIN_RELEVANT = 3


def judged_precision(
    embed_text: TextEmbedder, images: Array, fields: Sequence[ProductFields]
) -> dict[str, float]:
    """Mean P@10 of the judged queries (:mod:`fashion_search.learning.judged_queries`) by the
    model alone over ``images``: all of them, and those outside the catalog's vocabulary."""
    asked = answerable(judged_queries(), fields, JUDGED_MIN_RELEVANT)
    if not asked:
        return {}
    queries = [q for q, _ in asked]
    top = _top_k(embed_text([q.text for q in queries]), images, 10)
    ranked = {q.text: [fields[j] for j in row] for q, row in zip(queries, top, strict=True)}
    totals = {q.text: n for q, n in asked}
    groups = evaluate_judged(ranked.__getitem__, queries, lambda q: totals[q.text])
    return {
        "judged_p10": groups["all"]["p10"],
        "judged_p10_outside": groups.get("outside", {}).get("p10", 0.0),
        "judged_queries": groups["all"]["queries"],
    }


def evaluate_embeddings(
    embed_text: TextEmbedder,
    test_images: Array,
    test_fields: Sequence[ProductFields],
    train_images: Array | None = None,
    train_fields: Sequence[ProductFields] | None = None,
) -> dict[str, float]:
    """Every metric, from image embeddings and a text embedder (PyTorch or ONNX)."""
    metrics = title_retrieval(embed_text, test_images, test_fields)
    metrics["attr_p10_seen"] = attribute_precision(
        embed_text, test_images, test_fields, SEEN_PHRASING
    )
    metrics["attr_p10_unseen"] = attribute_precision(
        embed_text, test_images, test_fields, UNSEEN_PHRASING
    )
    metrics.update(judged_precision(embed_text, test_images, test_fields))
    if train_images is not None and train_fields is not None and len(train_fields):
        metrics.update(knn_accuracy(test_images, test_fields, train_images, train_fields))
    return metrics


def evaluate(
    clip: Clip,
    test: ProductImages,
    train: ProductImages | None = None,
    image_embeddings: tuple[Array, Array | None] | None = None,
) -> dict[str, float]:
    """Every metric of a PyTorch CLIP on ``test`` (kNN against ``train`` when given); with
    ``image_embeddings`` (test's, train's), those instead of embedding the images again."""
    clip.model.eval()
    if image_embeddings is None:
        trained = embed_images(clip, train.images) if train is not None else None
        image_embeddings = (embed_images(clip, test.images), trained)
    return evaluate_embeddings(
        lambda texts: embed_texts(clip, texts),
        image_embeddings[0],
        test.fields,
        image_embeddings[1],
        train.fields if train is not None else None,
    )


Ranker = Callable[[str], Sequence[ProductFields]]


def evaluate_ranker(
    rank: Ranker, queries_from: Sequence[ProductFields], min_relevant: int = 10
) -> dict[str, float]:
    """Title and attribute metrics of any search function (text -> products, best first).

    The same queries as :func:`evaluate_embeddings`, built from ``queries_from`` (the held-out
    products), answered by ``rank`` over whatever it searches (e.g. the whole catalog, by vector
    or hybrid search). MRR counts only the ranks ``rank`` returns.
    """
    titles = sorted({f.product_display_name for f in queries_from})
    ranks = []
    for title in titles:
        hits = rank(title)
        ranks.append(next((i for i, h in enumerate(hits, 1) if h.product_display_name == title), 0))
    found = np.array(ranks)
    metrics = {
        "title_r1": float(np.mean(found == 1)),
        "title_r10": float(np.mean((found >= 1) & (found <= 10))),
        "title_mrr": float(np.mean([1.0 / r if r else 0.0 for r in ranks])),
        "title_queries": float(len(titles)),
    }
    keys = Counter(
        (f.gender, f.base_colour, f.article_type)
        for f in queries_from
        if f.gender and f.base_colour and f.article_type
    )
    combos = sorted(k for k, n in keys.items() if n >= min_relevant)
    for name, template in (("attr_p10_seen", SEEN_PHRASING), ("attr_p10_unseen", UNSEEN_PHRASING)):
        precisions = [
            sum(
                (h.gender, h.base_colour, h.article_type) == combo
                for h in rank(attribute_text(*combo, template))[:10]
            )
            / 10
            for combo in combos
        ]
        metrics[name] = float(np.mean(precisions)) if precisions else 0.0
    return metrics
