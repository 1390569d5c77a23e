"""Perceptual pacing, measured: a coarse pass renders every segment at a few local times and
measures the LPIPS steps between consecutive frames (:func:`measure_coarse`), from which
:func:`whichway.travel.plan.plan_travel` places every frame; the steps between the finished frames
say how even the result is (:func:`spread_of`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

    from whichway.travel.rendering import Renderer


def meter_name(meter: Any) -> str:
    """What measured the perceptual distances: an LPIPSPath's network and backbone weights, or a
    plain callable's name (run.json records it; other distances are measured again)."""
    if hasattr(meter, "net") and hasattr(meter, "pretrained_backbone"):
        return f"lpips-{meter.net}-{'pretrained' if meter.pretrained_backbone else 'random'}"
    return getattr(meter, "__qualname__", type(meter).__qualname__)


def coarse_positions(n_key: int, coarse: int) -> list[tuple[int, float]]:
    """Journey order: every segment at ``coarse`` equally spaced local times, keyframes shared."""
    out = [(k, j / (coarse - 1)) for k in range(n_key - 1) for j in range(coarse - 1)]
    return out + [(n_key - 2, 1.0)]


def measure_coarse(
    renderer: Renderer, n_key: int, coarse: int, measure: Callable[[Tensor], Tensor]
) -> list[tuple[list[float], list[float]]]:
    """Render the coarse pass chunk by chunk and measure consecutive LPIPS steps across the whole
    journey (never more than a chunk of frames in memory); per segment (knots, steps)."""
    import torch

    positions = coarse_positions(n_key, coarse)
    steps: list[float] = []
    prev: list[Tensor] = []

    def measured(chunk: Tensor) -> None:
        frames = torch.cat([*prev, chunk])
        if len(frames) > 1:
            steps.extend(float(x) for x in measure(frames).detach().double().cpu())
        prev[:] = [chunk[-1:]]

    renderer.render(positions, on_chunk=measured)
    knots = [j / (coarse - 1) for j in range(coarse)]
    per = coarse - 1
    return [(knots, steps[k * per : (k + 1) * per]) for k in range(n_key - 1)]


def spread_of(steps: Sequence[float]) -> float:
    """(max − min) / mean of a list of steps (0 = perfectly even)."""
    mean = sum(steps) / len(steps) if steps else 0.0
    return (max(steps) - min(steps)) / mean if mean > 0 else 0.0


def measure_frames(
    paths: Sequence[Path], measure: Callable[[Tensor], Tensor], chunk: int = 32
) -> list[float]:
    """LPIPS steps between consecutive frame files, read ``chunk`` at a time."""
    import torch

    from whichway.media import load_image

    out: list[float] = []
    prev = None
    for start in range(0, len(paths), chunk):
        frames = torch.stack([load_image(p) for p in paths[start : start + chunk]])
        both = frames if prev is None else torch.cat([prev, frames])
        if len(both) > 1:
            out.extend(float(x) for x in measure(both).detach().double().cpu())
        prev = frames[-1:]
    return out


def lpips_measure(meter: Any) -> tuple[Any, Callable[[Tensor], Tensor]]:
    """The meter (an AlexNet :class:`whichway.metrics.LPIPSPath` when None) and its distance
    function, frames (T, 3, H, W) -> steps (T-1,)."""
    if meter is None:
        from whichway.metrics import LPIPSPath

        meter = LPIPSPath("alex")
    return meter, (meter.distances if hasattr(meter, "distances") else meter)


def reused_distances(
    previous: dict[str, Any] | None, coarse: int, meter: Any
) -> list[tuple[list[float], list[float]]] | None:
    """The previous run's coarse-pass distances, kept only if the same meter measured them with
    the same number of coarse frames (None: measure again)."""
    old = (previous or {}).get("perceptual") or {}
    if (
        old.get("coarse") == coarse
        and old.get("meter") == meter_name(meter)
        and old.get("distances")
    ):
        return [(list(a), list(b)) for a, b in old["distances"]]
    return None


def distances_record(
    coarse: int, meter: Any, measured: Sequence[tuple[Sequence[float], Sequence[float]]]
) -> dict[str, Any]:
    """The ``run.json`` ``"perceptual"`` entry of a coarse pass."""
    return {
        "coarse": coarse,
        "meter": meter_name(meter),
        "distances": [[a, b] for a, b in measured],
    }


def steps_after(
    frames: Sequence[Path],
    measure: Callable[[Tensor], Tensor],
    meter: Any,
    previous: dict[str, Any] | None,
    rendered: int,
) -> list[float]:
    """LPIPS steps between the finished frames; a run that rendered nothing keeps the steps its
    previous run measured on the same frames with the same meter."""
    old = (previous or {}).get("perceptual") or {}
    old_after = old.get("steps_after")
    if (
        rendered == 0
        and old_after is not None
        and len(old_after) == len(frames) - 1
        and old.get("meter") == meter_name(meter)
    ):
        return list(old_after)
    return measure_frames(frames, measure)
