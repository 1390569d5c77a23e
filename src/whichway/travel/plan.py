"""Where every frame is on the journey: :func:`plan_travel` gives each output frame its segment
and local time t (pure arithmetic), :func:`prepare_travel` runs every check that needs no model
(images readable, the track long enough, keyframe times placeable)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from whichway._checks import check_choice
from whichway.travel.settings import (
    DEFAULT_AUDIO_FLOOR,
    PACINGS,
    Keyframe,
    TravelSettings,
    check_times_increase,
    check_timing,
)

if TYPE_CHECKING:  # pragma: no cover
    from whichway.audio import Audio, Envelope
    from whichway.motion.adapter import MotionSource


@dataclass(frozen=True)
class TravelPlan:
    """Where every output frame is on the journey.

    Attributes
    ----------
    fps : float
    segment : tuple (N,) of int     segment k of frame i (between keyframes k and k + 1)
    t : tuple (N,) of float         local time of frame i in its segment, in [0, 1]
    keyframe_frames : tuple (K,)    the frame of each keyframe (strictly increasing)
    pacing : str

    Frame i is shown at video time ``i / fps``; the video lasts ``N / fps`` seconds.
    """

    fps: float
    segment: tuple[int, ...]
    t: tuple[float, ...]
    keyframe_frames: tuple[int, ...]
    pacing: str = "uniform"

    @property
    def n_frames(self) -> int:
        return len(self.t)

    @property
    def duration(self) -> float:
        """Seconds of video, N / fps."""
        return self.n_frames / self.fps

    def position(self, i: int) -> tuple[int, float]:
        """(segment, t) of frame ``i``."""
        return self.segment[i], self.t[i]

    def record(self) -> dict[str, Any]:
        return {
            "fps": self.fps,
            "pacing": self.pacing,
            "n_frames": self.n_frames,
            "duration": self.duration,
            "keyframe_frames": list(self.keyframe_frames),
            "segment": list(self.segment),
            "t": list(self.t),
        }


def _frame_count(
    keyframes: Sequence[Keyframe], fps: float, seconds: float | None, frames_per_segment: int | None
) -> int:
    from whichway.budget import travel_frame_count

    n = travel_frame_count(len(keyframes), keyframes[-1].at, fps, seconds, frames_per_segment)
    if n is None:
        raise ValueError(
            "say how long the video is: give --seconds, frames per segment, or a time for the last keyframe"
        )
    return n


def plan_travel(
    keyframes: Sequence[Keyframe],
    *,
    fps: float,
    seconds: float | None = None,
    frames_per_segment: int | None = None,
    pacing: str = "uniform",
    audio: Envelope | None = None,
    audio_start: float = 0.0,
    audio_floor: float = DEFAULT_AUDIO_FLOOR,
    snap_beats: bool = False,
    distances: Sequence[tuple[Sequence[float], Sequence[float]]] | None = None,
) -> TravelPlan:
    """For every output frame its segment and local t (pure arithmetic, no model).

    Parameters
    ----------
    keyframes : K >= 2 keyframes; their ``at`` (seconds) must increase
    fps : frames per second, > 0
    seconds : video length (N = round(seconds * fps) frames); or ``frames_per_segment``
        (N = (K - 1) * frames_per_segment + 1); or neither when the last keyframe has ``at``
        (N = round(at * fps) + 1)
    pacing : "uniform" | "perceptual" | "audio"
    audio : Envelope of the track (needed by audio pacing and ``snap_beats``); the video's time
        0 is the track's ``audio_start``
    audio_floor : speed floor f of audio pacing, a fraction of the mean speed
    snap_beats : move the interior keyframes to the nearest detected beat
    distances : for perceptual pacing, per segment ``(knots (M,), steps (M-1,))``: the LPIPS
        steps between frames rendered at the local times ``knots`` (0 ... 1)

    Returns
    -------
    TravelPlan. Keyframe k lands on frame f_k: ``round(at * fps)`` when timed, else at an equal
    share (uniform, audio) or an equal share of perceptual length (perceptual) between its timed
    neighbours. Inside segment k, frame f_k + j has t = j / m (uniform), F(τ)/F(τ_end) (audio) or
    the inverse cumulative LPIPS distance at j / m (perceptual), m = f_{k+1} − f_k. Frames before
    the first keyframe or after the last hold it.
    """
    import numpy as np

    check_choice("pacing", pacing, PACINGS)
    n_key = len(keyframes)
    if n_key < 2:
        raise ValueError(f"a travel needs at least 2 keyframes, got {n_key}")
    check_timing(fps, seconds, pacing, snap_beats, audio is not None)
    if frames_per_segment is not None and frames_per_segment < 1:
        raise ValueError(f"frames per segment must be >= 1, got {frames_per_segment}")
    check_times_increase(keyframes)
    n = _frame_count(keyframes, fps, seconds, frames_per_segment)
    if n < n_key:
        raise ValueError(
            f"the video has {n} frame{'s' * (n != 1)} but {n_key} keyframes, each needing its own frame; "
            "make it longer or raise --fps"
        )
    if pacing == "perceptual":
        if distances is None or len(distances) != n_key - 1:
            raise ValueError(
                "perceptual pacing needs the measured LPIPS steps of every segment (run_travel measures them)"
            )
        weights = [float(sum(steps)) for _, steps in distances]
    else:
        weights = [1.0] * (n_key - 1)

    # 1. keyframes with a time are anchors; the ends default to the first and last frame
    frame: list[float | None] = [None] * n_key
    for k, kf in enumerate(keyframes):
        if kf.at is not None:
            f = round(kf.at * fps)
            if f == n:  # at exactly the end of the video
                f = n - 1
            if f > n - 1:
                raise ValueError(
                    f"keyframe {k + 1} at {kf.at:g} s is past the end of the video ({n / fps:g} s, {n} frames)"
                )
            frame[k] = f
    if frame[0] is None:
        frame[0] = 0
    if frame[-1] is None:
        frame[-1] = n - 1
    # 2. keyframes without a time: equal shares of the weights between their anchors
    anchors = [k for k in range(n_key) if frame[k] is not None]
    for a, b in itertools.pairwise(anchors):
        if b - a < 2:
            continue
        cum = np.concatenate([[0.0], np.cumsum(weights[a:b])])
        share = cum / cum[-1] if cum[-1] > 0 else np.linspace(0, 1, b - a + 1)
        for j in range(a + 1, b):
            frame[j] = frame[a] + (frame[b] - frame[a]) * float(share[j - a])
    frames = [round(f) for f in frame]  # type: ignore[arg-type]
    if snap_beats:
        assert audio is not None
        from whichway.audio import nearest_beat

        for k in range(1, n_key - 1):
            if keyframes[k].at is None:
                beat = nearest_beat(audio, audio_start + frames[k] / fps) - audio_start
                frames[k] = min(max(round(beat * fps), 0), n - 1)
    for k in range(1, n_key):
        if frames[k] <= frames[k - 1]:
            how = " after --snap-beats" if snap_beats else ""
            raise ValueError(
                f"keyframes {k} and {k + 1} fall on frames {frames[k - 1]} and {frames[k]}{how}: each keyframe "
                "needs a later frame than the one before; space their times further apart or raise --fps"
            )
    # 3. local times inside each segment
    segment = [0] * n
    t = [0.0] * n
    mean = None
    if pacing == "audio":
        from whichway.audio import mean_level

        assert audio is not None
        mean = mean_level(audio, audio_start, audio_start + n / fps)
    for k in range(n_key - 1):
        f0, f1 = frames[k], frames[k + 1]
        m = f1 - f0
        if pacing == "uniform":
            local = [j / m for j in range(m + 1)]
        elif pacing == "audio":
            from whichway.audio import paced_times

            assert audio is not None and mean is not None
            tau = audio_start + np.arange(f0, f1 + 1, dtype=np.float64) / fps
            local = paced_times(audio, tau, mean=mean, floor=audio_floor).tolist()
        else:
            local = _perceptual_times(distances[k], m + 1)  # type: ignore[index]
        for j in range(m + 1):
            segment[f0 + j], t[f0 + j] = k, float(local[j])
        t[f0] = 0.0
    segment[frames[-1]], t[frames[-1]] = n_key - 2, 1.0
    for i in range(frames[0]):
        segment[i], t[i] = 0, 0.0
    for i in range(frames[-1] + 1, n):
        segment[i], t[i] = n_key - 2, 1.0
    return TravelPlan(float(fps), tuple(segment), tuple(t), tuple(frames), pacing)


def _perceptual_times(measured: tuple[Sequence[float], Sequence[float]], count: int) -> list[float]:
    """``count`` local times in [0, 1] equally far apart along one segment's measured path: the
    inverse of its cumulative LPIPS distance (``measured`` = (knots (M,), steps (M-1,)))."""
    import torch

    from whichway.metrics.spacing import invert_cumulative

    knots = torch.as_tensor(list(measured[0]), dtype=torch.float64)
    steps = torch.as_tensor(list(measured[1]), dtype=torch.float64)
    if steps.sum() <= 0:
        return [j / (count - 1) for j in range(count)]
    out = invert_cumulative(knots, steps, count).tolist()
    out[0], out[-1] = 0.0, 1.0
    return out


@dataclass(frozen=True)
class Prepared:
    """What :func:`prepare_travel` checked and decoded before any model is loaded."""

    audio: Audio | None
    envelope: Envelope | None
    plan: TravelPlan | None  # None under perceptual pacing (known after the coarse pass)
    n_frames: int
    seconds: float | None = None  # the video's length when the track set it
    motion: MotionSource | None = None  # the checked motion adapter of a motion journey


def prepare_travel(settings: TravelSettings) -> Prepared:
    """Every check that needs no model: keyframe images readable, the track decodable and long
    enough for ``audio_start`` + the video, keyframe times placeable on frames. Raises a
    ValueError with a one-line message; writes nothing."""
    from whichway.media import load_image

    s = settings
    motion = None
    if s.motion is not None:
        from whichway.motion.adapter import check_motion_source, max_positions
        from whichway.motion.windows import resolve_context

        motion = check_motion_source(s.motion)
        resolve_context(s.context_length, s.context_stride, max_positions(motion))
    for k, kf in enumerate(s.keyframes):
        if kf.image is not None:
            try:
                load_image(kf.image, size=(8, 8))
            except ValueError as exc:
                raise ValueError(f"keyframe {k + 1}: {exc}") from None
    track = env = None
    seconds = s.seconds
    if s.audio is not None:
        from whichway.audio import envelope, load_audio

        track = load_audio(s.audio)
        if seconds is None and s.frames_per_segment is None and s.keyframes[-1].at is None:
            seconds = (
                math.floor((track.duration - s.audio_start) * s.fps) / s.fps
            )  # the rest of the track
            if seconds * s.fps < 1:
                raise ValueError(
                    f"the audio {s.audio} lasts {track.duration:.2f} s: nothing is left after --audio-start "
                    f"{s.audio_start:g}; use an earlier --audio-start"
                )
    n = _frame_count(s.keyframes, s.fps, seconds, s.frames_per_segment)
    if track is not None:
        need = s.audio_start + n / s.fps
        if track.duration + 0.5 / track.sample_rate < need:
            raise ValueError(
                f"the audio {s.audio} lasts {track.duration:.2f} s, but --audio-start {s.audio_start:g} plus the "
                f"video's {n / s.fps:.2f} s needs {need:.2f} s; use a shorter video or an earlier --audio-start"
            )
        if s.pacing == "audio" or s.snap_beats:  # a track that is only muxed needs no envelope
            env = envelope(track, s.audio_feature, beats=s.snap_beats)
    if (
        s.pacing == "perceptual"
    ):  # the keyframe times must be placeable; t waits for the coarse pass
        _plan(s, seconds, env, "uniform")
        return Prepared(track, env, None, n, seconds, motion)
    plan = _plan(s, seconds, env, s.pacing)
    return Prepared(track, env, plan, plan.n_frames, seconds, motion)


def perceptual_plan(
    settings: TravelSettings,
    prepared: Prepared,
    distances: Sequence[tuple[Sequence[float], Sequence[float]]],
) -> TravelPlan:
    """The plan of a perceptually paced run once its coarse pass measured ``distances`` (per
    segment ``(knots, steps)``, see :func:`plan_travel`)."""
    return _plan(settings, prepared.seconds, prepared.envelope, "perceptual", distances)


def _plan(
    s: TravelSettings,
    seconds: float | None,
    envelope: Envelope | None,
    pacing: str,
    distances: Sequence[tuple[Sequence[float], Sequence[float]]] | None = None,
) -> TravelPlan:
    return plan_travel(
        s.keyframes,
        fps=s.fps,
        seconds=seconds,
        frames_per_segment=s.frames_per_segment,
        pacing=pacing,
        audio=envelope,
        audio_start=s.audio_start,
        audio_floor=s.audio_floor,
        snap_beats=s.snap_beats,
        distances=distances,
    )
