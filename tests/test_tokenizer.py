"""model_server.tokenizer gives open_clip's token ids (the project's ``tokenizer_for``)."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from fashion_search.model.factory import tokenizer_for
from model_server.tokenizer import TextTokenizer, build_tokenizer_json

ROOT = Path(__file__).resolve().parent.parent
DATASET = (
    ROOT.parent
    / "shared/datasets/fashion-product-images-small/fashion-product-images-small.parquet"
)
#: ViT-B-32 (77 tokens) and the project's own configs (32).
ARCHITECTURES = {"ViT-B-32": 77, "fashion-compact": 32}
HARD = [
    "",
    " ",
    "Men Blue T-shirt",
    "MiXeD CaSe ShIrT",
    "  extra   spaces\tand\nnew\r\nlines  \u3000\xa0",
    "Café crème, naïve façade \u2013 Ünïcödé e\u0301",
    "Straße ﬁne ΣΊΣΥΦΟΣ İstanbul ǅ",
    "日本語のドレス 한국어 Ελληνικά عربى हिन्दी",
    "👗👠 party dress 🔥🔥 ❤️ 🇮🇳 👨‍👩‍👧",
    "Tom &amp; Jerry &amp;amp; &lt;b&gt;bold&lt;/b&gt; &quot;x&quot; &#39;y&#39; &nbsp;",
    "<b>tags</b> & ampersand",
    "3.5mm 100% 2-in-1 50x 1234567890 ½ ² ٣",
    "!!!...,,,???---___ ~`@#$^*()[]{}|\\/",
    "don't it's we're they've I'm we'll he'd O'NEILL'S",
    "'\u017f 'S x'\u017ft",
    "â€™ mojibake Ã© “curly” \u2018quotes\u2019",
    "\u0345 a\u0345b",
    "<start_of_text> a<end_of_text>b !<end_of_text> <START_OF_TEXT>",
    "\x00\x1f control \u200b zero\u200dwidth \x85",
    "word " * 100,
    "supercalifragilistic" * 20,
    "x" * 500,
]
#: Run in a fresh interpreter: tokenise with a built file, without torch coming in.
NO_TORCH = """
import json, sys
from model_server.tokenizer import TextTokenizer
cleaning = sys.argv[3] if len(sys.argv) > 3 else "clip"
ids = TextTokenizer.from_file(sys.argv[1], cleaning)(json.loads(sys.argv[2]))
assert "torch" not in sys.modules, sorted(m for m in sys.modules if m.startswith("torch"))
print(json.dumps(ids.tolist()))
"""


@functools.cache
def built(context_length: int) -> bytes:
    """:func:`build_tokenizer_json`, once per context length."""
    return build_tokenizer_json(context_length)


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def pair(request: pytest.FixtureRequest) -> tuple[Any, TextTokenizer]:
    """open_clip's tokeniser of an architecture, and ours built for its context length."""
    reference = tokenizer_for(request.param)
    assert reference.context_length == ARCHITECTURES[request.param]
    return reference, TextTokenizer.from_bytes(built(reference.context_length))


@pytest.fixture(scope="module")
def titles() -> list[str]:
    """Every distinct catalog title of the dataset."""
    if not DATASET.exists():
        pytest.skip(f"dataset not found at {DATASET}")
    column = pq.read_table(DATASET, columns=["productDisplayName"]).column(0)
    assert len(column) == 44_072
    return sorted({title for title in column.to_pylist() if title is not None})


def assert_same(pair: tuple[Any, TextTokenizer], texts: list[str]) -> np.ndarray[Any, Any]:
    reference, ours = pair
    expected = reference(texts).numpy()
    got = ours(texts)
    assert got.dtype == np.int64 and got.shape == (len(texts), reference.context_length)
    different = [text for text, a, b in zip(texts, got, expected, strict=True) if (a != b).any()]
    assert not different, f"{len(different)} texts differ, e.g. {different[:5]}"
    return got


def test_catalog_titles(pair: tuple[Any, TextTokenizer], titles: list[str]) -> None:
    assert_same(pair, titles)


def test_hard_cases(pair: tuple[Any, TextTokenizer]) -> None:
    got = assert_same(pair, HARD)
    reference, ours = pair
    assert (got[-3:, -1] == reference.eot_token_id).all()  # the long ones: cut, end-of-text last
    assert ours([]).shape == (0, ours.context_length)


def test_no_torch(tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    path.write_bytes(built(77))
    texts = ["Men Blue T-shirt", "Café &amp; 👗", ""]
    done = subprocess.run(
        [sys.executable, "-c", NO_TORCH, str(path), json.dumps(texts)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == tokenizer_for("ViT-B-32")(texts).tolist()
