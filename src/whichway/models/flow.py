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

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from whichway.models.base import StepCallback


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
        raise ValueError("the scheduler has invert_sigmas=True, which Euler inversion does not support")
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
