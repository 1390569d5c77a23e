"""Motion journeys: frames/s of a travel rendered as one AnimateDiff video (``--motion``) vs the
same travel rendered as stills, and the flicker of both (frame-to-frame distances).

A 3-keyframe journey on the tiny AnimateDiff (:func:`whichway.models.tiny_motion.
build_tiny_animatediff`: a tiny SD 1.x pipeline and a random MotionAdapter) is rendered with
:func:`whichway.travel.run_travel` twice in the same process, same keyframes, seeds, plan:
stills (batches of frames) and motion (context windows of 8, stride 4). Flicker: the mean and max
frame-to-frame LPIPS (AlexNet) when its weights are available offline, else the mean and max
frame-to-frame RMS pixel difference (said so in the notes). The tiny model's images are noise:
the figures measure the machinery, not the look.

    python benchmarks/bench_motion.py [--quick] [--device cpu]

Times are first calls of each renderer after a one-frame warm-up of the model.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _result import FIRST_CALL, Result, add_arguments, report, seconds


def flicker(frames: torch.Tensor) -> tuple[str, float, float]:
    """(measure name, mean, max) of the frame-to-frame distances of frames (T, 3, H, W)."""
    try:
        from whichway.metrics import LPIPSPath

        steps = LPIPSPath("alex").distances(frames)
        return "LPIPS", float(steps.mean()), float(steps.max())
    except Exception as exc:  # no weights offline: say so and use pixels
        print(f"LPIPS unavailable ({type(exc).__name__}); flicker in RMS pixel difference")
        steps = (frames[1:] - frames[:-1]).pow(2).mean(dim=(1, 2, 3)).sqrt()
        return "RMS pixel", float(steps.mean()), float(steps.max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer frames and steps")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add_arguments(parser)
    args = parser.parse_args()

    from whichway.media import load_image
    from whichway.models import load_adapter
    from whichway.models.tiny_motion import build_tiny_animatediff
    from whichway.travel import Keyframe, TravelSettings, run_travel

    per_segment = 6 if args.quick else 12
    steps = 2 if args.quick else 4
    size = 32 if args.quick else 64
    with tempfile.TemporaryDirectory() as tmp:
        root = build_tiny_animatediff(Path(tmp) / "model")
        adapter = load_adapter(str(root / "base"), device=args.device, dtype="float32")
        keyframes = tuple(
            Keyframe(p, seed=k) for k, p in enumerate(("a photo of a cat", "a dog", "a red car"))
        )
        common = dict(
            frames_per_segment=per_segment, steps=steps, height=size, width=size, format=None
        )
        still = TravelSettings(keyframes, batch_size=8, **common)
        motion = TravelSettings(
            keyframes, motion=str(root / "motion"), context_length=8, context_stride=4, **common
        )
        cond = adapter.encode(["warm-up"])
        adapter.render(cond, adapter.initial_latent(0, size, size), steps=1, guidance=7.5,
                       height=size, width=size)  # fmt: skip
        times, measures = {}, {}
        for name, settings in (("still", still), ("motion", motion)):
            start = time.perf_counter()
            result = run_travel(adapter, settings, Path(tmp) / name, progress=False)
            times[name] = time.perf_counter() - start
            frames = torch.stack([load_image(p) for p in result.frames])
            measures[name] = flicker(frames)
        n = len(result.frames)
    measure = measures["still"][0]
    for name in ("still", "motion"):
        _, mean, peak = measures[name]
        print(
            f"{name:>6}: {n} frames in {times[name]:.2f} s = {n / times[name]:.2f} frames/s; "
            f"frame-to-frame {measure} mean {mean:.4f}, max {peak:.4f}"
        )
    report(
        [
            Result(
                bench="motion",
                compared=f"tiny AnimateDiff, a {n}-frame 3-keyframe journey ({steps} steps, "
                f"{size}px): motion video (windows of 8, stride 4) vs still frames",
                ours=f"{n / times['motion']:.2f} frames/s",
                baseline=f"{n / times['still']:.2f} frames/s",
                ratio=times["still"] / times["motion"],
                regime=FIRST_CALL,
                device=args.device,
                notes=f"{seconds(times['motion'])} vs {seconds(times['still'])}; frame-to-frame "
                f"{measure} mean/max: motion {measures['motion'][1]:.4f}/{measures['motion'][2]:.4f}"
                f", still {measures['still'][1]:.4f}/{measures['still'][2]:.4f}",
                extra={"flicker_measure": measure, "flicker": measures},
            )
        ],
        args.json,
    )


if __name__ == "__main__":
    main()
