"""AID's Beta prior for choosing the frames' t (He et al. 2024, Sec. 4.3; official code
``prior.py`` of ``QY-H00/attention-interpolation-diffusion``).

The frames of an interpolation are placed at quantiles of a Beta(α, β) distribution,
t_i = F⁻¹(i / (N − 1)), so they crowd where the images change fastest. α and β are fitted to
the measured frame distances: starting from t ∈ {0, ½, 1}, the interval with the largest
distance d is split at t = F⁻¹((F(a) + F(b)) / 2), (α, β) are refitted by least squares of the
Beta CDF against the normalised cumulative distance, and so on until ``exploration`` frames
exist; the N frames whose consecutive distances have the smallest spread (max − min) are kept.

The frame distance is pluggable (any ``frames (T, 3, H, W) -> (T − 1,)`` step distance, or a
:class:`whichway.metrics.LPIPSPath`, as :func:`whichway.metrics.respace` takes): the official
code uses CLIP image features, whichway defaults to LPIPS, whose weights are usually present.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from whichway.attention.methods import BO_EVALUATIONS


def beta_times(n: int, alpha: float = 3.0, beta: float = 3.0) -> Tensor:
    """n frame times at the Beta(α, β) quantiles: t_i = F⁻¹(i / (n − 1)); Tensor (n,) float64,
    exactly 0 and 1 at the ends (α = β = 3, n = 7: 0, .3027, .4091, .5, .5909, .6973, 1)."""
    from scipy.stats import beta as beta_dist

    if n < 2:
        raise ValueError(f"a path needs at least 2 frames, got {n}")
    if not (alpha > 0 and beta > 0):
        raise ValueError(f"Beta parameters must be > 0, got alpha={alpha}, beta={beta}")
    q = torch.linspace(0, 1, n, dtype=torch.float64)
    t = torch.from_numpy(beta_dist.ppf(q.numpy(), alpha, beta)).to(torch.float64)
    t[0], t[-1] = 0.0, 1.0
    return t


def fit_beta(ts: Sequence[float], distances: Sequence[float]) -> tuple[float, float]:
    """(α, β) whose CDF fits the normalised cumulative distance in least squares.

    ts : (m,) increasing frame times from 0 to 1
    distances : (m − 1,) distances between consecutive frames
    Fits F(t_j; α, β) ≈ Σ_{i<j} d_i / Σ d_i from α = β = 1 with α, β ≥ 1e-6 (as the official
    code, ``scipy.optimize.curve_fit``).
    """
    import numpy as np
    from scipy.optimize import curve_fit
    from scipy.stats import beta as beta_dist

    t = np.asarray(ts, dtype=np.float64)
    d = np.asarray(distances, dtype=np.float64)
    if len(d) != len(t) - 1 or len(t) < 3:
        raise ValueError(
            f"fit_beta needs m >= 3 times and m - 1 distances, got {len(t)} and {len(d)}"
        )
    if d.sum() <= 0:
        return 1.0, 1.0  # no change anywhere: the uniform prior
    target = np.concatenate([[0.0], np.cumsum(d) / d.sum()])
    params, _ = curve_fit(
        lambda x, a, b: beta_dist.cdf(x, a, b),
        t,
        target,
        p0=[1.0, 1.0],
        bounds=([1e-6, 1e-6], [np.inf, np.inf]),
    )
    return float(params[0]), float(params[1])


def split_time(ts: Sequence[float], distances: Sequence[float], alpha: float, beta: float) -> float:
    """The next t to render: the interval [a, b] with the largest distance, split at the
    Beta-median t = F⁻¹((F(a) + F(b)) / 2)."""
    from scipy.stats import beta as beta_dist

    k = max(range(len(distances)), key=lambda i: distances[i])
    fa, fb = beta_dist.cdf([ts[k], ts[k + 1]], alpha, beta)
    return float(beta_dist.ppf((fa + fb) / 2, alpha, beta))


def min_spread_path(weights: Tensor, n: int) -> list[int]:
    """Indices 0 = i_1 < … < i_n = m − 1 minimising max − min of the consecutive weights
    w[i_k, i_{k+1}]; weights (m, m), only i < j used. Exact: for each candidate lower bound w₀
    (every weight), a dynamic programme finds the path of n nodes whose edges are all ≥ w₀ with
    the smallest largest edge."""
    m = weights.shape[0]
    if not 2 <= n <= m:
        raise ValueError(f"cannot pick {n} of {m} frames (need 2 <= n <= m)")
    w = weights.to(torch.float64).tolist()
    inf = float("inf")
    best: tuple[float, list[int]] = (inf, list(range(n)))
    for low in sorted({w[i][j] for i in range(m) for j in range(i + 1, m)}):
        # top[l][j]: smallest largest edge of an l+1-node path 0 -> j with every edge >= low
        top = [[inf] * m for _ in range(n)]
        back = [[-1] * m for _ in range(n)]
        top[0][0] = -inf
        for level in range(1, n):
            for j in range(1, m):
                for i in range(j):
                    if top[level - 1][i] < inf and w[i][j] >= low:
                        value = max(top[level - 1][i], w[i][j])
                        if value < top[level][j]:
                            top[level][j], back[level][j] = value, i
        if top[n - 1][m - 1] < inf and top[n - 1][m - 1] - low < best[0]:
            path, j = [m - 1], m - 1
            for level in range(n - 1, 0, -1):
                j = back[level][j]
                path.append(j)
            best = (top[n - 1][m - 1] - low, path[::-1])
    return best[1]


@dataclass(frozen=True)
class BetaPrior:
    """Result of :func:`explore_beta`.

    t : Tensor (n,)             the chosen frames' times
    frames : Tensor (n, 3, H, W)  the chosen frames
    explored : Tensor (m,)      every time rendered, increasing
    distances : Tensor (m − 1,)  distances between consecutive explored frames
    alpha, beta : float         the last fitted Beta parameters
    """

    t: Tensor
    frames: Tensor
    explored: Tensor
    distances: Tensor
    alpha: float
    beta: float


def explore_beta(
    render: Callable[[Tensor], Tensor],
    distance: Any,
    n: int,
    *,
    exploration: int = 16,
    alpha: float = 3.0,
    beta: float = 3.0,
) -> BetaPrior:
    """AID's Beta-prior search: render t = 0, ½, 1, then split and refit until ``exploration``
    frames exist, and keep the n of them with the most even consecutive distances.

    render : times (k,) float64 -> images (k, 3, H, W); called once with (0, ½, 1), then with one
        t at a time
    distance : frames (T, 3, H, W) -> (T − 1,) distances of consecutive frames, or an LPIPSPath
        (None: a pretrained AlexNet LPIPSPath)
    exploration : frames rendered in all (the official default 16), at least n
    alpha, beta : the prior before the first fit (official: 3, 3)
    """
    if exploration < max(n, 3):
        raise ValueError(f"exploration must be >= max(n, 3) = {max(n, 3)}, got {exploration}")
    if distance is None:
        from whichway.metrics.lpips_path import LPIPSPath

        distance = LPIPSPath("alex")
    measure = distance.distances if hasattr(distance, "distances") else distance

    def steps(*images: Tensor) -> list[float]:
        return [float(x) for x in measure(torch.stack(images))]

    ts = [0.0, 0.5, 1.0]
    frames = list(render(torch.tensor(ts, dtype=torch.float64)))
    ds = steps(*frames)
    while len(ts) < exploration:
        t = split_time(ts, ds, alpha, beta)
        k = max(range(len(ds)), key=lambda i: ds[i])
        if not ts[k] < t < ts[k + 1]:
            break  # the prior cannot split further (numerically degenerate)
        image = render(torch.tensor([t], dtype=torch.float64))[0]
        frames.insert(k + 1, image)
        ts.insert(k + 1, t)
        ds[k : k + 1] = steps(frames[k], image, frames[k + 2])
        alpha, beta = fit_beta(ts, ds)
    m = len(ts)
    weights = torch.zeros(m, m, dtype=torch.float64)
    for i in range(m - 2):  # d(i, j) for j > i + 1 from one call: the steps of i, j1, i, j2, ...
        later = range(i + 2, m)
        pairs = steps(*[x for j in later for x in (frames[i], frames[j])])[::2]
        weights[i, i + 2 :] = torch.tensor(pairs, dtype=torch.float64)
    for i in range(m - 1):
        weights[i, i + 1] = ds[i]
    chosen = min_spread_path(weights, min(n, m))
    return BetaPrior(
        t=torch.tensor([ts[i] for i in chosen], dtype=torch.float64),
        frames=torch.stack([frames[i] for i in chosen]),
        explored=torch.tensor(ts, dtype=torch.float64),
        distances=torch.tensor(ds, dtype=torch.float64),
        alpha=alpha,
        beta=beta,
    )


BO_KAPPA = 2.576
"""Exploration weight κ of the upper confidence bound μ + κσ (``bayes_opt``'s default, which the
official ``bayesian_prior_selection`` uses)."""
BO_TARGET = 0.9
"""The official early stop: the search ends once a smoothness reaches this."""
BO_GAMMA_OSC = 0.7
"""Sequential domain reduction: contraction when the best point oscillates (``bayes_opt``'s
``SequentialDomainReductionTransformer`` default, which the official search uses)."""
BO_GAMMA_PAN = 1.0
"""Sequential domain reduction: contraction when the best point pans in one direction."""
BO_ETA = 0.9
"""Sequential domain reduction: contraction when the best point stays put."""
BO_MINIMUM_WINDOW = 0.1
"""Sequential domain reduction: the narrowest window of α and of β (the official
``minimum_window=0.1``)."""


class _DomainReduction:
    """Stander & Craig's sequential domain reduction of a box, as ``bayes_opt``'s
    ``SequentialDomainReductionTransformer`` applies it after each Bayesian step.

    The window r (per coordinate) starts at η × the range, centred on the box's middle. Each
    :meth:`step` moves the centre to the best point x* so far: with the normalised move
    d = 2 (x* − x*_prev) / r, c = d · d_prev and ĉ = sign(c) √|c|,
    γ = ½ (γ_pan (1 + ĉ) + γ_osc (1 − ĉ)), the window shrinks to r ← (η + |d| (γ − η)) r and the
    box becomes x* ± r/2, clipped to the original box and widened (towards the side with room)
    to at least ``minimum_window``.
    """

    def __init__(
        self,
        low: Any,
        high: Any,
        minimum_window: float = BO_MINIMUM_WINDOW,
        gamma_osc: float = BO_GAMMA_OSC,
        gamma_pan: float = BO_GAMMA_PAN,
        eta: float = BO_ETA,
    ) -> None:
        import numpy as np

        self.low, self.high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
        if (self.high - self.low < minimum_window).any():
            raise ValueError(
                f"the Beta bounds must be at least the minimum window {minimum_window} wide"
            )
        self.minimum_window, self.gamma_osc, self.gamma_pan, self.eta = (
            minimum_window,
            gamma_osc,
            gamma_pan,
            eta,
        )
        self.centre = (self.low + self.high) / 2
        self.d = np.zeros_like(self.centre)
        self.r = eta * (self.high - self.low)  # d = 0 at the start: contraction η

    def step(self, best: Any) -> tuple[Any, Any]:
        """Move to the best point (2,) and return the new box (low (2,), high (2,))."""
        import numpy as np

        best = np.asarray(best, dtype=np.float64)
        d = 2.0 * (best - self.centre) / self.r
        c = d * self.d
        c_hat = np.sign(c) * np.sqrt(np.abs(c))
        gamma = 0.5 * (self.gamma_pan * (1.0 + c_hat) + self.gamma_osc * (1.0 - c_hat))
        self.r = (self.eta + np.abs(d) * (gamma - self.eta)) * self.r
        self.centre, self.d = best, d
        low = np.maximum(best - self.r / 2, self.low)
        high = np.minimum(best + self.r / 2, self.high)
        short = np.maximum(self.minimum_window - (high - low), 0.0) / 2
        left = np.minimum(short, low - self.low)
        right = np.minimum(short, self.high - high)
        return low - left - (short - right), high + right + (short - left)


@dataclass(frozen=True)
class BetaSearch:
    """Result of :func:`search_beta`.

    alpha, beta : float          the chosen Beta parameters (the best smoothness evaluated)
    smoothness : float           its objective, 1 − Gini of the consecutive frame distances
    t : Tensor (n,)              the frames' times, the Beta(α, β) quantiles
    frames : Tensor (n, 3, H, W)  the frames at ``t``
    evaluated : tuple of (α, β, smoothness), in the order the search asked for them
    rendered : int               frames rendered in all (the ends once, each sequence's interior)
    bounds : tuple of ((α_lo, α_hi), (β_lo, β_hi)), the box each GP-UCB step searched, in order
             (the first is the whole range; each later one the domain reduction's after a step)
    """

    alpha: float
    beta: float
    smoothness: float
    t: Tensor
    frames: Tensor
    evaluated: tuple[tuple[float, float, float], ...]
    rendered: int
    bounds: tuple[tuple[tuple[float, float], tuple[float, float]], ...] = ()


def _ucb_next(
    x: Tensor,
    y: Tensor,
    generator: torch.Generator,
    kappa: float = BO_KAPPA,
    candidates: int = 4096,
    box: tuple[Any, Any] = ((0.0, 0.0), (1.0, 1.0)),
) -> Tensor:
    """The next point in [0, 1]² of GP-UCB: a Gaussian process with a Matérn-5/2 kernel on the
    standardised scores y (m,) at x (m, 2), its length scale the best marginal likelihood of a
    log grid, maximising μ + κσ over ``candidates`` uniform points drawn from ``generator`` in
    ``box`` = (low (2,), high (2,)) ⊆ [0, 1]²."""
    import numpy as np
    from scipy.linalg import cho_factor, cho_solve
    from scipy.spatial.distance import cdist

    # numpy/scipy rather than torch: a (≤ 100)² GP is microseconds there, while torch's thread
    # pool makes each tiny factorisation cost milliseconds on a loaded machine
    xs = x.to(torch.float64).numpy()
    ys = y.to(torch.float64).numpy()
    scale = ys.std(ddof=1) if len(ys) > 1 and ys.std() > 0 else 1.0
    z = (ys - ys.mean()) / scale

    def kernel(a: Any, b: Any, length: float) -> Any:
        r = cdist(a, b) * (5.0**0.5) / length
        return (1 + r + r * r / 3) * np.exp(-r)

    eye = np.eye(len(xs))
    best: tuple[float, float, Any] | None = None
    for length in np.logspace(-2, 1, 16):
        chol = cho_factor(kernel(xs, xs, length) + 1e-6 * eye, lower=True)
        fit = -0.5 * float(z @ cho_solve(chol, z)) - float(np.log(np.diag(chol[0])).sum())
        if best is None or fit > best[0]:
            best = (fit, float(length), chol)
    assert best is not None
    _, length, chol = best
    low, high = (torch.as_tensor(b, dtype=torch.float64) for b in box)
    pool = low + (high - low) * torch.rand(candidates, 2, generator=generator, dtype=torch.float64)
    cross = kernel(pool.numpy(), xs, length)
    mean = cross @ cho_solve(chol, z)
    var = np.clip(1.0 - (cross * cho_solve(chol, cross.T).T).sum(axis=1), 0.0, None)
    return pool[int(np.argmax(mean + kappa * np.sqrt(var)))]


def search_beta(
    render: Callable[[Tensor], Tensor],
    distance: Any,
    n: int,
    *,
    evaluations: int = BO_EVALUATIONS,
    bounds: tuple[float, float] = (1.0, 15.0),
    target: float | None = BO_TARGET,
    generator: torch.Generator | None = None,
) -> BetaSearch:
    """AID's Bayesian choice of the Beta prior (official ``bayesian_prior_selection``): the
    (α, β) whose n frames at the Beta quantiles t_i = F⁻¹(i / (n − 1)) are the smoothest,
    smoothness = 1 − Gini(d) of their consecutive distances d (:func:`whichway.metrics.gini`).

    1. Render t = 0, ½, 1. If d(0, ½) < d(½, 1) the change is late and only α > β is searched
       (else only α < β): the other side scores 0 without rendering, as in the official code.
    2. Probe the grid {lo, (lo + hi)/2, hi}², α outer, then GP-UCB steps (:func:`_ucb_next`)
       until ``evaluations`` objective values exist or one reaches ``target``. After each step
       the box searched shrinks and pans around the best (α, β) so far by sequential domain
       reduction (:class:`_DomainReduction`, the official ``minimum_window=0.1``); the first
       step searches all of [lo, hi]².
    3. Return the best, with its frames (every sequence reuses the two end frames).

    render : times (k,) float64 -> images (k, 3, H, W)
    distance : frames (T, 3, H, W) -> (T − 1,) distances, or an LPIPSPath (None: AlexNet LPIPS)
    n : frames of the sequence, >= 3
    bounds : (lo, hi) of both α and β (official: 1 and the AID warmup steps)
    target : stop once a smoothness reaches it (official 0.9); None searches the whole budget
    generator : seeds the GP's candidate points (default: seed 0), so the search is deterministic
    """
    from whichway.metrics.smoothness import gini

    lo, hi = float(bounds[0]), float(bounds[1])
    if not 0 < lo < hi:
        raise ValueError(f"Beta bounds must satisfy 0 < lo < hi, got {bounds}")
    if n < 3:
        raise ValueError(f"the Beta prior places frames between the ends: n must be >= 3, got {n}")
    if evaluations < 1:
        raise ValueError(f"evaluations must be >= 1, got {evaluations}")
    reduction = _DomainReduction((lo, lo), (hi, hi))
    if distance is None:
        from whichway.metrics.lpips_path import LPIPSPath

        distance = LPIPSPath("alex")
    measure = distance.distances if hasattr(distance, "distances") else distance
    if generator is None:
        generator = torch.Generator().manual_seed(0)

    ends = render(torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))
    rendered = 3
    first = measure(ends).to(torch.float64)
    late = float(first[0]) < float(first[1])  # the official large_alpha_prior

    def score(frames: Tensor) -> float:
        return float(1.0 - gini(measure(frames).to(torch.float64)))

    best: dict[str, Any] = {}
    evaluated: list[tuple[float, float, float]] = []

    def evaluate(alpha: float, beta: float) -> float:
        nonlocal rendered
        frames = None
        if (alpha < beta and late) or (alpha > beta and not late):
            value = 0.0
        elif alpha == beta and n == 3:
            frames, value = ends, score(ends)
        else:
            t = beta_times(n, alpha, beta)
            inner = render(t[1:-1])
            rendered += n - 2
            frames = torch.cat([ends[:1], inner.to(ends), ends[2:]])
            value = score(frames)
        evaluated.append((alpha, beta, value))
        if frames is not None and (not best or value > best["smoothness"]):
            best.update(alpha=alpha, beta=beta, smoothness=value, frames=frames)
        return value

    def done() -> bool:
        if not evaluated:
            return False
        reached = target is not None and max(v for *_, v in evaluated) >= target
        return reached or len(evaluated) >= evaluations

    grid = [lo, (lo + hi) / 2, hi]
    for alpha in grid:
        for beta in grid:
            if not done():
                evaluate(alpha, beta)
    box = ((lo, lo), (hi, hi))
    boxes = []
    while not done():
        boxes.append(tuple((float(a), float(b)) for a, b in zip(*box, strict=True)))
        x = torch.tensor([(a, b) for a, b, _ in evaluated], dtype=torch.float64)
        y = torch.tensor([v for *_, v in evaluated], dtype=torch.float64)
        unit = tuple((torch.tensor(side, dtype=torch.float64) - lo) / (hi - lo) for side in box)
        step = _ucb_next((x - lo) / (hi - lo), y, generator, box=unit)
        alpha, beta = (lo + (hi - lo) * step).tolist()
        evaluate(alpha, beta)
        top = max(range(len(evaluated)), key=lambda k: evaluated[k][2])  # the first best
        box = reduction.step(evaluated[top][:2])
    return BetaSearch(
        alpha=best["alpha"],
        beta=best["beta"],
        smoothness=best["smoothness"],
        t=beta_times(n, best["alpha"], best["beta"]),
        frames=best["frames"],
        evaluated=tuple(evaluated),
        rendered=rendered,
        bounds=tuple(boxes),
    )
