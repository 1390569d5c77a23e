"""PPL of an 11-frame path: whichway's once-per-frame LPIPS features vs pairwise lpips calls.

Baselines, measured in the same run on the same frames and the same model:

* ``pairwise loop``  -- ``lpips_model(frame_k, frame_k+1)`` for each k, the usual way to compute
  PPL (2 backbone passes per step, 2(T-1) in all);
* ``pairwise batch`` -- ``lpips_model(frames[:-1], frames[1:])``, one call on all pairs (still
  2(T-1) backbone passes, batched).

whichway runs the backbone once per frame (T passes, batched) and applies the linear heads to the
cached features. The random-backbone option keeps the script offline; the cost is the same as
with pretrained weights (same architecture, same operations).

Two regimes:

* **first call, fresh process** (how a user meets it: one PPL in a new Python): in a fresh child
  process each, ``LPIPSPath(net)`` + ``distances(frames)`` against ``lpips.LPIPS(net=...)`` + the
  pairwise loop, imports done and frames made before the clock starts; the model build (the same
  ``lpips`` model in both) and the first pass are reported apart;
* **warm**: medians of interleaved repeats after one warm-up call of each method, in one process.

Usage::

    python benchmarks/bench_metrics.py            # 256x256 and 512x512, alex and vgg
    python benchmarks/bench_metrics.py --quick    # 256x256 and 512x512, alex, 3 repeats
    python benchmarks/bench_metrics.py --device cuda --net vgg

"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _result import FIRST_CALL, WARM, Result, add_arguments, report, seconds


def _path_frames(size: int, count: int, seed: int = 0) -> torch.Tensor:
    """An interpolation path of ``count`` frames between two random images (count, 3, size, size)."""
    g = torch.Generator().manual_seed(seed)
    a, b = torch.rand(2, 3, size, size, generator=g)
    w = torch.linspace(0, 1, count).view(-1, 1, 1, 1)
    return (1 - w) * a + w * b


def _child(args: argparse.Namespace) -> None:
    """One first-call measurement in this (fresh) process: build, then one PPL pass; JSON out."""
    import warnings

    import lpips

    from whichway.metrics import LPIPSPath

    device = torch.device(args.device)
    frames = _path_frames(args.child_size, args.frames).to(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    start = time.perf_counter()
    if args.child == "ours":
        meter = LPIPSPath(args.child_net, pretrained_backbone=False, device=device)
        sync()
        built = time.perf_counter()
        steps = meter.distances(frames, batch_size=args.batch_size)
    else:
        torch.manual_seed(
            0
        )  # the random backbone LPIPSPath(seed=0) builds: same weights, comparable values
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # lpips' deprecated torchvision arguments
            model = lpips.LPIPS(net=args.child_net, pnet_rand=True, verbose=False).eval().to(device)
        sync()
        built = time.perf_counter()
        with torch.inference_mode():
            steps = torch.stack(
                [
                    model(frames[k : k + 1], frames[k + 1 : k + 2], normalize=True).flatten()[0]
                    for k in range(frames.shape[0] - 1)
                ]
            )
    sync()
    done = time.perf_counter()
    Path(args.out).write_text(
        json.dumps(
            {"build": built - start, "first": done - built, "steps": steps.double().cpu().tolist()}
        )
    )


def _first_call(args: argparse.Namespace, what: str, net: str, size: int, tmp: str) -> dict:
    out = os.path.join(tmp, f"{what}-{net}-{size}.json")
    cmd = [
        sys.executable,
        __file__,
        "--child",
        what,
        "--child-net",
        net,
        "--child-size",
        str(size),
        "--frames",
        str(args.frames),
        "--batch-size",
        str(args.batch_size),
        "--device",
        args.device,
        "--out",
        out,
    ]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    subprocess.run(cmd, check=True)
    return json.loads(Path(out).read_text())


def _timed(
    fns: dict[str, Callable[[], torch.Tensor]], repeats: int, device: torch.device
) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Median wall time of each function; repeats interleaved so load on a shared machine hits all alike."""
    outs = {name: fn() for name, fn in fns.items()}  # warm-up (allocator, cuDNN autotuning)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            outs[name] = fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(v) for name, v in times.items()}, outs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="alex only, 3 repeats")
    parser.add_argument("--frames", type=int, default=11)
    parser.add_argument("--sizes", default="256,512")
    parser.add_argument(
        "--net",
        default=None,
        choices=("alex", "vgg"),
        help="default: both (alex only with --quick)",
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--batch-size", type=int, default=11, help="frames per backbone pass for whichway"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    parser.add_argument("--child", choices=("ours", "loop"), help=argparse.SUPPRESS)
    parser.add_argument("--child-net", help=argparse.SUPPRESS)
    parser.add_argument("--child-size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    add_arguments(parser)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        _child(args)
        return

    from whichway.metrics import LPIPSPath

    sizes = [int(s) for s in args.sizes.split(",")]
    nets = [args.net] if args.net else (["alex"] if args.quick else ["alex", "vgg"])
    repeats = 3 if args.quick else args.repeats
    results: list[Result] = []
    device = torch.device(args.device)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    print(f"PPL of a {args.frames}-frame path; device: {name}")
    print("\nfirst call in a fresh process (model build + one pass):")
    print(
        f"{'net':<5} {'size':>8} {'lpips build':>12} {'+ pairwise loop':>16} {'LPIPSPath build':>16} "
        f"{'+ distances':>12} {'total ratio':>12} {'pass ratio':>11}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for net in nets:
            for size in sizes:
                ours = _first_call(args, "ours", net, size, tmp)
                loop = _first_call(args, "loop", net, size, tmp)
                t_ours, t_loop = ours["build"] + ours["first"], loop["build"] + loop["first"]
                diff = max(abs(p - q) for p, q in zip(ours["steps"], loop["steps"]))
                print(
                    f"{net:<5} {size:>4}x{size:<3} {loop['build']:>11.2f}s {loop['first']:>15.2f}s "
                    f"{ours['build']:>15.2f}s {ours['first']:>11.2f}s {t_loop / t_ours:>11.2f}x "
                    f"{loop['first'] / ours['first']:>10.2f}x"
                )
                results.append(
                    Result(
                        bench="metrics",
                        compared=f"PPL of an {args.frames}-frame path at {size}x{size}, {net}, in a new process: "
                        "LPIPSPath(...) + distances vs lpips.LPIPS(...) + a loop of pairwise calls",
                        ours=seconds(t_ours),
                        baseline=seconds(t_loop),
                        ratio=t_loop / t_ours,
                        regime=FIRST_CALL,
                        device=str(device),
                        notes=f"model build {seconds(ours['build'])} vs {seconds(loop['build'])} (the same lpips "
                        f"model; whichway adds a channels-last copy of the backbone); the first pass alone "
                        f"{seconds(ours['first'])} vs {seconds(loop['first'])}: {loop['first'] / ours['first']:.2f}x; "
                        f"values equal to {diff:.0e}",
                    )
                )
    print(f"\nwarm (median of {repeats} runs):")
    print(
        f"{'net':<5} {'size':>8} {'pairwise loop':>14} {'pairwise batch':>15} {'whichway':>10} "
        f"{'vs loop':>8} {'vs batch':>9} {'max |diff|':>11}"
    )
    for net in nets:
        meter = LPIPSPath(net, pretrained_backbone=False, device=device)
        model = meter.model
        for size in sizes:
            frames = _path_frames(size, args.frames).to(device)

            def loop(model=model, frames=frames) -> torch.Tensor:
                with torch.inference_mode():
                    return torch.stack(
                        [
                            model(
                                frames[k : k + 1], frames[k + 1 : k + 2], normalize=True
                            ).flatten()[0]
                            for k in range(frames.shape[0] - 1)
                        ]
                    )

            def batch(model=model, frames=frames) -> torch.Tensor:
                with torch.inference_mode():
                    return model(frames[:-1], frames[1:], normalize=True).flatten()

            def ours(meter=meter, frames=frames) -> torch.Tensor:
                return meter.distances(frames, batch_size=args.batch_size)

            times, outs = _timed({"loop": loop, "batch": batch, "ours": ours}, repeats, device)
            t_loop, t_batch, t_ours = times["loop"], times["batch"], times["ours"]
            d_loop, d_ours = outs["loop"], outs["ours"]
            diff = float((d_ours - d_loop.double()).abs().max())
            print(
                f"{net:<5} {size:>4}x{size:<3} {t_loop * 1e3:>12.1f}ms {t_batch * 1e3:>13.1f}ms "
                f"{t_ours * 1e3:>8.1f}ms {t_loop / t_ours:>7.2f}x {t_batch / t_ours:>8.2f}x {diff:>11.1e}"
            )
            results.append(
                Result(
                    bench="metrics",
                    compared=f"PPL of an {args.frames}-frame path at {size}x{size}, {net}: LPIPSPath (once-per-frame "
                    "features) vs a loop of pairwise lpips calls",
                    ours=seconds(t_ours),
                    baseline=seconds(t_loop),
                    ratio=t_loop / t_ours,
                    regime=WARM,
                    device=str(device),
                    notes=f"median of {repeats}; vs one batched lpips call on all pairs ({seconds(t_batch)}): "
                    f"{t_batch / t_ours:.2f}x; values equal to {diff:.0e}",
                )
            )
    report(results, args.json)


if __name__ == "__main__":
    main()
