"""A peer side by side: the same ViT-B/32 weights served by infinity-emb (michaelfeil/infinity,
PyTorch through transformers' CLIPModel, REST) and by this project's model server (ONNX
Runtime fp32, gRPC), each in its own process on this machine, measured in one run:

    .venv/bin/python -m bench.peers [--seconds 5] [--markdown docs/benchmarks.md]

Random-init weights (speed does not depend on them), saved by open_clip and converted to the
Hugging Face CLIP layout (``bench/peers_hf.py``, which also checks that both give the same
embeddings on the same inputs). infinity-emb gets an environment of its own (its pinned
transformers, this project's torch), made once under ``FS_CACHE_DIR``. One item per request,
from catalog JPEGs and titles: images/s and texts/s at concurrency 1 and 32, and a query's
latency; ratios are ours over infinity-emb's.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

from bench.report import Report, Table, add_markdown_option
from fashion_search.dataset import iter_dataset
from fashion_search.embedding_client import EmbeddingClient
from fashion_search.model.factory import ModelSpec, create_clip
from fashion_search.model.registry import RegisteredVersion
from fashion_search.settings import REPO_ROOT, ModelServerSettings, Settings
from model_server.export import export_clip
from model_server.loader import ExportedModel
from model_server.model import ServedModel
from model_server.service import EmbeddingService, create_server
from stack.process import free_port
from stack.service import python_venv

INFINITY = "infinity-emb[server,torch,vision]==0.0.78"
QUERY = "navy blue casual shirt for men"
Call = Callable[[Any], object]


def _hf_vocabulary(directory: Path) -> None:
    """open_clip's BPE as the vocab.json and merges.txt of transformers' CLIPTokenizer."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    with gzip.open(default_bpe()) as file:
        lines = file.read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    merges = [tuple(line.split()) for line in lines]
    vocab = list(bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (directory / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
    )


def _prepare(directory: Path, images: list[bytes], titles: list[str]) -> None:
    """ViT-B/32 (seed 0) exported to ONNX, and its weights and reference outputs for the
    Hugging Face copy."""
    torch.manual_seed(0)
    clip = create_clip(ModelSpec("ViT-B-32"))
    export_clip(clip, directory / "onnx")
    torch.save(clip.model.state_dict(), directory / "open_clip.pt")
    exported = ExportedModel.read(
        directory / "onnx", RegisteredVersion("peers", "1", None, str(directory)), "fp32"
    )
    served = ServedModel(exported)
    pixels = np.stack([served.preprocess(b, 40_000_000) for b in images[:4]])
    tokens = clip.tokenize(titles[:4])
    with torch.no_grad():
        image_features = clip.model.encode_image(torch.from_numpy(pixels)).numpy()
        text_features = clip.model.encode_text(tokens).numpy()
    np.savez(
        directory / "reference.npz", pixels=pixels, tokens=tokens.numpy(),
        image_features=image_features, text_features=text_features, titles=np.array(titles[:4]),
    )  # fmt: skip
    _hf_vocabulary(directory)


def serve_ours(directory: Path, port: int) -> None:
    """``python -m bench.peers serve DIR PORT``: the model server on the fp32 export in DIR,
    with the server's own batching settings, until killed."""
    settings = Settings(model_server=ModelServerSettings(port=port))
    exported = ExportedModel.read(
        directory, RegisteredVersion("peers", "1", None, str(directory)), "fp32"
    )
    server = create_server(
        settings, EmbeddingService(settings, ServedModel.configured(exported, settings))
    )
    server.start()
    server.wait_for_termination()


def _start(argv: list[str], ready: Callable[[], bool], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{argv[0]} exited:\n{log.read_text()[-3000:]}")
        try:
            if ready():
                return process
        except Exception:  # not up yet
            pass
        time.sleep(0.5)
    process.kill()
    raise SystemExit(f"{argv[0]} not ready in 300 s:\n{log.read_text()[-3000:]}")


def _rate(call: Call, payloads: Sequence[Any], clients: int, seconds: float) -> float:
    """Items per second with ``clients`` callers, one item per call, for ``seconds``."""
    for payload in payloads[:clients]:
        call(payload)  # warm-up
    done = [0] * clients
    stop = time.perf_counter() + seconds

    def caller(i: int) -> None:
        while time.perf_counter() < stop:
            call(payloads[(i + done[i] * clients) % len(payloads)])
            done[i] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=caller, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / (time.perf_counter() - started)


def _latency_ms(call: Call, payload: Any, repeats: int = 50) -> tuple[float, float]:
    call(payload)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call(payload)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), float(np.percentile(times, 95))


def _measure(
    embed_image: Call, embed_text: Call, images: list[Any], titles: list[str], seconds: float
) -> list[float]:
    rates = [
        _rate(call, payloads, clients, seconds)
        for call, payloads in ((embed_image, images), (embed_text, titles))
        for clients in (1, 32)
    ]
    return [*rates, *_latency_ms(embed_text, QUERY)]


def main() -> None:
    """Prepare, serve both, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--source", default=Settings().dataset_source)
    add_markdown_option(parser)
    args = parser.parse_args()

    settings = Settings()
    items = list(iter_dataset(args.source, limit=256))
    images, titles = [i.image for i in items], [i.fields.product_display_name for i in items]
    work = Path(tempfile.mkdtemp(prefix="peers-"))
    _prepare(work, images, titles)
    python = python_venv(
        settings.cache_dir / "peers-infinity",
        [INFINITY, "aiohttp", f"torch=={version('torch')}"],  # aiohttp: its image inputs
        "infinity-emb",
    )  # fmt: skip
    converted = subprocess.run(
        [str(python), str(REPO_ROOT / "bench" / "peers_hf.py"), str(work)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    parity = json.loads(converted.stdout.strip().splitlines()[-1])

    report = Report("bench.peers")
    report.add(
        f"ViT-B/32 (random init, the same weights in both), {os.cpu_count()} cores; the Hugging"
        f" Face copy against open_clip on the same inputs: image min cosine"
        f" {parity['image_min_cosine']:.6f}, text {parity['text_min_cosine']:.6f}, tokenizer"
        f" {'identical' if parity['tokenizer_matches'] else 'DIFFERENT'}."
    )
    ours_port, infinity_port = free_port(), free_port()
    results: dict[str, list[float]] = {}
    with EmbeddingClient(f"127.0.0.1:{ours_port}", timeout_s=120) as client:
        ours = _start(
            [sys.executable, "-m", "bench.peers", "serve", str(work / "onnx"), str(ours_port)],
            client.healthy, work / "ours.log",
        )  # fmt: skip
        try:
            results["fashion-search model server (ONNX Runtime fp32, gRPC)"] = _measure(
                lambda b: client.embed_images([b]), lambda t: client.embed_texts([t]),
                images, titles, args.seconds,
            )  # fmt: skip
        finally:
            ours.terminate()
            ours.wait()

    base_url = f"http://127.0.0.1:{infinity_port}"
    uris = [f"data:image/jpeg;base64,{base64.b64encode(b).decode()}" for b in images]
    with httpx.Client(base_url=base_url, timeout=120) as http:
        infinity = _start(
            [str(python.parent / "infinity_emb"), "v2", "--model-id", str(work / "hf"),
             "--served-model-name", "clip", "--port", str(infinity_port), "--device", "cpu",
             "--engine", "torch", "--batch-size", "32", "--no-bettertransformer"],
            lambda: http.get("/health").status_code == 200, work / "infinity.log",
        )  # fmt: skip

        def embed(modality: str) -> Call:
            def call(item: Any) -> object:
                body = {"model": "clip", "input": [item], "modality": modality}
                response = http.post("/embeddings", json=body)
                response.raise_for_status()
                return response.json()

            return call

        try:
            results[f"infinity-emb {version_of(python)} (PyTorch fp32, REST)"] = _measure(
                embed("image"), embed("text"), uris, titles, args.seconds
            )
        finally:
            infinity.terminate()
            infinity.wait()

    (ours_row, theirs_row) = results.values()
    table = Table(
        "One item per request; ratio = ours / infinity-emb (latency: infinity-emb / ours)",
        ["server", "images/s c=1", "images/s c=32", "texts/s c=1", "texts/s c=32",
         "query p50 ms", "query p95 ms"],
    )  # fmt: skip
    for name, row in results.items():
        table.rows.append(
            [name, *[round(v, 1) if i < 4 else round(v, 2) for i, v in enumerate(row)]]
        )
    table.rows.append(
        ["ratio", *[f"{o / t:.2f}x" for o, t in zip(ours_row[:4], theirs_row[:4], strict=True)],
         *[f"{t / o:.2f}x" for o, t in zip(ours_row[4:], theirs_row[4:], strict=True)]]
    )  # fmt: skip
    report.add(table)
    report.write_markdown(args.markdown)


def version_of(python: Path) -> str:
    """infinity-emb's version in the environment of ``python``."""
    found = subprocess.run(
        [str(python), "-c", "import infinity_emb; print(infinity_emb.__version__)"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return found.stdout.strip()


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve_ours(Path(sys.argv[2]), int(sys.argv[3]))
    else:
        main()
