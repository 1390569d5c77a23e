"""``whichway check-invariance``: does a model's denoiser see the order of its text tokens?

Runs the denoiser on one latent and timestep with the prompt's token rows in order and randomly
permuted (every token group by its own seeded permutation) and prints the max absolute and
relative difference and a verdict (:func:`whichway.models.invariance.check_invariance`).
A non-invariant model is a finding, not an error: the command exits 0 either way.

The module's top level imports only the standard library.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from whichway.cli._options import (
    add_model_options,
    check_at_least,
    check_positive,
    check_seed,
    check_size,
    load_model,
)

DEFAULT_PROMPT = "a photo of an astronaut riding a horse on the moon"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "check-invariance",
        help="measure whether a model's denoiser is invariant to the order of its text tokens",
        description=(
            "One denoiser call with the prompt's token rows in order and one with them randomly "
            "permuted (per token group), on the same latent and timestep; prints the max absolute "
            "and relative difference, the text's own effect on the output, and the verdict."
        ),
    )
    add_model_options(parser)
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="prompt whose tokens are permuted")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the latent and the permutation"
    )
    parser.add_argument(
        "--timestep",
        type=float,
        default=None,
        help="denoiser timestep (default: half the training range)",
    )
    parser.add_argument(
        "--height", type=int, default=None, help="image height (default: the model's)"
    )
    parser.add_argument(
        "--width", type=int, default=None, help="image width (default: the model's)"
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="relative tolerance (default by dtype: 1e-4 float32)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=run)


def check_args(args: argparse.Namespace) -> None:
    """Every argument that needs no model."""
    check_size("--height", args.height)
    check_size("--width", args.width)
    check_seed("--seed", args.seed)
    check_at_least("--timestep", args.timestep, 0)
    check_positive("--tolerance", args.tolerance)


def run(args: argparse.Namespace) -> int:
    check_args(args)

    from whichway.models.invariance import check_invariance

    adapter = load_model(args)
    report = check_invariance(
        adapter,
        prompt=args.prompt,
        seed=args.seed,
        timestep=args.timestep,
        height=args.height,
        width=args.width,
        tolerance=args.tolerance,
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.summary())
    return 0
