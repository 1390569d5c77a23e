"""``whichway morph``: frames, contact strip and animation of the path from prompt A to B."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from whichway.cli._options import (
    add_generation_options,
    add_model_options,
    add_output_options,
    add_path_options,
    load_model,
    parse_floats,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "morph",
        help="morph from prompt A to prompt B along the optimal-transport path",
        description=(
            "Render the path from prompt A to prompt B. The token embeddings of the two prompts are "
            "point clouds; --coupling ot follows the Wasserstein geodesic between them (clip = row "
            "order, random = a random pairing). Writes frames/, strip.png, morph.<format> and run.json "
            "into --out; re-running the same command resumes."
        ),
    )
    p.add_argument("prompt_a", metavar="PROMPT_A")
    p.add_argument("prompt_b", metavar="PROMPT_B")
    add_model_options(p)
    path = add_path_options(p)
    when = path.add_mutually_exclusive_group()
    when.add_argument("--frames", type=int, default=11, help="number of equally spaced frames (default 11)")
    when.add_argument("--t", type=parse_floats, default=None, help="explicit times, e.g. 0,0.1,0.5,1")
    path.add_argument(
        "--spacing",
        default="uniform",
        choices=("uniform", "perceptual"),
        help="perceptual: render a coarse pass and re-space t so consecutive frames are equally far "
        "apart in LPIPS (needs the metrics extra)",
    )
    path.add_argument("--seed-b", type=int, default=None, help="second seed for --latent paths (default seed+1)")
    gen = add_generation_options(p)
    gen.add_argument("--image-a", default=None, help="real image for prompt A (inverted; latents combined with COG)")
    gen.add_argument("--image-b", default=None, help="real image for prompt B")
    gen.add_argument(
        "--inversion-steps", type=int, default=None,
        help="inversion steps for --image-a/--image-b (default: --steps, needed for exact end frames)",
    )
    gen.add_argument(
        "--inversion-guidance", type=float, default=1.0,
        help="guidance while inverting (default 1.0; the end frames reproduce the images when "
        "--guidance equals it)",
    )
    add_output_options(p, out_help="run directory (default runs/<prompt-a>--<prompt-b>--<coupling>)")
    p.set_defaults(func=run)


def _slug(text: str, limit: int = 32) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit] or "prompt"


def run(args: argparse.Namespace) -> int:
    from whichway.morph import MorphSettings, run_morph, uniform_times

    ts = args.t if args.t is not None else uniform_times(args.frames)
    settings = MorphSettings(
        prompt_a=args.prompt_a,
        prompt_b=args.prompt_b,
        t=tuple(ts),
        coupling=args.coupling,
        latent=args.latent,
        seed=args.seed,
        seed_b=args.seed_b,
        steps=args.steps,
        guidance=args.guidance,
        height=args.height,
        width=args.width,
        negative_prompt=args.negative_prompt,
        image_a=args.image_a,
        image_b=args.image_b,
        inversion_steps=args.inversion_steps,
        inversion_guidance=args.inversion_guidance,
        batch_size=args.batch_size,
        format=None if args.format == "none" else args.format,
        pingpong=args.pingpong,
        fps=args.fps,
        spacing=args.spacing,
    )
    out = Path(args.out or f"runs/{_slug(args.prompt_a)}--{_slug(args.prompt_b)}--{args.coupling}")
    adapter = load_model(args)
    meter = _lpips_meter(args, needed=args.spacing == "perceptual")
    result = run_morph(adapter, settings, out, progress=not args.quiet, meter=meter)
    print(f"{len(result.frames)} frames in {result.run_dir}/frames ({result.rendered} rendered now)")
    for c in result.couplings:
        print(
            f"  token group {c['group']}: {c['method']} coupling cost {c['cost']:.4g}, "
            f"W2 path length {c['w2_path_length']:.4g}"
        )
    print(f"  strip: {result.strip}")
    if result.animation is not None:
        print(f"  animation: {result.animation}")
    if meter is not None and not args.no_score:
        from whichway.metrics import score_run

        m = score_run(result.run_dir, meter=meter)
        print(
            f"  LPIPS ({m['lpips']['net']}): PPL {m['ppl']:.4f}, smoothness {m['smoothness']:.3f}, "
            f"max step {m['max_step']:.4f} (stored in run.json)"
        )
    return 0


def _lpips_meter(args: argparse.Namespace, *, needed: bool, what: str = "--spacing perceptual"):
    """The LPIPS model for perceptual spacing and the end-of-run score, loaded once.

    Missing extras or weights are an error when perceptual spacing needs them, and a logged
    note (the run itself is fine) when only the summary would use them."""
    import logging

    from whichway.cli import CLIError

    if args.no_score and not needed:
        return None
    try:
        from whichway.metrics import LPIPSPath

        return LPIPSPath("alex", pretrained_backbone=not args.lpips_random_backbone)
    except ImportError as exc:
        reason = f"the metrics extra is not installed ({exc.name}); pip install 'whichway[metrics]'"
    except FileNotFoundError as exc:  # WeightsUnavailableError: says which file and where it goes
        reason = str(exc)
    if needed:
        raise CLIError(f"{what} needs LPIPS: {reason}")
    logging.getLogger("whichway.morph").warning("skipping the PPL summary: %s", reason)
    return None
