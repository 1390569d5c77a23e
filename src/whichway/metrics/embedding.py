"""Embedding-space measurements of a prompt path, reported beside PPL.

Paper A (Karris et al., arXiv 2511.12757) reports, next to the perceptual path length of the
rendered frames, the coupling cost of each path in the text-embedding space. For token clouds
:math:`x, y \\in \\mathbb{R}^{n \\times d}` and a coupling :math:`\\sigma`:

* coupling cost :math:`C(\\sigma) = \\sum_i \\|x_i - y_{\\sigma(i)}\\|^2`;
* the W₂ length of the discrete displacement path :math:`E_{t_k}[i] = (1-t_k) x_i + t_k y_{\\sigma(i)}`,
  :math:`L = \\sum_k W_2(E_{t_k}, E_{t_{k+1}})`, which is at least :math:`W_2(x, y)` and equals it
  for the OT coupling (a constant-speed geodesic);
* the stretch :math:`L / W_2(x, y) \\ge 1` (1 for OT; how much longer another coupling's path is).

Thin layer over :mod:`whichway.clouds`: no model, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["EmbeddingPathMetrics", "embedding_path_metrics"]


@dataclass(frozen=True)
class EmbeddingPathMetrics:
    """Coupling cost and W₂ lengths of one prompt path (or a batch of them).

    Attributes
    ----------
    method : str
        The coupling (``"ot"``, ``"clip"`` or ``"random"``).
    cost : float or Tensor (B,) float64
        :math:`C(\\sigma) = \\sum_i \\|x_i - y_{\\sigma(i)}\\|^2`.
    w2 : float or Tensor (B,) float64
        :math:`W_2(x, y)`, the geodesic length any path is compared with.
    path_length_w2 : float or Tensor (B,) float64
        :math:`\\sum_k W_2(E_{t_k}, E_{t_{k+1}})` over the displacement path at ``ts``.
    stretch : float or Tensor (B,) float64
        ``path_length_w2 / w2`` (NaN when x and y coincide, ``w2 = 0``).
    """

    method: str
    cost: float | Tensor
    w2: float | Tensor
    path_length_w2: float | Tensor
    stretch: float | Tensor

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (lists for batches)."""

        def plain(v: float | Tensor) -> float | list[float]:
            return v.tolist() if isinstance(v, Tensor) else float(v)

        return {
            "method": self.method,
            "cost": plain(self.cost),
            "w2": plain(self.w2),
            "w2_path_length": plain(self.path_length_w2),
            "stretch": plain(self.stretch),
        }


def embedding_path_metrics(
    x: Tensor,
    y: Tensor,
    ts: Tensor | Sequence[float],
    method: str = "ot",
    *,
    generator: torch.Generator | None = None,
    x_weights: Tensor | Sequence[float] | None = None,
    y_weights: Tensor | Sequence[float] | None = None,
) -> EmbeddingPathMetrics:
    """Coupling cost, W₂ distance, W₂ path length and stretch of the displacement path x → y.

    Parameters
    ----------
    x, y : Tensor (n, d), or batches (B, n, d)
        Token clouds of the two prompts (for unequal sizes or weights see :func:`whichway.couple`).
    ts : Tensor (T,) or sequence of float
        The path's times in [0, 1] (T >= 2), e.g. the frames' t.
    method : {"ot", "clip", "random"}
        Coupling, as in :func:`whichway.couple`.
    generator : torch.Generator, optional
        Randomness of the ``"random"`` coupling.
    x_weights, y_weights : Tensor (n,), (m,), optional
        Token masses (general OT case); the path's steps are then measured with ``x_weights``.

    Returns
    -------
    EmbeddingPathMetrics
    """
    from whichway.clouds import couple, interpolate_clouds, path_length_w2, wasserstein2

    times = torch.as_tensor(ts, dtype=torch.float64)
    if times.ndim != 1 or times.numel() < 2:
        raise ValueError(
            f"ts must be a 1-D sequence of at least 2 times, got shape {tuple(times.shape)}"
        )
    coupling = couple(x, y, method, generator=generator, x_weights=x_weights, y_weights=y_weights)
    path = interpolate_clouds(
        x, y, times, coupling=coupling, x_weights=x_weights, y_weights=y_weights
    )
    # (T, n, d) or (B, T, n, d); lengths measured in float64 so the OT identity L = W2 holds tightly
    length = path_length_w2(path.to(torch.float64), weights=x_weights)
    w2 = wasserstein2(x, y, x_weights=x_weights, y_weights=y_weights)
    if isinstance(w2, Tensor):
        length_t = torch.as_tensor(length, dtype=torch.float64, device=w2.device)
        stretch: float | Tensor = torch.where(w2 > 0, length_t / w2.clamp_min(1e-300), torch.nan)
    else:
        stretch = float(length) / w2 if w2 > 0 else math.nan
    return EmbeddingPathMetrics(
        method=method, cost=coupling.cost, w2=w2, path_length_w2=length, stretch=stretch
    )
