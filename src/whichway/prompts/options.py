"""The choices of the prompt layer, torch-free (front ends validate them before loading a model)."""

from __future__ import annotations

WEIGHTING_RULES: tuple[str, ...] = ("comfyui", "a1111", "multiply")
"""What a weight does to the token embeddings (:mod:`whichway.prompts.weighting`)."""

DEFAULT_WEIGHTING = "comfyui"

LONG_PROMPTS: tuple[str, ...] = ("chunk", "truncate")
"""A prompt longer than a CLIP window: encoded in 75-token chunks (A1111, ComfyUI) or cut to the
window as the diffusers pipelines cut it (with a warning)."""

DEFAULT_LONG_PROMPTS = "chunk"


def check_weighting(rule: str) -> str:
    """``rule`` if it is one of :data:`WEIGHTING_RULES`, else a ValueError naming the choices."""
    if rule not in WEIGHTING_RULES:
        raise ValueError(
            f"unknown weighting rule {rule!r}; valid choices are: {', '.join(WEIGHTING_RULES)}"
        )
    return rule


def check_long_prompts(mode: str) -> str:
    """``mode`` if it is one of :data:`LONG_PROMPTS`, else a ValueError naming the choices."""
    if mode not in LONG_PROMPTS:
        raise ValueError(
            f"unknown long-prompt mode {mode!r}; valid choices are: {', '.join(LONG_PROMPTS)}"
        )
    return mode
