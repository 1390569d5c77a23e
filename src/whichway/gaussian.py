r"""Gaussian latent geometry: COG combinations, subspaces, and the LERP / SLERP / NAO baselines.

Diffusion and flow-matching models start generation from a latent drawn i.i.d. from
:math:`\mathcal N(\mu, \Sigma)` (usually :math:`\mathcal N(0, I)`). A linear combination
:math:`y = \sum_k w_k x_k` of such latents is :math:`\mathcal N(\alpha\mu, \beta\Sigma)` with
:math:`\alpha = \sum_k w_k`, :math:`\beta = \sum_k w_k^2`, so plain interpolation and averaging
produce latents the model never saw in training (LERP at :math:`t = 1/2` has variance 1/2, the
centroid of K latents variance 1/K). COG (*Combination of Gaussian variables*, "Linear
combinations of latents in diffusion models: interpolation and beyond") re-standardises the
combination,

.. math::

    z = \Big(1 - \frac{\alpha}{\sqrt\beta}\Big)\mu + \frac{1}{\sqrt\beta}\sum_k w_k x_k
    \;\sim\; \mathcal N(\mu, \Sigma) \quad\text{for every } w \ne 0,

which gives interpolation (:math:`w = (1-t, t)`), centroids (:math:`w_k = 1/K`) and whole
low-dimensional subspaces (:class:`LatentSubspace`) of valid latents.

Every latent of any shape ``(*shape)`` is treated as one vector of ``D = prod(shape)``
elements. Device and dtype come from the inputs; norms, angles, QR and the combinations
themselves are computed in float64 and cast back to the input dtype.

The baselines are LERP, SLERP, the Euclidean / standardised / mode-norm centroids, and NAO
(Norm-Aware Optimisation, Samuel et al. 2024, "Norm-guided latent space exploration for
text-to-image generation"), reimplemented device-agnostically in float64.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from whichway._checks import as_tensor, as_times, check_finite, check_same

__all__ = [
    "LatentSubspace",
    "NAOCentroid",
    "NAOPath",
    "cog",
    "cog_centroid",
    "cog_iid",
    "cog_interpolate",
    "euclidean_centroid",
    "lerp",
    "mode_norm_centroid",
    "nao_centroid",
    "nao_interpolate",
    "pick_interior",
    "slerp",
    "standardized_centroid",
]

logger = logging.getLogger(__name__)

_F64 = torch.float64
#: Below this β = Σ w² the weights are treated as all zero and COG is undefined.
BETA_MIN = 1e-30
#: SLERP falls back to LERP when |cos θ| exceeds this (nearly parallel endpoints).
SLERP_DOT_THRESHOLD = 0.9995

Times = float | Sequence[float] | Tensor


# --------------------------------------------------------------------------------------------
# validation helpers (thin wrappers over whichway._checks)
# --------------------------------------------------------------------------------------------


def _check_latents(name: str, latents: object) -> Tensor:
    """A finite floating tensor (K, *shape) with K >= 1."""
    x = as_tensor(name, latents)
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(
            f"{name} must be a tensor (K, *shape) holding K >= 1 latents, got shape {tuple(x.shape)}"
        )
    check_finite(name, x)
    return x


def _check_pair(x0: object, x1: object) -> tuple[Tensor, Tensor]:
    a = as_tensor("x0", x0)
    b = as_tensor("x1", x1)
    check_same("x0", a, "x1", b)
    check_finite("x0", a)
    check_finite("x1", b)
    return a, b


def _as_weights(weights: object, k: int, device: torch.device) -> tuple[Tensor, bool]:
    """Weights as float64 (B, K) on ``device``; also whether a single (K,) vector was given."""
    if isinstance(weights, Tensor):
        if not (weights.is_floating_point() or weights.dtype in (torch.int32, torch.int64)):
            raise ValueError(f"weights must be a real tensor, got dtype {weights.dtype}")
        w = weights.detach().to(device=device, dtype=_F64)
    else:
        try:
            w = torch.as_tensor(weights, dtype=_F64, device=device)
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"weights must be a tensor or a sequence of numbers (K,) or (B, K), got {weights!r}"
            ) from err
    if w.ndim not in (1, 2) or w.shape[-1] != k or w.numel() == 0:
        raise ValueError(
            f"weights must have shape (K,) = ({k},) or (B, K) = (B, {k}) to match {k} latent(s), "
            f"got {tuple(w.shape)}"
        )
    check_finite("weights", w)
    return (w.unsqueeze(0), False) if w.ndim == 1 else (w, True)


def _as_mean(mean: object, shape: torch.Size, device: torch.device) -> Tensor | None:
    """The latent mean μ flattened to float64 (D,), or None for μ = 0."""
    if mean is None:
        return None
    if isinstance(mean, (int, float)) and not isinstance(mean, bool):
        if not math.isfinite(mean):
            raise ValueError(f"mean must be finite, got {mean}")
        if mean == 0:
            return None
        return torch.full((math.prod(shape),), float(mean), dtype=_F64, device=device)
    if not isinstance(mean, Tensor):
        raise ValueError(
            f"mean must be None, a number, or a tensor broadcastable to {tuple(shape)}, "
            f"got {type(mean).__name__}"
        )
    mu = as_tensor("mean", mean)
    check_finite("mean", mu)
    if mu.device != device:
        raise ValueError(f"mean must be on the latents' device {device}, got {mu.device}")
    try:
        broadcast = torch.broadcast_shapes(mu.shape, shape)
    except RuntimeError:
        broadcast = None
    if broadcast != shape:
        raise ValueError(
            f"mean of shape {tuple(mu.shape)} does not broadcast to the latent shape {tuple(shape)}"
        )
    return mu.to(_F64).expand(shape).reshape(-1)


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_positive(name: str, value: object, *, allow_zero: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)


# --------------------------------------------------------------------------------------------
# COG
# --------------------------------------------------------------------------------------------


def _cog64(x: Tensor, w: Tensor, mu: Tensor | None) -> Tensor:
    """COG on flat float64 data: x (K, D), w (B, K), mu (D,) or None -> (B, D)."""
    alpha = w.sum(dim=1)
    beta = (w * w).sum(dim=1)
    small = beta < BETA_MIN
    if bool(small.any()):
        rows = torch.nonzero(small).flatten().tolist()[:5]
        raise ValueError(
            f"COG is undefined for weights with beta = sum(w**2) < {BETA_MIN:g} (all (near) zero); "
            f"offending weight row(s) {rows}: give at least one non-zero weight per combination"
        )
    root = beta.sqrt()
    z = (w / root[:, None]) @ x  # y / sqrt(beta), eq. (3) of the COG paper with mu = 0
    if mu is not None:
        z = z + (1.0 - alpha / root)[:, None] * mu  # (1 - alpha / sqrt(beta)) * mu
    return z


def cog(
    latents: Tensor, weights: Tensor | Sequence[float], *, mean: float | Tensor | None = None
) -> Tensor:
    r"""Combine latents with COG so that the result follows the latents' own Gaussian.

    .. math::

        z = \Big(1 - \frac{\alpha}{\sqrt\beta}\Big)\mu + \frac{\sum_k w_k x_k}{\sqrt\beta},
        \qquad \alpha = \sum_k w_k,\; \beta = \sum_k w_k^2

    If :math:`x_k \sim \mathcal N(\mu, \Sigma)` i.i.d. then :math:`z \sim \mathcal N(\mu, \Sigma)`
    for any non-zero ``w`` (COG paper, eq. 2-3). With one-hot weights ``z`` is exactly that latent.

    Parameters
    ----------
    latents : Tensor (K, *shape)
        K latents of any shape, each treated as one vector.
    weights : Tensor (K,) or (B, K)
        Combination weights; B combinations are computed in one call. Moved to the latents'
        device; combined in float64.
    mean : None, float, or Tensor broadcastable to (*shape)
        The latents' mean μ (None: μ = 0).

    Returns
    -------
    Tensor (*shape) for weights (K,), or (B, *shape) for weights (B, K); latents' dtype.

    Raises
    ------
    ValueError
        Empty, non-finite or mis-shaped inputs, and weights with β = Σw² below ``BETA_MIN``.
    """
    x = _check_latents("latents", latents)
    k, shape = x.shape[0], x.shape[1:]
    w, batched = _as_weights(weights, k, x.device)
    mu = _as_mean(mean, shape, x.device)
    z = _cog64(x.reshape(k, -1).to(_F64), w, mu).reshape(w.shape[0], *shape).to(x.dtype)
    return z if batched else z[0]


def cog_interpolate(
    x0: Tensor, x1: Tensor, t: Times, *, mean: float | Tensor | None = None
) -> Tensor:
    r"""COG interpolation: weights :math:`w = (1 - t, t)`.

    With μ = 0 this is :math:`z_t = ((1-t)x_0 + t x_1) / \sqrt{(1-t)^2 + t^2}`; every
    :math:`z_t \sim \mathcal N(\mu, \Sigma)`. The endpoints are returned exactly.

    Parameters
    ----------
    x0, x1 : Tensor (*shape)
        Endpoint latents (same shape, dtype and device).
    t : float in [0, 1], or 1-D Tensor / sequence (T,)
    mean : see :func:`cog`.

    Returns
    -------
    Tensor (*shape) for a float ``t``, else (T, *shape).
    """
    a, b = _check_pair(x0, x1)
    times, scalar = as_times(t, dtype=_F64, device=a.device)
    w = torch.stack([1.0 - times, times], dim=1)
    mu = _as_mean(mean, a.shape, a.device)
    x = torch.stack([a.reshape(-1), b.reshape(-1)]).to(_F64)
    z = _cog64(x, w, mu).reshape(-1, *a.shape).to(a.dtype)
    return z[0] if scalar else z


def cog_centroid(latents: Tensor, *, mean: float | Tensor | None = None) -> Tensor:
    r"""COG centroid: weights :math:`w_k = 1/K`, i.e. :math:`z = \mu + \sum_k (x_k - \mu)/\sqrt K`.

    Parameters
    ----------
    latents : Tensor (K, *shape)
    mean : see :func:`cog`.

    Returns
    -------
    Tensor (*shape), distributed as one latent (not with variance 1/K like the plain mean).
    """
    x = _check_latents("latents", latents)
    k = x.shape[0]
    w = torch.full((1, k), 1.0 / k, dtype=_F64, device=x.device)
    mu = _as_mean(mean, x.shape[1:], x.device)
    return _cog64(x.reshape(k, -1).to(_F64), w, mu).reshape(x.shape[1:]).to(x.dtype)


def cog_iid(
    latents: Tensor,
    weights: Tensor | Sequence[float],
    cdf: Callable[[Tensor], Tensor],
    icdf: Callable[[Tensor], Tensor],
    *,
    clamp: float = 1e-12,
) -> Tensor:
    r"""COG for latents with a non-Gaussian i.i.d. element distribution F.

    Each element is mapped to a standard normal, combined, and mapped back:

    .. math::

        g_k = \Phi^{-1}(F(x_k)),\qquad z = \mathrm{COG}_w(g_1, \dots, g_K),\qquad
        \text{out} = F^{-1}(\Phi(z)),

    so ``out`` has i.i.d. elements distributed as F again. Probabilities are clamped to
    ``[clamp, 1 - clamp]`` before :math:`\Phi^{-1}` and :math:`F^{-1}` so that neither returns inf.

    Parameters
    ----------
    latents : Tensor (K, *shape)
    weights : Tensor (K,) or (B, K)
    cdf : callable, Tensor -> Tensor
        Elementwise F; called with a float64 tensor (K, *shape), must return the same shape.
    icdf : callable, Tensor -> Tensor
        Elementwise F⁻¹; called with float64 probabilities, must return the same shape.
    clamp : float in (0, 0.5)

    Returns
    -------
    Tensor (*shape) or (B, *shape) in the latents' dtype.
    """
    x = _check_latents("latents", latents)
    if not callable(cdf) or not callable(icdf):
        raise ValueError(
            "cdf and icdf must be callables mapping a tensor to a tensor of the same shape"
        )
    if not (isinstance(clamp, float) and 0.0 < clamp < 0.5):
        raise ValueError(f"clamp must be a float in (0, 0.5), got {clamp!r}")
    k, shape = x.shape[0], x.shape[1:]
    w, batched = _as_weights(weights, k, x.device)
    u = cdf(x.to(_F64))
    _check_probabilities("cdf", u, x.shape)
    g = torch.special.ndtri(u.to(_F64).clamp(clamp, 1.0 - clamp))
    z = _cog64(g.reshape(k, -1), w, None)
    p = torch.special.ndtr(z).clamp(clamp, 1.0 - clamp).reshape(w.shape[0], *shape)
    out = icdf(p)
    if not isinstance(out, Tensor) or out.shape != p.shape:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"icdf must return a tensor of shape {tuple(p.shape)}, got {got}")
    check_finite("icdf(...)", out)
    out = out.to(x.dtype)
    return out if batched else out[0]


def _check_probabilities(name: str, u: object, shape: torch.Size) -> None:
    if not isinstance(u, Tensor) or u.shape != shape:
        got = tuple(u.shape) if isinstance(u, Tensor) else type(u).__name__
        raise ValueError(f"{name} must return a tensor of shape {tuple(shape)}, got {got}")
    check_finite(f"{name}(...)", u)
    if bool(((u < 0) | (u > 1)).any()):
        raise ValueError(
            f"{name} must return probabilities in [0, 1], got values in "
            f"[{float(u.min()):.3g}, {float(u.max()):.3g}]"
        )


# --------------------------------------------------------------------------------------------
# subspaces
# --------------------------------------------------------------------------------------------


class LatentSubspace:
    r"""The K-dimensional subspace spanned by K latents, with COG-corrected points.

    With the latents as columns of :math:`X \in \mathbb R^{D\times K}` and the reduced QR
    decomposition :math:`X = QR` (computed in float64), a point with coordinates
    :math:`h \in \mathbb R^K` is :math:`p = Qh`; its weights over the latents are
    :math:`w = X^+ p = X^+ Q h`, and the latent returned is COG of the basis latents with those
    weights, so every point of the subspace is a valid sample (COG paper, Sec. 2 "subspaces").
    Because :math:`X^+ = R^{-1}Q^\top` for full column rank, :math:`X^+Q h = R^{-1}h`, which is
    solved as a triangular system instead of forming the pseudo-inverse.

    Parameters
    ----------
    latents : Tensor (K, *shape)
        K linearly independent latents, K <= D.
    mean : None, float, or Tensor broadcastable to (*shape)
        The latents' mean μ, used by :meth:`point` and :meth:`grid` (see :func:`cog`).
    rtol : float, optional
        Rank tolerance: latent k is dependent when :math:`|R_{kk}| < \text{rtol}\cdot\max_i |R_{ii}|`.
        Default ``max(10 * eps(latents.dtype), max(D, K) * eps(float64))``: a latent that is a
        combination of the others rounded to the input dtype lies ~eps(dtype) off their span, and
        the float64 QR is accurate to the ``numpy.linalg.matrix_rank`` bound (R's diagonal in place
        of the singular values).

    Attributes
    ----------
    latents : Tensor (K, *shape)
    q : Tensor (D, K) float64, orthonormal columns
    r : Tensor (K, K) float64, upper triangular; column k is the coordinate vector h of latent k.
    """

    def __init__(
        self, latents: Tensor, *, mean: float | Tensor | None = None, rtol: float | None = None
    ) -> None:
        x = _check_latents("latents", latents)
        k, shape = x.shape[0], x.shape[1:]
        d = math.prod(shape)
        if k > d:
            raise ValueError(
                f"a subspace of K = {k} latents needs K <= D = {d} (the latent dimension)"
            )
        if rtol is None:
            # a combination rounded to the input dtype sits ~eps(dtype) off the span; the float64
            # QR itself is accurate to ~max(D, K) * eps(float64) (numpy's matrix_rank rule)
            rtol = max(10 * torch.finfo(x.dtype).eps, max(d, k) * torch.finfo(_F64).eps)
        rtol = _check_positive("rtol", rtol)
        x64 = x.reshape(k, d).to(_F64)
        q, r = torch.linalg.qr(x64.T, mode="reduced")
        diag = r.diagonal().abs()
        scale = float(diag.max())
        if scale == 0.0:
            raise ValueError(
                "all latents are zero; a subspace needs K linearly independent latents"
            )
        ratios = (diag / scale).tolist()
        for i, ratio in enumerate(ratios):
            if ratio < rtol:
                if i == 0:
                    raise ValueError(
                        f"latent 0 is (numerically) zero (|R[0,0]| / max|R[i,i]| = {ratio:.2e} < "
                        f"rtol = {rtol:.1e}); a subspace needs K linearly independent latents"
                    )
                raise ValueError(
                    f"latent {i} is linearly dependent on latents 0..{i - 1} "
                    f"(|R[{i},{i}]| / max|R[i,i]| = {ratio:.2e} < rtol = {rtol:.1e}); "
                    "a subspace needs K linearly independent latents: drop or replace it"
                )
        self.latents = x
        self.q = q
        self.r = r
        self._x64 = x64
        self._mean = _as_mean(mean, shape, x.device)
        self._shape = shape

    @property
    def dim(self) -> int:
        """K, the dimension of the subspace."""
        return self.r.shape[0]

    @property
    def coordinates(self) -> Tensor:
        """Tensor (K, K) float64: row k is the coordinate vector h of basis latent k (= Rᵀ)."""
        return self.r.T

    def _as_h(self, h: object) -> tuple[Tensor, bool]:
        k = self.dim
        if isinstance(h, Tensor):
            if not h.is_floating_point():
                raise ValueError(f"h must be a floating tensor, got {h.dtype}")
            hh = h.detach().to(device=self.q.device, dtype=_F64)
        else:
            try:
                hh = torch.as_tensor(h, dtype=_F64, device=self.q.device)
            except (TypeError, ValueError) as err:
                raise ValueError(
                    f"h must be a tensor (K,) or (B, K) with K = {k}, got {h!r}"
                ) from err
        if hh.ndim not in (1, 2) or hh.shape[-1] != k:
            raise ValueError(f"h must have shape (K,) = ({k},) or (B, {k}), got {tuple(hh.shape)}")
        check_finite("h", hh)
        return (hh.unsqueeze(0), False) if hh.ndim == 1 else (hh, True)

    def _weights64(self, h: Tensor) -> Tensor:
        # w = X^+ Q h = R^{-1} h for every row of h (B, K)
        return torch.linalg.solve_triangular(self.r, h.T, upper=True).T

    def project(self, x: Tensor) -> Tensor:
        r"""Coordinates :math:`h = Q^\top x` of latent(s) in the subspace.

        x : Tensor (*shape) or (B, *shape) -> Tensor (K,) or (B, K) in the latents' dtype.
        """
        xx = as_tensor("x", x)
        if xx.dtype != self.latents.dtype or xx.device != self.latents.device:
            raise ValueError(
                f"x must match the basis latents' dtype and device ({self.latents.dtype}, "
                f"{self.latents.device}), got ({xx.dtype}, {xx.device})"
            )
        n = len(self._shape)
        if xx.shape == self._shape:
            batched = False
        elif xx.ndim == n + 1 and xx.shape[1:] == self._shape:
            batched = True
        else:
            raise ValueError(
                f"x must have the latent shape {tuple(self._shape)} or (B, *{tuple(self._shape)}), "
                f"got {tuple(xx.shape)}"
            )
        check_finite("x", xx)
        h = xx.reshape(-1, self.q.shape[0]).to(_F64) @ self.q
        h = h.to(xx.dtype)
        return h if batched else h[0]

    def weights(self, h: Tensor | Sequence[float]) -> Tensor:
        r"""Weights :math:`w = X^+ Q h` over the basis latents of the point :math:`p = Qh`.

        h : Tensor (K,) or (B, K) -> Tensor (K,) or (B, K) in the latents' dtype.
        """
        hh, batched = self._as_h(h)
        w = self._weights64(hh).to(self.latents.dtype)
        return w if batched else w[0]

    def point(self, h: Tensor | Sequence[float]) -> Tensor:
        r"""The COG-corrected latent at coordinates h: ``cog(latents, weights(h), mean)``.

        h : Tensor (K,) or (B, K) -> Tensor (*shape) or (B, *shape) in the latents' dtype.
        """
        hh, batched = self._as_h(h)
        z = _cog64(self._x64, self._weights64(hh), self._mean)
        z = z.reshape(-1, *self._shape).to(self.latents.dtype)
        return z if batched else z[0]

    def grid(
        self,
        axes: tuple[int, int] = (0, 1),
        steps: int = 9,
        span: tuple[float, float] | tuple[tuple[float, float], tuple[float, float]] | None = None,
        at: Tensor | Sequence[float] | None = None,
    ) -> Tensor:
        r"""A steps × steps slice of the subspace over two coordinates.

        ``grid[i, j]`` is :meth:`point` of the h equal to ``at`` except
        ``h[axes[0]] = linspace(*span0, steps)[i]`` and ``h[axes[1]] = linspace(*span1, steps)[j]``.
        All steps² points go through COG in one batched call.

        Parameters
        ----------
        axes : (int, int)
            Two distinct coordinate indices in [0, K).
        steps : int >= 2
        span : (lo, hi) for both axes, ((lo0, hi0), (lo1, hi1)), or None
            Default: per axis, the min and max of the basis latents' coordinates on that axis.
        at : Tensor (K,) or sequence, optional
            Values of the other coordinates; default the mean of the basis latents' coordinates.

        Returns
        -------
        Tensor (steps, steps, *shape) in the latents' dtype.
        """
        k = self.dim
        if (
            not isinstance(axes, (tuple, list))
            or len(axes) != 2
            or not all(isinstance(a, int) and not isinstance(a, bool) and 0 <= a < k for a in axes)
            or axes[0] == axes[1]
        ):
            raise ValueError(
                f"axes must be two distinct coordinate indices in [0, {k}), got {axes!r}"
            )
        steps = _check_int("steps", steps, 2)
        coords = self.r  # column j = h of latent j
        if span is None:
            spans = [(float(coords[a].min()), float(coords[a].max())) for a in axes]
        else:
            spans = _parse_span(span)
        if at is None:
            base = coords.mean(dim=1)
        else:
            base, _ = self._as_h(at)
            if base.shape[0] != 1:
                raise ValueError(f"at must have shape (K,) = ({k},), got {tuple(base.shape)}")
            base = base[0]
        g0 = torch.linspace(spans[0][0], spans[0][1], steps, dtype=_F64, device=coords.device)
        g1 = torch.linspace(spans[1][0], spans[1][1], steps, dtype=_F64, device=coords.device)
        h = base.expand(steps, steps, k).clone()
        h[:, :, axes[0]] = g0[:, None]
        h[:, :, axes[1]] = g1[None, :]
        z = _cog64(self._x64, self._weights64(h.reshape(-1, k)), self._mean)
        return z.reshape(steps, steps, *self._shape).to(self.latents.dtype)

    def __repr__(self) -> str:
        return (
            f"LatentSubspace(K={self.dim}, shape={tuple(self._shape)}, dtype={self.latents.dtype}, "
            f"device={self.latents.device})"
        )


def _parse_span(span: object) -> list[tuple[float, float]]:
    def pair(p: object) -> tuple[float, float] | None:
        if (
            isinstance(p, (tuple, list))
            and len(p) == 2
            and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                for v in p
            )
        ):
            return float(p[0]), float(p[1])
        return None

    single = pair(span)
    if single is not None:
        return [single, single]
    if isinstance(span, (tuple, list)) and len(span) == 2:
        both = [pair(p) for p in span]
        if all(b is not None for b in both):
            return both  # type: ignore[return-value]
    raise ValueError(
        f"span must be (lo, hi) for both axes or ((lo0, hi0), (lo1, hi1)) with finite numbers, got {span!r}"
    )


# --------------------------------------------------------------------------------------------
# baselines: LERP, SLERP, centroids
# --------------------------------------------------------------------------------------------


def lerp(x0: Tensor, x1: Tensor, t: Times) -> Tensor:
    r"""Linear interpolation :math:`(1-t)\,x_0 + t\,x_1` (computed in float64).

    x0, x1 : Tensor (*shape); t : float or (T,) in [0, 1] -> Tensor (*shape) or (T, *shape).
    Endpoints are exact. For N(0, I) latents the midpoint has variance 1/2 (the failure COG fixes).
    """
    a, b = _check_pair(x0, x1)
    times, scalar = as_times(t, dtype=_F64, device=a.device)
    out = _lerp64(a.reshape(-1).to(_F64), b.reshape(-1).to(_F64), times)
    out = out.reshape(-1, *a.shape).to(a.dtype)
    return out[0] if scalar else out


def _lerp64(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    return (1.0 - t)[:, None] * a + t[:, None] * b


def slerp(
    x0: Tensor, x1: Tensor, t: Times, *, dot_threshold: float = SLERP_DOT_THRESHOLD
) -> Tensor:
    r"""Spherical linear interpolation (Shoemake 1985).

    .. math::

        \theta = \arccos\frac{\langle x_0, x_1\rangle}{\|x_0\|\|x_1\|},\qquad
        \mathrm{slerp}(t) = \frac{\sin((1-t)\theta)}{\sin\theta}x_0 + \frac{\sin(t\theta)}{\sin\theta}x_1

    computed in float64; falls back to :func:`lerp` when :math:`|\cos\theta| >` ``dot_threshold``
    (nearly parallel or antiparallel endpoints). ``t = 0`` and ``t = 1`` return the endpoints
    bit-exactly. Between endpoints of equal norm the norm is preserved.

    x0, x1 : Tensor (*shape); t : float or (T,) in [0, 1] -> Tensor (*shape) or (T, *shape).
    """
    a, b = _check_pair(x0, x1)
    if not (isinstance(dot_threshold, float) and 0.0 < dot_threshold <= 1.0):
        raise ValueError(f"dot_threshold must be a float in (0, 1], got {dot_threshold!r}")
    times, scalar = as_times(t, dtype=_F64, device=a.device)
    a64, b64 = a.reshape(-1).to(_F64), b.reshape(-1).to(_F64)
    na, nb = torch.linalg.vector_norm(a64), torch.linalg.vector_norm(b64)
    if float(na) == 0.0 or float(nb) == 0.0:
        raise ValueError("slerp needs non-zero endpoints (the angle to a zero vector is undefined)")
    cos = float(((a64 @ b64) / (na * nb)).clamp(-1.0, 1.0))
    if abs(cos) > dot_threshold:
        logger.debug(
            "slerp: |cos theta| = %.6f > %.4f, falling back to lerp", abs(cos), dot_threshold
        )
        out = _lerp64(a64, b64, times)
    else:
        theta = math.acos(cos)
        s = math.sin(theta)
        c0 = torch.sin((1.0 - times) * theta) / s
        c1 = torch.sin(times * theta) / s
        out = c0[:, None] * a64 + c1[:, None] * b64
    out = out.reshape(-1, *a.shape).to(a.dtype)
    # exact endpoints, whatever the rounding of sin((1 - t) theta) / sin(theta)
    view = (-1,) + (1,) * a.ndim
    out = torch.where((times == 0).reshape(view), a, out)
    out = torch.where((times == 1).reshape(view), b, out)
    return out[0] if scalar else out


def euclidean_centroid(latents: Tensor) -> Tensor:
    r"""The plain mean :math:`\bar x = \frac1K\sum_k x_k` (variance 1/K for N(0, I) latents).

    latents : Tensor (K, *shape) -> Tensor (*shape).
    """
    x = _check_latents("latents", latents)
    return x.to(_F64).mean(dim=0).to(x.dtype)


def standardized_centroid(latents: Tensor) -> Tensor:
    r"""The Euclidean centroid standardised over its elements: :math:`(\bar x - m)/s`.

    m and s are the mean and (population, ``correction=0``) standard deviation of the
    centroid's D elements, so the result has element mean 0 and variance 1 exactly.

    latents : Tensor (K, *shape) -> Tensor (*shape).
    """
    x = _check_latents("latents", latents)
    c = x.to(_F64).mean(dim=0)
    std = c.std(correction=0)
    if float(std) == 0.0:
        raise ValueError(
            "the Euclidean centroid is constant (zero variance); it cannot be standardised"
        )
    return ((c - c.mean()) / std).to(x.dtype)


def mode_norm_centroid(latents: Tensor) -> Tensor:
    r"""The Euclidean centroid rescaled to norm :math:`\sqrt{D-1}`, the mode of :math:`\chi_D`.

    latents : Tensor (K, *shape) -> Tensor (*shape).
    """
    x = _check_latents("latents", latents)
    c = x.to(_F64).mean(dim=0)
    d = c.numel()
    norm = torch.linalg.vector_norm(c)
    if float(norm) == 0.0:
        raise ValueError("the Euclidean centroid is zero; it cannot be rescaled to the mode norm")
    return (c * (math.sqrt(d - 1) / norm)).to(x.dtype)


# --------------------------------------------------------------------------------------------
# NAO (Samuel et al. 2024)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NAOPath:
    """Result of :func:`nao_interpolate`.

    points : Tensor (n_points, *shape)
        The path, endpoints included (``points[0]`` is x0, ``points[-1]`` is x1, exactly), in the
        inputs' dtype.
    iterations : int
        Adam steps taken.
    converged : bool
        Whether the early-stopping rule fired before ``max_iter``.
    loss_history : tuple of float
        The loss at every iteration (evaluated before that iteration's step).
    """

    points: Tensor
    iterations: int
    converged: bool
    loss_history: tuple[float, ...]


@dataclass(frozen=True)
class NAOCentroid:
    """Result of :func:`nao_centroid`.

    centroid : Tensor (*shape)
        The optimised centroid, in the inputs' dtype.
    paths : Tensor (K, n_points_per_path, *shape)
        Path k runs from latent k (``paths[k, 0]``) to the centroid (``paths[k, -1]``).
    iterations, converged, loss_history : as in :class:`NAOPath`.
    """

    centroid: Tensor
    paths: Tensor
    iterations: int
    converged: bool
    loss_history: tuple[float, ...]


def _log_chi(r: Tensor, d: int) -> Tensor:
    r"""log density of the χ distribution with d degrees of freedom (float64).

    :math:`f(r) = (d-1)\log r - r^2/2 - ((d/2 - 1)\log 2 + \log\Gamma(d/2))`. At d = 16384 the
    terms are ~1e5 and cancel to O(1), hence float64.
    """
    const = (d / 2.0 - 1.0) * math.log(2.0) + math.lgamma(d / 2.0)
    return (d - 1) * torch.log(r) - 0.5 * r * r - const


def _path_loss_and_grad(
    paths: Tensor, eps: Tensor, d: int, work: tuple[Tensor, Tensor, Tensor] | None = None
) -> tuple[Tensor, Tensor]:
    r"""Per-path NAO loss and its gradient with respect to every point of every path.

    For path points :math:`p_0 \dots p_{n-1}` with segments :math:`s_i = p_i - p_{i-1}`,
    :math:`d_i = \|s_i\|`, midpoints :math:`m_i = (p_i + p_{i-1})/2`, :math:`r_i = \|m_i\|`:

    .. math::

        L = \sum_i \big[-d_i f(r_i) + \mathrm{relu}(d_i - \varepsilon)\big],\qquad
        \frac{\partial L}{\partial p_i} \mathrel{+}= g_i + h_i,\quad
        \frac{\partial L}{\partial p_{i-1}} \mathrel{+}= h_i - g_i,

        g_i = \big(-f(r_i) + [d_i > \varepsilon]\big)\,\frac{s_i}{d_i},\qquad
        h_i = -d_i f'(r_i)\,\frac{m_i}{2 r_i},\qquad f'(r) = \frac{D-1}{r} - r.

    This is exactly what autograd computes for the reference objective (tested against it), without
    the autograd graph's zero-filled slice gradients, which dominate the cost at D = 16384.

    paths : (P, n, D) float64; eps : (P,) -> loss (P,), grad (P, n, D).
    work : optional buffers (seg (P, n-1, D), mid (P, n-1, D), grad (P, n, D)) reused across
        iterations (the returned grad is then ``work[2]``), which saves allocation churn.
    """
    if work is None:
        work = (
            paths.new_empty(paths[:, 1:].shape),
            paths.new_empty(paths[:, 1:].shape),
            torch.empty_like(paths),
        )
    seg, mid, grad = work
    torch.sub(paths[:, 1:], paths[:, :-1], out=seg)  # s_i, (P, n-1, D)
    torch.add(paths[:, 1:], paths[:, :-1], out=mid)
    mid.mul_(0.5)  # m_i
    dist = torch.linalg.vector_norm(seg, dim=-1)  # d_i, (P, n-1)
    rad = torch.linalg.vector_norm(mid, dim=-1)  # r_i
    f = _log_chi(rad, d)
    over = dist > eps[:, None]
    loss = (-(dist * f) + torch.where(over, dist - eps[:, None], 0.0)).sum(dim=-1)
    # coefficients of s_i and m_i in g_i and h_i (a zero-length segment has a zero subgradient)
    coef_s = torch.where(dist > 0, (over.to(f.dtype) - f) / dist, 0.0)
    coef_m = -dist * ((d - 1) / rad - rad) / (2.0 * rad)
    seg.mul_(coef_s[..., None])  # g_i
    mid.mul_(coef_m[..., None])  # h_i
    grad.zero_()
    grad[:, 1:] += seg
    grad[:, 1:] += mid
    grad[:, :-1] += mid
    grad[:, :-1] -= seg
    return loss, grad


def _log_chi_grad(r: Tensor, d: int) -> Tensor:
    """f'(r) = (d - 1)/r - r for :func:`_log_chi`."""
    return (d - 1) / r - r


class _EarlyStop:
    """NAO's stopping rule: ``patience`` consecutive iterations with |Δloss| < tol.

    The first loss is compared with +inf (never small), as in the reference implementation.
    """

    def __init__(self, tol: float, patience: int) -> None:
        self.tol, self.patience = tol, patience
        self.last = math.inf
        self.streak = 0
        self.history: list[float] = []

    def update(self, loss: float) -> bool:
        self.history.append(loss)
        self.streak = self.streak + 1 if abs(self.last - loss) < self.tol else 0
        self.last = loss
        return self.streak >= self.patience


def _nao_optimise(
    paths: Tensor,
    eps: Tensor,
    *,
    free_end: bool,
    lr: float,
    max_iter: int,
    tol: float,
    patience: int,
) -> tuple[Tensor, int, bool, tuple[float, ...]]:
    r"""Adam on the interior points of P paths (P, n, D) float64, the reference NAO loop.

    The first point of every path is fixed. With ``free_end`` the last points are one shared
    centroid c, optimised too, and :math:`-f(\|c\|)` is added to the loss; otherwise the last
    points are fixed. The paths live in one tensor whose fixed points get zero gradients, for
    which Adam's update is exactly zero, so this equals Adam on the interior points alone.
    Returns the final paths, the iterations, whether the stopping rule fired, and the losses.
    """
    d = paths.shape[-1]
    # the caller may be under inference_mode (typical around a pipeline): optimise outside it
    with torch.inference_mode(False), torch.no_grad():
        paths = paths.clone().requires_grad_(True)
        params = [paths]
        centroid = None
        if free_end:
            centroid = paths[0, -1].detach().clone().requires_grad_(True)
            params.append(centroid)
        # the fused kernel is the same Adam update without foreach's temporaries (2-4x faster here)
        fused = paths.device.type in ("cpu", "cuda")
        opt = torch.optim.Adam(params, lr=lr, fused=fused or None)
        stop = _EarlyStop(tol, patience)
        converged = False
        iterations = 0
        work = (
            paths.new_empty(paths[:, 1:].shape),
            paths.new_empty(paths[:, 1:].shape),
            torch.empty_like(paths),
        )
        for iterations in range(1, max_iter + 1):  # noqa: B007 -- read after the loop
            if centroid is not None:
                paths[:, -1] = centroid
            loss, grad = _path_loss_and_grad(paths, eps, d, work)
            total = loss.sum()
            grad[:, 0] = 0.0
            if centroid is not None:
                r = torch.linalg.vector_norm(centroid)
                total = total - _log_chi(r, d)
                centroid.grad = grad[:, -1].sum(dim=0) - (_log_chi_grad(r, d) / r) * centroid
            grad[:, -1] = 0.0
            paths.grad = grad
            opt.step()
            if stop.update(float(total)):
                converged = True
                break
        if centroid is not None:
            paths[:, -1] = centroid
    return paths.detach(), iterations, converged, tuple(stop.history)


def _jitter(
    shape: tuple[int, ...], scale: float, generator: torch.Generator | None, device: torch.device
) -> Tensor:
    """U[0, scale) noise as in the reference initialisation, drawn from ``generator``."""
    if scale == 0.0:
        return torch.zeros(shape, dtype=_F64, device=device)
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    noise = torch.rand(shape, generator=gen, dtype=_F64, device=gen.device)
    return (noise * scale).to(device)


def _check_nao_settings(lr: float, max_iter: int, tol: float, patience: int, jitter: float) -> None:
    _check_positive("lr", lr)
    _check_int("max_iter", max_iter, 1)
    _check_positive("tol", tol, allow_zero=True)
    _check_int("patience", patience, 1)
    _check_positive("jitter", jitter, allow_zero=True)


def _check_generator(generator: object) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(
            f"generator must be a torch.Generator or None, got {type(generator).__name__}"
        )


def nao_interpolate(
    x0: Tensor,
    x1: Tensor,
    n_points: int = 50,
    *,
    lr: float = 0.01,
    max_iter: int = 10_000,
    tol: float = 1e-3,
    patience: int = 10,
    eps: float | None = None,
    jitter: float = 0.01,
    generator: torch.Generator | None = None,
) -> NAOPath:
    r"""Norm-Aware Optimisation of an interpolation path (Samuel et al. 2024).

    A path of ``n_points`` points :math:`x_0 = p_0, p_1, \dots, p_{n-1} = x_1` is initialised on
    the LERP chord (plus U[0, ``jitter``) noise per element on the interior points, as in the
    reference code) and its interior points are optimised with Adam(``lr``) to minimise

    .. math::

        L = -\sum_{i=1}^{n-1} d_i\, f(\|m_i\|) + \sum_{i=1}^{n-1}\mathrm{relu}(d_i - \varepsilon),
        \quad d_i = \|p_i - p_{i-1}\|,\; m_i = \tfrac12(p_i + p_{i-1}),\;
        \varepsilon = 2\|x_0 - x_1\|/n,

    with f the log density of :math:`\chi_D` (:func:`_log_chi`): a discretised line integral of
    the norm's log-likelihood along the path, with segments kept from growing beyond twice the
    uniform spacing. It stops after ``patience`` consecutive iterations with
    :math:`|\Delta L| <` ``tol``, or after ``max_iter``. Everything runs in float64 (the log
    density at D = 16384 cancels terms of size 1e5); the gradient is in closed form
    (:func:`_path_loss_and_grad`), so it also runs under ``no_grad`` / ``inference_mode``.

    Parameters
    ----------
    x0, x1 : Tensor (*shape)
        Endpoints (same shape, dtype, device).
    n_points : int >= 3
        Points on the path including the endpoints (reference: 50 for generation, 11 for the
        papers' evaluation; pick 3 of them with :func:`pick_interior`).
    lr, max_iter, tol, patience
        Adam learning rate and the early-stopping rule (reference: 0.01, 10,000, 1e-3, 10).
    eps : float, optional
        Segment-length bound ε; default :math:`2\|x_0 - x_1\|/n`.
    jitter : float >= 0
        Scale of the U[0, jitter) initial perturbation (reference 0.01; 0 starts exactly on LERP).
    generator : torch.Generator, optional
        The only source of randomness: it draws the initial jitter (on the generator's device).
        None uses a fresh CPU generator seeded with 0, so every call is deterministic; the same
        generator state gives the same path.

    Returns
    -------
    NAOPath
    """
    a, b = _check_pair(x0, x1)
    n_points = _check_int("n_points", n_points, 3)
    _check_nao_settings(lr, max_iter, tol, patience, jitter)
    _check_generator(generator)
    d = a.numel()
    a64 = a.detach().reshape(1, d).to(_F64, copy=True)
    b64 = b.detach().reshape(1, d).to(_F64, copy=True)
    if eps is None:
        eps_value = 2.0 * float(torch.linalg.vector_norm(a64 - b64)) / n_points
    else:
        eps_value = _check_positive("eps", eps, allow_zero=True)
    eps_t = torch.full((1,), eps_value, dtype=_F64, device=a.device)
    t = torch.linspace(0.0, 1.0, n_points, dtype=_F64, device=a.device)
    path = _lerp64(a64[0], b64[0], t)
    path[1:-1] += _jitter((n_points - 2, d), jitter, generator, a.device)
    path[0], path[-1] = a64[0], b64[0]  # exact endpoints (lerp's are exact, made explicit)
    final, iterations, converged, history = _nao_optimise(
        path.unsqueeze(0),
        eps_t,
        free_end=False,
        lr=lr,
        max_iter=max_iter,
        tol=tol,
        patience=patience,
    )
    points = final[0].to(a.dtype).reshape(n_points, *a.shape)
    points[0], points[-1] = a.detach(), b.detach()
    return NAOPath(points=points, iterations=iterations, converged=converged, loss_history=history)


def nao_centroid(
    latents: Tensor,
    n_points_per_path: int = 11,
    *,
    lr: float = 0.01,
    max_iter: int = 10_000,
    tol: float = 1e-2,
    patience: int = 5,
    init: Tensor | None = None,
    jitter: float = 0.01,
    generator: torch.Generator | None = None,
) -> NAOCentroid:
    r"""Norm-Aware Optimisation of a centroid (Samuel et al. 2024).

    One path per input latent, from :math:`x_k` to the centroid c, each of
    ``n_points_per_path`` points initialised on the chord to the initial centroid (Euclidean
    centroid by default) plus U[0, ``jitter``) noise; all interior points and c are optimised
    jointly with Adam(``lr``) on

    .. math::

        L = \sum_k \Big[-\sum_i d_{k,i}\, f(\|m_{k,i}\|) + \sum_i \mathrm{relu}(d_{k,i} - \varepsilon_k)\Big]
            - f(\|c\|),\qquad \varepsilon_k = 2\|x_k - c_0\|/n,

    (f the :math:`\chi_D` log density; c is the moving end of every path) and stops after
    ``patience`` consecutive :math:`|\Delta L| <` ``tol`` (reference: 5 and 1e-2) or ``max_iter``.
    float64 throughout.

    Parameters
    ----------
    latents : Tensor (K, *shape)
    n_points_per_path : int >= 3
        Points per path including both ends (the COG paper's evaluation: 11).
    lr, max_iter, tol, patience : see :func:`nao_interpolate`.
    init : Tensor (*shape), optional
        Initial centroid; default the Euclidean centroid.
    jitter, generator : see :func:`nao_interpolate` (the generator draws the paths' jitter).

    Returns
    -------
    NAOCentroid
    """
    x = _check_latents("latents", latents)
    n = _check_int("n_points_per_path", n_points_per_path, 3)
    _check_nao_settings(lr, max_iter, tol, patience, jitter)
    _check_generator(generator)
    k, shape = x.shape[0], x.shape[1:]
    d = math.prod(shape)
    x64 = x.detach().reshape(k, d).to(_F64, copy=True)
    if init is None:
        c0 = x64.mean(dim=0)
    else:
        c_init = as_tensor("init", init)
        if c_init.shape != shape or c_init.device != x.device:
            raise ValueError(
                f"init must be a latent of shape {tuple(shape)} on {x.device}, "
                f"got {tuple(c_init.shape)} on {c_init.device}"
            )
        check_finite("init", c_init)
        c0 = c_init.detach().reshape(d).to(_F64, copy=True)
    if float(torch.linalg.vector_norm(c0)) == 0.0:
        raise ValueError("the initial centroid is zero, where log chi_D(||c||) is -inf; give init")
    eps = 2.0 * torch.linalg.vector_norm(x64 - c0, dim=1) / n  # eps_k = 2 ||x_k - c0|| / n
    t = torch.linspace(0.0, 1.0, n, dtype=_F64, device=x.device)
    paths = (1.0 - t)[None, :, None] * x64[:, None, :] + t[None, :, None] * c0[None, None, :]
    paths[:, 1:-1] += _jitter((k, n - 2, d), jitter, generator, x.device)
    paths[:, 0], paths[:, -1] = x64, c0
    final, iterations, converged, history = _nao_optimise(
        paths, eps, free_end=True, lr=lr, max_iter=max_iter, tol=tol, patience=patience
    )
    out = final.reshape(k, n, *shape).to(x.dtype)
    out[:, 0] = x.detach()  # bit-exact starts
    return NAOCentroid(
        centroid=out[0, -1].clone(),
        paths=out,
        iterations=iterations,
        converged=converged,
        loss_history=history,
    )


# --------------------------------------------------------------------------------------------
# evaluation helper
# --------------------------------------------------------------------------------------------


def _interior_indices(n: int, k: int) -> list[int]:
    """Indices of k interior points at uniform index distance on an n-point path.

    Ideal position i·(n-1)/(k+1), i = 1..k, rounded to the nearest index; exact halves are rounded
    towards the nearer endpoint (down in the first half, up in the second, down at the exact
    centre), so the choice is mirror-symmetric whenever it can be. 3 of 11 -> [2, 5, 8].
    """
    den = k + 1
    out = []
    for i in range(1, k + 1):
        num = i * (n - 1)
        q, r = divmod(num, den)
        if 2 * r < den:
            idx = q
        elif 2 * r > den:
            idx = q + 1
        else:  # tie: towards the nearer endpoint
            idx = q + 1 if 2 * num > den * (n - 1) else q
        out.append(idx)
    return out


def pick_interior(points: Tensor | NAOPath, k: int = 3) -> Tensor:
    r"""Pick k interior points of an n-point path at uniform index distance.

    The papers' evaluation takes 3 interior points of an 11-point NAO path. Point i (i = 1..k)
    is the index nearest to :math:`i\,(n-1)/(k+1)`, exact halves rounded towards the nearer
    endpoint (mirror-symmetric): 3 of 11 -> indices 2, 5, 8; 3 of 50 -> 12, 24, 37; 1 of n ->
    the middle (lower middle for even n).

    Parameters
    ----------
    points : Tensor (n, *shape) or NAOPath
        The path, endpoints included.
    k : int, 1 <= k <= n - 2

    Returns
    -------
    Tensor (k, *shape)
    """
    pts = points.points if isinstance(points, NAOPath) else as_tensor("points", points)
    if pts.ndim < 1:
        raise ValueError("points must be a path tensor (n, *shape)")
    n = pts.shape[0]
    k = _check_int("k", k, 1)
    if k > n - 2:
        raise ValueError(
            f"cannot pick k = {k} interior points from a path of n = {n} points (k <= n - 2)"
        )
    return pts[_interior_indices(n, k)]
