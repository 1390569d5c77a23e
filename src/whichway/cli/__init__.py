"""The ``whichway`` command.

Each sub-command lives in its own module of this package and exposes
``register(subparsers) -> None``; the module's top level imports only the standard library and
whichway's torch-free modules (``tests/test_imports.py`` checks it), so ``whichway --help`` is
instant. Heavy libraries (torch, diffusers, ray, lpips) are imported inside
the command functions.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# Sub-command modules, in the order they appear in --help.
_COMMANDS = (
    "morph",
    "travel",
    "compare",
    "grid",
    "invert",
    "check_invariance",
    "score",
    "study",
    "couple",
    "studio",
    "doctor",
    "tiny_model",
    "comfyui",
)


class CLIError(Exception):
    """An error whose message is meant for the user; printed without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    from whichway import __version__

    parser = argparse.ArgumentParser(
        prog="whichway",
        description=(
            "Geometry-aware interpolation for diffusion models: optimal-transport paths between "
            "prompts and Gaussian-faithful (COG) combinations of latents."
        ),
    )
    parser.add_argument("--version", action="version", version=f"whichway {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMANDS:
        try:
            module = importlib.import_module(f"whichway.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"whichway.cli.{name}":
                continue  # command not built yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        from whichway.cli._options import check_model_options, check_prompt_args

        # runtime flags against the model folder and the prompts' syntax, before any command
        # imports torch
        check_model_options(args)
        check_prompt_args(args)
        return int(args.func(args) or 0)
    except (CLIError, ValueError, OSError) as exc:
        # one line, whatever the exception carried (OSError: permissions, full disk, rescued output)
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"whichway {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished work is kept on disk", file=sys.stderr)
        return 130
    except RuntimeError as exc:  # torch.OutOfMemoryError is one: one line with what to try
        from whichway.models.memory import is_out_of_memory

        if not is_out_of_memory(exc):
            raise
        gist = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        model = getattr(args, "model", None) or "MODEL"
        print(
            f"whichway {args.command}: error: out of memory ({gist}); finished work is kept on disk. "
            f"`whichway doctor --model {model}` shows what fits: a smaller --batch-size or size, "
            "--offload model, --vae-tiling",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
