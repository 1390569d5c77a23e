"""Euler inversion for flow-matching samplers (SD3, Flux), shared by both adapters.

Rectified-flow models (Esser et al. 2024, "Scaling rectified flow transformers", eq. 1) learn a
velocity field v_θ(x, t) for the straight path x_σ = (1 − σ)·x₀ + σ·ε between a clean latent x₀
(σ = 0) and Gaussian noise ε (σ = 1). diffusers' ``FlowMatchEulerDiscreteScheduler`` samples it
with explicit Euler steps on a decreasing grid σ_0 = 1 > σ_1 > … > σ_S = 0:

.. math::  x_{i+1} = x_i + (\\sigma_{i+1} - \\sigma_i)\\, v_\\theta(x_i, t_i), \\qquad t_i = 1000\\,\\sigma_i

Inversion walks the same grid backwards, from the clean latent x_S to the noise x_0, solving each
step for its start point:

.. math::  x_i = x_{i+1} - (\\sigma_{i+1} - \\sigma_i)\\, v_\\theta(x_i, t_i)

x_i is unknown on the right-hand side. The explicit inversion (the flow analogue of DDIM
inversion) evaluates the velocity at the known end point, v_θ(x_{i+1}, t_i); ``refine = k``
then runs k fixed-point iterations x_i ← x_{i+1} − Δσ_i·v_θ(x_i, t_i), which converge to the exact
inverse of the sampler's step when Δσ_i times the velocity's Lipschitz constant is below 1
(the fixed-point view of Pan et al. 2023, "Effective real image editing with accelerated
iterative diffusion inversion"). Each refinement costs one more model call per step.

The σ grid is the sampler's own (read from a fresh copy of the pipeline's scheduler, configured
the way the pipeline configures it), so rendering the inverted latent with the same number of
steps retraces the inverted path.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from whichway.models._common import (
    check_guidance,
    check_latents,
    check_prompts,
    check_size,
    check_steps,
    cpu_normal_latent,
)
from whichway.models.base import Adapter, Conditioning, StepCallback
from whichway.models.prompting import encode_with_syntax, nesting_of, text_device
from whichway.prompts.chunks import encode_chunks, tokenize_chunks, warn_cut
from whichway.prompts.syntax import ParsedPrompt

if TYPE_CHECKING:  # pragma: no cover
    from diffusers import DiffusionPipeline


@dataclass(frozen=True)
class FlowSchedule:
    """The σ grid a flow-matching Euler sampler follows for S steps.

    sigmas : Tensor (S + 1,) float64 CPU
        Decreasing noise levels σ_0 (≈ 1) … σ_{S−1} and the terminal σ_S = 0.
    timesteps : Tensor (S,) float32 CPU
        The timesteps the sampler feeds the model at each step (σ_i × ``num_train_timesteps``).
    num_train_timesteps : int
        The scheduler's training horizon (1000), the scale of ``timesteps``.
    """

    sigmas: Tensor
    timesteps: Tensor
    num_train_timesteps: int

    def __len__(self) -> int:
        return len(self.timesteps)


def flow_schedule(scheduler: Any, steps: int, **set_timesteps_kwargs: Any) -> FlowSchedule:
    """Read the Euler sampler's σ grid for ``steps`` steps without touching ``scheduler``.

    A fresh scheduler is built from ``scheduler.config`` and ``set_timesteps(steps,
    **set_timesteps_kwargs)`` is called on it exactly as the pipeline calls it (SD3: nothing or
    ``mu``; Flux: ``sigmas`` and ``mu``), so the grid is the pipeline's own.

    Raises ValueError for a scheduler that is not a deterministic flow-matching Euler sampler
    (stochastic sampling or inverted sigmas have no Euler inverse).
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    name = type(scheduler).__name__
    if name != "FlowMatchEulerDiscreteScheduler":
        raise ValueError(
            f"Euler inversion needs the pipeline's FlowMatchEulerDiscreteScheduler, got {name}; "
            "load the model with its own flow-matching scheduler"
        )
    config = scheduler.config
    if config.get("stochastic_sampling", False):
        raise ValueError(
            "the scheduler samples stochastically (stochastic_sampling=True), which has no "
            "deterministic inverse; reload it with stochastic_sampling=False"
        )
    if config.get("invert_sigmas", False):
        raise ValueError(
            "the scheduler has invert_sigmas=True, which Euler inversion does not support"
        )
    fresh = type(scheduler).from_config(config)
    fresh.set_timesteps(steps, device="cpu", **set_timesteps_kwargs)
    sigmas = fresh.sigmas.detach().to("cpu", torch.float64)
    timesteps = fresh.timesteps.detach().to("cpu", torch.float32)
    if len(sigmas) != len(timesteps) + 1 or sigmas[-1] != 0:
        raise ValueError(  # pragma: no cover - guards against a future scheduler layout change
            f"unexpected flow-matching schedule: {len(timesteps)} timesteps, {len(sigmas)} sigmas "
            f"ending at {float(sigmas[-1])}"
        )
    return FlowSchedule(sigmas, timesteps, int(config.num_train_timesteps))


Velocity = Callable[[Tensor, Tensor], Tensor]
"""``velocity(x (B, C, h, w), t (scalar float32 timestep)) -> v (B, C, h, w)``, guidance applied."""


@torch.no_grad()
def euler_invert(
    velocity: Velocity,
    latent: Tensor,
    schedule: FlowSchedule,
    *,
    refine: int = 0,
    model_dtype: torch.dtype | None = None,
    on_step: StepCallback | None = None,
) -> Tensor:
    """Invert the flow-matching Euler sampler: clean latent (σ = 0) -> initial noise (σ = 1).

    .. math::  x_i = x_{i+1} - (\\sigma_{i+1} - \\sigma_i)\\, v_\\theta(\\hat x_i, t_i),
               \\qquad \\hat x_i^{(0)} = x_{i+1},\\; \\hat x_i^{(k+1)} = x_{i+1} - (\\sigma_{i+1} - \\sigma_i)\\, v_\\theta(\\hat x_i^{(k)}, t_i)

    Parameters
    ----------
    velocity : callable
        ``velocity(x, t)`` with x (B, C, h, w) in ``model_dtype`` on the model's device and t
        the sampler's timestep (scalar float32 tensor, scale ``schedule.num_train_timesteps``);
        returns the (guided) velocity (B, C, h, w).
    latent : Tensor (B, C, h, w)
        Clean model-space latents (VAE mean, shifted and scaled), on the model's device.
    schedule : FlowSchedule
        The sampler's σ grid (:func:`flow_schedule`).
    refine : int
        Fixed-point iterations per step (0 = explicit inversion, one model call per step).
    model_dtype : torch.dtype, optional
        dtype the model is called in (default: the latent's dtype).

    Returns
    -------
    Tensor (B, C, h, w), the initial latent at σ_0, in the latent's dtype and device. The
    running state is kept in float64 (float32 on devices without float64, e.g. MPS).
    """
    if not isinstance(refine, int) or isinstance(refine, bool) or refine < 0:
        raise ValueError(f"refine must be a non-negative integer, got {refine!r}")
    if latent.ndim != 4:
        raise ValueError(f"latent must be (B, C, h, w), got shape {tuple(latent.shape)}")
    work = torch.float32 if latent.device.type == "mps" else torch.float64
    call_dtype = model_dtype or latent.dtype
    x = latent.to(work)
    sigmas = schedule.sigmas.to(device=latent.device, dtype=work)
    for i in range(len(schedule) - 1, -1, -1):  # σ_S = 0 back to σ_0
        t = schedule.timesteps[i].to(latent.device)
        delta = sigmas[i + 1] - sigmas[i]  # negative: σ decreases while sampling
        end = x
        guess = end
        for _ in range(refine + 1):
            v = velocity(guess.to(call_dtype), t).to(work)
            guess = end - delta * v
        x = guess
        if on_step is not None:
            on_step()
    return x.to(latent.dtype)


@torch.no_grad()
def euler_sample(
    velocity: Velocity,
    noise: Tensor,
    schedule: FlowSchedule,
    *,
    model_dtype: torch.dtype | None = None,
) -> Tensor:
    """The Euler sampler itself, x_{i+1} = x_i + (σ_{i+1} − σ_i)·v_θ(x_i, t_i), noise -> clean.

    The forward twin of :func:`euler_invert` on the same grid, with the same precision rules;
    used to measure the inversion's round-trip error without decoding.

    noise : Tensor (B, C, h, w) at σ_0; returns the clean latent (B, C, h, w).
    """
    work = torch.float32 if noise.device.type == "mps" else torch.float64
    call_dtype = model_dtype or noise.dtype
    x = noise.to(work)
    sigmas = schedule.sigmas.to(device=noise.device, dtype=work)
    for i in range(len(schedule)):
        t = schedule.timesteps[i].to(noise.device)
        x = x + (sigmas[i + 1] - sigmas[i]) * velocity(x.to(call_dtype), t).to(work)
    return x.to(noise.dtype)


class FlowMatchingAdapter(Adapter):
    """What the SD3 and Flux adapters share: flow-matching Euler sampling through the pipeline,
    Euler inversion on the pipeline's σ grid, negative-prompt caching, size and latent checks.

    Subclasses implement ``_encode`` (prompts -> Conditioning), ``_run`` (one pipeline call,
    images or latents), ``_velocity`` (the sampler's guided velocity field), ``_denoise`` (one
    raw transformer call) and ``schedule`` (the pipeline's σ grid for a size).

    Attributes
    ----------
    max_sequence_length : int
        T5 token window: the T5 group has this many rows, padding included (at most 512).
    inversion_refine : int
        Fixed-point refinements per Euler inversion step (:func:`euler_invert`; 0 = explicit
        inversion, k costs k extra transformer calls per step and tightens the reconstruction).
    """

    inversion = "flow"
    inversion_sampler = "flow-euler"
    #: default dtype on an accelerator (read by ``load_adapter``): both families are trained in
    #: bfloat16, and SD3.5 / Flux activations overflow float16
    gpu_dtype = torch.bfloat16
    #: the pipeline's default T5 window
    default_max_sequence_length = 256

    def __init__(
        self,
        pipe: DiffusionPipeline,
        model_id: str = "",
        *,
        max_sequence_length: int | None = None,
        inversion_refine: int = 0,
    ) -> None:
        super().__init__(pipe, model_id)
        pipe.set_progress_bar_config(disable=True)
        length = (
            self.default_max_sequence_length if max_sequence_length is None else max_sequence_length
        )
        if not isinstance(length, int) or isinstance(length, bool) or not 1 <= length <= 512:
            raise ValueError(f"max_sequence_length must be an integer in [1, 512], got {length!r}")
        if (
            not isinstance(inversion_refine, int)
            or isinstance(inversion_refine, bool)
            or inversion_refine < 0
        ):
            raise ValueError(
                f"inversion_refine must be a non-negative integer, got {inversion_refine!r}"
            )
        self.max_sequence_length = length
        self.inversion_refine = inversion_refine
        self._negative_cache: dict[tuple[str, str, str], Conditioning] = {}

    # --- sizes -----------------------------------------------------------------------------
    @property
    def size_multiple(self) -> int:
        """Height and width must be multiples of this (VAE factor x transformer patch)."""
        return self.vae_scale_factor * 2

    @property
    def latent_channels(self) -> int:
        return int(self.pipe.vae.config.latent_channels)

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """(C, H/f, W/f): the unpacked latent the pipeline draws (f = VAE factor, 8)."""
        check_size(height, width, self.size_multiple)
        f = self.vae_scale_factor
        return self.latent_channels, height // f, width // f

    # --- text ------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> Conditioning:
        """Prompts -> conditioning: plain prompts through the pipeline's ``encode_prompt``, prompts
        with syntax or over a CLIP window through :meth:`_encode_parsed` (:mod:`whichway.prompts`);
        a batch of different row counts tiled to a common count."""
        return encode_with_syntax(
            check_prompts(prompts),
            fits=self._fits,
            plain=self._encode,
            parsed=self._encode_parsed,
            nesting=nesting_of(self.weighting),
            tiling_exact=False,  # joint attention: repeated text rows are not invisible
        )

    def _fits(self, prompt: str) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def _encode_parsed(self, parsed: ParsedPrompt, index: int) -> Conditioning:  # pragma: no cover
        raise NotImplementedError

    def _t5_cloud(self, tokenizer: Any, encoder: Any, parsed: ParsedPrompt, index: int) -> Tensor:
        """T5 tokens of a parsed prompt: one window of ``max_sequence_length`` (what does not fit
        is cut, with a warning), weighted by ``self.weighting``: (n, D) in the encoder's dtype."""
        window = self.max_sequence_length
        chunks = tokenize_chunks(tokenizer, parsed, window, chunked=False)
        warn_cut(chunks, index, window, "T5 text encoder")
        cloud, _ = encode_chunks(
            chunks,
            lambda ids: (encoder(ids)[0], None),
            self.weighting,
            text_device(self),
        )
        return cloud

    def _encode(self, prompts: list[str]) -> Conditioning:  # pragma: no cover - abstract
        raise NotImplementedError

    def encode_negative(self, negative_prompt: str | None = None, batch: int = 1) -> Conditioning:
        """``negative_prompt or ""`` encoded exactly like a prompt (neither SD3 nor Flux zeroes its
        unconditional input); cached per text; ``batch`` rows."""
        if negative_prompt is not None and not isinstance(negative_prompt, str):
            raise ValueError(
                f"negative_prompt must be a string or None, got {type(negative_prompt).__name__}"
            )
        if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
            raise ValueError(f"batch must be a positive integer, got {batch!r}")
        text = negative_prompt or ""
        key = (text, self.weighting, self.long_prompts)
        if key not in self._negative_cache:
            self._negative_cache[key] = self.encode([text])
        return self._negative_cache[key].expand(batch)

    def _negative_for(self, negative: Conditioning | None, batch: int) -> Conditioning:
        negative = self.encode_negative(None, 1) if negative is None else negative
        if len(negative) == 1 and batch > 1:
            negative = negative.expand(batch)
        if len(negative) != batch:
            raise ValueError(
                f"negative has {len(negative)} rows but cond has {batch}; give {batch} or 1"
            )
        return negative

    # --- latents ---------------------------------------------------------------------------
    def initial_latent(self, seed: int, height: int, width: int) -> Tensor:
        """(C, H/8, W/8) float32 CPU: the unpacked draw of the pipeline's ``prepare_latents`` for
        ``generator=torch.Generator("cpu").manual_seed(seed)``, drawn in the pipeline's dtype
        (so casting back when rendering is exact)."""
        return cpu_normal_latent(self.latent_shape(height, width), seed, dtype=self.dtype)

    # --- schedulers ------------------------------------------------------------------------
    def use_scheduler(self, name: str) -> str:
        """Render with ``"inversion"`` (the flow-matching Euler scheduler the model was loaded
        with, whose σ grid Euler inversion walks back) or the ``"default"`` scheduler (the
        loaded one, or the ``--sampler`` choice). Returns the name active before."""
        if name not in ("default", "inversion"):
            raise ValueError(f"unknown scheduler {name!r}; valid choices are: default, inversion")
        before = (
            "inversion"
            if self.pipe.scheduler is self._loaded_scheduler
            and self._default_scheduler is not self._loaded_scheduler
            else "default"
        )
        self.pipe.scheduler = (
            self._loaded_scheduler if name == "inversion" else self._default_scheduler
        )
        return before

    # --- inversion -------------------------------------------------------------------------
    def schedule(self, steps: int, height: int, width: int) -> FlowSchedule:  # pragma: no cover
        raise NotImplementedError

    def _velocity(self, cond: Conditioning, guidance: float) -> Velocity:  # pragma: no cover
        raise NotImplementedError

    @torch.no_grad()
    def invert_latent(
        self,
        latent: Tensor,
        prompt: str,
        *,
        steps: int,
        guidance: float = 1.0,
        on_step: StepCallback | None = None,
    ) -> Tensor:
        """Euler inversion of clean latents in the transformer's (shifted, scaled) latent space.

        latent : (B, C, h, w) or (C, h, w) unpacked, e.g. :meth:`render_latent` output or a VAE
        latent. Integrates the prompt's velocity (with the same guidance the render will use)
        from σ = 0 back to σ = 1 on the pipeline's own σ grid (:func:`euler_invert`, with
        :attr:`inversion_refine` fixed-point refinements). Returns the initial latents, same
        shape, float32 CPU, unscaled N(0, I) convention. Switches rendering to the loaded Euler
        scheduler (``use_scheduler("inversion")``) so that rendering retraces the path.
        """
        if not isinstance(prompt, str):
            raise ValueError(f"prompt must be a string, got {type(prompt).__name__}")
        steps = check_steps(steps)
        guidance = check_guidance(guidance)
        if not isinstance(latent, Tensor) or latent.ndim not in (3, 4):
            raise ValueError("latent must be a torch.Tensor (B, C, h, w) or (C, h, w)")
        single = latent.ndim == 3
        latent = latent.unsqueeze(0) if single else latent
        f = self.vae_scale_factor
        height, width = int(latent.shape[-2]) * f, int(latent.shape[-1]) * f
        check_latents(latent, self.latent_shape(height, width))
        cond = self.encode([prompt]).expand(latent.shape[0])
        self.use_scheduler("inversion")
        noise = euler_invert(
            self._velocity(cond, guidance),
            latent.to(self.device),
            self.schedule(steps, height, width),
            refine=self.inversion_refine,
            model_dtype=self.dtype,
            on_step=on_step,
        )
        noise = noise.to("cpu", torch.float32)
        return noise[0] if single else noise

    # --- one denoiser call -----------------------------------------------------------------
    def _denoise(self, cond: Conditioning, x: Tensor, t: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    @torch.no_grad()
    def denoise_once(self, cond: Conditioning, latent: Tensor, timestep: float) -> Tensor:
        """One transformer call without classifier-free guidance: the velocity v̂(latent, t | cond)
        (B, C, h, w) float32 CPU.

        latent : (B, C, h, w) or (C, h, w) unpacked, B = 1 or len(cond)
        timestep : the sampler's timestep scale, σ x ``num_train_timesteps`` (0..1000)
        """
        if not isinstance(latent, Tensor) or latent.ndim not in (3, 4):
            raise ValueError("latent must be a torch.Tensor (B, C, h, w) or (C, h, w)")
        latent = latent.unsqueeze(0) if latent.ndim == 3 else latent
        if latent.shape[0] not in (1, len(cond)):
            raise ValueError(
                f"latent must be (B, C, h, w) with B = 1 or {len(cond)}, got {tuple(latent.shape)}"
            )
        f = self.vae_scale_factor
        latent = self._batch_latents(
            cond, latent, int(latent.shape[-2]) * f, int(latent.shape[-1]) * f
        )
        horizon = float(self.pipe.scheduler.config.num_train_timesteps)
        if (
            not isinstance(timestep, (int, float))
            or not 0 <= float(timestep) <= horizon
            or math.isnan(timestep)
        ):
            raise ValueError(f"timestep must be a number in [0, {horizon:g}], got {timestep!r}")
        t = torch.tensor(float(timestep), dtype=torch.float32, device=self.device)
        return self._denoise(cond, latent, t).float().cpu()

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["max_sequence_length"] = self.max_sequence_length
        info["inversion_refine"] = self.inversion_refine
        return info
