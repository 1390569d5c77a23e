"""Check a study run directory: which units are recorded, which files are damaged or missing.

``whichway study prompts|latents verify RUN_DIR`` prints :func:`verify_run`'s report. It only
reads: damaged files are named, not moved (running the study again moves them to
``results/damaged/`` and computes their units again). Every results file is checked against the
SHA-256 recorded for it (in ``manifest.json``, else in its name), then read; the latent study's
cached latents are checked against the SHA-256 in their safetensors header.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from whichway.studies.store import DAMAGED_DIR, FILES_KEY, RESULTS_DIR, DamagedFile


@dataclass(frozen=True)
class VerifyReport:
    """What :func:`verify_run` found in a run directory.

    units_expected : units of the run's config (manifest.json), None when not recorded
    units_recorded : units recorded in readable results files
    files : readable results files whose checksum matches; unchecked : readable files with no
        checksum recorded anywhere (written by an older whichway; only read)
    damaged : results files in ``results/`` that fail the checks (their units are not counted)
    missing_files : results files manifest.json records that are not on disk
    set_aside : files in ``results/damaged/`` and ``latents/**/damaged/`` (set aside earlier)
    latents_damaged : (path, reason) of cached latents that fail their checks (latent study)
    latents_missing : recorded inversions whose cached latent is absent (recomputed only if needed,
        so this alone does not make a run incomplete)
    """

    run_dir: Path
    study: str
    status: str
    units_expected: int | None
    units_recorded: int
    files: tuple[str, ...]
    unchecked: tuple[str, ...]
    damaged: tuple[DamagedFile, ...]
    missing_files: tuple[str, ...]
    set_aside: tuple[str, ...]
    latents_damaged: tuple[tuple[str, str], ...] = ()
    latents_missing: int = 0

    @property
    def units_missing(self) -> int | None:
        return (
            None
            if self.units_expected is None
            else max(0, self.units_expected - self.units_recorded)
        )

    @property
    def complete(self) -> bool:
        """Every unit recorded in readable files, and no damaged or missing file."""
        return (
            self.units_missing == 0
            and not self.damaged
            and not self.missing_files
            and not self.latents_damaged
        )


def verify_run(run_dir: str | Path, study: str | None = None) -> VerifyReport:
    """Check every results file (and cached latent) of a run directory; see :class:`VerifyReport`.

    study : "prompts" | "latents" to insist on the run's study (ValueError otherwise)
    Raises ValueError when ``run_dir`` is not a study run directory.
    """
    from whichway.studies.latent_study import STUDY as LATENTS
    from whichway.studies.latent_study import latent_cache_path
    from whichway.studies.store import _NAME_RE, ResultStore

    run_dir = Path(run_dir)
    store = ResultStore(run_dir, lock=False, warn=False)
    manifest = store.read_manifest()
    kind = str(manifest.get("study", "?"))
    if study is not None and kind != study:
        raise ValueError(f"{str(run_dir)!r} holds a {kind!r} study, not a {study!r} study")
    live = store.files()
    damaged = store.damaged
    recorded_files = dict(manifest.get(FILES_KEY) or {})
    scan = store._scan()
    on_disk = {p.name for p in (run_dir / RESULTS_DIR).glob("*.parquet")}
    missing = tuple(
        sorted(n for n in recorded_files if n not in on_disk and n not in scan.superseded)
    )
    unchecked = tuple(n for n in live if n not in recorded_files and not _NAME_RE.match(n))
    aside = sorted(
        str(p.relative_to(run_dir))
        for p in (run_dir / RESULTS_DIR / DAMAGED_DIR).glob("*")
        if p.is_file()
    )
    units = store.completed()
    lat_bad: list[tuple[str, str]] = []
    lat_missing = 0
    if kind == LATENTS:
        from whichway.studies.executors import DamagedTensorError, load_tensor

        root = run_dir / "latents"
        for p in sorted(root.rglob("*.safetensors")) if root.is_dir() else []:
            rel = p.relative_to(run_dir)
            if DAMAGED_DIR in rel.parts:
                aside.append(str(rel))
                continue
            try:
                load_tensor(p)
            except DamagedTensorError as exc:
                lat_bad.append((str(rel), str(exc)))
        if live:
            df = store.read(["kind", "class_name", "members"])
            inv = df[df["kind"] == "inversion"]
            for cls, name in zip(inv["class_name"], inv["members"]):
                if not (run_dir / latent_cache_path(cls, name)).is_file():
                    lat_missing += 1
    expected = manifest.get("units")
    return VerifyReport(
        run_dir=run_dir,
        study=kind,
        status=str(manifest.get("status", "?")),
        units_expected=int(expected) if isinstance(expected, int) else None,
        units_recorded=len(units),
        files=tuple(n for n in live if n not in unchecked),
        unchecked=unchecked,
        damaged=tuple(damaged),
        missing_files=missing,
        set_aside=tuple(aside),
        latents_damaged=tuple(lat_bad),
        latents_missing=lat_missing,
    )


def format_report(r: VerifyReport) -> str:
    """The lines ``whichway study ... verify`` prints."""
    exp = "?" if r.units_expected is None else str(r.units_expected)
    miss = "?" if r.units_missing is None else str(r.units_missing)
    lines = [
        f"{r.study} study run {r.run_dir}: {'complete' if r.complete else 'INCOMPLETE'} (manifest status: {r.status})",
        f"units: {exp} expected, {r.units_recorded} recorded, {miss} missing",
        (
            f"results files: {len(r.files) + len(r.unchecked)} readable, {len(r.damaged)} damaged, "
            f"{len(r.missing_files)} missing"
        ),
    ]
    lines += [f"  ok: {RESULTS_DIR}/{n}" for n in r.files]
    lines += [f"  ok (no checksum recorded, read only): {RESULTS_DIR}/{n}" for n in r.unchecked]
    for d in r.damaged:
        held = "units unknown" if d.units is None else f"{d.units} unit(s) not recorded elsewhere"
        lines.append(f"  damaged: {RESULTS_DIR}/{d.name}: {d.reason} ({held})")
    lines += [
        f"  missing: {RESULTS_DIR}/{n} (recorded in manifest.json, not on disk)"
        for n in r.missing_files
    ]
    if r.study == "latents":
        lines.append(
            f"cached latents: {len(r.latents_damaged)} damaged, {r.latents_missing} absent "
            "(absent ones are computed again only when needed)"
        )
        lines += [f"  damaged: {p}: {why}" for p, why in r.latents_damaged]
    if r.set_aside:
        lines.append(
            f"set aside earlier ({len(r.set_aside)}, kept for inspection; what they held was computed again):"
        )
        lines += [f"  {p}" for p in r.set_aside]
    if not r.complete:
        lines.append(
            f"to complete it, run the study again with the same config and --out {r.run_dir}: it sets "
            "damaged files aside and computes the missing units"
        )
    return "\n".join(lines)
