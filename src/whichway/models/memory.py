"""Memory planning: the weights of a loaded pipeline, the peak memory of a render per batch size,
the largest batch that fits, and which option is needed when none does.

The peak of a batched render of b frames at height x width is modelled as linear in b,

.. math::  \\mathrm{peak}(b) = \\mathrm{base} + b \\cdot \\mathrm{per\\_frame},

* **analytic** (any device, no model call): base = the weights of every component (parameters
  and buffers, ``numel x element size``); per_frame = max(denoising, decoding) where

  - denoising = r x A_den x s_den: r denoiser rows per frame (2 when classifier-free guidance
    batches the unconditional half, else 1), s_den the denoiser's element size, and A_den the
    elements alive at once in one denoiser forward (``torch.no_grad``):

    UNet: the skip tensors kept for the up path, Σ over levels of (layers + 1) c_l h_l w_l, plus
    a working set of 14 c_l h_l w_l at the widest level (residual, normed input, q/k/v, attention
    output, the 8c GEGLU projection and its 4c half);
    MMDiT / Flux transformer: 12 N D, N = image tokens + text tokens, D = heads x head dim (one
    block alive at a time: stream, residual, q/k/v, attention output, the 4D MLP hidden, the
    modulated copies);

    attention scores are not materialised (PyTorch's scaled_dot_product_attention uses flash /
    memory-efficient kernels on CUDA and a blocked kernel on CPU).
  - decoding = A_vae x s_vae: the VAE decodes the whole batch at once; A_vae = 3 c H' W' at the
    level with the most elements (the upsampled tensor, the convolution output, the residual),
    s_vae = 4 when a float16 VAE is upcast (``force_upcast``, SDXL), plus that float32 copy.

  This is an estimate, not yet checked against measured peaks (``benchmarks/gpu_smoke.py``
  measures them): allocator fragmentation, convolution workspaces and the CUDA context are not
  modelled. The renderer backs off by halving the batch when it was too optimistic, and
  ``whichway doctor --measure`` measures instead on CUDA.
* **measured** (CUDA): one-step renders of 1 and 2 frames at the requested size, read with
  ``torch.cuda.max_memory_allocated``; base and per_frame are the line through the two points.

What the run may use, ``capacity``, counts the memory the model already holds: on CUDA the free
memory plus what PyTorch's allocator has reserved in this process, on a CPU the available RAM
plus the weights already resident there. A batch fits when peak(b) <= headroom x capacity.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # pragma: no cover
    from whichway.models.base import Adapter

logger = logging.getLogger(__name__)

HEADROOM = 0.9
"""Share of the capacity a plan lets a render use (the rest: allocator slack, other programs)."""

AUTO_BATCH_CAP = 16
"""``--batch-size auto`` never exceeds this many frames per batch (no speed-up beyond it)."""

TABLE_BATCHES = (1, 2, 4, 8, 16, 32)
"""Batch sizes listed by ``whichway doctor``."""


@dataclass(frozen=True)
class ComponentMemory:
    """Memory of one pipeline component's weights.

    name : the pipeline attribute ("unet", "vae", "text_encoder", ...)
    elements : parameters and buffers, counted once each
    bytes : Σ numel x element size over parameters and buffers
    dtype, device : of its first parameter
    """

    name: str
    elements: int
    bytes: int
    dtype: str
    device: str


@dataclass(frozen=True)
class DeviceMemory:
    """A device's memory in bytes (None where the platform does not say)."""

    device: str
    name: str
    total: int | None
    free: int | None


@dataclass(frozen=True)
class PeakEstimate:
    """Peak memory of a render of ``batch`` frames (bytes) and whether it fits the plan."""

    batch: int
    bytes: int
    fits: bool


@dataclass(frozen=True)
class MemoryPlan:
    """Peak memory of rendering at one size, per batch size, on one device.

    components : the weights per component
    weights_bytes : Σ of the components' bytes
    capacity_bytes : memory the run may use in total (None: unknown, every batch "fits")
    method : "analytic" | "measured" (see the module docstring)
    base_bytes, per_frame_bytes : peak(b) = base + b x per_frame
    denoise_frame_bytes, decode_frame_bytes : the two candidates of the analytic per_frame
        (denoiser activations, VAE decoding), 0 for a measured plan
    rows_per_frame : denoiser rows per frame (2 with batched classifier-free guidance)
    estimates : peak per batch size in :data:`TABLE_BATCHES`
    max_batch : the largest batch with peak <= headroom x capacity (0: not even one frame)
    advice : "" when one frame fits, else the option(s) that would make it fit, as text
    """

    device: str
    height: int
    width: int
    guidance: float
    components: tuple[ComponentMemory, ...]
    weights_bytes: int
    capacity_bytes: int | None
    headroom: float
    method: str
    base_bytes: int
    per_frame_bytes: int
    denoise_frame_bytes: int
    decode_frame_bytes: int
    rows_per_frame: int
    estimates: tuple[PeakEstimate, ...]
    max_batch: int
    advice: str

    def peak(self, batch: int) -> int:
        """Estimated peak bytes of a render of ``batch`` frames."""
        return self.base_bytes + batch * self.per_frame_bytes


# --- weights --------------------------------------------------------------------------------


def component_memory(pipe: Any) -> tuple[ComponentMemory, ...]:
    """The weights of every ``torch.nn.Module`` component of a diffusers pipeline.

    bytes = Σ_p numel(p) x element_size(p) over the module's parameters and buffers (shared
    tensors counted once)."""
    out = []
    for name, module in pipe.components.items():
        if not isinstance(module, torch.nn.Module):
            continue
        seen: set[int] = set()
        elements = size = 0
        first: torch.Tensor | None = None
        for tensor in [*module.parameters(), *module.buffers()]:
            if id(tensor) in seen:
                continue
            seen.add(id(tensor))
            first = tensor if first is None else first
            elements += tensor.numel()
            size += tensor.numel() * tensor.element_size()
        if first is None:
            continue
        out.append(
            ComponentMemory(
                name, elements, size, str(first.dtype).replace("torch.", ""), str(first.device)
            )
        )
    return tuple(out)


# --- devices --------------------------------------------------------------------------------


def device_memory(device: str | torch.device) -> DeviceMemory:
    """Total and free memory of ``device`` ("cpu", "cuda", "cuda:1", "mps")."""
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        free, total = torch.cuda.mem_get_info(index)
        return DeviceMemory(
            f"cuda:{index}", torch.cuda.get_device_name(index), int(total), int(free)
        )
    if device.type == "mps":
        total = int(torch.mps.recommended_max_memory())
        return DeviceMemory(
            "mps", "Apple GPU", total, total - int(torch.mps.driver_allocated_memory())
        )
    from whichway.budget import cpu_memory

    total, free = cpu_memory()
    return DeviceMemory(str(device), "CPU", total, free)


def list_devices() -> tuple[DeviceMemory, ...]:
    """The CPU and every visible CUDA / MPS device."""
    devices = [device_memory("cpu")]
    if torch.cuda.is_available():
        devices += [device_memory(f"cuda:{i}") for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append(device_memory("mps"))
    return tuple(devices)


def capacity(
    device: str | torch.device, components: tuple[ComponentMemory, ...] = ()
) -> int | None:
    """Bytes a run on ``device`` may use in total, counting what the model already holds there:
    CUDA: free + reserved by this process's allocator; CPU/MPS: free + the weights of
    ``components`` resident on that device."""
    device = torch.device(device)
    memory = device_memory(device)
    if memory.free is None:
        return None
    if device.type == "cuda":
        return memory.free + int(torch.cuda.memory_reserved(memory.device))
    resident = sum(c.bytes for c in components if torch.device(c.device).type == device.type)
    return memory.free + resident


# --- activations ----------------------------------------------------------------------------


def _modules(pipe: Any) -> list[torch.nn.Module]:
    return [m for m in pipe.components.values() if isinstance(m, torch.nn.Module)]


def denoiser(pipe: Any) -> torch.nn.Module:
    """The pipeline's denoiser: ``unet`` (SD, SDXL) or ``transformer`` (SD3, Flux)."""
    from whichway.models.runtime import denoiser_name

    return getattr(pipe, denoiser_name(pipe))


def denoiser_load(adapter: Adapter, guidance: float) -> tuple[int, int]:
    """(rows per frame in one denoiser call, denoiser calls per step) at ``guidance``.

    SD/SDXL and SD3 batch the unconditional half with the conditional one when guidance > 1
    (2 rows, 1 call; not for guidance-embedded UNets); Flux's true CFG runs the two branches one
    after the other (1 row, 2 calls); otherwise (1, 1)."""
    if adapter.family in ("sd", "sdxl"):
        uses_cfg = getattr(adapter, "_uses_cfg", None)
        cfg = uses_cfg(guidance) if uses_cfg is not None else guidance > 1
        return (2, 1) if cfg else (1, 1)
    if adapter.family == "sd3":
        return (2, 1) if guidance > 1 else (1, 1)
    if adapter.family == "flux":
        return (1, 2) if float(getattr(adapter, "true_cfg_scale", 1.0)) > 1 else (1, 1)
    return (2, 1) if guidance > 1 else (1, 1)


def _text_tokens(adapter: Adapter) -> int:
    window = int(getattr(adapter, "max_sequence_length", 0) or 0)
    return window + (77 if adapter.family == "sd3" else 0)


def denoiser_elements(adapter: Adapter, height: int, width: int) -> int:
    """A_den: activation elements alive at once in one denoiser forward, per row (see the module
    docstring for the formula)."""
    config = denoiser(adapter.pipe).config
    _, h, w = adapter.latent_shape(height, width)
    if "block_out_channels" in config:  # UNet2DConditionModel
        channels = list(config.block_out_channels)
        layers = config.layers_per_block
        layers = list(layers) if isinstance(layers, (list, tuple)) else [layers] * len(channels)
        skips = channels[0] * h * w  # conv_in output
        widest = 0
        for level, c in enumerate(channels):
            cells = math.ceil(h / 2**level) * math.ceil(w / 2**level)
            skips += layers[level] * c * cells
            if level < len(channels) - 1:  # the downsampler's output is kept too
                skips += c * math.ceil(h / 2 ** (level + 1)) * math.ceil(w / 2 ** (level + 1))
            widest = max(widest, c * cells)
        return skips + 14 * widest
    # MMDiT (SD3) / Flux: tokens of the patchified latent (Flux packs 2x2) plus the text tokens
    patch = 2 if adapter.family == "flux" else int(config.get("patch_size", 2) or 1)
    tokens = (h // patch) * (w // patch) + _text_tokens(adapter)
    dim = int(config.num_attention_heads) * int(config.attention_head_dim)
    return 12 * tokens * dim


def decoder_elements(vae: Any, height: int, width: int) -> int:
    """A_vae: activation elements alive at once while the VAE decodes one image of
    height x width (:func:`whichway.budget.vae_decode_elements` of its widths)."""
    from whichway.budget import vae_decode_elements

    return vae_decode_elements(list(vae.config.block_out_channels), height, width)


def _vae_upcast(vae: Any) -> bool:
    return vae.dtype == torch.float16 and bool(getattr(vae.config, "force_upcast", False))


# --- plans ----------------------------------------------------------------------------------


def _measure(adapter: Adapter, height: int, width: int, guidance: float) -> tuple[int, int]:
    """(base, per_frame) from one-step renders of 1 and 2 frames on CUDA."""
    device = adapter.device
    cond = adapter.encode([""])
    peaks = []
    for batch in (1, 2):
        latents = torch.zeros(batch, *adapter.latent_shape(height, width))
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        adapter.render(
            cond.expand(batch), latents, steps=1, guidance=guidance, height=height, width=width
        )
        torch.cuda.synchronize(device)
        peaks.append(int(torch.cuda.max_memory_allocated(device)))
    per_frame = max(peaks[1] - peaks[0], 1)
    return peaks[0] - per_frame, per_frame


def _fits(need: int, cap: int | None, headroom: float) -> bool:
    return cap is None or need <= headroom * cap


@dataclass(frozen=True)
class _Resident:
    """Weights (bytes) on the device under each placement: all of them (``total``); under model
    offload one component at a time (``denoiser``, ``vae``, the ``largest_other``); under
    sequential offload one layer at a time (``layer``: the largest parameter tensor, x2)."""

    total: int
    denoiser: int
    vae: int
    largest_other: int
    layer: int

    def during_render(self, offload: str) -> int:
        """What stays on the device for a whole render under ``offload``: an upper bound used as
        the base of peak(b) = base + b x per_frame."""
        if offload == "model":
            return max(self.denoiser, self.vae, self.largest_other)
        if offload == "sequential":
            return self.layer
        return self.total


def _resident_weights(adapter: Adapter, components: tuple[ComponentMemory, ...]) -> _Resident:
    by_name = {c.name: c.bytes for c in components}
    from whichway.models.runtime import denoiser_name

    den_name = denoiser_name(adapter.pipe)
    layer = 2 * max(
        (p.numel() * p.element_size() for m in _modules(adapter.pipe) for p in m.parameters()),
        default=0,
    )
    return _Resident(
        total=sum(by_name.values()),
        denoiser=by_name.get(den_name, 0),
        vae=by_name.get("vae", 0),
        largest_other=max([b for n, b in by_name.items() if n not in (den_name, "vae")] or [0]),
        layer=layer,
    )


def _advice(
    adapter: Adapter,
    components: tuple[ComponentMemory, ...],
    den_frame: int,
    dec_frame: int,
    dec_size: int,
    height: int,
    width: int,
    cap: int | None,
    headroom: float,
) -> str:
    """The cheapest option with which one frame fits (text), or a smaller size."""
    w = _resident_weights(adapter, components)
    den_w, vae_w, total, others, layer = w.denoiser, w.vae, w.total, w.largest_other, w.layer
    vae = adapter.pipe.vae
    tile = int(
        getattr(vae, "tile_sample_min_size", 0) or getattr(vae.config, "sample_size", 512) or 512
    )
    tile = min(tile, height, width)
    dec_tiled = min(dec_frame, decoder_elements(vae, tile, tile) * dec_size)
    accelerator = torch.device(adapter.device).type != "cpu"
    candidates = [("--vae-tiling", max(total + den_frame, total + dec_tiled))]
    if accelerator:
        # model offload moves one component at a time to the device (text encoders one by one)
        candidates += [
            ("--offload model", max(den_w + den_frame, vae_w + dec_frame, others)),
            ("--offload model --vae-tiling", max(den_w + den_frame, vae_w + dec_tiled, others)),
            ("--offload sequential", max(den_frame, dec_tiled) + layer),
        ]
    for option, need in candidates:
        if _fits(need, cap, headroom):
            return f"needs {option} (estimated peak {format_bytes(need)} for one frame)"
    smaller = "a smaller --height/--width"
    if not accelerator:
        return f"one frame does not fit in this machine's memory: try {smaller} or a smaller model"
    return f"one frame does not fit even with --offload sequential: try {smaller}"


def plan_memory(
    adapter: Adapter,
    height: int | None = None,
    width: int | None = None,
    guidance: float = 7.5,
    *,
    device: str | torch.device | None = None,
    measure: bool = False,
    headroom: float = HEADROOM,
    capacity_bytes: int | None = -1,
) -> MemoryPlan:
    """Plan the memory of rendering with ``adapter`` at height x width (default: the model's).

    device : where the render will run (default the adapter's)
    measure : on CUDA, measure peak(1) and peak(2) with one-step renders instead of the analytic
        estimate
    capacity_bytes : override the memory the run may use (-1: read it from the device; None:
        unknown, every batch fits)
    """
    if not 0 < headroom <= 1:
        raise ValueError(f"headroom must be in (0, 1], got {headroom}")
    height = height or adapter.default_size[0]
    width = width or adapter.default_size[1]
    adapter.latent_shape(height, width)  # checks the size for this model
    device = torch.device(device) if device is not None else torch.device(adapter.device)
    components = component_memory(adapter.pipe)
    weights = sum(c.bytes for c in components)
    cap = capacity(device, components) if capacity_bytes == -1 else capacity_bytes
    rows, _ = denoiser_load(adapter, guidance)
    den_size = next(denoiser(adapter.pipe).parameters()).element_size()
    vae = adapter.pipe.vae
    upcast = _vae_upcast(vae)
    dec_size = 4 if upcast else next(vae.parameters()).element_size()
    den_frame = rows * denoiser_elements(adapter, height, width) * den_size
    dec_frame = decoder_elements(vae, height, width) * dec_size
    upcast_copy = 2 * sum(c.bytes for c in components if c.name == "vae") if upcast else 0
    if measure and device.type == "cuda" and torch.device(adapter.device).type == "cuda":
        base, per_frame = _measure(adapter, height, width, guidance)
        method, den_frame, dec_frame = "measured", 0, 0
    else:
        # under --offload only part of the weights sits on the device at a time
        runtime = getattr(adapter, "runtime", None)
        offload = getattr(getattr(runtime, "options", None), "offload", "none")
        resident = (
            _resident_weights(adapter, components).during_render(offload)
            if offload != "none"
            else weights
        )
        method, base, per_frame = "analytic", resident + upcast_copy, max(den_frame, dec_frame)
    estimates = tuple(
        PeakEstimate(b, base + b * per_frame, _fits(base + b * per_frame, cap, headroom))
        for b in TABLE_BATCHES
    )
    if cap is None:
        max_batch = TABLE_BATCHES[-1]
    else:
        max_batch = (
            max(0, int((headroom * cap - base) // per_frame))
            if per_frame > 0
            else TABLE_BATCHES[-1]
        )
    advice = ""
    if max_batch == 0:
        advice = _advice(
            adapter,
            components,
            den_frame or per_frame,
            dec_frame or per_frame,
            dec_size,
            height,
            width,
            cap,
            headroom,
        )
    return MemoryPlan(
        device=str(device),
        height=height,
        width=width,
        guidance=float(guidance),
        components=components,
        weights_bytes=weights,
        capacity_bytes=cap,
        headroom=headroom,
        method=method,
        base_bytes=base,
        per_frame_bytes=per_frame,
        denoise_frame_bytes=den_frame,
        decode_frame_bytes=dec_frame,
        rows_per_frame=rows,
        estimates=estimates,
        max_batch=max_batch,
        advice=advice,
    )


@dataclass(frozen=True)
class WindowEstimate:
    """Peak memory of a motion journey's context window of ``frames`` frames (bytes).

    peak = base + motion_weights + max(frames x denoise_frame, decode_frame): a window's frames
    are denoised together (every frame's denoiser rows at once), frames are decoded one by one.
    The temporal layers' own activations (attention over ``frames`` positions per pixel) are
    small beside the spatial ones at these lengths and are not counted.
    ``max_frames``: the longest window that fits (0: not even one frame)."""

    frames: int
    bytes: int
    fits: bool
    max_frames: int


def window_memory(plan: MemoryPlan, frames: int, motion_weights: int = 0) -> WindowEstimate:
    """The peak of a context window of ``frames`` frames under ``plan`` (an analytic plan:
    its per-frame denoising and decoding bytes), plus the motion adapter's ``motion_weights``."""
    if frames < 1:
        raise ValueError(f"--context-length must be >= 1 frame, got {frames}")
    den = plan.denoise_frame_bytes or plan.per_frame_bytes
    dec = plan.decode_frame_bytes or plan.per_frame_bytes
    base = plan.base_bytes + motion_weights

    def peak(n: int) -> int:
        return base + max(n * den, dec)

    if plan.capacity_bytes is None:
        return WindowEstimate(frames, peak(frames), True, frames)
    usable = plan.headroom * plan.capacity_bytes
    longest = 0 if peak(1) > usable else max(1, int((usable - base) // max(den, 1)))
    return WindowEstimate(frames, peak(frames), peak(frames) <= usable, longest)


DEFAULT_BATCH_SIZE = 4
"""Frames per batch on a CPU when no batch size is given (batching gains little there)."""


def resolve_batch_size(
    batch_size: int | str | None,
    adapter: Adapter,
    frames: int,
    height: int,
    width: int,
    guidance: float,
) -> int:
    """The batch size a render uses.

    An int is used as is; ``"auto"`` is the plan's largest batch that fits (analytic estimate),
    at most :data:`AUTO_BATCH_CAP` and ``frames``, at least 1; ``None`` means ``"auto"`` on an
    accelerator and :data:`DEFAULT_BATCH_SIZE` on a CPU."""
    from whichway._checks import check_batch_size

    if batch_size is None:
        batch_size = "auto" if torch.device(adapter.device).type != "cpu" else DEFAULT_BATCH_SIZE
    check_batch_size(batch_size, "batch_size")
    if batch_size == "auto":
        plan = plan_memory(adapter, height, width, guidance)
        chosen = max(1, min(plan.max_batch, AUTO_BATCH_CAP, frames))
        if plan.max_batch == 0:
            logger.warning("the memory estimate says one frame may not fit: %s", plan.advice)
        logger.info(
            "--batch-size auto: %d (estimated peak %s of %s usable)",
            chosen,
            format_bytes(plan.peak(chosen)),
            "unknown"
            if plan.capacity_bytes is None
            else format_bytes(int(plan.headroom * plan.capacity_bytes)),
        )
        return chosen
    return batch_size


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is PyTorch's out-of-memory error (CUDA, MPS or the CPU allocator)."""
    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    if isinstance(exc, (oom, torch.cuda.OutOfMemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text or "not enough memory" in text
    )


def release_cached_memory(device: str | torch.device) -> None:
    """Return the allocator's cached blocks after an out-of-memory error."""
    import gc

    gc.collect()
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


def format_bytes(n: int | None) -> str:
    """1536 -> '1.5 KiB' (binary units)."""
    if n is None:
        return "unknown"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"  # pragma: no cover
