"""Pictures and animations: PNG frames, labelled contact strips and grids, GIF / MP4 / WebP.

Images move between modules as float tensors (3, H, W) in [0, 1]; this module is the only place
that turns them into pixels on disk.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image
    from torch import Tensor

ANIMATION_FORMATS = ("gif", "mp4", "webp")


def to_pil(image: Tensor | np.ndarray) -> Image.Image:
    """(3, H, W) float in [0, 1] (tensor or array) -> RGB PIL image (rounded, clipped)."""
    from PIL import Image

    array = image.detach().float().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    if array.ndim != 3 or array.shape[0] not in (1, 3):
        raise ValueError(f"expected an image (3, H, W), got shape {tuple(array.shape)}")
    if array.shape[0] == 1:
        array = np.repeat(array, 3, axis=0)
    pixels = np.clip(np.rint(array.transpose(1, 2, 0) * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def load_image(path: str | os.PathLike[str], size: tuple[int, int] | None = None) -> Tensor:
    """Read an image file as (3, H, W) float32 in [0, 1]; ``size`` = (height, width) resizes.

    Raises a ValueError naming the file when it is missing or not an image.
    """
    import torch
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"image file {str(p)!r} does not exist")
    try:
        with Image.open(p) as img:
            img = img.convert("RGB")
            if size is not None and img.size != (size[1], size[0]):
                img = img.resize((size[1], size[0]), Image.Resampling.LANCZOS)
            array = np.asarray(img, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"could not read {str(p)!r} as an image: {exc}") from exc
    return torch.from_numpy(array.transpose(2, 0, 1).copy())


def save_image(image: Tensor, path: str | os.PathLike[str]) -> Path:
    """Write (3, H, W) in [0, 1] as an 8-bit RGB file, atomically (a crash never leaves half a
    file; an unwritable target is rescued, see :func:`whichway._files.write_atomic`). The format
    comes from the suffix (.png, .jpg, .webp, ...)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"unknown image format {path.suffix!r} for {str(path)!r}; use .png, .jpg or .webp"
        )
    from whichway._files import write_atomic

    picture = to_pil(image)
    return write_atomic(path, lambda tmp: picture.save(tmp, format=fmt))


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def labelled_grid(
    images: Sequence[Image.Image],
    labels: Sequence[str] | None = None,
    *,
    columns: int | None = None,
    cell: int | None = None,
    pad: int = 4,
) -> Image.Image:
    """Lay images out in a grid (row-major), each with an optional caption under it.

    ``columns`` defaults to all in one row (a contact strip); ``cell`` is the thumbnail size in
    pixels (default: the first image's size, capped at 256).
    """
    from PIL import Image, ImageDraw

    if not images:
        raise ValueError("no images to lay out")
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"got {len(images)} images but {len(labels)} labels")
    columns = columns or len(images)
    rows = -(-len(images) // columns)
    w0, h0 = images[0].size
    scale = min(1.0, (cell or 256) / max(w0, h0)) if cell is None else cell / max(w0, h0)
    tw, th = max(1, round(w0 * scale)), max(1, round(h0 * scale))
    font_size = max(10, th // 10)
    text_h = font_size + 6 if labels else 0
    sheet = Image.new(
        "RGB", (columns * (tw + pad) + pad, rows * (th + text_h + pad) + pad), "white"
    )
    draw = ImageDraw.Draw(sheet)
    font = _font(font_size)
    for k, img in enumerate(images):
        r, c = divmod(k, columns)
        x, y = pad + c * (tw + pad), pad + r * (th + text_h + pad)
        sheet.paste(img.resize((tw, th), Image.Resampling.LANCZOS), (x, y))
        if labels:
            draw.text((x + tw / 2, y + th + 3), labels[k], fill="black", font=font, anchor="mt")
    return sheet


def contact_strip(
    frames: Sequence[Image.Image], ts: Sequence[float], *, cell: int | None = None
) -> Image.Image:
    """One row of frames labelled ``t=0.00`` ... ``t=1.00``."""
    return labelled_grid(frames, [f"t={t:.2f}" for t in ts], cell=cell)


def write_animation(
    frames: Sequence[Image.Image],
    path: str | os.PathLike[str],
    *,
    fps: float = 8.0,
    pingpong: bool = False,
) -> Path:
    """Write frames as an animation; the format comes from the suffix (.gif, .mp4, .webp).

    ``pingpong`` appends the frames in reverse (without repeating the ends) for a seamless loop.
    GIF and WebP go through Pillow, MP4 through imageio-ffmpeg (H.264, yuv420p). Written through a
    temporary file (see :func:`whichway._files.write_atomic`).
    """
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in ANIMATION_FORMATS:
        raise ValueError(
            f"unknown animation format {fmt!r}; valid choices are: {', '.join(ANIMATION_FORMATS)}"
        )
    if not frames:
        raise ValueError("no frames to animate")
    seq = list(frames)
    if pingpong and len(seq) > 2:
        seq = seq + seq[-2:0:-1]
    from whichway._files import write_atomic

    return write_atomic(path, lambda tmp: _write_frames(seq, tmp, fmt, fps))


def _write_frames(seq: list[Image.Image], path: Path, fmt: str, fps: float) -> None:
    duration_ms = round(1000.0 / fps)
    if fmt in ("gif", "webp"):
        seq[0].save(
            path,
            format=fmt.upper(),
            save_all=True,
            append_images=seq[1:],
            duration=duration_ms,
            loop=0,
            **({"lossless": False, "quality": 90} if fmt == "webp" else {"optimize": False}),
        )
    else:
        import imageio.v2 as imageio

        # H.264 with yuv420p needs even sides; pad by one pixel where needed.
        arrays = [np.asarray(im) for im in seq]
        h, w = arrays[0].shape[:2]
        ph, pw = h % 2, w % 2
        if ph or pw:
            arrays = [np.pad(a, ((0, ph), (0, pw), (0, 0)), mode="edge") for a in arrays]
        writer = imageio.get_writer(
            path, fps=fps, codec="libx264", quality=8, pixelformat="yuv420p", macro_block_size=1
        )
        try:
            for a in arrays:
                writer.append_data(a)
        finally:
            writer.close()


# --- video with sound (travel) ------------------------------------------------------------------


def ffmpeg_exe() -> str:
    """The ffmpeg binary that imageio-ffmpeg ships (no system ffmpeg needed)."""
    try:
        import imageio_ffmpeg
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise ValueError("writing video needs imageio-ffmpeg; pip install imageio-ffmpeg") from exc
    return imageio_ffmpeg.get_ffmpeg_exe()


def write_video(
    frames: str | os.PathLike[str],
    path: str | os.PathLike[str],
    *,
    fps: float,
    audio: str | os.PathLike[str] | None = None,
    audio_start: float = 0.0,
    pattern: str = "%05d.png",
) -> Path:
    """Write an MP4 (H.264, yuv420p, ``fps``) with optional sound (AAC), atomically.

    ``frames`` is a folder of numbered PNGs (``pattern``, read by ffmpeg one at a time, so a long
    video is never held in memory). ``audio`` is cut
    from ``audio_start`` seconds for the video's duration, N / fps, and muxed in. Odd sides are
    padded by one pixel (yuv420p needs even sides).
    """
    import subprocess

    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if audio_start < 0:
        raise ValueError(f"audio_start must be >= 0 seconds, got {audio_start}")
    path = Path(path)
    if path.suffix.lower() != ".mp4":
        raise ValueError(f"write_video writes .mp4 files, got {str(path)!r}")
    cmd = [ffmpeg_exe(), "-y", "-loglevel", "error", "-nostdin"]
    folder = Path(frames)
    n = len(list(folder.glob("*" + Path(pattern).suffix)))
    if n == 0:
        raise ValueError(f"no frames in {folder}")
    cmd += ["-framerate", f"{fps}", "-start_number", "0", "-i", str(folder / pattern)]
    duration = n / fps
    if audio is not None:
        cmd += ["-ss", f"{audio_start:.6f}", "-t", f"{duration:.6f}", "-i", str(audio)]
    cmd += ["-map", "0:v:0"] + (
        ["-map", "1:a:0", "-c:a", "aac", "-b:a", "192k"] if audio is not None else []
    )
    cmd += [
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-crf",
        "18",
        "-vf",
        "pad=ceil(iw/2)*2:ceil(ih/2)*2",
        "-r",
        f"{fps}",
        "-movflags",
        "+faststart",
    ]

    def encode(tmp: Path) -> None:
        done = subprocess.run([*cmd, "-f", "mp4", str(tmp)], capture_output=True, check=False)
        if done.returncode != 0:
            message = done.stderr.decode(errors="replace").strip().splitlines()
            raise ValueError(
                f"ffmpeg could not write {path}: {message[-1] if message else done.returncode}"
            )

    from whichway._files import write_atomic

    return write_atomic(path, encode)


def _clock(text: str) -> float:
    h, m, s = text.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def probe_streams(path: str | os.PathLike[str]) -> list[dict[str, object]]:
    """The streams of a media file, read with the bundled ffmpeg: one dict per stream with
    ``index``, ``type`` ("video" | "audio" | ...), ``codec``, ``duration`` in seconds (each
    stream decoded on its own to a null muxer: the end time of its last decoded frame, edit
    lists such as AAC priming applied) and, for video, ``frames`` (frames decoded)."""
    import re
    import subprocess

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"media file {str(p)!r} does not exist")
    info = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(p)], capture_output=True, check=False
    )
    text = info.stderr.decode(errors="replace")
    streams: list[dict[str, object]] = []
    for m in re.finditer(r"Stream #0:(\d+)[^:]*: (\w+): (\w+)", text):
        streams.append({"index": int(m.group(1)), "type": m.group(2).lower(), "codec": m.group(3)})
    for s in streams:
        run = subprocess.run(
            [
                ffmpeg_exe(),
                "-hide_banner",
                "-nostdin",
                "-i",
                str(p),
                "-map",
                f"0:{s['index']}",
                "-f",
                "null",
                "-",
            ],
            capture_output=True,
            check=False,
        )
        log = run.stderr.decode(errors="replace")
        times = re.findall(r"time=\s*(\d+:\d+:\d+(?:\.\d+)?)", log)
        s["duration"] = _clock(times[-1]) if times else None
        if s["type"] == "video":
            counts = re.findall(r"frame=\s*(\d+)", log)
            s["frames"] = int(counts[-1]) if counts else None
    return streams
