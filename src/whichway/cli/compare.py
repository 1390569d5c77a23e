"""``whichway compare``: one prompt pair under several couplings and interpolation methods, side
by side, with each row's coupling cost, W2 path length, PPL and smoothness."""

from __future__ import annotations

import argparse
from pathlib import Path

from whichway._files import slug
from whichway.cli._options import (
    add_aid_options,
    add_diffmorpher_options,
    add_frames_options,
    add_generation_options,
    add_guide_prompt_option,
    add_image_options,
    add_model_options,
    add_motion_options,
    add_output_options,
    add_path_options,
    aid_settings,
    check_generation,
    check_input_image,
    check_out_dir,
    check_request,
    check_seed,
    check_t_values,
    diffmorpher_settings,
    load_model,
    local_model_family,
    print_run_estimate,
)

COUPLINGS = ("ot", "clip", "random")
"""Torch-free twin of :data:`whichway.clouds.COUPLING_METHODS`."""

LPIPS_MIN_SIDE = 32
"""Smallest frame side LPIPS takes (whichway.metrics.lpips_path.LPIPS_MIN_SIDE imports torch)."""


def parse_names(text: str) -> tuple[str, ...]:
    """'ot, clip' -> ('ot', 'clip') (argparse type; the names are checked by :func:`check_args`)."""
    return tuple(x.strip() for x in text.split(",") if x.strip())


def register(sub: argparse._SubParsersAction) -> None:
    from whichway.attention.methods import IMAGE_METHODS, METHODS

    methods = ", ".join((*METHODS[1:], *IMAGE_METHODS))
    p = sub.add_parser(
        "compare",
        help="one prompt pair with each coupling and method side by side, with PPL and smoothness",
        description=(
            "Render the path from prompt A to prompt B with each coupling of --couplings (same seed, "
            "shared end frames) and each attention method of --methods (on the OT path; diffmorpher "
            "between --image-a and --image-b, with its own end frames) and, with --motion, the lerp "
            "and OT paths as motion videos. Writes <row>.png strips, "
            "compare.png (every row), compare.csv and compare.json (cost, W2 path length, and PPL "
            "and smoothness when the LPIPS weights are available) into --out."
        ),
    )
    p.add_argument("prompt_a", metavar="PROMPT_A")
    p.add_argument("prompt_b", metavar="PROMPT_B")
    add_model_options(p)
    path = add_path_options(p, coupling=False, latent=False)
    add_frames_options(path, frames=5)
    path.add_argument(
        "--couplings",
        type=parse_names,
        default=COUPLINGS,
        help="token pairings to compare, comma-separated (default ot,clip,random)",
    )
    gen = add_generation_options(p)
    add_image_options(
        gen,
        help_a="diffmorpher: the image of prompt A",
        help_b="diffmorpher: the image of prompt B",
    )
    group = p.add_argument_group("methods (interpolation inside attention, on the OT path)")
    group.add_argument(
        "--methods",
        type=parse_names,
        default=(),
        help=f"further rows, comma-separated: {methods} (default none); AID and PAID act as "
        "--warmup-ratio, --aid-layers and --fused say (the official defaults unless given), paid "
        "needs --guide-prompt, diffmorpher --image-a and --image-b (its LoRA options below)",
    )
    add_aid_options(group)
    add_guide_prompt_option(group)
    add_diffmorpher_options(group)
    add_motion_options(p, journey=False)
    add_output_options(
        p, out_help="output folder (default runs/compare--<prompt-a>--<prompt-b>)", animation=False
    )
    p.set_defaults(func=run)


def check_args(args: argparse.Namespace) -> Path:
    """Every compare argument that needs no model, checked before anything heavy is imported or
    loaded: fills in ``args.diffmorpher`` and ``args.aid`` (warmup_ratio, aid_layers, fused) and
    returns the output folder."""
    from whichway.attention.methods import (
        IMAGE_METHODS,
        METHODS,
        check_family,
        check_image_method,
        check_warmup_ratio,
    )
    from whichway.prompts.syntax import check_no_negative_markers

    check_generation(args)
    check_no_negative_markers(("prompt A", args.prompt_a), ("prompt B", args.prompt_b))
    if not args.couplings:
        raise ValueError("--couplings needs at least one of ot, clip, random")
    for name, given, valid in (
        ("--couplings", args.couplings, COUPLINGS),
        ("--methods", args.methods, (*METHODS[1:], *IMAGE_METHODS)),
    ):
        for m in given:
            if m not in valid:
                raise ValueError(f"unknown {m!r} in {name}; choose from {', '.join(valid)}")
        if len(set(given)) != len(given):
            raise ValueError(f"{name} names a row twice: {','.join(given)}")
    methods = args.methods
    if "paid" in methods and not (args.guide_prompt or "").strip():
        raise ValueError("--methods paid needs --guide-prompt TEXT, the middle frames' prompt")
    if args.guide_prompt is not None and "paid" not in methods:
        raise ValueError(
            "--guide-prompt is PAID's prompt of the middle frames; add paid to --methods"
        )
    aid = any(m in METHODS[1:] for m in methods)
    args.aid = aid_settings(args, aid, "add aid-outer, aid-inner or paid to --methods")
    check_warmup_ratio(args.aid["warmup_ratio"])
    used = "diffmorpher" in methods
    args.diffmorpher = diffmorpher_settings(args, used, "add diffmorpher to --methods")
    images = (args.image_a, args.image_b)
    for m in methods:
        check_image_method(m, None not in images, listed=True)
    if not used and images != (None, None):
        raise ValueError(
            "--image-a/--image-b are DiffMorpher's images; add diffmorpher to --methods"
        )
    check_input_image(args.image_a, "--image-a")
    check_input_image(args.image_b, "--image-b")
    family = local_model_family(args)
    for m in methods:
        check_family(m, family, args.aid["aid_layers"], listed=True)
    if args.t is not None:
        check_t_values(args.t)
        if args.t[0] != 0 or args.t[-1] != 1:
            raise ValueError(
                f"--t must start at 0 and end at 1 (the end frames are shared), got "
                f"{','.join(f'{x:g}' for x in args.t)}"
            )
    elif args.frames < 2:
        raise ValueError(f"--frames must be >= 2, got {args.frames}")
    check_seed("--seed", args.seed)
    if args.motion is not None:  # the adapter's folder and its base's family, before any load
        from whichway.motion.adapter import check_motion_base, check_motion_source
        from whichway.motion.windows import check_context

        check_context(args.context_length, None)
        check_motion_base(args.model, check_motion_source(args.motion))
    elif args.context_length is not None:
        raise ValueError("--context-length sets the motion rows' windows; add --motion ADAPTER")
    out = check_out_dir(args.out or f"runs/compare--{slug(args.prompt_a)}--{slug(args.prompt_b)}")
    frames = len(args.t) if args.t is not None else args.frames
    rows = len(args.couplings) + len(methods) + (2 if args.motion is not None else 0)
    label = f"--t with {frames} values" if args.t is not None else f"--frames {frames}"
    # every row's frames are held in float32 for the strips and the PPL
    check_request(
        args,
        f"{label} x {rows} rows",
        frames * rows,
        out=out,
        held_per_frame=lambda h, w: 12 * h * w,
    )
    return out


def run(args: argparse.Namespace) -> int:
    import logging

    out = check_args(args)

    from whichway.cli.morph import summary_meter
    from whichway.compare import compare_couplings, save_comparison
    from whichway.morph import uniform_times

    ts = tuple(args.t) if args.t is not None else uniform_times(args.frames)
    adapter = load_model(args)
    meter = None if args.no_score else summary_meter(args)
    height = args.height or adapter.default_size[0]
    width = args.width or adapter.default_size[1]
    if meter is not None and min(height, width) < LPIPS_MIN_SIDE:
        logging.getLogger("whichway.compare").warning(
            "no PPL and smoothness: LPIPS needs frames of at least %d pixels, got %dx%d",
            LPIPS_MIN_SIDE,
            height,
            width,
        )
        meter = None
    used = "diffmorpher" in args.methods
    # the rows sharing their end frames render T - 2 frames each; diffmorpher and motion rows T
    T, shared = len(ts), len(args.couplings) + len(args.methods) - used
    frames = 2 + shared * (T - 2) + T * (used + (2 if args.motion is not None else 0))
    preparation = None  # DiffMorpher's LoRA fits and inversions that --out does not cache yet
    if used:
        from whichway.compare import diffmorpher_morph
        from whichway.morph import pending_preparation

        morph = diffmorpher_morph(
            args.prompt_a, args.prompt_b, ts, (args.image_a, args.image_b), args.diffmorpher,
            args.seed, steps=args.steps, guidance=args.guidance, height=args.height,
            width=args.width, negative_prompt=args.negative_prompt, batch_size=args.batch_size,
        )  # fmt: skip
        preparation = pending_preparation(adapter, morph, out)
    print_run_estimate(adapter, args, frames, preparation)
    result = compare_couplings(
        adapter,
        args.prompt_a,
        args.prompt_b,
        ts,
        methods=args.couplings,
        seed=args.seed,
        steps=args.steps,
        guidance=args.guidance,
        height=args.height,
        width=args.width,
        negative_prompt=args.negative_prompt,
        batch_size=args.batch_size,
        meter=meter,
        attention=args.methods,
        guide_prompt=args.guide_prompt,
        **(args.aid if any(m != "diffmorpher" for m in args.methods) else {}),
        image_a=args.image_a,
        image_b=args.image_b,
        diffmorpher=args.diffmorpher if used else None,
        cache=out if used else None,  # loras/ and latents/, as a morph's run folder
        motion=args.motion,
        context_length=args.context_length,
        progress=not args.quiet,
    )
    save_comparison(result, out, adapter)
    for row in result.summary():
        figures = f"cost {row['cost']:.4g}, W2 path length {row['w2_path_length']:.4g}"
        if row["ppl"] is not None:
            figures += f", PPL {row['ppl']:.4f}, smoothness {row['smoothness']:.3f}"
        print(f"  {row['coupling']}: {figures}")
    print(
        f"  {len(result.frames)} rows in {out}: compare.png, <row>.png, compare.csv, compare.json"
    )
    return 0
