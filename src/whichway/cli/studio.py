"""``whichway studio``: the local web app (Morph, Compare, Coupling, Runs tabs)."""

from __future__ import annotations

import argparse
import ipaddress
import logging

from whichway.cli._options import add_model_options, check_out_dir, runtime_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "studio",
        help="local web app: morphs, coupling comparisons and the token matching in a browser",
        description=(
            "Serve the whichway studio, a web page over morph, compare and the token matching of the OT "
            "coupling. The model is loaded once and reused (another one can be chosen in the page); runs "
            "are written under --out exactly as `whichway morph` writes them. Binds 127.0.0.1: from "
            "another machine use an SSH tunnel (ssh -L 7860:127.0.0.1:7860 host) rather than --host 0.0.0.0."
        ),
    )
    add_model_options(p, model_default=None)
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument(
        "--out", default="runs", help="run folder: runs started in the page go here (default runs/)"
    )
    p.add_argument(
        "--share", action="store_true", help="also open a public gradio.live link (off by default)"
    )
    p.add_argument(
        "--lpips-random-backbone",
        action="store_true",
        help="LPIPS with a random backbone for Compare's PPL (offline demos only: values not comparable)",
    )
    from whichway.studio.limits import (
        DEFAULT_MAX_FRAMES,
        DEFAULT_MAX_PIXELS,
        DEFAULT_MAX_SECONDS,
        DEFAULT_MAX_STEPS,
    )

    limits = p.add_argument_group("limits per job (checked before a job is queued)")
    limits.add_argument(
        "--max-frames",
        type=int,
        default=DEFAULT_MAX_FRAMES,
        help=f"frames of one morph, travel or comparison (default {DEFAULT_MAX_FRAMES:,})",
    )
    limits.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help=f"height x width of one frame (default {DEFAULT_MAX_PIXELS:,} = 2048x2048)",
    )
    limits.add_argument(
        "--max-steps",
        type=int,
        default=DEFAULT_MAX_STEPS,
        help=f"denoising, inversion or DiffMorpher LoRA fit steps (default {DEFAULT_MAX_STEPS})",
    )
    limits.add_argument(
        "--max-seconds",
        type=float,
        default=DEFAULT_MAX_SECONDS,
        help=f"length of a travel's video (default {DEFAULT_MAX_SECONDS:g} s)",
    )
    p.set_defaults(func=run)


def limits_of(args: argparse.Namespace):
    """The :class:`whichway.studio.limits.Limits` of --max-frames/--max-pixels/--max-steps/
    --max-seconds (ValueError, one line, when one is not positive)."""
    from whichway.studio.limits import Limits

    return Limits(
        max_frames=args.max_frames,
        max_pixels=args.max_pixels,
        max_steps=args.max_steps,
        max_seconds=args.max_seconds,
    )


def check_args(args: argparse.Namespace) -> None:
    """Everything checkable before gradio or a model is imported (ValueError, one line)."""

    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be in 1..65535, got {args.port}")
    if not args.host.strip():
        raise ValueError("--host must not be empty (use 127.0.0.1)")
    check_out_dir(args.out)
    if args.model is not None and not args.model.strip():
        raise ValueError("--model must not be empty")
    limits_of(args)


def run(args: argparse.Namespace) -> int:
    import os

    from whichway.cli import CLIError

    check_args(args)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # a local tool does not phone home
    try:
        import gradio  # noqa: F401
    except ImportError as exc:
        raise CLIError(
            f"the studio needs the ui extra ({exc.name}): pip install 'whichway[ui]'"
        ) from None
    try:
        public = not ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        public = args.host != "localhost"
    if public:
        logging.getLogger(__name__).warning(
            "binding %s: anyone who can reach this machine can use the studio and read its runs; an SSH "
            "tunnel to 127.0.0.1 is safer",
            args.host,
        )
    from whichway.studio import Studio, launch

    studio = Studio(
        args.out,
        args.model,
        device=args.device,
        dtype=args.dtype,
        variant=args.variant,
        runtime=runtime_options(args),
        lpips_random_backbone=args.lpips_random_backbone,
        limits=limits_of(args),
        weighting=args.weighting,
        long_prompts=args.long_prompts,
    )
    if args.model:
        studio.adapter()  # load once, up front: a bad model is reported before the page opens
    print(
        f"whichway studio on http://{args.host}:{args.port} (runs in {studio.out_dir}); Ctrl+C stops it"
    )
    print(
        f"  {studio.limits.describe()} Change them with --max-frames, --max-pixels, --max-steps, --max-seconds."
    )
    launch(studio, host=args.host, port=args.port, share=args.share)
    return 0
