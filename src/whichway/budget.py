"""What a request needs, worked out before anything is allocated or loaded (standard library only).

Every command and every studio job describes its request as a :class:`Need` (frames written,
frame size, denoiser calls, bytes on disk, bytes held in memory) and hands it to
:func:`check_need`, which refuses what cannot fit with one line giving the figure and the limit:

``--frames 1000000000 needs 3.7 TB for the frames on disk; 41.0 GB free in runs``

The figures come from the model's own config files when the model is a local folder
(:func:`model_facts`: default size, VAE widths, the scheduler's training timesteps) and from the
arguments alone otherwise; either way no torch and no weights are loaded.

* **disk**: N frames x (H W x :data:`PNG_BYTES_PER_PIXEL` + :data:`PNG_HEADER_BYTES`), a floor
  (diffusion frames compress to 1-3 bytes per pixel), compared with the free space of the nearest
  existing folder of the output.
* **memory**: what the run holds in proportion to the frame count (frames kept for a strip or an
  animation encoded in memory, :data:`FRAME_BOOKKEEPING_BYTES` of bookkeeping per frame) plus one
  batch in flight: each frame's float32 image (3 H W x 4 bytes) on the CPU, and on a CPU device
  its VAE decoding, 4 x A_vae with A_vae = 3 max_l(c_l H_l W_l) (the formula of
  :mod:`whichway.models.memory`). Compared with the available RAM (``MemAvailable``).
* **steps**: at most the scheduler's ``num_train_timesteps`` (1000 for every supported family).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

PNG_BYTES_PER_PIXEL = 1.0
"""Floor of a PNG frame's size per pixel (diffusion frames measure 1-3 bytes per pixel)."""

PNG_HEADER_BYTES = 100
"""Signature, IHDR, IEND and zlib framing of one PNG."""

FRAME_BOOKKEEPING_BYTES = 512
"""Python objects a run keeps per frame (its t, plan entry, file name, run.json entry)."""

FALLBACK_SIDE = 512
"""Image side assumed when neither the arguments nor a local model config give one: the
smallest default of the supported families (SD 1.x / 2.x-base / sd-turbo)."""

STRIP_CELL = 256
"""Longest side of a frame's thumbnail in a strip or a grid (:func:`whichway.media.labelled_grid`)."""

TRAIN_TIMESTEPS = 1000
"""``num_train_timesteps`` of every supported family's scheduler: the most steps a sampler takes."""


@dataclass(frozen=True)
class ModelFacts:
    """What a local model folder's config files say (None: not known without loading)."""

    default_size: tuple[int, int] | None = None
    vae_channels: tuple[int, ...] | None = None
    train_timesteps: int | None = None


@dataclass(frozen=True)
class Need:
    """The size of one request.

    label : the argument(s) that set its size, as the user wrote them ("--frames 100000")
    frames : frames written
    height, width : pixels of one frame
    disk_bytes : bytes of the frames on disk (a floor)
    memory_bytes : peak bytes held in memory: in proportion to the frames, plus one batch
    denoiser_calls : frames x steps (x 2 under classifier-free guidance)
    """

    label: str
    frames: int
    height: int
    width: int
    disk_bytes: int
    memory_bytes: int
    denoiser_calls: int


def format_size(n: float) -> str:
    """1536 -> '1.5 kB', 3.7e12 -> '3.7 TB' (decimal units, as disks are sold)."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB", "PB", "EB"):
        if abs(value) < 1000 or unit == "EB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} EB"  # pragma: no cover


def cpu_memory() -> tuple[int | None, int | None]:
    """(total, available) RAM in bytes: /proc/meminfo, else os.sysconf (None: unknown)."""
    try:
        info: dict[str, int] = {}
        with open("/proc/meminfo") as handle:
            for line in handle:
                key, _, rest = line.partition(":")
                info[key] = int(rest.split()[0]) * 1024
        return info.get("MemTotal"), info.get("MemAvailable", info.get("MemFree"))
    except (OSError, ValueError, IndexError):
        pass
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        return os.sysconf("SC_PHYS_PAGES") * page, os.sysconf("SC_AVPHYS_PAGES") * page
    except (ValueError, OSError, AttributeError):
        return None, None


def nearest_existing(path: str | os.PathLike[str]) -> Path:
    """``path`` or its nearest existing ancestor (where its files would land)."""
    probe = Path(path).absolute()
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return probe


def free_disk(path: str | os.PathLike[str]) -> int | None:
    """Free bytes on the file system ``path`` would be written to (None: unknown)."""
    try:
        return shutil.disk_usage(nearest_existing(path)).free
    except OSError:
        return None


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def model_facts(model: str | os.PathLike[str] | None) -> ModelFacts:
    """What a local diffusers folder's config files say about sizes and steps; a hub id (or
    anything that is not a folder) gives an empty :class:`ModelFacts`."""
    if not model:
        return ModelFacts()
    root = Path(str(model)).expanduser()
    if not (root / "model_index.json").is_file():
        return ModelFacts()
    vae = _json(root / "vae" / "config.json").get("block_out_channels")
    channels = (
        tuple(int(c) for c in vae)
        if isinstance(vae, list) and vae and all(isinstance(c, int) and c > 0 for c in vae)
        else None
    )
    size = None
    for folder in ("unet", "transformer"):
        sample = _json(root / folder / "config.json").get("sample_size")
        if isinstance(sample, int) and sample > 0 and channels is not None:
            side = sample * 2 ** (len(channels) - 1)
            size = (side, side)
            break
    steps = _json(root / "scheduler" / "scheduler_config.json").get("num_train_timesteps")
    return ModelFacts(size, channels, steps if isinstance(steps, int) and steps > 0 else None)


def _listed(value: object, n: int) -> list[int] | None:
    """A UNet config entry given per down block (an int for all, or a list of n ints)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return [value] * n
    if isinstance(value, list) and len(value) == n and all(isinstance(v, int) for v in value):
        return list(value)
    return None


def lora_file_bytes(model: str | os.PathLike[str] | None, rank: int) -> int | None:
    """Bytes of one DiffMorpher LoRA file of rank ``rank`` for the local model folder ``model``
    (None: no UNet config of a layout this knows, e.g. a hub id).

    The file holds float32 ``down`` (r, in) and ``up`` (out, r) matrices for ``to_q``, ``to_k``,
    ``to_v`` and ``to_out.0`` of every attention layer of the UNet
    (:data:`whichway.attention.diffmorpher.LORA_TARGETS`), so with d the layer's width and c the
    key/value input (d for self-attention, ``cross_attention_dim`` for cross-attention):
    bytes = 4 r Σ (in + out) = 4 r Σ_layers (6 d + 2 c), i.e. 4 r (14 d + 2 c) per transformer
    layer (one self- and one cross-attention). Read from ``unet/config.json`` the way diffusers'
    ``UNet2DConditionModel`` lays its blocks out: ``layers_per_block`` transformer blocks per
    ``CrossAttn`` down block, one more per up block (widths, transformer layers and cross
    dimensions reversed), one in the ``UNetMidBlock2DCrossAttn``. SD 1.5 at rank 16: 12.8 MB."""
    if not model:
        return None
    config = _json(Path(str(model)).expanduser() / "unet" / "config.json")
    widths, down, up = (
        config.get("block_out_channels"),
        config.get("down_block_types"),
        config.get("up_block_types"),
    )
    if not (isinstance(widths, list) and isinstance(down, list) and isinstance(up, list)):
        return None
    n = len(widths)
    per_block = [
        _listed(config.get(key, default), n)
        for key, default in (
            ("layers_per_block", 2),
            ("transformer_layers_per_block", 1),
            ("cross_attention_dim", 1280),
        )
    ]
    if (
        any(v is None for v in per_block)
        or not all(isinstance(w, int) for w in widths)
        or len(down) != n
        or len(up) != n
        or not set(down) <= {"CrossAttnDownBlock2D", "DownBlock2D"}
        or not set(up) <= {"CrossAttnUpBlock2D", "UpBlock2D"}
        or config.get("reverse_transformer_layers_per_block") is not None
        or config.get("only_cross_attention", False) is not False
    ):
        return None
    layers, depth, cross = per_block
    blocks = [  # (blocks of transformers, transformer layers each, width d, cross dim c)
        (layers[i], depth[i], widths[i], cross[i])
        for i in range(n)
        if down[i] == "CrossAttnDownBlock2D"
    ]
    reverse = n - 1
    blocks += [
        (layers[reverse - i] + 1, depth[reverse - i], widths[reverse - i], cross[reverse - i])
        for i in range(n)
        if up[i] == "CrossAttnUpBlock2D"
    ]
    mid = config.get("mid_block_type", "UNetMidBlock2DCrossAttn")
    if mid == "UNetMidBlock2DCrossAttn":
        blocks.append((1, depth[-1], widths[-1], cross[-1]))
    elif mid is not None:
        return None
    width = sum(count * each * (14 * d + 2 * c) for count, each, d, c in blocks)
    return 4 * rank * width


def lora_bytes(
    model: str | os.PathLike[str] | None, rank: int, files: int, pairs: int
) -> tuple[int, int]:
    """(disk, memory) bytes of DiffMorpher's LoRAs (:func:`lora_file_bytes` each, (0, 0) when
    not known): ``files`` LoRA files written (one per image), and in RAM the ``pairs`` LoRA pairs
    the run holds as float32 CPU tensors (one per DiffMorpher segment) plus the pair stacked onto
    the UNet while a batch renders: 2 (pairs + 1) files' worth."""
    each = lora_file_bytes(model, rank) if files or pairs else None
    if each is None:
        return 0, 0
    return files * each, 2 * (pairs + 1) * each if pairs else 0


def vae_decode_elements(channels: Sequence[int], height: int, width: int) -> int:
    """A_vae: activation elements alive at once while a VAE with encoder widths ``channels``
    decodes one height x width image: 3 max_l(max(c_l, c_{l-1}) H_l W_l) over the decoder's
    levels (the upsampled input, the convolution output, the residual)."""
    order = list(reversed(channels))  # decoder order: latent -> pixels
    levels = len(order)
    largest = 0
    for level, c in enumerate(order):
        scale = 2 ** (levels - 1 - level)  # the last level is at full resolution
        cells = math.ceil(height / scale) * math.ceil(width / scale)
        incoming = order[level - 1] if level else c
        largest = max(largest, max(c, incoming) * cells)
    return 3 * largest


def accelerator_present() -> bool:
    """Whether an NVIDIA driver is loaded (torch-free; then the default device is a GPU)."""
    return os.path.exists("/proc/driver/nvidia/version")


def renders_on_cpu(device: str | None) -> bool:
    """Whether a run with ``--device device`` denoises and decodes in RAM."""
    if device:
        return device.split(":")[0] in ("cpu", "mps")  # MPS memory is the machine's RAM
    return not accelerator_present()


def frame_size(height: int | None, width: int | None, facts: ModelFacts) -> tuple[int, int]:
    """The frame's (height, width): the arguments, else the model's default, else
    :data:`FALLBACK_SIDE`."""
    default = facts.default_size or (FALLBACK_SIDE, FALLBACK_SIDE)
    return height or default[0], width or default[1]


def frame_disk_bytes(height: int, width: int) -> int:
    """Floor of one PNG frame's bytes."""
    return int(height * width * PNG_BYTES_PER_PIXEL) + PNG_HEADER_BYTES


def batch_memory_bytes(
    height: int, width: int, batch: int, facts: ModelFacts, *, on_cpu: bool
) -> int:
    """Bytes one batch in flight needs in RAM: each frame's float32 image, and on a CPU device the
    VAE's decoding activations (when the VAE's widths are known)."""
    image = 3 * height * width * 4
    decode = 0
    if on_cpu and facts.vae_channels is not None:
        decode = 4 * vae_decode_elements(facts.vae_channels, height, width)
    return batch * (image + decode)


def thumbnail_pixels(height: int, width: int, cell: int = STRIP_CELL) -> int:
    """Pixels of one frame scaled down to at most ``cell`` on its longer side (a strip's or a
    grid's cell, :func:`whichway.media.labelled_grid`)."""
    scale = min(1.0, cell / max(height, width))
    return max(1, round(height * scale)) * max(1, round(width * scale))


def build_need(
    label: str,
    *,
    frames: int,
    height: int,
    width: int,
    steps: int,
    guidance: float,
    facts: ModelFacts,
    on_cpu: bool,
    batch: int = 1,
    held_bytes_per_frame: int = 0,
    disk_bytes_per_frame: int | None = None,
) -> Need:
    """A :class:`Need` for ``frames`` frames of height x width.

    ``held_bytes_per_frame``: what the run keeps per frame until it ends (frames of a strip, an
    animation encoded in memory, a grid's cells) on top of :data:`FRAME_BOOKKEEPING_BYTES`;
    ``disk_bytes_per_frame``: default one PNG frame (:func:`frame_disk_bytes`)."""
    batch = max(1, min(batch, frames))
    per_disk = (
        frame_disk_bytes(height, width) if disk_bytes_per_frame is None else disk_bytes_per_frame
    )
    memory = frames * (FRAME_BOOKKEEPING_BYTES + held_bytes_per_frame) + batch_memory_bytes(
        height, width, batch, facts, on_cpu=on_cpu
    )
    rows = 2 if guidance > 1 else 1
    return Need(
        label,
        frames,
        height,
        width,
        disk_bytes=frames * per_disk,
        memory_bytes=memory,
        denoiser_calls=frames * steps * rows,
    )


def check_steps(name: str, steps: int | None, facts: ModelFacts) -> None:
    """Refuse more steps than the scheduler's training timesteps (ValueError, one line)."""
    limit = facts.train_timesteps or TRAIN_TIMESTEPS
    if steps is not None and steps > limit:
        raise ValueError(
            f"{name} {steps} is more than the scheduler's {limit} training timesteps, the most a "
            f"sampler can take; use at most {limit}"
        )


def check_need(
    need: Need,
    out: str | os.PathLike[str] | None,
    *,
    free_bytes: int | None = None,
    available_bytes: int | None = None,
    besides: tuple[str, str] | None = None,
) -> None:
    """Refuse ``need`` when its frames cannot fit the free disk under ``out`` (None: nothing is
    written) or its memory the available RAM: ValueError with the figure and the limit.

    ``free_bytes`` / ``available_bytes`` override what the machine says (tests, hosts);
    ``besides``: what the need counts besides the frames, (on disk, in memory), named in the
    refusal ("the LoRA files"; None or "": the frames only)."""
    disk_what, memory_what = (f" and {w}" if w else "" for w in besides or ("", ""))
    if out is not None:
        free = free_disk(out) if free_bytes is None else free_bytes
        if free is not None and need.disk_bytes > free:
            raise ValueError(
                f"{need.label} needs {format_size(need.disk_bytes)} for the frames{disk_what} on "
                f"disk; {format_size(free)} free in {nearest_existing(out)}"
            )
    check_memory(
        need.label,
        need.memory_bytes,
        f"{need.frames} frame{'s' * (need.frames != 1)} of {need.width}x{need.height}"
        + memory_what,
        available_bytes=available_bytes,
    )


def check_memory(
    label: str, need_bytes: int, what: str, *, available_bytes: int | None = None
) -> None:
    """Refuse ``need_bytes`` of memory beyond the available RAM (``available_bytes`` overrides
    what the machine says): ValueError "<label> needs 3.7 TB of memory for <what>; 22.2 GB
    available"."""
    available = cpu_memory()[1] if available_bytes is None else available_bytes
    if available is not None and need_bytes > available:
        raise ValueError(
            f"{label} needs {format_size(need_bytes)} of memory for {what}; "
            f"{format_size(available)} available"
        )


def travel_frame_count(
    keyframes: int,
    last_at: float | None,
    fps: float,
    seconds: float | None,
    frames_per_segment: int | None,
    *,
    audio: str | os.PathLike[str] | None = None,
    audio_start: float = 0.0,
) -> int | None:
    """Frames of a journey through ``keyframes`` keyframes: round(seconds x fps), else
    (K - 1) x frames_per_segment + 1, else round(last_at x fps) + 1, else the rest of the
    ``audio`` track after ``audio_start``, floor((duration - start) x fps), its duration read
    from the file's header without decoding it (None: not known before decoding)."""
    if seconds is not None:
        return round(seconds * fps)
    if frames_per_segment is not None:
        return (keyframes - 1) * frames_per_segment + 1
    if last_at is not None:
        return round(last_at * fps) + 1
    if audio is not None:
        from whichway.audio import audio_duration

        duration = audio_duration(audio)
        if duration is not None and duration > audio_start:
            return math.floor((duration - audio_start) * fps)
    return None


def morph_held_bytes(height: int, width: int, animated: bool = True) -> int:
    """Bytes a morph keeps per frame until it ends: the RGB frame for its animation (encoded in
    memory), none without one (its strip shows at most 32 frames)."""
    return 3 * height * width if animated else 0


def travel_held_bytes(height: int, width: int, fmt: str | None) -> int:
    """Bytes a travel keeps per frame until it ends: the RGB frame for a GIF or WebP video
    (encoded in memory), none for MP4 (ffmpeg reads the PNG frames one at a time) or no video."""
    return morph_held_bytes(height, width, fmt not in (None, "mp4"))


def check_request(
    label: str,
    frames: int,
    *,
    model: str | os.PathLike[str] | None,
    device: str | None,
    steps: int | None,
    guidance: float | None,
    height: int | None,
    width: int | None,
    batch_size: int | str | None = None,
    inversion_steps: int | None = None,
    out: str | os.PathLike[str] | None,
    held_per_frame: Callable[[int, int], int] | None = None,
    disk_per_frame: Callable[[int, int], int] | None = None,
    steps_name: str = "--steps",
    size_name: str = "--height {h} --width {w}",
    extra_bytes: tuple[int, int] = (0, 0),
) -> Need:
    """Work out what a request of ``frames`` frames needs (frames on disk under ``out``, memory,
    denoiser calls) from the local model's config or the arguments alone, and refuse what cannot
    fit: more steps than the scheduler has, one frame beyond the available RAM (named by its
    size), frames beyond the free disk, memory beyond the available RAM (ValueError, one line
    with the figure and the limit).

    ``held_per_frame(height, width)``: bytes the run keeps per frame until it ends;
    ``disk_per_frame(height, width)``: bytes written per frame (default one PNG frame);
    ``steps_name``: how the step count is named in a refusal, ``size_name`` the frame size
    given as arguments (``{h}``, ``{w}``: its height and width); ``extra_bytes``: (disk, memory)
    the run needs besides its frames (DiffMorpher's LoRAs, :func:`lora_bytes`). Returns the
    :class:`Need`."""
    facts = model_facts(model)
    check_steps(steps_name, steps, facts)
    check_steps("--inversion-steps", inversion_steps, facts)
    h, w = frame_size(height, width, facts)
    on_cpu = renders_on_cpu(device)
    # one frame that cannot fit is the size's fault, not the frame count's: name the size
    check_memory(
        size_name.format(h=h, w=w) if height or width else f"the model's size {w}x{h}",
        batch_memory_bytes(h, w, 1, facts, on_cpu=on_cpu),
        f"one frame of {w}x{h}",
    )
    need = build_need(
        label,
        frames=frames,
        height=h,
        width=w,
        steps=steps or 1,
        guidance=guidance or 0.0,
        facts=facts,
        on_cpu=on_cpu,
        batch=batch_size if isinstance(batch_size, int) else 1,
        held_bytes_per_frame=0 if held_per_frame is None else held_per_frame(h, w),
        disk_bytes_per_frame=None if disk_per_frame is None else disk_per_frame(h, w),
    )
    if any(extra_bytes):
        need = dataclasses.replace(
            need,
            disk_bytes=need.disk_bytes + extra_bytes[0],
            memory_bytes=need.memory_bytes + extra_bytes[1],
        )
    check_need(
        need,
        out,
        besides=(  # DiffMorpher's LoRAs, counted with the frames
            "the LoRA files" if extra_bytes[0] else "",
            "the LoRA weights" if extra_bytes[1] else "",
        ),
    )
    return need
