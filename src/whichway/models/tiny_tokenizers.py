"""The tokenizers of the tiny pipelines, built in code from a small vocabulary (nothing is
downloaded): a CLIP byte-pair tokenizer for every family's CLIP encoders and a T5 Unigram tokenizer
for SD3 and Flux. Shared by :mod:`whichway.models.tiny` and :mod:`whichway.models.tiny_mmdit`."""

from __future__ import annotations

import itertools
import json
import string
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from transformers import T5Tokenizer

#: words of the tiny vocabulary: whole-word tokens for the prompts tests and demos use; any
#: other word still tokenizes, letter by letter
TINY_WORDS = (
    "a an the of on in with and at by to from for is are under over near photo painting drawing "
    "picture sketch portrait close up view oil watercolor style cat dog horse bird fish car tree "
    "house city street beach forest mountain river sea lake sky moon sun star astronaut man woman "
    "child person people riding sitting running standing flying red blue green yellow black white "
    "small big old young beautiful dark bright night day morning snow rain field flower flowers "
    "garden table chair cup apple orange fruit bowl boat ship train plane bicycle road bridge "
    "castle robot dragon lion tiger bear elephant giraffe zebra"
).split()

_SPECIAL = ("<|startoftext|>", "<|endoftext|>")
_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789.,;:!?'\"-()&/"


def _bpe(symbols: list[str], merges: list[tuple[str, str]]) -> list[str]:
    """CLIP's byte-pair encoding of one word: repeatedly merge the adjacent pair of best rank."""
    ranks = {pair: rank for rank, pair in enumerate(merges)}
    symbols = list(symbols)
    while len(symbols) > 1:
        pairs = [
            (ranks.get(pair, len(ranks)), i) for i, pair in enumerate(itertools.pairwise(symbols))
        ]
        rank, _ = min(pairs)
        if rank == len(ranks):
            break
        best = merges[rank]
        merged: list[str] = []
        i = 0
        while i < len(symbols):
            if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                merged.append(symbols[i] + symbols[i + 1])
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    return symbols


def write_tiny_clip_vocab(directory: str | Path, words: Iterable[str] = TINY_WORDS) -> Path:
    """Write ``vocab.json`` and ``merges.txt`` of a tiny CLIP BPE vocabulary into ``directory``.

    Tokens: the two special tokens, every character of ``_CHARS`` alone and with the
    end-of-word mark ``</w>``, and for each word the merges that make BPE read it as one token
    (every merge result is a token, so any text tokenizes, unknown words letter by letter).
    Returns the directory.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab: dict[str, int] = {}

    def add(token: str) -> None:
        vocab.setdefault(token, len(vocab))

    for token in _SPECIAL:
        add(token)
    for char in _CHARS:
        add(char)
        add(char + "</w>")
    merges: list[tuple[str, str]] = []
    for word in words:
        word = word.lower()
        if not word or any(c not in _CHARS for c in word):
            raise ValueError(f"tiny vocabulary words must use only {_CHARS!r}; got {word!r}")
        # append merges until BPE (with every merge so far) reads the word as one token; a new
        # merge has the lowest priority, so it never changes how earlier words are read
        pieces = _bpe([*word[:-1], word[-1] + "</w>"], merges)
        while len(pieces) > 1:
            merges.append((pieces[0], pieces[1]))
            add(pieces[0] + pieces[1])
            pieces = _bpe(pieces, merges)
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (directory / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n"
    )
    return directory


def tiny_clip_tokenizer(pad_token: str = "<|endoftext|>", model_max_length: int = 77) -> Any:
    """A ``CLIPTokenizer`` over the tiny vocabulary (SD 1.x pads with ``<|endoftext|>``)."""
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        write_tiny_clip_vocab(tmp)
        return CLIPTokenizer.from_pretrained(
            tmp, pad_token=pad_token, model_max_length=model_max_length
        )


T5_WINDOW = 512
"""``model_max_length`` of the tiny T5 tokenizer (as the real T5-XXL tokenizer)."""


def tiny_t5_tokenizer() -> T5Tokenizer:
    """A T5 (Unigram, SentencePiece-style) tokenizer over a tiny vocabulary, built in code.

    Pieces: ``<pad>`` (0), ``</s>`` (1), ``<unk>`` (2), the word-start marker, single
    characters with and without it, and the whole words of the tiny CLIP vocabulary
    (:data:`TINY_WORDS`); no sentinel ``<extra_id_*>`` tokens.
    """
    from transformers import T5Tokenizer

    pieces: list[tuple[str, float]] = [
        ("<pad>", 0.0),
        ("</s>", 0.0),
        ("<unk>", 0.0),
        ("\u2581", -2.0),
    ]
    for ch in string.ascii_letters + string.digits + string.punctuation:
        pieces.append((ch, -4.0))
        pieces.append(("\u2581" + ch, -4.5))
    for word in TINY_WORDS:
        if len(word) > 1:
            pieces.append(("\u2581" + word, -1.0))
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=T5_WINDOW)
