"""A model's tokeniser without torch: a Hugging Face ``tokenizers`` file, exported once.

:func:`build_tokenizer_json` (export side, imports open_clip) writes open_clip's
``SimpleTokenizer`` - its BPE vocabulary, regex pre-tokenisation, byte-level mapping, ``</w>``
end-of-word suffix, start/end-of-text ids, truncation and zero padding to the context length -
as one ``tokenizer.json``; :func:`wordpiece_tokenizer_json` takes a Hugging Face text tower's
own ``tokenizer.json`` (WordPiece, [CLS] ... [SEP]) and truncates it to the context length.
:class:`TextTokenizer` (serving side, imports only ``tokenizers``, numpy and the pure-Python
``ftfy``) loads either and gives the same token ids as open_clip's tokeniser of the model
(``SimpleTokenizer`` with its cleaning, ``HFTokenizer`` with its whitespace cleaning).
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


def wordpiece_tokenizer_json(backend: Tokenizer, context_length: int) -> bytes:
    """A Hugging Face text tower's tokenizer (the ``tokenizers`` object its fast tokenizer
    runs) truncating every text to ``context_length`` tokens ([CLS] and [SEP] included)."""
    tokenizer = Tokenizer.from_str(backend.to_str())
    tokenizer.enable_truncation(context_length)
    tokenizer.no_padding()
    return tokenizer.to_str().encode()


#: How texts are cleaned before tokenising: open_clip's ``SimpleTokenizer`` ("clip") or its
#: ``HFTokenizer`` ("whitespace").
CLEANINGS = ("clip", "whitespace")


def whitespace_clean(text: str) -> str:
    """open_clip's "whitespace" cleaning (of Hugging Face tokenisers): ftfy, HTML unescaping,
    runs of white space as one space."""
    return " ".join(html.unescape(html.unescape(ftfy.fix_text(text))).split())


def clean(text: str) -> str:
    """open_clip's default ("lower") cleaning: ftfy, HTML unescaping, whitespace, lower case.
    Also a space for U+0345, which open_clip's case-insensitive regex matches nowhere."""
    return whitespace_clean(text).lower().replace("\u0345", " ")


class TextTokenizer:
    """Token ids of texts as open_clip's tokeniser gives them, from a ``tokenizer.json`` and
    the cleaning of :data:`CLEANINGS` that goes with it."""

    def __init__(self, tokenizer: Tokenizer, cleaning: str = "clip") -> None:
        truncation = tokenizer.truncation
        if truncation is None:
            raise ValueError("tokenizer.json without truncation to a context length")
        if cleaning not in CLEANINGS:
            raise ValueError(f"cleaning must be one of {CLEANINGS}, got {cleaning!r}")
        self.context_length: int = truncation["max_length"]
        tokenizer.no_padding()  # numpy pads faster than Encoding objects
        self._tokenizer = tokenizer
        self._clean = clean if cleaning == "clip" else whitespace_clean

    @classmethod
    def from_bytes(cls, data: bytes, cleaning: str = "clip") -> TextTokenizer:
        """From the bytes of :func:`build_tokenizer_json` or :func:`wordpiece_tokenizer_json`."""
        return cls(Tokenizer.from_str(data.decode()), cleaning)

    @classmethod
    def from_file(cls, path: str | Path, cleaning: str = "clip") -> TextTokenizer:
        """From a file holding :meth:`from_bytes`'s bytes."""
        return cls.from_bytes(Path(path).read_bytes(), cleaning)

    def __call__(self, texts: list[str]) -> Tokens:
        """Token ids ``[len(texts), context_length]`` (int64, zero-padded)."""
        ids = np.zeros((len(texts), self.context_length), dtype=np.int64)
        encodings = self._tokenizer.encode_batch([self._clean(text) for text in texts])
        for row, encoding in zip(ids, encodings, strict=True):
            tokens = encoding.ids
            row[: len(tokens)] = tokens
        return ids
