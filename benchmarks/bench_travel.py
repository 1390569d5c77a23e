"""Travel throughput: whichway's batched journey vs a loop that calls the pipeline once per frame.

A journey of 5 keyframes (5 prompts, 5 seeds) with 48 frames per segment (4 x 48 + 1 = 193
frames) is rendered twice on the same model in the same process:

* per-frame loop (what stable-diffusion-videos' ``walk`` does): for every frame, its conditioning
  and initial latent, then one ``pipe(prompt_embeds=..., negative_prompt_embeds=..., latents=...)``
  call (batch 1) and a PNG written;
* whichway: :func:`whichway.travel.run_travel` (uniform pacing, no video file): the same
  frames, in denoiser batches of ``--batch-size`` that span segment boundaries, streamed to PNGs,
  with run.json and the strip.

Both render the same conditionings and latents (the loop takes them from whichway's plan), so the
largest pixel difference between the two frame sets is printed too. Both are timed warm (one
warm-up denoiser call first) in one fresh process. Models: a tiny random SD pipeline, and (unless
``--quick``) a full-size SD 1.5-architecture UNet with random weights. On a GPU:
``--device cuda``.

    python benchmarks/bench_travel.py [--quick] [--device cpu] [--frames-per-segment 48]
        [--steps N] [--size PX] [--batch-size B] [--json results.json]

Prints wall time and this process's CPU time (the fair figure on a shared, contended machine with
``--threads 1``), one ``RESULT`` line per model (machine-readable) and, with ``--json``, writes
them all.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _result import WARM, Result, report

PROMPTS = (
    "a photo of a cat sitting on a sofa",
    "a photo of a dog running on a beach",
    "a red car in a city street at night",
    "a castle on a mountain under the moon",
    "a boat on a lake in the morning",
)


def per_frame_loop(
    adapter, journey, plan, out: Path, *, steps: int, guidance: float, size: int
) -> None:
    """One pipeline call per frame (batch 1) with that frame's embeddings and latent."""
    from whichway.media import save_image

    out.mkdir(parents=True, exist_ok=True)
    for i in range(plan.n_frames):
        cond, latent, negative = journey.rows([plan.position(i)])
        image = adapter.pipe(
            prompt_embeds=cond.clouds[0].to(adapter.device, adapter.dtype),
            negative_prompt_embeds=negative.clouds[0].to(adapter.device, adapter.dtype),
            latents=latent.to(adapter.device, adapter.dtype),
            num_inference_steps=steps,
            guidance_scale=guidance,
            height=size,
            width=size,
            output_type="pt",
        ).images[0]
        save_image(image.float().cpu(), out / f"{i:05d}.png")


def bench(
    adapter,
    label: str,
    *,
    frames_per_segment: int,
    steps: int,
    guidance: float,
    size: int,
    batch_size: int,
) -> dict:
    from PIL import Image

    from whichway.travel import Keyframe, TravelSettings, run_travel
    from whichway.travel.rendering import Journey

    device = adapter.device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    settings = TravelSettings(
        tuple(Keyframe(p, seed=k) for k, p in enumerate(PROMPTS)),
        fps=24,
        frames_per_segment=frames_per_segment,
        steps=steps,
        guidance=guidance,
        height=size,
        width=size,
        batch_size=batch_size,
        format=None,
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # warm-up: allocations and kernels, one denoiser call
        warm = adapter.encode(PROMPTS[:1])
        adapter.render(
            warm,
            adapter.initial_latent(0, size, size)[None],
            steps=1,
            guidance=guidance,
            height=size,
            width=size,
        )
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        result = run_travel(adapter, settings, tmp / "whichway", progress=False)
        sync()
        t_ours, c_ours = time.perf_counter() - t0, time.process_time() - c0
        journey = Journey(adapter, settings, size, size, tmp / "loop")
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        per_frame_loop(
            adapter, journey, result.plan, tmp / "loop", steps=steps, guidance=guidance, size=size
        )
        sync()
        t_loop, c_loop = time.perf_counter() - t0, time.process_time() - c0
        diff = max(
            int(
                np.abs(
                    np.asarray(Image.open(p), dtype=int)
                    - np.asarray(Image.open(tmp / "loop" / p.name), dtype=int)
                ).max()
            )
            for p in result.frames
        )
    n = result.plan.n_frames
    row = {
        "model": label,
        "keyframes": len(PROMPTS),
        "frames": n,
        "steps": steps,
        "size": size,
        "batch_size": batch_size,
        "device": str(device),
        "dtype": str(adapter.dtype).replace("torch.", ""),
        "warm": True,
        "loop_s": round(t_loop, 3),
        "whichway_s": round(t_ours, 3),
        "loop_fps": round(n / t_loop, 3),
        "whichway_fps": round(n / t_ours, 3),
        "speedup": round(t_loop / t_ours, 3),
        "loop_cpu_s": round(c_loop, 3),
        "whichway_cpu_s": round(c_ours, 3),
        "cpu_speedup": round(c_loop / c_ours, 3),
        "max_pixel_diff": diff,
    }
    print(
        f"\n{label}: {len(PROMPTS)} keyframes, {n} frames, {steps} steps, {size}x{size}, {device} {row['dtype']}"
    )
    print(f"  {'renderer':<32}{'wall (s)':>10}{'frames/s':>10}{'CPU (s)':>10}")
    print(f"  {'per-frame pipeline loop':<32}{t_loop:>10.2f}{n / t_loop:>10.2f}{c_loop:>10.2f}")
    print(
        f"  {f'whichway travel (batch {batch_size})':<32}{t_ours:>10.2f}{n / t_ours:>10.2f}{c_ours:>10.2f}"
    )
    print(
        f"  speed-up {t_loop / t_ours:.2f}x wall, {c_loop / c_ours:.2f}x CPU time (warm, same process); "
        f"max pixel difference {diff}/255"
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="tiny model only, 12 frames per segment"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, choices=("float32", "float16", "bfloat16"))
    parser.add_argument(
        "--frames-per-segment", type=int, default=None, help="default 48 (12 with --quick)"
    )
    parser.add_argument(
        "--full-frames-per-segment",
        type=int,
        default=None,
        help="for the full-size model (default: --frames-per-segment)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="default 10 (tiny), 20 on GPU / 2 on CPU (full size)",
    )
    parser.add_argument(
        "--size",
        type=int,
        default=None,
        help="full-size model resolution (default 512 GPU, 128 CPU)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="default 16 (tiny), 16 GPU / 4 CPU (full size)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", default=None, help="write the results to this file")
    args = parser.parse_args()
    if args.frames_per_segment is None:
        args.frames_per_segment = 12 if args.quick else 48
    if args.threads:
        torch.set_num_threads(args.threads)

    from whichway.models import adapter_for, load_adapter
    from whichway.models.tiny import build_tiny_pipeline, full_size_pipeline

    torch.set_grad_enabled(False)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tiny = load_adapter(
            str(build_tiny_pipeline("sd", tmp)), device=args.device, dtype=args.dtype
        )
        rows.append(
            bench(
                tiny,
                "tiny SD pipeline",
                frames_per_segment=args.frames_per_segment,
                steps=args.steps or 10,
                guidance=7.5,
                size=64,
                batch_size=args.batch_size or 16,
            )
        )
    if not args.quick:
        gpu = args.device.startswith("cuda")
        pipe = full_size_pipeline(
            "sd", device=args.device, dtype=args.dtype or ("float16" if gpu else "float32")
        )
        adapter = adapter_for(pipe, "random SD 1.5-architecture UNet")
        rows.append(
            bench(
                adapter,
                "full-size SD 1.5 UNet (random weights)",
                frames_per_segment=args.full_frames_per_segment or args.frames_per_segment,
                steps=args.steps or (20 if gpu else 2),
                guidance=7.5,
                size=args.size or (512 if gpu else 128),
                batch_size=args.batch_size or (16 if gpu else 4),
            )
        )
    report(
        [
            Result(
                bench="travel",
                compared=f"{row['model']}: run_travel over {row['keyframes']} keyframes ({row['frames']} frames) vs a "
                "per-frame pipeline loop",
                ours=f"{row['whichway_fps']:.3g} frames/s",
                baseline=f"{row['loop_fps']:.3g} frames/s",
                ratio=row["speedup"],
                regime=WARM,
                device=row["device"],
                notes=f"CPU-time ratio {row['cpu_speedup']:.2f}; max pixel difference {row['max_pixel_diff']}/255",
                extra=row,
            )
            for row in rows
        ],
        args.json,
    )


if __name__ == "__main__":
    main()
