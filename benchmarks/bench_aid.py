"""AID throughput: whichway's batched AID rendering vs the official per-frame [A, frame, B] loop.

An 11-frame AID morph (fused outer attention on every layer, warmup ratio 1 so AID acts on every
step) is rendered twice on the same model in the same run:

* per-frame loop (the official pipeline's layout): one denoiser batch [A, frame, B] per middle
  frame, i.e. three rows per frame (and the two end frames rendered on their own);
* whichway: :func:`whichway.render.render_frames` with an :class:`~whichway.attention.AttentionPath`,
  one denoiser batch [A, B, t_1 .. t_k] per batch of frames (k + 2 rows).

Printed: frames/s for both, the ratio, and the largest difference between the two renderings
(the middle frames see the same endpoint rows, so they agree to float tolerance). Models: a tiny
random SD pipeline, and (unless ``--quick``) a full-size SD 1.5-architecture UNet with random
weights at a small resolution. On a GPU, ``--device cuda --dtype float16 --size 512``.

    python benchmarks/bench_aid.py [--quick] [--device cpu] [--size 128]

Times are warm: after a one-step warm-up, the two renderers alternate over ``--repeats`` rounds
and the median is reported.
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


def bench(adapter, label: str, *, frames: int, steps: int, size: int, repeats: int) -> Result:
    from whichway.attention import AIDSettings, AttentionPath
    from whichway.render import conditioning_path, render_frames

    device = adapter.device
    cond = adapter.encode(["a photo of a cat on a sofa", "a photo of a dog on a beach"])
    ts = torch.linspace(0, 1, frames, dtype=torch.float64)
    path, _ = conditioning_path(cond.select(0), cond.select(1), ts)
    ends = path.select([0, frames - 1])
    latent = adapter.initial_latent(0, size, size)
    end_latents = torch.stack([latent, latent])
    options = {"steps": steps, "guidance": 7.5, "height": size, "width": size, "progress": False}
    aid = AIDSettings(mode="outer", fused=True, warmup_ratio=1.0, layers="both")

    def batched() -> torch.Tensor:
        attention = AttentionPath(aid, ends, end_latents, ts)
        return render_frames(
            adapter, path, latent, batch_size=frames, attention=attention, **options
        )

    def per_frame() -> torch.Tensor:
        # the official layout: [A, frame, B] for each middle frame, end frames alone
        out = []
        for k in range(frames):
            attention = AttentionPath(aid, ends, end_latents, ts[k : k + 1])
            out.append(
                render_frames(
                    adapter, path.select(k), latent, batch_size=1, attention=attention, **options
                )
            )
        return torch.cat(out)

    render_frames(adapter, path.select(0), latent, batch_size=1, **{**options, "steps": 1})
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def timed(fn):
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        return out, time.perf_counter() - t0

    runs: dict[str, list[float]] = {"loop": [], "ours": []}
    for _ in range(repeats):
        loop, t = timed(per_frame)
        runs["loop"].append(t)
        ours, t = timed(batched)
        runs["ours"].append(t)
    t_loop, t_ours = statistics.median(runs["loop"]), statistics.median(runs["ours"])
    diff = (loop - ours).abs().max().item()
    print(
        f"\n{label}: {frames}-frame AID morph, {steps} steps, {size}x{size}, guidance 7.5, "
        f"{device} {str(adapter.dtype).replace('torch.', '')}; median of {repeats} rounds"
    )
    print(f"  per-frame [A, frame, B] loop: {t_loop:8.3f} s  {frames / t_loop:6.2f} frames/s")
    print(f"  whichway [A, B, t1..tk]:      {t_ours:8.3f} s  {frames / t_ours:6.2f} frames/s")
    print(f"  speed-up {t_loop / t_ours:.2f}x   max |loop - batched| = {diff:.2e}")
    return Result(
        bench="aid",
        compared=f"{label}, an {frames}-frame AID morph ({steps} steps, {size}px): one denoiser "
        "batch [A, B, t1..tk] vs a per-frame [A, frame, B] loop",
        ours=f"{frames / t_ours:.2f} frames/s",
        baseline=f"{frames / t_loop:.2f} frames/s",
        ratio=t_loop / t_ours,
        regime=WARM,
        device=str(device),
        notes=f"median of {repeats} rounds ({seconds(t_ours)} vs {seconds(t_loop)}); "
        f"images agree to {diff:.0e}",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model only")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, choices=("float32", "float16", "bfloat16"))
    parser.add_argument("--size", type=int, default=None, help="full-size model resolution")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
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
                frames=7 if args.quick else 11,
                steps=args.steps or (3 if args.quick else 6),
                size=32 if args.quick else 64,
                repeats=args.repeats or (1 if args.quick else 3),
            )
        ]
    if not args.quick:
        gpu = args.device.startswith("cuda")
        pipe = full_size_pipeline(
            "sd", device=args.device, dtype=args.dtype or ("float16" if gpu else "float32")
        )
        results.append(
            bench(
                adapter_for(pipe, "random SD 1.5-architecture UNet"),
                "full-size SD 1.5 UNet (random weights)",
                frames=11,
                steps=args.steps or (20 if gpu else 2),
                size=args.size or (512 if gpu else 64),
                repeats=args.repeats or (3 if gpu else 1),
            )
        )
    report(results, args.json)


if __name__ == "__main__":
    main()
