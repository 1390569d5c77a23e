"""Prompts as artists write them: weights, ``BREAK``, long prompts in chunks, Deforum's ``--neg``.

* :mod:`whichway.prompts.syntax` -- the parser (torch-free, so front ends check prompts before
  any model loads).
* :mod:`whichway.prompts.weighting` -- the weighting rules (``comfyui``, ``a1111``, ``multiply``):
  what a weight does to the token embeddings.
* :mod:`whichway.prompts.chunks` -- tokens in 75-token chunks wrapped in BOS/EOS, encoded and
  concatenated; the per-token layout (weights, chunk boundaries) the matching view shows.
"""

from __future__ import annotations

from whichway._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "EMPHASIS": "whichway.prompts.syntax",
    "Fragment": "whichway.prompts.syntax",
    "ParsedPrompt": "whichway.prompts.syntax",
    "PromptSyntaxError": "whichway.prompts.syntax",
    "check_prompt": "whichway.prompts.syntax",
    "parse_prompt": "whichway.prompts.syntax",
    "split_negative": "whichway.prompts.syntax",
    "WEIGHTING_RULES": "whichway.prompts.options",
    "DEFAULT_WEIGHTING": "whichway.prompts.options",
    "LONG_PROMPTS": "whichway.prompts.options",
    "apply_weights": "whichway.prompts.weighting",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
