"""``whichway morph``: frames, contact strip and animation of the path from prompt A to B."""

from __future__ import annotations

import argparse
from pathlib import Path

from whichway._files import slug
from whichway.cli._options import (
    add_frames_options,
    add_generation_options,
    add_image_options,
    add_method_options,
    add_model_options,
    add_output_options,
    add_path_options,
    check_animation_format,
    check_at_least,
    check_generation,
    check_input_image,
    check_out_dir,
    check_request,
    check_seed,
    check_t_values,
    load_model,
    method_settings,
    print_run_estimate,
)

LPIPS_MIN_SIDE = 32
"""Smallest frame side the LPIPS backbones take (whichway.metrics.lpips_path.LPIPS_MIN_SIDE, which imports torch)."""


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
    add_frames_options(path, frames=11)
    path.add_argument(
        "--spacing",
        default="uniform",
        choices=("uniform", "perceptual", "beta", "beta-bo"),
        help="perceptual: render a coarse pass and re-space t so consecutive frames are equally far "
        "apart in LPIPS; beta: AID's Beta prior, 16 frames explored and the most evenly spaced "
        "kept; beta-bo: AID's Bayesian choice of the Beta prior, the frames at the Beta(a, b) "
        "quantiles whose LPIPS steps are the smoothest (see --beta-evaluations; all three need "
        "the metrics extra)",
    )
    path.add_argument(
        "--beta-evaluations",
        type=int,
        default=None,
        help="--spacing beta-bo: sequences the search scores, a 3x3 grid of (a, b) then Gaussian-"
        "process steps; it stops early at smoothness 0.9 (official: 24)",
    )
    path.add_argument(
        "--seed-b", type=int, default=None, help="second seed for --latent paths (default seed+1)"
    )
    gen = add_generation_options(p)
    add_image_options(gen, help_a="real image for prompt A (inverted; latents combined with COG)")
    gen.add_argument(
        "--inversion-steps",
        type=int,
        default=None,
        help="inversion steps for --image-a/--image-b (default: --steps, needed for exact end frames)",
    )
    gen.add_argument(
        "--inversion-guidance",
        type=float,
        default=1.0,
        help="guidance while inverting (default 1.0; the end frames reproduce the images when "
        "--guidance equals it)",
    )
    add_method_options(p)
    add_output_options(
        p, out_help="run directory (default runs/<prompt-a>--<prompt-b>--<coupling>)"
    )
    p.set_defaults(func=run)


def check_args(args: argparse.Namespace) -> Path:
    """Every morph argument that needs no model, checked before anything heavy is imported or
    loaded; returns the run directory."""
    check_generation(args)
    from whichway.prompts.syntax import check_no_negative_markers

    check_no_negative_markers(("prompt A", args.prompt_a), ("prompt B", args.prompt_b))
    args.method_settings = method_settings(args)
    if args.t is not None:
        check_t_values(args.t)
    elif args.frames < 2:
        raise ValueError(
            f"--frames must be >= 2 (a morph needs at least 2 frames), got {args.frames}"
        )
    check_seed("--seed", args.seed)
    check_seed("--seed-b", args.seed_b)
    check_animation_format(args.format)
    if (args.image_a is None) != (args.image_b is None):
        raise ValueError(
            "give both --image-a and --image-b (a real-image morph inverts both), or neither"
        )
    check_input_image(args.image_a, "--image-a")
    check_input_image(args.image_b, "--image-b")
    check_at_least("--inversion-steps", args.inversion_steps, 1)
    if args.spacing != "uniform":
        if args.latent == "nao":
            raise ValueError(
                f"{args.spacing} spacing moves t, but a NAO latent path is optimised for equally "
                f"spaced points; use --latent cog/slerp/lerp/fixed with --spacing {args.spacing}"
            )
        for name in ("height", "width"):
            value = getattr(args, name)
            if value is not None and value < LPIPS_MIN_SIDE:
                raise ValueError(
                    f"--spacing {args.spacing} measures frames with LPIPS, which needs --{name} >= "
                    f"{LPIPS_MIN_SIDE}, got {value}"
                )
    if args.beta_evaluations is not None and args.spacing != "beta-bo":
        raise ValueError(
            "--beta-evaluations sets the --spacing beta-bo search; add --spacing beta-bo"
        )
    if args.spacing == "beta-bo":
        from whichway.attention.methods import BO_EVALUATIONS
        from whichway.morph import check_beta_search

        if args.beta_evaluations is None:
            args.beta_evaluations = BO_EVALUATIONS
        check_beta_search(args.beta_evaluations, len(args.t) if args.t is not None else args.frames)
    method = "" if args.method == "plain" else f"--{args.method}"
    out = check_out_dir(
        args.out or f"runs/{slug(args.prompt_a)}--{slug(args.prompt_b)}--{args.coupling}{method}"
    )
    frames = len(args.t) if args.t is not None else args.frames
    label = f"--t with {frames} values" if args.t is not None else f"--frames {frames}"
    # an animation is encoded in memory: every frame is held at full size until it is written
    from whichway.budget import morph_held_bytes

    animated = args.format != "none"
    check_request(
        args, label, frames, out=out, held_per_frame=lambda h, w: morph_held_bytes(h, w, animated)
    )
    return out


def run(args: argparse.Namespace) -> int:
    out = check_args(args)

    from whichway.morph import MorphSettings, pending_preparation, run_morph, uniform_times

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
        **({} if args.beta_evaluations is None else {"beta_evaluations": args.beta_evaluations}),
        **args.method_settings,
    )
    # perceptual spacing cannot run without LPIPS: load it (and fail) before the model; the
    # end-of-run summary only builds its LPIPS once the frames are safely on disk
    meter = lpips_meter(args, f"--spacing {args.spacing}") if args.spacing != "uniform" else None
    adapter = load_model(args)
    print_run_estimate(adapter, args, len(ts), pending_preparation(adapter, settings, out))
    result = run_morph(adapter, settings, out, progress=not args.quiet, meter=meter)
    print(
        f"{len(result.frames)} frames in {result.run_dir}/frames ({result.rendered} rendered now)"
    )
    for c in result.couplings:
        print(
            f"  token group {c['group']}: {c['method']} coupling cost {c['cost']:.4g}, "
            f"W2 path length {c['w2_path_length']:.4g}"
        )
    print(f"  strip: {result.strip}")
    _print_timings(result.run_dir)
    if result.animation is not None:
        print(f"  animation: {result.animation}")
    if not args.no_score:
        _print_summary(args, result.run_dir, meter)
    return 0


def _print_timings(run_dir: Path) -> None:
    """The one-off compile time apart from the render time, when the denoiser was compiled."""
    import json

    try:
        timings = json.loads((run_dir / "run.json").read_text()).get("timings", {})
    except (OSError, ValueError):
        return
    if "compile_seconds" in timings:
        print(
            f"  time: torch.compile {timings['compile_seconds']:.1f} s (one-off), "
            f"rendering {timings['render_seconds']:.1f} s"
        )


def lpips_meter(args: argparse.Namespace, what: str = "--spacing perceptual"):
    """The LPIPS model that ``what`` needs (perceptual spacing or pacing): a CLIError when it
    cannot be loaded. Shared with ``whichway travel``."""
    from whichway.cli import CLIError

    try:
        from whichway.metrics import LPIPSPath

        return LPIPSPath("alex", pretrained_backbone=not args.lpips_random_backbone)
    except ImportError as exc:
        reason = f"the metrics extra is not installed ({exc.name}); pip install 'whichway[metrics]'"
    except FileNotFoundError as exc:  # WeightsUnavailableError: says which file and where it goes
        reason = str(exc)
    raise CLIError(f"{what} needs LPIPS: {reason}")


_NO_WEIGHTS = "morph-summary-lpips-weights-unavailable"
_NO_EXTRA = "morph-summary-metrics-extra-missing"


def summary_meter(args: argparse.Namespace):
    """LPIPS for the PPL summary, or None with at most one short note per machine (shared with
    ``whichway compare``).

    The summary is optional: without the metrics extra, or offline without cached backbone
    weights, the run is fine and the note is shown once (a marker under whichway's cache dir). After
    a failed download no further attempt is made while the weights are missing; `whichway score`
    (which always tries, and says how to provide the file) fetches them for later runs."""
    import logging

    from whichway._files import first_time, has_marker

    log = logging.getLogger("whichway.morph")
    try:
        from whichway.metrics.lpips_path import (
            LPIPSPath,
            backbone_weights_cached,
            backbone_weights_file,
        )

        if args.lpips_random_backbone:
            return LPIPSPath("alex", pretrained_backbone=False)
        if not backbone_weights_cached("alex") and has_marker(_NO_WEIGHTS):
            log.debug(
                "no PPL summary: LPIPS backbone weights not cached (a download failed before)"
            )
            return None
        return LPIPSPath("alex", pretrained_backbone=True)
    except ImportError as exc:
        if first_time(_NO_EXTRA):
            log.warning(
                "no PPL summary: the metrics extra is not installed (%s); pip install 'whichway[metrics]' "
                "(shown once)",
                exc.name,
            )
    except FileNotFoundError:  # WeightsUnavailableError: not cached, download failed
        if first_time(_NO_WEIGHTS):
            log.warning(
                "no PPL summary: LPIPS weights %s not cached and not downloadable; see `whichway score "
                "--help` (shown once)",
                backbone_weights_file("alex"),
            )
    return None


def _print_summary(args: argparse.Namespace, run_dir: Path, meter) -> None:
    import logging

    meter = meter if meter is not None else summary_meter(args)
    if meter is None:
        return
    from whichway.metrics import score_run

    try:
        m = score_run(run_dir, meter=meter)
    except ValueError as exc:  # e.g. frames below LPIPS's 32-pixel minimum: the run itself is fine
        logging.getLogger("whichway.morph").warning("no PPL summary: %s", exc)
        return
    print(
        f"  LPIPS ({m['lpips']['net']}): PPL {m['ppl']:.4f}, smoothness {m['smoothness']:.3f}, "
        f"max step {m['max_step']:.4f} (stored in run.json)"
    )
