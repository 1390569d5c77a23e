"""Perceptual frame spacing: choose t so consecutive frames are equally far apart.

A morph rendered at uniform t often crawls for most of the path and jumps in a few steps (the
image changes most where the conditioning crosses a decision boundary). Treat the perceptual
distance along the path as arc length: from frames rendered at knots :math:`t_0 < \\dots < t_M`
with step distances :math:`d_k`, the cumulative distance

.. math::
    s(t_j) = \\sum_{k < j} d_k, \\qquad S = s(t_M),

interpolated linearly between knots, is a non-decreasing map :math:`[t_0, t_M] \\to [0, S]`.
Its inverse at :math:`S\\,i/(N-1)`, :math:`i = 0..N-1`, gives N times whose frames are (up to the
linear interpolation) equally far apart. A refinement round renders at those times, merges them
with the knots already measured (a finer estimate of :math:`s`), and inverts again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from whichway._checks import as_tensor, check_finite

if TYPE_CHECKING:
    from whichway.metrics.lpips_path import LPIPSPath

__all__ = ["RespaceResult", "invert_cumulative", "respace"]

logger = logging.getLogger(__name__)

Render = Callable[[Tensor], Tensor]
Distance = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class RespaceResult:
    """Perceptually re-spaced times and the frames rendered at them.

    Attributes
    ----------
    t : Tensor (N,) float64
        New times, strictly increasing, endpoints equal to the coarse grid's (0 and 1 by default).
    frames : Tensor (N, 3, H, W)
        ``render(t)``.
    steps_after : Tensor (N-1,) float64
        Distances between consecutive frames at ``t``.
    t_coarse : Tensor (M,) float64
        The coarse grid rendered first.
    steps_before : Tensor (M-1,) float64
        Distances between consecutive coarse frames.
    rounds : int
        Refinement rounds performed.
    n_rendered : int
        Frames rendered in total (coarse pass, refinement passes and the final pass).
    """

    t: Tensor
    frames: Tensor
    steps_after: Tensor
    t_coarse: Tensor
    steps_before: Tensor
    rounds: int
    n_rendered: int

    @staticmethod
    def _spread(steps: Tensor) -> float:
        mean = steps.mean()
        return float((steps.max() - steps.min()) / mean) if mean > 0 else 0.0

    @property
    def spread_before(self) -> float:
        """(max − min) / mean of the coarse steps (0 = perfectly even)."""
        return self._spread(self.steps_before)

    @property
    def spread_after(self) -> float:
        """(max − min) / mean of the re-spaced steps (0 = perfectly even)."""
        return self._spread(self.steps_after)


def invert_cumulative(knots: Tensor, steps: Tensor, n: int) -> Tensor:
    """Times at equal fractions of the piecewise-linear cumulative distance.

    Parameters
    ----------
    knots : Tensor (M,)
        Strictly increasing times.
    steps : Tensor (M-1,)
        Non-negative distances between consecutive knots, not all zero.
    n : int
        Number of times wanted, n >= 2.

    Returns
    -------
    Tensor (n,) float64: :math:`s^{-1}(S\\,i/(n-1))`, first and last equal to the end knots,
    strictly increasing.
    """
    t = knots.to(torch.float64)
    d = steps.to(device=t.device, dtype=torch.float64)
    cum = torch.cat([d.new_zeros(1), d.cumsum(0)])
    total = cum[-1]
    targets = total * torch.linspace(0.0, 1.0, n, dtype=torch.float64, device=t.device)
    # Segment k with cum[k] <= target < cum[k+1]; zero-length segments are skipped by searchsorted.
    k = (torch.searchsorted(cum, targets, right=True) - 1).clamp(0, d.numel() - 1)
    seg = d[k]
    frac = torch.where(
        seg > 0, (targets - cum[k]) / seg.clamp_min(torch.finfo(torch.float64).tiny), 0.0
    )
    out = t[k] + frac.clamp(0, 1) * (t[k + 1] - t[k])
    out[0], out[-1] = t[0], t[-1]
    return out


def _check_grid(name: str, t: Tensor) -> Tensor:
    t = as_tensor(name, t).to(torch.float64)
    if t.ndim != 1 or t.numel() < 2:
        raise ValueError(
            f"{name} must be a 1-D tensor of at least 2 times, got shape {tuple(t.shape)}"
        )
    check_finite(name, t)
    if (t < 0).any() or (t > 1).any() or not (t.diff() > 0).all():
        raise ValueError(f"{name} must be strictly increasing times in [0, 1], got {t.tolist()}")
    return t


def _rendered(render: Render, t: Tensor) -> Tensor:
    frames = render(t)
    if (
        not isinstance(frames, Tensor)
        or frames.ndim != 4
        or frames.shape[0] != t.numel()
        or frames.shape[1] != 3
    ):
        got = tuple(frames.shape) if isinstance(frames, Tensor) else type(frames).__name__
        raise ValueError(
            f"render(t) must return frames ({t.numel()}, 3, H, W) for {t.numel()} times, got {got}"
        )
    return frames


def _measured(distance: Distance, frames: Tensor) -> Tensor:
    d = distance(frames)
    if not isinstance(d, Tensor) or d.shape != (frames.shape[0] - 1,):
        got = tuple(d.shape) if isinstance(d, Tensor) else type(d).__name__
        raise ValueError(
            f"distance(frames) must return ({frames.shape[0] - 1},) step distances, got {got}"
        )
    d = d.detach().to(torch.float64).cpu()
    if not torch.isfinite(d).all() or (d < 0).any():
        raise ValueError(
            f"distance(frames) must return finite non-negative distances, got {d.tolist()}"
        )
    return d


def respace(
    render: Render,
    n_frames: int,
    *,
    coarse: Tensor | None = None,
    distance: Distance | LPIPSPath | None = None,
    refine: int = 1,
) -> RespaceResult:
    """Render a path at times chosen so consecutive frames are equally far apart perceptually.

    Parameters
    ----------
    render : callable ``t (T,) float64 -> frames (T, 3, H, W)``
        Renders the path at the given times (deterministic in t: same latents, same seed).
    n_frames : int
        Number of output frames N >= 2.
    coarse : Tensor (M,), optional
        First-pass grid, strictly increasing in [0, 1]; default ``linspace(0, 1, N)``.
    distance : callable ``frames (T, 3, H, W) -> (T-1,)`` or LPIPSPath, optional
        Step distance; default an AlexNet :class:`~whichway.metrics.LPIPSPath` (pretrained).
    refine : int
        Refinement rounds (0 = invert the coarse measurement once). Each round renders N frames
        at the current estimate and merges their measured steps into the knots.

    Returns
    -------
    RespaceResult
    """
    if not isinstance(n_frames, int) or n_frames < 2:
        raise ValueError(f"n_frames must be an integer >= 2, got {n_frames!r}")
    if not isinstance(refine, int) or refine < 0:
        raise ValueError(f"refine must be a non-negative integer, got {refine!r}")
    if not callable(render):
        raise ValueError(f"render must be a callable t -> frames, got {type(render).__name__}")
    grid = (
        torch.linspace(0.0, 1.0, n_frames, dtype=torch.float64)
        if coarse is None
        else _check_grid("coarse", coarse)
    )
    grid = grid.cpu()
    if distance is None:
        from whichway.metrics.lpips_path import LPIPSPath

        distance = LPIPSPath("alex")
    measure: Distance = distance.distances if hasattr(distance, "distances") else distance  # type: ignore[union-attr]
    if not callable(measure):
        raise ValueError(
            f"distance must be a callable frames -> (T-1,) distances or an LPIPSPath, got {type(distance).__name__}"
        )

    frames = _rendered(render, grid)
    steps_before = _measured(measure, frames)
    n_rendered = grid.numel()
    knots, knot_frames, knot_steps = grid, frames, steps_before

    rounds = 0
    while True:
        if float(knot_steps.sum()) <= 0:
            logger.warning(
                "every frame of the path looks the same to the distance; keeping uniform spacing"
            )
            t = torch.linspace(float(grid[0]), float(grid[-1]), n_frames, dtype=torch.float64)
        else:
            t = invert_cumulative(knots, knot_steps, n_frames)
        frames = _rendered(render, t)
        n_rendered += t.numel()
        if rounds >= refine:
            steps_after = _measured(measure, frames)
            break
        rounds += 1
        # Merge the new samples into the knots (times already measured keep their frames).
        all_t = torch.cat([knots, t])
        all_frames = torch.cat([knot_frames, frames.to(knot_frames.device, knot_frames.dtype)])
        order = torch.argsort(all_t, stable=True)
        all_t, all_frames = all_t[order], all_frames[order]
        keep = torch.cat([torch.tensor([True]), all_t.diff() > 1e-12])
        knots, knot_frames = all_t[keep], all_frames[keep]
        knot_steps = _measured(measure, knot_frames)
    return RespaceResult(
        t=t,
        frames=frames,
        steps_after=steps_after,
        t_coarse=grid,
        steps_before=steps_before,
        rounds=rounds,
        n_rendered=n_rendered,
    )
