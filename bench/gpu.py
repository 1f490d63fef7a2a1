"""The GPU rows (``bench/gpu.sh`` runs this on a lent GPU machine; ``prepare`` runs here first).

The GPU machine has PyTorch with CUDA and a CPU-only ONNX Runtime, no package registry, and
takes at most 64 MiB of files, so ONNX Runtime's CUDA provider (onnxruntime-gpu, 256 MB) cannot
go there. What the GPU gives is therefore measured with the same towers in PyTorch CUDA: a
ViT-B/32 image tower and CLIP text tower of open_clip's shapes (widths, depths, heads, patch,
context; random init), defined here because open_clip cannot be installed there. Each row says
so. Measured, in one run:

- model-only images/s at batch 1, 32 and 256 and texts/s at batch 256, fp16 and fp32, and
  fp16's parity with fp32 (cosine of the same inputs' embeddings);
- query latency: one text at batch 1, p50 and p95;
- end to end from JPEG bytes through gRPC (this project's proto and preprocessing, the model
  server's decode pool, threads against processes), images/s with 8 concurrent calls of 256;
- the 44,072 catalog images embedded through that path: the embedding step of
  ``recreate_prod_database`` (PostgreSQL and MinIO do not run there).

    python -m bench.gpu prepare      # here: .device/ (images, wheels) for the carry
    bash bench/gpu.sh                # there (device tool, carry .device and fashion_search/rpc)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
import zlib
from concurrent import futures
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

DEVICE_DIR = Path(".device")
WHEELS = ("pillow", "grpcio", "protobuf")  # what the GPU machine's Python 3.12 may lack


def write_images(source: str, folder: Path, limit: int | None = None) -> int:
    """The catalog's JPEGs (the first ``limit``) in one compressed file with their offsets."""
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    table = pq.read_table(source, columns=["image"])
    blobs = [row["bytes"] for row in table.column("image").to_pylist()[:limit]]
    offsets = np.cumsum([0, *(len(b) for b in blobs)]).astype(np.int64)
    # zlib: the small JPEGs' headers and tables repeat (63 MB raw, under half compressed)
    (folder / "images.bin.z").write_bytes(zlib.compress(b"".join(blobs), 6))
    np.save(folder / "offsets.npy", offsets)
    return len(blobs)


def prepare(source: str) -> None:
    """Write ``.device/``: every catalog JPEG (:func:`write_images`) and cp312 wheels."""
    count = write_images(source, DEVICE_DIR)
    # The versions of this environment (the generated stubs need protobuf's), by a pip (the
    # project's uv environment has none).
    pins = [f"{name}=={version(name)}" for name in WHEELS]
    subprocess.run(
        [shutil.which("pip3") or "pip", "download", "--quiet", "--only-binary=:all:",
         "--python-version", "3.12", "--platform", "manylinux_2_28_x86_64",
         "--platform", "manylinux2014_x86_64", "--no-deps", "-d", str(DEVICE_DIR / "wheels"),
         *pins],
        check=True,
    )  # fmt: skip
    size = sum(f.stat().st_size for f in DEVICE_DIR.rglob("*") if f.is_file())
    print(f"{DEVICE_DIR}: {count} images, {size / 2**20:.1f} MiB with the wheels")


def _images(folder: Path, limit: int | None = None) -> list[bytes]:
    data = zlib.decompress((folder / "images.bin.z").read_bytes())
    offsets = np.load(folder / "offsets.npy")
    n = len(offsets) - 1 if limit is None else min(limit, len(offsets) - 1)
    return [data[offsets[i] : offsets[i + 1]] for i in range(n)]


def _towers(device: str, quick: bool) -> tuple[Any, Any]:
    """ViT-B/32-shaped image and text towers (open_clip's shapes; random init)."""
    import torch
    from torch import nn

    layers = 2 if quick else 12

    def encoder(width: int, heads: int) -> nn.Module:
        layer = nn.TransformerEncoderLayer(
            width, heads, 4 * width, dropout=0.0, activation="gelu", batch_first=True,
            norm_first=True,
        )  # fmt: skip
        return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    class Image(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.patch = nn.Conv2d(3, 768, 32, 32, bias=False)
            self.cls = nn.Parameter(torch.randn(1, 1, 768) * 0.02)
            self.pos = nn.Parameter(torch.randn(1, 50, 768) * 0.01)
            self.pre, self.post = nn.LayerNorm(768), nn.LayerNorm(768)
            self.blocks = encoder(768, 12)
            self.proj = nn.Linear(768, 512, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.patch(x).flatten(2).transpose(1, 2)
            x = torch.cat([self.cls.expand(len(x), -1, -1), x], 1) + self.pos
            x = self.post(self.blocks(self.pre(x))[:, 0])
            return nn.functional.normalize(self.proj(x), dim=-1)

    class Text(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(49408, 512)
            self.pos = nn.Parameter(torch.randn(1, 77, 512) * 0.01)
            self.blocks = encoder(512, 8)
            self.final = nn.LayerNorm(512)
            self.proj = nn.Linear(512, 512, bias=False)
            self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(77))

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            x = self.embed(tokens) + self.pos[:, : tokens.shape[1]]
            n = tokens.shape[1]
            x = self.final(self.blocks(x, mask=self.mask[:n, :n], is_causal=True))
            x = x[torch.arange(len(x)), tokens.argmax(-1)]
            return nn.functional.normalize(self.proj(x), dim=-1)

    torch.manual_seed(0)
    return Image().to(device).eval(), Text().to(device).eval()


def _rate(fn: Any, items: int, sync: Any, seconds: float) -> float:
    """Items/s of ``fn`` (``items`` a call) over about ``seconds``, after two warm-up calls."""
    fn()
    fn()
    sync()
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        fn()
        calls += 1
    sync()
    return calls * items / (time.perf_counter() - started)


def model_rows(device: str, quick: bool) -> list[dict[str, Any]]:
    """Model-only throughput and query latency, fp16 and fp32, and fp16's parity."""
    import torch

    image, text = _towers(device, quick)
    sync = torch.cuda.synchronize if device == "cuda" else lambda: None
    seconds = 0.5 if quick else 3.0
    rows: list[dict[str, Any]] = []
    pixels = torch.randn(256, 3, 224, 224, device=device)
    tokens = torch.randint(1, 49000, (256, 16), device=device)
    tokens[:, -1] = 49407  # end of text: the pooled position
    reference = {}
    for dtype in (torch.float32, torch.float16):
        name = str(dtype).removeprefix("torch.").replace("float", "fp")
        with torch.inference_mode(), torch.autocast(device, dtype, enabled=dtype != torch.float32):
            for batch in (1, 32, 256):
                x = pixels[:batch]
                rate = _rate(lambda x=x: image(x), batch, sync, seconds)
                rows.append({"what": "images/s, model only", "dtype": name, "batch": batch,
                             "value": round(rate, 1)})  # fmt: skip
            rate = _rate(lambda: text(tokens), 256, sync, seconds)
            rows.append({"what": "texts/s, model only", "dtype": name, "batch": 256,
                         "value": round(rate, 1)})  # fmt: skip
            times = []
            for _ in range(20 if quick else 200):
                started = time.perf_counter()
                text(tokens[:1])
                sync()
                times.append((time.perf_counter() - started) * 1000)
            for q in (50, 95):
                ms = round(float(np.percentile(times, q)), 3)
                rows.append({"what": f"query latency p{q} ms (one text)", "dtype": name,
                             "batch": 1, "value": ms})  # fmt: skip
            reference[name] = (image(pixels[:64]).float(), text(tokens[:64]).float())
    for i, tower in enumerate(("image", "text")):
        cosine = (reference["fp16"][i] * reference["fp32"][i]).sum(-1).min().item()
        rows.append({"what": f"fp16 parity: min cosine to fp32, {tower}", "dtype": "fp16",
                     "batch": 64, "value": round(cosine, 5)})  # fmt: skip
    return rows


def _serve(device: str, quick: bool, pool: str, port: int) -> Any:
    """A gRPC EmbeddingService whose EmbedImages decodes with this project's preprocessing on
    the model server's decode pool and embeds with the fp16 reference image tower."""
    import grpc
    import torch

    from fashion_search.rpc import embedding_pb2 as pb
    from fashion_search.rpc import embedding_pb2_grpc as pb_grpc
    from model_server.decoding import decode_pool

    image, _ = _towers(device, quick)
    decode = decode_pool(pool, on_gpu=device == "cuda")  # type: ignore[arg-type]
    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)

    class Service(pb_grpc.EmbeddingServiceServicer):  # type: ignore[misc]
        def EmbedImages(self, request: Any, context: Any) -> Any:  # noqa: N802
            pixels = list(decode.map(_Preprocess(mean, std), request.images))
            x = torch.from_numpy(np.stack(pixels)).to(device, non_blocking=True)
            with torch.inference_mode(), torch.autocast(device, torch.float16):
                out = image(x).float().cpu().numpy()
            return pb.EmbeddingsResponse(
                embeddings=[pb.Embedding(values=v) for v in out], model_version="reference"
            )

    server = grpc.server(futures.ThreadPoolExecutor(16), options=[
        ("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20),
    ])  # fmt: skip
    pb_grpc.add_EmbeddingServiceServicer_to_server(Service(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server, decode


class _Preprocess:
    """Picklable: one JPEG to 224x224 normalized pixels, as the model server does."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.mean, self.std = mean, std

    def __call__(self, data: bytes) -> Any:
        from fashion_search.model.preprocess import preprocess_image

        return preprocess_image(data, 224, self.mean, self.std)


def end_to_end_rows(device: str, quick: bool, data: Path) -> list[dict[str, Any]]:
    """JPEG bytes through gRPC: images/s by decode pool, and the whole catalog's embedding."""
    import grpc

    from fashion_search.rpc import embedding_pb2 as pb
    from fashion_search.rpc import embedding_pb2_grpc as pb_grpc

    images = _images(data, 2000 if quick else None)
    rows: list[dict[str, Any]] = []
    for n, pool in enumerate(("threads", "processes")):
        port = 50600 + n
        server, decode = _serve(device, quick, pool, port)
        channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[
            ("grpc.max_send_message_length", 64 << 20),
            ("grpc.max_receive_message_length", 64 << 20),
        ])  # fmt: skip
        stub = pb_grpc.EmbeddingServiceStub(channel)
        batches = [images[i : i + 256] for i in range(0, len(images), 256)]

        def call(batch: list[bytes], stub: Any = stub) -> int:
            return len(stub.EmbedImages(pb.EmbedImagesRequest(images=batch)).embeddings)

        call(batches[0])  # warm-up (the pool's workers start)
        started = time.perf_counter()
        with futures.ThreadPoolExecutor(8) as clients:
            done = sum(clients.map(call, batches))
        seconds = time.perf_counter() - started
        rows.append({"what": f"images/s end to end, JPEG via gRPC, decode on {pool}",
                     "dtype": "fp16", "batch": 256, "value": round(done / seconds, 1)})  # fmt: skip
        rows.append({"what": f"{done} catalog images embedded (s), decode on {pool}",
                     "dtype": "fp16", "batch": 256, "value": round(seconds, 1)})  # fmt: skip
        channel.close()
        server.stop(0)
        decode.shutdown()
    return rows


def run(out: Path, quick: bool, data: Path = DEVICE_DIR) -> None:
    """Measure and write ``out/gpu.json`` (and print it)."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    machine = torch.cuda.get_device_name() if device == "cuda" else "CPU (no CUDA here)"
    rows = model_rows(device, quick) + end_to_end_rows(device, quick, data)
    report = {
        "machine": machine, "torch": torch.__version__, "cores": os.cpu_count(),
        "reference": "PyTorch towers of ViT-B/32's shapes (random init), not ONNX Runtime",
        "rows": rows,
    }  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


def main() -> None:
    """``prepare`` (here) or ``run`` (on the GPU machine)."""
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("prepare")
    p.add_argument("--source", default=os.environ.get("FS_DATASET_SOURCE", ""))
    r = commands.add_parser("run")
    r.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench/results")))
    r.add_argument("--quick", action="store_true", help="2 layers, 2000 images: a smoke run")
    r.add_argument("--data", type=Path, default=DEVICE_DIR, help="where prepare put the images")
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.source)
    else:
        run(args.out, args.quick, args.data)


if __name__ == "__main__":
    main()
