"""Prompt syntax and long prompts inside the adapters: which path a prompt takes.

A plain prompt (no syntax, within every chunked encoder's window) goes through the pipeline's own
``encode_prompt``, bit for bit as without the syntax layer. Any other prompt is parsed
(:func:`whichway.prompts.syntax.parse_prompt`), tokenized into chunks and encoded by the family's
``_encode_parsed``. A batch whose prompts have different row counts is tiled to a common count
(:meth:`Conditioning.aligned`), which cross-attention cannot tell from the prompts themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor

from whichway.models.base import Conditioning
from whichway.prompts.chunks import EncoderFn
from whichway.prompts.options import check_long_prompts, check_weighting
from whichway.prompts.syntax import ParsedPrompt, parse_prompt

logger = logging.getLogger(__name__)


def set_prompt_options(adapter: Any, weighting: str, long_prompts: str) -> None:
    """Set the adapter's weighting rule and long-prompt mode (checked; every later ``encode``
    and ``encode_negative`` follows them)."""
    adapter.weighting = check_weighting(weighting)
    adapter.long_prompts = check_long_prompts(long_prompts)


def nesting_of(weighting: str) -> str:
    """ComfyUI's parser lets an inner explicit weight replace the outer ones; A1111's multiplies."""
    return "replace" if weighting == "comfyui" else "multiply"


def text_device(adapter: Any) -> Any:
    """Where token ids go: the pipeline's execution device (under ``--offload`` the encoder's
    weights live elsewhere until its hook moves them), as ``encode_prompt`` places them."""
    return getattr(adapter.pipe, "_execution_device", adapter.device)


def token_count(tokenizer: Any, text: str) -> int:
    """Tokens of ``text`` with the special tokens, untruncated."""
    return len(tokenizer(text, truncation=False, add_special_tokens=True, verbose=False).input_ids)


def encode_with_syntax(
    prompts: Sequence[str],
    *,
    fits: Callable[[str], bool],
    plain: Callable[[list[str]], Conditioning],
    parsed: Callable[[ParsedPrompt, int], Conditioning],
    nesting: str = "multiply",
    tiling_exact: bool = True,
) -> Conditioning:
    """Encode ``prompts`` (B), each by the pipeline (``plain``, batched, for plain prompts that
    ``fits``) or by ``parsed`` (chunks and weights); rows aligned across the batch. ``nesting``:
    how nested explicit weights combine (:data:`whichway.prompts.syntax.NESTING`; see
    :func:`nesting_of`); ``tiling_exact`` False (joint attention) logs a warning when the batch
    has to be tiled."""
    items = [parse_prompt(p, f"prompt {i} ({p[:40]!r})", nesting) for i, p in enumerate(prompts)]
    simple = [p.plain and fits(p.source) for p in items]
    if all(simple):
        return plain(list(prompts))
    simple_at = [i for i, s in enumerate(simple) if s]
    batch = plain([prompts[i] for i in simple_at]) if simple_at else None
    out = [
        batch.select(simple_at.index(i)) if simple[i] else parsed(items[i], i)
        for i in range(len(items))
    ]
    if not tiling_exact and len({c.rows for c in out}) > 1:
        logger.warning(
            "prompts of different chunk counts (%s token rows) are tiled to a common length; in "
            "joint attention (SD3) that is close to, not exactly, each prompt's own conditioning: "
            "give them the same chunk count (BREAK) for exact end frames (docs/prompts.md)",
            sorted({c.rows for c in out}),
        )
    return Conditioning.cat(Conditioning.aligned(out))


def clip_encoder(text_encoder: Any, layer: int | None = None) -> EncoderFn:
    """CLIP as the diffusers pipelines call it: ids (k, L) -> (hidden (k, L, d), pooled or None).

    layer : None = the last hidden state (SD 1.x/2.x); -2 = the penultimate hidden state, without
    the final layer norm (SDXL, SD3), with the projected pooled vector when the model has one.
    """

    def run(ids: Tensor) -> tuple[Tensor, Tensor | None]:
        if layer is None:
            return text_encoder(ids, attention_mask=None)[0], None
        out = text_encoder(ids, output_hidden_states=True)
        pooled = out[0] if out[0].ndim == 2 else None
        return out.hidden_states[layer], pooled

    return run
