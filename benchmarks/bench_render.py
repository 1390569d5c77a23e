"""Renderer throughput: whichway's batched renderer vs a naive per-frame pipeline loop.

An 11-frame OT morph is rendered twice on the same model in the same run:

* naive: one ``pipe(prompt_embeds=..., negative_prompt_embeds=..., latents=...)`` call per frame
  (batch 1), the way a user would loop over an interpolation by hand;
* whichway: :func:`whichway.render.render_frames` with ``--batch-size`` frames per denoiser call.

Printed: frames/s for both, the speed ratio, the largest difference between the two renderings,
and the share of wall time spent outside the denoiser (UNet) calls. Models: a tiny random SD
pipeline, and (unless ``--quick``) a full-size SD 1.5-architecture UNet with random weights (the
real compute cost) at a small resolution. On a GPU, ``--device cuda --dtype float16 --size 512``.

    python benchmarks/bench_render.py [--quick] [--device cpu] [--dtype float32] [--size 256]

Times are warm: both renderers run after a one-step warm-up render on the same model; the naive
loop and the batched renderer alternate over ``--repeats`` rounds and the median is reported, so
load from other processes on a shared machine hits both alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _result import WARM, Result, add_arguments, report, seconds


class DenoiserClock:
    """Accumulates wall time spent inside the denoiser's forward (synchronising CUDA)."""

    def __init__(self, module: torch.nn.Module, device: torch.device) -> None:
        self.total = 0.0
        self.calls = 0
        self._start = 0.0
        self._sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        module.register_forward_pre_hook(self._before)
        module.register_forward_hook(self._after)

    def _before(self, *_):
        self._sync()
        self._start = time.perf_counter()

    def _after(self, *_):
        self._sync()
        self.total += time.perf_counter() - self._start
        self.calls += 1

    def reset(self) -> None:
        self.total, self.calls = 0.0, 0


def naive_loop(adapter, path, latent, negative, *, steps, guidance, size):
    """One pipeline call per frame with prompt_embeds (what a hand-written loop does)."""
    frames = []
    for k in range(len(path)):
        frames.append(
            adapter.render(
                path.select(k),
                latent[None],
                steps=steps,
                guidance=guidance,
                height=size,
                width=size,
                negative=negative,
            )
        )
    return torch.cat(frames)


def bench(
    adapter,
    label: str,
    *,
    frames: int,
    steps: int,
    guidance: float,
    size: int,
    batch_size: int,
    repeats: int,
) -> Result:
    from whichway.render import conditioning_path, render_frames

    device = adapter.device
    denoiser = getattr(adapter.pipe, "unet", None) or adapter.pipe.transformer
    clock = DenoiserClock(denoiser, device)
    cond = adapter.encode(
        ["a photo of a cat sitting on a sofa", "a photo of a dog running on a beach"]
    )
    path, _ = conditioning_path(cond.select(0), cond.select(1), torch.linspace(0, 1, frames))
    latent = adapter.initial_latent(0, size, size)
    negative = adapter.encode_negative(None, 1)
    # warm-up (allocations, kernels) on one frame
    adapter.render(
        path.select(0),
        latent[None],
        steps=1,
        guidance=guidance,
        height=size,
        width=size,
        negative=negative,
    )

    def timed(fn):
        clock.reset()
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        return out, time.perf_counter() - t0, clock.total

    runs: dict[str, list[tuple[float, float]]] = {"naive": [], "ours": []}
    for _ in range(repeats):  # alternate, so a shared machine's load hits both alike
        naive, t, unet = timed(
            lambda: naive_loop(
                adapter, path, latent, negative, steps=steps, guidance=guidance, size=size
            )
        )
        runs["naive"].append((t, unet))
        ours, t, unet = timed(
            lambda: render_frames(
                adapter,
                path,
                latent,
                steps=steps,
                guidance=guidance,
                height=size,
                width=size,
                batch_size=batch_size,
                negative=negative,
                progress=False,
            )
        )
        runs["ours"].append((t, unet))
    t_naive = statistics.median(t for t, _ in runs["naive"])
    t_ours = statistics.median(t for t, _ in runs["ours"])
    out_naive = 1 - statistics.median(u / t for t, u in runs["naive"])
    out_ours = 1 - statistics.median(u / t for t, u in runs["ours"])
    diff = (naive - ours).abs().max().item()
    print(
        f"\n{label}: {frames} frames, {steps} steps, {size}x{size}, guidance {guidance}, "
        f"{device} {str(adapter.dtype).replace('torch.', '')}; median of {repeats} alternating rounds"
    )
    print(f"  {'renderer':<28}{'time (s)':>10}{'frames/s':>10}{'outside denoiser':>18}")
    print(
        f"  {'naive loop (batch 1)':<28}{t_naive:>10.3f}{frames / t_naive:>10.2f}{out_naive:>17.1%}"
    )
    print(
        f"  {f'whichway (batch {batch_size})':<28}{t_ours:>10.3f}{frames / t_ours:>10.2f}{out_ours:>17.1%}"
    )
    spread = [n / o for (n, _), (o, _) in zip(runs["naive"], runs["ours"])]
    print(
        f"  speed-up: {t_naive / t_ours:.2f}x (per round {', '.join(f'{r:.2f}' for r in spread)})   "
        f"max |naive - whichway| = {diff:.2e}"
    )
    return Result(
        bench="render",
        compared=f"{label}, an {frames}-frame OT morph ({steps} steps, {size}px): render_frames (batch {batch_size}) "
        "vs one pipeline call per frame",
        ours=f"{frames / t_ours:.2f} frames/s",
        baseline=f"{frames / t_naive:.2f} frames/s",
        ratio=t_naive / t_ours,
        regime=WARM,
        device=str(device),
        notes=f"median of {repeats} rounds ({seconds(t_ours)} vs {seconds(t_naive)}; per-round ratios "
        f"{min(spread):.2f}-{max(spread):.2f}); outside the denoiser {out_ours:.0%} vs {out_naive:.0%}; "
        f"images agree to {diff:.0e}",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model only")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, choices=("float32", "float16", "bfloat16"))
    parser.add_argument(
        "--size",
        type=int,
        default=None,
        help="full-size model resolution (default 128 on CPU, 512 on GPU)",
    )
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="alternating rounds (default 3; 1 for the full-size UNet on CPU)",
    )
    add_arguments(parser)
    args = parser.parse_args()

    from whichway.models import adapter_for, load_adapter
    from whichway.models.tiny import build_tiny_pipeline, full_size_pipeline

    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory() as tmp:
        tiny = load_adapter(
            str(build_tiny_pipeline("sd", tmp)), device=args.device, dtype=args.dtype
        )
        results = [
            bench(
                tiny,
                "tiny SD pipeline",
                frames=11,
                steps=args.steps or 10,
                guidance=7.5,
                size=64,
                batch_size=args.batch_size or 11,
                repeats=args.repeats or (2 if args.quick else 3),
            )
        ]
    if args.quick:
        report(results, args.json)
        return
    gpu = args.device.startswith("cuda")
    pipe = full_size_pipeline(
        "sd", device=args.device, dtype=args.dtype or ("float16" if gpu else "float32")
    )
    adapter = adapter_for(pipe, "random SD 1.5-architecture UNet")
    results.append(
        bench(
            adapter,
            "full-size SD 1.5 UNet (random weights)",
            frames=11,
            steps=args.steps or (20 if gpu else 2),
            guidance=7.5,
            size=args.size or (512 if gpu else 128),
            batch_size=args.batch_size or (11 if gpu else 4),
            repeats=args.repeats or (3 if gpu else 1),
        )
    )
    report(results, args.json)


if __name__ == "__main__":
    main()
