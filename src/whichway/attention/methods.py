"""Names and settings of the attention-interpolation methods, torch-free (the CLI checks them
before any model loads)."""

from __future__ import annotations

from dataclasses import dataclass

AID_MODES = ("outer", "inner")
"""How the endpoint frames' attention is combined: after (outer) or before (inner) softmax."""

AID_LAYERS = ("both", "self", "cross")
"""Which attention layers AID acts on (the official pipeline: both)."""

METHODS = ("plain", "aid-outer", "aid-inner", "paid")
"""Interpolation methods: ``plain`` (conditioning/latent paths only) or attention
interpolation (AID outer/inner; PAID = AID with a guide prompt for the middle frames)."""

ATTENTION_FAMILIES = ("sd", "sdxl")
"""Families whose denoiser AID is built for (UNet attention)."""


def check_warmup_ratio(value: float) -> float:
    """The fraction of denoising steps AID acts on: a number in [0, 1]."""
    if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"warmup ratio must lie in [0, 1], got {value!r}")
    return float(value)


@dataclass(frozen=True)
class AIDSettings:
    """How AID acts: ``mode`` outer | inner, ``fused`` (the row's own keys/values beside the
    endpoint's), ``warmup_ratio`` (the first int(steps * ratio) steps), ``layers`` both | self |
    cross. Defaults are the official pipeline's (fused outer on every layer, ratio 0.5)."""

    mode: str = "outer"
    fused: bool = True
    warmup_ratio: float = 0.5
    layers: str = "both"

    def __post_init__(self) -> None:
        from whichway._checks import check_choice

        check_choice("AID mode", self.mode, AID_MODES)
        check_choice("AID layers", self.layers, AID_LAYERS)
        check_warmup_ratio(self.warmup_ratio)

    def warmup_calls(self, steps: int) -> int:
        """Denoiser calls AID acts on: int(steps * warmup_ratio), as the official pipeline."""
        return int(steps * self.warmup_ratio)


def settings_for(method: str, *, fused: bool, warmup_ratio: float, layers: str) -> AIDSettings:
    """The :class:`AIDSettings` of an attention method (``aid-outer`` | ``aid-inner`` | ``paid``;
    PAID interpolates outside softmax like the official PAID demos)."""
    mode = {"aid-outer": "outer", "aid-inner": "inner", "paid": "outer"}.get(method)
    if mode is None:
        raise ValueError(f"{method!r} is not an attention method; choose from {METHODS[1:]}")
    return AIDSettings(mode=mode, fused=fused, warmup_ratio=warmup_ratio, layers=layers)
