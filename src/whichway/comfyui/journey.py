r"""Journeys inside ComfyUI: a keyframe schedule and a frame count to per-frame positions.

A schedule is the text of a node field, in one of two forms:

* FizzNodes / Deforum: ``"0": "a cat", "48": "a dog"`` (frame numbers in increasing order,
  optionally wrapped in braces);
* whichway's TOML (``[[keyframe]]`` tables with ``prompt``, ``seed``, ``frame`` or ``at``, or a
  ``[prompts]`` table), as ``whichway travel SCHEDULE.toml`` reads it
  (:func:`whichway.travel.read_schedule`).

The frames are planned by :func:`whichway.travel.plan_travel` (the same arithmetic as
``whichway travel``): keyframe k lands on its frame, and a frame inside segment k has the local
time t = j / m (uniform) or t(τ) = F(τ)/F(τ_end), F = ∫ (e/ē + floor) over the track's onset or
RMS envelope e (audio pacing, :mod:`whichway.audio`).
"""

from __future__ import annotations

import itertools
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Journey",
    "audio_envelope",
    "check_fixed_noise",
    "journey_frames",
    "parse_schedule",
    "plan_journey",
]


def _fizz_entries(text: str) -> list[tuple[int, str]]:
    body = text.strip()
    if not body.startswith("{"):
        body = "{" + body.rstrip().rstrip(",") + "}"

    def pairs(items: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        return items

    try:
        items = json.loads(body, object_pairs_hook=pairs)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f'schedule is not of the form "0": "a cat", "48": "a dog" ({exc.msg} at character {exc.pos})'
        ) from None
    if not isinstance(items, list):
        raise ValueError('schedule must map frame numbers to prompts, e.g. "0": "a cat"')
    entries: list[tuple[int, str]] = []
    for key, prompt in items:
        if not str(key).strip().isdigit():
            raise ValueError(f"schedule keys must be frame numbers >= 0, got {key!r}")
        if not isinstance(prompt, str):
            raise ValueError(f"the prompt of frame {key} must be text, got {prompt!r}")
        entries.append((int(str(key).strip()), prompt))
    for (fa, _), (fb, _) in itertools.pairwise(entries):
        if fb <= fa:
            raise ValueError(
                f"schedule frame numbers must increase: frame {fb} comes after frame {fa}; "
                "sort the entries (and give each frame one prompt)"
            )
    return entries


def parse_schedule(text: str, fps: float) -> tuple[Any, ...]:
    """The keyframes (:class:`whichway.travel.Keyframe`) of a schedule's text; frame n is at
    n / fps seconds. An empty, malformed or unsorted schedule is a ValueError saying so."""
    from whichway.travel import Keyframe, read_schedule

    if not (text or "").strip():
        raise ValueError('the schedule is empty; write keyframes like "0": "a cat", "48": "a dog"')
    stripped = text.strip()
    if stripped.startswith(('"', "{")):
        entries = _fizz_entries(stripped)
        keyframes = tuple(Keyframe(prompt, at=frame / fps) for frame, prompt in entries)
    else:
        # whichway's TOML schedule, read by the same function as `whichway travel SCHEDULE.toml`
        fd, path = tempfile.mkstemp(suffix=".toml", prefix="whichway-schedule-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            try:
                schedule = read_schedule(path)
                keyframes = schedule.keyframes(fps)
            except ValueError as exc:
                message = str(exc).replace(repr(path), "").replace(" " + os.path.basename(path), "")
                raise ValueError(" ".join(message.split())) from None
        finally:
            os.unlink(path)
        if schedule.settings:
            raise ValueError(
                f"the schedule sets {', '.join(sorted(schedule.settings))}, which are this node's "
                "fields in ComfyUI; remove them from the schedule and set the fields"
            )
        if any(kf.negative_prompt is not None for kf in keyframes):
            raise ValueError(
                "a keyframe negative_prompt is not used by the journey node; connect one negative "
                "CLIPTextEncode to the sampler and remove negative_prompt from the schedule"
            )
        if any(kf.image is not None for kf in keyframes):
            raise ValueError(
                "image keyframes are not supported in ComfyUI's journey node; encode the image "
                "with VAEEncode and use the latent path node"
            )
        timed = [kf.at for kf in keyframes if kf.at is not None]
        if any(b <= a for a, b in itertools.pairwise(timed)):
            raise ValueError(
                "schedule frame numbers (or times) must increase from one keyframe to the next"
            )
    if len(keyframes) < 2:
        raise ValueError(f"a journey needs at least 2 keyframes, the schedule has {len(keyframes)}")
    return keyframes


@dataclass(frozen=True)
class Journey:
    """Where every frame of a journey is.

    keyframes : tuple (K,) of Keyframe
    segment : tuple (N,) of int       segment k of frame i (keyframes k -> k + 1)
    t : tuple (N,) of float           local time of frame i in its segment
    keyframe_frames : tuple (K,) of int
    """

    keyframes: tuple[Any, ...]
    segment: tuple[int, ...]
    t: tuple[float, ...]
    keyframe_frames: tuple[int, ...]

    def seeds(self, seed: int) -> list[int]:
        """Each keyframe's seed: its own, else ``seed`` (as ``whichway travel``)."""
        return [seed if kf.seed is None else kf.seed for kf in self.keyframes]


def audio_envelope(audio: dict[str, Any], feature: str) -> Any:
    """The onset or RMS envelope (:func:`whichway.audio.envelope`) of a ComfyUI AUDIO
    (``{"waveform": (B, channels, samples), "sample_rate": int}``), mixed down to mono."""
    import numpy as np

    from whichway.audio import Audio, envelope

    try:
        waveform, rate = audio["waveform"], int(audio["sample_rate"])
    except (TypeError, KeyError):
        raise ValueError("audio is not a ComfyUI AUDIO; connect a LoadAudio output") from None
    samples = waveform[0].float().mean(dim=0).cpu().numpy().astype(np.float32)
    if samples.size == 0:
        raise ValueError("the audio input holds no samples")
    return envelope(Audio("<ComfyUI AUDIO>", samples, rate, ""), feature)


def plan_journey(
    keyframes: Sequence[Any],
    frames: int,
    *,
    fps: float,
    pacing: str = "uniform",
    audio: Any = None,
) -> Journey:
    """Plan ``frames`` frames through ``keyframes`` (:func:`whichway.travel.plan_travel`):
    keyframes without a frame number are spread evenly, the last one defaults to the last frame."""
    from whichway.travel import plan_travel

    if frames < len(keyframes):
        raise ValueError(
            f"{frames} frames cannot hold {len(keyframes)} keyframes; raise frames to at least {len(keyframes)}"
        )
    for k, kf in enumerate(keyframes):
        if kf.at is not None and round(kf.at * fps) > frames - 1:
            at = round(kf.at * fps)
            raise ValueError(
                f"keyframe {k + 1} is at frame {at} but the journey has {frames} frames "
                f"(0 to {frames - 1}); raise frames to {at + 1}"
            )
    plan = plan_travel(keyframes, fps=fps, seconds=frames / fps, pacing=pacing, audio=audio)
    return Journey(tuple(keyframes), plan.segment, plan.t, plan.keyframe_frames)


def check_fixed_noise(keyframes: Sequence[Any], noise: str, seed: int) -> None:
    """A segment whose noise is ``fixed`` (the node's ``noise``, or its first keyframe's TOML
    ``latent``) keeps its first keyframe's noise for every frame, its last one included, so its
    two keyframes must share one seed (as ``whichway travel`` requires); else a ValueError
    naming the segment and the fix."""
    for k in range(len(keyframes) - 1):
        a, b = keyframes[k], keyframes[k + 1]
        sa = seed if a.seed is None else a.seed
        sb = seed if b.seed is None else b.seed
        if (a.latent or noise) == "fixed" and sa != sb:
            raise ValueError(
                f"segment {k + 1} ({a.prompt!r} -> {b.prompt!r}) has noise 'fixed' but its "
                f"keyframes have seeds {sa} and {sb}, so keyframe {k + 2} would not get its own "
                "seed's noise; give them one seed or set noise to cog"
            )


def journey_frames(
    journey: Journey,
    encoded: Sequence[Any],
    *,
    coupling: str = "ot",
    noise: str = "cog",
    seed: int = 0,
) -> tuple[list[Any], Any, str]:
    """Per-frame CONDITIONING, NOISE and a text table of a planned journey.

    Each segment k is one :func:`whichway.comfyui.conditioning.prompt_path` (the tokens are
    paired once per segment) evaluated at its frames' t; the NOISE moves from keyframe k's seed
    to keyframe k+1's (``fixed`` when they share a seed), so keyframe frames get exactly their
    prompt's conditioning and their seed's noise.

    Parameters
    ----------
    journey : Journey of N frames through K keyframes
    encoded : K ComfyUI CONDITIONINGs, one per keyframe prompt
    coupling, noise : the run's token coupling and noise method; a TOML keyframe's own
        ``coupling`` / ``latent`` wins for the segment that leaves it
    seed : the seed of keyframes without one
    """
    import torch

    from whichway.comfyui.conditioning import prompt_path
    from whichway.comfyui.noise import PathNoise

    if len(encoded) != len(journey.keyframes):
        raise ValueError(f"{len(encoded)} conditionings for {len(journey.keyframes)} keyframes")
    check_fixed_noise(journey.keyframes, noise, seed)
    seeds = journey.seeds(seed)
    n_seg = len(journey.keyframes) - 1
    tensors: list[Any] = []
    pooled: list[Any] = []
    extras: dict[str, Any] | None = None
    per_frame: list[tuple[int, int, float, str]] = []
    rows = ["frame, keyframe segment, t"]
    for k in range(n_seg):
        idx = [i for i, s in enumerate(journey.segment) if s == k]
        if not idx:
            continue
        kf = journey.keyframes[k]
        path = prompt_path(
            encoded[k],
            encoded[k + 1],
            [journey.t[i] for i in idx],
            coupling=kf.coupling or coupling,
            seed=seeds[k],
        )
        tensor, out = path.conditioning[0]
        if tensors and tensor.shape[1:] != tensors[0].shape[1:]:
            raise ValueError(
                f"keyframe {k + 1}'s prompt encodes to {tensor.shape[1]} tokens, an earlier one to "
                f"{tensors[0].shape[1]}; keep every prompt within one 75-token chunk (or equally long)"
            )
        tensors.append(tensor)
        if "pooled_output" in out:
            pooled.append(out["pooled_output"])
        extras = out if extras is None else extras
        method = kf.latent or noise
        for i in idx:
            a, b = seeds[k], seeds[k + 1]
            per_frame.append((a, b if method != "fixed" else a, journey.t[i], method))
            rows.append(f"{i}, {k}, {journey.t[i]:.4f}")
    assert extras is not None
    out = dict(extras)
    if pooled:
        out["pooled_output"] = torch.cat(pooled)
    frame_noise = PathNoise(
        seeds[0],
        seeds[-1],
        noise,
        per_frame=tuple(per_frame),
    )
    return [[torch.cat(tensors), out]], frame_noise, "\n".join(rows)
