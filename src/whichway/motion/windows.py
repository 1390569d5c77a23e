"""Context windows over a video's frames and the weights that fuse their overlaps.

A video of T frames is denoised in windows of L frames whose starts are ``stride`` apart
(FreeNoise, Qiu et al. 2023), the last window ending on the last frame. At every step each
window's noise prediction ε_w is accumulated with per-position weights w(j), j = 0..L-1::

    ε(f) = Σ_{w ∋ f} w(f - start_w) ε_w(f) / Σ_{w ∋ f} w(f - start_w)

"pyramid" weights (FreeNoise's Eq. 9, diffusers' default) are 1, 2, ..., ⌈L/2⌉, ..., 2, 1;
"flat" weights are all 1. This module imports nothing heavy.
"""

from __future__ import annotations

WEIGHTINGS = ("pyramid", "flat")
DEFAULT_CONTEXT_LENGTH = 16
"""AnimateDiff's training length and FreeNoise's default window (capped by the adapter's
``motion_max_seq_length``)."""
DEFAULT_CONTEXT_STRIDE = 4
"""FreeNoise's default distance between window starts."""


def check_context(length: int | None, stride: int | None, weighting: str = "pyramid") -> None:
    """One-line errors for a context length ≤ 0, a stride ≤ 0 or larger than the length, or an
    unknown weighting (None means "the default")."""
    for name, value in (("--context-length", length), ("--context-stride", stride)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{name} must be a whole number of frames, got {value!r}")
        if value is not None and value <= 0:
            raise ValueError(f"{name} must be >= 1 frame, got {value}")
    if length is not None and stride is not None and stride > length:
        raise ValueError(
            f"--context-stride {stride} is larger than --context-length {length}: frames between "
            "windows would never be denoised; give a stride <= the length"
        )
    if weighting not in WEIGHTINGS:
        raise ValueError(
            f"unknown context weighting {weighting!r}; valid choices are: {', '.join(WEIGHTINGS)}"
        )


def resolve_context(
    length: int | None, stride: int | None, max_length: int | None = None
) -> tuple[int, int]:
    """(length, stride) with the defaults filled in: length 16 (at most the adapter's
    ``max_length`` positions), stride 4 (at most the length)."""
    if length is None:
        length = DEFAULT_CONTEXT_LENGTH if max_length is None else min(16, max_length)
    if max_length is not None and length > max_length:
        raise ValueError(
            f"--context-length {length} is longer than the motion adapter's {max_length} "
            "positions (motion_max_seq_length); give at most that"
        )
    if stride is None:
        stride = min(DEFAULT_CONTEXT_STRIDE, length)
    check_context(length, stride)
    return length, stride


def context_windows(n_frames: int, length: int, stride: int) -> list[tuple[int, int]]:
    """Windows [start, end) of ``length`` frames whose starts are ``stride`` apart, plus one ending
    on the last frame when the stride does not land there; one window of every frame when the
    video is not longer than ``length``."""
    check_context(length, stride)
    if n_frames <= length:
        return [(0, n_frames)]
    windows = [(start, start + length) for start in range(0, n_frames - length + 1, stride)]
    if windows[-1][1] < n_frames:
        windows.append((n_frames - length, n_frames))
    return windows


def window_weights(length: int, weighting: str = "pyramid") -> list[float]:
    """Per-position weights of a window of ``length`` frames: "pyramid" 1, 2, ..., 2, 1 (for 4:
    1, 2, 2, 1; for 5: 1, 2, 3, 2, 1) or "flat" (all 1)."""
    check_context(length, None, weighting)
    if weighting == "flat":
        return [1.0] * length
    half = list(range(1, (length + 1) // 2 + 1))
    mirrored = half[: length // 2][::-1]
    return [float(x) for x in half + mirrored]
