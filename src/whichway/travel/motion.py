"""A journey's frames rendered as one video through a motion adapter (``--motion``): every
frame's conditioning and initial latent come from :class:`~whichway.travel.rendering.Journey`
(the OT travel path of its segment at its t, the keyframe seeds' latent path), and
:func:`whichway.motion.denoise.render_motion` denoises them together over context windows.

What a rerun keeps differs from stills: a frame depends on its neighbours through the temporal
layers, so one missing or moved frame means the whole video is denoised again; a rerun whose
frames are all present at unchanged positions (only presentation settings changed) keeps them all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

    from whichway.models.base import Adapter
    from whichway.motion.adapter import MotionSource
    from whichway.travel.plan import TravelPlan
    from whichway.travel.rendering import Journey
    from whichway.travel.settings import TravelSettings

logger = logging.getLogger(__name__)


def motion_todo(todo: Sequence[int], n_frames: int) -> list[int]:
    """Frames a motion run renders: none when nothing is missing or moved, else all of them."""
    if not todo:
        return []
    if len(todo) < n_frames:
        logger.info(
            "%d of %d frames are missing or moved; a motion video is denoised as a whole, so all "
            "%d are rendered again",
            len(todo),
            n_frames,
            n_frames,
        )
    return list(range(n_frames))


def fit_context_length(
    s: TravelSettings,
    adapter: Adapter,
    motion: MotionSource,
    height: int,
    width: int,
    *,
    capacity_bytes: int | None = -1,
) -> int:
    """The context length a ``--batch-size auto`` motion journey uses: the memory plan's
    :func:`~whichway.models.memory.window_memory` decides what fits.

    No ``--context-length``: the adapter's default (16, at most its positions), shortened to the
    longest window that fits. A given one is kept when it fits. Refused (``ValueError``, one line
    naming ``--context-length``) when the given length does not fit, or when no window of at least
    ``--context-stride`` frames (1 without one) fits. ``capacity_bytes`` as in
    :func:`~whichway.models.memory.plan_memory` (-1: the device's)."""
    from whichway.models.memory import format_bytes, plan_memory, window_memory
    from whichway.motion.adapter import max_positions
    from whichway.motion.windows import resolve_context

    wanted, _ = resolve_context(s.context_length, s.context_stride, max_positions(motion))
    plan = plan_memory(adapter, height, width, s.guidance, capacity_bytes=capacity_bytes)
    weights = 0 if motion.weights is None else motion.weights.stat().st_size
    w = window_memory(plan, wanted, weights)
    if w.fits:
        chosen = wanted
    elif s.context_length is not None:
        raise ValueError(
            f"--context-length {wanted} does not fit in memory (a window's estimated peak "
            f"{format_bytes(w.bytes)}); the longest that fits is {w.max_frames}: give "
            "--context-length at most that, --offload model, or a smaller --height/--width"
        )
    else:
        chosen = w.max_frames
    shortest = s.context_stride or 1
    if chosen < shortest:
        raise ValueError(
            f"not even a motion window of {shortest} frame(s) fits in memory (longest that fits: "
            f"{w.max_frames}); give a smaller --context-length and --context-stride, "
            "--offload model, or a smaller --height/--width"
        )
    logger.info(
        "--batch-size auto: context windows of %d frames (estimated peak %s)",
        chosen,
        format_bytes(window_memory(plan, chosen, weights).bytes),
    )
    return chosen


def motion_record(s: TravelSettings, motion: MotionSource, n_frames: int) -> dict[str, Any]:
    """The ``run.json`` ``"motion"`` entry: the adapter (SHA-256 of local weights), the resolved
    context settings and windows, the initial noise."""
    from whichway.motion.adapter import max_positions
    from whichway.motion.windows import context_windows, resolve_context, window_weights

    length, stride = resolve_context(s.context_length, s.context_stride, max_positions(motion))
    return {
        **motion.record(),
        "context_length": length,
        "context_stride": stride,
        "context_weighting": s.context_weighting,
        "window_weights": window_weights(min(length, n_frames), s.context_weighting),
        "windows": [list(w) for w in context_windows(n_frames, length, stride)],
        "noise": s.motion_noise,
    }


def render_motion_into(
    adapter: Adapter,
    journey: Journey,
    motion: MotionSource,
    plan: TravelPlan,
    todo: Sequence[int],
    frames_dir: Path,
    size: tuple[int, int],
    *,
    progress: bool = True,
    on_frame: Callable[[int, Path], None] | None = None,
    hooks: dict[str, Any] | None = None,
) -> int:
    """Render ``todo`` (every frame of ``plan``, or none) as one video into ``frames_dir``, each
    frame written as soon as it is decoded. Returns the number of frames rendered."""
    from whichway.media import save_image
    from whichway.motion.adapter import max_positions, motion_unet
    from whichway.motion.denoise import render_motion, shuffled_noise
    from whichway.motion.windows import resolve_context
    from whichway.travel.record import frame_name

    if not todo:
        logger.info("all %d frames already rendered in %s", plan.n_frames, frames_dir.parent)
        return 0
    s = journey.s
    hooks = hooks or {}
    length, stride = resolve_context(s.context_length, s.context_stride, max_positions(motion))
    positions = [plan.position(i) for i in range(plan.n_frames)]
    cond, latents, negative = journey.rows(positions)
    if s.motion_noise == "shuffled":
        latents = shuffled_noise(latents, length, stride, s.seed)
    unet = motion_unet(adapter, motion)

    def write(i: int, image: Tensor) -> None:
        target = frames_dir / frame_name(i)
        save_image(image, target)
        if on_frame is not None:
            on_frame(i, target)

    render_motion(
        adapter,
        unet,
        cond,
        latents,
        steps=s.steps,
        guidance=s.guidance,
        height=size[0],
        width=size[1],
        context_length=length,
        context_stride=stride,
        weighting=s.context_weighting,
        negative=negative,
        on_frame=write,
        on_step=hooks.get("on_step"),
        should_stop=hooks.get("should_stop"),
        progress=progress,
    )
    return plan.n_frames
