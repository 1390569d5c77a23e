"""Travel: one video through many keyframes (prompts, seeds, images), paced evenly, by perceptual
distance, or by music, written frame by frame into a run directory and as an MP4 with its sound.

A journey of K keyframes has K - 1 segments. Every output frame i (shown at video time i / fps)
has a *position*: its segment k and a local time t in [0, 1] (:class:`TravelPlan`). Keyframe k
sits on one frame; the frames between keyframes k and k + 1 follow that segment's path:

* conditioning: every token group of keyframe k's prompt is coupled to keyframe k + 1's
  (``ot`` | ``clip`` | ``random``) and displacement-interpolated,
  E_t[i] = (1 - t) E_k[i] + t E_{k+1}[σ(i)] (:func:`whichway.render.conditioning_path`);
* initial latent: COG between the two keyframes' seeds or inverted images (``cog`` | ``slerp`` |
  ``lerp``; ``fixed`` when both share one seed) (:func:`whichway.render.latent_path`).

A keyframe's own frame is rendered from its own conditioning and latent, so it equals the plain
pipeline's image for that prompt and seed. Frames go through the denoiser in batches that span
segment boundaries, stream to ``frames/00000.png ...`` as each batch finishes, and a re-run of the
same settings renders only the frames that are missing (or whose position changed).

Pacing decides t (and where keyframes without a time fall):

* ``uniform``: t grows linearly with video time inside each segment; keyframes without ``at`` are
  spread evenly.
* ``audio``: t(τ) = F(τ) / F(τ_end), F the integral of the music's normalised envelope plus a
  floor (:mod:`whichway.audio`): motion follows the beats.
* ``perceptual``: a coarse pass renders every segment at a few times; the LPIPS steps between
  consecutive coarse frames, summed across segment boundaries, are the journey's perceptual arc
  length. Keyframes without ``at`` are placed at equal shares of it, and each segment's frame
  times are the inverse of its cumulative distance (:func:`whichway.metrics.invert_cumulative`,
  the core of :func:`whichway.metrics.respace`): consecutive frames are equally far apart over the
  whole video.

The package, one module per concern, in the order a run uses them:

* :mod:`~whichway.travel.settings`: :class:`Keyframe` and :class:`TravelSettings` (every check
  that needs nothing but the values);
* :mod:`~whichway.travel.schedule`: schedule files (TOML / JSON / Deforum) read into settings;
* :mod:`~whichway.travel.plan`: :func:`plan_travel` (every frame's segment and t) and
  :func:`prepare_travel` (every check before a model loads);
* :mod:`~whichway.travel.rendering`: the keyframes encoded once, positions streamed through the
  denoiser in batches;
* :mod:`~whichway.travel.pacing`: the perceptual coarse pass and the LPIPS steps of the result;
* :mod:`~whichway.travel.record`: what a run leaves in its folder (frame names, ``run.json``
  entries, strip, video);
* :mod:`~whichway.travel.run`: :func:`run_travel`, the orchestration.
"""

from __future__ import annotations

from whichway.travel.plan import Prepared, TravelPlan, plan_travel, prepare_travel
from whichway.travel.record import frame_name
from whichway.travel.run import TravelResult, run_travel
from whichway.travel.schedule import KEYFRAME_KEYS, SCHEDULE_KEYS, Schedule, read_schedule
from whichway.travel.settings import PACINGS, TRAVEL_LATENTS, Keyframe, TravelSettings

__all__ = [
    "KEYFRAME_KEYS",
    "PACINGS",
    "SCHEDULE_KEYS",
    "TRAVEL_LATENTS",
    "Keyframe",
    "Prepared",
    "Schedule",
    "TravelPlan",
    "TravelResult",
    "TravelSettings",
    "frame_name",
    "plan_travel",
    "prepare_travel",
    "read_schedule",
    "run_travel",
]
