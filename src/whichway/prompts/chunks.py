"""Long and weighted prompts through a text encoder: tokens in chunks, encoded, weighted, joined.

A chunk is what the encoder takes at once: ``window`` tokens (CLIP: 77 = BOS + 75 + EOS, padded).
The fragments of a :class:`~whichway.prompts.syntax.ParsedPrompt` are tokenized one by one (as
A1111 and ComfyUI do) and poured into chunks of ``window − 2`` tokens; a fragment shorter than
:data:`WORD_TOKENS` tokens that would straddle a chunk boundary moves whole to the next chunk
(ComfyUI's rule, which keeps short phrases together), a longer one is split. ``BREAK`` closes the
chunk. The encoded chunks are weighted by a rule of :mod:`whichway.prompts.weighting` and
concatenated along the token axis: a prompt of k chunks is a cloud of k·window rows.

Encoders that cannot take chunks (T5 in SD3 and Flux) get one chunk of their whole window; what
does not fit is cut, with :class:`~whichway.models._common.PromptTruncatedWarning`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from whichway.prompts.syntax import ParsedPrompt
from whichway.prompts.weighting import apply_weights

WORD_TOKENS = 8
"""A fragment of fewer tokens is never split across two chunks (ComfyUI's ``max_word_length``)."""

EncoderFn = Callable[[Tensor], tuple[Tensor, Tensor | None]]
"""ids (k, L) long -> (hidden states (k, L, d), pooled (k, p) or None), on the encoder's side."""


@dataclass(frozen=True)
class TokenChunks:
    """A prompt's tokens as encoder inputs.

    ids : tuple of k tuples of ``window`` token ids (special tokens and padding included)
    weights : tuple of k tuples of ``window`` weights (1 for special tokens and padding)
    empty : the empty chunk's ``window`` ids (BOS, EOS, padding)
    lengths : ids of each chunk before its padding (special tokens included)
    cut : how many prompt tokens did not fit (only where chunking is off)
    """

    ids: tuple[tuple[int, ...], ...]
    weights: tuple[tuple[float, ...], ...]
    empty: tuple[int, ...]
    lengths: tuple[int, ...]
    cut: int = 0

    @property
    def weighted(self) -> bool:
        return any(w != 1.0 for chunk in self.weights for w in chunk)

    def __len__(self) -> int:
        return len(self.ids)


def special_tokens(tokenizer: Any) -> tuple[list[int], list[int], int]:
    """(head, tail, pad): what the tokenizer puts before and after a text (CLIP: [BOS], [EOS];
    T5: [], [EOS]) and the padding id the pipelines pad with."""
    empty = list(tokenizer("").input_ids)
    head, tail = empty[:-1], empty[-1:]
    pad = tokenizer.pad_token_id
    return head, tail, int(tail[0] if pad is None else pad)


def tokenize_chunks(
    tokenizer: Any, parsed: ParsedPrompt, window: int, *, chunked: bool = True
) -> TokenChunks:
    """Fragments -> chunks of ``window`` ids and weights (see the module docstring).

    chunked : False puts everything in one chunk and cuts what does not fit (``cut`` says how
    many tokens), ignoring ``BREAK``.
    """
    head, tail, pad = special_tokens(tokenizer)
    body = window - len(head) - len(tail)
    if body < 1:
        raise ValueError(f"a window of {window} tokens leaves no room for the prompt")
    chunks: list[list[tuple[int, float]]] = [[]]
    for c, fragments in enumerate(parsed.chunks):
        if c and chunked:
            chunks.append([])
        for fragment in fragments:
            ids = list(tokenizer(fragment.text, add_special_tokens=False, verbose=False).input_ids)
            group = [(t, fragment.weight) for t in ids]
            while group:
                room = body - len(chunks[-1])
                if not chunked or len(group) <= room:
                    chunks[-1].extend(group)
                    break
                if len(group) >= WORD_TOKENS or not chunks[-1]:
                    chunks[-1].extend(group[:room])
                    group = group[room:]
                chunks.append([])
    cut = 0
    if not chunked and len(chunks[0]) > body:
        cut = len(chunks[0]) - body
        chunks[0] = chunks[0][:body]

    def wrap(tokens: list[tuple[int, float]]) -> tuple[tuple[int, ...], tuple[float, ...]]:
        ids = [*head, *(t for t, _ in tokens), *tail]
        weights = [1.0] * len(head) + [w for _, w in tokens] + [1.0] * len(tail)
        padding = window - len(ids)
        return tuple(ids + [pad] * padding), tuple(weights + [1.0] * padding)

    wrapped = [wrap(chunk) for chunk in chunks]
    return TokenChunks(
        tuple(i for i, _ in wrapped),
        tuple(w for _, w in wrapped),
        wrap([])[0],
        tuple(len(head) + len(c) + len(tail) for c in chunks),
        cut,
    )


def encode_chunks(
    chunks: TokenChunks, encoder: EncoderFn, rule: str, device: torch.device | str = "cpu"
) -> tuple[Tensor, Tensor | None]:
    """Encode, weight and join the chunks of one prompt.

    Returns (cloud (k·L, d), pooled (p,) of the first chunk or None), in the encoder's dtype
    on ``device``. All chunks (and the empty chunk, for a weighted prompt under ``comfyui``)
    go through the encoder in one batch.
    """
    batch = list(chunks.ids)
    needs_empty = chunks.weighted and rule == "comfyui"
    if needs_empty:
        batch.append(chunks.empty)
    hidden, pooled = encoder(torch.tensor(batch, dtype=torch.long, device=device))
    k = len(chunks)
    empty = hidden[k] if needs_empty else None
    weights = torch.tensor(chunks.weights, dtype=torch.float64)
    z = apply_weights(hidden[:k], weights, rule, empty) if chunks.weighted else hidden[:k]
    return z.reshape(-1, z.shape[-1]), None if pooled is None else pooled[0]


def warn_cut(chunks: TokenChunks, index: int, window: int, encoder: str) -> None:
    """The truncation warning for an encoder that cannot take chunks."""
    from whichway.models._common import PromptTruncatedWarning

    if chunks.cut:
        warnings.warn(
            f"prompt {index} has {chunks.cut} tokens more than the {encoder} window of {window}; "
            "they are cut",
            PromptTruncatedWarning,
            stacklevel=3,
        )
