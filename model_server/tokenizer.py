"""open_clip's CLIP tokeniser without torch: a Hugging Face ``tokenizers`` file, exported once.

:func:`build_tokenizer_json` (export side, imports open_clip) writes open_clip's
``SimpleTokenizer`` - its BPE vocabulary, regex pre-tokenisation, byte-level mapping, ``</w>``
end-of-word suffix, start/end-of-text ids, truncation and zero padding to the context length -
as one ``tokenizer.json``. :class:`TextTokenizer` (serving side, imports only ``tokenizers``,
numpy and the pure-Python ``ftfy``) loads it and gives the same token ids as open_clip.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import ftfy
import numpy as np
from tokenizers import Regex, Tokenizer, pre_tokenizers, processors
from tokenizers.models import BPE

SOT, EOT = "<start_of_text>", "<end_of_text>"
#: open_clip's pre-tokenisation, case-insensitive as there ("'\u017f" is a "'s").
PATTERN = rf"""(?i){SOT}|{EOT}|'s|'t|'re|'ve|'m|'ll|'d|[\p{{L}}]+|[\p{{N}}]|[^\s\p{{L}}\p{{N}}]+"""
SUFFIX = "</w>"

Tokens = np.ndarray[Any, np.dtype[np.int64]]


def _bpe_tokenizer(vocab: dict[str, int], merges: list[tuple[str, str]]) -> Tokenizer:
    tokenizer = Tokenizer(BPE(vocab, merges, end_of_word_suffix=SUFFIX))
    split = pre_tokenizers.Split(Regex(PATTERN), behavior="removed", invert=True)
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([split, byte_level])
    return tokenizer


def build_tokenizer_json(context_length: int) -> bytes:
    """``tokenizer.json`` of open_clip's default tokeniser, truncating and padding every text
    to ``context_length`` tokens (the start and end of text included)."""
    from open_clip.tokenizer import SimpleTokenizer

    reference = SimpleTokenizer(context_length=context_length)
    specials = {SOT: reference.sot_token_id, EOT: reference.eot_token_id}
    vocab = {token: id_ for token, id_ in reference.encoder.items() if token not in specials}
    merges = sorted(reference.bpe_ranks, key=reference.bpe_ranks.__getitem__)
    # open_clip maps a pre-token that *is* a special token (only whole regex matches, unlike
    # added tokens) to its id. Do the same with merges, after all others, that join the plain
    # BPE of that pre-token into "<start_of_text></w>" (then "<end_of_text></w>"); their
    # intermediate tokens get new ids above the vocabulary and never come out whole.
    plain = _bpe_tokenizer(vocab, merges)
    for special, id_ in specials.items():
        vocab[special + SUFFIX] = id_
    for special in specials:
        first, *rest = plain.encode(special, add_special_tokens=False).tokens
        for part in rest:
            merges.append((first, part))
            first += part
            vocab.setdefault(first, len(vocab))
    tokenizer = _bpe_tokenizer(vocab, merges)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{SOT} $A {EOT}", special_tokens=list(specials.items())
    )
    tokenizer.enable_truncation(context_length)
    tokenizer.enable_padding(length=context_length, pad_id=0, pad_token="!")
    return tokenizer.to_str().encode()


def clean(text: str) -> str:
    """open_clip's default ("lower") cleaning: ftfy, HTML unescaping, whitespace, lower case.
    Also a space for U+0345, which open_clip's case-insensitive regex matches nowhere."""
    text = " ".join(html.unescape(html.unescape(ftfy.fix_text(text))).split()).lower()
    return text.replace("\u0345", " ")


class TextTokenizer:
    """Token ids of texts as open_clip's tokeniser gives them, from a ``tokenizer.json``."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        truncation = tokenizer.truncation
        if truncation is None:
            raise ValueError("tokenizer.json without truncation to a context length")
        self.context_length: int = truncation["max_length"]
        tokenizer.no_padding()  # numpy pads faster than Encoding objects
        self._tokenizer = tokenizer

    @classmethod
    def from_bytes(cls, data: bytes) -> TextTokenizer:
        """From the bytes of :func:`build_tokenizer_json`."""
        return cls(Tokenizer.from_str(data.decode()))

    @classmethod
    def from_file(cls, path: str | Path) -> TextTokenizer:
        """From a file holding :func:`build_tokenizer_json`'s bytes."""
        return cls.from_bytes(Path(path).read_bytes())

    def __call__(self, texts: list[str]) -> Tokens:
        """Token ids ``[len(texts), context_length]`` (int64, zero-padded)."""
        ids = np.zeros((len(texts), self.context_length), dtype=np.int64)
        encodings = self._tokenizer.encode_batch([clean(text) for text in texts])
        for row, encoding in zip(ids, encodings, strict=True):
            tokens = encoding.ids
            row[: len(tokens)] = tokens
        return ids
