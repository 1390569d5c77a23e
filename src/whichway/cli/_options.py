"""Command-line options shared by several commands, defined once (standard library only).

Every command that loads a model takes :func:`add_model_options`; the commands that render take
:func:`add_generation_options`; morph and travel share :func:`add_path_options` and
:func:`add_output_options`. The ``check_*`` helpers validate what can be checked without a model
(sizes, step counts, output locations) so a command refuses bad input before anything heavy is
imported, loaded or downloaded.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"

SIZE_MULTIPLE = 8
"""Every supported family needs height and width in multiples of 8 (Flux: 16, checked once the
model is known)."""


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """--model, --device, --dtype, --variant."""
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"hub id or local directory of a diffusers pipeline (SD 1.x/2.x, sd-turbo, SDXL, SD3, "
        f"Flux); default {DEFAULT_MODEL}. Fast on a CPU: stabilityai/sd-turbo with --steps 1 "
        "--guidance 0",
    )
    group.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: cuda if available)")
    group.add_argument(
        "--dtype",
        default=None,
        choices=("float32", "float16", "bfloat16"),
        help="default float32 on CPU, float16 on GPU (bfloat16 for Flux)",
    )
    group.add_argument("--variant", default=None, help="weights variant to load, e.g. fp16")


def load_model(args: argparse.Namespace) -> Any:
    """Load the adapter named by the model options (imports diffusers)."""
    from whichway.models import load_adapter

    return load_adapter(args.model, device=args.device, dtype=args.dtype, variant=args.variant)


def add_generation_options(
    parser: argparse.ArgumentParser,
    *,
    steps: int = 30,
    guidance: float = 7.5,
    batch_size: bool = True,
    negative: bool = True,
) -> argparse._ArgumentGroup:
    """--steps, --guidance, --height, --width and (optionally) --negative-prompt, --batch-size.

    Returns the group so a command can add its own generation options to it."""
    gen = parser.add_argument_group("generation")
    gen.add_argument("--steps", type=int, default=steps, help=f"denoising steps (default {steps})")
    gen.add_argument(
        "--guidance", type=float, default=guidance, help=f"classifier-free guidance scale (default {guidance:g})"
    )
    gen.add_argument("--height", type=int, default=None, help="pixels, a multiple of 8 (default: the model's)")
    gen.add_argument("--width", type=int, default=None, help="pixels, a multiple of 8 (default: the model's)")
    if negative:
        gen.add_argument("--negative-prompt", default=None)
    if batch_size:
        gen.add_argument(
            "--batch-size", type=parse_batch_size, default=None,
            help="frames per denoiser batch, or auto: the largest the memory estimate fits, halved on "
            "an out-of-memory error (default: auto on a GPU, 4 on a CPU)",
        )
    return gen


def add_path_options(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """--coupling, --latent, --seed: how the path between two keyframes is built (morph, travel).

    Returns the group so a command can add its own path options to it."""
    path = parser.add_argument_group("path")
    path.add_argument(
        "--coupling", default="ot", choices=("ot", "clip", "random"), help="token pairing (default ot)"
    )
    path.add_argument(
        "--latent",
        default="fixed",
        choices=("fixed", "cog", "slerp", "lerp", "nao"),
        help="initial latent along the path: fixed = one seed for every frame (default); cog/slerp/"
        "lerp/nao = a latent path between the keyframes' seeds (or inverted images)",
    )
    path.add_argument("--seed", type=int, default=0)
    return path


def add_output_options(
    parser: argparse.ArgumentParser,
    *,
    formats: Sequence[str] = ("gif", "mp4", "webp", "none"),
    default_format: str = "gif",
    fps: float = 8.0,
    out_help: str = "run directory",
) -> argparse._ArgumentGroup:
    """--out, --format, --pingpong, --fps, --no-score, --lpips-random-backbone, --quiet."""
    out = parser.add_argument_group("output")
    out.add_argument("--out", default=None, help=out_help)
    out.add_argument(
        "--format", default=default_format, choices=tuple(formats), help=f"animation (default {default_format})"
    )
    out.add_argument("--pingpong", action="store_true", help="loop the animation forth and back")
    out.add_argument("--fps", type=float, default=fps, help=f"frames per second (default {fps:g})")
    out.add_argument("--no-score", action="store_true", help="skip the PPL/smoothness summary at the end")
    out.add_argument(
        "--lpips-random-backbone",
        action="store_true",
        help="LPIPS with a random backbone (offline smoke tests only: values are not comparable)",
    )
    out.add_argument("--quiet", action="store_true", help="no progress bar")
    return out


def parse_floats(text: str) -> tuple[float, ...]:
    """'0,0.25,1' -> (0.0, 0.25, 1.0), with an argparse-friendly error."""
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def parse_ints(text: str) -> tuple[int, ...]:
    """'0,1,2' -> (0, 1, 2), with an argparse-friendly error."""
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


# --- checks that need no model ------------------------------------------------------------------


def check_generation(args: argparse.Namespace) -> None:
    """Refuse bad --steps / --height / --width / --batch-size / --fps before any model is loaded
    (ValueError with a one-line message)."""
    steps = getattr(args, "steps", None)
    if steps is not None and steps < 1:
        raise ValueError(f"--steps must be >= 1, got {steps}")
    for name in ("height", "width"):
        value = getattr(args, name, None)
        if value is not None and (value <= 0 or value % SIZE_MULTIPLE):
            raise ValueError(f"--{name} must be a positive multiple of {SIZE_MULTIPLE}, got {value}")
    batch = getattr(args, "batch_size", None)
    if isinstance(batch, int) and batch < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch}")
    fps = getattr(args, "fps", None)
    if fps is not None and not fps > 0:
        raise ValueError(f"--fps must be > 0, got {fps}")


def _writable_parent(path: Path, what: str) -> None:
    """Raise unless the nearest existing ancestor of ``path`` is a writable directory."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"cannot create {what} {path}: {probe} is a file, not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write {what} {path}: {probe} is not writable; choose another --out")


def check_out_dir(path: str | os.PathLike[str]) -> Path:
    """A run directory: it may exist (then it must be a directory) or be creatable."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ValueError(f"--out {p} is a file; a run directory is expected (give a folder path)")
    _writable_parent(p, "the run directory")
    return p


def check_out_file(path: str | os.PathLike[str], extensions: Sequence[str]) -> Path:
    """An output file: its extension must be one of ``extensions`` (e.g. (".png", ".jpg")) and
    its folder creatable. A path without an extension is refused up front, listing the accepted
    ones, so no render is thrown away over a file name."""
    p = Path(path)
    accepted = ", ".join(extensions)
    if p.suffix.lower() not in {e.lower() for e in extensions}:
        got = f"extension {p.suffix!r}" if p.suffix else "no extension"
        raise ValueError(f"--out {p} has {got}; give a file name ending in one of: {accepted}")
    if p.is_dir():
        raise ValueError(f"--out {p} is a directory; give a file name ending in one of: {accepted}")
    _writable_parent(p.parent if str(p.parent) else Path("."), "the output folder")
    return p


def check_input_file(path: str | os.PathLike[str] | None, what: str) -> Path | None:
    """An input file that must exist and be a regular file (None passes)."""
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{what} {p} does not exist or is not a file")
    return p


# --- branch doctor: memory planning -------------------------------------------------------------


def parse_batch_size(text: str) -> int | str:
    """--batch-size: a positive integer or "auto" (argparse type)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {value}")
    return value


def print_run_estimate(adapter: Any, args: argparse.Namespace, frames: int) -> None:
    """On a CPU (and without --quiet), time one denoiser step and print the run's expected
    duration with a hint for a faster choice (:func:`whichway.models.timing.estimate_run_time`)."""
    import torch

    if torch.device(adapter.device).type != "cpu" or getattr(args, "quiet", False):
        return
    from whichway.models.timing import estimate_run_time

    estimate = estimate_run_time(
        adapter, frames, args.steps, args.guidance, args.height, args.width, getattr(args, "batch_size", None)
    )
    print(estimate.message, flush=True)
    if estimate.hint:
        print(f"  {estimate.hint}", flush=True)
