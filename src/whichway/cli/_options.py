"""Command-line options shared by the commands that load a model (standard library only)."""

from __future__ import annotations

import argparse
from typing import Any

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"


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


def parse_floats(text: str) -> tuple[float, ...]:
    """'0,0.25,1' -> (0.0, 0.25, 1.0), with an argparse-friendly error."""
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
