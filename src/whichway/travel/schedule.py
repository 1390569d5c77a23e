"""Schedule files: a journey written as TOML or JSON (``[[keyframe]]`` tables, or a Deforum-style
``[prompts]`` table keyed by frame), read into a :class:`Schedule` and from there into
:class:`~whichway.travel.settings.TravelSettings`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from whichway.travel.settings import Keyframe, TravelSettings

SCHEDULE_SETTINGS = (
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
    "method",
    "warmup_ratio",
    "aid_layers",
    "fused",
    "guide_prompt",
    "lora_rank",
    "lora_steps",
    "lora_lr",
    "attn_lambda",
    "motion",
    "context_length",
    "context_stride",
    "context_weighting",
    "motion_noise",
)
"""The settings a schedule file may set (fields of :class:`TravelSettings`); a front end's options
of the same names win over them."""
SCHEDULE_KEYS = (*SCHEDULE_SETTINGS, "keyframe", "prompts")
"""Valid top-level keys of a schedule file: settings, then ``[[keyframe]]`` or ``[prompts]``."""
KEYFRAME_KEYS = (
    "prompt",
    "seed",
    "image",
    "at",
    "frame",
    "negative_prompt",
    "coupling",
    "latent",
    "method",
    "guide_prompt",
)
"""Valid keys of one ``[[keyframe]]`` entry (``at`` in seconds or ``frame``, not both)."""
_SETTING_TYPES: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(
        (
            "fps",
            "seconds",
            "guidance",
            "inversion_guidance",
            "audio_start",
            "audio_floor",
            "warmup_ratio",
            "lora_lr",
            "attn_lambda",
        ),
        (int, float),
    ),
    **dict.fromkeys(
        (
            "frames_per_segment",
            "seed",
            "steps",
            "height",
            "width",
            "inversion_steps",
            "coarse",
            "context_length",
            "context_stride",
            "lora_rank",
            "lora_steps",
        ),
        (int,),
    ),
    "batch_size": (int, str),
    **dict.fromkeys(
        (
            "pacing",
            "coupling",
            "latent",
            "negative_prompt",
            "audio",
            "audio_feature",
            "format",
            "method",
            "aid_layers",
            "guide_prompt",
            "motion",
            "context_weighting",
            "motion_noise",
        ),
        (str,),
    ),
    "snap_beats": (bool,),
    "fused": (bool,),
}
"""The types each schedule setting may have."""


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
        method = "paid"       # likewise (plain, aid-outer, aid-inner, paid, diffmorpher)
        guide_prompt = "a cat-dog"  # PAID's prompt for that segment's middle frames

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
