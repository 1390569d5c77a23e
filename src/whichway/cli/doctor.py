"""``whichway doctor``: the environment, and the memory a model needs at a size.

Without --model: devices, their memory, and the library versions. With --model: also the
weights per component, the estimated peak memory per batch size, the largest batch that fits and,
when not even one frame fits, the option that would make it fit
(:func:`whichway.models.memory.plan_memory`).

The module's top level imports only the standard library.
"""

from __future__ import annotations

import argparse
import platform
from typing import Any

from whichway.cli._options import add_model_options, check_size


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "doctor",
        help="devices, free memory, library versions; a model's memory needs per batch size",
        description=(
            "Print the devices and their free memory, the versions of torch / diffusers / "
            "transformers / CUDA and, with --model, the model's weights per component, the "
            "estimated peak memory of a render per batch size at --height x --width, the largest "
            "batch that fits (what --batch-size auto uses) and the option needed when none does."
        ),
    )
    add_model_options(p, model_default=None, runtime=False)
    p.add_argument("--height", type=int, default=None, help="pixels (default: the model's)")
    p.add_argument("--width", type=int, default=None, help="pixels (default: the model's)")
    p.add_argument(
        "--guidance",
        type=float,
        default=7.5,
        help="guidance of the planned run (default 7.5; above 1 the denoiser runs two rows per frame)",
    )
    p.add_argument(
        "--measure",
        action="store_true",
        help="on CUDA, measure the peak of one-step renders of 1 and 2 frames instead of estimating",
    )
    p.add_argument(
        "--context-length",
        type=int,
        default=None,
        help="also estimate a motion journey's context window of this many frames (travel --motion)",
    )
    p.add_argument(
        "--motion",
        default=None,
        metavar="ADAPTER",
        help="a local MotionAdapter folder: its weights are added to the window estimate",
    )
    p.set_defaults(func=run)


def _check(args: argparse.Namespace) -> None:
    for name in ("height", "width"):
        check_size(f"--{name}", getattr(args, name))
    if (args.height is not None or args.width is not None) and args.model is None:
        raise ValueError("--height/--width describe a model's render: give --model too")
    if (args.context_length is not None or args.motion is not None) and args.model is None:
        raise ValueError("--context-length/--motion describe a motion render: give --model too")
    if args.context_length is not None:
        from whichway.motion.windows import check_context

        check_context(args.context_length, None)
    if args.motion is not None:
        from whichway.motion.adapter import check_motion_source

        check_motion_source(args.motion)


def environment_lines() -> list[str]:
    """Versions and devices, one line each."""
    import torch

    from whichway import __version__
    from whichway.models.memory import format_bytes, list_devices

    versions: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("diffusers", "transformers", "huggingface_hub", "safetensors"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = "not installed"
    versions["CUDA"] = torch.version.cuda or "none (CPU build)"
    lines = [f"whichway {__version__} on {platform.system()} {platform.machine()}"]
    lines.append("  " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    lines.append(f"  CUDA available: {'yes' if torch.cuda.is_available() else 'no'}")
    for d in list_devices():
        extra = f", {torch.get_num_threads()} threads" if d.device == "cpu" else ""
        lines.append(
            f"device {d.device} ({d.name}{extra}): total {format_bytes(d.total)}, free {format_bytes(d.free)}"
        )
    return lines


def plan_lines(plan: Any, adapter: Any) -> list[str]:
    """The memory plan as a table."""
    from whichway.models.memory import format_bytes

    lines = [
        (
            f"model {adapter.model_id} ({adapter.family}, {type(adapter.pipe).__name__}) on {adapter.device} "
            f"in {str(adapter.dtype).replace('torch.', '')}"
        ),
        "weights (parameters and buffers):",
        f"  {'component':<16}{'elements':>14}{'bytes':>16}  {'dtype':<10}{'size':>11}",
    ]
    for c in plan.components:
        lines.append(
            f"  {c.name:<16}{c.elements:>14}{c.bytes:>16}  {c.dtype:<10}{format_bytes(c.bytes):>11}"
        )
    total_elements = sum(c.elements for c in plan.components)
    lines.append(
        f"  {'total':<16}{total_elements:>14}{plan.weights_bytes:>16}  {'':<10}{format_bytes(plan.weights_bytes):>11}"
    )
    usable = None if plan.capacity_bytes is None else int(plan.headroom * plan.capacity_bytes)
    lines.append(
        f"peak memory per batch ({plan.method}) at {plan.height}x{plan.width}, guidance {plan.guidance:g} "
        f"({plan.rows_per_frame} denoiser row{'s' * (plan.rows_per_frame != 1)} per frame) on {plan.device}; "
        f"usable {format_bytes(usable)} ({plan.headroom:.0%} of {format_bytes(plan.capacity_bytes)}):"
    )
    if plan.method == "analytic":
        lines.append(
            f"  per frame: denoising {format_bytes(plan.denoise_frame_bytes)}, "
            f"VAE decoding {format_bytes(plan.decode_frame_bytes)}"
        )
    lines.append(f"  {'batch':>5}{'peak':>12}  fits")
    for e in plan.estimates:
        lines.append(f"  {e.batch:>5}{format_bytes(e.bytes):>12}  {'yes' if e.fits else 'no'}")
    lines.append(f"largest batch that fits: {plan.max_batch}")
    if plan.advice:
        lines.append(plan.advice)
    return lines


def run(args: argparse.Namespace) -> int:
    _check(args)
    for line in environment_lines():
        print(line)
    if args.model is None:
        print("(give --model ID to see a model's memory per batch size)")
        return 0
    from whichway.cli._options import load_model
    from whichway.models.memory import plan_memory

    adapter = load_model(args)
    plan = plan_memory(adapter, args.height, args.width, args.guidance, measure=args.measure)
    for line in plan_lines(plan, adapter):
        print(line)
    if args.context_length is not None or args.motion is not None:
        print(window_line(plan, args.context_length, args.motion))
    return 0


def window_line(plan: Any, length: int | None, motion: str | None) -> str:
    """A motion journey's context window: its estimated peak, whether it fits, the longest that does."""
    from whichway.models.memory import format_bytes, window_memory
    from whichway.motion.windows import DEFAULT_CONTEXT_LENGTH

    weights = 0
    if motion is not None:
        from whichway.motion.adapter import check_motion_source

        source = check_motion_source(motion)
        weights = 0 if source.weights is None else source.weights.stat().st_size
    frames = length or DEFAULT_CONTEXT_LENGTH
    w = window_memory(plan, frames, weights)
    return (
        f"motion context window of {frames} frames (travel --motion, motion weights "
        f"{format_bytes(weights)}): peak {format_bytes(w.bytes)}, fits: "
        f"{'yes' if w.fits else 'no'}; longest --context-length that fits: {w.max_frames}"
    )
