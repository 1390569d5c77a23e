"""Tests of whichway.clouds: exact properties first, then SciPy / POT as references."""

from __future__ import annotations

import json

import numpy as np
import ot
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

from whichway import (
    COUPLING_METHODS,
    Barycenter,
    Coupling,
    cloud_barycenter,
    couple,
    interpolate_clouds,
    path_length_w2,
    wasserstein2,
)

F64 = torch.float64


def clouds(n: int, d: int, seed: int, dtype: torch.dtype = F64, m: int | None = None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=F64)
    y = torch.randn(n if m is None else m, d, generator=g, dtype=F64) + 0.5
    return x.to(dtype), y.to(dtype)


def sq_dist_numpy(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Reference cost matrix by explicit differences (no expansion), float64."""
    xn = x.double().numpy()
    yn = y.double().numpy()
    return ((xn[:, None, :] - yn[None, :, :]) ** 2).sum(-1)


def exact_cost(x: torch.Tensor, y: torch.Tensor, perm: torch.Tensor) -> float:
    return float(((x.double() - y.double()[perm]) ** 2).sum())


def is_permutation(perm: torch.Tensor, n: int) -> bool:
    return torch.equal(torch.sort(perm).values, torch.arange(n))


def sort_rows(a: torch.Tensor) -> torch.Tensor:
    """Rows in lexicographic order (for comparisons up to row order)."""
    order = np.lexsort(a.double().numpy().T[::-1])
    return a[torch.from_numpy(order.copy())]


# ---------------------------------------------------------------------------- couplings


@pytest.mark.parametrize(("n", "d", "seed"), [(1, 3, 0), (5, 2, 1), (20, 16, 2), (77, 768, 3)])
def test_ot_is_optimal_against_scipy_and_pot(n: int, d: int, seed: int) -> None:
    x, y = clouds(n, d, seed)
    c = couple(x, y, "ot")
    assert isinstance(c, Coupling) and c.method == "ot" and c.plan is None
    assert c.perm.dtype == torch.long and c.perm.shape == (n,)
    assert is_permutation(c.perm, n)
    # the reported cost is the exact cost of the returned permutation
    assert c.cost == pytest.approx(exact_cost(x, y, c.perm), rel=1e-12, abs=0)
    mat = sq_dist_numpy(x, y)
    rows, cols = linear_sum_assignment(mat)
    assert c.cost == pytest.approx(mat[rows, cols].sum(), rel=1e-9)
    uniform = np.full(n, 1.0 / n)
    emd_cost = n * ot.emd2(uniform, uniform, ot.dist(x.numpy(), y.numpy()))
    assert c.cost == pytest.approx(emd_cost, rel=1e-9)
    plan = ot.emd(uniform, uniform, ot.dist(x.numpy(), y.numpy()))
    assert c.cost == pytest.approx(n * float((plan * mat).sum()), rel=1e-9)


def test_ot_recovers_a_hidden_permutation() -> None:
    x, _ = clouds(77, 768, 4)
    g = torch.Generator().manual_seed(5)
    hidden = torch.randperm(77, generator=g)
    y = torch.empty_like(x)
    y[hidden] = x  # x[i] sits at row hidden[i] of y
    c = couple(x, y, "ot")
    assert torch.equal(c.perm, hidden)
    assert c.cost == 0.0


def test_clip_is_the_identity() -> None:
    x, y = clouds(30, 7, 6)
    c = couple(x, y, "clip")
    assert torch.equal(c.perm, torch.arange(30))
    assert c.cost == pytest.approx(float(((x - y) ** 2).sum()), rel=1e-14)
    assert c.method == "clip"


def test_random_is_a_reproducible_permutation() -> None:
    x, y = clouds(40, 3, 7)
    c1 = couple(x, y, "random", generator=torch.Generator().manual_seed(11))
    c2 = couple(x, y, "random", generator=torch.Generator().manual_seed(11))
    c3 = couple(x, y, "random", generator=torch.Generator().manual_seed(12))
    assert is_permutation(c1.perm, 40)
    assert torch.equal(c1.perm, c2.perm)
    assert not torch.equal(c1.perm, c3.perm)  # 1/40! chance to fail
    expected = torch.randperm(40, generator=torch.Generator().manual_seed(11))
    assert torch.equal(c1.perm, expected)
    assert c1.cost == pytest.approx(exact_cost(x, y, c1.perm), rel=1e-14)


@pytest.mark.parametrize("method", COUPLING_METHODS)
def test_batched_equals_per_pair(method: str) -> None:
    g = torch.Generator().manual_seed(8)
    xb = torch.randn(6, 15, 9, generator=g)
    yb = torch.randn(6, 15, 9, generator=g)
    batched = couple(xb, yb, method, generator=torch.Generator().manual_seed(3))
    assert batched.perm.shape == (6, 15)
    assert isinstance(batched.cost, torch.Tensor) and batched.cost.shape == (6,)
    assert batched.cost.dtype == F64
    per_pair_gen = torch.Generator().manual_seed(3)  # a batch draws its permutations in order
    for i in range(6):
        single = couple(xb[i], yb[i], method, generator=per_pair_gen)
        assert torch.equal(batched.perm[i], single.perm)
        assert float(batched.cost[i]) == pytest.approx(single.cost, rel=1e-14)


def test_batched_larger_than_one_chunk() -> None:
    from whichway import clouds as module

    g = torch.Generator().manual_seed(9)
    xb = torch.randn(5, 6, 3, generator=g)
    yb = torch.randn(5, 6, 3, generator=g)
    reference = couple(xb, yb)
    old = module._CHUNK_ENTRIES
    module._CHUNK_ENTRIES = 1  # one pair per chunk
    try:
        chunked = couple(xb, yb)
    finally:
        module._CHUNK_ENTRIES = old
    assert torch.equal(chunked.perm, reference.perm)
    assert torch.equal(chunked.cost, reference.cost)


def test_float32_inputs_keep_dtype_and_use_float64_costs() -> None:
    x, y = clouds(77, 768, 10, dtype=torch.float32)
    c = couple(x, y)
    reference = couple(x.double(), y.double())
    assert torch.equal(c.perm, reference.perm)  # same data, same float64 cost matrix
    assert c.cost == pytest.approx(reference.cost, rel=1e-14)
    e = interpolate_clouds(x, y, 0.3, coupling=c)
    assert e.dtype == torch.float32 and e.device == x.device


# ---------------------------------------------------------------------------- paths


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("method", COUPLING_METHODS)
def test_endpoints_are_bit_exact(dtype: torch.dtype, method: str) -> None:
    x, y = clouds(77, 768, 12, dtype=dtype)
    c = couple(x, y, method, generator=torch.Generator().manual_seed(0))
    assert torch.equal(interpolate_clouds(x, y, 0.0, coupling=c), x)
    assert torch.equal(interpolate_clouds(x, y, 1.0, coupling=c), y[c.perm])
    path = interpolate_clouds(x, y, torch.tensor([0.0, 0.25, 1.0]), coupling=c)
    assert path.shape == (3, 77, 768) and path.dtype == dtype
    assert torch.equal(path[0], x) and torch.equal(path[-1], y[c.perm])


def test_interpolation_formula_and_shapes() -> None:
    x, y = clouds(10, 4, 13)
    c = couple(x, y)
    ts = torch.linspace(0, 1, 7, dtype=F64)
    path = interpolate_clouds(x, y, ts)  # coupling computed with method="ot"
    assert path.shape == (7, 10, 4)
    for k, t in enumerate(ts.tolist()):
        expected = (1 - t) * x + t * y[c.perm]
        torch.testing.assert_close(path[k], expected, rtol=1e-15, atol=1e-15)
    assert interpolate_clouds(x, y, 0.5).shape == (10, 4)
    assert interpolate_clouds(x, y, [0.0, 1.0]).shape == (2, 10, 4)


def test_batched_interpolation_shapes_and_values() -> None:
    g = torch.Generator().manual_seed(14)
    xb = torch.randn(3, 8, 5, generator=g, dtype=F64)
    yb = torch.randn(3, 8, 5, generator=g, dtype=F64)
    ts = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    path = interpolate_clouds(xb, yb, ts)
    assert path.shape == (3, 3, 8, 5)
    single = interpolate_clouds(xb, yb, 0.5)
    assert single.shape == (3, 8, 5)
    for b in range(3):
        torch.testing.assert_close(path[b], interpolate_clouds(xb[b], yb[b], ts), rtol=0, atol=0)
        torch.testing.assert_close(single[b], path[b, 1], rtol=0, atol=0)
    assert torch.equal(path[:, 0], xb)


@pytest.mark.parametrize("t", [0.1, 0.3, 0.5, 0.77, 1.0])
def test_geodesic_identity(t: float) -> None:
    x, y = clouds(77, 768, 15)
    w = wasserstein2(x, y)
    et = interpolate_clouds(x, y, t)
    assert wasserstein2(x, et) == pytest.approx(t * w, rel=1e-6)
    assert wasserstein2(et, y) == pytest.approx((1 - t) * w, rel=1e-6)
    es = interpolate_clouds(x, y, 0.05)
    assert wasserstein2(es, et) == pytest.approx((t - 0.05) * w, rel=1e-6)


def test_path_lengths_ot_is_geodesic_others_longer() -> None:
    x, y = clouds(77, 768, 16)
    ts = torch.linspace(0, 1, 11, dtype=F64)
    w = wasserstein2(x, y)
    ot_len = path_length_w2(interpolate_clouds(x, y, ts, method="ot"))
    assert ot_len == pytest.approx(w, rel=1e-6)
    for method in ("clip", "random"):
        frames = interpolate_clouds(
            x, y, ts, method=method, generator=torch.Generator().manual_seed(1)
        )
        assert path_length_w2(frames) >= ot_len * (1 - 1e-12)
    # a batch of paths gives one length per path
    batch = torch.stack([interpolate_clouds(x, y, ts), interpolate_clouds(y, x, ts)])
    lengths = path_length_w2(batch)
    assert lengths.shape == (2,)
    torch.testing.assert_close(lengths, torch.tensor([w, w], dtype=F64), rtol=1e-6, atol=0)
    assert path_length_w2(ts.new_zeros(1, 77, 768)) == 0.0


def test_wasserstein2_closed_forms() -> None:
    x, _ = clouds(12, 5, 17)
    shift = torch.randn(5, dtype=F64)
    # translating a cloud moves it by exactly the norm of the shift
    assert wasserstein2(x, x + shift) == pytest.approx(float(shift.norm()), rel=1e-12)
    assert wasserstein2(x, x.flip(0)) == 0.0
    y = clouds(12, 5, 18)[1]
    assert wasserstein2(x, y) == pytest.approx(wasserstein2(y, x), rel=1e-12)
    batch = wasserstein2(torch.stack([x, x]), torch.stack([y, x + shift]))
    torch.testing.assert_close(
        batch,
        torch.tensor([wasserstein2(x, y), float(shift.norm())], dtype=F64),
        rtol=1e-12,
        atol=0,
    )


# ---------------------------------------------------------------------------- general case


@pytest.mark.parametrize(("n", "m"), [(12, 7), (5, 9), (77, 40)])
def test_unequal_sizes_match_pot(n: int, m: int) -> None:
    x, y = clouds(n, 6, 19, m=m)
    c = couple(x, y)
    assert c.perm is None and c.plan is not None and c.plan.shape == (n, m) and c.plan.dtype == F64
    a, b = np.full(n, 1.0 / n), np.full(m, 1.0 / m)
    np.testing.assert_allclose(c.plan.sum(1).numpy(), a, rtol=0, atol=1e-15)
    np.testing.assert_allclose(c.plan.sum(0).numpy(), b, rtol=0, atol=1e-15)
    assert (c.plan >= 0).all()
    reference = ot.emd2(a, b, ot.dist(x.numpy(), y.numpy()))
    assert c.cost == pytest.approx(n * reference, rel=1e-9)
    assert wasserstein2(x, y) == pytest.approx(np.sqrt(reference), rel=1e-9)
    # path: n rows, starts at x, ends at the barycentric projection of the plan
    path = interpolate_clouds(x, y, torch.tensor([0.0, 0.5, 1.0], dtype=F64), coupling=c)
    assert path.shape == (3, n, 6)
    projection = (c.plan @ y) / c.plan.sum(1, keepdim=True)
    assert torch.equal(path[0], x)
    torch.testing.assert_close(path[-1], projection, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(path[1], 0.5 * (x + projection), rtol=1e-14, atol=1e-14)


def test_weights_match_pot_and_zero_mass_rows() -> None:
    x, y = clouds(10, 4, 20, m=8)
    xw = torch.tensor(
        [1, 1, 1, 1, 1, 1, 1, 1, 0, 0], dtype=F64
    )  # a mask: last two rows are padding
    yw = torch.arange(1, 9, dtype=F64)
    c = couple(x, y, x_weights=xw, y_weights=yw)
    a, b = (xw / xw.sum()).numpy(), (yw / yw.sum()).numpy()
    np.testing.assert_allclose(c.plan.sum(1).numpy(), a, atol=1e-15, rtol=0)
    np.testing.assert_allclose(c.plan.sum(0).numpy(), b, atol=1e-15, rtol=0)
    assert c.cost == pytest.approx(10 * ot.emd2(a, b, ot.dist(x.numpy(), y.numpy())), rel=1e-9)
    end = interpolate_clouds(x, y, 1.0, coupling=c)
    live = c.plan[:8].sum(1, keepdim=True)
    torch.testing.assert_close(end[:8], (c.plan[:8] @ y) / live, rtol=1e-14, atol=1e-14)
    for i in (8, 9):  # zero-mass rows go to their nearest point of y
        nearest = int(((y - x[i]) ** 2).sum(1).argmin())
        assert torch.equal(end[i], y[nearest])
    # equal sizes with uniform weights given explicitly reproduce the assignment
    x2, y2 = clouds(9, 3, 21)
    general = couple(x2, y2, x_weights=torch.ones(9, dtype=F64))
    assert general.cost == pytest.approx(couple(x2, y2).cost, rel=1e-9)


# ---------------------------------------------------------------------------- barycenters


@pytest.mark.parametrize("w1", [0.0, 0.3, 0.5, 0.8, 1.0])
def test_barycenter_of_two_is_the_displacement_interpolation(w1: float) -> None:
    x, y = clouds(30, 6, 22)
    weights = torch.tensor([1 - w1, w1], dtype=F64)
    bary = cloud_barycenter(torch.stack([x, y]), weights)
    assert isinstance(bary, Barycenter) and bary.converged
    expected = interpolate_clouds(x, y, w1)
    torch.testing.assert_close(sort_rows(bary.points), sort_rows(expected), rtol=1e-12, atol=1e-12)
    assert bary.cost == pytest.approx(w1 * (1 - w1) * couple(x, y).cost, rel=1e-9, abs=1e-9)


def test_barycenter_fixed_point_and_pot_reference() -> None:
    g = torch.Generator().manual_seed(23)
    stack = torch.randn(4, 20, 5, generator=g, dtype=F64)
    weights = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=F64)
    bary = cloud_barycenter(list(stack), weights)
    assert bary.converged and bary.points.shape == (20, 5) and bary.perms.shape == (4, 20)
    # fixed point: the support is the weighted average of the assigned points ...
    matched = torch.stack([stack[k][bary.perms[k]] for k in range(4)])
    torch.testing.assert_close(
        bary.points, torch.einsum("k,knd->nd", weights, matched), rtol=1e-14, atol=1e-14
    )
    # ... and every assignment is optimal for the final support
    costs = [couple(bary.points, stack[k]).cost for k in range(4)]
    for k in range(4):
        assert exact_cost(bary.points, stack[k], bary.perms[k]) == pytest.approx(costs[k], rel=1e-9)
    assert bary.cost == pytest.approx(
        float(sum(w * c for w, c in zip(weights.tolist(), costs))), rel=1e-9
    )
    # never worse than the starting support (the heaviest cloud, index 3)
    start = float(sum(w * couple(stack[3], stack[k]).cost for k, w in enumerate(weights.tolist())))
    assert bary.cost <= start
    # POT's free-support barycenter (same algorithm with ot.emd) from the same start
    n = 20
    reference = ot.lp.free_support_barycenter(
        [c.numpy() for c in stack],
        [np.full(n, 1.0 / n)] * 4,
        stack[3].numpy().copy(),
        weights=weights.numpy(),
        numItermax=200,
        stopThr=1e-20,
    )
    np.testing.assert_allclose(
        sort_rows(bary.points).numpy(), sort_rows(torch.from_numpy(reference)).numpy(), atol=1e-10
    )
    # an explicit starting support (the row-wise weighted mean) also ends at a fixed point
    mean_start = cloud_barycenter(stack, weights, init=torch.einsum("k,knd->nd", weights, stack))
    assert mean_start.converged
    matched = torch.stack([stack[k][mean_start.perms[k]] for k in range(4)])
    torch.testing.assert_close(
        mean_start.points, torch.einsum("k,knd->nd", weights, matched), rtol=1e-14, atol=1e-14
    )


def test_barycenter_single_cloud_and_dtype() -> None:
    x, _ = clouds(9, 3, 24, dtype=torch.float32)
    bary = cloud_barycenter(x.unsqueeze(0))
    assert torch.equal(bary.points, x) and bary.converged and bary.cost == 0.0
    assert bary.points.dtype == torch.float32


# ---------------------------------------------------------------------------- errors


def test_errors() -> None:
    x, y = clouds(5, 3, 25)
    with pytest.raises(ValueError, match="valid choices are: ot, clip, random"):
        couple(x, y, "sinkhorn")
    with pytest.raises(ValueError, match="same shape"):
        couple(x, torch.randn(2, 5, 3, dtype=F64))
    with pytest.raises(ValueError, match="same dimension d"):
        couple(x, torch.randn(5, 4, dtype=F64)[:4])
    with pytest.raises(ValueError, match="same shape"):
        couple(x, torch.randn(5, 4, dtype=F64))
    with pytest.raises(ValueError, match="same dtype"):
        couple(x, y.float())
    with pytest.raises(ValueError, match="floating dtype"):
        couple(x.long(), y.long())
    with pytest.raises(ValueError, match="torch.Tensor"):
        couple(x.numpy(), y)
    bad = x.clone()
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        couple(bad, y)
    bad[1, 2] = float("inf")
    with pytest.raises(ValueError, match="non-finite"):
        interpolate_clouds(x, bad, 0.5)
    with pytest.raises(ValueError, match="empty cloud"):
        couple(x[:0], y[:0])
    with pytest.raises(ValueError, match="empty cloud"):
        couple(x[:, :0], y[:, :0])
    with pytest.raises(ValueError, match=r"point cloud \(n, d\) or a batch \(B, n, d\)"):
        couple(x[0], y[0])
    with pytest.raises(ValueError, match=r"point cloud \(n, d\) or a batch"):
        couple(x.reshape(1, 1, 5, 3), y.reshape(1, 1, 5, 3))
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        interpolate_clouds(x, y, 1.5)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        interpolate_clouds(x, y, torch.tensor([0.0, -0.1]))
    with pytest.raises(ValueError, match="1-D tensor"):
        interpolate_clouds(x, y, torch.zeros(2, 2))
    with pytest.raises(ValueError, match="coupling.perm has shape"):
        interpolate_clouds(x, y, 0.5, coupling=couple(x[:4], y[:4]))
    with pytest.raises(ValueError, match="whichway.Coupling"):
        interpolate_clouds(x, y, 0.5, coupling=torch.arange(5))
    # the general case: only "ot", single clouds, valid weights
    with pytest.raises(ValueError, match="needs clouds of equal size and uniform weights"):
        couple(x, y[:4], "clip")
    with pytest.raises(ValueError, match="needs clouds of equal size and uniform weights"):
        couple(x, y, "random", x_weights=torch.ones(5))
    with pytest.raises(ValueError, match="single clouds"):
        couple(x.unsqueeze(0), y.unsqueeze(0), x_weights=torch.ones(5))
    with pytest.raises(ValueError, match="finite and nonnegative"):
        couple(x, y, x_weights=torch.tensor([1.0, -1.0, 1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="1-D tensor of 5 weights"):
        couple(x, y, y_weights=torch.ones(4))
    with pytest.raises(ValueError, match="positive sum"):
        couple(x, y, x_weights=torch.zeros(5))
    # path lengths and barycenters
    with pytest.raises(ValueError, match=r"path \(T, n, d\) or a batch of paths"):
        path_length_w2(x)
    with pytest.raises(ValueError, match="empty path"):
        path_length_w2(x.unsqueeze(0)[:0])
    with pytest.raises(ValueError, match="frames is an empty cloud"):
        path_length_w2(torch.zeros(3, 0, 2))
    with pytest.raises(ValueError, match="frames contains 1 non-finite"):
        path_length_w2(torch.stack([x, bad]))
    with pytest.raises(ValueError, match="must sum to 1"):
        cloud_barycenter(torch.stack([x, y]), torch.tensor([0.5, 0.6]))
    with pytest.raises(ValueError, match="finite and nonnegative"):
        cloud_barycenter(torch.stack([x, y]), torch.tensor([1.5, -0.5]))
    with pytest.raises(ValueError, match="1-D tensor of 2 weights"):
        cloud_barycenter(torch.stack([x, y]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="same shape"):
        cloud_barycenter([x, y[:4]])
    with pytest.raises(ValueError, match=r"clouds must be a Tensor \(K, n, d\)"):
        cloud_barycenter(x)
    with pytest.raises(ValueError, match="clouds is empty"):
        cloud_barycenter([])
    with pytest.raises(ValueError, match="init must be a cloud index"):
        cloud_barycenter(torch.stack([x, y]), init=2)
    with pytest.raises(ValueError, match="init must be a cloud of shape"):
        cloud_barycenter(torch.stack([x, y]), init=x[:3])
    with pytest.raises(ValueError, match="max_iter must be >= 1"):
        cloud_barycenter(torch.stack([x, y]), max_iter=0)


def test_barycenter_warns_without_convergence() -> None:
    g = torch.Generator().manual_seed(26)
    stack = torch.randn(3, 25, 4, generator=g, dtype=F64)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        bary = cloud_barycenter(stack, max_iter=1)
    assert not bary.converged and bary.iterations == 1


# ---------------------------------------------------------------------------- properties


shapes = st.tuples(st.integers(1, 12), st.integers(1, 8), st.integers(0, 2**31 - 1))


@settings(max_examples=40, deadline=None)
@given(shapes)
def test_property_ot_is_an_optimal_permutation(shape: tuple[int, int, int]) -> None:
    n, d, seed = shape
    x, y = clouds(n, d, seed)
    c_ot = couple(x, y, "ot")
    c_clip = couple(x, y, "clip")
    c_rand = couple(x, y, "random", generator=torch.Generator().manual_seed(seed))
    assert is_permutation(c_ot.perm, n) and is_permutation(c_rand.perm, n)
    mat = sq_dist_numpy(x, y)
    rows, cols = linear_sum_assignment(mat)
    best = float(mat[rows, cols].sum())
    assert c_ot.cost == pytest.approx(best, rel=1e-9, abs=1e-12)
    assert c_ot.cost <= c_clip.cost * (1 + 1e-12)
    assert c_ot.cost <= c_rand.cost * (1 + 1e-12)
    assert wasserstein2(x, y) == pytest.approx(wasserstein2(y, x), rel=1e-9, abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(shapes, st.floats(0.0, 1.0))
def test_property_paths(shape: tuple[int, int, int], t: float) -> None:
    n, d, seed = shape
    x, y = clouds(n, d, seed, dtype=torch.float32)
    c = couple(x, y)
    assert torch.equal(interpolate_clouds(x, y, 0.0, coupling=c), x)
    assert torch.equal(interpolate_clouds(x, y, 1.0, coupling=c), y[c.perm])
    et = interpolate_clouds(x.double(), y.double(), t, coupling=c)
    w = wasserstein2(x.double(), y.double())
    assert wasserstein2(x.double(), et) == pytest.approx(t * w, rel=1e-6, abs=1e-9)


# ---------------------------------------------------------------------------- CLI


def test_cli_couple_random(capsys: pytest.CaptureFixture[str]) -> None:
    from whichway.cli import main

    assert main(["couple", "--random", "12", "6", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert set(lines) == {"ot", "clip", "random"}
    g = torch.Generator().manual_seed(3)
    a = torch.randn(12, 6, generator=g)
    b = torch.randn(12, 6, generator=g)
    ot_cost = couple(a, b).cost
    assert float(lines["ot"][1]) == pytest.approx(ot_cost, rel=1e-5)
    assert float(lines["ot"][2]) == pytest.approx(wasserstein2(a, b), rel=1e-5)  # geodesic
    assert lines["clip"][3] == "0/12"
    assert float(lines["clip"][1]) >= float(lines["ot"][1])


def test_cli_couple_embeddings_json(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    from whichway.cli import main

    x, y = clouds(9, 4, 27)
    path = tmp_path / "pair.npz"
    np.savez(path, a=x.numpy(), b=y.numpy())
    assert main(["couple", "--embeddings", str(path), "--json", "--steps", "5"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = {r["method"]: r for r in report["groups"][0]["couplings"]}
    c = couple(x, y)
    assert rows["ot"]["cost"] == pytest.approx(c.cost, rel=1e-12)
    assert rows["ot"]["moved"] == int((c.perm != torch.arange(9)).sum())
    assert rows["ot"]["w2_path_length"] == pytest.approx(wasserstein2(x, y), rel=1e-9)
    assert rows["random"]["w2_path_length"] >= rows["ot"]["w2_path_length"] * (1 - 1e-12)
    # a file without the two arrays fails with a clear message
    np.savez(tmp_path / "bad.npz", x=x.numpy())
    assert main(["couple", "--embeddings", str(tmp_path / "bad.npz")]) == 2
    assert "two arrays named 'a' and 'b'" in capsys.readouterr().err
    assert main(["couple", "--embeddings", str(tmp_path / "missing.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_couple_model_prompts(tiny_pipeline, capsys: pytest.CaptureFixture[str]) -> None:
    from whichway.cli import main
    from whichway.models import load_adapter

    model = str(tiny_pipeline("sd"))
    assert main(["couple", "a red cat", "a blue dog", "--model", model, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    cond = load_adapter(model, device="cpu", dtype="float32").encode(["a red cat", "a blue dog"])
    assert len(report["groups"]) == len(cond.clouds)
    a, b = cond.clouds[0][0], cond.clouds[0][1]
    rows = {r["method"]: r for r in report["groups"][0]["couplings"]}
    assert report["groups"][0]["a_shape"] == list(a.shape)
    assert rows["ot"]["cost"] == pytest.approx(couple(a, b).cost, rel=1e-9)
    assert rows["ot"]["cost"] <= rows["clip"]["cost"]
    assert main(["couple", "only one prompt", "--model", model]) == 2
    assert "two prompts" in capsys.readouterr().err


@pytest.mark.parametrize("weighted", [False, True])
def test_barycentric_projection_path_is_a_geodesic(weighted: bool) -> None:
    # the barycentric projection T of an optimal plan is an optimal map from mu_a to T#mu_a
    # (Ambrosio, Gigli & Savare 2008, Thm 12.4.4), so the path is a geodesic between them
    x, y = clouds(14, 5, 28, m=9)
    xw = torch.linspace(0.5, 2.0, 14, dtype=F64) if weighted else None
    c = couple(x, y, x_weights=xw)
    a = c.plan.sum(1)
    frames = interpolate_clouds(x, y, torch.linspace(0, 1, 6, dtype=F64), coupling=c)
    expected = float(torch.sqrt((a * ((frames[-1] - x) ** 2).sum(1)).sum()))
    assert path_length_w2(frames, weights=a) == pytest.approx(expected, rel=1e-6)
    assert expected <= wasserstein2(x, y, x_weights=xw) * (1 + 1e-12)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.integers(1, 8), st.integers(0, 2**31 - 1))
def test_property_unequal_sizes_match_pot(n: int, m: int, d: int, seed: int) -> None:
    x, y = clouds(n, d, seed, m=m)
    c = couple(x, y, x_weights=torch.ones(n, dtype=F64))
    a, b = np.full(n, 1.0 / n), np.full(m, 1.0 / m)
    np.testing.assert_allclose(c.plan.sum(1).numpy(), a, rtol=0, atol=1e-14)
    np.testing.assert_allclose(c.plan.sum(0).numpy(), b, rtol=0, atol=1e-14)
    assert c.cost == pytest.approx(
        n * ot.emd2(a, b, ot.dist(x.numpy(), y.numpy())), rel=1e-9, abs=1e-12
    )


# ---------------------------------------------------------------------------- float32 certificate


def _padded_clouds(
    b: int, n: int, d: int, k: int, noise: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """b pairs of float32 clouds whose last k rows are one vector plus ``noise`` (padding-like
    near-ties; noise 0 gives exact duplicates)."""
    g = torch.Generator().manual_seed(seed)

    def one() -> torch.Tensor:
        c = torch.randn(b, n, d, generator=g)
        c[:, n - k :] = torch.randn(b, 1, d, generator=g) + noise * torch.randn(
            b, k, d, generator=g
        )
        return c

    return one(), one()


def float64_loop(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
    """The reference: per pair, the float64 squared-distance matrix and SciPy's assignment."""
    out = []
    for x, y in zip(xb, yb):
        _, cols = linear_sum_assignment((torch.cdist(x.double(), y.double()) ** 2).numpy())
        out.append(exact_cost(x, y, torch.from_numpy(cols)))
    return torch.tensor(out, dtype=F64)


@pytest.fixture(params=["float64", "float32-certified"])
def assignment_path(request, monkeypatch) -> str:
    """Both assignment paths of couple(): the CPU's float64 matrix, and the float32 matrix with
    its optimality certificate (used on CUDA; forced onto the CPU here)."""
    if request.param == "float32-certified":
        from whichway import clouds as module

        monkeypatch.setattr(module, "_FAST_DEVICES", ("cpu", "cuda"))
    return request.param


@pytest.mark.parametrize("noise", [0.0, 1e-6, 1e-3, 1e-1])
def test_ot_exact_with_padding_ties(noise: float, assignment_path: str) -> None:
    xb, yb = _padded_clouds(4, 77, 768, 60, noise, seed=20)
    c = couple(xb, yb)
    torch.testing.assert_close(c.cost, float64_loop(xb, yb), rtol=1e-9, atol=0)
    for k in range(4):
        assert is_permutation(c.perm[k], 77)
        assert float(c.cost[k]) == pytest.approx(exact_cost(xb[k], yb[k], c.perm[k]), rel=1e-12)


def test_certificate_is_sound_and_uncertified_pairs_are_solved_in_float64(monkeypatch) -> None:
    from whichway import clouds as module

    monkeypatch.setattr(module, "_FAST_DEVICES", ("cpu", "cuda"))  # the CUDA path, on the CPU

    # near-ties at float32 resolution: the float32 matrix's optimum is often not the exact one
    xb, yb = _padded_clouds(24, 30, 768, 24, 2e-4, seed=21)
    a = xb.mean(dim=1, keepdim=True)
    b = yb.mean(dim=1, keepdim=True)
    xc, yc = xb - a, b - yb
    mat = torch.bmm(xc, yc.transpose(1, 2))
    perm = torch.from_numpy(np.stack([linear_sum_assignment(m.numpy())[1] for m in mat]))
    ok = module._certify(mat, perm, xc, yc, (xb, yb, a, b), module._float32_margins(768))
    reference = float64_loop(xb, yb)
    approx = torch.tensor([exact_cost(x, y, p) for x, y, p in zip(xb, yb, perm)], dtype=F64)
    wrong = (approx - reference) / reference > 1e-12
    assert wrong.any()  # the case has teeth: some float32 solutions are suboptimal
    assert not (ok & wrong).any()  # ... and none of those is certified
    # couple() gives the exact optimum for all of them, solving the uncertified ones in float64
    solved = []
    original = module._assign_exact64
    monkeypatch.setattr(
        module, "_assign_exact64", lambda x, y: solved.append(x.shape[0]) or original(x, y)
    )
    c = couple(xb, yb)
    assert sum(solved) >= int(wrong.sum())
    torch.testing.assert_close(c.cost, reference, rtol=1e-9, atol=0)


def test_certificate_accepts_generic_clouds(monkeypatch) -> None:
    from whichway import clouds as module

    monkeypatch.setattr(module, "_FAST_DEVICES", ("cpu", "cuda"))  # the CUDA path, on the CPU

    g = torch.Generator().manual_seed(22)
    xb = torch.randn(12, 77, 768, generator=g)
    yb = torch.randn(12, 77, 768, generator=g) + 0.5
    solved = []
    original = module._assign_exact64
    monkeypatch.setattr(
        module, "_assign_exact64", lambda x, y: solved.append(x.shape[0]) or original(x, y)
    )
    certified = []
    certify = module._certify

    def spy_certify(*args, **kwargs):
        ok = certify(*args, **kwargs)
        certified.append(ok.clone())
        return ok

    monkeypatch.setattr(module, "_certify", spy_certify)
    c = couple(xb, yb)
    # typical float32 errors are ~1000x below the worst-case margin: no pair needs float64
    assert solved == []
    # ... and the float32 path did run: every pair was certified by it
    assert certified, "the float32 path (and its certificate) never ran"
    assert all(bool(ok.all()) for ok in certified)
    assert sum(ok.numel() for ok in certified) == 12
    torch.testing.assert_close(c.cost, float64_loop(xb, yb), rtol=1e-9, atol=0)
    # float64 inputs take the float64 matrix: same optimum
    ref = couple(xb.double(), yb.double())
    assert torch.equal(ref.perm, c.perm)
