"""``whichway travel``: a journey through many keyframes, paced evenly, perceptually or by music,
written as frames, a strip and an MP4 with its sound."""

from __future__ import annotations

import argparse
from pathlib import Path

from whichway._files import slug
from whichway.cli._options import (
    add_generation_options,
    add_method_options,
    add_model_options,
    add_motion_options,
    add_output_options,
    add_path_options,
    check_at_least,
    check_generation,
    check_out_dir,
    check_positive,
    check_request,
    load_model,
    local_model_family,
    parse_floats,
    parse_ints,
    print_run_estimate,
)
from whichway.travel.schedule import SCHEDULE_SETTINGS
from whichway.travel.settings import PACINGS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "travel",
        help="a journey through many keyframes, paced by music or perception, as MP4 with sound",
        description=(
            "Render a journey through two or more keyframes: prompts given on the command line, or a "
            "schedule file (.toml / .json: [[keyframe]] tables with prompt, seed, image, at or frame, and "
            "per-segment coupling / latent / method; or a Deforum-style [prompts] table keyed by frame). Each "
            "segment follows the optimal-transport path between its keyframes' prompts and a COG path "
            "between their seeds. Writes frames/, strip.png, travel.<format> (MP4 with the --audio track "
            "muxed in) and run.json into --out; re-running the same command renders only missing frames."
        ),
        epilog='example: whichway travel "a cat" "a dog" "a fox" --seeds 1,2,3 --seconds 12 --fps 24 '
        "--audio song.mp3 --audio-start 30 --pacing audio",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="PROMPT_OR_SCHEDULE",
        help="two or more prompts, or one schedule file (.toml or .json)",
    )
    add_model_options(p)
    path = add_path_options(p)
    path.add_argument(
        "--seeds",
        type=parse_ints,
        default=None,
        help="one seed per keyframe, e.g. 1,2,3 (default: --seed for every keyframe)",
    )
    path.add_argument(
        "--at",
        type=parse_floats,
        default=None,
        help="one time in seconds per keyframe, e.g. 0,4,12 (default: spread evenly)",
    )
    path.add_argument(
        "--pacing",
        default="uniform",
        choices=PACINGS,
        help="uniform: t grows evenly; perceptual: a coarse pass re-times every frame so consecutive frames "
        "are equally far apart in LPIPS over the whole video; audio: t moves with the --audio envelope",
    )
    path.add_argument(
        "--coarse",
        type=int,
        default=5,
        help="frames per segment of the perceptual coarse pass, keyframes included (default 5)",
    )
    gen = add_generation_options(p)
    gen.add_argument(
        "--inversion-steps",
        type=int,
        default=None,
        help="inversion steps for keyframe images (default: --steps)",
    )
    gen.add_argument(
        "--inversion-guidance",
        type=float,
        default=1.0,
        help="guidance while inverting keyframe images (default 1.0)",
    )
    add_motion_options(p)
    timing = p.add_argument_group("timing and music")
    length = timing.add_mutually_exclusive_group()
    length.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="video length (default: the last keyframe's time, or the --audio after --audio-start)",
    )
    length.add_argument(
        "--frames-per-segment", type=int, default=None, help="frames from one keyframe to the next"
    )
    timing.add_argument(
        "--audio",
        default=None,
        help="music (wav, flac, ogg, mp3): muxed into the MP4, drives --pacing audio",
    )
    timing.add_argument(
        "--audio-start",
        type=float,
        default=0.0,
        help="seconds into the track where the video starts",
    )
    timing.add_argument(
        "--audio-feature",
        default="onset",
        choices=("onset", "rms"),
        help="envelope that drives --pacing audio (default onset strength)",
    )
    timing.add_argument(
        "--audio-floor",
        type=float,
        default=0.1,
        help="smallest speed under --pacing audio, a fraction of the mean (default 0.1)",
    )
    timing.add_argument(
        "--snap-beats",
        action="store_true",
        help="move keyframes without a time to the nearest detected beat",
    )
    method = add_method_options(p)
    method.add_argument(
        "--methods",
        type=lambda text: tuple(x.strip() for x in text.split(",") if x.strip()),
        default=None,
        help="one method per segment, e.g. plain,aid-outer,paid for 4 keyframes (default: "
        "--method for every segment; a schedule sets method per keyframe instead); paid "
        "segments take --guide-prompt",
    )
    add_output_options(
        p,
        default_format="mp4",
        fps=24.0,
        pingpong=False,
        score=False,
        out_help="run directory (default runs/travel-<first prompt>--<last prompt>)",
    )
    p.set_defaults(latent="cog")
    defaults = {}
    for action in p._actions:
        if action.dest in SCHEDULE_SETTINGS:
            defaults[action.dest] = action.default
            action.default = None
    p.set_defaults(func=run, _travel_defaults=defaults)


def _is_schedule(inputs: list[str]) -> bool:
    return len(inputs) == 1 and Path(inputs[0]).suffix.lower() in (".toml", ".json")


def _length_label(options: dict, last_at: float | None) -> str:
    """The argument that sets the video's length, as the user wrote it."""
    if options["seconds"] is not None:
        return f"--seconds {options['seconds']:g} at --fps {options['fps']:g}"
    if options["frames_per_segment"] is not None:
        return f"--frames-per-segment {options['frames_per_segment']}"
    if last_at is not None:
        return f"the last keyframe at {last_at:g} s at --fps {options['fps']:g}"
    start = options.get("audio_start") or 0.0
    return f"the --audio track after --audio-start {start:g} s at --fps {options['fps']:g}"


def _check_length(
    args: argparse.Namespace, options: dict, keyframes: int, last_at: float | None, out: Path
) -> None:
    """Refuse a journey whose frames cannot fit the disk or memory (one line), before any
    keyframe is built or any array the size of the video is allocated."""
    from whichway.budget import travel_frame_count, travel_held_bytes

    check_positive("--seconds", options["seconds"])
    check_at_least("--frames-per-segment", options["frames_per_segment"], 1)
    n = travel_frame_count(
        keyframes,
        last_at,
        options["fps"],
        options["seconds"],
        options["frames_per_segment"],
        audio=options.get("audio"),
        audio_start=options.get("audio_start") or 0.0,
    )
    if n is None:  # the audio track sets the length, and its header does not say: after decoding
        return
    check_request(
        argparse.Namespace(**options, model=args.model, device=args.device),
        _length_label(options, last_at),
        n,
        out=out,
        held_per_frame=lambda h, w: travel_held_bytes(h, w, options["format"]),
    )


def _method_options(args: argparse.Namespace, options: dict, segment_methods: set[str]) -> None:
    """Fill in and check the attention-method settings (from the command line or the schedule
    file), before any model loads: AID's defaults where none is given; its options only when
    some segment (``options["method"]`` or one of ``segment_methods``, the per-segment
    overrides) uses an attention method."""
    from whichway.attention.methods import (
        DIFFMORPHER_KEYS,
        DiffMorpherSettings,
        aid_fields,
    )

    methods = {options["method"] or "plain", *segment_methods}
    lora = [f"--{n.replace('_', '-')}" for n in DIFFMORPHER_KEYS if options[n] is not None]
    if lora and "diffmorpher" not in methods:
        raise ValueError(
            f"{', '.join(lora)} set(s) how DiffMorpher acts; give a segment method diffmorpher "
            "(between two image keyframes)"
        )
    dm = DiffMorpherSettings()
    for name in DIFFMORPHER_KEYS:
        if options[name] is None:
            options[name] = getattr(dm, name)
    given = [n for n in ("warmup_ratio", "aid_layers", "fused") if options[n] is not None]
    options["method"] = options["method"] or "plain"
    if methods <= {"plain", "diffmorpher"} and given:
        flags = ", ".join(f"--{n.replace('_', '-')}" for n in given)
        raise ValueError(f"{flags} set(s) how AID acts; add --method aid-outer, aid-inner or paid")
    options.update(aid_fields(options["warmup_ratio"], options["aid_layers"], options["fused"]))


def build_settings(args: argparse.Namespace, out: Path | None = None):
    """TravelSettings from the parsed arguments (and the schedule file, if one is given); every
    check here needs no model. With ``out`` (where the run directory goes) the journey's size is
    checked against that disk and the memory first."""
    defaults = args._travel_defaults
    schedule = None
    if _is_schedule(args.inputs):
        from whichway.travel import read_schedule

        schedule = read_schedule(args.inputs[0])
    given = schedule.settings if schedule is not None else {}

    def value(name: str):
        v = getattr(args, name)
        if v is not None:
            return v
        return given.get(name, defaults[name])

    options = {name: value(name) for name in SCHEDULE_SETTINGS}
    if options["format"] == "none":
        options["format"] = None
    if schedule is not None:
        segment_methods = {
            e["method"] for e in schedule.entries if isinstance(e.get("method"), str)
        }
    else:
        segment_methods = set(args.methods or ())
    _method_options(args, options, segment_methods)
    check_generation(argparse.Namespace(**options))
    if schedule is not None:
        if args.seeds is not None or args.at is not None or args.methods is not None:
            raise ValueError(
                "--seeds, --at and --methods are for prompts on the command line; a schedule sets "
                "them per keyframe"
            )
        keyframes = schedule.keyframes(options["fps"])
        if len(keyframes) < 2:
            raise ValueError(
                f"a travel needs at least 2 keyframes, got {len(keyframes)} in {args.inputs[0]}"
            )
        if out is not None:
            _check_length(args, options, len(keyframes), keyframes[-1].at, out)
    else:
        prompts = args.inputs
        if len(prompts) < 2:
            raise ValueError(
                f"a travel needs at least 2 keyframes, got {len(prompts)} prompt; give two or more prompts "
                "or a schedule file (.toml / .json)"
            )
        for name, values in (("--seeds", args.seeds), ("--at", args.at)):
            if values is not None and len(values) != len(prompts):
                raise ValueError(
                    f"{name} gives {len(values)} values for {len(prompts)} prompts; give one per prompt"
                )
        if args.methods is not None and len(args.methods) != len(prompts) - 1:
            raise ValueError(
                f"--methods gives {len(args.methods)} methods for {len(prompts) - 1} segments "
                f"({len(prompts)} prompts); give one per segment"
            )
        for at in args.at or ():
            if not 0 <= at < float("inf"):
                raise ValueError(f"--at values must be seconds >= 0, got {at:g}")
        if out is not None:
            _check_length(
                args, options, len(prompts), None if args.at is None else args.at[-1], out
            )
        from whichway.travel import Keyframe

        keyframes = tuple(
            Keyframe(
                prompt,
                seed=None if args.seeds is None else args.seeds[k],
                at=None if args.at is None else args.at[k],
                method=None if args.methods is None or k == len(prompts) - 1 else args.methods[k],
            )
            for k, prompt in enumerate(prompts)
        )
    from whichway.travel import TravelSettings

    settings = TravelSettings(keyframes=keyframes, **options)
    # the model's family (a local folder's), a keyframe's own method named as its segment's
    settings.check_families(local_model_family(args))
    return settings


def run(args: argparse.Namespace) -> int:
    from whichway.cli.morph import lpips_meter
    from whichway.travel import prepare_travel, run_travel
    from whichway.travel.rendering import pending_preparation

    if args.out:
        check_out_dir(args.out)
    settings = build_settings(args, Path(args.out or "runs"))  # the disk the frames go to
    first, last = settings.keyframes[0].prompt, settings.keyframes[-1].prompt
    out = check_out_dir(args.out or f"runs/travel-{slug(first, 24)}--{slug(last, 24)}")
    prepared = prepare_travel(settings)  # images, audio, times: all before any model loads
    if prepared.motion is not None:
        from whichway.motion.adapter import check_motion_base

        check_motion_base(args.model, prepared.motion)  # the family, from local configs
    meter = None
    if settings.pacing == "perceptual":
        meter = lpips_meter(args, what="--pacing perceptual")
    adapter = load_model(args)
    print_run_estimate(
        adapter,
        argparse.Namespace(
            steps=settings.steps,
            guidance=settings.guidance,
            height=settings.height,
            width=settings.width,
            batch_size=settings.batch_size,
            quiet=args.quiet,
        ),
        prepared.n_frames,
        pending_preparation(adapter, settings, out),
    )
    result = run_travel(
        adapter, settings, out, progress=not args.quiet, meter=meter, prepared=prepared
    )
    plan = result.plan
    print(
        f"{plan.n_frames} frames ({plan.duration:.2f} s at {plan.fps:g} fps, {settings.pacing} pacing) in "
        f"{result.run_dir}/frames ({result.rendered} rendered now)"
    )
    for seg in result.segments:
        costs = ", ".join(
            f"group {c['group']}: {c['method']} cost {c['cost']:.4g}, W2 path {c['w2_path_length']:.4g}"
            for c in seg["couplings"]
        )
        print(
            f"  {seg['from']!r} -> {seg['to']!r} (frames {seg['frames'][0]}-{seg['frames'][1]}, "
            f"latent {seg['latent']}, method {seg['method']}): {costs}"
        )
    if result.spread is not None:
        print(
            f"  LPIPS step spread (max-min)/mean: {result.spread['before']:.3f} before, "
            f"{result.spread['after']:.3f} after perceptual pacing"
        )
    print(f"  strip: {result.strip}")
    if result.video is not None:
        sound = (
            f" with {settings.audio} from {settings.audio_start:g} s"
            if settings.audio and result.video.suffix == ".mp4"
            else ""
        )
        print(f"  video: {result.video}{sound}")
    return 0
