"""``whichway study``: paper-scale prompt-pair and latent studies (run, resume, verify, report)."""

from __future__ import annotations

import argparse
from pathlib import Path

from whichway.cli._options import check_out_dir, check_out_file

STUDIES = ("prompts", "latents")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "study",
        help="run the papers' studies at scale (resumable, local or Ray) and report them",
        description=(
            "Paper A's prompt-pair study (OT vs CLIP vs random couplings over Crisscrossed Captions "
            "pairs) and paper B's latent study (COG vs LERP/SLERP/NAO interpolation and centroid "
            "baselines on inverted images). A run writes Parquet results into its run directory; "
            "running the same command again resumes it. Configs are TOML files (`init` writes the "
            "defaults); override any setting with --set section.key=value."
        ),
    )
    studies = p.add_subparsers(dest="study", metavar="STUDY", required=True)
    for study in STUDIES:
        sp = studies.add_parser(
            study,
            help=f"the {study} study",
            description=f"Run, resume, verify or report the {study} study.",
        )
        actions = sp.add_subparsers(dest="action", metavar="ACTION", required=True)

        run = actions.add_parser("run", help="run or resume a study from a config file")
        run.add_argument("config", metavar="CONFIG", help="study config (TOML); `init` writes one")
        run.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a setting, e.g. --set render.steps=20 --set pairs.n_per_group=10",
        )
        run.add_argument(
            "--executor",
            choices=("local", "ray"),
            default=None,
            help="local (in-process, default) or ray (one model per actor)",
        )
        run.add_argument(
            "--address", default=None, help="Ray cluster address (default: start a local Ray)"
        )
        run.add_argument(
            "--workers",
            type=int,
            default=None,
            help="Ray actors (default: one per GPU, or 1 without GPUs)",
        )
        run.add_argument(
            "--out",
            default=None,
            metavar="RUN_DIR",
            help="run directory (default: ./study-<study>-<config name>)",
        )
        run.add_argument(
            "--max-hours",
            type=float,
            default=None,
            metavar="H",
            help=(
                "time budget (overrides run.max_hours; 0 = none): refused before any model loads "
                "when the finished units' timings project more, else stopped after the first "
                "units (finished units are kept; run again to resume)"
            ),
        )
        run.add_argument("--no-progress", action="store_true", help="no progress bar")
        run.add_argument(
            "--no-report", action="store_true", help="do not write the report at the end"
        )
        run.set_defaults(func=_run)

        rep = actions.add_parser("report", help="write the Markdown/CSV/PNG report of a run")
        rep.add_argument("run_dir", metavar="RUN_DIR")
        rep.set_defaults(func=_report)

        ver = actions.add_parser(
            "verify",
            help="check a run's results files: complete, missing and damaged units",
            description=(
                "Read every results file of a run directory and check it against its recorded "
                "SHA-256 (and the cached latents of a latent study). Prints what is complete, "
                "missing and damaged; exits 0 only when the run is complete, 1 otherwise. "
                "Only reads: running the study again sets damaged files aside and "
                "computes their units again."
            ),
        )
        ver.add_argument("run_dir", metavar="RUN_DIR")
        ver.set_defaults(func=_verify)

        init = actions.add_parser("init", help="write a config file with every default setting")
        init.add_argument("config", metavar="CONFIG", help="path of the TOML file to write")
        init.add_argument(
            "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE"
        )
        init.add_argument("--force", action="store_true", help="overwrite an existing file")
        init.set_defaults(func=_init)


def _resolve_paths(cfg, base: Path):
    """Data paths in a config are relative to the config file's folder."""
    import dataclasses

    def fix(p: str) -> str:
        if not p:
            return p
        q = Path(p).expanduser()
        return str(q if q.is_absolute() else (base / q).resolve())

    model = cfg.model
    local = base / model.id
    if model.id and not Path(model.id).is_absolute() and local.exists():
        model = dataclasses.replace(model, id=str(local.resolve()))
    cfg = dataclasses.replace(cfg, model=model)
    if hasattr(cfg, "pairs"):
        pc = cfg.pairs
        cfg = dataclasses.replace(
            cfg,
            pairs=dataclasses.replace(
                pc,
                sts=tuple(fix(s) for s in pc.sts),
                coco=tuple(fix(s) for s in pc.coco),
                file=fix(pc.file),
            ),
        )
    if hasattr(cfg, "data"):
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=fix(cfg.data.root)))
    return cfg


def _run(args: argparse.Namespace) -> int:
    import dataclasses

    from whichway.cli import CLIError
    from whichway.studies.config import load_config
    from whichway.studies.store import RunLockedError

    path = Path(args.config)
    if not path.is_file():
        raise CLIError(
            f"config file {str(path)!r} not found; write one with `whichway study {args.study} init {path}`"
        )
    overrides = list(args.overrides)
    if args.executor:
        overrides.append(f'run.executor="{args.executor}"')
    if args.address:
        overrides.append(f'run.address="{args.address}"')
    if args.workers is not None:
        overrides.append(f"run.workers={args.workers}")
    if args.max_hours is not None:
        if not args.max_hours >= 0 or args.max_hours == float("inf"):
            raise CLIError(f"--max-hours must be a number of hours >= 0, got {args.max_hours}")
        overrides.append(f"run.max_hours={args.max_hours!r}")
    cfg = load_config(args.study, path, overrides)
    cfg = _resolve_paths(cfg, path.parent.resolve())
    if args.no_progress:
        cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, progress=False))
    out = check_out_dir(args.out or f"study-{args.study}-{path.stem}")
    _check_config(cfg)
    _check_size(args.study, cfg, out)
    try:
        if args.study == "prompts":
            from whichway.studies.prompt_study import run_prompt_study

            res = run_prompt_study(cfg, out)
        else:
            from whichway.studies.latent_study import run_latent_study

            res = run_latent_study(cfg, out)
    except RunLockedError as exc:
        raise CLIError(str(exc)) from exc
    print(
        f"{args.study} study: {res.units} units, {res.ran} run now, {res.skipped} already done "
        f"({res.seconds:.1f} s) -> {out}"
    )
    if not args.no_report:
        md = _write_report(args.study, out)
        print(f"report: {md}")
    return 0


def _check_config(cfg) -> None:
    """What a study config asks for that can be checked before any data or model is loaded:
    image sizes, and that the pair files exist (paths already resolved). Missing settings and the
    latent study's image folders are checked by the studies before any model is loaded."""
    from whichway.cli._options import check_input_file, check_size

    check_size("render.height", cfg.render.height or None)
    check_size("render.width", cfg.render.width or None)
    if hasattr(cfg, "pairs"):
        from whichway.studies.config import check_prompt_methods

        check_prompt_methods(cfg)
        files = [*cfg.pairs.sts, *cfg.pairs.coco] if cfg.pairs.source == "cxc" else [cfg.pairs.file]
        for name in files:
            if name:
                check_input_file(name, "pairs file")


def _check_size(study: str, cfg, out: Path) -> None:
    """Refuse a study whose images cannot fit the disk under ``out``, whose one unit cannot fit
    the memory, or whose steps exceed the scheduler's, before any data or model is loaded
    (:func:`whichway.budget.check_request`; figures are upper bounds from the config: a group or
    class with fewer items than asked for writes less)."""
    from whichway.budget import PNG_BYTES_PER_PIXEL, check_request, thumbnail_pixels

    r = cfg.render
    common = {
        "model": cfg.model.id,
        "device": cfg.model.device or None,
        "steps": r.steps,
        "guidance": r.guidance,
        "height": r.height or None,
        "width": r.width or None,
        "batch_size": r.batch_size,
        "out": out,
        "steps_name": "render.steps",
    }
    if study == "prompts":
        from whichway.studies.pairs import group_labels

        p, s = cfg.pairs, cfg.study
        groups = len(group_labels(p.group_width, p.max_similarity)) if p.stratify else 1
        paths = p.n_per_group * groups * (len(s.couplings) + len(s.methods))
        frames = len(r.t)

        def disk(height: int, width: int) -> int:  # per path: its frames and/or its strip
            png = frames * (height * width if s.save_frames else 0)
            strip = frames * thumbnail_pixels(height, width) if s.save_strips else 0
            return int((png + strip) * PNG_BYTES_PER_PIXEL)

        check_request(
            f"pairs.n_per_group {p.n_per_group} x {groups} groups x {len(s.couplings)} couplings"
            + (f" + {len(s.methods)} methods" if s.methods else "")
            + f" ({frames} frames each)",
            paths,
            disk_per_frame=disk,
            **common,
        )
        return
    from whichway.budget import check_steps, model_facts

    check_steps("inversion.steps", cfg.inversion.steps, model_facts(cfg.model.id))
    i, c = cfg.interpolation, cfg.centroids
    root = Path(cfg.data.root)
    classes = len(cfg.data.classes) or (
        sum(1 for d in root.iterdir() if d.is_dir()) if root.is_dir() else 0
    )
    images = classes * (
        i.pairs_per_class * len(i.methods) * i.interior + sum(c.groups) * len(c.methods)
    )
    check_request(
        f"{classes} classes x ({i.pairs_per_class} pairs x {len(i.methods)} methods x "
        f"{i.interior} points + {sum(c.groups)} centroids x {len(c.methods)} methods)",
        images,
        **common,
    )


def _write_report(study: str, run_dir: Path) -> Path:
    from whichway.studies.report import latent_report, prompt_report

    return prompt_report(run_dir) if study == "prompts" else latent_report(run_dir)


def _report(args: argparse.Namespace) -> int:
    from whichway.cli import CLIError

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise CLIError(f"run directory {str(run_dir)!r} not found")
    check_out_dir(run_dir)  # the report is written into it
    print(f"report: {_write_report(args.study, run_dir)}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from whichway.cli import CLIError

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise CLIError(f"run directory {str(run_dir)!r} not found")
    from whichway.studies.verify import format_report, verify_run

    report = verify_run(run_dir, args.study)
    print(format_report(report))
    return 0 if report.complete else 1


def _init(args: argparse.Namespace) -> int:
    from whichway.cli import CLIError
    from whichway.studies.config import load_config, write_config

    path = Path(args.config)
    if path.exists() and not args.force:
        raise CLIError(f"{str(path)!r} exists; pass --force to overwrite it")
    check_out_file(path, (".toml",))
    write_config(load_config(args.study, None, args.overrides), path)
    print(f"wrote {path}")
    return 0
