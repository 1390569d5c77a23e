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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"

SIZE_MULTIPLE = 8
"""Every supported family needs height and width in multiples of 8 (Flux: 16, checked once the
model is known)."""


def add_model_options(
    parser: argparse.ArgumentParser,
    *,
    model_default: str | None = DEFAULT_MODEL,
    runtime: bool = True,
) -> None:
    """--model, --device, --dtype, --variant, and the runtime options (:func:`add_runtime_options`;
    not with ``runtime=False``). ``model_default=None``: no model unless one is named."""
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        default=model_default,
        help="hub id or local directory of a diffusers pipeline (SD 1.x/2.x, sd-turbo, SDXL, SD3, "
        f"Flux); default {model_default or 'none'}. Fast on a CPU: "
        "stabilityai/sd-turbo with --steps 1 --guidance 0",
    )
    group.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1, mps (default: cuda if available)"
    )
    group.add_argument(
        "--dtype",
        default=None,
        choices=("float32", "float16", "bfloat16"),
        help="default float32 on CPU, float16 on GPU (bfloat16 for Flux)",
    )
    group.add_argument("--variant", default=None, help="weights variant to load, e.g. fp16")
    add_prompt_options(parser)
    if runtime:
        add_runtime_options(parser)


def add_prompt_options(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """--weighting and --long-prompts: how prompt syntax and long prompts are encoded."""
    from whichway.prompts.options import (
        DEFAULT_LONG_PROMPTS,
        DEFAULT_WEIGHTING,
        LONG_PROMPTS,
        WEIGHTING_RULES,
    )

    group = parser.add_argument_group(
        "prompts",
        "(word:1.2), (word), [word], \\(, BREAK as in A1111 / ComfyUI; see docs/prompts.md",
    )
    group.add_argument(
        "--weighting",
        default=DEFAULT_WEIGHTING,
        choices=WEIGHTING_RULES,
        help="what (word:w) does to the token embeddings: comfyui e + w(z - e) (default), a1111 "
        "w·z with the chunk's mean restored, multiply w·z",
    )
    group.add_argument(
        "--long-prompts",
        default=DEFAULT_LONG_PROMPTS,
        choices=LONG_PROMPTS,
        help="prompts over 77 tokens: chunk (75-token chunks, default) or truncate (cut as the "
        "pipeline cuts, with a warning)",
    )
    return group


#: argument names that hold prompts, checked for syntax before any model loads
PROMPT_ARGS: tuple[tuple[str, str], ...] = (
    ("prompt_a", "prompt A"),
    ("prompt_b", "prompt B"),
    ("prompt", "prompt"),
    ("prompts", "prompt"),
    ("negative_prompt", "negative prompt"),
)


def check_prompt_args(args: argparse.Namespace) -> None:
    """Prompt syntax of every prompt argument (one-line PromptSyntaxError naming the prompt and
    the position), before any model loads; torch-free."""
    from whichway.prompts.syntax import check_prompts_syntax

    for name, label in PROMPT_ARGS:
        value = getattr(args, name, None)
        values = value if isinstance(value, list) else [value]
        check_prompts_syntax(*((label, v) for v in values))


def load_model(args: argparse.Namespace) -> Any:
    """Load the adapter named by the model options, with the runtime options applied (imports
    diffusers; :func:`whichway.cli.main` ran the model-free checks first)."""
    from whichway.models import load_adapter
    from whichway.models.prompting import set_prompt_options

    adapter = load_adapter(
        args.model,
        device=args.device,
        dtype=args.dtype,
        variant=args.variant,
        runtime=runtime_options(args),
    )
    set_prompt_options(adapter, args.weighting, args.long_prompts)
    return adapter


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
        "--guidance",
        type=float,
        default=guidance,
        help=f"classifier-free guidance scale (default {guidance:g})",
    )
    gen.add_argument(
        "--height", type=int, default=None, help="pixels, a multiple of 8 (default: the model's)"
    )
    gen.add_argument(
        "--width", type=int, default=None, help="pixels, a multiple of 8 (default: the model's)"
    )
    if negative:
        gen.add_argument("--negative-prompt", default=None)
    if batch_size:
        gen.add_argument(
            "--batch-size",
            type=parse_batch_size,
            default=None,
            help="frames per denoiser batch, or auto: the largest the memory estimate fits, halved on "
            "an out-of-memory error (default: auto on a GPU, 4 on a CPU)",
        )
    return gen


def add_path_options(
    parser: argparse.ArgumentParser, *, coupling: bool = True, latent: bool = True
) -> argparse._ArgumentGroup:
    """--coupling, --latent, --seed: how the path between two keyframes is built (morph, travel;
    compare takes --seed only: it renders several couplings from one seed's latent).

    Returns the group so a command can add its own path options to it."""
    path = parser.add_argument_group("path")
    if coupling:
        path.add_argument(
            "--coupling",
            default="ot",
            choices=("ot", "clip", "random"),
            help="token pairing (default ot)",
        )
    if latent:
        _add_latent_option(path)
    path.add_argument("--seed", type=int, default=0)
    return path


def add_frames_options(group: argparse._ArgumentGroup, *, frames: int) -> None:
    """--frames N (equally spaced) or --t (explicit times), one of the two (morph, compare)."""
    when = group.add_mutually_exclusive_group()
    when.add_argument(
        "--frames",
        type=int,
        default=frames,
        help=f"number of equally spaced frames (default {frames})",
    )
    when.add_argument(
        "--t", type=parse_floats, default=None, help="explicit times, e.g. 0,0.1,0.5,1"
    )


def add_image_options(
    group: argparse._ArgumentGroup, *, help_a: str, help_b: str = "real image for prompt B"
) -> None:
    """--image-a, --image-b: the two images of a real-image morph or of DiffMorpher."""
    group.add_argument("--image-a", default=None, help=help_a)
    group.add_argument("--image-b", default=None, help=help_b)


def _add_latent_option(path: argparse._ArgumentGroup) -> None:
    path.add_argument(
        "--latent",
        default="fixed",
        choices=("fixed", "cog", "slerp", "lerp", "nao"),
        help="initial latent along the path: fixed = one seed for every frame (default); cog/slerp/"
        "lerp/nao = a latent path between the keyframes' seeds (or inverted images)",
    )


ANIMATION_FORMATS = ("gif", "mp4", "webp")
"""Torch-free twin of :data:`whichway.media.ANIMATION_FORMATS`."""


def add_output_options(
    parser: argparse.ArgumentParser,
    *,
    formats: Sequence[str] = (*ANIMATION_FORMATS, "none"),
    default_format: str = "gif",
    fps: float = 8.0,
    out_help: str = "run directory",
    pingpong: bool = True,
    score: bool = True,
    animation: bool = True,
) -> argparse._ArgumentGroup:
    """--out, --format, --pingpong, --fps, --no-score, --lpips-random-backbone, --quiet
    (``pingpong``/``score``/``animation`` False: a command without a looping animation, a PPL
    summary or any animation)."""
    out = parser.add_argument_group("output")
    out.add_argument("--out", default=None, help=out_help)
    if animation:
        out.add_argument(
            "--format",
            default=default_format,
            choices=tuple(formats),
            help=f"animation (default {default_format})",
        )
    if pingpong and animation:
        out.add_argument(
            "--pingpong", action="store_true", help="loop the animation forth and back"
        )
    if animation:
        out.add_argument(
            "--fps", type=float, default=fps, help=f"frames per second (default {fps:g})"
        )
    if score:
        out.add_argument(
            "--no-score", action="store_true", help="skip the PPL/smoothness summary at the end"
        )
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
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}"
        ) from None


def parse_ints(text: str) -> tuple[int, ...]:
    """'0,1,2' -> (0, 1, 2), with an argparse-friendly error."""
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None


# --- checks that need no model ------------------------------------------------------------------


def check_generation(args: argparse.Namespace) -> None:
    """Refuse bad --steps / --height / --width / --batch-size / --fps before any model is loaded
    (ValueError with a one-line message)."""
    steps = getattr(args, "steps", None)
    if steps is not None and steps < 1:
        raise ValueError(f"--steps must be >= 1, got {steps}")
    for name in ("height", "width"):
        check_size(f"--{name}", getattr(args, name, None))
    batch = getattr(args, "batch_size", None)
    if isinstance(batch, int) and batch < 1:
        raise ValueError(f"--batch-size must be a positive integer or 'auto', got {batch}")
    fps = getattr(args, "fps", None)
    if fps is not None and not 0 < fps < float("inf"):
        raise ValueError(f"--fps must be > 0 and finite, got {fps}")


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
        raise ValueError(
            f"cannot write {what} {path}: {probe} is not writable; choose another --out"
        )


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


# --- branch `checks`: model-free checks shared by every command ---------------------------------
# Each raises ValueError with one line saying what was wrong and what is accepted; commands call
# them before importing torch/diffusers or loading any model, weights or data.

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
"""Image files whichway writes (grids, strips, reconstructions)."""


LATENT_EXTENSIONS = (".safetensors", ".pt", ".pth")
"""Torch-free twin of :data:`whichway.models._common.LATENT_SUFFIXES`."""

MAX_SEED = 2**64 - 1
"""Largest seed ``torch.Generator.manual_seed`` takes (seeds are 0 .. 2**64 - 1)."""


def check_at_least(name: str, value: float | None, minimum: float) -> float | None:
    """Refuse ``value < minimum`` (None passes): ``--frames must be >= 2, got 1``."""
    if value is not None and not value >= minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_positive(name: str, value: float | None) -> float | None:
    """Refuse a value that is not a finite number > 0 (None passes)."""
    if value is not None and not (0 < value < float("inf")):
        raise ValueError(f"{name} must be a number > 0, got {value}")
    return value


def check_size(name: str, value: int | None, multiple: int = SIZE_MULTIPLE) -> int | None:
    """Refuse an image side that is not a positive multiple of ``multiple`` (None = the model's
    default, passes)."""
    if value is not None and (value <= 0 or value % multiple):
        nearest = max(multiple, round(value / multiple) * multiple)
        raise ValueError(
            f"{name} must be a positive multiple of {multiple}, got {value} (e.g. {nearest})"
        )
    return value


def check_seed(name: str, value: int | None) -> int | None:
    """Refuse a seed outside 0 .. 2**64 - 1 (what ``torch.Generator.manual_seed`` takes)."""
    if value is not None and not 0 <= value <= MAX_SEED:
        raise ValueError(f"{name} must be an integer in 0..{MAX_SEED}, got {value}")
    return value


def check_seeds(
    name: str, values: Sequence[int], *, minimum: int = 1, distinct: bool = False
) -> tuple[int, ...]:
    """A list of seeds: at least ``minimum`` of them, each valid, all different when ``distinct``."""
    values = tuple(values)
    if len(values) < minimum:
        raise ValueError(
            f"{name} needs at least {minimum} seeds, got {len(values)} ({','.join(map(str, values))})"
        )
    for v in values:
        check_seed(f"each of {name}", v)
    if distinct and len(set(values)) != len(values):
        dup = sorted({v for v in values if values.count(v) > 1})
        raise ValueError(f"{name} must be different seeds, got {dup[0]} more than once")
    return values


def check_t_values(t: Sequence[float], *, name: str = "--t", minimum: int = 2) -> tuple[float, ...]:
    """Path times: at least ``minimum`` of them, in [0, 1], strictly increasing."""
    t = tuple(float(x) for x in t)
    if len(t) < minimum:
        raise ValueError(f"{name} needs at least {minimum} values, got {len(t)}")
    bad = [x for x in t if not 0.0 <= x <= 1.0]
    if bad:
        raise ValueError(f"{name} values must lie in [0, 1], got {bad[0]:g}")
    import itertools

    for a, b in itertools.pairwise(t):
        if not b > a:
            raise ValueError(f"{name} values must be strictly increasing, got {a:g} then {b:g}")
    return t


def check_animation_format(
    fmt: str | None, formats: Sequence[str] = ANIMATION_FORMATS
) -> str | None:
    """An animation format (``None`` or ``"none"`` = no animation, passes)."""
    if fmt is None or fmt == "none":
        return None
    if fmt not in formats:
        raise ValueError(
            f"unknown animation format {fmt!r}; valid choices are: {', '.join(formats)}, none"
        )
    return fmt


def check_input_image(path: str | os.PathLike[str] | None, what: str) -> Path | None:
    """An input image that exists and decodes (read fully with Pillow; None passes)."""
    if path is None:
        return None
    p = check_input_file(path, what)
    assert p is not None
    from PIL import Image

    try:
        with Image.open(p) as img:
            img.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ValueError(f"{what} {p} is not a readable image ({reason})") from None
    return p


def out_file_or_folder(
    path: str | os.PathLike[str], default_name: str, extensions: Sequence[str]
) -> Path:
    """Where an output file goes: ``path`` itself when it ends in one of ``extensions``; a
    folder (``path/default_name``) when it has no extension or is an existing directory.
    Anything else is refused listing the accepted extensions. The location must be writable."""
    p = Path(path)
    if p.is_dir() or not p.suffix:
        check_out_dir(p)
        return p / default_name
    accepted = ", ".join(extensions)
    if p.suffix.lower() not in {e.lower() for e in extensions}:
        raise ValueError(
            f"--out {p} has extension {p.suffix!r}; give a file name ending in one of: {accepted}, "
            f"or a folder (then {default_name} is written in it)"
        )
    return check_out_file(p, extensions)


# --- runtime branch: offload, VAE, LoRA, sampler, compile, attention ----------------------------


def add_runtime_options(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """--offload, --vae-tiling, --vae-slicing, --vae, --lora, --sampler, --compile, --attention
    (added by :func:`add_model_options`, so every command that loads a model takes them)."""
    from whichway.models.runtime import OFFLOAD_MODES, SAMPLERS

    group = parser.add_argument_group("runtime (memory, LoRA, sampler, speed)")
    group.add_argument(
        "--offload",
        default="none",
        choices=OFFLOAD_MODES,
        help="keep components in CPU memory and move them to the GPU when used: model = one "
        "component at a time, sequential = one layer at a time (least memory, slowest); needs a "
        "GPU (default none)",
    )
    group.add_argument(
        "--vae-tiling", action="store_true", help="decode the VAE in tiles (large images)"
    )
    group.add_argument(
        "--vae-slicing", action="store_true", help="decode the VAE one image at a time"
    )
    group.add_argument(
        "--vae",
        default=None,
        metavar="ID_OR_DIR",
        help="use this AutoencoderKL instead of the model's (hub id or directory, safetensors), e.g. "
        "madebyollin/sdxl-vae-fp16-fix",
    )
    group.add_argument(
        "--lora",
        action="append",
        default=[],
        metavar="PATH_OR_ID[:SCALE]",
        help="load a LoRA (.safetensors file, directory or hub id) at SCALE (default 1); repeat for "
        "several. It changes the denoiser and, when the file has them, the text encoders",
    )
    group.add_argument(
        "--sampler",
        default=None,
        metavar="NAME",
        help="sampler built from the model's own scheduler config (default: the model's); "
        + "; ".join(f"{family}: {', '.join(names)}" for family, names in SAMPLERS.items()),
    )
    group.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the denoiser (a one-off compile time, reported apart, then faster steps)",
    )
    group.add_argument(
        "--attention",
        default=None,
        metavar="BACKEND",
        help="diffusers attention backend of the denoiser, e.g. native, flash, sage (SD3/Flux)",
    )
    return group


def runtime_options(args: argparse.Namespace) -> Any:
    """The :class:`whichway.models.runtime.RuntimeOptions` of the parsed runtime flags (None when
    the command has none or every flag is at its default)."""
    from whichway.models.runtime import RuntimeOptions

    if not hasattr(args, "offload"):
        return None
    options = RuntimeOptions(
        offload=args.offload,
        vae_tiling=args.vae_tiling,
        vae_slicing=args.vae_slicing,
        vae=args.vae,
        loras=tuple(args.lora or ()),
        sampler=args.sampler,
        compile=args.compile,
        attention=args.attention,
    )
    return None if options.is_default else options


def local_model_family(args: argparse.Namespace) -> str | None:
    """The family ("sd", "sdxl", "sd3", "flux") of a local --model folder from its
    model_index.json, torch-free; None for a hub id, no --model or an unknown pipeline."""
    from whichway.models.samplers import local_family

    # None: the command's default hub model (or none yet)
    return local_family(getattr(args, "model", None))


def check_model_options(args: argparse.Namespace) -> None:
    """Refuse bad runtime flags before any model is loaded (ValueError, one line): LoRA and VAE
    paths, a sampler unknown or (for a local model directory) not of the model's family,
    --offload with --device cpu. Needs no torch; hub models' families are checked by
    ``load_adapter`` from their config, still before any weight is loaded."""

    options = runtime_options(args)
    if options is None:
        return
    device = getattr(args, "device", None)
    family = local_model_family(args) if options.sampler is not None else None
    options.check(family=family, device=device if device == "cpu" else None, attention=False)


# --- branch doctor: memory planning -------------------------------------------------------------


def parse_batch_size(text: str) -> int | str:
    """--batch-size: a positive integer or "auto" (argparse type)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer or 'auto', got {text!r}"
        ) from None
    return value  # < 1 is refused by check_generation, with the one-line message of every check


def print_run_estimate(
    adapter: Any, args: argparse.Namespace, frames: int, preparation: Any = None
) -> None:
    """On a CPU (and without --quiet), time one denoiser step and print the run's expected
    duration with a hint for a faster choice (:func:`whichway.models.timing.estimate_run_time`);
    ``preparation``: the work before the frames (a :class:`whichway.models.timing.Preparation`:
    LoRA fits, inversions), None = none."""
    import torch

    if torch.device(adapter.device).type != "cpu" or getattr(args, "quiet", False):
        return
    from whichway.models.timing import estimate_run_time

    estimate = estimate_run_time(
        adapter,
        frames,
        args.steps,
        args.guidance,
        args.height,
        args.width,
        getattr(args, "batch_size", None),
        preparation,
    )
    print(estimate.message, flush=True)
    if estimate.hint:
        print(f"  {estimate.hint}", flush=True)


# --- bounded work: what a request needs, checked before anything is allocated ------------------


def check_request(
    args: argparse.Namespace,
    label: str,
    frames: int,
    *,
    out: str | os.PathLike[str] | None,
    held_per_frame: Callable[[int, int], int] | None = None,
    disk_per_frame: Callable[[int, int], int] | None = None,
) -> Any:
    """:func:`whichway.budget.check_request` with the parsed --model, --device, --steps,
    --guidance, --height, --width, --batch-size and --inversion-steps: refuse a request of
    ``frames`` frames that cannot fit the disk under ``out`` or the memory (ValueError, one line
    with the figure and the limit) before anything is allocated or loaded."""
    from whichway.budget import check_request as check

    return check(
        label,
        frames,
        model=getattr(args, "model", None),
        device=getattr(args, "device", None),
        steps=getattr(args, "steps", None),
        guidance=getattr(args, "guidance", None),
        height=getattr(args, "height", None),
        width=getattr(args, "width", None),
        batch_size=getattr(args, "batch_size", None),
        inversion_steps=getattr(args, "inversion_steps", None),
        out=out,
        held_per_frame=held_per_frame,
        disk_per_frame=disk_per_frame,
    )


# --- interpolation inside attention (AID / PAID) ------------------------------------------------


def add_method_options(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """--method, --warmup-ratio, --aid-layers, --fused/--no-fused, --guide-prompt: attention
    interpolation (AID / PAID, :mod:`whichway.attention`) on top of the path."""
    from whichway.attention.methods import IMAGE_METHODS, METHODS

    group = parser.add_argument_group("method (interpolation inside attention)")
    group.add_argument(
        "--method",
        default="plain",
        choices=(*METHODS, *IMAGE_METHODS),
        help="plain: the conditioning/latent path only (default); aid-outer / aid-inner: AID "
        "(He et al. 2024), middle frames attend to the end frames' keys/values, mixed after / "
        "before softmax; paid: AID with --guide-prompt as the middle frames' prompt; "
        "diffmorpher: DiffMorpher (Zhang et al. 2024) between --image-a and --image-b, SD 1.x/2.x and SDXL",
    )
    add_aid_options(group)
    add_guide_prompt_option(group)
    add_diffmorpher_options(group)
    return group


def add_aid_options(group: argparse._ArgumentGroup) -> None:
    """--warmup-ratio, --aid-layers, --fused/--no-fused: how AID acts (morph, travel, compare);
    None when not given (:func:`aid_settings` fills in the official values)."""
    from whichway.attention.methods import AID_LAYERS

    group.add_argument(
        "--warmup-ratio",
        type=float,
        default=None,
        help="fraction of the denoising steps AID acts on, in [0, 1] (default 0.5, the official "
        "value; 0 = the plain method)",
    )
    group.add_argument(
        "--aid-layers",
        default=None,
        choices=AID_LAYERS,
        help="attention layers AID acts on (default both, as the official code)",
    )
    group.add_argument(
        "--fused",
        default=None,
        action=argparse.BooleanOptionalAction,
        help="fuse AID with self-attention: a frame also attends to its own keys/values "
        "(default on, as the official code)",
    )


def add_guide_prompt_option(group: argparse._ArgumentGroup) -> None:
    """--guide-prompt: PAID's prompt of the middle frames (morph, compare)."""
    group.add_argument("--guide-prompt", default=None, help="paid: the prompt of the middle frames")


def add_diffmorpher_options(group: argparse._ArgumentGroup) -> None:
    """--lora-rank, --lora-steps, --lora-lr, --attn-lambda: how DiffMorpher acts (morph,
    compare); None when not given (:func:`diffmorpher_settings` fills in the official values)."""
    group.add_argument(
        "--lora-rank", type=int, default=None, help="diffmorpher: rank of each image's LoRA (16)"
    )
    group.add_argument(
        "--lora-steps",
        type=int,
        default=None,
        help="diffmorpher: training steps of each image's LoRA (200; fitted once, cached in the "
        "run folder)",
    )
    group.add_argument(
        "--lora-lr", type=float, default=None, help="diffmorpher: LoRA learning rate (2e-4)"
    )
    group.add_argument(
        "--attn-lambda",
        type=float,
        default=None,
        help="diffmorpher: fraction λ of the steps whose up-block self-attention keys/values are "
        "mixed from the end frames' (0.6, the official lamb)",
    )


def diffmorpher_settings(args: argparse.Namespace, used: bool, hint: str) -> Any:
    """The :class:`whichway.attention.methods.DiffMorpherSettings` of --lora-rank, --lora-steps,
    --lora-lr, --attn-lambda (official values where not given; checked); a one-line ValueError
    when one is given but DiffMorpher is not ``used`` (``hint``: how to ask for it)."""
    from whichway.attention.methods import DIFFMORPHER_KEYS, DiffMorpherSettings

    asked = {k: getattr(args, k, None) for k in DIFFMORPHER_KEYS}
    if not used and any(v is not None for v in asked.values()):
        named = ", ".join("--" + k.replace("_", "-") for k, v in asked.items() if v is not None)
        raise ValueError(f"{named} set(s) how DiffMorpher acts; {hint}")
    return DiffMorpherSettings(**{k: v for k, v in asked.items() if v is not None})


def aid_settings(args: argparse.Namespace, used: bool, hint: str) -> dict[str, Any]:
    """--warmup-ratio, --aid-layers, --fused/--no-fused as :class:`whichway.morph.MorphSettings`
    fields (``warmup_ratio``, ``aid_layers``, ``fused``; official values where not given,
    unchecked); a one-line ValueError when one is given but AID is not ``used`` (``hint``: how
    to ask for it)."""
    from whichway.attention.methods import aid_fields

    given = [
        name
        for name, value in (
            ("--warmup-ratio", args.warmup_ratio),
            ("--aid-layers", args.aid_layers),
            ("--fused/--no-fused", args.fused),
        )
        if value is not None
    ]
    if given and not used:
        raise ValueError(f"{', '.join(given)} set(s) how AID acts; {hint}")
    return aid_fields(args.warmup_ratio, args.aid_layers, args.fused)


def method_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The attention-method settings of the command line (checked, defaults filled in) as
    :class:`whichway.morph.MorphSettings` fields; a ValueError (one line) for an option that
    does not fit the method or the local model's family."""
    from whichway.attention.methods import (
        DIFFMORPHER_KEYS,
        IMAGE_METHODS,
        check_family,
        check_image_method,
        check_method,
    )

    method = args.method
    dm = diffmorpher_settings(args, method == "diffmorpher", "add --method diffmorpher")
    images = getattr(args, "image_a", None) is not None and getattr(args, "image_b", None)
    check_image_method(method, bool(images))
    settings = {
        "method": method,
        **aid_settings(
            args,
            method not in ("plain", *IMAGE_METHODS),  # DiffMorpher has its own --attn-lambda
            "add --method aid-outer, aid-inner or paid",
        ),
        "guide_prompt": args.guide_prompt,
        **{k: getattr(dm, k) for k in DIFFMORPHER_KEYS},
    }
    check_method(method, settings["warmup_ratio"], settings["aid_layers"], args.guide_prompt)
    check_family(method, local_model_family(args), settings["aid_layers"])
    return settings


# --- motion (AnimateDiff) -----------------------------------------------------------------------


def add_motion_options(
    parser: argparse.ArgumentParser, *, journey: bool = True
) -> argparse._ArgumentGroup:
    """``--motion`` and ``--context-length`` (travel and compare); a journey (travel, ``journey``
    True) also takes ``--context-stride``, ``--context-weighting`` and ``--motion-noise``."""
    from whichway.motion.windows import WEIGHTINGS
    from whichway.travel.settings import MOTION_NOISES

    motion = parser.add_argument_group("motion (AnimateDiff)")
    motion.add_argument(
        "--motion",
        default=None,
        metavar="ADAPTER",
        help="a MotionAdapter folder or hub id (SD 1.x or SDXL base model): "
        + (
            "every frame's travel conditioning is denoised together as one video, so the picture "
            "moves"
            if journey
            else "two more rows, the lerp and the OT path each denoised as one video"
        ),
    )
    motion.add_argument(
        "--context-length",
        type=int,
        default=None,
        help="frames denoised at once per context window (default 16, at most the adapter's"
        + (
            "; with --batch-size auto, at most the longest window the memory estimate fits)"
            if journey
            else ")"
        ),
    )
    if not journey:
        return motion
    motion.add_argument(
        "--context-stride",
        type=int,
        default=None,
        help="frames between the starts of consecutive windows (default 4, at most the length)",
    )
    motion.add_argument(
        "--context-weighting",
        default="pyramid",
        choices=WEIGHTINGS,
        help="weights fusing overlapping windows: pyramid (FreeNoise, default) or flat",
    )
    motion.add_argument(
        "--motion-noise",
        default="path",
        choices=MOTION_NOISES,
        help="initial noise: path (each frame's latent on --latent's path between keyframe "
        "seeds, default) or shuffled (FreeNoise: the first window's noise, shuffled, repeated)",
    )
    return motion
