"""Helpers shared by every pipeline family's adapter.

Everything here is family-agnostic: device/dtype parsing, the prompt-truncation warning, the
progress-callback plumbing of ``callback_on_step_end``, image <-> tensor <-> VAE latent, the
deterministic DDIM schedule and its inversion loop, and the per-row step-noise generators that
keep batched rendering equal to one-at-a-time rendering. The adapters (``sd``, ``sdxl``, ``sd3``,
``flux``) import from here instead of re-implementing these pieces.

torch is imported at module level (adapters need it anyway); diffusers and PIL are imported
inside the functions that use them.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
"""dtype names accepted by ``--dtype`` and :func:`whichway.models.load_adapter`."""

StepCallback = Callable[[], None]
"""Called once per denoising step of a batch (drives the caller's progress bar)."""

#: seed of the per-row generators that draw a stochastic scheduler's step noise during render
STEP_NOISE_SEED = 0


class PromptTruncatedWarning(UserWarning):
    """A prompt was longer than its text encoder's window; the pipeline keeps only the start."""


# --- device and dtype ---------------------------------------------------------------------------


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` as a :class:`torch.device`; ``None`` -> ``cuda`` when available, else ``cpu``."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"unknown device {device!r}; use 'cpu', 'cuda', 'cuda:N' or 'mps'"
        ) from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was requested but CUDA is not available; use 'cpu'")
    return resolved


def resolve_dtype(
    dtype: str | torch.dtype | None,
    device: torch.device,
    *,
    gpu_default: torch.dtype = torch.float16,
) -> torch.dtype:
    """``dtype`` as a :class:`torch.dtype`.

    ``None`` -> float32 on CPU (half precision is slow and inexact there), ``gpu_default``
    (float16; bfloat16 for Flux) on an accelerator. Strings: ``float32 | float16 | bfloat16``.
    """
    if dtype is None:
        return torch.float32 if device.type == "cpu" else gpu_default
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ValueError(f"unsupported dtype {dtype}; valid choices are: {', '.join(DTYPES)}")
        return dtype
    name = str(dtype).replace("torch.", "")
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; valid choices are: {', '.join(DTYPES)}")
    return DTYPES[name]


# --- prompts ----------------------------------------------------------------------------------


def dtype_keyword() -> str:
    """``dtype`` on diffusers versions that deprecate ``torch_dtype``, else ``torch_dtype``."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401
    except ImportError:
        return "torch_dtype"
    return "dtype"


def warn_if_truncated(
    tokenizer: Any, prompts: Sequence[str], max_length: int, encoder: str = "text encoder"
) -> list[int]:
    """Warn (:class:`PromptTruncatedWarning`) for each prompt longer than ``max_length`` tokens.

    The pipelines tokenize with ``truncation=True``, keeping the first ``max_length - 1`` tokens
    and the end token, and only log the loss; we say it with ``warnings.warn``: the token count,
    the window and the text that was cut. Returns the untruncated token counts (special tokens
    included).
    """
    counts: list[int] = []
    for index, prompt in enumerate(prompts):
        ids = tokenizer(prompt, truncation=False, add_special_tokens=True).input_ids
        counts.append(len(ids))
        if len(ids) > max_length:
            # what truncation drops: everything between the kept head and the final end token
            cut = tokenizer.decode(ids[max_length - 1 : -1], skip_special_tokens=True).strip()
            warnings.warn(
                f"prompt {index} has {len(ids)} tokens but the {encoder} window is {max_length}; "
                f"the pipeline keeps the first {max_length} and cuts: {cut!r}",
                PromptTruncatedWarning,
                stacklevel=3,
            )
    return counts


def check_prompts(prompts: Sequence[str] | str) -> list[str]:
    """Prompts as a non-empty list of strings (a bare string is one prompt)."""
    if isinstance(prompts, str):
        return [prompts]
    prompts = list(prompts)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError("prompts must be a non-empty sequence of strings")
    return prompts


# --- progress ---------------------------------------------------------------------------------


def step_callback(
    on_step: StepCallback | None, steps: int | None = None
) -> Callable[..., dict[str, Any]] | None:
    """A ``callback_on_step_end`` for diffusers pipelines that calls ``on_step()`` once per step.

    diffusers calls it as ``fn(pipe, index, timestep, callback_kwargs)`` after every loop
    iteration and expects ``callback_kwargs`` back. Some schedulers visit more timesteps than
    ``num_inference_steps`` (PNDM repeats one, Heun-type ones run order 2); with ``steps`` given,
    ``on_step`` fires exactly where the pipeline's own progress bar advances, i.e. ``steps`` times.
    """
    if on_step is None:
        return None

    def _callback(pipe: Any, index: int, _timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        if steps is None:
            on_step()
            return kwargs
        total = len(pipe.scheduler.timesteps)
        order = int(getattr(pipe.scheduler, "order", 1))
        warmup = total - steps * order
        if index == total - 1 or (index + 1 > warmup and (index + 1) % order == 0):
            on_step()
        return kwargs

    return _callback


def step_generators(batch: int, seed: int = STEP_NOISE_SEED) -> list[torch.Generator]:
    """One CPU generator per row for a stochastic scheduler's step noise (Euler ancestral, DDPM).

    diffusers draws the noise of row i from generator i when given a list, so a row gets the
    same noise whether it is rendered alone or in a batch; every row uses the same seed, the
    paper's fixed-noise setting. Deterministic schedulers (DDIM, PNDM, Euler, flow matching)
    ignore the generators.
    """
    return [torch.Generator("cpu").manual_seed(seed) for _ in range(batch)]


# --- sizes and latents ------------------------------------------------------------------------


def check_size(height: int, width: int, multiple: int) -> tuple[int, int]:
    """Raise unless height and width are positive multiples of ``multiple`` pixels."""
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0 or value % multiple:
            raise ValueError(
                f"{name} must be a positive multiple of {multiple} pixels for this model, "
                f"got {value!r}"
            )
    return height, width


def check_steps(steps: int) -> int:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    return steps


def check_latents(latents: Tensor, shape: tuple[int, int, int]) -> Tensor:
    """latents as (B, C, h, w), validated against the model's (C, h, w)."""
    if not isinstance(latents, Tensor) or not latents.is_floating_point():
        raise ValueError("latents must be a floating torch.Tensor (B, C, h, w) or (C, h, w)")
    if latents.ndim == 3:
        latents = latents.unsqueeze(0)
    if latents.ndim != 4 or tuple(latents.shape[1:]) != tuple(shape):
        raise ValueError(
            f"latents must be (B, {shape[0]}, {shape[1]}, {shape[2]}) for this model and size, "
            f"got {tuple(latents.shape)}"
        )
    return latents


def cpu_normal_latent(
    shape: Sequence[int], seed: int, dtype: torch.dtype = torch.float32
) -> Tensor:
    """The draw ``randn_tensor(shape, generator=torch.Generator("cpu").manual_seed(seed),
    dtype=dtype)`` makes, as float32 CPU.

    Drawing in the pipeline's dtype and casting up is exact (every float16/bfloat16 value is a
    float32), so casting back when rendering recovers the plain pipeline's latent bit for bit.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    generator = torch.Generator("cpu").manual_seed(seed)
    return torch.randn(tuple(shape), generator=generator, dtype=dtype, device="cpu").float()


def images_to_cpu(images: Tensor) -> Tensor:
    """A pipeline's ``output_type="pt"`` images as (B, 3, H, W) float32 CPU in [0, 1]."""
    return images.detach().to(device="cpu", dtype=torch.float32).clamp_(0.0, 1.0)


# --- images -----------------------------------------------------------------------------------


def prepare_image(image: Tensor, height: int, width: int) -> Tensor:
    """(3, H, W) or (1, 3, H, W) image in [0, 1] -> (1, 3, height, width) in [-1, 1].

    Resized with antialiased bicubic interpolation when the size differs.
    """
    if not isinstance(image, Tensor) or not image.is_floating_point():
        raise ValueError("image must be a floating torch.Tensor (3, H, W) with values in [0, 1]")
    if image.ndim == 3:
        image = image.unsqueeze(0)
    if image.ndim != 4 or image.shape[:2] != (1, 3):
        raise ValueError(f"image must be (3, H, W) RGB, got {tuple(image.shape)}")
    if image.min() < -1e-3 or image.max() > 1 + 1e-3:
        raise ValueError(
            "image values must lie in [0, 1], got "
            f"[{float(image.min()):.3g}, {float(image.max()):.3g}]"
        )
    image = image.float()
    if tuple(image.shape[-2:]) != (height, width):
        image = torch.nn.functional.interpolate(
            image, size=(height, width), mode="bicubic", antialias=True, align_corners=False
        ).clamp(0, 1)
    return image * 2.0 - 1.0


@torch.no_grad()
def vae_encode(vae: Any, image: Tensor) -> Tensor:
    """Image (1, 3, H, W) in [-1, 1] -> the model-space latent ``(mean - shift) * scale``.

    The mean of the VAE's latent distribution (not a sample: inversion must be deterministic),
    shifted (SD3/Flux ``shift_factor``) and scaled by ``scaling_factor``, exactly as the
    pipelines undo it before decoding. A float16 VAE flagged ``force_upcast`` (SDXL) encodes in
    float32, as the pipeline decodes.
    """
    config = vae.config
    upcast = vae.dtype == torch.float16 and bool(getattr(config, "force_upcast", False))
    dtype = torch.float32 if upcast else vae.dtype
    original = vae.dtype
    try:
        if upcast:
            vae.to(dtype=torch.float32)
        posterior = vae.encode(image.to(device=vae.device, dtype=dtype)).latent_dist
        latent = posterior.mean
    finally:
        if upcast:
            vae.to(dtype=original)
    shift = getattr(config, "shift_factor", None) or 0.0
    return (latent.float() - shift) * config.scaling_factor


# --- DDIM -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DDIMSchedule:
    """The deterministic DDIM (eta = 0) schedule a ``DDIMScheduler`` follows for ``steps`` steps.

    timesteps : Tensor (S,) long, descending (the order the sampler visits them)
    alphas : Tensor (S,) float64, ᾱ at each timestep
    alphas_prev : Tensor (S,) float64, ᾱ of the step's target (``final_alpha_cumprod`` last)
    prediction_type : "epsilon" | "v_prediction" | "sample"
    """

    timesteps: Tensor
    alphas: Tensor
    alphas_prev: Tensor
    prediction_type: str


def ddim_scheduler(scheduler_config: Any) -> Any:
    """A ``DDIMScheduler`` with the model's noise schedule (betas, spacing, offset, prediction).

    ``clip_sample`` and ``thresholding`` are turned off whatever the config says (a PNDM or Euler
    config does not carry them and DDIM's own default clips x̂₀ to [-1, 1]): latents are not
    bounded like pixels, and clipping is not invertible.
    """
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_config(scheduler_config, clip_sample=False, thresholding=False)


def ddim_schedule(scheduler: Any, steps: int) -> DDIMSchedule:
    """Read the DDIM schedule of ``scheduler`` (a ``DDIMScheduler``) for ``steps`` steps.

    Mirrors ``DDIMScheduler.step``: the step at t goes to ``t - T // steps`` (T = training
    timesteps), whose ᾱ is ``final_alpha_cumprod`` when negative.
    """
    check_steps(steps)
    scheduler.set_timesteps(steps)
    acp = scheduler.alphas_cumprod.to(torch.float64)
    final = torch.as_tensor(scheduler.final_alpha_cumprod, dtype=torch.float64)
    timesteps = scheduler.timesteps.to("cpu", torch.long)
    ratio = scheduler.config.num_train_timesteps // steps
    prev = timesteps - ratio
    alphas = acp[timesteps]
    alphas_prev = torch.where(prev >= 0, acp[prev.clamp(min=0)], final)
    return DDIMSchedule(timesteps, alphas, alphas_prev, scheduler.config.prediction_type)


def _split_prediction(
    output: Tensor, sample: Tensor, alpha: Tensor, prediction_type: str
) -> tuple[Tensor, Tensor]:
    """Model output -> (x₀ prediction, ε prediction) for a sample at level ᾱ = ``alpha``.

    ε:  x₀ = (x − √(1−ᾱ) ε) / √ᾱ;   v:  x₀ = √ᾱ x − √(1−ᾱ) v,  ε = √ᾱ v + √(1−ᾱ) x;
    x₀ ("sample"): ε = (x − √ᾱ x₀) / √(1−ᾱ)   (DDIM, Song et al. 2021, eq. 12; Salimans & Ho 2022).
    """
    a, s = alpha.sqrt(), (1 - alpha).sqrt()
    if prediction_type == "epsilon":
        return (sample - s * output) / a, output
    if prediction_type == "v_prediction":
        return a * sample - s * output, a * output + s * sample
    if prediction_type == "sample":
        return output, (sample - a * output) / s
    raise ValueError(
        f"unsupported prediction_type {prediction_type!r}; "
        "valid choices are: epsilon, v_prediction, sample"
    )


@torch.no_grad()
def ddim_invert(
    predict: Callable[[Tensor, Tensor], Tensor],
    latent: Tensor,
    schedule: DDIMSchedule,
    *,
    refine: int = 0,
    on_step: StepCallback | None = None,
) -> Tensor:
    """Run deterministic DDIM backwards: clean latent x₀ -> the x_T that DDIM maps back to it.

    The DDIM update from level ᾱ_prev to ᾱ_t with the model's noise estimate ε (Song et al. 2021,
    eq. 12 with σ = 0, read in reverse; Mokady et al. 2023, "Null-text inversion", eq. 2):

    .. math::  x_t = \\sqrt{\\bar\\alpha_t}\\,\\hat x_0 + \\sqrt{1-\\bar\\alpha_t}\\,\\varepsilon,
               \\quad \\hat x_0 = (x_{prev} - \\sqrt{1-\\bar\\alpha_{prev}}\\,\\varepsilon)
                                 / \\sqrt{\\bar\\alpha_{prev}}

    with ε = ``predict(x_prev, t)`` evaluated at the *target* timestep t (the usual
    approximation ε(x_t, t) ≈ ε(x_prev, t), exact as steps -> ∞). With ``refine = k > 0`` each
    step then solves the exact implicit equation x_t = F(x_prev, ε(x_t, t)) by k fixed-point
    iterations (ε re-evaluated at the new x_t; k extra model calls per step), which makes
    DDIM sampling of the result retrace x_prev more closely. The timesteps are the DDIM
    sampler's own, visited in reverse, so rendering the result with the same DDIM schedule
    retraces the path. Updates in float64, cast back to the latent's dtype.

    predict : (x (B, C, h, w), t (scalar long)) -> model output (B, C, h, w), CFG already applied
    latent : Tensor (B, C, h, w)  the VAE latent (scaled), on the model's device
    Returns x_T (B, C, h, w) on the latent's device and dtype.
    """
    if not isinstance(refine, int) or refine < 0:
        raise ValueError(f"refine must be a non-negative integer, got {refine!r}")
    x = latent
    order = range(len(schedule.timesteps) - 1, -1, -1)  # ascending timesteps
    for i in order:
        t = schedule.timesteps[i]
        a_t, a_prev = schedule.alphas[i], schedule.alphas_prev[i]
        x_prev = x.to(torch.float64)
        guess = x  # ε(x_t, t) is first evaluated at x_prev (the approximation above)
        for _ in range(refine + 1):
            output = predict(guess, t).to(torch.float64)
            # the model reads its input as a sample at level ᾱ_t
            _, eps = _split_prediction(
                output, guess.to(torch.float64), a_t, schedule.prediction_type
            )
            x0 = (x_prev - (1 - a_prev).sqrt() * eps) / a_prev.sqrt()
            guess = (a_t.sqrt() * x0 + (1 - a_t).sqrt() * eps).to(latent.dtype)
        x = guess
        if on_step is not None:
            on_step()
    return x


def is_ddim(scheduler: Any) -> bool:
    return type(scheduler).__name__ == "DDIMScheduler"


def guided(output: Tensor, guidance: float) -> Tensor:
    """Classifier-free guidance on a [uncond; cond] batch: ε_u + w (ε_c − ε_u)
    (Ho & Salimans 2022)."""
    uncond, cond = output.chunk(2)
    return uncond + guidance * (cond - uncond)


def check_guidance(guidance: float) -> float:
    if (
        not isinstance(guidance, (int, float))
        or isinstance(guidance, bool)
        or not math.isfinite(guidance)
    ):
        raise ValueError(f"guidance must be a finite number, got {guidance!r}")
    return float(guidance)


# --- latent files -----------------------------------------------------------------------------

LATENT_SUFFIXES = (".safetensors", ".pt", ".pth")


def save_latent(latent: Tensor, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Save an initial latent (C, h, w) to ``.safetensors`` (key ``latent``, metadata as strings)
    or ``.pt``/``.pth`` (a dict ``{"latent": ..., **metadata}``)."""
    path = Path(path)
    suffix = path.suffix.lower()  # the command line accepts x.PT as x.pt
    if suffix not in LATENT_SUFFIXES:
        raise ValueError(
            f"latent file {str(path)!r} must end in one of: {', '.join(LATENT_SUFFIXES)}"
        )
    latent = latent.detach().to("cpu", torch.float32).contiguous()
    metadata = dict(metadata or {})
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({"latent": latent}, str(path), metadata={k: str(v) for k, v in metadata.items()})
    else:
        torch.save({"latent": latent, **metadata}, path)
    return path


def load_latent(path: str | Path) -> tuple[Tensor, dict[str, Any]]:
    """Read a latent saved by :func:`save_latent` (or any file holding one tensor under
    ``latent``): returns (latent float32 CPU, metadata)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"latent file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix not in LATENT_SUFFIXES:
        raise ValueError(
            f"latent file {str(path)!r} must end in one of: {', '.join(LATENT_SUFFIXES)}"
        )
    try:
        if suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                metadata: dict[str, Any] = dict(handle.metadata() or {})
                latent = handle.get_tensor("latent")
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(data, Tensor):
                data = {"latent": data}
            metadata = {k: v for k, v in data.items() if k != "latent"}
            latent = data["latent"]
    except (KeyError, OSError, RuntimeError, ValueError) as exc:
        raise ValueError(f"cannot read a latent from {str(path)!r}: {exc}") from exc
    return latent.float(), metadata
