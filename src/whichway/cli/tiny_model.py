"""``whichway tiny-model``: save a tiny randomly initialised pipeline for offline demos and tests.

The pipeline is built from the real diffusers/transformers classes (UNet or MMDiT, VAE, CLIP/T5
text encoders, a tiny tokenizer) under a fixed seed and saved with ``save_pretrained``, so it
loads through the same ``--model DIR`` path as a downloaded model. Its images are noise: it
exercises the plumbing, not image quality.

The module's top level imports only the standard library.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

FAMILIES = ("sd", "sdxl", "sd3", "flux", "animatediff")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "tiny-model",
        help="save a tiny random pipeline (sd, sdxl, sd3, flux, animatediff) for offline demos and tests",
        description=(
            "Build a tiny randomly initialised pipeline of FAMILY from the real diffusers classes "
            "and save it to DIR with save_pretrained; pass DIR as --model to any command. "
            "animatediff saves DIR/base (a tiny SD 1.x pipeline), DIR/base-sdxl (a tiny SDXL one), "
            "DIR/motion (a random "
            "MotionAdapter) and DIR/motion-identity (every motion proj_out zero: adds no motion)."
        ),
    )
    parser.add_argument(
        "family", choices=FAMILIES, metavar="FAMILY", help=f"one of: {', '.join(FAMILIES)}"
    )
    parser.add_argument("directory", type=Path, metavar="DIR", help="output directory")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the random weights (default 0)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from whichway.cli._options import check_out_dir, check_seed

    directory: Path = args.directory
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"{str(directory)!r} exists and is not a directory")
    if directory.is_dir() and any(directory.iterdir()):
        raise ValueError(
            f"directory {str(directory)!r} is not empty; choose a new or empty directory"
        )
    check_out_dir(directory)
    check_seed("--seed", args.seed)

    if args.family == "animatediff":
        from whichway.models.tiny_motion import build_tiny_animatediff

        path = build_tiny_animatediff(directory, seed=args.seed)
        print(f"saved a tiny SD 1.x pipeline and two MotionAdapters to {path}")
        print(
            f'try: whichway travel "a photo of a cat" "a photo of a dog" --model {path}/base '
            f"--motion {path}/motion --height 64 --width 64 --steps 4 --frames-per-segment 4 --context-length 4"
        )
        return 0
    from whichway.models.tiny import build_tiny_pipeline

    path = build_tiny_pipeline(args.family, directory, seed=args.seed)
    print(f"saved a tiny random {args.family} pipeline to {path}")
    print(
        f'try: whichway morph "a photo of a cat" "a photo of a dog" --model {path} '
        "--height 64 --width 64 --steps 10 --frames 5"
    )
    return 0
