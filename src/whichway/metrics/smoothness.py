"""Path statistics from per-step perceptual distances: PPL, smoothness, consistency.

Given the distances ``d_k = D(frame_k, frame_{k+1})`` between consecutive frames of an
interpolation path (LPIPS in practice, see :mod:`whichway.metrics.lpips_path`), these are the
numbers the papers report:

* perceptual path length as paper A (Karris et al., arXiv 2511.12757) uses it,
  :math:`\\mathrm{PPL} = \\sum_k d_k`;
* the StyleGAN-style normalisation by the step in ``t`` (Karras et al. 2019 divide by the squared
  step :math:`\\varepsilon^2`), here summed over the path,
  :math:`\\mathrm{PPL}_{\\Delta t} = \\sum_k d_k / \\Delta t_k^2`;
* smoothness :math:`1 - G(d)` with :math:`G` the Gini coefficient, and consistency
  :math:`\\bar d = \\frac{1}{T-1}\\sum_k d_k`, as AID (He et al. 2024, "AID: Attention
  Interpolation of Text-to-Image Diffusion") and PAID define them;
* the largest single step :math:`\\max_k d_k` (a jump in the middle of a morph).

Pure tensor math: no model, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from whichway._checks import as_tensor, as_times, check_finite

__all__ = ["PathMetrics", "gini", "path_metrics_from_steps"]


def gini(x: Tensor) -> Tensor:
    """Gini coefficient of a non-negative vector, in float64.

    For :math:`x` sorted ascending, :math:`x_{(1)} \\le \\dots \\le x_{(n)}`,

    .. math::
        G(x) = \\frac{\\sum_{i=1}^{n} (2i - n - 1)\\, x_{(i)}}{n \\sum_{i=1}^{n} x_{(i)}}
             = \\frac{\\sum_{i,j} |x_i - x_j|}{2 n^2 \\bar x},

    which is 0 for equal entries and :math:`(n-1)/n` when one entry holds everything. A vector of
    zeros (a path that does not move) has no inequality: :math:`G = 0` by definition here, so its
    smoothness :math:`1 - G` is 1.

    Parameters
    ----------
    x : Tensor (n,)
        Non-negative values, n >= 1.

    Returns
    -------
    Tensor () float64 on ``x``'s device.
    """
    x = as_tensor("x", x)
    if x.ndim != 1 or x.numel() == 0:
        raise ValueError(f"x must be a non-empty 1-D tensor (n,), got shape {tuple(x.shape)}")
    check_finite("x", x)
    if (x < 0).any():
        raise ValueError(
            f"x must be non-negative for a Gini coefficient, got min {float(x.min()):.3g}"
        )
    v = x.to(torch.float64).sort().values
    n = v.numel()
    total = v.sum()
    if total <= 0:
        return torch.zeros((), dtype=torch.float64, device=x.device)
    ranks = torch.arange(1, n + 1, dtype=torch.float64, device=x.device)
    return ((2 * ranks - n - 1) * v).sum() / (n * total)


@dataclass(frozen=True)
class PathMetrics:
    """Perceptual statistics of one interpolation path.

    Attributes
    ----------
    steps : Tensor (T-1,) float64
        Per-step distances :math:`d_k = D(\\text{frame}_k, \\text{frame}_{k+1})`.
    t : Tensor (T,) float64
        Interpolation times of the frames (uniform on [0, 1] when not given).
    ppl : float
        Perceptual path length as paper A reports it, :math:`\\sum_k d_k`.
    ppl_normalized : float
        StyleGAN-style normalisation by the time step, :math:`\\sum_k d_k / \\Delta t_k^2`
        with :math:`\\Delta t_k = t_{k+1} - t_k` (for uniform steps this is :math:`(T-1)^2\\,\\mathrm{PPL}`).
    smoothness : float
        :math:`1 - G(d)`, with :math:`G` the Gini coefficient of the steps (1 = all steps equal).
    consistency : float
        Mean step :math:`\\frac{1}{T-1}\\sum_k d_k` (lower = consecutive frames more alike).
    max_step : float
        Largest single step :math:`\\max_k d_k`.
    """

    steps: Tensor
    t: Tensor
    ppl: float
    ppl_normalized: float
    smoothness: float
    consistency: float
    max_step: float

    @property
    def n_frames(self) -> int:
        """Number of frames T."""
        return int(self.t.numel())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (plain floats and lists)."""
        return {
            "ppl": self.ppl,
            "ppl_normalized": self.ppl_normalized,
            "smoothness": self.smoothness,
            "consistency": self.consistency,
            "max_step": self.max_step,
            "n_frames": self.n_frames,
            "steps": [float(v) for v in self.steps.tolist()],
            "t": [float(v) for v in self.t.tolist()],
        }


def _check_path_times(
    t: Tensor | list[float] | None, n_frames: int, device: torch.device
) -> Tensor:
    if t is None:
        return torch.linspace(0.0, 1.0, n_frames, dtype=torch.float64, device=device)
    times, _ = as_times(t, dtype=torch.float64, device=device)
    if times.numel() != n_frames:
        raise ValueError(
            f"t has {times.numel()} values but the path has {n_frames} frames; give one t per frame"
        )
    dt = times.diff()
    if not ((dt > 0).all() or (dt < 0).all()):
        raise ValueError(
            "t must be strictly monotonic (every step Δt_k = t_{k+1} - t_k nonzero and of one sign), "
            f"got t = {times.tolist()}"
        )
    return times


def path_metrics_from_steps(steps: Tensor, t: Tensor | list[float] | None = None) -> PathMetrics:
    """Path statistics from per-step distances (see :class:`PathMetrics` for the formulas).

    Parameters
    ----------
    steps : Tensor (T-1,)
        Non-negative distances between consecutive frames, T >= 2.
    t : Tensor (T,) or list of float, optional
        The frames' interpolation times in [0, 1], strictly monotonic; uniform if omitted.

    Returns
    -------
    PathMetrics
    """
    steps = as_tensor("steps", steps)
    if steps.ndim != 1 or steps.numel() < 1:
        raise ValueError(
            f"steps must be a 1-D tensor (T-1,) with at least one step (two frames), got shape {tuple(steps.shape)}"
        )
    check_finite("steps", steps)
    if (steps < 0).any():
        raise ValueError(f"steps must be non-negative distances, got min {float(steps.min()):.3g}")
    d = steps.detach().to(torch.float64)
    times = _check_path_times(t, d.numel() + 1, d.device)
    dt = times.diff()
    return PathMetrics(
        steps=d,
        t=times,
        ppl=float(d.sum()),
        ppl_normalized=float((d / dt.square()).sum()),
        smoothness=float(1.0 - gini(d)),
        consistency=float(d.mean()),
        max_step=float(d.max()),
    )
