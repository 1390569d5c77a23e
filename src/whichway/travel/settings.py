"""What defines a journey: its :class:`Keyframe` stops and the run's :class:`TravelSettings`,
each checked on construction (nothing here needs a model or a file)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass, fields
from typing import Any

from whichway._checks import SettingError, check_batch_size, check_choice
from whichway.prompts.syntax import check_prompts_syntax, short_repr, split_negative

PACINGS = ("uniform", "perceptual", "audio")
TRAVEL_LATENTS = ("fixed", "cog", "slerp", "lerp")
"""Latent paths a segment can take (NAO needs equally spaced points, which pacing does not keep)."""
MOTION_NOISES = ("path", "shuffled")
"""Initial noise of a motion journey: each frame's latent on the travel's latent path, or
FreeNoise's shuffled repeats of the first context window's noise."""
MOTION_KEYS = ("motion", "context_length", "context_stride", "context_weighting", "motion_noise")
"""The settings of a motion journey (left out of the record of a still one)."""
TRAVEL_METHODS = ("plain", "aid-outer", "aid-inner", "paid", "diffmorpher")
"""Methods a segment can take (:mod:`whichway.attention`; PAID with its guide prompt,
DiffMorpher between two image keyframes)."""
KEYFRAME_METHOD_KEYS = ("method", "guide_prompt")
"""A keyframe's method settings for the segment leaving it (recorded only when set)."""
DEFAULT_AUDIO_FLOOR = 0.1
"""Speed floor under audio pacing, as a fraction of the mean speed."""


@dataclass(frozen=True)
class Keyframe:
    """One stop of a journey.

    ``at`` is its time in seconds (None: spread between the neighbouring keyframes that have one;
    the first keyframe opens the video, the last closes it). ``image`` makes it a real image,
    inverted to its initial latent (as morph does). ``coupling``, ``latent`` and ``method``
    override the run's for the segment that *leaves* this keyframe; ``guide_prompt`` is that
    segment's PAID guide (the prompt of its middle frames, method ``paid`` only).
    """

    prompt: str
    _: KW_ONLY
    seed: int | None = None
    image: str | None = None
    at: float | None = None
    negative_prompt: str | None = None
    coupling: str | None = None
    latent: str | None = None
    method: str | None = None
    guide_prompt: str | None = None

    def __post_init__(self) -> None:
        from whichway.clouds import COUPLING_METHODS

        if not isinstance(self.prompt, str):
            raise ValueError(f"a keyframe prompt must be text, got {self.prompt!r}")
        # Deforum's convention: "positive --neg negative" (the negative travels with the keyframe)
        positive, negative = split_negative(self.prompt, f"prompt {short_repr(self.prompt)}")
        if negative is not None:
            if self.negative_prompt is not None:
                raise ValueError(
                    f"keyframe {short_repr(self.prompt)} gives a negative prompt twice (--neg in the "
                    "prompt and negative_prompt); keep one"
                )
            object.__setattr__(self, "prompt", positive)
            object.__setattr__(self, "negative_prompt", negative or None)
        check_prompts_syntax(("prompt", self.prompt), ("negative prompt", self.negative_prompt))
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
        if self.method is not None:
            check_choice("method", self.method, TRAVEL_METHODS)
        if self.guide_prompt is not None:
            if not isinstance(self.guide_prompt, str) or not self.guide_prompt.strip():
                raise ValueError(
                    f"a guide prompt must be non-empty text, got {self.guide_prompt!r}"
                )
            check_prompts_syntax(("guide prompt", self.guide_prompt))

    def record(self) -> dict[str, Any]:
        """The keyframe as a JSON-able dict (``method`` and ``guide_prompt`` only when set, so
        runs recorded before they existed still resume)."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if not (f.name in KEYFRAME_METHOD_KEYS and getattr(self, f.name) is None)
        }


def _check_latent(latent: str) -> None:
    if latent == "nao":
        raise ValueError(
            "latent method 'nao' optimises equally spaced points, which travel pacing does not keep; "
            "use cog, slerp, lerp or fixed"
        )
    check_choice("latent method", latent, TRAVEL_LATENTS)


def check_timing(
    fps: float, seconds: float | None, pacing: str, snap_beats: bool, has_track: bool
) -> None:
    """The video's timing, one-line :class:`~whichway._checks.SettingError` otherwise: ``fps``
    a finite number > 0, ``seconds`` (None: from elsewhere) > 0, and a track (``has_track``)
    for audio pacing or beat snapping. :class:`TravelSettings` and
    :func:`whichway.travel.plan_travel` both check with it."""
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise SettingError("{fps} must be > 0, got {got}", got=fps)
    if seconds is not None and not seconds > 0:
        raise SettingError("{seconds} must be > 0, got {got}", got=seconds)
    if not has_track and (pacing == "audio" or snap_beats):
        what = "{pacing} audio" if pacing == "audio" else "{snap_beats}"
        raise SettingError(what + " needs a track: give {audio}")


def check_times_increase(keyframes: Sequence[Keyframe]) -> None:
    timed = [(k, kf.at) for k, kf in enumerate(keyframes) if kf.at is not None]
    for (ka, a), (kb, b) in itertools.pairwise(timed):
        if b <= a:
            raise ValueError(
                f"keyframe times must increase: keyframe {kb + 1} at {b:g} s is not after keyframe {ka + 1} at {a:g} s"
            )


@dataclass(frozen=True)
class TravelSettings:
    """Everything that defines a travel run. Keyframes without a seed take ``seed``; without a
    negative prompt, ``negative_prompt``; ``coupling``, ``latent`` and ``method`` apply to every
    segment whose start keyframe does not override them. A segment's method renders it plainly,
    with AID between its keyframes (``aid-outer``, ``aid-inner``; ``warmup_ratio``,
    ``aid_layers`` and ``fused`` shared by every AID segment) or with PAID (``paid``: its
    middle frames take the guide prompt of its start keyframe, else ``guide_prompt``) or with
    DiffMorpher between two image keyframes (``diffmorpher``: a LoRA per keyframe image, fitted
    once per run with ``lora_rank``, ``lora_steps``, ``lora_lr``; ``attn_lambda``)
    (:mod:`whichway.attention`). Under ``latent="cog"`` a segment whose keyframes share one
    seed keeps that latent (``fixed``)."""

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
    method: str = "plain"
    warmup_ratio: float = 0.5
    aid_layers: str = "both"
    fused: bool = True
    guide_prompt: str | None = None
    lora_rank: int = 16
    lora_steps: int = 200
    lora_lr: float = 2e-4
    attn_lambda: float = 0.6
    motion: str | None = None
    context_length: int | None = None
    context_stride: int | None = None
    context_weighting: str = "pyramid"
    motion_noise: str = "path"

    def __post_init__(self) -> None:
        from whichway.audio import AUDIO_FEATURES
        from whichway.clouds import COUPLING_METHODS
        from whichway.media import ANIMATION_FORMATS

        object.__setattr__(self, "keyframes", tuple(self.keyframes))
        if any(not isinstance(k, Keyframe) for k in self.keyframes):
            raise ValueError("keyframes must be Keyframe objects")
        if len(self.keyframes) < 2:
            raise ValueError(f"a travel needs at least 2 keyframes, got {len(self.keyframes)}")
        check_timing(self.fps, self.seconds, self.pacing, self.snap_beats, self.audio is not None)
        if self.seconds is not None and self.frames_per_segment is not None:
            raise ValueError(
                "give the video's length once: seconds or frames per segment, not both"
            )
        check_prompts_syntax(("negative prompt", self.negative_prompt))
        check_choice("pacing", self.pacing, PACINGS)
        check_choice("coupling", self.coupling, COUPLING_METHODS)
        _check_latent(self.latent)
        self._check_methods()
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
        self._check_motion()
        check_times_increase(self.keyframes)
        for k in range(len(self.keyframes) - 1):
            a, b = self.keyframes[k], self.keyframes[k + 1]
            if self.segment_latent(k) == "fixed" and a.image is None and b.image is None:
                sa, sb = self.seed_of(k), self.seed_of(k + 1)
                if sa != sb:
                    raise SettingError(
                        "segment {k} ({a!r} -> {b!r}) uses latent 'fixed' but its keyframes have "
                        "seeds {sa} and {sb}; give them one seed or use {latent} cog",
                        k=k + 1, a=a.prompt, b=b.prompt, sa=sa, sb=sb,
                    )  # fmt: skip

    def _check_methods(self) -> None:
        """Every segment's method runnable: PAID segments have a guide prompt, guide prompts
        only where PAID uses them, nothing set on the last keyframe (it leaves no segment)."""
        from whichway.attention.methods import AID_LAYERS, check_diffmorpher, check_warmup_ratio

        check_choice("method", self.method, TRAVEL_METHODS)
        check_diffmorpher(self.lora_rank, self.lora_steps, self.lora_lr, self.attn_lambda)
        check_choice("AID layers", self.aid_layers, AID_LAYERS)
        check_warmup_ratio(self.warmup_ratio)
        check_prompts_syntax(("guide prompt", self.guide_prompt))
        n = len(self.keyframes)
        last = self.keyframes[-1]
        for name in KEYFRAME_METHOD_KEYS:
            if getattr(last, name) is not None:
                raise ValueError(
                    f"keyframe {n} is the last one: its {name.replace('_', ' ')} would apply to the "
                    "segment leaving it, and there is none; set it on the keyframe that starts the segment"
                )
        for k in range(n - 1):
            kf, method = self.keyframes[k], self.segment_method(k)
            where = self.segment_name(k)
            if kf.guide_prompt is not None and method != "paid":
                raise ValueError(
                    f"keyframe {k + 1} gives a guide prompt, but {where} uses method {method}; a "
                    "guide prompt is PAID's: give that keyframe method paid or drop the guide"
                )
            if method == "paid" and not self.segment_guide(k):
                raise SettingError(
                    "{where} uses method paid but has no guide prompt: give keyframe {k} a guide "
                    "prompt ({keyframe_guide_prompt}) or set {guide_prompt} for every paid segment",
                    where=where,
                    k=k + 1,
                )
            if method == "diffmorpher" and (
                kf.image is None or self.keyframes[k + 1].image is None
            ):
                raise SettingError(
                    "{where} uses method diffmorpher, which morphs between two images: give "
                    "keyframes {k} and {k2} an image ({keyframe_image}), or use another method "
                    "for it",
                    where=where,
                    k=k + 1,
                    k2=k + 2,
                )
        if self.guide_prompt is not None and "paid" not in self.segment_methods():
            raise SettingError(
                "{guide_prompt} is PAID's prompt for the middle frames, and no segment uses method "
                "paid: set {method} to paid (or a keyframe's method to paid: {keyframe_method}) "
                "or drop it"
            )

    def _check_motion(self) -> None:
        from whichway.motion.windows import check_context

        check_context(self.context_length, self.context_stride, self.context_weighting)
        check_choice("motion noise", self.motion_noise, MOTION_NOISES)
        if self.motion is None:
            given = [
                name
                for name, value in (
                    ("--context-length", self.context_length),
                    ("--context-stride", self.context_stride),
                    ("--motion-noise", None if self.motion_noise == "path" else self.motion_noise),
                )
                if value is not None
            ]
            if given:
                raise ValueError(f"{given[0]} applies to motion journeys: give --motion ADAPTER")
        elif self.attention_methods():
            raise SettingError(
                "{method} {m} (attention interpolation) renders stills; it does not combine with "
                "{motion} yet: drop one of them",
                m=self.attention_methods()[0],
            )
        elif any(kf.image is not None for kf in self.keyframes):
            raise SettingError(
                "{motion} renders from noise; image keyframes (inverted latents) are not "
                "supported with a motion adapter yet: give prompts only"
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

    def segment_method(self, k: int) -> str:
        """The method of segment k (between keyframes k and k + 1)."""
        return self.keyframes[k].method or self.method

    def segment_name(self, k: int) -> str:
        """Segment k as refusals name it: ``segment 2 ('a cat' -> 'a dog')``."""
        a, b = self.keyframes[k].prompt, self.keyframes[k + 1].prompt
        return f"segment {k + 1} ({short_repr(a)} -> {short_repr(b)})"

    def check_families(self, family: str | None) -> None:
        """Refuse a segment method the model's ``family`` cannot run
        (:func:`whichway.attention.methods.check_family`; None: not known, nothing checked):
        the run's method named as the method setting, a keyframe's own method as its segment's
        (the keyframe method setting), each method and segment once."""
        from whichway.attention.methods import check_family

        seen = set()
        for k in range(len(self.keyframes) - 1):
            own = self.keyframes[k].method is not None
            method = self.segment_method(k)
            if (method, own) not in seen:
                seen.add((method, own))
                segment = self.segment_name(k) if own else None
                check_family(method, family, self.aid_layers, segment=segment)

    def segment_methods(self) -> tuple[str, ...]:
        """The method of every segment, in order (K - 1 of them)."""
        return tuple(self.segment_method(k) for k in range(len(self.keyframes) - 1))

    def attention_methods(self) -> tuple[str, ...]:
        """The distinct methods other than plain that some segment uses, in order."""
        return tuple(m for m in dict.fromkeys(self.segment_methods()) if m != "plain")

    def segment_guide(self, k: int) -> str | None:
        """PAID's guide prompt of segment k (its start keyframe's, else the run's); None unless
        the segment is paid."""
        if self.segment_method(k) != "paid":
            return None
        return self.keyframes[k].guide_prompt or self.guide_prompt

    def segment_method_record(self, k: int) -> dict[str, Any]:
        """What segment k's method is and every setting of it that changes its pixels
        (``run.json``'s ``segments``; a rerun renders again the segments whose entry changed)."""
        method = self.segment_method(k)
        out: dict[str, Any] = {"method": method}
        if method == "diffmorpher":
            from whichway.attention.methods import DIFFMORPHER_KEYS

            out.update({name: getattr(self, name) for name in DIFFMORPHER_KEYS})
        elif method != "plain":
            out.update(warmup_ratio=self.warmup_ratio, aid_layers=self.aid_layers, fused=self.fused)
        if method == "paid":
            out["guide_prompt"] = self.segment_guide(k)
        return out

    def record(self) -> dict[str, Any]:
        """JSON-able settings; keyframe times are kept apart (``keyframe_times``) because they
        move frames, not pixels."""
        from whichway.attention.methods import ATTENTION_KEYS, DIFFMORPHER_KEYS

        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "keyframes"}
        if "diffmorpher" not in self.segment_methods():  # and before travel took DiffMorpher
            out = {k: v for k, v in out.items() if k not in DIFFMORPHER_KEYS}
        if not self.attention_methods():  # runs recorded before attention methods existed resume
            out = {k: v for k, v in out.items() if k not in ATTENTION_KEYS}
        elif self.guide_prompt is None:  # and those recorded before travel took PAID
            del out["guide_prompt"]
        if self.motion is None:  # and before motion journeys existed
            out = {k: v for k, v in out.items() if k not in MOTION_KEYS}
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
