"""Tests for whichway.gaussian: COG, subspaces, LERP/SLERP/centroid baselines and NAO.

Exact identities at tight tolerance first, then distributional checks against scipy.stats
(Kolmogorov-Smirnov against the latents' own distribution), all on seeded generators.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from scipy import stats

from whichway.gaussian import (
    LatentSubspace,
    NAOCentroid,
    NAOPath,
    cog,
    cog_centroid,
    cog_iid,
    cog_interpolate,
    euclidean_centroid,
    lerp,
    mode_norm_centroid,
    nao_centroid,
    nao_interpolate,
    pick_interior,
    slerp,
    standardized_centroid,
)

SHAPE = (4, 64, 64)  # SD 2.1 latent, D = 16384
D = math.prod(SHAPE)
KS_ALPHA = 1e-4  # per-test level for "passes"; "fails" demands p < 1e-12
TIMES = [round(0.1 * i, 1) for i in range(1, 10)]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=gen(seed), dtype=dtype)


def ks_normal(z: torch.Tensor, loc: float = 0.0) -> float:
    return float(stats.kstest(z.detach().double().flatten().numpy() - loc, "norm").pvalue)


def assert_standard_normal(z: torch.Tensor) -> None:
    """Element mean ~ 0, variance ~ 1 (5 standard errors) and a KS pass against N(0, 1)."""
    n = z.numel()
    zz = z.double().flatten()
    assert abs(float(zz.mean())) < 5 / math.sqrt(n)
    assert abs(float(zz.var()) - 1.0) < 5 * math.sqrt(2 / n)
    assert ks_normal(zz) > KS_ALPHA


# --------------------------------------------------------------------------------------------
# COG: exact identities
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cog_one_hot_returns_that_latent_exactly(dtype: torch.dtype) -> None:
    x = randn(5, 3, 8, 8, dtype=dtype)
    for k in range(5):
        w = torch.zeros(5, dtype=dtype)
        w[k] = 1.0
        assert torch.equal(cog(x, w), x[k])
        assert torch.equal(cog(x, w, mean=0.7), x[k])  # alpha = beta = 1: mu term vanishes
    batched = cog(x, torch.eye(5, dtype=dtype))
    assert batched.shape == (5, 3, 8, 8)
    assert torch.equal(batched, x)


def test_cog_matches_closed_form_in_float64() -> None:
    x = randn(4, 2, 5, 5, dtype=torch.float64)
    mu = randn(2, 1, 1, seed=3, dtype=torch.float64)
    w = torch.tensor([[0.3, -1.2, 0.5, 2.0], [1.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
    got = cog(x, w, mean=mu)
    for b in range(2):
        alpha, beta = float(w[b].sum()), float((w[b] ** 2).sum())
        y = (w[b][:, None, None, None] * x).sum(0)
        ref = (1 - alpha / math.sqrt(beta)) * mu + y / math.sqrt(beta)
        torch.testing.assert_close(got[b], ref, rtol=1e-14, atol=1e-14)


def test_cog_is_scale_invariant_in_the_weights_and_centroid_matches_cog() -> None:
    x = randn(6, 10, 10, dtype=torch.float64)
    w = torch.rand(6, generator=gen(1), dtype=torch.float64)
    torch.testing.assert_close(cog(x, 1e-5 * w), cog(x, w), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        cog_centroid(x),
        cog(x, torch.full((6,), 1 / 6, dtype=torch.float64)),
        rtol=1e-14,
        atol=1e-14,
    )
    torch.testing.assert_close(cog_centroid(x), x.sum(0) / math.sqrt(6), rtol=1e-13, atol=1e-13)


def test_cog_weights_as_sequence_and_dtype_device_preserved() -> None:
    x = randn(3, 4, 4)
    z = cog(x, [0.2, 0.3, 0.5])
    assert z.dtype == torch.float32 and z.device == x.device and z.shape == (4, 4)
    torch.testing.assert_close(z, cog(x, torch.tensor([0.2, 0.3, 0.5])))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_keep_their_dtype(dtype: torch.dtype) -> None:
    x = randn(3, 4, 8, 8).to(dtype)
    ref = cog(x.double(), torch.tensor([0.2, 0.3, 0.5]))
    out = cog(x, torch.tensor([0.2, 0.3, 0.5]))
    assert out.dtype == dtype
    torch.testing.assert_close(out, ref.to(dtype))  # combined in float64, rounded once
    for fn in (cog_interpolate, lerp, slerp):
        path = fn(x[0], x[1], [0.0, 0.5, 1.0])
        assert path.dtype == dtype and torch.equal(path[0], x[0]) and torch.equal(path[2], x[1])
    assert LatentSubspace(x).grid(steps=3).dtype == dtype


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_interpolation_endpoints_exact(dtype: torch.dtype) -> None:
    x0, x1 = randn(*SHAPE, seed=1, dtype=dtype), randn(*SHAPE, seed=2, dtype=dtype)
    for fn in (cog_interpolate, lerp, slerp):
        path = fn(x0, x1, torch.tensor([0.0, 0.25, 1.0]))
        assert path.shape == (3, *SHAPE) and path.dtype == dtype
        assert torch.equal(path[0], x0), fn.__name__
        assert torch.equal(path[-1], x1), fn.__name__
        assert torch.equal(fn(x0, x1, 0.0), x0) and torch.equal(fn(x0, x1, 1), x1)
        assert fn(x0, x1, torch.tensor(0.5)).shape == SHAPE  # 0-dim t acts as a float
    assert torch.equal(cog_interpolate(x0, x1, 0.0, mean=0.3), x0)
    # slerp's LERP fallback (nearly parallel endpoints) keeps exact endpoints too
    y1 = x0 * 1.5
    assert torch.equal(slerp(x0, y1, 0.0), x0) and torch.equal(slerp(x0, y1, 1.0), y1)


def test_cog_interpolate_closed_form() -> None:
    x0, x1 = randn(50, seed=1, dtype=torch.float64), randn(50, seed=2, dtype=torch.float64)
    t = torch.linspace(0, 1, 7, dtype=torch.float64)
    ref = ((1 - t)[:, None] * x0 + t[:, None] * x1) / torch.sqrt((1 - t) ** 2 + t**2)[:, None]
    torch.testing.assert_close(cog_interpolate(x0, x1, t), ref, rtol=1e-14, atol=1e-14)


# --------------------------------------------------------------------------------------------
# COG: distributions (KS tests at D = 4*64*64)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pair", range(4))
def test_cog_interpolants_are_standard_normal_lerp_midpoint_is_not(pair: int) -> None:
    x0, x1 = randn(*SHAPE, seed=10 + 2 * pair), randn(*SHAPE, seed=11 + 2 * pair)
    path = cog_interpolate(x0, x1, TIMES)
    for z in path:
        assert_standard_normal(z)
    mid = lerp(x0, x1, 0.5)
    assert abs(float(mid.double().var()) - 0.5) < 5 * 0.5 * math.sqrt(2 / D)
    assert ks_normal(mid) < 1e-12


@pytest.mark.parametrize("k", [3, 5, 10, 25])
def test_cog_centroid_is_standard_normal_euclidean_is_not(k: int) -> None:
    x = randn(k, *SHAPE, seed=100 + k)
    assert_standard_normal(cog_centroid(x))
    c = euclidean_centroid(x)
    assert abs(float(c.double().var()) - 1 / k) < 5 * math.sqrt(2 / D) / k
    assert ks_normal(c) < 1e-12


def test_cog_with_nonzero_mean_keeps_the_mean() -> None:
    mu = torch.tensor([0.5, -1.0, 2.0, 0.0]).reshape(4, 1, 1)
    x = mu + randn(5, *SHAPE, seed=7)
    w = torch.tensor([0.4, -0.2, 1.3, 0.7, 0.1])
    for z in (
        cog(x, w, mean=mu),
        cog_centroid(x, mean=mu),
        *cog_interpolate(x[0], x[1], TIMES, mean=mu),
    ):
        assert_standard_normal(z - mu)
    # the same weights without mu are biased: alpha * mu / sqrt(beta) instead of mu
    assert ks_normal(cog(x, w) - mu) < 1e-12
    # a scalar mean broadcasts
    xs = 3.0 + randn(3, *SHAPE, seed=8)
    assert_standard_normal(cog_centroid(xs, mean=3.0) - 3.0)


def test_cog_subspace_points_are_standard_normal() -> None:
    x = randn(5, *SHAPE, seed=20)
    sub = LatentSubspace(x)
    h = torch.randn(3, 5, generator=gen(21)) * 40
    for z in sub.point(h):
        assert_standard_normal(z)


@pytest.mark.parametrize(
    ("name", "dist", "cdf", "icdf"),
    [
        ("uniform", stats.uniform(), lambda x: x.clamp(0, 1), lambda u: u),
        ("expon", stats.expon(), lambda x: -torch.expm1(-x), lambda u: -torch.log1p(-u)),
    ],
)
def test_cog_iid_keeps_a_non_gaussian_distribution(name, dist, cdf, icdf) -> None:
    g = gen(30)
    x = torch.from_numpy(
        dist.ppf(torch.rand(4, D, generator=g, dtype=torch.float64).numpy())
    ).float()
    x = x.reshape(4, *SHAPE)
    w = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25], [0.1, 0.6, -0.3, 0.2]])
    out = cog_iid(x, w, cdf, icdf)
    assert out.shape == (3, *SHAPE) and out.dtype == torch.float32
    for z in out:
        assert stats.kstest(z.double().flatten().numpy(), dist.cdf).pvalue > KS_ALPHA, name
    # the plain average does not keep the distribution
    assert stats.kstest(x[:2].double().mean(0).flatten().numpy(), dist.cdf).pvalue < 1e-12
    # one-hot weights give back the latent (up to the CDF round trip)
    single = cog_iid(x.double(), torch.tensor([0.0, 1.0, 0.0, 0.0]), cdf, icdf)
    torch.testing.assert_close(single, x[1].double(), rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------------------------
# SLERP and centroid baselines
# --------------------------------------------------------------------------------------------


def test_slerp_keeps_the_norm_and_moves_at_constant_angle() -> None:
    x0 = randn(*SHAPE, seed=40, dtype=torch.float64)
    x1 = randn(*SHAPE, seed=41, dtype=torch.float64)
    x1 = x1 * (x0.norm() / x1.norm())
    t = torch.linspace(0, 1, 21, dtype=torch.float64)
    path = slerp(x0, x1, t).flatten(1)
    torch.testing.assert_close(path.norm(dim=1), x0.norm().expand(21), rtol=1e-12, atol=0)
    theta = math.acos(float((x0.flatten() @ x1.flatten()) / (x0.norm() * x1.norm())))
    cos_to_x0 = (path @ x0.flatten()) / (path.norm(dim=1) * x0.norm())
    torch.testing.assert_close(torch.arccos(cos_to_x0.clamp(-1, 1)), t * theta, rtol=0, atol=1e-7)


def test_slerp_falls_back_to_lerp_when_nearly_parallel() -> None:
    x0 = randn(100, seed=42, dtype=torch.float64)
    x1 = 2.0 * x0 + 1e-3 * randn(100, seed=43, dtype=torch.float64)
    t = torch.tensor([0.2, 0.7], dtype=torch.float64)
    torch.testing.assert_close(slerp(x0, x1, t), lerp(x0, x1, t), rtol=0, atol=0)
    # just below the threshold slerp is used, and differs from lerp
    y1 = randn(100, seed=44, dtype=torch.float64)
    assert not torch.allclose(slerp(x0, y1, t), lerp(x0, y1, t))


def test_centroid_baselines() -> None:
    x = randn(5, *SHAPE, seed=50, dtype=torch.float64)
    torch.testing.assert_close(euclidean_centroid(x), x.mean(0), rtol=1e-15, atol=1e-15)
    s = standardized_centroid(x)
    assert abs(float(s.mean())) < 1e-12 and abs(float(s.var(correction=0)) - 1) < 1e-12
    c = x.mean(0)
    torch.testing.assert_close(s, (c - c.mean()) / c.std(correction=0))
    m = mode_norm_centroid(x)
    assert abs(float(m.norm()) - math.sqrt(D - 1)) < 1e-9
    torch.testing.assert_close(m / m.norm(), c / c.norm())
    # the mode of chi_D really is sqrt(D - 1)
    grid = torch.linspace(math.sqrt(D) - 2, math.sqrt(D) + 2, 40001, dtype=torch.float64)
    logpdf = torch.from_numpy(stats.chi(D).logpdf(grid.numpy()))
    assert abs(float(grid[logpdf.argmax()]) - math.sqrt(D - 1)) < 1e-4
    assert euclidean_centroid(x.float()).dtype == torch.float32


# --------------------------------------------------------------------------------------------
# subspaces
# --------------------------------------------------------------------------------------------


def test_subspace_reconstructs_basis_latents_and_weights_reproduce_qh() -> None:
    x = randn(5, 4, 16, 16, seed=60, dtype=torch.float64)
    sub = LatentSubspace(x)
    assert sub.q.shape == (1024, 5) and sub.q.dtype == torch.float64
    torch.testing.assert_close(
        sub.q.T @ sub.q, torch.eye(5, dtype=torch.float64), rtol=0, atol=1e-13
    )
    h = sub.project(x)  # (5, 5): the basis latents' coordinates
    torch.testing.assert_close(h, sub.coordinates, rtol=0, atol=1e-12)
    torch.testing.assert_close(
        sub.weights(h), torch.eye(5, dtype=torch.float64), rtol=0, atol=1e-13
    )
    torch.testing.assert_close(sub.point(h), x, rtol=0, atol=1e-12)
    for k in range(5):
        torch.testing.assert_close(sub.point(sub.project(x[k])), x[k], rtol=0, atol=1e-12)
    # w = X^+ Q h reproduces p = Q h, and equals the explicit pseudo-inverse
    X = x.reshape(5, -1).T
    hh = torch.randn(7, 5, generator=gen(61), dtype=torch.float64) * 30
    w = sub.weights(hh)
    torch.testing.assert_close((X @ w.T).T, (sub.q @ hh.T).T, rtol=0, atol=1e-11)
    torch.testing.assert_close(w, (torch.linalg.pinv(X) @ sub.q @ hh.T).T, rtol=1e-10, atol=1e-12)
    # a latent outside the span projects to the orthogonal projection's coordinates
    y = randn(4, 16, 16, seed=62, dtype=torch.float64)
    hy = sub.project(y)
    resid = y.flatten() - sub.q @ hy
    torch.testing.assert_close(X.T @ resid, torch.zeros(5, dtype=torch.float64), rtol=0, atol=1e-10)


def test_subspace_point_is_cog_of_weights() -> None:
    x = randn(3, 2, 8, 8, seed=63)
    mu = 0.25
    sub = LatentSubspace(x + mu, mean=mu)
    h = torch.tensor([3.0, -2.0, 5.0])
    torch.testing.assert_close(
        sub.point(h), cog(x + mu, sub.weights(h), mean=mu), rtol=1e-6, atol=1e-6
    )
    assert sub.point(h).dtype == torch.float32 and sub.project(x[0]).dtype == torch.float32


def test_subspace_grid() -> None:
    x = randn(4, 2, 8, 8, seed=64, dtype=torch.float64)
    sub = LatentSubspace(x)
    g = sub.grid(axes=(0, 2), steps=5)
    assert g.shape == (5, 5, 2, 8, 8)
    coords = sub.coordinates  # row k = h of latent k
    at = coords.mean(0)
    lo0, hi0 = float(coords[:, 0].min()), float(coords[:, 0].max())
    lo2, hi2 = float(coords[:, 2].min()), float(coords[:, 2].max())
    for i, j in [(0, 0), (4, 4), (1, 3), (2, 2)]:
        h = at.clone()
        h[0] = lo0 + (hi0 - lo0) * i / 4
        h[2] = lo2 + (hi2 - lo2) * j / 4
        torch.testing.assert_close(g[i, j], sub.point(h), rtol=1e-12, atol=1e-12)
    # explicit span and at
    at2 = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    g2 = sub.grid(axes=(1, 3), steps=3, span=((-1.0, 1.0), (0.0, 2.0)), at=at2)
    torch.testing.assert_close(
        g2[2, 0], sub.point(torch.tensor([1.0, 1.0, 3.0, 0.0], dtype=torch.float64))
    )
    g3 = sub.grid(steps=2, span=(-5.0, 5.0))
    torch.testing.assert_close(g3[0, 1], sub.point(torch.cat([torch.tensor([-5.0, 5.0]), at[2:]])))


def test_subspace_rank_checks() -> None:
    x = randn(3, 4, 8, 8, seed=65)
    dep = torch.stack([x[0], x[1], x[0] + 2 * x[1]])
    with pytest.raises(ValueError, match=r"latent 2 is linearly dependent on latents 0\.\.1"):
        LatentSubspace(dep)
    with pytest.raises(ValueError, match="latent 1 is linearly dependent"):
        LatentSubspace(torch.stack([x[0], -3 * x[0], x[2]]))
    for dtype in (
        torch.float64,
        torch.bfloat16,
        torch.float16,
    ):  # rounding of the dtype is tolerated
        xd = x.to(dtype)
        with pytest.raises(ValueError, match=r"latent 2 is linearly dependent"):
            LatentSubspace(torch.stack([xd[0], xd[1], xd[0] + 2 * xd[1]]))
        assert LatentSubspace(xd).dim == 3
    with pytest.raises(ValueError, match="latent 0 is .*zero"):
        LatentSubspace(torch.stack([torch.zeros_like(x[0]), x[1]]))
    with pytest.raises(ValueError, match="all latents are zero"):
        LatentSubspace(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="K <= D"):
        LatentSubspace(torch.randn(4, 3, generator=gen()))
    sub = LatentSubspace(x)
    with pytest.raises(ValueError, match="axes must be two distinct"):
        sub.grid(axes=(1, 1))
    with pytest.raises(ValueError, match="axes must be two distinct"):
        sub.grid(axes=(0, 3))
    with pytest.raises(ValueError, match="steps must be an integer >= 2"):
        sub.grid(steps=1)
    with pytest.raises(ValueError, match="span must be"):
        sub.grid(span=(0.0, 1.0, 2.0))
    with pytest.raises(ValueError, match=r"h must have shape \(K,\)"):
        sub.point(torch.zeros(4))
    with pytest.raises(ValueError, match="at must have shape"):
        sub.grid(at=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="x must have the latent shape"):
        sub.project(torch.zeros(4, 8, 9))
    with pytest.raises(ValueError, match="x must match the basis latents' dtype"):
        sub.project(x[0].double())
    with pytest.raises(ValueError, match="rtol must be"):
        LatentSubspace(x, rtol=-1.0)


# --------------------------------------------------------------------------------------------
# NAO
# --------------------------------------------------------------------------------------------

NAO_SHAPE = (4, 16, 16)  # D = 1024 keeps the optimisation fast in tests


def _norm_gap(points: torch.Tensor) -> float:
    d = points[0].numel()
    return float((points.double().flatten(1).norm(dim=1) - math.sqrt(d)).abs().mean())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nao_interpolate_improves_norms(dtype: torch.dtype) -> None:
    x0, x1 = randn(*NAO_SHAPE, seed=70, dtype=dtype), randn(*NAO_SHAPE, seed=71, dtype=dtype)
    res = nao_interpolate(x0, x1, 11, max_iter=100, generator=gen(5))
    assert isinstance(res, NAOPath)
    assert res.points.shape == (11, *NAO_SHAPE) and res.points.dtype == dtype
    assert torch.equal(res.points[0], x0) and torch.equal(res.points[-1], x1)
    assert 1 <= res.iterations <= 100 and len(res.loss_history) == res.iterations
    assert res.loss_history[-1] < res.loss_history[0]
    assert all(math.isfinite(v) for v in res.loss_history)
    interior = res.points[1:-1]
    lerp_interior = lerp(x0, x1, torch.linspace(0, 1, 11)[1:-1])
    assert _norm_gap(interior) < 0.25 * _norm_gap(lerp_interior)


def test_nao_interpolate_is_deterministic_and_seeded() -> None:
    x0, x1 = randn(*NAO_SHAPE, seed=72), randn(*NAO_SHAPE, seed=73)
    a = nao_interpolate(x0, x1, 7, max_iter=40, generator=gen(1))
    b = nao_interpolate(x0, x1, 7, max_iter=40, generator=gen(1))
    assert torch.equal(a.points, b.points) and a.loss_history == b.loss_history
    c = nao_interpolate(x0, x1, 7, max_iter=40, generator=gen(2))
    assert not torch.equal(a.points, c.points)
    d1, d2 = nao_interpolate(x0, x1, 7, max_iter=40), nao_interpolate(x0, x1, 7, max_iter=40)
    assert torch.equal(d1.points, d2.points)


def test_nao_interpolate_stops_on_flat_loss_and_matches_lerp_without_steps() -> None:
    x0, x1 = randn(*NAO_SHAPE, seed=74), randn(*NAO_SHAPE, seed=75)
    # a huge tolerance: every |dloss| after the first step is "small" (the first compares with
    # +inf, as in the reference), so it stops after exactly patience + 1 steps
    res = nao_interpolate(x0, x1, 5, tol=1e12, patience=3)
    assert res.converged and res.iterations == 4
    res1 = nao_interpolate(x0, x1, 5, max_iter=2, tol=0.0)
    assert not res1.converged and res1.iterations == 2
    # the objective at the LERP start is the reference line integral, evaluated here with scipy
    start = nao_interpolate(x0, x1, 5, max_iter=1, jitter=0.0)
    pts = lerp(x0, x1, torch.linspace(0, 1, 5)).double().flatten(1)
    seg = (pts[1:] - pts[:-1]).norm(dim=1)
    mids = (0.5 * (pts[1:] + pts[:-1])).norm(dim=1)
    eps = 2 * float((x0 - x1).double().norm()) / 5
    ref = (
        -(seg * torch.from_numpy(stats.chi(1024).logpdf(mids.numpy()))).sum()
        + torch.relu(seg - eps).sum()
    )
    assert abs(start.loss_history[0] - float(ref)) < 1e-8 * abs(float(ref))


def test_nao_closed_form_gradient_matches_autograd() -> None:
    from whichway.gaussian import _log_chi, _log_chi_grad, _path_loss_and_grad

    d = 64
    g = gen(80)
    paths = torch.randn(3, 6, d, generator=g, dtype=torch.float64) * 1.3
    paths[1, 2] = paths[1, 3]  # a zero-length segment: subgradient 0, like autograd's norm
    eps = torch.tensor([0.5, 1.0, 100.0], dtype=torch.float64)  # some segments over, some under
    ref_paths = paths.clone().requires_grad_(True)
    seg = (ref_paths[:, 1:] - ref_paths[:, :-1]).norm(dim=-1)
    mid = (0.5 * (ref_paths[:, 1:] + ref_paths[:, :-1])).norm(dim=-1)
    chi = torch.from_numpy(stats.chi(d).logpdf(mid.detach().numpy()))
    torch.testing.assert_close(_log_chi(mid.detach(), d), chi, rtol=1e-12, atol=1e-10)
    logpdf = (
        (d - 1) * torch.log(mid) - mid**2 / 2 - ((d / 2 - 1) * math.log(2) + math.lgamma(d / 2))
    )
    ref_loss = (-(seg * logpdf) + torch.relu(seg - eps[:, None])).sum(-1)
    ref_loss.sum().backward()
    loss, grad = _path_loss_and_grad(paths, eps, d)
    torch.testing.assert_close(loss, ref_loss.detach(), rtol=1e-13, atol=1e-10)
    torch.testing.assert_close(grad, ref_paths.grad, rtol=1e-11, atol=1e-10)
    r = torch.tensor(7.5, dtype=torch.float64, requires_grad=True)
    _log_chi(r, d).backward()
    torch.testing.assert_close(_log_chi_grad(r.detach(), d), r.grad, rtol=1e-14, atol=0)


def test_nao_runs_under_no_grad_and_inference_mode() -> None:
    x0, x1 = randn(*NAO_SHAPE, seed=76), randn(*NAO_SHAPE, seed=77)
    ref = nao_interpolate(x0, x1, 5, max_iter=5)
    with torch.no_grad():
        assert torch.equal(nao_interpolate(x0, x1, 5, max_iter=5).points, ref.points)
    with torch.inference_mode():
        a, b = x0.clone(), x1.clone()
        assert torch.equal(nao_interpolate(a, b, 5, max_iter=5).points, ref.points)


def test_nao_centroid() -> None:
    x = randn(4, *NAO_SHAPE, seed=78)
    res = nao_centroid(x, 5, max_iter=100, generator=gen(3))
    assert isinstance(res, NAOCentroid)
    assert res.centroid.shape == NAO_SHAPE and res.centroid.dtype == torch.float32
    assert res.paths.shape == (4, 5, *NAO_SHAPE)
    assert torch.equal(res.paths[:, 0], x)
    assert torch.equal(res.paths[:, -1], res.centroid.expand_as(res.paths[:, -1]))
    assert res.loss_history[-1] < res.loss_history[0]
    d = math.prod(NAO_SHAPE)
    gap = abs(float(res.centroid.double().norm()) - math.sqrt(d))
    assert gap < 0.25 * abs(float(euclidean_centroid(x).double().norm()) - math.sqrt(d))
    again = nao_centroid(x, 5, max_iter=100, generator=gen(3))
    assert torch.equal(again.centroid, res.centroid) and torch.equal(again.paths, res.paths)
    r64 = nao_centroid(x.double(), 4, max_iter=3, init=x[0].double())
    assert r64.centroid.dtype == torch.float64 and r64.iterations == 3


# --------------------------------------------------------------------------------------------
# pick_interior
# --------------------------------------------------------------------------------------------


def _picked(n: int, k: int) -> list[int]:
    return [int(v) for v in pick_interior(torch.arange(n, dtype=torch.float64), k)]


def test_pick_interior_reference_cases() -> None:
    assert _picked(11, 3) == [2, 5, 8]  # the papers' evaluation: 3 of 11
    assert _picked(50, 3) == [12, 24, 37]
    assert _picked(5, 3) == [1, 2, 3]
    assert _picked(9, 3) == [2, 4, 6]
    assert _picked(11, 1) == [5] and _picked(10, 1) == [4]
    path = NAOPath(
        points=torch.arange(11.0).reshape(11, 1), iterations=0, converged=False, loss_history=()
    )
    assert pick_interior(path).flatten().tolist() == [2.0, 5.0, 8.0]


def test_pick_interior_properties() -> None:
    for n in range(3, 40):
        for k in range(1, n - 1):
            idx = _picked(n, k)
            assert all(1 <= i <= n - 2 for i in idx)
            assert all(b > a for a, b in itertools.pairwise(idx))
            ideal = [i * (n - 1) / (k + 1) for i in range(1, k + 1)]
            assert all(abs(i - p) <= 0.5 for i, p in zip(idx, ideal, strict=True))
            if not (n % 2 == 0 and k % 2 == 1):  # a symmetric choice exists: it is the one made
                assert idx == [n - 1 - i for i in reversed(idx)], (n, k)


# --------------------------------------------------------------------------------------------
# bad inputs
# --------------------------------------------------------------------------------------------


def test_bad_inputs_raise() -> None:
    x = randn(3, 4, 4)
    with pytest.raises(ValueError, match="same shape"):
        cog_interpolate(x[0], x[1, :2], 0.5)
    with pytest.raises(ValueError, match="same dtype"):
        slerp(x[0], x[1].double(), 0.5)
    with pytest.raises(ValueError, match="K >= 1 latents"):
        cog(torch.empty(0, 4), torch.empty(0))
    with pytest.raises(ValueError, match="K >= 1 latents"):
        cog_centroid(torch.empty(0, 3))
    nan = x.clone()
    nan[1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        cog_centroid(nan)
    with pytest.raises(ValueError, match="non-finite"):
        lerp(nan[1], x[0], 0.5)
    with pytest.raises(ValueError, match="non-finite"):
        cog(x, torch.tensor([1.0, float("inf"), 0.0]))
    with pytest.raises(ValueError, match="must be a torch.Tensor"):
        cog([[1.0]], [1.0])
    with pytest.raises(ValueError, match="floating dtype"):
        euclidean_centroid(torch.ones(3, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"weights must have shape \(K,\) = \(3,\)"):
        cog(x, torch.ones(4))
    with pytest.raises(ValueError, match=r"weights must have shape"):
        cog(x, torch.ones(2, 3, 1))
    with pytest.raises(ValueError, match="beta = sum"):
        cog(x, torch.zeros(3))
    with pytest.raises(ValueError, match=r"offending weight row\(s\) \[1\]"):
        cog(x, torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="does not broadcast"):
        cog(x, torch.ones(3), mean=torch.zeros(5))
    with pytest.raises(ValueError, match="mean must be None, a number, or a tensor"):
        cog(x, torch.ones(3), mean="zero")
    with pytest.raises(ValueError, match="mean must be finite"):
        cog_centroid(x, mean=float("nan"))
    for fn in (cog_interpolate, lerp, slerp):
        with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
            fn(x[0], x[1], 1.5)
        with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
            fn(x[0], x[1], torch.tensor([0.5, -0.1]))
        with pytest.raises(ValueError, match="t must be a float or a 1-D tensor"):
            fn(x[0], x[1], torch.zeros(2, 2))
    with pytest.raises(ValueError, match="non-zero endpoints"):
        slerp(torch.zeros(4), torch.ones(4), 0.5)
    with pytest.raises(ValueError, match="dot_threshold"):
        slerp(x[0], x[1], 0.5, dot_threshold=2.0)
    with pytest.raises(ValueError, match="cannot be standardised"):
        standardized_centroid(torch.ones(2, 5))
    with pytest.raises(ValueError, match="cannot be rescaled"):
        mode_norm_centroid(torch.stack([torch.ones(5), -torch.ones(5)]))


def test_bad_inputs_raise_cog_iid_nao_pick() -> None:
    x = torch.rand(2, 8, generator=gen())
    with pytest.raises(ValueError, match="probabilities in"):
        cog_iid(x, [0.5, 0.5], lambda v: v + 2.0, lambda u: u)
    with pytest.raises(ValueError, match="cdf must return a tensor of shape"):
        cog_iid(x, [0.5, 0.5], lambda v: v[0], lambda u: u)
    with pytest.raises(ValueError, match="icdf must return a tensor of shape"):
        cog_iid(x, [0.5, 0.5], lambda v: v, lambda u: u.flatten())
    with pytest.raises(ValueError, match="must be callables"):
        cog_iid(x, [0.5, 0.5], None, lambda u: u)
    with pytest.raises(ValueError, match="clamp must be"):
        cog_iid(x, [0.5, 0.5], lambda v: v, lambda u: u, clamp=0.7)
    a, b = randn(16, seed=1), randn(16, seed=2)
    with pytest.raises(ValueError, match="n_points must be an integer >= 3"):
        nao_interpolate(a, b, 2)
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        nao_interpolate(a, b, 5, lr=0.0)
    with pytest.raises(ValueError, match="max_iter must be an integer >= 1"):
        nao_interpolate(a, b, 5, max_iter=0)
    with pytest.raises(ValueError, match="patience must be"):
        nao_interpolate(a, b, 5, patience=0)
    with pytest.raises(ValueError, match="tol must be"):
        nao_interpolate(a, b, 5, tol=-1.0)
    with pytest.raises(ValueError, match="generator must be a torch.Generator"):
        nao_interpolate(a, b, 5, generator=0)
    with pytest.raises(ValueError, match="same shape"):
        nao_interpolate(a, b[:8], 5)
    with pytest.raises(ValueError, match="n_points_per_path must be"):
        nao_centroid(torch.stack([a, b]), 1)
    with pytest.raises(ValueError, match="init must be a latent of shape"):
        nao_centroid(torch.stack([a, b]), 5, init=torch.zeros(3))
    with pytest.raises(ValueError, match="initial centroid is zero"):
        nao_centroid(torch.stack([a, -a]), 5)
    with pytest.raises(ValueError, match=r"cannot pick k = 3 interior points from a path of n = 4"):
        pick_interior(torch.zeros(4, 2), 3)
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        pick_interior(torch.zeros(4, 2), 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_device_is_kept() -> None:
    dev = torch.device("cuda")
    x = torch.randn(3, *SHAPE, generator=torch.Generator(dev).manual_seed(0), device=dev)
    for out in (
        cog(x, torch.tensor([0.2, 0.3, 0.5])),
        cog_interpolate(x[0], x[1], [0.0, 0.5]),
        slerp(x[0], x[1], 0.3),
        LatentSubspace(x).grid(steps=3),
        nao_interpolate(
            x[0], x[1], 5, max_iter=5, generator=torch.Generator(dev).manual_seed(1)
        ).points,
        nao_centroid(x, 5, max_iter=5).centroid,
    ):
        assert out.device.type == "cuda"
    assert torch.equal(cog_interpolate(x[0], x[1], 1.0), x[1])
    assert_standard_normal(cog_centroid(x).cpu())
