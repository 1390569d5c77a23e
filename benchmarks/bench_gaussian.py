"""Time per interpolation path and per centroid: LERP, SLERP, COG and NAO in one run.

The COG paper's evaluation setting (after Samuel et al. 2024): SD 2.1 latents, D = 4*64*64;
an interpolation path is 3 interior points between two latents (NAO: an 11-point path, 3 picked
at uniform index distance); a centroid combines K = 5 latents (NAO: 11 points per path). NAO
runs with the reference settings (Adam lr 0.01, up to 10,000 iterations, early stopping after
10 / 5 consecutive |dloss| below 1e-3 / 1e-2); ``--quick`` caps its iterations.

Besides the time, each row shows how far the produced latents' norms are from sqrt(D) (mean
|‖z‖ - sqrt(D)|; for a genuine N(0, I) sample ‖z‖ ~ N(sqrt(D), 1/2), so about 1/sqrt(pi) = 0.56
on average: far less is "too typical", far more off-distribution), and the element variance.

    python benchmarks/bench_gaussian.py            # full run (NAO to convergence)
    python benchmarks/bench_gaussian.py --quick    # NAO capped at 200 iterations
    python benchmarks/bench_gaussian.py --device cuda

Times are warm (closed forms: medians after a warm-up call; NAO: whole optimisation runs in the
same process, after the closed forms).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _result import WARM, Result, add_arguments, report, seconds

from whichway.gaussian import (
    cog_centroid,
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

SHAPE = (4, 64, 64)
D = math.prod(SHAPE)
T_INTERIOR = (0.25, 0.5, 0.75)
Row = tuple[str, float, float, tuple[float, float], str]  # label, wall s, CPU s, (gap, var), note


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(
    fn: Callable[[], object], repeats: int, device: torch.device
) -> tuple[float, float, object]:
    """Median wall and process-CPU seconds per call over ``repeats`` calls (after a warm-up)."""
    out = fn()
    _sync(device)
    walls, cpus = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        _sync(device)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus), out


def _quality(z: torch.Tensor) -> tuple[float, float]:
    flat = z.double().reshape(-1, D)
    gap = float((flat.norm(dim=1) - math.sqrt(D)).abs().mean())
    return gap, float(flat.var(dim=1).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="cap NAO at --quick-iter iterations, fewer repeats"
    )
    parser.add_argument("--quick-iter", type=int, default=200)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed calls per closed-form method"
    )
    parser.add_argument("--nao-runs", type=int, default=None, help="NAO paths / centroids timed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (1 gives stable timings on a shared machine)",
    )
    add_arguments(parser)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    repeats = args.repeats or (10 if args.quick else 50)
    nao_runs = args.nao_runs or (1 if args.quick else 3)
    max_iter = args.quick_iter if args.quick else 10_000
    gen = torch.Generator(device).manual_seed(args.seed)
    latents = torch.randn(2 * nao_runs + 5 * nao_runs, *SHAPE, generator=gen, device=device)
    x0, x1 = latents[0], latents[1]
    group = latents[:5]
    t = torch.tensor(T_INTERIOR)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"whichway.gaussian benchmark: D = {D} ({'x'.join(map(str, SHAPE))}), float32, {name}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
    )
    print(
        f"closed forms: median of {repeats} calls; NAO: mean of {nao_runs} run(s), "
        f"max_iter = {max_iter}{' (--quick cap)' if args.quick else ''}\n"
    )

    # ---------------------------------------------------------------- interpolation paths
    rows: list[Row] = []
    for label, fn in (("LERP", lerp), ("SLERP", slerp), ("COG", cog_interpolate)):
        sec, cpu, out = _time(lambda fn=fn: fn(x0, x1, t), repeats, device)
        rows.append((label, sec, cpu, _quality(out), ""))
    nao_secs, nao_cpus, nao_iters, nao_conv, nao_out = [], [], [], [], None
    for r in range(nao_runs):
        a, b = latents[2 * r], latents[2 * r + 1]
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        path = nao_interpolate(
            a, b, 11, max_iter=max_iter, generator=torch.Generator(device).manual_seed(r)
        )
        picked = pick_interior(path, 3)
        _sync(device)
        nao_secs.append(time.perf_counter() - t0)
        nao_cpus.append(time.process_time() - c0)
        nao_iters.append(path.iterations)
        nao_conv.append(path.converged)
        nao_out = picked if nao_out is None else nao_out
    rows.append(
        (
            "NAO (11 pts, 3 picked)",
            statistics.mean(nao_secs),
            statistics.mean(nao_cpus),
            _quality(nao_out),
            f"iterations {statistics.mean(nao_iters):.0f}, converged {sum(nao_conv)}/{nao_runs}",
        )
    )
    _report("per interpolation path (3 interior points)", rows)
    results = [
        _result("an interpolation path (3 interior points)", rows, device, max_iter, args.quick)
    ]

    # ---------------------------------------------------------------- centroids
    rows = []
    for label, fn in (
        ("Euclidean", euclidean_centroid),
        ("standardized", standardized_centroid),
        ("mode norm", mode_norm_centroid),
        ("COG", cog_centroid),
    ):
        sec, cpu, out = _time(lambda fn=fn: fn(group), repeats, device)
        rows.append((label, sec, cpu, _quality(out), ""))
    nao_secs, nao_cpus, nao_iters, nao_conv, nao_out = [], [], [], [], None
    for r in range(nao_runs):
        g = latents[2 * nao_runs + 5 * r : 2 * nao_runs + 5 * (r + 1)]
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        res = nao_centroid(
            g, 11, max_iter=max_iter, generator=torch.Generator(device).manual_seed(r)
        )
        _sync(device)
        nao_secs.append(time.perf_counter() - t0)
        nao_cpus.append(time.process_time() - c0)
        nao_iters.append(res.iterations)
        nao_conv.append(res.converged)
        nao_out = res.centroid if nao_out is None else nao_out
    rows.append(
        (
            "NAO (11 pts/path)",
            statistics.mean(nao_secs),
            statistics.mean(nao_cpus),
            _quality(nao_out),
            f"iterations {statistics.mean(nao_iters):.0f}, converged {sum(nao_conv)}/{nao_runs}",
        )
    )
    _report("per centroid (K = 5)", rows)
    results.append(_result("a centroid of K = 5 latents", rows, device, max_iter, args.quick))
    report(results, args.json)


def _result(what: str, rows: list[Row], device: torch.device, max_iter: int, quick: bool) -> Result:
    cog = next(r for r in rows if r[0] == "COG")
    nao = rows[-1]
    cap = f"NAO capped at {max_iter} iterations (--quick); " if quick else ""
    return Result(
        bench="gaussian",
        compared=f"{what} at D = {D}: COG (closed form) vs NAO (norm-aware optimisation, Samuel et al. 2024)",
        ours=seconds(cog[1]),
        baseline=seconds(nao[1]),
        ratio=nao[1] / cog[1],
        regime=WARM,
        device=str(device),
        notes=f"{cap}NAO {nao[4]}; mean |norm - sqrt(D)|: COG {cog[3][0]:.2f}, NAO {nao[3][0]:.2f}",
    )


def _report(title: str, rows: list[Row]) -> None:
    cog = next(r for r in rows if r[0] == "COG")
    print(title)
    print(
        f"  {'method':<24}{'wall':>11}{'x COG':>10}{'CPU':>11}{'x COG':>10}{'|norm-sqrtD|':>14}{'var':>8}  notes"
    )
    for label, sec, cpu, (gap, var), note in rows:
        print(
            f"  {label:<24}{_fmt(sec):>11}{sec / cog[1]:>10.3g}{_fmt(cpu):>11}{cpu / max(cog[2], 1e-9):>10.3g}"
            f"{gap:>14.2f}{var:>8.3f}  {note}"
        )
    nao = rows[-1]
    print(
        f"  NAO / COG time ratio: {nao[1] / cog[1]:,.0f}x wall, {nao[2] / max(cog[2], 1e-9):,.0f}x process CPU\n"
    )


def _fmt(sec: float) -> str:
    if sec >= 1:
        return f"{sec:.2f} s"
    if sec >= 1e-3:
        return f"{sec * 1e3:.2f} ms"
    return f"{sec * 1e6:.1f} us"


if __name__ == "__main__":
    main()
