"""Benchmark of whichway.couple(..., "ot") on prompt-sized point clouds (77 x 768, float32).

Two measurements, both against baselines run in the same invocation on the same clouds:

* **first call, fresh process** (how a new user meets it): one ``couple(x, y, "ot")`` call on a
  batch of pairs (10,000 by default, 1,000 with ``--quick``) in a fresh Python process, against the
  plain loop a user would write, also in a fresh process::

      m = torch.cdist(x[k].double(), y[k].double()) ** 2
      rows, cols = scipy.optimize.linear_sum_assignment(m.numpy())

  over the first ``--loop-pairs`` pairs (2,000; 200 with ``--quick``), scaled to the batch
  (the loop's time per pair does not depend on the count). Both children import torch, SciPy
  and whichway before the clock starts; the clouds are generated before it too. Reported: wall,
  user and system CPU time and minor page faults, and that the costs agree (relative) with the
  loop's. Two kinds of clouds: i.i.d. Gaussian, and *padding-like* clouds whose last 60 of 77 rows
  are one vector plus noise of 1e-3 (a block of near-ties, where SciPy's assignment is about 3x
  slower for both programs, and where on CUDA whichway's float32 certificate fails and the pairs
  are solved again in float64);
* **warm, per pair**: single pairs after a warm-up, against POT (``ot.emd`` + ``ot.dist``) and a
  bare numpy + SciPy assignment (best of ``--repeats`` rounds, each after a pause that lets the
  previous method's thread pools go idle).

Usage::

    python benchmarks/bench_clouds.py            # 10,000 pairs (about 5 GB of clouds in the child)
    python benchmarks/bench_clouds.py --quick    # 1,000 pairs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _result import FIRST_CALL, WARM, Result, add_arguments, machine, report, seconds

BLOCK = 100  # clouds are drawn in blocks of this many pairs, so both children draw the same ones
PADDING_ROWS = 60
PADDING_NOISE = 1e-3


def _clouds(pairs: int, n: int, d: int, seed: int, kind: str):
    """(x, y) float32 (pairs, n, d), drawn block by block from two seeded generators."""
    import torch

    gens = [torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)]
    out = []
    for g in gens:
        c = torch.empty(pairs, n, d)
        for s in range(0, pairs, BLOCK):
            e = min(s + BLOCK, pairs)
            block = torch.randn(BLOCK, n, d, generator=g)[: e - s]
            if kind == "padding":
                base = torch.randn(BLOCK, 1, d, generator=g)[: e - s]
                noise = torch.randn(BLOCK, PADDING_ROWS, d, generator=g)[: e - s]
                block[:, n - PADDING_ROWS :] = base + PADDING_NOISE * noise
            c[s:e] = block
        out.append(c)
    return out[0], out[1]


def _child(args: argparse.Namespace) -> None:
    """Run one first-call measurement in this (fresh) process; write a JSON record."""
    import resource

    import numpy as np
    import scipy.optimize
    import torch

    import whichway

    x, y = _clouds(args.pairs, args.n, args.d, args.seed, args.kind)
    x, y = x.to(args.device), y.to(args.device)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    if args.child == "couple":
        costs = whichway.couple(x, y, "ot").cost.cpu().numpy()
    else:
        costs = np.empty(args.pairs)
        for k in range(args.pairs):
            m = (torch.cdist(x[k].double(), y[k].double()) ** 2).cpu().numpy()
            rows, cols = scipy.optimize.linear_sum_assignment(m)
            costs[k] = m[rows, cols].sum()
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    np.save(args.out + ".npy", costs)
    record = {
        "wall": wall,
        "user": r1.ru_utime - r0.ru_utime,
        "sys": r1.ru_stime - r0.ru_stime,
        "faults": r1.ru_minflt - r0.ru_minflt,
        "threads": torch.get_num_threads(),
    }
    Path(args.out).write_text(json.dumps(record))


def _fresh(args: argparse.Namespace, what: str, kind: str, pairs: int, tmp: str) -> dict:
    import numpy as np

    out = os.path.join(tmp, f"{what}-{kind}")
    cmd = [
        sys.executable,
        __file__,
        "--child",
        what,
        "--kind",
        kind,
        "--pairs",
        str(pairs),
        "--out",
        out,
        "--n",
        str(args.n),
        "--d",
        str(args.d),
        "--seed",
        str(args.seed),
        "--device",
        args.device,
    ]
    env = dict(os.environ)
    if args.threads is not None:
        cmd += ["--threads", str(args.threads)]
    subprocess.run(cmd, check=True, env=env)
    record = json.loads(Path(out).read_text())
    record["costs"] = np.load(out + ".npy")
    return record


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


# Seconds to wait before each timed round: the previous round's BLAS / OpenMP worker threads spin
# for a while after their last call (OpenBLAS for numpy/POT, OpenMP for torch) and, on two cores,
# would slow whichever method is timed next (measured: whichway's single pairs at 2 ms instead of
# 1 ms for ~0.1 s after a POT call).
SETTLE_S = 0.5


def _per_pair(fn, pairs, repeats: int) -> tuple[float, list[float]]:
    """Best-of-``repeats`` mean wall seconds per pair, and the costs of the last round."""
    best = float("inf")
    costs: list[float] = []
    for _ in range(repeats):
        time.sleep(SETTLE_S)
        start = time.perf_counter()
        costs = [fn(x, y) for x, y in pairs]
        best = min(best, (time.perf_counter() - start) / len(pairs))
    return best, costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="1,000 pairs, a 200-pair loop, fewer rounds"
    )
    parser.add_argument("--n", type=int, default=77, help="points per cloud (default 77)")
    parser.add_argument("--d", type=int, default=768, help="dimension (default 768)")
    parser.add_argument(
        "--pairs",
        type=int,
        default=None,
        help="first-call batch (default 10,000; 1,000 with --quick)",
    )
    parser.add_argument(
        "--loop-pairs",
        type=int,
        default=None,
        help="pairs the plain loop runs (default 2,000; 200)",
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="rounds of the warm per-pair timing"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch / BLAS threads (default: the libraries')"
    )
    parser.add_argument("--child", choices=("couple", "loop"), help=argparse.SUPPRESS)
    parser.add_argument("--kind", default="random", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    add_arguments(parser)
    args = parser.parse_args()
    if args.threads is not None:  # before numpy/torch load their thread pools
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.threads)
    if args.child:
        _child(args)
        return

    import numpy as np
    import torch

    from whichway import couple

    total = args.pairs or (1_000 if args.quick else 10_000)
    loop_pairs = min(total, args.loop_pairs or (200 if args.quick else 2_000))
    repeats = args.repeats or (2 if args.quick else 3)
    n, d = args.n, args.d
    print(
        f"whichway cloud-coupling benchmark: clouds {n} x {d}, float32; {machine()}, torch {torch.__version__}"
    )
    results: list[Result] = []

    # ---- first call in a fresh process
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("random", "padding"):
            ours = _fresh(args, "couple", kind, total, tmp)
            loop = _fresh(args, "loop", kind, loop_pairs, tmp)
            scale = total / loop_pairs
            agree = float(
                np.max(np.abs(ours["costs"][:loop_pairs] - loop["costs"]) / loop["costs"])
            )
            label = (
                "i.i.d. Gaussian"
                if kind == "random"
                else f"padding-like ({PADDING_ROWS} rows within {PADDING_NOISE:g})"
            )
            print(
                f"\nfirst call in a fresh process, {total:,} pairs, {label} clouds "
                f"(loop: {loop_pairs:,} pairs, scaled x{scale:g}); costs agree to {agree:.1e} relative"
            )
            print(f"  {'':<30}{'wall s':>9}{'user s':>9}{'sys s':>9}{'page faults':>13}")
            for name, r, s in (
                ("whichway couple(xb, yb)", ours, 1.0),
                ("plain cdist + SciPy loop", loop, scale),
            ):
                print(
                    f"  {name:<30}{r['wall'] * s:>9.2f}{r['user'] * s:>9.2f}{r['sys'] * s:>9.2f}"
                    f"{int(r['faults'] * s):>13,}"
                )
            ratio = loop["wall"] * scale / ours["wall"]
            print(f"  speed-up (wall): {ratio:.2f}x")
            results.append(
                Result(
                    bench="clouds",
                    compared=f"couple(xb, yb, 'ot') on {total:,} pairs of {n}x{d} {label} clouds vs a plain per-pair "
                    "loop (float64 cdist**2 + SciPy linear_sum_assignment)",
                    ours=seconds(ours["wall"]),
                    baseline=seconds(loop["wall"] * scale),
                    ratio=ratio,
                    regime=FIRST_CALL,
                    device=args.device,
                    notes=f"loop timed on {loop_pairs:,} pairs and scaled; costs agree to {agree:.0e}; "
                    f"CPU (user+sys) {ours['user'] + ours['sys']:.1f} s vs {(loop['user'] + loop['sys']) * scale:.1f} s",
                    extra={
                        "pairs": total,
                        "loop_pairs": loop_pairs,
                        "kind": kind,
                        "ours": ours | {"costs": None},
                        "loop": loop | {"costs": None},
                    },
                )
            )

    # ---- warm, per pair
    single = 20 if args.quick else 50
    g = torch.Generator().manual_seed(args.seed + 7)
    pairs = [
        (torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)) for _ in range(single)
    ]
    couple(*pairs[0])
    _pot(*pairs[0])
    _scipy(*pairs[0])
    t_ww, c_ww = _per_pair(lambda x, y: couple(x, y, "ot").cost, pairs, repeats)
    t_pot, c_pot = _per_pair(_pot, pairs, repeats)
    t_sp, c_sp = _per_pair(_scipy, pairs, repeats)
    agree = max(
        max(abs(a - b) / b for a, b in zip(c_ww, c_pot)),
        max(abs(a - b) / b for a, b in zip(c_ww, c_sp)),
    )
    print(
        f"\nwarm, per pair ({single} pairs, best of {repeats} rounds; costs agree to {agree:.1e} relative)"
    )
    for name, t in (
        ("whichway couple(x, y, 'ot')", t_ww),
        ("POT ot.emd + ot.dist", t_pot),
        ("numpy + SciPy linear_sum_assignment", t_sp),
    ):
        print(f"  {name:<38}{t * 1e3:>9.3f} ms  {t / t_ww:>6.2f}x")
    for name, t in (("POT ot.emd + ot.dist", t_pot), ("numpy + SciPy linear_sum_assignment", t_sp)):
        results.append(
            Result(
                bench="clouds",
                compared=f"couple(x, y, 'ot') on one {n}x{d} pair vs {name}",
                ours=seconds(t_ww),
                baseline=seconds(t),
                ratio=t / t_ww,
                regime=WARM,
                device=args.device,
                notes=f"best of {repeats} rounds over {single} pairs; costs agree to {agree:.0e}",
            )
        )
    report(results, args.json)


if __name__ == "__main__":
    main()
