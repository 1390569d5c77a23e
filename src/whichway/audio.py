"""Music for travel videos: decode a track, measure its envelope and beats, and pace motion by it.

A track is decoded mono (librosa over soundfile; mp3 through librosa's decoder). Its envelope
e(τ) ≥ 0 is the onset strength (how much new sound starts at τ) or the RMS loudness, sampled
every ``hop_length`` samples. Pacing turns the envelope into motion: inside a segment that runs
over video times [τ₀, τ₁], a frame at τ gets the local time

.. math::
    t(\\tau) = F(\\tau) / F(\\tau_1), \\qquad
    F(\\tau) = \\int_{\\tau_0}^{\\tau} \\Big(\\frac{e(s)}{\\bar e} + f\\Big)\\,ds,

with :math:`\\bar e` the mean of e over the whole video and f the floor (a fraction of the mean
speed) so motion never stalls: t moves fast on beats and slowly, but never not at all, between.
e is linear between its samples, so F is integrated exactly (trapezoids on the union of the
envelope's and the frames' times).

Needs the ``audio`` extra (librosa, soundfile); imported where used.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from whichway._checks import check_choice
from whichway._files import sha256_file

logger = logging.getLogger(__name__)

AUDIO_FEATURES = ("onset", "rms")
"""Envelopes that can drive pacing."""

DEFAULT_SAMPLE_RATE = 22050
DEFAULT_HOP = 512


@dataclass(frozen=True)
class Audio:
    """A decoded track: ``samples`` (n,) float32 mono at ``sample_rate`` Hz."""

    path: str
    samples: np.ndarray
    sample_rate: int
    sha256: str

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self.samples) / self.sample_rate


@dataclass(frozen=True)
class Envelope:
    """An envelope of a track and its beats, on the track's own clock (seconds from its start).

    times : (F,) sample times; values : (F,) e ≥ 0 at those times; beats : (B,) beat times, or
    None when they were not tracked.
    """

    times: np.ndarray
    values: np.ndarray
    beats: np.ndarray | None
    feature: str
    duration: float


def audio_duration(path: str | os.PathLike[str]) -> float | None:
    """The track's length in seconds from its header, without decoding it (None: not known
    that way -- no soundfile, or a format only audioread decodes; then it is known once
    :func:`load_audio` has decoded it)."""
    try:
        import soundfile

        return float(soundfile.info(str(path)).duration)
    except Exception:  # ImportError, or libsndfile cannot read the header
        return None


def load_audio(
    path: str | os.PathLike[str], *, sample_rate: int | None = DEFAULT_SAMPLE_RATE
) -> Audio:
    """Decode wav / flac / ogg / mp3 (anything librosa reads) to mono float32.

    ``sample_rate`` resamples (None keeps the file's). A missing, empty or undecodable file is a
    ValueError naming it.
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"audio file {str(p)!r} does not exist")
    try:
        import librosa
    except ImportError as exc:
        raise ValueError(
            f"reading audio needs the audio extra ({exc.name}); pip install 'whichway[audio]'"
        ) from exc
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # librosa warns before falling back to audioread
            samples, sr = librosa.load(str(p), sr=sample_rate, mono=True)
    except Exception as exc:  # decoders raise many types (soundfile, audioread, EOFError)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"could not decode {str(p)!r} as audio: {reason}") from exc
    if samples.size == 0:
        raise ValueError(f"audio file {str(p)!r} holds no samples")
    return Audio(str(p), np.ascontiguousarray(samples, dtype=np.float32), int(sr), sha256_file(p))


def envelope(
    audio: Audio, feature: str = "onset", *, beats: bool = False, hop_length: int = DEFAULT_HOP
) -> Envelope:
    """The ``onset`` strength or ``rms`` envelope of ``audio``, with times in seconds from the
    start of the track; with ``beats``, also its beats (librosa's tracker on the onset strength;
    its first call compiles, so it runs only when asked)."""
    import librosa

    check_choice("audio feature", feature, AUDIO_FEATURES)
    y, sr = audio.samples, audio.sample_rate
    # the onset strength (a mel spectrogram) only when it is the envelope or the beats need it
    onset = (
        librosa.onset.onset_strength(y=y, sr=sr, hop_length=hop_length)
        if feature == "onset" or beats
        else None
    )
    values = onset if feature == "onset" else librosa.feature.rms(y=y, hop_length=hop_length)[0]
    times = librosa.times_like(values, sr=sr, hop_length=hop_length)
    found = None
    if beats:
        _, found = librosa.beat.beat_track(
            onset_envelope=onset, sr=sr, hop_length=hop_length, units="time"
        )
    return Envelope(
        times=np.asarray(times, dtype=np.float64),
        values=np.maximum(np.asarray(values, dtype=np.float64), 0.0),
        beats=None if found is None else np.asarray(found, dtype=np.float64),
        feature=feature,
        duration=audio.duration,
    )


def _cumulative(env: Envelope, times: np.ndarray, *, scale: float, floor: float) -> np.ndarray:
    """∫_{times[0]}^{times[i]} (e(s) * scale + floor) ds for sorted ``times`` (exact for the
    piecewise-linear e)."""
    inner = env.times[(env.times > times[0]) & (env.times < times[-1])]
    knots = np.union1d(times, inner)
    speed = np.interp(knots, env.times, env.values) * scale + floor
    area = np.concatenate([[0.0], np.cumsum(0.5 * (speed[1:] + speed[:-1]) * np.diff(knots))])
    return np.interp(times, knots, area)


def mean_level(env: Envelope, start: float, stop: float) -> float:
    """Time average of e over [start, stop] seconds of the track."""
    if stop <= start:
        raise ValueError(f"empty audio window [{start}, {stop}]")
    total = _cumulative(env, np.array([start, stop], dtype=np.float64), scale=1.0, floor=0.0)[-1]
    return float(total / (stop - start))


def paced_times(env: Envelope, times: np.ndarray, *, mean: float, floor: float) -> np.ndarray:
    """Local t ∈ [0, 1] of frames at track times ``times`` (sorted, (M,), M ≥ 2) in one segment:
    t = F(τ)/F(τ_end), F the integral of e/mean + floor from ``times[0]`` (module docstring).
    First 0, last 1, non-decreasing; strictly increasing when ``floor > 0``. Falls back to
    uniform when the segment is silent and the floor is 0."""
    tau = np.asarray(times, dtype=np.float64)
    if tau.ndim != 1 or tau.size < 2 or np.any(np.diff(tau) <= 0):
        raise ValueError("paced_times needs at least 2 strictly increasing times")
    if floor < 0:
        raise ValueError(f"the audio floor must be >= 0, got {floor}")
    scale = 1.0 / mean if mean > 0 else 0.0
    cum = _cumulative(env, tau, scale=scale, floor=floor)
    if cum[-1] <= 0:
        logger.warning(
            "silent segment at %.2f-%.2f s and no floor: uniform pacing there", tau[0], tau[-1]
        )
        return (tau - tau[0]) / (tau[-1] - tau[0])
    t = cum / cum[-1]
    t[0], t[-1] = 0.0, 1.0
    return t


def nearest_beat(env: Envelope, time: float) -> float:
    """The detected beat closest to ``time`` (track clock); ``time`` itself when no beat was found."""
    if env.beats is None:
        raise ValueError("the envelope has no beats: compute it with envelope(..., beats=True)")
    if env.beats.size == 0:
        return time
    return float(env.beats[np.argmin(np.abs(env.beats - time))])
