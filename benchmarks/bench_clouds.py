"""Benchmark of whichway.couple(..., "ot") on prompt-sized point clouds (77 x 768).

Compares, in the same run and on the same random clouds:

* ``whichway``  -- ``couple(x, y, "ot")`` on float32 torch clouds (float64 cost matrix, SciPy
  assignment, exact cost recomputed from the data);
* ``POT``       -- ``ot.emd(a, b, ot.dist(x, y))`` (network simplex on the float64 matrix);
* ``SciPy``     -- a float64 numpy cost matrix (``|x|^2 + |y|^2 - 2 x y^T``) and
  ``scipy.optimize.linear_sum_assignment``, the bare minimum an exact assignment costs;

every method starts from the same float32 torch clouds (the baselines convert them to float64
numpy inside the timed region, as a caller would), and all three must agree on the cost;

per pair (mean over the same pairs, best of ``--repeats`` rounds), and then the batched path:
``couple(xb, yb, "ot")`` on batches of pairs (B, 77, 768), 10,000 pairs in total (1,000 with
``--quick``), against looping the per-pair SciPy baseline over the first pairs of the batch.

Usage::

    python benchmarks/bench_clouds.py            # 10,000-pair batch
    python benchmarks/bench_clouds.py --quick    # 1,000 pairs, fewer rounds

The batch is generated and coupled in blocks of ``--block`` pairs (default 1,000, i.e. 2 x 236 MB
of float32 inputs per call) so the run fits in modest memory; ``couple`` itself also works through
any batch in cache-sized chunks, so one call per block times the same code path as one call for
all pairs.
"""

from __future__ import annotations

import argparse
import os
import platform
import time


def _pot(xt, yt) -> float:
    import numpy as np
    import ot

    x, y = xt.double().numpy(), yt.double().numpy()  # same float32 torch input as whichway
    n = x.shape[0]
    a = np.full(n, 1.0 / n)
    plan = ot.emd(a, a, ot.dist(x, y))
    return float(n * (plan * ot.dist(x, y)).sum())


def _scipy(xt, yt) -> float:
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    x, y = xt.double().numpy(), yt.double().numpy()  # same float32 torch input as whichway
    xx = (x * x).sum(1)
    yy = (y * y).sum(1)
    mat = np.maximum(xx[:, None] + yy[None, :] - 2.0 * (x @ y.T), 0.0)
    rows, cols = linear_sum_assignment(mat)
    return float(((x[rows] - y[cols]) ** 2).sum())


def _per_pair(fn, pairs, repeats: int) -> tuple[float, float, list[float]]:
    """Best-of-``repeats`` mean wall and CPU seconds per pair, and the costs of the last round."""
    best_wall = best_cpu = float("inf")
    costs: list[float] = []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        costs = [fn(x, y) for x, y in pairs]
        best_wall = min(best_wall, (time.perf_counter() - wall) / len(pairs))
        best_cpu = min(best_cpu, (time.process_time() - cpu) / len(pairs))
    return best_wall, best_cpu, costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000-pair batch and fewer rounds")
    parser.add_argument("--n", type=int, default=77, help="points per cloud (default 77)")
    parser.add_argument("--d", type=int, default=768, help="dimension (default 768)")
    parser.add_argument("--pairs", type=int, default=None, help="batch size (default 10,000; 1,000 with --quick)")
    parser.add_argument("--block", type=int, default=1000, help="pairs per couple() call in the batch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads for torch and for numpy's BLAS (default: the libraries' own choice); 1 "
        "avoids OpenMP spin-waits on a machine whose cores are busy with other work",
    )
    args = parser.parse_args()
    if args.threads is not None:  # before numpy/torch load their thread pools
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.threads)

    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)

    from whichway import couple

    total = args.pairs or (1_000 if args.quick else 10_000)
    single_pairs = 20 if args.quick else 50
    repeats = 2 if args.quick else 3
    n, d = args.n, args.d
    g = torch.Generator().manual_seed(args.seed)

    print(f"whichway cloud-coupling benchmark: clouds {n} x {d}, float32 inputs")
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch threads, {platform.processor() or platform.machine()}"
    )

    # ---- per pair
    xs = [torch.randn(n, d, generator=g) for _ in range(single_pairs)]
    ys = [torch.randn(n, d, generator=g) for _ in range(single_pairs)]
    torch_pairs = list(zip(xs, ys))
    couple(xs[0], ys[0])  # warm up imports
    _pot(xs[0], ys[0])
    _scipy(xs[0], ys[0])
    t_ww, u_ww, c_ww = _per_pair(lambda x, y: couple(x, y, "ot").cost, torch_pairs, repeats)
    t_pot, u_pot, c_pot = _per_pair(_pot, torch_pairs, repeats)
    t_sp, u_sp, c_sp = _per_pair(_scipy, torch_pairs, repeats)
    agree = max(
        max(abs(a - b) / b for a, b in zip(c_ww, c_pot)),
        max(abs(a - b) / b for a, b in zip(c_ww, c_sp)),
    )
    print(f"\nper pair ({single_pairs} pairs, best of {repeats} rounds; costs agree to {agree:.1e} relative)")
    print(f"  {'method':<34} {'wall ms':>9} {'ratio':>7} {'CPU ms':>9} {'ratio':>7}")
    for name, t, u in (
        ("whichway couple(x, y, 'ot')", t_ww, u_ww),
        ("POT ot.emd + ot.dist", t_pot, u_pot),
        ("SciPy linear_sum_assignment", t_sp, u_sp),
    ):
        print(f"  {name:<34} {t * 1e3:>9.3f} {t / t_ww:>6.2f}x {u * 1e3:>9.3f} {u / u_ww:>6.2f}x")
    print("  (ratio = time / whichway's time: above 1 means whichway is faster)")

    # ---- batch
    done = 0
    elapsed = cpu_used = 0.0
    moved = 0
    while done < total:
        size = min(args.block, total - done)
        xb = torch.randn(size, n, d, generator=g)
        yb = torch.randn(size, n, d, generator=g)
        start, cpu = time.perf_counter(), time.process_time()
        c = couple(xb, yb, "ot")
        elapsed += time.perf_counter() - start
        cpu_used += time.process_time() - cpu
        moved += int((c.perm != torch.arange(n)).sum())
        if done == 0:
            loop = min(size, 200 if args.quick else 500)
            pairs = [(xb[i], yb[i]) for i in range(loop)]
            start, cpu = time.perf_counter(), time.process_time()
            for x, y in pairs:
                _scipy(x, y)
            t_loop = (time.perf_counter() - start) / loop
            u_loop = (time.process_time() - cpu) / loop
        done += size
        del xb, yb
    per, per_cpu = elapsed / total, cpu_used / total
    print(f"\nbatch of {total:,} pairs (couple on (B, {n}, {d}) blocks of {args.block:,})")
    print(f"  {'method':<34} {'wall s':>8} {'ms/pair':>8} {'ratio':>7} {'CPU s':>8} {'ratio':>7}")
    print(
        f"  {'whichway couple(xb, yb, ot)':<34} {elapsed:>8.2f} {per * 1e3:>8.3f} {1.0:>6.2f}x "
        f"{cpu_used:>8.2f} {1.0:>6.2f}x"
    )
    label = f"SciPy loop (on {loop} pairs, scaled)"
    print(
        f"  {label:<34} {t_loop * total:>8.2f} {t_loop * 1e3:>8.3f} {t_loop / per:>6.2f}x "
        f"{u_loop * total:>8.2f} {u_loop / per_cpu:>6.2f}x"
    )
    print(f"  (OT moved {moved / total:.1f} of {n} tokens off the diagonal per pair on average)")


if __name__ == "__main__":
    main()
