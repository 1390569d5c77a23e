"""``run_travel``: the orchestration of a travel run, step by step (plan, render what is missing,
measure, write the strip, the video and ``run.json``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from whichway.travel import pacing
from whichway.travel.plan import Prepared, TravelPlan, perceptual_plan, prepare_travel
from whichway.travel.record import (
    PRESENTATION_KEYS,
    frame_name,
    frames_to_render,
    pixel_settings,
    remove_stale_frames,
    settings_record,
    stale_segments,
    start_record,
    write_strip,
    write_travel_video,
)
from whichway.travel.rendering import Journey, Renderer, render_into

if TYPE_CHECKING:  # pragma: no cover
    from whichway.models.base import Adapter
    from whichway.travel.settings import TravelSettings


@dataclass(frozen=True)
class TravelResult:
    """Where a travel's outputs are. ``rendered`` counts the frames rendered by this call
    (coarse pass included); ``spread`` holds the LPIPS step spreads under perceptual pacing."""

    run_dir: Path
    plan: TravelPlan
    frames: tuple[Path, ...]
    strip: Path
    video: Path | None
    segments: tuple[dict[str, Any], ...]
    rendered: int
    spread: dict[str, float] | None = None


def run_travel(
    adapter: Adapter,
    settings: TravelSettings,
    out_dir: str | os.PathLike[str],
    *,
    progress: bool = True,
    meter: Any = None,
    prepared: Prepared | None = None,
    on_frame: Callable[[int, Path], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TravelResult:
    """Render the journey of ``settings`` with ``adapter`` into ``out_dir``.

    Writes ``frames/00000.png ...`` (streamed as each batch finishes), ``strip.png`` (the
    keyframes and a sample of frames), ``travel.<format>`` (MP4 with the ``audio`` track cut from
    ``audio_start``; GIF / WebP without sound) and ``run.json`` (keyframes, settings, plan,
    per-segment coupling cost and W₂ path length per token group, audio SHA-256 and offsets,
    versions). Re-running keeps every frame whose pixel settings and position are unchanged.

    With ``settings.motion`` (a MotionAdapter folder or hub id, SD 1.x or SDXL) the frames are denoised
    together as one video over context windows (:mod:`whichway.travel.motion`); a rerun then
    keeps all frames or renders all of them again.

    ``meter`` measures LPIPS steps for perceptual pacing (a :class:`whichway.metrics.LPIPSPath`
    or a callable frames (T, 3, H, W) -> (T-1,); an AlexNet LPIPSPath by default).
    ``prepared`` is the result of :func:`prepare_travel` when the caller already ran it.

    Front ends follow a run with ``on_frame(index, png_path)`` after each frame is written and
    ``on_step(done, total)`` after each denoising step (over the whole run), and stop it with
    ``should_stop()`` (polled between batches): :class:`whichway.render.RenderCancelled` is then
    raised, finished frames stay on disk and ``run.json`` says ``"status": "cancelled"``.
    """
    from whichway.morph import (
        FRAMES_DIR,
        RUN_FILE,
        cancel_point,
        previous_run,
        use_inversion_sampler,
        write_json_atomic,
    )
    from whichway.render import RenderCancelled

    prep = prepared if prepared is not None else prepare_travel(settings)
    settings.check_families(adapter.family)  # before anything renders
    n = prep.n_frames
    run_dir = Path(out_dir)
    frames_dir = run_dir / FRAMES_DIR
    frames_dir.mkdir(parents=True, exist_ok=True)
    height = settings.height or adapter.default_size[0]
    width = settings.width or adapter.default_size[1]
    s = _with_batch_size(settings, adapter, n, height, width)
    if prep.motion is not None and _auto_batch(settings, adapter):
        from whichway.travel.motion import fit_context_length

        length = fit_context_length(settings, adapter, prep.motion, height, width)
        s = replace(s, context_length=length)

    # 1. the record; a previous run of the same pixel settings lends its frames
    record = settings_record(adapter, s, height, width)
    # (a segment whose method changed renders its own frames again)
    previous = previous_run(run_dir, record, PRESENTATION_KEYS, pixel_settings)
    remove_stale_frames(frames_dir, previous, n)
    stale = stale_segments(previous, s)
    info = start_record(adapter, s, prep, record)
    perceptual = s.pacing == "perceptual"
    measured = measure = None
    if perceptual:
        meter, measure = pacing.lpips_measure(meter)
        if not stale:  # a segment rendered otherwise changes its measured path
            measured = pacing.reused_distances(previous, s.coarse, meter)

    restore = None
    if any(kf.image is not None for kf in s.keyframes):
        restore = use_inversion_sampler(adapter, "a journey with image keyframes")
    hooks = {"on_step": on_step, "should_stop": should_stop}
    renderer = None
    rendered = 0
    try:
        try:
            # 2. the keyframes encoded (images inverted, cancellable at every step) and every
            # segment coupled, once
            cancel_point(should_stop, run_dir, info, 0, n)
            journey = Journey(adapter, s, height, width, run_dir, should_stop)
            renderer = Renderer(adapter, journey, s, height, width, n, progress, hooks)
            plan = prep.plan
            # 3. perceptual pacing: a coarse pass measures the path, the plan spreads it evenly
            if perceptual:
                if measured is None:
                    coarse = pacing.coarse_positions(len(s.keyframes), s.coarse)
                    # every frame may move once the coarse pass has measured: count them all
                    renderer.set_total(renderer.steps_for(coarse) + renderer.steps_for(n))
                    write_json_atomic(run_dir / RUN_FILE, info)
                    measured = pacing.measure_coarse(renderer, len(s.keyframes), s.coarse, measure)
                    rendered += len(coarse)
                plan = perceptual_plan(s, prep, measured)
                info["perceptual"] = pacing.distances_record(s.coarse, meter, measured)
            assert plan is not None
            # 4. the frames that are missing or moved, streamed to frames/ batch by batch
            info["plan"] = plan.record()
            info["frames"] = [f"{FRAMES_DIR}/{frame_name(i)}" for i in range(n)]
            todo = frames_to_render(frames_dir, plan, previous, stale)
            if prep.motion is None:
                write_json_atomic(run_dir / RUN_FILE, info)
                rendered += render_into(renderer, plan, todo, frames_dir, on_frame)
            else:  # one video denoising: a missing frame means all of them
                from whichway.travel import motion

                info["motion"] = motion.motion_record(s, prep.motion, n)
                write_json_atomic(run_dir / RUN_FILE, info)
                rendered += motion.render_motion_into(
                    adapter,
                    journey,
                    prep.motion,
                    plan,
                    motion.motion_todo(todo, n),
                    frames_dir,
                    (height, width),
                    progress=progress,
                    on_frame=on_frame,
                    hooks=hooks,
                )
        except RenderCancelled:
            info["status"] = "cancelled"
            write_json_atomic(run_dir / RUN_FILE, info)
            raise
        info["segments"] = [journey.segment_record(plan, k) for k in range(len(s.keyframes) - 1)]
        info.update(adapter.describe())  # the scheduler actually used
    finally:
        if renderer is not None:
            renderer.close()
        if restore is not None:
            adapter.use_scheduler(restore)

    # 5. how even the perceptual pacing came out, the strip, the video, the finished record
    frames = tuple(frames_dir / frame_name(i) for i in range(n))
    spread = None
    if perceptual:
        assert measured is not None and measure is not None
        before = [x for _, steps in measured for x in steps]
        after = pacing.steps_after(frames, measure, meter, previous, rendered)
        spread = {"before": pacing.spread_of(before), "after": pacing.spread_of(after)}
        info["perceptual"].update(
            steps_before=before,
            steps_after=after,
            spread_before=spread["before"],
            spread_after=spread["after"],
        )
    cancel_point(should_stop, run_dir, info, n, n)  # before the strip and the video are written
    strip = write_strip(run_dir, frames, plan)
    video = write_travel_video(run_dir, frames_dir, frames, s)
    info.update(status="done", strip=strip.name, video=None if video is None else video.name)
    write_json_atomic(run_dir / RUN_FILE, info)
    return TravelResult(
        run_dir, plan, frames, strip, video, tuple(info["segments"]), rendered, spread
    )


def _auto_batch(s: TravelSettings, adapter: Adapter) -> bool:
    """Whether the batch size is left to the memory estimate (``"auto"``, or unset off a CPU)."""
    import torch

    if s.batch_size is None:
        return torch.device(adapter.device).type != "cpu"
    return s.batch_size == "auto"


def _with_batch_size(
    s: TravelSettings, adapter: Adapter, n_frames: int, height: int, width: int
) -> TravelSettings:
    """``s`` with an integer batch size: ``"auto"`` / None become what the memory estimate fits."""
    if isinstance(s.batch_size, int):
        return s
    from whichway.models.memory import resolve_batch_size

    return replace(
        s,
        batch_size=resolve_batch_size(s.batch_size, adapter, n_frames, height, width, s.guidance),
    )
