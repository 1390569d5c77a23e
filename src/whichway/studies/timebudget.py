"""A study run's time budget (``run.max_hours`` / ``--max-hours``): the work a config asks for,
and a projection of the time still needed from the units' recorded timings.

The figure is the count of denoiser calls, from the config alone (an upper bound: a similarity
group or class with fewer items than asked for runs fewer)::

    prompts: pairs x frames per pair x render.steps x c(render.guidance)
             frames per pair = 2 + (couplings + methods) x (T - 2)  with shared end frames
                             = (couplings + methods) x T             without
             (methods: AID / PAID); with diffmorpher, per pair also
             T x render.steps x c(diffmorpher.guidance) + 2 x render.steps (the inversions)
             + round(2 x diffmorpher.lora_steps x LORA_STEP_ROWS) (a LoRA step: forward and
             backward, 2.2 denoiser calls)
    latents: images x inversion.steps x c(inversion.guidance)
             + (paths x methods x interior + centroids x methods) x render.steps x c(render.guidance)

with c(g) = 2 under classifier-free guidance (g > 1), else 1. The projection of a run is
``units left x median seconds per unit / workers``; see :class:`TimeBudget`.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from whichway.attention.methods import LORA_STEP_ROWS


class StudyOverBudget(ValueError):
    """The units still to run need more time than the run's budget (one line, with the figure)."""


@dataclass(frozen=True)
class StudyWork:
    """What a study config asks for: units (pairs, inversions, paths, centroids) and denoiser
    calls (upper bounds from the config)."""

    units: int
    denoiser_calls: int


def _cfg_rows(guidance: float) -> int:
    return 2 if guidance > 1 else 1


def _class_count(cfg: Any) -> int:
    root = Path(cfg.data.root)
    if cfg.data.classes:
        return len(cfg.data.classes)
    return sum(1 for d in root.iterdir() if d.is_dir()) if root.is_dir() else 0


def study_work(study: str, cfg: Any) -> StudyWork:
    """Units and denoiser calls of a study config (module docstring), no data or model loaded."""
    r = cfg.render
    if study == "prompts":
        from whichway.studies.pairs import group_labels

        p, s = cfg.pairs, cfg.study
        groups = len(group_labels(p.group_width, p.max_similarity)) if p.stratify else 1
        pairs = p.n_per_group * groups
        aid = [m for m in s.methods if m != "diffmorpher"]
        paths, T = len(s.couplings) + len(aid), len(r.t)
        frames = 2 + paths * (T - 2) if r.shared_endpoints else paths * T
        calls = frames * r.steps * _cfg_rows(r.guidance)
        if "diffmorpher" in s.methods:
            dm = cfg.diffmorpher
            fits = round(2 * dm.lora_steps * LORA_STEP_ROWS)
            calls += T * r.steps * _cfg_rows(dm.guidance) + 2 * r.steps + fits
        return StudyWork(pairs, pairs * calls)
    i, c = cfg.interpolation, cfg.centroids
    classes = _class_count(cfg)
    images = classes * cfg.data.images_per_class
    interp = classes * i.pairs_per_class if i.methods else 0
    centroids = classes * sum(c.groups) if c.methods else 0
    frames = interp * len(i.methods) * i.interior + centroids * len(c.methods)
    calls = images * cfg.inversion.steps * _cfg_rows(cfg.inversion.guidance)
    calls += frames * r.steps * _cfg_rows(r.guidance)
    return StudyWork(images + interp + centroids, calls)


def recorded_unit_seconds(store: Any) -> list[float]:
    """Seconds per finished unit recorded in a run's results (``unit_seconds``, or ``seconds``
    of a latent study's inversions), one value per unit."""
    df = store.read(columns=["unit_id", "unit_seconds", "seconds"])
    if df.empty:
        return []
    secs = df["unit_seconds"].where(df["unit_seconds"].notna(), df["seconds"])
    per_unit = secs.groupby(df["unit_id"]).first().dropna()
    return [float(v) for v in per_unit.tolist()]


def check_recorded(budget: TimeBudget | None, store: Any, left: int, workers: int = 1) -> bool:
    """Project ``left`` units from the timings ``store`` holds (before any unit runs, so before
    any model loads) and raise :class:`StudyOverBudget` when over ``budget``. Returns whether
    there were timings to project from (False: the run must project from its first units)."""
    if budget is None or left <= 0:
        return False
    history = recorded_unit_seconds(store)
    budget.check(left, history, workers)
    return bool(history)


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.0f} s"


@dataclass(frozen=True)
class TimeBudget:
    """A run's time limit and the work its config asks for.

    max_hours : the budget (> 0); work : :func:`study_work` of the config
    """

    max_hours: float
    work: StudyWork

    def check(self, left: int, seconds: Sequence[float], workers: int = 1) -> None:
        """Raise :class:`StudyOverBudget` when ``left`` units at the median of ``seconds`` per
        unit, spread over ``workers``, need more than ``max_hours``: ``left x median / workers``.
        No timings or nothing left: nothing to project, no error."""
        if not seconds or left <= 0:
            return
        per_unit = statistics.median(seconds)
        need = left * per_unit / max(1, workers)
        if need <= self.max_hours * 3600:
            return
        on = f", {workers} workers" if workers > 1 else ""
        raise StudyOverBudget(
            f"study needs ~{_duration(need)} for {left} units left ({per_unit:.3g} s per unit, "
            f"median of {len(seconds)} done{on}; the config asks for {self.work.units} units, "
            f"{self.work.denoiser_calls:,} denoiser calls); --max-hours {self.max_hours:g}"
        )


def time_budget(study: str, cfg: Any) -> TimeBudget | None:
    """The budget of a study config's ``run.max_hours`` (None when it is 0: no time limit)."""
    if cfg.run.max_hours <= 0:
        return None
    return TimeBudget(cfg.run.max_hours, study_work(study, cfg))
