r"""Prompt embeddings as point clouds: couplings, displacement paths, W2 and barycenters.

The token embeddings of a prompt, E in R^{n x d} (SD 1.5: n = 77, d = 768, padding tokens
included), condition a diffusion model through cross-attention, which is invariant to permuting
the rows of its keys and values. The natural object is therefore the *point cloud*
mu = (1/n) sum_i delta_{E[i]}, and the natural path between two prompts is the optimal-transport
(Wasserstein-2) geodesic between their clouds (Karris et al., "Which Way from B to A",
arXiv 2511.12757):

.. math::

    \sigma^* = \arg\min_\sigma C(\sigma), \qquad C(\sigma) = \sum_i \|E_0[i] - E_1[\sigma(i)]\|^2,

    E_t[i] = (1 - t)\, E_0[i] + t\, E_1[\sigma(i)], \qquad
    W_2^2(\mu_0, \mu_1) = C(\sigma^*) / n, \qquad
    W_2(\mu_s, \mu_t) = |t - s|\, W_2(\mu_0, \mu_1) \text{ under } \sigma^*.

Couplings (:data:`COUPLING_METHODS`): ``"ot"`` solves the linear assignment problem exactly on
squared Euclidean distances computed in float64 (:func:`scipy.optimize.linear_sum_assignment`);
``"clip"`` is the identity (row-by-row interpolation, the paper's baseline); ``"random"`` is a
uniform permutation drawn from a :class:`torch.Generator`. Unequal sizes or token weights fall back
to the general discrete OT problem (POT's exact network-simplex solver ``ot.emd``) and the path
uses its barycentric projection so it keeps the rows of the first cloud.

Everything here is pure tensor math: device and dtype come from the inputs, the sensitive steps
(cost matrices, costs, barycenter updates) run in float64 and results are cast back.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from whichway._checks import as_tensor, as_times, check_choice, check_finite, check_same

__all__ = [
    "COUPLING_METHODS",
    "Barycenter",
    "Coupling",
    "cloud_barycenter",
    "couple",
    "interpolate_clouds",
    "path_length_w2",
    "wasserstein2",
]

#: Names accepted by ``method=``: exact optimal transport, identity (row order), uniform random.
COUPLING_METHODS: tuple[str, ...] = ("ot", "clip", "random")

# A batch is processed in chunks of about this many float64 entries (inputs and cost matrices,
# ~8 MiB), small enough to stay cache-friendly and to bound memory for 10,000 pairs at once.
_CHUNK_ENTRIES = 2**20


@dataclass(frozen=True)
class Coupling:
    r"""A coupling between two point clouds x (n, d) and y (m, d).

    Attributes
    ----------
    perm : LongTensor (n,) or (B, n), or None
        Row ``i`` of x is paired with row ``perm[i]`` of y (per batch row for batched clouds).
        On x's device. ``None`` only for the general (unequal-size or weighted) case, which is
        described by ``plan`` instead.
    cost : float, or Tensor (B,) float64 for batched clouds
        :math:`C(\sigma) = \sum_i \|x_i - y_{\sigma(i)}\|^2`, recomputed in float64 from the data
        and the returned permutation (not from the cost matrix). In the general case it is
        :math:`n \langle P, M \rangle` with :math:`M_{ij} = \|x_i - y_j\|^2`, the same scale (it
        equals :math:`C(\sigma)` when P is a permutation divided by n), so that
        :math:`W_2^2 = \mathrm{cost} / n` in both cases.
    method : str
        One of :data:`COUPLING_METHODS`.
    plan : Tensor (n, m) float64, or None
        The optimal transport plan of the general case (marginals: the normalised x and y
        weights, total mass 1), as returned by POT's ``ot.emd``; ``None`` for permutations.
    """

    perm: Tensor | None
    cost: float | Tensor
    method: str
    plan: Tensor | None = None


@dataclass(frozen=True)
class Barycenter:
    r"""A free-support Wasserstein barycenter of K clouds with n support points.

    Attributes
    ----------
    points : Tensor (n, d)
        Support points of the barycenter (uniform weights 1/n), in the clouds' dtype and device.
    perms : LongTensor (K, n)
        Final assignments: row ``i`` of ``points`` is matched to row ``perms[k, i]`` of cloud k,
        and ``points = sum_k w_k clouds[k][perms[k]]``.
    iterations : int
        Assignment / averaging rounds performed.
    converged : bool
        Whether the assignments stopped changing (or the objective stopped decreasing) within
        ``max_iter`` rounds.
    cost : float
        The objective :math:`\sum_k w_k\, C_k`, :math:`C_k = \sum_i \|b_i - X_k[\sigma_k(i)]\|^2`
        in float64 (so :math:`\sum_k w_k W_2^2(\bar\mu, \mu_k) = \mathrm{cost}/n`).
    """

    points: Tensor
    perms: Tensor
    iterations: int
    converged: bool
    cost: float


# --------------------------------------------------------------------------------------------
# validation helpers


def _check_cloud(name: str, value: object, *, batched_ok: bool = True) -> Tensor:
    x = as_tensor(name, value)
    allowed = (2, 3) if batched_ok else (2,)
    if x.ndim not in allowed:
        shapes = "(n, d) or a batch (B, n, d)" if batched_ok else "(n, d)"
        raise ValueError(f"{name} must be a point cloud {shapes}, got shape {tuple(x.shape)}")
    if x.shape[-2] == 0 or x.shape[-1] == 0 or (x.ndim == 3 and x.shape[0] == 0):
        raise ValueError(
            f"{name} is an empty cloud of shape {tuple(x.shape)}; it needs at least one point "
            "(n >= 1) of dimension d >= 1"
        )
    # a sum is a cheap screen: any NaN/inf makes it non-finite; only then (or on an overflowing
    # sum of finite values) run the exact element-wise check, which names the problem
    if not bool(torch.isfinite(x.sum())):
        check_finite(name, x)
    return x


def _check_pair(x: object, y: object) -> tuple[Tensor, Tensor]:
    """Validate two clouds of equal shape (n, d) or (B, n, d)."""
    x = _check_cloud("x", x)
    y = _check_cloud("y", y)
    check_same("x", x, "y", y)
    return x, y


def _check_compatible(x: Tensor, y: Tensor) -> None:
    """Clouds (n, d) and (m, d) of the general case: same d, dtype and device."""
    if x.ndim != 2 or y.ndim != 2:
        raise ValueError(
            "unequal sizes and token weights are supported for single clouds x (n, d), y (m, d) "
            f"only, got shapes {tuple(x.shape)} and {tuple(y.shape)}; loop over the batch"
        )
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"x and y must have the same dimension d, got x {tuple(x.shape)} and y {tuple(y.shape)}"
        )
    if x.dtype != y.dtype:
        raise ValueError(
            f"x and y must have the same dtype, got {x.dtype} and {y.dtype}; cast one with .to({x.dtype})"
        )
    if x.device != y.device:
        raise ValueError(f"x and y must be on the same device, got {x.device} and {y.device}")


def _check_weights(name: str, w: object, size: int, *, normalise: bool) -> Tensor:
    """Nonnegative finite weights (size,) as float64 CPU; normalised to sum 1 if asked."""
    if not isinstance(w, Tensor):
        w = torch.as_tensor(w, dtype=torch.float64)
    w = w.detach().to(device="cpu", dtype=torch.float64)
    if w.ndim != 1 or w.shape[0] != size:
        raise ValueError(
            f"{name} must be a 1-D tensor of {size} weights, got shape {tuple(w.shape)}"
        )
    if not torch.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"{name} must be finite and nonnegative, got {w.tolist()[:8]}")
    total = float(w.sum())
    if normalise:
        if total <= 0:
            raise ValueError(
                f"{name} must have a positive sum (some point must carry mass), got all zeros"
            )
        return w / total
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"{name} must sum to 1 (a convex combination), got sum {total:.8g}")
    return w


def _f64(x: Tensor) -> Tensor:
    """x in float64, on a device that supports it (MPS has no float64: use the CPU there)."""
    if x.device.type == "mps":  # pragma: no cover - no MPS in CI
        x = x.cpu()
    return x.to(torch.float64)


# --------------------------------------------------------------------------------------------
# cost matrices and assignments


def _sq_dist_batched(x64: Tensor, y64: Tensor) -> Tensor:
    r"""Squared Euclidean cost matrices: float64 (B, n, d), (B, m, d) -> (B, n, m).

    :math:`M_{ij} = \|x_i\|^2 + \|y_j\|^2 - 2\, x_i \cdot y_j` as one batched matrix product,
    clamped at 0. In float64 the expansion's cancellation error (about 1e-16 of the squared
    norms) only matters for near-ties, and the reported cost never uses it (see
    :func:`_assign_and_cost`).
    """
    xx = (x64 * x64).sum(dim=-1)
    yy = (y64 * y64).sum(dim=-1)
    m = torch.baddbmm(xx.unsqueeze(-1) + yy.unsqueeze(-2), x64, y64.transpose(1, 2), alpha=-2.0)
    return m.clamp_(min=0.0)


def _negated_inner_products(x64: Tensor, y64: Tensor, out: Tensor | None = None) -> Tensor:
    r"""Assignment costs :math:`-\,x_i \cdot y_j` (B, n, m), float64, one batched product.

    For equal-size clouds this is :math:`\tfrac12 \|x_i - y_j\|^2` minus the row and column
    constants :math:`\tfrac12\|x_i\|^2` and :math:`\tfrac12\|y_j\|^2`, which add the same
    total to every permutation and so leave the optimal assignment unchanged. It saves the passes
    over x and y for the norms, and SciPy's solver runs about 1.5x faster on it than on the
    squared distances or on the distances less only the row constants (77 x 77 matrices of
    Gaussian clouds, 0.19 vs 0.30 ms).
    """
    return torch.bmm(x64, y64.transpose(1, 2), out=out).neg_()


# unit roundoff of float32 (round to nearest)
_U32 = 2.0**-24
# smallest positive subnormal float32: the absolute error of a product that underflows
_TINY32 = 2.0**-149
# Bellman-Ford rounds spent on certifying one chunk before the remaining pairs are solved again in
# float64 (a certificate that needs more is rare; giving up early is always safe)
_CERTIFY_ROUNDS = 32
# batches smaller than this take the float64 matrix directly: for one or two pairs the
# certificate's fixed cost (a few dozen small tensor operations) outweighs the cheaper product
_FAST_MIN_PAIRS = 4
# devices where the float32 matrix + certificate is used: GPUs run float64 products at 1/2 to 1/64
# of the float32 rate (vendor specifications; not measured here). On a CPU (a quiet 2-core
# machine, 1,000 pairs of 77 x 768) the certificate's many small tensor operations cost more than
# the float64 product they save (about 3 s vs 1 s), so the CPU takes the float64 matrix directly
_FAST_DEVICES: tuple[str, ...] = ("cuda",)
# entries per row a pair may have recomputed exactly in the second certification round
_EXACT_ENTRIES = 8


def _float32_certifiable(x: Tensor) -> bool:
    """Whether float32 matrix products on x's device are plain IEEE float32 (no TF32 / bf16)."""
    if x.device.type == "mps":  # pragma: no cover - no MPS in CI
        return False
    if torch.get_float32_matmul_precision() != "highest":
        return False
    return not (x.device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32)


def _float32_margins(d: int) -> float:
    r"""The factor :math:`c` of the entrywise error bound :math:`|\tilde M_{ij} - M_{ij}| \le
    c\, \|\tilde x_i\|\, \|\tilde y_j\|` of the float32 assignment matrix (see :func:`_certify`).

    :math:`\gamma_d = d u / (1 - d u)` bounds a float32 dot product of length d in any summation
    order (Higham, *Accuracy and Stability of Numerical Algorithms*, eq. 3.5); the centring
    subtractions add :math:`2u + u^2` relative to the exact centred data, and 1% covers the float32
    norms and the float64 rounding of the check itself.
    """
    gamma = d * _U32 / (1 - d * _U32)
    return 1.01 * (gamma + (2 * _U32 + _U32 * _U32) / (1 - _U32) ** 2)


def _bellman_ford(weight: Tensor, rounds: int) -> tuple[Tensor, Tensor]:
    r"""Potentials of a batch of complete graphs on n nodes with edge weights ``weight`` (B, n, n)
    (zero diagonal) from a virtual source: :math:`v_j \leftarrow \min_k v_k + w_{kj}` from
    :math:`v = 0`. Returns ``(v, converged)``: converged (B,) bool is True where the potentials
    stopped changing within ``rounds`` rounds, which proves the graph has no negative cycle."""
    bsz, n, _ = weight.shape
    v = torch.zeros(bsz, n, dtype=weight.dtype, device=weight.device)
    converged = torch.zeros(bsz, dtype=torch.bool, device=weight.device)
    active = torch.arange(bsz, device=weight.device)
    for _ in range(rounds):
        new = (v[active].unsqueeze(-1) + weight[active]).amin(dim=1)
        done = (new == v[active]).all(dim=1)
        converged[active[done]] = True
        v[active] = new
        active = active[~done]
        if active.numel() == 0:
            break
    return v, converged


def _certify(
    mat: Tensor, perm: Tensor, xc: Tensor, yc: Tensor, centred: tuple[Tensor, Tensor], c: float
) -> Tensor:
    r"""Which float32 solutions are provably optimal for the exact problem: bool (B,).

    ``mat`` (B, n, n) float32 is :math:`\tilde M`, the rounded version of the exact assignment
    matrix :math:`M_{ij} = -(x_i - a) \cdot (y_j - b)` computed from the rounded centred rows
    ``xc`` :math:`= \tilde x_i`, ``yc`` :math:`= -\tilde y_j` (B, n, d) float32, with
    :math:`|\tilde M_{ij} - M_{ij}| \le \epsilon_{ij} = c\, \|\tilde x_i\| \|\tilde y_j\|` (see
    :func:`_float32_margins`); ``perm`` (B, n) is an optimal assignment :math:`\tilde\sigma` of
    :math:`\tilde M`; ``centred`` is the float32 inputs and centres ``(x, y, a, b)`` to compute
    exact entries from.

    Every other permutation differs from :math:`\tilde\sigma` by disjoint cycles in the graph on
    columns with edges :math:`k \to j` (row :math:`i = \tilde\sigma^{-1}(k)` moves from column k
    to column j) of exact weight :math:`A_{kj} = M_{ij} - M_{ik}`, and changes the cost by the
    cycles' total weight. So :math:`\tilde\sigma` is optimal for M if the graph has no negative
    cycle under any lower bounds :math:`A'_{kj} \le A_{kj}`; Bellman-Ford from a virtual source
    decides that (its potentials stop changing iff there is no negative cycle). Two rounds:

    1. :math:`A'_{kj} = \tilde M_{ij} - \tilde M_{ik} - \epsilon_{ij} - \epsilon_{ik}`, from the
       float32 matrix alone;
    2. for the pairs that fail: the entries that can matter are recomputed exactly in float64
       (the assigned ones and every edge whose reduced cost :math:`A_{kj} + v_k - v_j` under
       potentials of :math:`\tilde A` is below 4 times its margin, where the short near-zero
       cycles live); exact entries need only the float64 rounding margin.

    Pairs still uncertified (near-ties below float32 resolution, duplicate rows: a swap of tied
    rows is a cycle of exact weight 0, negative under any margin) are solved again in float64 by
    the caller, so the final assignment is always optimal for the exact problem. The bound is
    worst-case (Cauchy-Schwarz on a worst-order float32 sum); typical errors are ~1000x below it.
    """
    bsz, n, _ = mat.shape
    d = xc.shape[-1]
    certified = torch.zeros(bsz, dtype=torch.bool, device=mat.device)
    finite = torch.isfinite(mat).flatten(1).all(dim=1)
    live = torch.nonzero(finite).flatten()
    if live.numel() == 0:
        return certified
    rounds = min(n, _CERTIFY_ROUNDS)
    m64 = mat.index_select(0, live).double()
    inv = torch.argsort(perm.index_select(0, live), dim=1)  # inv[b, k] = row assigned to column k
    rows = torch.gather(m64, 1, inv.unsqueeze(-1).expand(-1, -1, n))  # rows[b, k, j] = M~[inv_k, j]
    diag = torch.diagonal(rows, dim1=1, dim2=2).clone()  # M~[inv_k, k]
    nx = torch.gather(torch.linalg.vector_norm(xc.index_select(0, live), dim=2).double(), 1, inv)
    ny = torch.linalg.vector_norm(yc.index_select(0, live), dim=2).double()
    eps_row = c * nx.unsqueeze(-1) * ny.unsqueeze(1)  # eps[b, k, j] = c |x~_{inv_k}| |y~_j|
    eps_diag = torch.diagonal(eps_row, dim1=1, dim2=2).clone()
    tiny = 2 * (d + 1) * _TINY32  # products that underflow, once per entry
    plain = rows - diag.unsqueeze(-1)  # A~ (float32 entries, exact differences in float64)
    weight = plain - (eps_row + eps_diag.unsqueeze(-1) + tiny)
    weight.diagonal(dim1=1, dim2=2).zero_()
    _, ok = _bellman_ford(weight, rounds)
    certified[live[ok]] = True
    redo = torch.nonzero(~ok).flatten()
    if redo.numel() == 0:
        return certified
    # round 2: exact entries where near-zero cycles can live
    plain = plain.index_select(0, redo)
    plain.diagonal(dim1=1, dim2=2).zero_()
    pot, ok2 = _bellman_ford(plain, rounds)
    if not bool(ok2.any()):
        return certified
    sub = redo[ok2]
    plain, pot = plain[ok2], pot[ok2]
    eps_row, eps_diag, inv = eps_row[sub], eps_diag[sub], inv[sub]
    reduced = plain + pot.unsqueeze(-1) - pot.unsqueeze(1)
    near = reduced < 4 * (eps_row + eps_diag.unsqueeze(-1))
    near.diagonal(dim1=1, dim2=2).fill_(True)  # the assigned entries, needed by every edge
    # a pair with a whole block of near-ties (duplicate padding rows) is cheaper to solve again
    # densely in float64 than entry by entry
    few = near.flatten(1).sum(dim=1) <= _EXACT_ENTRIES * n
    if not bool(few.any()):
        return certified
    sub, plain, eps_row, inv, near = sub[few], plain[few], eps_row[few], inv[few], near[few]
    x, y, a, b = centred
    pairs = live[sub]
    bi, ki, ji = torch.nonzero(near, as_tuple=True)
    pb = pairs[bi]
    xr = x[pb, inv[bi, ki]].double() - a[pb, 0].double()  # exact centred rows in float64
    yr = b[pb, 0].double() - y[pb, ji].double()
    exact = torch.zeros_like(plain)
    exact[bi, ki, ji] = (xr * yr).sum(-1)  # M_ij = (x_i - a) . (b - y_j)
    gamma64 = d * 2.0**-53 / (1 - d * 2.0**-53)
    eps64 = torch.zeros_like(plain)
    eps64[bi, ki, ji] = (
        1.01 * gamma64 * torch.linalg.vector_norm(xr, dim=1) * torch.linalg.vector_norm(yr, dim=1)
    )
    low_diag = torch.diagonal(exact, dim1=1, dim2=2) + torch.diagonal(eps64, dim1=1, dim2=2)
    approx = rows.index_select(0, sub)
    weight = torch.where(near, exact - eps64, approx - eps_row - tiny) - low_diag.unsqueeze(-1)
    weight.diagonal(dim1=1, dim2=2).zero_()
    _, ok3 = _bellman_ford(weight, rounds)
    certified[pairs[ok3]] = True
    return certified


def _assign_exact64(x: Tensor, y: Tensor) -> np.ndarray:
    """Optimal assignments (B, n) int64 on the float64 matrices :math:`-x_i \\cdot y_j` (the reference path)."""
    return _assign_rows(_negated_inner_products(_f64(x), _f64(y)))


def _assign_rows(costs: Tensor) -> np.ndarray:
    """SciPy's optimal assignment of each (n, n) matrix of ``costs`` (B, n, n): (B, n) int64."""
    from scipy.optimize import linear_sum_assignment

    mats = costs.cpu().numpy()
    out = np.empty(mats.shape[:2], dtype=np.int64)
    for k in range(mats.shape[0]):
        rows, cols = linear_sum_assignment(mats[k])
        out[k, rows] = cols  # rows are 0..n-1 for a square matrix; index to be explicit
    return out


class _Workspace:
    """Work buffers of one thread, allocated once per call and reused by every chunk (fresh
    multi-MB tensors per chunk cost page faults on the first call of a process)."""

    def __init__(self, chunk: int, n: int, d: int, device: torch.device, fast: bool) -> None:
        f32 = {"dtype": torch.float32, "device": device}
        self.xc = torch.empty(chunk, n, d, **f32) if fast else None
        self.yc = torch.empty(chunk, n, d, **f32) if fast else None
        self.mat = torch.empty(chunk, n, n, **f32) if fast else None
        f64 = {"dtype": torch.float64, "device": _f64_device(device)}
        self.x64 = torch.empty(chunk, n, d, **f64)
        self.y64 = torch.empty(chunk, n, d, **f64)
        self.mat64 = torch.empty(0 if fast else chunk, n, n, **f64)  # the float64 path's matrix
        self.diff = torch.empty(chunk * n, d, **f64)  # y_sigma(i) - x_i, for the exact cost


def _f64_device(device: torch.device) -> torch.device:
    return torch.device("cpu") if device.type == "mps" else device


def _solve_chunk(
    x: Tensor, y: Tensor, perm: Tensor | None, ws: _Workspace, fast: bool, c: float
) -> tuple[Tensor, Tensor]:
    """Assignments (if ``perm`` is None) and exact costs of one chunk; returns (perm, cost)."""
    size, n, d = x.shape
    x64 = ws.x64[:size].copy_(x)  # float64 staging, reused by every chunk of this thread
    y64 = ws.y64[:size].copy_(y)
    if perm is None:
        if fast:
            # Centre each cloud: (x_i - a) . (y_j - b) differs from x_i . y_j by row and column
            # constants (same optimum), and smaller vectors mean a smaller float32 error bound.
            a = x.mean(dim=1, keepdim=True, dtype=torch.float32)
            b = y.mean(dim=1, keepdim=True, dtype=torch.float32)
            xc = torch.sub(x, a, out=ws.xc[:size])
            yc = torch.sub(b, y, out=ws.yc[:size])
            mat = torch.bmm(xc, yc.transpose(1, 2), out=ws.mat[:size])  # -(x_i - a).(y_j - b)
            p = torch.from_numpy(_assign_rows(mat)).to(x.device)
            ok = _certify(mat, p, xc, yc, (x, y, a, b), c)
            if not bool(ok.all()):
                again = torch.nonzero(~ok).flatten()
                fixed = torch.from_numpy(_assign_exact64(x64[again], y64[again])).to(x.device)
                p[again] = fixed
        else:
            mats = _negated_inner_products(x64, y64, out=ws.mat64[:size])
            p = torch.from_numpy(_assign_rows(mats)).to(x.device)
    else:
        p = perm.to(x.device)
    # rows y[b, p[b, i]] of the flattened chunk (index_select is much faster than gather)
    offsets = torch.arange(size, device=y64.device).unsqueeze(1) * n
    flat = (p.to(y64.device) + offsets).reshape(-1)
    diff = torch.index_select(y64.reshape(-1, d), 0, flat, out=ws.diff[: size * n])
    diff = diff.sub_(x64.reshape(-1, d)).view(size, n * d)
    # sum_i |y_sigma(i) - x_i|^2 in float64 (a norm, then squared: one pass, 2 ulp more rounding)
    cost = torch.linalg.vector_norm(diff, dim=1).square_()
    return p, cost


def _assign_and_cost(x: Tensor, y: Tensor, perm: Tensor | None = None) -> tuple[Tensor, Tensor]:
    r"""Optimal assignments (if ``perm`` is None) and exact costs of a batch of pairs.

    x, y : Tensor (B, n, d); perm : LongTensor (B, n) or None. Returns ``(perm, cost)``: perm
    (B, n) on x's device and :math:`C(\sigma) = \sum_i \|x_i - y_{\sigma(i)}\|^2` (B,) float64,
    computed from the data and the permutation (differences first, then squares, in float64),
    not from a cost matrix.

    On a CPU the optimal assignment is solved on the float64 matrix of negated inner products
    (:func:`_negated_inner_products`, built in work buffers reused across chunks) with SciPy's
    ``linear_sum_assignment``. On the devices in
    :data:`_FAST_DEVICES` (CUDA, where float64 products are slow) it is solved on a float32 matrix
    of centred inner products, and each solution is then
    *certified* exactly optimal for the exact float64 problem by :func:`_certify` (no cycle of
    reassignments can lower the cost even at the float32 matrix's worst-case error); the pairs it
    cannot certify (near-ties below float32 resolution, duplicate rows) are solved again on the
    float64 matrix, so the result is the float64 optimum either way (batches of fewer than
    :data:`_FAST_MIN_PAIRS` pairs use the float64 matrix directly). Pairs are processed in
    chunks with work buffers allocated once per call, on up to ``torch.get_num_threads()``
    threads (SciPy's solver and torch's kernels release the GIL).
    """
    bsz, n, d = x.shape
    chunk = max(1, _CHUNK_ENTRIES // (2 * n * d + n * n))
    chunk = min(chunk, bsz)
    starts = list(range(0, bsz, chunk))
    fast = (
        perm is None
        and bsz >= _FAST_MIN_PAIRS
        and n > 1
        and x.dtype in (torch.float32, torch.float16, torch.bfloat16)
        and d * _U32 < 0.01
        and x.device.type in _FAST_DEVICES
        and _float32_certifiable(x)
    )
    c = _float32_margins(d) if fast else 0.0
    perms = torch.empty(bsz, n, dtype=torch.long, device=x.device)
    costs = torch.empty(bsz, dtype=torch.float64, device=_f64_device(x.device))
    workers = max(1, min(torch.get_num_threads(), len(starts)))
    spaces: dict[int, _Workspace] = {}

    def run(start: int) -> None:
        import threading

        ident = threading.get_ident()
        ws = spaces.get(ident)
        if ws is None:
            ws = spaces[ident] = _Workspace(chunk, n, d, x.device, fast)
        stop = min(start + chunk, bsz)
        given = None if perm is None else perm[start:stop]
        p, cost = _solve_chunk(x[start:stop], y[start:stop], given, ws, fast, c)
        perms[start:stop] = p
        costs[start:stop] = cost

    if workers == 1:
        for start in starts:
            run(start)
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=workers) as pool:
            for future in [pool.submit(run, s) for s in starts]:
                future.result()
    return perms, costs


def _random_perms(b: int, n: int, generator: torch.Generator | None) -> Tensor:
    """B uniform permutations of n, drawn in order from ``generator`` on its device."""
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.stack([torch.randperm(n, generator=generator, device=device) for _ in range(b)])


def _couple_general(
    x: Tensor, y: Tensor, x_weights: object | None, y_weights: object | None
) -> Coupling:
    """General discrete OT between weighted clouds (n, d) and (m, d) with POT's exact solver."""
    import ot

    n, m = x.shape[0], y.shape[0]
    a = (
        _check_weights("x_weights", x_weights, n, normalise=True)
        if x_weights is not None
        else (torch.full((n,), 1.0 / n, dtype=torch.float64))
    )
    b = (
        _check_weights("y_weights", y_weights, m, normalise=True)
        if y_weights is not None
        else (torch.full((m,), 1.0 / m, dtype=torch.float64))
    )
    cost_matrix = _sq_dist_batched(_f64(x).unsqueeze(0), _f64(y).unsqueeze(0))[0].cpu().numpy()
    plan, info = ot.emd(
        a.numpy(), b.numpy(), cost_matrix, numItermax=max(100_000, 50 * n * m), log=True
    )
    if info["result_code"] != 1:  # 1 = OPTIMAL in POT's network simplex
        warnings.warn(
            f"ot.emd stopped before optimality ({info['warning']}); the plan may be suboptimal",
            RuntimeWarning,
            stacklevel=3,
        )
    plan_t = torch.from_numpy(np.ascontiguousarray(plan, dtype=np.float64))
    # exact cost from the data: <P, M> with M recomputed entrywise on the plan's support only
    rows, cols = torch.nonzero(plan_t > 0, as_tuple=True)
    x64 = _f64(x).cpu()
    y64 = _f64(y).cpu()
    d2 = ((x64[rows] - y64[cols]) ** 2).sum(-1)
    cost = float(n * (plan_t[rows, cols] * d2).sum())
    plan_device = x.device if x.device.type != "mps" else torch.device("cpu")  # no float64 on MPS
    return Coupling(perm=None, cost=cost, method="ot", plan=plan_t.to(plan_device))


def couple(
    x: Tensor,
    y: Tensor,
    method: str = "ot",
    *,
    generator: torch.Generator | None = None,
    x_weights: Tensor | Sequence[float] | None = None,
    y_weights: Tensor | Sequence[float] | None = None,
) -> Coupling:
    r"""Couple the rows of two point clouds: the OT, CLIP and random couplings of Karris et al. 2025.

    .. math::

        \sigma_{ot} = \arg\min_\sigma \sum_i \|x_i - y_{\sigma(i)}\|^2, \qquad
        \sigma_{clip} = \mathrm{id}, \qquad \sigma_{random} \sim \mathrm{Uniform}(S_n).

    Parameters
    ----------
    x, y : Tensor (n, d), or batches (B, n, d)
        Token point clouds of equal shape, dtype and device (unless in the general case below).
    method : str
        ``"ot"`` (exact linear assignment on float64 squared distances, SciPy's
        ``linear_sum_assignment``), ``"clip"`` (identity) or ``"random"``.
    generator : torch.Generator, optional
        Source of randomness for ``"random"``; permutations are drawn on its device with
        ``torch.randperm`` (a batch draws B permutations in order), so a generator seeded the
        same way (on the same device type) gives the same permutations; the result is moved to
        x's device.
    x_weights : Tensor (n,), optional
    y_weights : Tensor (m,), optional
        Nonnegative token masses (for instance an attention mask); each is normalised to sum 1.
        Giving either, or clouds of unequal sizes x (n, d), y (m, d), solves the general discrete
        OT problem :math:`\min_P \langle P, M\rangle` s.t. :math:`P\mathbf{1} = a,
        P^\top\mathbf{1} = b` exactly with POT's ``ot.emd``; only ``method="ot"`` applies and the
        result carries ``plan`` instead of ``perm``.

    Returns
    -------
    Coupling
        ``perm`` (n,) or (B, n) on x's device, ``cost`` (float, or (B,) float64 for batches).
    """
    check_choice("coupling method", method, COUPLING_METHODS)
    general = x_weights is not None or y_weights is not None
    if not general and isinstance(x, Tensor) and isinstance(y, Tensor):
        general = x.ndim == 2 and y.ndim == 2 and x.shape[0] != y.shape[0]
    if general:
        x = _check_cloud("x", x)
        y = _check_cloud("y", y)
        _check_compatible(x, y)
        if method != "ot":
            raise ValueError(
                f"coupling method {method!r} needs clouds of equal size and uniform weights, got "
                f"x {tuple(x.shape)}, y {tuple(y.shape)} (weights given: "
                f"{x_weights is not None or y_weights is not None}); use method='ot', the only "
                "one defined for unequal sizes or weights"
            )
        return _couple_general(x, y, x_weights, y_weights)

    x, y = _check_pair(x, y)
    single = x.ndim == 2
    xb, yb = (x.unsqueeze(0), y.unsqueeze(0)) if single else (x, y)
    bsz, n, _ = xb.shape
    if method == "ot":
        perm, cost = _assign_and_cost(xb, yb)
    else:
        if method == "clip":
            given = torch.arange(n, device=x.device).expand(bsz, n)
        else:
            given = _random_perms(bsz, n, generator).to(x.device)
        perm, cost = _assign_and_cost(xb, yb, given)
    if single:
        return Coupling(perm=perm[0].contiguous(), cost=float(cost[0]), method=method)
    return Coupling(perm=perm.contiguous(), cost=cost, method=method)


# --------------------------------------------------------------------------------------------
# paths


def _target(x: Tensor, y: Tensor, coupling: Coupling) -> Tensor:
    """The transport target of every row of x: y[perm], or the barycentric projection of plan."""
    if coupling.plan is not None:
        plan = coupling.plan.to(torch.float64).cpu()
        n, m = x.shape[0], y.shape[0]
        if x.ndim != 2 or plan.shape != (n, m):
            raise ValueError(
                f"coupling.plan has shape {tuple(plan.shape)}, but x, y are {tuple(x.shape)}, "
                f"{tuple(y.shape)}; it must be (n, m)"
            )
        y64 = _f64(y).cpu()
        mass = plan.sum(dim=1)
        # T(x_i) = sum_j P_ij y_j / sum_j P_ij (barycentric projection of the plan)
        target = (plan @ y64) / mass.clamp_min(torch.finfo(torch.float64).tiny).unsqueeze(1)
        empty = mass <= 0
        if empty.any():
            # a row without mass (weight 0) has no transport target: send it to its nearest
            # point among the y rows that carry mass, which keeps the path inside y's support
            live = plan.sum(dim=0) > 0
            d2 = torch.cdist(_f64(x).cpu()[empty], y64[live]) ** 2
            target[empty] = y64[live][d2.argmin(dim=1)]
        return target.to(device=x.device, dtype=x.dtype)
    perm = coupling.perm
    if perm is None:
        raise ValueError("coupling has neither perm nor plan; build it with whichway.couple")
    if perm.shape != x.shape[:-1]:
        raise ValueError(
            f"coupling.perm has shape {tuple(perm.shape)}, but x is {tuple(x.shape)}; it must "
            f"be {tuple(x.shape[:-1])} (one index per row of x)"
        )
    perm = perm.to(device=x.device, dtype=torch.long)
    n = y.shape[-2]
    if perm.numel() and (int(perm.min()) < 0 or int(perm.max()) >= n):
        raise ValueError(f"coupling.perm must index rows 0..{n - 1} of y")
    if x.ndim == 2:
        return y[perm]
    return torch.gather(y, 1, perm.unsqueeze(-1).expand(-1, -1, y.shape[-1]))


def interpolate_clouds(
    x: Tensor,
    y: Tensor,
    t: float | Sequence[float] | Tensor,
    *,
    coupling: Coupling | None = None,
    method: str = "ot",
    generator: torch.Generator | None = None,
    x_weights: Tensor | Sequence[float] | None = None,
    y_weights: Tensor | Sequence[float] | None = None,
) -> Tensor:
    r"""Displacement interpolation between two clouds (the OT path of Karris et al. 2025).

    .. math::

        E_t[i] = (1 - t)\, x_i + t\, y_{\sigma(i)}

    with rows in x's order. It is evaluated in exactly this form, so ``t = 0`` returns x and
    ``t = 1`` returns ``y[perm]`` bit for bit. Under the OT coupling the path is a constant-speed
    W2 geodesic. In the general case (unequal sizes or weights) :math:`y_{\sigma(i)}` is replaced
    by the barycentric projection :math:`T(x_i) = \sum_j P_{ij} y_j / \sum_j P_{ij}`, so the path
    keeps x's n rows (rows of zero mass are sent to their nearest point of y's support).

    Parameters
    ----------
    x : Tensor (n, d) or (B, n, d)
    y : Tensor (n, d) or (B, n, d); (m, d) in the general case
    t : float in [0, 1], or 1-D Tensor / sequence (T,) of them
    coupling : Coupling, optional
        A coupling of x and y (from :func:`couple`); computed with ``method`` if omitted.
    method, generator, x_weights, y_weights
        Passed to :func:`couple` when ``coupling`` is omitted.

    Returns
    -------
    Tensor
        (n, d) for a float t, (T, n, d) for a tensor t; for batched clouds (B, n, d) and
        (B, T, n, d). Same dtype and device as x (computed in at least float32).
    """
    if coupling is None:
        coupling = couple(
            x, y, method, generator=generator, x_weights=x_weights, y_weights=y_weights
        )
    else:
        if not isinstance(coupling, Coupling):
            raise ValueError(f"coupling must be a whichway.Coupling, got {type(coupling).__name__}")
        if coupling.plan is None and x_weights is None and y_weights is None:
            x, y = _check_pair(x, y)
        else:
            x = _check_cloud("x", x)
            y = _check_cloud("y", y)
            _check_compatible(x, y)
    target = _target(x, y, coupling)
    work = torch.promote_types(x.dtype, torch.float32)
    times, scalar = as_times(t, dtype=work, device=x.device)
    xw = x.to(work)
    tw = target.to(work)
    # (T, 1, ..., 1) against (..., n, d): time axis first, then moved behind a batch axis
    tt = times.reshape((-1,) + (1,) * x.ndim)
    path = (1 - tt) * xw + tt * tw  # exact at t = 0 (x) and t = 1 (target)
    path = path.to(x.dtype)
    if scalar:
        return path[0]
    if x.ndim == 3:
        path = path.transpose(0, 1)
    return path.contiguous()


# --------------------------------------------------------------------------------------------
# distances


def wasserstein2(
    x: Tensor,
    y: Tensor,
    *,
    x_weights: Tensor | Sequence[float] | None = None,
    y_weights: Tensor | Sequence[float] | None = None,
) -> float | Tensor:
    r"""Exact 2-Wasserstein distance between two clouds with uniform (or given) weights.

    .. math:: W_2(\mu_x, \mu_y) = \sqrt{C(\sigma^*) / n}

    Parameters
    ----------
    x, y : Tensor (n, d), or batches (B, n, d); (n, d) and (m, d) with weights or unequal sizes
    x_weights, y_weights : optional token masses, see :func:`couple`

    Returns
    -------
    float, or Tensor (B,) float64 for batches.
    """
    c = couple(x, y, "ot", x_weights=x_weights, y_weights=y_weights)
    n = x.shape[-2]
    if isinstance(c.cost, Tensor):
        return torch.sqrt(c.cost / n)
    return float(np.sqrt(c.cost / n))


def path_length_w2(
    frames: Tensor, *, weights: Tensor | Sequence[float] | None = None
) -> float | Tensor:
    r"""W2 length of a discrete path of clouds: :math:`\sum_k W_2(E_{t_k}, E_{t_{k+1}})`.

    For an OT displacement path it equals :math:`W_2(E_0, E_1)` (a geodesic); any other coupling
    gives a path at least as long (triangle inequality).

    Parameters
    ----------
    frames : Tensor (T, n, d), or a batch of paths (B, T, n, d); T >= 1
    weights : Tensor (n,), optional
        Token masses shared by every frame (for paths built with ``x_weights``); general OT then
        measures each step.

    Returns
    -------
    float, or Tensor (B,) float64 for a batch of paths (0 for a single frame).
    """
    frames = as_tensor("frames", frames)
    if frames.ndim not in (3, 4):
        raise ValueError(
            f"frames must be a path (T, n, d) or a batch of paths (B, T, n, d), got shape {tuple(frames.shape)}"
        )
    if frames.shape[-3] == 0:
        raise ValueError("frames is an empty path (T = 0); give at least one frame")
    batched = frames.ndim == 4
    paths = frames if batched else frames.unsqueeze(0)
    bsz, steps, n, d = paths.shape
    _check_cloud("frames", paths.reshape(bsz * steps, n, d))  # empty clouds, NaN / inf
    if steps == 1:
        zero = torch.zeros(bsz, dtype=torch.float64, device=frames.device)
        return zero if batched else 0.0
    if weights is not None:
        lengths = []
        for p in paths:
            _check_cloud("frames", p[0], batched_ok=False)
            total = sum(
                float(wasserstein2(p[k], p[k + 1], x_weights=weights, y_weights=weights))
                for k in range(steps - 1)
            )
            lengths.append(total)
        out = torch.tensor(lengths, dtype=torch.float64, device=frames.device)
    else:
        src = paths[:, :-1].reshape(-1, n, d)
        dst = paths[:, 1:].reshape(-1, n, d)
        w = wasserstein2(src, dst)
        out = w.reshape(bsz, steps - 1).sum(dim=1)
    return out if batched else float(out[0])


# --------------------------------------------------------------------------------------------
# barycenters


def _stacked_clouds(clouds: Tensor | Sequence[Tensor]) -> Tensor:
    """K checked, finite clouds of one shape, dtype and device as one Tensor (K, n, d)."""
    if isinstance(clouds, Tensor):
        stack = as_tensor("clouds", clouds)
        if stack.ndim != 3:
            raise ValueError(
                f"clouds must be a Tensor (K, n, d) or a sequence of Tensors (n, d), got shape {tuple(stack.shape)}"
            )
    else:
        if len(clouds) == 0:
            raise ValueError("clouds is empty; give K >= 1 clouds (n, d)")
        items = [_check_cloud(f"clouds[{k}]", c, batched_ok=False) for k, c in enumerate(clouds)]
        for k, c in enumerate(items[1:], start=1):
            check_same("clouds[0]", items[0], f"clouds[{k}]", c)
        stack = torch.stack(items)
    if stack.shape[0] == 0 or stack.shape[1] == 0 or stack.shape[2] == 0:
        raise ValueError(
            f"clouds is empty (shape {tuple(stack.shape)}); give K >= 1 clouds of n >= 1 points, d >= 1"
        )
    check_finite("clouds", stack)
    return stack


def _initial_support(x64: Tensor, init: int | Tensor) -> Tensor:
    """The barycenter's starting support (n, d) in float64 on ``x64``'s device: cloud ``init`` of
    ``x64`` (K, n, d), or the explicit points ``init``."""
    k_count, n, d = x64.shape
    if isinstance(init, Tensor):
        start = _check_cloud("init", init, batched_ok=False)
        if start.shape != (n, d):
            raise ValueError(f"init must be a cloud of shape {(n, d)}, got {tuple(start.shape)}")
        return _f64(start).to(x64.device)
    if not 0 <= int(init) < k_count:
        raise ValueError(
            f"init must be a cloud index in 0..{k_count - 1} or a Tensor (n, d), got {init}"
        )
    return x64[int(init)].clone()


def cloud_barycenter(
    clouds: Tensor | Sequence[Tensor],
    weights: Tensor | Sequence[float] | None = None,
    *,
    init: int | Tensor | None = None,
    max_iter: int = 100,
    tol: float = 1e-12,
) -> Barycenter:
    r"""Free-support Wasserstein barycenter of K equal-size clouds (n support points).

    Minimises :math:`\sum_k w_k W_2^2(\bar\mu, \mu_k)` over clouds :math:`\bar\mu` of n points by
    block-coordinate descent (Cuturi & Doucet 2014, free support, with exact assignments):

    .. math::

        \sigma_k \leftarrow \arg\min_\sigma \sum_i \|b_i - X_k[\sigma(i)]\|^2, \qquad
        b_i \leftarrow \sum_k w_k\, X_k[\sigma_k(i)],

    repeated until the assignments stop changing. Both steps never increase the objective, so it
    stops in finitely many rounds at a fixed point (a local minimum for K >= 3; for K = 2 the
    result is the displacement interpolation ``interpolate_clouds(X_0, X_1, w_1)`` up to row
    order, the exact barycenter).

    Parameters
    ----------
    clouds : Tensor (K, n, d) or a sequence of K Tensors (n, d), K >= 1
    weights : Tensor (K,), optional
        Nonnegative barycentric weights summing to 1 (within 1e-6); uniform 1/K by default.
    init : int or Tensor (n, d), optional
        Starting support: the index of a cloud, or explicit points; default the cloud with the
        largest weight (the first among ties).
    max_iter : int
        Maximum assignment / averaging rounds (>= 1).
    tol : float
        Also stop when the objective decreases by less than ``tol`` times its value (guards
        against cycling between tied assignments).

    Returns
    -------
    Barycenter
        ``points`` (n, d) in the clouds' dtype/device, ``perms`` (K, n), ``iterations``,
        ``converged``, ``cost``.
    """
    stack = _stacked_clouds(clouds)
    k_count, n, d = stack.shape
    if weights is None:
        w = torch.full((k_count,), 1.0 / k_count, dtype=torch.float64)
    else:
        w = _check_weights("weights", weights, k_count, normalise=False)
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")

    x64 = _f64(stack)
    w64 = w.to(x64.device)
    support = _initial_support(x64, int(torch.argmax(w)) if init is None else init)  # 1st max

    perms: Tensor | None = None
    converged = False
    previous = float("inf")
    iterations = 0
    objective = float("inf")
    for iterations in range(1, max_iter + 1):  # noqa: B007 -- read after the loop
        # assignment step: each cloud to the current support, all K problems in one batch
        new_perms, _ = _assign_and_cost(support.expand(k_count, n, d), x64)
        if perms is not None and torch.equal(new_perms, perms):
            converged = True
            break
        perms = new_perms
        # averaging step: b_i = sum_k w_k X_k[sigma_k(i)]
        matched = torch.gather(x64, 1, perms.unsqueeze(-1).expand(-1, -1, d))
        support = torch.einsum("k,knd->nd", w64, matched)
        objective = float((w64 * ((support.unsqueeze(0) - matched) ** 2).sum(dim=(1, 2))).sum())
        if previous - objective <= tol * objective:
            converged = True
            break
        previous = objective
    assert perms is not None
    if not converged:
        warnings.warn(
            f"cloud_barycenter did not converge in {max_iter} iterations; raise max_iter",
            RuntimeWarning,
            stacklevel=2,
        )
    return Barycenter(
        points=support.to(device=stack.device, dtype=stack.dtype),
        perms=perms.to(stack.device),
        iterations=iterations,
        converged=converged,
        cost=objective,
    )
