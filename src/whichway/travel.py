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
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from whichway._checks import check_batch_size, check_choice

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

    from whichway.audio import Audio, Envelope
    from whichway.models.base import Adapter, Conditioning

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

logger = logging.getLogger(__name__)

PACINGS = ("uniform", "perceptual", "audio")
TRAVEL_LATENTS = ("fixed", "cog", "slerp", "lerp")
"""Latent paths a segment can take (NAO needs equally spaced points, which pacing does not keep)."""
DEFAULT_AUDIO_FLOOR = 0.1
"""Speed floor under audio pacing, as a fraction of the mean speed."""
FRAME_DIGITS = 5
VIDEO_NAME = "travel"

# Settings that do not change any frame's pixels once its position (segment, t) is known: a run
# that differs only in these keeps every frame whose position is unchanged.
_PRESENTATION_KEYS = frozenset(
    {
        "batch_size",
        "format",
        "fps",
        "seconds",
        "frames_per_segment",
        "pacing",
        "audio",
        "audio_start",
        "audio_feature",
        "audio_floor",
        "snap_beats",
        "coarse",
        "keyframe_times",
    }
)


def frame_name(index: int) -> str:
    """``frames/00042.png`` style file name of frame ``index``."""
    return f"{index:0{FRAME_DIGITS}d}.png"


@dataclass(frozen=True)
class Keyframe:
    """One stop of a journey.

    ``at`` is its time in seconds (None: spread between the neighbouring keyframes that have one;
    the first keyframe opens the video, the last closes it). ``image`` makes it a real image,
    inverted to its initial latent (as morph does). ``coupling`` and ``latent`` override the run's
    for the segment that *leaves* this keyframe.
    """

    prompt: str
    _: KW_ONLY
    seed: int | None = None
    image: str | None = None
    at: float | None = None
    negative_prompt: str | None = None
    coupling: str | None = None
    latent: str | None = None

    def __post_init__(self) -> None:
        from whichway.clouds import COUPLING_METHODS

        if not isinstance(self.prompt, str):
            raise ValueError(f"a keyframe prompt must be text, got {self.prompt!r}")
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int)
        ):
            raise ValueError(f"a keyframe seed must be an integer, got {self.seed!r}")
        if self.at is not None and (
            isinstance(self.at, bool)
            or not isinstance(self.at, (int, float))
            or not math.isfinite(self.at)
            or self.at < 0
        ):
            raise ValueError(f"a keyframe time must be a number of seconds >= 0, got {self.at!r}")
        if self.coupling is not None:
            check_choice("coupling", self.coupling, COUPLING_METHODS)
        if self.latent is not None:
            _check_latent(self.latent)

    def record(self) -> dict[str, Any]:
        """The keyframe as a JSON-able dict."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _check_latent(latent: str) -> None:
    if latent == "nao":
        raise ValueError(
            "latent method 'nao' optimises equally spaced points, which travel pacing does not keep; "
            "use cog, slerp, lerp or fixed"
        )
    check_choice("latent method", latent, TRAVEL_LATENTS)


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
    if seconds is not None:
        return round(seconds * fps)
    if frames_per_segment is not None:
        return (len(keyframes) - 1) * frames_per_segment + 1
    if keyframes[-1].at is not None:
        return round(keyframes[-1].at * fps) + 1
    raise ValueError(
        "say how long the video is: give --seconds, frames per segment, or a time for the last keyframe"
    )


def _check_times_increase(keyframes: Sequence[Keyframe]) -> None:
    timed = [(k, kf.at) for k, kf in enumerate(keyframes) if kf.at is not None]
    for (ka, a), (kb, b) in itertools.pairwise(timed):
        if b <= a:
            raise ValueError(
                f"keyframe times must increase: keyframe {kb + 1} at {b:g} s is not after keyframe {ka + 1} at {a:g} s"
            )


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
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"--fps must be > 0, got {fps}")
    if seconds is not None and not seconds > 0:
        raise ValueError(f"--seconds must be > 0, got {seconds}")
    if frames_per_segment is not None and frames_per_segment < 1:
        raise ValueError(f"frames per segment must be >= 1, got {frames_per_segment}")
    if (pacing == "audio" or snap_beats) and audio is None:
        raise ValueError(
            f"{'--pacing audio' if pacing == 'audio' else '--snap-beats'} needs a track: give --audio FILE"
        )
    _check_times_increase(keyframes)
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
class TravelSettings:
    """Everything that defines a travel run. Keyframes without a seed take ``seed``; without a
    negative prompt, ``negative_prompt``; ``coupling`` and ``latent`` apply to every segment
    whose start keyframe does not override them. Under ``latent="cog"`` a segment whose keyframes
    share one seed keeps that latent (``fixed``)."""

    keyframes: tuple[Keyframe, ...]
    fps: float = 24.0
    seconds: float | None = None
    frames_per_segment: int | None = None
    pacing: str = "uniform"
    coupling: str = "ot"
    latent: str = "cog"
    seed: int = 0
    steps: int = 30
    guidance: float = 7.5
    height: int | None = None
    width: int | None = None
    negative_prompt: str | None = None
    inversion_steps: int | None = None
    inversion_guidance: float = 1.0
    audio: str | None = None
    audio_start: float = 0.0
    audio_feature: str = "onset"
    audio_floor: float = DEFAULT_AUDIO_FLOOR
    snap_beats: bool = False
    coarse: int = 5
    batch_size: int | str | None = None
    format: str | None = "mp4"

    def __post_init__(self) -> None:
        from whichway.audio import AUDIO_FEATURES
        from whichway.clouds import COUPLING_METHODS
        from whichway.media import ANIMATION_FORMATS

        object.__setattr__(self, "keyframes", tuple(self.keyframes))
        if any(not isinstance(k, Keyframe) for k in self.keyframes):
            raise ValueError("keyframes must be Keyframe objects")
        if len(self.keyframes) < 2:
            raise ValueError(f"a travel needs at least 2 keyframes, got {len(self.keyframes)}")
        if not (isinstance(self.fps, (int, float)) and math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"--fps must be > 0, got {self.fps}")
        if self.seconds is not None and self.frames_per_segment is not None:
            raise ValueError(
                "give the video's length once: seconds or frames per segment, not both"
            )
        if self.seconds is not None and not self.seconds > 0:
            raise ValueError(f"--seconds must be > 0, got {self.seconds}")
        check_choice("pacing", self.pacing, PACINGS)
        check_choice("coupling", self.coupling, COUPLING_METHODS)
        _check_latent(self.latent)
        check_choice("audio feature", self.audio_feature, AUDIO_FEATURES)
        if self.format is not None:
            check_choice("video format", self.format, ANIMATION_FORMATS)
        if self.steps < 1:
            raise ValueError(f"--steps must be >= 1, got {self.steps}")
        check_batch_size(self.batch_size, "--batch-size")
        if self.coarse < 2:
            raise ValueError(
                f"perceptual pacing needs at least 2 coarse frames per segment, got {self.coarse}"
            )
        if self.audio_start < 0:
            raise ValueError(f"--audio-start must be >= 0 seconds, got {self.audio_start}")
        if not self.audio_floor >= 0:
            raise ValueError(f"--audio-floor must be >= 0, got {self.audio_floor}")
        if self.audio is None and (self.pacing == "audio" or self.snap_beats):
            raise ValueError(
                f"{'--pacing audio' if self.pacing == 'audio' else '--snap-beats'} needs a track: give --audio FILE"
            )
        _check_times_increase(self.keyframes)
        for k in range(len(self.keyframes) - 1):
            a, b = self.keyframes[k], self.keyframes[k + 1]
            if self.segment_latent(k) == "fixed" and a.image is None and b.image is None:
                sa, sb = self.seed_of(k), self.seed_of(k + 1)
                if sa != sb:
                    raise ValueError(
                        f"segment {k + 1} ({a.prompt!r} -> {b.prompt!r}) uses latent 'fixed' but its keyframes have "
                        f"seeds {sa} and {sb}; give them one seed or use --latent cog"
                    )

    def seed_of(self, k: int) -> int:
        s = self.keyframes[k].seed
        return self.seed if s is None else s

    def negative_of(self, k: int) -> str | None:
        s = self.keyframes[k].negative_prompt
        return self.negative_prompt if s is None else s

    def segment_coupling(self, k: int) -> str:
        return self.keyframes[k].coupling or self.coupling

    def segment_latent(self, k: int) -> str:
        return self.keyframes[k].latent or self.latent

    def record(self) -> dict[str, Any]:
        """JSON-able settings; keyframe times are kept apart (``keyframe_times``) because they
        move frames, not pixels."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "keyframes"}
        out["keyframes"] = [
            {k: v for k, v in kf.record().items() if k != "at"} for kf in self.keyframes
        ]
        out["keyframe_times"] = [kf.at for kf in self.keyframes]
        return out

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> TravelSettings:
        """The settings a ``run.json`` ``"settings"`` entry (:meth:`record`, plus what the run
        added: the resolved size, the model, the runtime options) describes, to resume it."""
        names = {f.name for f in fields(cls)} - {"keyframes"}
        kept = {k: v for k, v in record.items() if k in names}
        entries = record.get("keyframes", [])
        times = record.get("keyframe_times") or [None] * len(entries)
        return cls(tuple(Keyframe(**kf, at=at) for kf, at in zip(entries, times)), **kept)


@dataclass(frozen=True)
class Prepared:
    """What :func:`prepare_travel` checked and decoded before any model is loaded."""

    audio: Audio | None
    envelope: Envelope | None
    plan: TravelPlan | None  # None under perceptual pacing (known after the coarse pass)
    n_frames: int
    seconds: float | None = None  # the video's length when the track set it


def prepare_travel(settings: TravelSettings) -> Prepared:
    """Every check that needs no model: keyframe images readable, the track decodable and long
    enough for ``audio_start`` + the video, keyframe times placeable on frames. Raises a
    ValueError with a one-line message; writes nothing."""
    from whichway.media import load_image

    s = settings
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
    common = {
        "fps": s.fps,
        "seconds": seconds,
        "frames_per_segment": s.frames_per_segment,
        "audio": env,
        "audio_start": s.audio_start,
        "audio_floor": s.audio_floor,
        "snap_beats": s.snap_beats,
    }
    if s.pacing == "perceptual":
        plan_travel(s.keyframes, pacing="uniform", **common)  # the keyframe times must be placeable
        return Prepared(track, env, None, n, seconds)
    plan = plan_travel(s.keyframes, pacing=s.pacing, **common)
    return Prepared(track, env, plan, plan.n_frames, seconds)


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


class _Journey:
    """The keyframes' conditionings, latents and negatives, encoded once, and each segment's
    couplings, computed once; builds the rows of any list of positions."""

    def __init__(
        self, adapter: Adapter, s: TravelSettings, height: int, width: int, run_dir: Path
    ) -> None:
        import torch

        from whichway.morph import inverted_latent
        from whichway.render import conditioning_path

        self.s = s
        prompts = list(dict.fromkeys(kf.prompt for kf in s.keyframes))
        encoded = adapter.encode(prompts)
        self.cond = [encoded.select(prompts.index(kf.prompt)) for kf in s.keyframes]
        negatives = [s.negative_of(k) for k in range(len(s.keyframes))]
        self.shared_negative = len(set(negatives)) == 1
        unique_neg = list(dict.fromkeys(negatives))
        encoded_neg = [adapter.encode_negative(x, 1) for x in unique_neg]
        self.negative = [encoded_neg[unique_neg.index(x)] for x in negatives]
        self.latent = []
        for k, kf in enumerate(s.keyframes):
            if kf.image is not None:
                self.latent.append(
                    inverted_latent(
                        adapter,
                        kf.image,
                        kf.prompt,
                        steps=s.inversion_steps or s.steps,
                        guidance=s.inversion_guidance,
                        height=height,
                        width=width,
                        cache=run_dir / "latents",
                    )
                )
            else:
                self.latent.append(adapter.initial_latent(s.seed_of(k), height, width))
        self.method: list[str] = []
        self.couplings = []
        for k in range(len(s.keyframes) - 1):
            a, b = s.keyframes[k], s.keyframes[k + 1]
            method = s.segment_latent(k)
            if a.image is None and b.image is None and s.seed_of(k) == s.seed_of(k + 1):
                method = "fixed"  # one seed: COG of a latent with itself would rescale it
            elif method == "fixed":
                method = "cog"  # real images have their own latents (as morph does)
            self.method.append(method)
            _, cs = conditioning_path(
                self.cond[k],
                self.cond[k + 1],
                torch.zeros(1, dtype=torch.float64),
                coupling=s.segment_coupling(k),
                generator=torch.Generator().manual_seed(s.seed_of(k)),
            )
            self.couplings.append(cs)

    def rows(
        self, positions: Sequence[tuple[int, float]]
    ) -> tuple[Conditioning, Tensor, Conditioning]:
        """(conditioning, latents (P, C, h, w), negatives with 1 or P rows) of ``positions``."""
        import torch

        from whichway.models.base import Conditioning
        from whichway.render import conditioning_path, latent_path

        by_segment: dict[int, list[int]] = {}
        for i, (k, _) in enumerate(positions):
            by_segment.setdefault(k, []).append(i)
        cond: list[Any] = [None] * len(positions)
        lat: list[Any] = [None] * len(positions)
        neg: list[Any] = [None] * len(positions)
        for k, index in by_segment.items():
            ts = torch.tensor([positions[i][1] for i in index], dtype=torch.float64)
            path, _ = conditioning_path(
                self.cond[k], self.cond[k + 1], ts, couplings=self.couplings[k]
            )
            latents = latent_path(self.latent[k], self.latent[k + 1], ts, method=self.method[k])
            negs = None
            if not self.shared_negative:
                negs, _ = conditioning_path(
                    self.negative[k], self.negative[k + 1], ts, coupling="clip"
                )
            for j, i in enumerate(index):
                t = float(ts[j])
                own = k if t == 0.0 else (k + 1 if t == 1.0 else None)
                if (
                    own is not None
                ):  # a keyframe (k or k + 1, both exist): its own conditioning and latent
                    cond[i], lat[i], neg[i] = self.cond[own], self.latent[own], self.negative[own]
                else:
                    cond[i], lat[i] = path.select(j), latents[j]
                    neg[i] = None if negs is None else negs.select(j)
        negative = self.negative[0] if self.shared_negative else Conditioning.cat(neg)
        return Conditioning.cat(cond), torch.stack([x.to(lat[0].dtype) for x in lat]), negative


class _Renderer:
    """Streams positions through :func:`whichway.render.render_frames` in chunks of whole
    batches (a chunk spans segment boundaries), driving one progress bar for the whole run."""

    def __init__(
        self,
        adapter: Adapter,
        journey: _Journey,
        s: TravelSettings,
        height: int,
        width: int,
        n_frames: int,
        progress: bool,
        hooks: dict[str, Any],
    ) -> None:
        from tqdm.auto import tqdm

        self.adapter, self.journey, self.s = adapter, journey, s
        self.size = (height, width)
        self.hooks = hooks
        self.chunk = s.batch_size * max(1, 32 // s.batch_size)
        self.batch = s.batch_size  # halved for the rest of the run after an out-of-memory retry
        self.planned = s.batch_size  # the batch size the bar's total was planned with
        self.total = 0
        self.done = 0  # steps finished (a disabled tqdm bar does not count)
        self.bar = tqdm(
            total=0, desc=f"travel: {n_frames} frames", unit="step", disable=not progress
        )

    def set_total(self, steps: int) -> None:
        """Denoising steps of the whole run (done so far included), planned at the current batch
        size: the bar's end and ETA."""
        self.planned = self.batch
        self._show_total(steps)

    def _show_total(self, steps: int) -> None:
        self.total = steps
        self.bar.total = steps
        self.bar.refresh()

    def steps_for(self, frames: int, batch: int | None = None) -> int:
        """Denoising steps of ``frames`` frames rendered in chunks of whole batches of ``batch``
        frames (default: the current batch size)."""
        batch = batch or self.batch
        full, rest = divmod(frames, self.chunk)
        per_chunk = -(-self.chunk // batch)
        return (full * per_chunk + -(-rest // batch)) * self.s.steps

    def _shrink(self, batch_size: int) -> None:
        self.batch = batch_size

    def _advance(self, done: int) -> None:
        """Steps finished so far in the whole run; it moves back when a batch that ran out of
        memory is redone."""
        if done >= self.done:
            self.bar.update(done - self.done)
        else:
            self.bar.n = done
            self.bar.refresh()
        self.done = done
        if self.hooks.get("on_step") is not None:
            self.hooks["on_step"](self.done, self.total)

    def render(
        self,
        positions: Sequence[tuple[int, float]],
        on_frame: Callable[[int, Tensor], None] | None = None,
        *,
        on_chunk: Callable[[Tensor], None] | None = None,
    ) -> None:
        """Render ``positions`` in order: ``on_frame(index, image)`` per frame, or
        ``on_chunk(frames (P, 3, H, W))`` per chunk (then a chunk's frames are kept until it ends)."""
        from whichway.render import render_frames

        h, w = self.size
        for start in range(0, len(positions), self.chunk):
            part = positions[start : start + self.chunk]
            cond, latents, negative = self.journey.rows(part)
            base, planned = self.done, self.steps_for(len(part), self.planned)

            def step(done: int, total: int, base: int = base) -> None:
                nonlocal planned
                if total != planned:  # a smaller batch than planned, after an out-of-memory retry
                    self._show_total(self.total + total - planned)
                    planned = total
                self._advance(base + done)

            images = render_frames(
                self.adapter,
                cond,
                latents,
                steps=self.s.steps,
                guidance=self.s.guidance,
                height=h,
                width=w,
                batch_size=self.batch,
                negative=negative,
                progress=False,
                keep=on_chunk is not None,
                on_frame=None
                if on_frame is None
                else (lambda i, image, start=start: on_frame(start + i, image)),
                on_step=step,
                should_stop=self.hooks.get("should_stop"),
                on_batch_size=self._shrink,
            )
            if on_chunk is not None:
                on_chunk(images)

    def close(self) -> None:
        self.bar.close()


def _meter_name(meter: Any) -> str:
    """What measured the perceptual distances: an LPIPSPath's network and backbone weights, or a
    plain callable's name (run.json records it; other distances are measured again)."""
    if hasattr(meter, "net") and hasattr(meter, "pretrained_backbone"):
        return f"lpips-{meter.net}-{'pretrained' if meter.pretrained_backbone else 'random'}"
    return getattr(meter, "__qualname__", type(meter).__qualname__)


def _coarse_positions(n_key: int, coarse: int) -> list[tuple[int, float]]:
    """Journey order: every segment at ``coarse`` equally spaced local times, keyframes shared."""
    out = [(k, j / (coarse - 1)) for k in range(n_key - 1) for j in range(coarse - 1)]
    return out + [(n_key - 2, 1.0)]


def _measure_coarse(
    renderer: _Renderer, n_key: int, coarse: int, measure: Callable[[Tensor], Tensor]
) -> list[tuple[list[float], list[float]]]:
    """Render the coarse pass chunk by chunk and measure consecutive LPIPS steps across the whole
    journey (never more than a chunk of frames in memory); per segment (knots, steps)."""
    import torch

    positions = _coarse_positions(n_key, coarse)
    steps: list[float] = []
    prev: list[Tensor] = []

    def measured(chunk: Tensor) -> None:
        frames = torch.cat([*prev, chunk])
        if len(frames) > 1:
            steps.extend(float(x) for x in measure(frames).detach().double().cpu())
        prev[:] = [chunk[-1:]]

    renderer.render(positions, on_chunk=measured)
    knots = [j / (coarse - 1) for j in range(coarse)]
    per = coarse - 1
    return [(knots, steps[k * per : (k + 1) * per]) for k in range(n_key - 1)]


def _spread(steps: Sequence[float]) -> float:
    """(max − min) / mean of a list of steps (0 = perfectly even)."""
    mean = sum(steps) / len(steps) if steps else 0.0
    return (max(steps) - min(steps)) / mean if mean > 0 else 0.0


def _measure_frames(
    paths: Sequence[Path], measure: Callable[[Tensor], Tensor], chunk: int = 32
) -> list[float]:
    """LPIPS steps between consecutive frame files, read ``chunk`` at a time."""
    import torch

    from whichway.media import load_image

    out: list[float] = []
    prev = None
    for start in range(0, len(paths), chunk):
        frames = torch.stack([load_image(p) for p in paths[start : start + chunk]])
        both = frames if prev is None else torch.cat([prev, frames])
        if len(both) > 1:
            out.extend(float(x) for x in measure(both).detach().double().cpu())
        prev = frames[-1:]
    return out


def _segment_record(journey: _Journey, plan: TravelPlan, k: int) -> dict[str, Any]:
    """Coupling cost and W₂ path length (over the segment's frame times) per token group."""
    import torch

    from whichway.clouds import path_length_w2
    from whichway.render import conditioning_path

    s = journey.s
    ts = sorted({t for seg, t in zip(plan.segment, plan.t) if seg == k} | {0.0, 1.0})
    couplings = journey.couplings[k]
    lengths = [0.0] * len(couplings)
    for start in range(0, len(ts) - 1, 128):  # pieces of 129 times, overlapping by one
        piece = torch.tensor(ts[start : start + 129], dtype=torch.float64)
        path, _ = conditioning_path(
            journey.cond[k], journey.cond[k + 1], piece, couplings=couplings
        )
        for g, cloud in enumerate(path.clouds):
            lengths[g] += float(path_length_w2(cloud.double()))
    groups = []
    for g, c in enumerate(couplings):
        groups.append(
            {
                "group": g,
                "method": c.method,
                "cost": float(c.cost),
                "w2_path_length": lengths[g],
                "tokens_moved": None
                if c.perm is None
                else int((c.perm != torch.arange(len(c.perm))).sum()),
            }
        )
    frames = [i for i, seg in enumerate(plan.segment) if seg == k]
    return {
        "segment": k,
        "from": s.keyframes[k].prompt,
        "to": s.keyframes[k + 1].prompt,
        "coupling": s.segment_coupling(k),
        "latent": journey.method[k],
        "frames": [plan.keyframe_frames[k], plan.keyframe_frames[k + 1]] if frames else [],
        "couplings": groups,
    }


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

    ``meter`` measures LPIPS steps for perceptual pacing (a :class:`whichway.metrics.LPIPSPath`
    or a callable frames (T, 3, H, W) -> (T-1,); an AlexNet LPIPSPath by default).
    ``prepared`` is the result of :func:`prepare_travel` when the caller already ran it.

    Front ends follow a run with ``on_frame(index, png_path)`` after each frame is written and
    ``on_step(done, total)`` after each denoising step (over the whole run), and stop it with
    ``should_stop()`` (polled between batches): :class:`whichway.render.RenderCancelled` is then
    raised, finished frames stay on disk and ``run.json`` says ``"status": "cancelled"``.
    """
    from PIL import Image

    from whichway.media import labelled_grid, save_image, write_animation, write_video
    from whichway.morph import (
        FRAMES_DIR,
        RUN_FILE,
        previous_run,
        use_inversion_sampler,
        versions,
        with_runtime,
        write_json_atomic,
    )
    from whichway.render import RenderCancelled

    s = settings
    prep = prepared if prepared is not None else prepare_travel(s)
    run_dir = Path(out_dir)
    frames_dir = run_dir / FRAMES_DIR
    frames_dir.mkdir(parents=True, exist_ok=True)
    height, width = s.height or adapter.default_size[0], s.width or adapter.default_size[1]
    if not isinstance(s.batch_size, int):  # "auto" / None: what the memory estimate fits
        from whichway.models.memory import resolve_batch_size

        s = replace(
            s,
            batch_size=resolve_batch_size(
                s.batch_size, adapter, prep.n_frames, height, width, s.guidance
            ),
        )
    record = with_runtime(
        {**s.record(), "height": height, "width": width, "model": adapter.model_id}, adapter
    )
    previous = previous_run(run_dir, record, _PRESENTATION_KEYS)
    n = prep.n_frames
    names = [f"{FRAMES_DIR}/{frame_name(i)}" for i in range(n)]
    for stale in frames_dir.glob("*.png"):  # frames past the end, or of other pixel settings
        index = int(stale.stem) if stale.stem.isdigit() else -1
        if previous is None or index >= n or len(stale.stem) != FRAME_DIGITS:
            stale.unlink()
    library_versions = versions()
    info: dict[str, Any] = {
        "whichway": library_versions.get("whichway", ""),
        "command": "travel",
        **adapter.describe(),
        "settings": record,
        "keyframes": [kf.record() for kf in s.keyframes],
        "audio": None
        if prep.audio is None
        else {
            "path": str(prep.audio.path),
            "sha256": prep.audio.sha256,
            "start": s.audio_start,
            "duration_used": n / s.fps,
            "track_duration": prep.audio.duration,
            "feature": s.audio_feature,
            "floor": s.audio_floor,
            "snap_beats": s.snap_beats,
        },
        "versions": library_versions,
        "status": "running",
    }
    hooks = {"on_step": on_step, "should_stop": should_stop}
    restore = None
    if any(kf.image is not None for kf in s.keyframes):
        restore = use_inversion_sampler(adapter, "a journey with image keyframes")
    renderer = None
    rendered = 0
    try:
        journey = _Journey(adapter, s, height, width, run_dir)
        plan = prep.plan
        measured = None
        measure = None
        coarse_frames = 0
        if s.pacing == "perceptual":
            if meter is None:
                from whichway.metrics import LPIPSPath

                meter = LPIPSPath("alex")
            measure = meter.distances if hasattr(meter, "distances") else meter
            old = (previous or {}).get("perceptual") or {}
            # the coarse pass's distances are kept only if the same meter measured them
            if (
                old.get("coarse") == s.coarse
                and old.get("meter") == _meter_name(meter)
                and old.get("distances")
            ):
                measured = [(list(a), list(b)) for a, b in old["distances"]]
            else:
                coarse_frames = len(_coarse_positions(len(s.keyframes), s.coarse))
        renderer = _Renderer(adapter, journey, s, height, width, n, progress, hooks)
        try:
            if s.pacing == "perceptual" and measured is None:
                # every frame may move once the coarse pass has measured the path: count them all
                renderer.set_total(renderer.steps_for(coarse_frames) + renderer.steps_for(n))
                write_json_atomic(run_dir / RUN_FILE, info)
                measured = _measure_coarse(renderer, len(s.keyframes), s.coarse, measure)
                rendered += coarse_frames
            if s.pacing == "perceptual":
                assert measured is not None
                plan = plan_travel(
                    s.keyframes,
                    fps=s.fps,
                    seconds=prep.seconds,
                    frames_per_segment=s.frames_per_segment,
                    pacing="perceptual",
                    audio=prep.envelope,
                    audio_start=s.audio_start,
                    snap_beats=s.snap_beats,
                    distances=measured,
                )
                info["perceptual"] = {
                    "coarse": s.coarse,
                    "meter": _meter_name(meter),
                    "distances": [[a, b] for a, b in measured],
                }
            assert plan is not None
            info["plan"] = plan.record()
            info["frames"] = names
            old_plan = (previous or {}).get("plan") or {}
            old_pos = list(zip(old_plan.get("segment", []), old_plan.get("t", [])))
            todo = [
                i
                for i in range(n)
                if not (
                    i < len(old_pos)
                    and tuple(old_pos[i]) == plan.position(i)
                    and (frames_dir / frame_name(i)).is_file()
                )
            ]
            for i in todo:  # nothing on disk disagrees with the run.json written next
                (frames_dir / frame_name(i)).unlink(missing_ok=True)
            write_json_atomic(run_dir / RUN_FILE, info)
            # one render per distinct position (held frames repeat one)
            targets: dict[tuple[int, float], list[int]] = {}
            for i in todo:
                targets.setdefault(plan.position(i), []).append(i)
            unique = list(targets)
            renderer.set_total(renderer.done + renderer.steps_for(len(unique)))

            def write(j: int, image: Tensor) -> None:
                for i in targets[unique[j]]:
                    target = frames_dir / frame_name(i)
                    save_image(image, target)
                    if on_frame is not None:
                        on_frame(i, target)

            if unique:
                renderer.render(unique, write)
                rendered += len(unique)
            else:
                logger.info("all %d frames already rendered in %s", n, run_dir)
        except RenderCancelled:
            info["status"] = "cancelled"
            write_json_atomic(run_dir / RUN_FILE, info)
            raise
        info["segments"] = [_segment_record(journey, plan, k) for k in range(len(s.keyframes) - 1)]
        info.update(adapter.describe())  # the scheduler actually used
    finally:
        if renderer is not None:
            renderer.close()
        if restore is not None:
            adapter.use_scheduler(restore)

    from whichway._files import write_atomic

    frames = tuple(frames_dir / frame_name(i) for i in range(n))
    spread = None
    if s.pacing == "perceptual":
        assert measured is not None and measure is not None
        before = [x for _, steps in measured for x in steps]
        old_after = ((previous or {}).get("perceptual") or {}).get("steps_after")
        if (
            rendered == 0
            and old_after is not None
            and len(old_after) == len(frames) - 1
            and ((previous or {}).get("perceptual", {}).get("meter") == _meter_name(meter))
        ):
            after = list(
                old_after
            )  # the same frames as the run that measured them: nothing to redo
        else:
            after = _measure_frames(frames, measure)
        spread = {"before": _spread(before), "after": _spread(after)}
        info["perceptual"].update(
            steps_before=before,
            steps_after=after,
            spread_before=spread["before"],
            spread_after=spread["after"],
        )

    # strip: the keyframes, then a sample of frames
    def picture(i: int) -> Image.Image:
        with Image.open(frames[i]) as im:
            return im.convert("RGB")

    sample = sorted({round(j * (n - 1) / 7) for j in range(8)}) if n > 1 else [0]
    columns = max(len(plan.keyframe_frames), len(sample))
    blank = Image.new("RGB", picture(0).size, "white")
    keys = [picture(i) for i in plan.keyframe_frames]
    images = keys + [blank] * (columns - len(keys)) + [picture(i) for i in sample]
    labels = [
        f"K{k + 1} {i / s.fps:.2f}s" for k, i in enumerate(plan.keyframe_frames)
    ]  # prompts: run.json
    labels += [""] * (columns - len(keys)) + [f"{i / s.fps:.2f}s" for i in sample]
    strip = run_dir / "strip.png"
    write_atomic(strip, labelled_grid(images, labels, columns=columns).save)

    video = None
    if s.format == "mp4":
        video = write_video(
            frames_dir,
            run_dir / f"{VIDEO_NAME}.mp4",
            fps=s.fps,
            audio=s.audio,
            audio_start=s.audio_start,
        )
    elif s.format is not None:
        video = write_animation(
            [picture(i) for i in range(n)], run_dir / f"{VIDEO_NAME}.{s.format}", fps=s.fps
        )
    info.update(status="done", strip=strip.name, video=None if video is None else video.name)
    write_json_atomic(run_dir / RUN_FILE, info)
    return TravelResult(
        run_dir, plan, frames, strip, video, tuple(info["segments"]), rendered, spread
    )


# --- schedules ----------------------------------------------------------------------------------

SCHEDULE_KEYS = (
    "fps",
    "seconds",
    "frames_per_segment",
    "pacing",
    "coupling",
    "latent",
    "seed",
    "steps",
    "guidance",
    "height",
    "width",
    "negative_prompt",
    "inversion_steps",
    "inversion_guidance",
    "audio",
    "audio_start",
    "audio_feature",
    "audio_floor",
    "snap_beats",
    "coarse",
    "batch_size",
    "format",
    "keyframe",
    "prompts",
)
"""Valid top-level keys of a schedule file: settings, then ``[[keyframe]]`` or ``[prompts]``."""
KEYFRAME_KEYS = ("prompt", "seed", "image", "at", "frame", "negative_prompt", "coupling", "latent")
_SETTING_TYPES: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(
        ("fps", "seconds", "guidance", "inversion_guidance", "audio_start", "audio_floor"),
        (int, float),
    ),
    **dict.fromkeys(
        ("frames_per_segment", "seed", "steps", "height", "width", "inversion_steps", "coarse"),
        (int,),
    ),
    "batch_size": (int, str),
    **dict.fromkeys(
        ("pacing", "coupling", "latent", "negative_prompt", "audio", "audio_feature", "format"),
        (str,),
    ),
    "snap_beats": (bool,),
}
"""Valid keys of one ``[[keyframe]]`` entry (``at`` in seconds or ``frame``, not both)."""


@dataclass(frozen=True)
class Schedule:
    """A schedule file, read: its settings (keys of :class:`TravelSettings`, paths resolved
    against the file's folder) and its keyframe entries (``frame`` numbers not yet converted)."""

    path: Path
    settings: dict[str, Any]
    entries: tuple[dict[str, Any], ...]

    def keyframes(self, fps: float) -> tuple[Keyframe, ...]:
        """The keyframes, ``frame = n`` entries placed at n / fps seconds (frame n exactly)."""
        out = []
        for k, entry in enumerate(self.entries):
            entry = dict(entry)
            frame = entry.pop("frame", None)
            if frame is not None:
                entry["at"] = frame / fps
            try:
                out.append(Keyframe(**entry))
            except ValueError as exc:
                raise ValueError(f"{self.path}: keyframe {k + 1}: {exc}") from None
        return tuple(out)

    def to_settings(self, **overrides: Any) -> TravelSettings:
        """TravelSettings of this schedule; ``overrides`` that are not None win over its values
        (e.g. a front end's fields), the rest take :class:`TravelSettings`' defaults."""
        values = {**self.settings, **{k: v for k, v in overrides.items() if v is not None}}
        fps = values.get("fps", 24.0)
        return TravelSettings(keyframes=self.keyframes(fps), **values)


def _unknown(where: str, got: Sequence[str], valid: Sequence[str]) -> None:
    unknown = [k for k in got if k not in valid]
    if unknown:
        raise ValueError(
            f"unknown key(s) {', '.join(repr(k) for k in unknown)} in {where}; valid keys are: {', '.join(valid)}"
        )


def read_schedule(path: str | os.PathLike[str]) -> Schedule:
    """Read a travel schedule (TOML, or JSON with the same structure).

    Either a list of keyframe tables::

        fps = 24
        audio = "song.mp3"
        [[keyframe]]
        prompt = "a cat"
        seed = 1
        [[keyframe]]
        prompt = "a dog"
        at = 4.0              # seconds (or frame = 96)
        coupling = "clip"     # for the segment leaving this keyframe

    or a Deforum-style table of prompts keyed by frame number (``[prompts]`` with ``0 = "a cat"``,
    ``48 = "a dog"``; a JSON file may be that table alone). Unknown keys (typos) are a ValueError
    listing the valid ones. Relative ``image`` and ``audio`` paths are resolved against the file's
    folder.
    """
    import json

    try:
        import tomllib
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        import tomli as tomllib

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"schedule file {str(p)!r} does not exist")
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(p.read_text(encoding="utf-8"))
        else:
            with p.open("rb") as fh:
                data = tomllib.load(fh)
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"could not read schedule {str(p)!r}: {exc}") from exc
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(
            f"schedule {str(p)!r} is not valid {p.suffix.lstrip('.').upper() or 'TOML'}: {exc}"
        ) from exc
    if not isinstance(data, dict):
        raise ValueError(f"schedule {str(p)!r} must be a table of settings and keyframes")
    if data and all(str(k).strip().isdigit() for k in data):
        data = {"prompts": data}  # a bare Deforum table {frame: prompt}
    _unknown(f"schedule {p.name}", list(data), SCHEDULE_KEYS)
    settings = {k: v for k, v in data.items() if k not in ("keyframe", "prompts")}
    for key, value in settings.items():
        kinds = _SETTING_TYPES[key]
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            what = {int: "an integer", str: "text", bool: "true or false"}.get(kinds[0], "a number")
            raise ValueError(f"schedule {p.name}: {key} must be {what}, got {value!r}")
    if "keyframe" in data and "prompts" in data:
        raise ValueError(
            f"schedule {p.name}: give [[keyframe]] tables or a [prompts] table, not both"
        )
    entries: list[dict[str, Any]] = []
    if "prompts" in data:
        table = data["prompts"]
        if not isinstance(table, dict):
            raise ValueError(
                f'schedule {p.name}: [prompts] must map frame numbers to prompts, e.g. 0 = "a cat"'
            )
        for key, prompt in table.items():
            if not str(key).strip().isdigit():
                raise ValueError(
                    f"schedule {p.name}: [prompts] keys must be frame numbers, got {key!r}"
                )
            entries.append({"prompt": prompt, "frame": int(str(key).strip())})
        entries.sort(key=lambda e: e["frame"])
    elif "keyframe" in data:
        items = data["keyframe"]
        if not isinstance(items, list) or any(not isinstance(e, dict) for e in items):
            raise ValueError(f"schedule {p.name}: keyframe must be a list of tables ([[keyframe]])")
        for k, entry in enumerate(items):
            _unknown(f"keyframe {k + 1} of schedule {p.name}", list(entry), KEYFRAME_KEYS)
            if "prompt" not in entry:
                raise ValueError(f"schedule {p.name}: keyframe {k + 1} has no prompt")
            if "at" in entry and "frame" in entry:
                raise ValueError(
                    f"schedule {p.name}: keyframe {k + 1} gives both at (seconds) and frame; keep one"
                )
            frame = entry.get("frame")
            if frame is not None and (
                isinstance(frame, bool) or not isinstance(frame, int) or frame < 0
            ):
                raise ValueError(
                    f"schedule {p.name}: keyframe {k + 1} frame must be an integer >= 0, got {frame!r}"
                )
            entries.append(dict(entry))
    else:
        raise ValueError(
            f"schedule {p.name} has no keyframes: add [[keyframe]] tables or a [prompts] table"
        )
    for entry in entries:
        if isinstance(entry.get("image"), str):
            entry["image"] = str((p.parent / entry["image"]).expanduser())
    if isinstance(settings.get("audio"), str):
        settings["audio"] = str((p.parent / settings["audio"]).expanduser())
    if settings.get("format") == "none":
        settings["format"] = None
    return Schedule(p, settings, tuple(entries))
