"""Model pieces: ONNX parity on real images and titles, the text cut, int8, the export's files,
preprocessing errors, metric arithmetic, micro-batching, and champion promotion in the real
registry."""

from __future__ import annotations

import dataclasses
import io
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from open_clip.tokenizer import SimpleTokenizer
from PIL import Image

from fashion_search.catalog.models import ProductFields
from fashion_search.dataset import iter_dataset
from fashion_search.errors import ImageTooLargeError, InvalidImageError
from fashion_search.model.embed import embed_images, embed_texts
from fashion_search.model.evaluate import evaluate_embeddings, title_retrieval
from fashion_search.model.factory import Clip, ModelSpec, create_clip
from fashion_search.model.onnx_export import (
    IMAGE_INPUT,
    TEXT_INPUT,
    ExportAttention,
    PatchEmbedding,
    convert_fp16,
    export_image_tower,
    export_ready,
    export_text_tower,
    quantize_int8,
)
from fashion_search.model.preprocess import decode_image, preprocess_image
from fashion_search.model.registry import (
    RegisteredVersion,
    beats,
)
from fashion_search.model.tokens import cut_tokens
from fashion_search.model.towers import ImageTower, TextTower, cut_tokens_torch
from fashion_search.settings import Settings
from model_server.artifacts import (
    EXPORT_FILES,
    EXPORT_REVISION,
    MANIFEST,
    ExportManifest,
    ModelFacts,
    sha256_of,
)
from model_server.batcher import MicroBatcher
from model_server.export import export_clip
from model_server.loader import ExportedModel
from model_server.model import ServedModel
from model_server.tokenizer import build_tokenizer_json
from tests.helpers import jpeg, min_cosine, squares


@pytest.fixture(scope="module")
def clip() -> Clip:
    return create_clip(ModelSpec("fashion-tiny"))


@pytest.fixture(scope="module")
def onnx_files(clip: Clip, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("onnx")
    return {
        "image": export_image_tower(clip, out / "image.onnx"),
        "text": export_text_tower(clip, out / "text.onnx"),
    }


@pytest.fixture(scope="module")
def products(settings: Settings) -> list[Any]:
    return list(iter_dataset(settings.dataset_source, limit=256))


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_onnx_towers_match_pytorch_on_real_products(
    clip: Clip, onnx_files: dict[str, Path], products: list[Any]
) -> None:
    titles = [p.fields.product_display_name for p in products]
    tokens = clip.tokenize(titles).numpy().astype(np.int64)
    text = _session(onnx_files["text"]).run(None, {TEXT_INPUT: cut_tokens(tokens)})[0]
    assert min_cosine(text, embed_texts(clip, titles)) >= 0.9999
    pixels = np.stack(
        [preprocess_image(p.image, clip.image_size, clip.mean, clip.std) for p in products]
    )
    image = _session(onnx_files["image"]).run(None, {IMAGE_INPUT: pixels})[0]
    reference = embed_images(clip, squares([p.image for p in products], clip.image_size))
    assert min_cosine(image, reference) >= 0.9999
    assert image.shape == (len(products), clip.embed_dim)


def test_export_modules_compute_what_open_clip_computes(clip: Clip, products: list[Any]) -> None:
    ready = export_ready(clip)
    assert any(isinstance(m, ExportAttention) for m in ready.model.modules())
    assert isinstance(ready.model.visual.conv1, PatchEmbedding)
    assert not any(isinstance(m, ExportAttention) for m in clip.model.modules())  # a copy
    tokens = cut_tokens_torch(clip.tokenize([p.fields.product_display_name for p in products]))
    pixels = torch.from_numpy(
        np.stack(
            [preprocess_image(p.image, clip.image_size, clip.mean, clip.std) for p in products]
        )
    )
    with torch.no_grad():
        for tower, batch in ((TextTower, tokens), (ImageTower, pixels)):
            assert torch.allclose(tower(ready)(batch), tower(clip)(batch), atol=1e-5)


def test_cut_tokens_is_exact(clip: Clip, onnx_files: dict[str, Path], products: list[Any]) -> None:
    titles = [p.fields.product_display_name for p in products]
    tokens = clip.tokenize(titles).numpy().astype(np.int64)
    cut = cut_tokens(tokens)
    assert cut.shape[1] < tokens.shape[1]
    assert (tokens[:, cut.shape[1] :] == 0).all()
    session = _session(onnx_files["text"])
    full = session.run(None, {TEXT_INPUT: tokens})[0]
    short = session.run(None, {TEXT_INPUT: cut})[0]
    assert min_cosine(full, short) >= 0.99999
    single = session.run(None, {TEXT_INPUT: cut_tokens(tokens[:1])})[0]
    assert min_cosine(single, full[:1]) >= 0.99999


def test_int8_variant_runs_and_stays_close(
    onnx_files: dict[str, Path], clip: Clip, products: list[Any], tmp_path: Path
) -> None:
    int8 = quantize_int8(onnx_files["image"], tmp_path / "image.int8.onnx")
    assert int8.stat().st_size < onnx_files["image"].stat().st_size
    pixels = np.stack(
        [preprocess_image(p.image, clip.image_size, clip.mean, clip.std) for p in products[:64]]
    )
    fp32 = _session(onnx_files["image"]).run(None, {IMAGE_INPUT: pixels})[0]
    quantized = _session(int8).run(None, {IMAGE_INPUT: pixels})[0]
    assert min_cosine(fp32, quantized) >= 0.95


def test_fp16_variant_stays_close_to_fp32_on_both_towers(
    onnx_files: dict[str, Path], clip: Clip, products: list[Any], tmp_path: Path
) -> None:
    """The GPU variant: half the bytes; on the CPU (ONNX Runtime runs what has no fp16 kernel
    in fp32) the same embeddings within fp16's rounding. bench/gpu.sh measures it on CUDA."""
    pixels = np.stack(
        [preprocess_image(p.image, clip.image_size, clip.mean, clip.std) for p in products[:32]]
    )
    tokens = cut_tokens(
        clip.tokenize([p.fields.product_display_name or "" for p in products[:32]]).numpy()
    )
    for tower, name, batch in (("image", IMAGE_INPUT, pixels), ("text", TEXT_INPUT, tokens)):
        half = convert_fp16(onnx_files[tower], tmp_path / f"{tower}.fp16.onnx")
        assert half.stat().st_size < 0.6 * onnx_files[tower].stat().st_size
        fp32 = _session(onnx_files[tower]).run(None, {name: batch})[0]
        fp16 = _session(half).run(None, {name: batch})[0]
        assert fp16.dtype == np.float32  # the inputs and output stay float32
        assert min_cosine(fp32, fp16) >= 0.999, tower


def test_preprocessing_refuses_bad_images() -> None:
    with pytest.raises(InvalidImageError, match="empty"):
        decode_image(b"")
    with pytest.raises(InvalidImageError):
        decode_image(b"GIF89a broken")
    with pytest.raises(InvalidImageError):
        decode_image(jpeg(60, 80)[:200])
    with pytest.raises(ImageTooLargeError, match="pixels"):
        decode_image(jpeg(2000, 2000), max_pixels=1_000_000)
    grey = io.BytesIO()
    Image.new("LA", (10, 20)).save(grey, "PNG")
    pixels = preprocess_image(grey.getvalue(), 32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert pixels.shape == (3, 32, 32)
    assert pixels.dtype == np.float32


def _fields(titles: list[str]) -> list[ProductFields]:
    return [
        ProductFields(
            id=i + 1,
            product_display_name=t,
            gender="Men",
            base_colour="Blue",
            article_type="Shirts",
        )
        for i, t in enumerate(titles)
    ]


def test_metrics_reward_a_perfect_embedder_and_punish_a_shuffled_one() -> None:
    titles = [f"title {i}" for i in range(20)]
    fields = _fields(titles)
    eye = np.eye(20, dtype=np.float32)

    def perfect(texts: list[str]) -> np.ndarray:
        return eye[[int(t.split()[1]) if t.startswith("title") else 0 for t in texts]]

    metrics = title_retrieval(perfect, eye, fields)
    assert metrics["title_r1"] == metrics["title_mrr"] == 1.0
    shuffled = eye[np.roll(np.arange(20), 1)]
    worse = title_retrieval(perfect, shuffled, fields)
    assert worse["title_r1"] == 0.0
    assert worse["title_mrr"] < 1.0
    full = evaluate_embeddings(perfect, eye, fields, eye, fields)
    assert full["knn_article_type"] == 1.0  # every neighbour is a blue men's shirt


@pytest.fixture
def exported(clip: Clip, onnx_files: dict[str, Path], tmp_path: Path) -> ExportedModel:
    tokenizer = tmp_path / "tokenizer.json"
    tokenizer.write_bytes(build_tokenizer_json(clip.context_length))
    files = {**onnx_files, "tokenizer": tokenizer}
    return ExportedModel(
        RegisteredVersion("t", "1", None, "local"), "fp32", files, ModelFacts.of(clip)
    )


def test_an_export_has_every_file_its_hash_and_serves_both_variants(
    clip: Clip, products: list[Any], tmp_path: Path
) -> None:
    manifest = export_clip(clip, tmp_path)
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert written == sorted([*EXPORT_FILES, MANIFEST])
    assert manifest == ExportManifest.model_validate_json((tmp_path / MANIFEST).read_bytes())
    assert manifest.sha256 == {name: sha256_of(tmp_path / name) for name in EXPORT_FILES}
    assert ModelFacts.model_validate(manifest.model_dump()) == ModelFacts.of(clip)
    assert manifest.export_revision == EXPORT_REVISION
    titles = [p.fields.product_display_name for p in products[:64]]
    pixels = [preprocess_image(p.image, clip.image_size, clip.mean, clip.std) for p in products]
    reference = embed_images(clip, squares([p.image for p in products], clip.image_size))
    for variant, close in (("fp32", 0.9999), ("int8", 0.95)):
        served = ServedModel(
            ExportedModel.read(tmp_path, RegisteredVersion("t", "1", None, ""), variant)
        )
        assert min_cosine(served.embed_texts(titles), embed_texts(clip, titles)) >= close
        assert min_cosine(served.embed_pixels(pixels), reference) >= close


def test_only_open_clips_default_tokenizer_is_exported(clip: Clip, tmp_path: Path) -> None:
    other = dataclasses.replace(clip, tokenizer=SimpleTokenizer(context_length=16))
    with pytest.raises(ValueError, match="no torch-free tokenizer"):
        export_clip(other, tmp_path)


def test_served_sessions_take_their_settings(exported: ExportedModel, settings: Settings) -> None:
    def options(model: ServedModel) -> list[tuple[int, bool]]:
        found = []
        for session in (model.text, model.image):
            o = session.session.get_session_options()
            try:
                stops = o.get_session_config_entry("session.force_spinning_stop") == "1"
            except RuntimeError:  # not set
                stops = False
            found.append((o.intra_op_num_threads, stops))
        return found

    cores = os.cpu_count() or 1
    assert options(ServedModel.configured(exported, settings)) == [(cores, True)] * 2
    configured = settings.replace(model_server={"threads": 1, "force_spinning_stop": False})
    assert options(ServedModel.configured(exported, configured)) == [(1, False)] * 2


def test_micro_batcher_merges_concurrent_requests() -> None:
    calls: list[int] = []

    def embed(items: list[int]) -> tuple[np.ndarray, str]:
        calls.append(len(items))
        time.sleep(0.01)  # long enough for the other requests to queue
        return np.array([[float(i)] for i in items], dtype=np.float32), f"v{len(calls)}"

    batcher: MicroBatcher[int] = MicroBatcher("test", embed, max_batch=16, max_wait_s=0.0)
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda i: batcher.submit([i, i + 100]), range(20)))
    assert [r[:, 0].tolist() for r, _ in results] == [[i, i + 100] for i in range(20)]
    assert {tag for _, tag in results} == {f"v{n}" for n in range(1, len(calls) + 1)}
    assert sum(calls) == 40
    assert len(calls) < 20  # requests were merged
    assert max(calls) <= 16


def test_micro_batcher_runs_a_lone_request_on_its_own_thread() -> None:
    threads: list[int] = []

    def embed(items: list[int]) -> tuple[np.ndarray, str]:
        threads.append(threading.get_ident())
        return np.zeros((len(items), 1), dtype=np.float32), "v1"

    batcher: MicroBatcher[int] = MicroBatcher("test", embed, max_batch=16, max_wait_s=0.0)
    assert batcher.submit([1])[0].shape == (1, 1)
    assert threads == [threading.get_ident()]


def test_micro_batcher_fails_every_request_of_a_failed_batch_and_goes_on() -> None:
    batches: list[list[int]] = []

    def embed(items: list[int]) -> tuple[np.ndarray, str]:
        batches.append(items)
        time.sleep(0.01)
        if any(i < 0 for i in items):
            raise ValueError("bad item")
        return np.array([[float(i)] for i in items], dtype=np.float32), "v1"

    batcher: MicroBatcher[int] = MicroBatcher("test", embed, max_batch=64, max_wait_s=0.05)
    items = [-1, *range(7)]
    with ThreadPoolExecutor(8) as pool:
        outcomes = dict(zip(items, pool.map(lambda i: _outcome(batcher, [i]), items), strict=True))
    failed = {i for batch in batches if min(batch) < 0 for i in batch}
    assert -1 in failed and len(failed) > 1  # the bad item shared its batch
    assert outcomes == {i: "bad item" if i in failed else float(i) for i in outcomes}
    assert batcher.submit([5])[0].tolist() == [[5.0]]  # the batcher still serves


def test_micro_batcher_hands_the_lead_on_and_runs_one_batch_at_a_time() -> None:
    running: list[int] = []  # batches in the model right now
    most = 0

    def embed(items: list[int]) -> tuple[np.ndarray, str]:
        nonlocal most
        running.append(1)
        most = max(most, len(running))
        time.sleep(0.002)
        running.pop()
        return np.array([[float(i)] for i in items], dtype=np.float32), "v1"

    batcher: MicroBatcher[int] = MicroBatcher("test", embed, max_batch=4, max_wait_s=0.0)
    with ThreadPoolExecutor(32) as pool:  # many more requests than a batch holds
        futures = [pool.submit(batcher.submit, [i]) for i in range(300)]
        results = [future.result(timeout=60)[0][0, 0] for future in futures]
    assert results == [float(i) for i in range(300)]
    assert most == 1


def test_micro_batcher_passes_an_interruption_to_its_batch_and_goes_on() -> None:
    class Interrupted(BaseException):
        pass

    def embed(items: list[int]) -> tuple[np.ndarray, str]:
        time.sleep(0.01)
        if 0 in items:
            raise Interrupted
        return np.array([[float(i)] for i in items], dtype=np.float32), "v1"

    batcher: MicroBatcher[int] = MicroBatcher("test", embed, max_batch=64, max_wait_s=0.05)
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(batcher.submit, [i]) for i in range(4)]
        for future in futures:
            with pytest.raises(Interrupted):
                future.result(timeout=10)
    assert batcher.submit([5])[0].tolist() == [[5.0]]


def _outcome(batcher: MicroBatcher[int], items: list[int]) -> str | float:
    try:
        return float(batcher.submit(items)[0][0, 0])
    except ValueError as error:
        return str(error)


def test_a_version_beats_the_champion_on_recall_or_judged_queries_losing_little_on_the_other() -> (
    None
):
    candidate = RegisteredVersion("m", "2", None, "")
    champion = {"title_mrr": 0.3, "judged_p10": 0.5}

    def scores(mrr: float, judged: float) -> dict[str, float]:
        return {"title_mrr": mrr, "judged_p10": judged}

    assert beats(candidate, scores(0.3, 0.5), None)  # no champion: the first version
    assert not beats(candidate, scores(0.2, 0.5), champion)
    assert not beats(candidate, scores(0.3, 0.5), champion)
    assert beats(candidate, scores(0.4, 0.5), champion)
    assert beats(candidate, scores(0.295, 0.6), champion)  # loses little recall
    assert not beats(candidate, scores(0.25, 0.6), champion)  # loses too much
    assert not beats(candidate, scores(0.4, 0.45), champion)
    assert beats(candidate, scores(0.4, 0.1), {"title_mrr": 0.3})  # measured before judging
