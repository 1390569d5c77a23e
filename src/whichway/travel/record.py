"""What a travel run leaves in its folder: frame file names, the settings that decide pixels (a
re-run that changes only the others keeps its frames), the per-segment entries of ``run.json``,
the strip and the video."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from whichway.models.base import Adapter
    from whichway.travel.plan import Prepared, TravelPlan
    from whichway.travel.settings import TravelSettings

FRAME_DIGITS = 5
VIDEO_NAME = "travel"

# Settings that do not change any frame's pixels once its position (segment, t) is known: a run
# that differs only in these keeps every frame whose position is unchanged.
PRESENTATION_KEYS = frozenset(
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


def pixel_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The part of a ``run.json`` ``"settings"`` entry that decides the pixels of *every* frame:
    without :data:`PRESENTATION_KEYS` and without the segments' method settings (run-level and
    per keyframe), which :func:`stale_segments` compares segment by segment instead."""
    from whichway.attention.methods import ATTENTION_KEYS, DIFFMORPHER_KEYS
    from whichway.travel.settings import KEYFRAME_METHOD_KEYS

    dropped = PRESENTATION_KEYS | set(ATTENTION_KEYS) | set(DIFFMORPHER_KEYS)
    out = {k: v for k, v in settings.items() if k not in dropped}
    if isinstance(out.get("keyframes"), list):
        out["keyframes"] = [
            {k: v for k, v in kf.items() if k not in KEYFRAME_METHOD_KEYS}
            if isinstance(kf, dict)
            else kf
            for kf in out["keyframes"]
        ]
    return out


def stale_segments(previous: dict[str, Any] | None, s: TravelSettings) -> set[int]:
    """The segments whose method (or a setting of it) differs from the ``previous`` run's (of
    the same :func:`pixel_settings`): their frames are rendered again, the others' kept. Runs
    recorded before travel had methods read as plain; an unreadable record makes every segment
    stale."""
    from whichway.travel.settings import TravelSettings

    segments = set(range(len(s.keyframes) - 1))
    if previous is None:
        return segments
    try:
        old = TravelSettings.from_record(previous.get("settings", {}))
    except (TypeError, ValueError):
        return segments
    if len(old.keyframes) != len(s.keyframes):
        return segments
    return {k for k in segments if old.segment_method_record(k) != s.segment_method_record(k)}


def frame_name(index: int) -> str:
    """``frames/00042.png`` style file name of frame ``index``."""
    return f"{index:0{FRAME_DIGITS}d}.png"


def _rgb(path: Path) -> Image.Image:
    """The frame file at ``path`` as an RGB PIL image, read fully (the file is closed)."""
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


def settings_record(adapter: Adapter, s: TravelSettings, height: int, width: int) -> dict[str, Any]:
    """The ``run.json`` ``"settings"`` entry: the settings, the resolved size, the model and its
    pixel-changing runtime options (what a resumed run must match)."""
    from whichway.morph import with_runtime

    return with_runtime(
        {**s.record(), "height": height, "width": width, "model": adapter.model_id}, adapter
    )


def remove_stale_frames(frames_dir: Path, previous: dict[str, Any] | None, n: int) -> None:
    """Delete the frames no run of these pixel settings made: all of them without a ``previous``
    run, else those past the end (``n`` frames) or not named by :func:`frame_name`."""
    for stale in frames_dir.glob("*.png"):
        index = int(stale.stem) if stale.stem.isdigit() else -1
        if previous is None or index >= n or len(stale.stem) != FRAME_DIGITS:
            stale.unlink()


def start_record(
    adapter: Adapter, s: TravelSettings, prep: Prepared, settings: dict[str, Any]
) -> dict[str, Any]:
    """``run.json`` of a run just started (``"status": "running"``): model, settings, keyframes,
    the track's SHA-256 and offsets, library versions."""
    from whichway.morph import versions

    library_versions = versions()
    n = prep.n_frames
    return {
        "whichway": library_versions.get("whichway", ""),
        "command": "travel",
        **adapter.describe(),
        "settings": settings,
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


def frames_to_render(
    frames_dir: Path,
    plan: TravelPlan,
    previous: dict[str, Any] | None,
    stale: set[int] | frozenset[int] = frozenset(),
) -> list[int]:
    """The frames that are missing, whose position (segment, t) differs from the previous
    run's plan, or whose segment is in ``stale`` (its method changed); their old files are
    removed, so nothing on disk disagrees with the ``run.json`` written next."""
    old_plan = (previous or {}).get("plan") or {}
    old_pos = list(zip(old_plan.get("segment", []), old_plan.get("t", [])))
    todo = [
        i
        for i in range(plan.n_frames)
        if not (
            i < len(old_pos)
            and plan.segment[i] not in stale
            and tuple(old_pos[i]) == plan.position(i)
            and (frames_dir / frame_name(i)).is_file()
        )
    ]
    for i in todo:
        (frames_dir / frame_name(i)).unlink(missing_ok=True)
    return todo


def write_strip(run_dir: Path, frames: Sequence[Path], plan: TravelPlan) -> Path:
    """``strip.png``: the keyframes (labelled K1, K2, ... with their times), then eight frames
    sampled evenly over the video."""
    from PIL import Image

    from whichway._files import write_atomic
    from whichway.media import labelled_grid

    n, fps = len(frames), plan.fps
    sample = sorted({round(j * (n - 1) / 7) for j in range(8)}) if n > 1 else [0]
    columns = max(len(plan.keyframe_frames), len(sample))
    blank = Image.new("RGB", _rgb(frames[0]).size, "white")
    keys = [_rgb(frames[i]) for i in plan.keyframe_frames]
    images = keys + [blank] * (columns - len(keys)) + [_rgb(frames[i]) for i in sample]
    labels = [f"K{k + 1} {i / fps:.2f}s" for k, i in enumerate(plan.keyframe_frames)]
    labels += [""] * (columns - len(keys)) + [
        f"{i / fps:.2f}s" for i in sample
    ]  # prompts: run.json
    strip = run_dir / "strip.png"
    write_atomic(strip, labelled_grid(images, labels, columns=columns).save)
    return strip


def write_travel_video(
    run_dir: Path, frames_dir: Path, frames: Sequence[Path], s: TravelSettings
) -> Path | None:
    """``travel.mp4`` with the track cut from ``audio_start`` muxed in, or a GIF / WebP without
    sound (``s.format``); None when no video is asked for."""
    from whichway.media import write_animation, write_video

    if s.format == "mp4":
        return write_video(
            frames_dir,
            run_dir / f"{VIDEO_NAME}.mp4",
            fps=s.fps,
            audio=s.audio,
            audio_start=s.audio_start,
        )
    if s.format is None:
        return None
    return write_animation(
        [_rgb(p) for p in frames], run_dir / f"{VIDEO_NAME}.{s.format}", fps=s.fps
    )
