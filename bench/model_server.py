"""Model-serving benchmark: PyTorch eager vs ONNX Runtime fp32 vs int8, text cut, batching.

Random-init weights (speed does not depend on them); runs without the stack:

    .venv/bin/python -m bench.model_server --architecture ViT-B-32
    .venv/bin/python -m bench.model_server --architecture fashion-compact --batches 1 8 32 256
    .venv/bin/python -m bench.model_server --architecture fashion-compact effnet-lite2-minilm \
        --markdown docs/benchmarks.md

Prints throughput tables with ratios against PyTorch eager (same process), query latency at
the full context length vs cut after the end-of-text token, and gRPC throughput under
concurrent clients with and without server-side batching, plus int8 parity. With several
architectures, a last table compares what the model server gives with each (fp32 towers, as
served on a CPU), with ratios against the first.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.report import Cell, Report, Table, add_markdown_option
from fashion_search.dataset import iter_dataset
from fashion_search.embedding_client import EmbeddingClient
from fashion_search.model.factory import ModelSpec, create_clip
from fashion_search.model.registry import RegisteredVersion
from fashion_search.model.tokens import cut_tokens
from fashion_search.settings import ModelServerSettings, Settings
from model_server.artifacts import VARIANTS
from model_server.export import export_clip
from model_server.loader import ExportedModel
from model_server.model import ServedModel
from model_server.service import EmbeddingService, create_server


def _rate(fn: Callable[[], Any], items: int, seconds: float = 3.0) -> float:
    fn()  # warm-up
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        fn()
        done += items
    return done / (time.perf_counter() - started)


def _latency_ms(fn: Callable[[], Any], repeats: int = 30) -> float:
    fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.min(np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))


def _serve(model: ServedModel, port: int, max_batch: int) -> Callable[[], None]:
    """Start the gRPC service; returns a function that stops it."""
    settings = Settings(
        model_server=ModelServerSettings(port=port, max_batch=max_batch, max_wait_ms=5)
    )
    service = EmbeddingService(settings, model)
    server = create_server(settings, service)
    server.start()

    def stop() -> None:
        server.stop(0).wait()
        service.stop()

    return stop


def main() -> None:
    """Run and print."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--architecture", nargs="+", default=["ViT-B-32"])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--source", default=Settings().dataset_source)
    add_markdown_option(parser)
    args = parser.parse_args()

    torch.set_num_threads(torch.get_num_threads())
    found = [(architecture, _bench(architecture, args)) for architecture in args.architecture]
    report = Report("bench.model_server")
    first = found[0][1]
    header = ["architecture", "params M"]
    for label in ("query p50 ms", f"images/s, batch {max(args.batches)}",
                  f"gRPC images/s, {args.clients} clients",
                  f"gRPC texts/s, {args.clients} clients"):  # fmt: skip
        header += [label, "ratio"]
    rows: list[list[Cell]] = []
    for name, served in found:
        row: list[Cell] = [name, round(served.params, 1)]
        for value, base in zip(astuple(served)[1:], astuple(first)[1:], strict=True):
            row += [value, value / base]
        rows.append(row)
    title = (
        "The model server's fp32 towers by architecture (ONNX Runtime, CPU, random weights;"
        f" ratio: against {found[0][0]})"
    )
    report.add(Table(title, header, rows))
    report.write_markdown(args.markdown)


@dataclass(frozen=True)
class Served:
    """What the model server gives with one architecture's fp32 towers."""

    params: float  # millions
    query_ms: float  # one shopper query, cut tokens, batch 1
    images_per_s: float  # the largest batch measured
    grpc_images_per_s: float  # concurrent clients, server batching
    grpc_texts_per_s: float


def _bench(architecture: str, args: argparse.Namespace) -> Served:
    """The tables of one architecture, printed; what its fp32 towers serve."""
    clip = create_clip(ModelSpec(architecture))
    items = list(iter_dataset(args.source, limit=max(args.batches) + 64))
    images = [item.image for item in items]
    titles = [item.fields.product_display_name for item in items]
    tmp = Path(tempfile.mkdtemp())
    export_clip(clip, tmp)
    version = RegisteredVersion("bench", "0", None, str(tmp))
    served = {v: ServedModel(ExportedModel.read(tmp, version, v)) for v in VARIANTS}
    fp32 = served["fp32"]
    pixels = np.stack([fp32.preprocess(b, 40_000_000) for b in images])
    tokens = clip.tokenize(titles).numpy().astype(np.int64)

    params = sum(p.numel() for p in clip.model.parameters()) / 1e6
    threads = torch.get_num_threads()
    print(f"\n{architecture}: {params:.1f}M params, {threads} threads, {fp32.providers}")
    for tower in ("image", "text"):
        unit = "images/s" if tower == "image" else "texts/s"
        print(f"\n{tower} tower, {unit:<9} " + "".join(f"{f'bs {b}':>12}" for b in args.batches))
        rows: dict[str, list[float]] = {}
        with torch.no_grad():
            for b in args.batches:
                if tower == "image":
                    x = torch.from_numpy(pixels[:b])
                    rows.setdefault("PyTorch eager", []).append(
                        _rate(lambda x=x: clip.model.encode_image(x), b, args.seconds)
                    )
                else:
                    t = torch.from_numpy(tokens[:b])
                    rows.setdefault("PyTorch eager", []).append(
                        _rate(lambda t=t: clip.model.encode_text(t), b, args.seconds)
                    )
                for variant, model in served.items():
                    session = model.image if tower == "image" else model.text
                    batch = pixels[:b] if tower == "image" else cut_tokens(tokens[:b])
                    rows.setdefault(f"ONNX Runtime {variant}", []).append(
                        _rate(lambda s=session, x=batch: s.run(x), b, args.seconds)
                    )
        if tower == "image":
            image_rates = rows
        base = rows["PyTorch eager"]
        for name, values in rows.items():
            cells = "".join(f"{v:>7.1f} {v / base[i]:>3.1f}x" for i, v in enumerate(values))
            print(f"{name:<21}{cells}")

    query = clip.tokenize(["navy blue casual shirt for men"]).numpy().astype(np.int64)
    short = cut_tokens(query)
    query_ms: dict[str, float] = {}
    for variant, model in served.items():
        full = _latency_ms(lambda m=model: m.text.run(query))
        cut = query_ms[variant] = _latency_ms(lambda m=model: m.text.run(short))
        print(
            f"\nquery latency (ORT {variant}, batch 1): {query.shape[1]} tokens {full:.2f} ms,"
            f" cut to {short.shape[1]} tokens {cut:.2f} ms ({full / cut:.1f}x)",
            end="",
        )
    print()

    int8 = served["int8"]
    image_cos = _cos(int8.image.run(pixels[:32]), fp32.image.run(pixels[:32]))
    text_cos = _cos(int8.text.run(cut_tokens(tokens[:64])), fp32.text.run(cut_tokens(tokens[:64])))
    print(f"int8 parity vs fp32 (min cosine): image {image_cos:.5f}, text {text_cos:.5f}")

    print(f"\ngRPC, {args.clients} concurrent clients, one item per request")
    print(f"{'':<26} {'images/s':>9} {'texts/s':>9}")
    rates: dict[str, list[float]] = {}
    for label, max_batch in (("no server batching", 1), ("server batching (max 32)", 32)):
        stop = _serve(fp32, 50551, max_batch)
        with EmbeddingClient("127.0.0.1:50551") as client, ThreadPoolExecutor(args.clients) as pool:
            for payloads, call in ((images, client.embed_images), (titles, client.embed_texts)):
                work = [[p] for p in (payloads * 8)[: args.clients * 8]]
                list(pool.map(call, work[: args.clients]))  # warm-up
                started = time.perf_counter()
                list(pool.map(call, work))
                rates.setdefault(label, []).append(len(work) / (time.perf_counter() - started))
        stop()
    base = rates["no server batching"]
    for label, (img, txt) in rates.items():
        print(f"{label:<26} {img:>9.1f} {txt:>9.1f}   ({img / base[0]:.1f}x, {txt / base[1]:.1f}x)")
    batching = rates["server batching (max 32)"]
    largest = image_rates["ONNX Runtime fp32"][args.batches.index(max(args.batches))]
    return Served(params, query_ms["fp32"], largest, *batching)


if __name__ == "__main__":
    main()
