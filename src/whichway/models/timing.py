"""How long a render will take, from one timed denoiser call, said before the render starts.

.. math::  T \\approx \\lceil F / b \\rceil \\cdot S \\cdot k \\cdot t_{call} + F \\cdot t_{decode}

F frames in batches of b, S steps, k denoiser calls per step (2 for Flux's true CFG, else 1),
t_call one denoiser call on a batch of b x r rows (r = 2 when classifier-free guidance batches
the unconditional half), t_decode one VAE decode. Both times are measured once, at the run's own
shapes, on the run's device (the first call of a fresh process: a slight overestimate); when the batch
does not fit, half of it is timed and the time doubled.

Work before the frames (:class:`Preparation`: DiffMorpher's LoRA fits, image inversions, less
what the run folder caches) adds

.. math::  t_{row} \\cdot (n_{fit} \\cdot L \\cdot \\rho + n_{inv} \\cdot R_{inv})

with t_row one denoiser call on one row (timed), L optimizer steps per fit, ρ =
:data:`whichway.attention.methods.LORA_STEP_ROWS` (one fit step in denoiser rows) and R_inv the denoiser rows of one inversion.
Text encoding and PNG writing are left out (small next to the denoiser on a CPU).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from whichway.attention.methods import LORA_STEP_ROWS

if TYPE_CHECKING:  # pragma: no cover
    from whichway.models.base import Adapter

SLOW_RUN_S = 60.0
"""Runs expected to take longer than this get the hint for a faster choice."""


@dataclass(frozen=True)
class Preparation:
    """Work a run does before its frames, what its run folder does not cache yet.

    lora_fits : LoRAs to fit (DiffMorpher: one per image), each ``lora_steps`` optimizer steps
    inversions : images to invert, each ``inversion_rows`` denoiser rows
        (steps x (1 + refinements) x 2 under guidance)
    """

    lora_fits: int = 0
    lora_steps: int = 0
    inversions: int = 0
    inversion_rows: int = 0

    @property
    def rows(self) -> float:
        """The work in denoiser rows: lora_fits · lora_steps · LORA_STEP_ROWS + inversions ·
        inversion_rows."""
        return (
            self.lora_fits * self.lora_steps * LORA_STEP_ROWS
            + self.inversions * self.inversion_rows
        )

    def describe(self) -> str:
        """'2 LoRA fits x 200 steps, 2 inversions' (parts that are zero left out)."""
        parts = []
        if self.lora_fits and self.lora_steps:
            parts.append(
                f"{self.lora_fits} LoRA fit{'s' * (self.lora_fits != 1)} x {self.lora_steps} steps"
            )
        if self.inversions and self.inversion_rows:
            parts.append(f"{self.inversions} inversion{'s' * (self.inversions != 1)}")
        return ", ".join(parts)


def run_seconds(
    denoiser_calls: int,
    call_seconds: float,
    frames: int,
    decode_seconds: float,
    preparation: Preparation | None = None,
    row_seconds: float = 0.0,
) -> float:
    """T = denoiser_calls · t_call + frames · t_decode + t_row · preparation.rows (the module
    docstring's formula)."""
    rows = 0.0 if preparation is None else preparation.rows
    return denoiser_calls * call_seconds + frames * decode_seconds + rows * row_seconds


@dataclass(frozen=True)
class RunTimeEstimate:
    """Expected duration of a render.

    seconds : the estimate T (formula in the module docstring)
    call_seconds : one denoiser call on one batch (t_call)
    decode_seconds : one VAE decode of one frame (t_decode)
    denoiser_calls : ⌈F / b⌉ · S · k
    message : one line for the user; hint : a faster choice ("" when the run is short)
    preparation : the work before the frames; row_seconds one denoiser call on one row
    (t_row, timed only when there is preparation), so the preparation takes
    ``preparation.rows * row_seconds`` of ``seconds``
    """

    seconds: float
    call_seconds: float
    decode_seconds: float
    denoiser_calls: int
    frames: int
    steps: int
    batch_size: int
    message: str
    hint: str
    preparation: Preparation = Preparation()
    row_seconds: float = 0.0


def format_duration(seconds: float) -> str:
    """75.2 -> '1 min 15 s'; 4000 -> '1 h 7 min'."""
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def estimate_run_time(
    adapter: Adapter,
    frames: int,
    steps: int,
    guidance: float,
    height: int | None = None,
    width: int | None = None,
    batch_size: int | str | None = 1,
    preparation: Preparation | None = None,
) -> RunTimeEstimate:
    """Time one denoiser call and one VAE decode at the run's shapes and extrapolate to the run.

    adapter : the loaded model; frames, steps, guidance, height, width (None: the model's size)
    and batch_size ("auto"/None resolved as the render resolves them) as the run will use them;
    preparation : work before the frames (LoRA fits, inversions), timed as one-row denoiser calls.
    """
    from whichway.models.loading import FAST_MODEL
    from whichway.models.memory import (
        denoiser_load,
        is_out_of_memory,
        release_cached_memory,
        resolve_batch_size,
    )

    if frames < 1 or steps < 1:
        raise ValueError(f"frames and steps must be >= 1, got {frames} and {steps}")
    preparation = preparation or Preparation()
    height = height or adapter.default_size[0]
    width = width or adapter.default_size[1]
    batch = min(resolve_batch_size(batch_size, adapter, frames, height, width, guidance), frames)
    rows, calls = denoiser_load(adapter, guidance)
    device = torch.device(adapter.device)
    shape = adapter.latent_shape(height, width)
    generator = torch.Generator("cpu").manual_seed(0)
    timestep = 0.5 * float(adapter.pipe.scheduler.config.num_train_timesteps)
    timed = batch
    empty = adapter.encode([""])  # once: an out-of-memory retry only shrinks the batch
    while True:  # out of memory: time half the batch and scale (the render backs off the same way)
        latent = torch.randn((timed * rows, *shape), generator=generator)
        cond = empty.expand(timed * rows)
        _sync(device)
        start = time.perf_counter()
        try:
            adapter.denoise_once(cond, latent, timestep)
        except Exception as exc:
            if not is_out_of_memory(exc) or timed == 1:
                raise
            del exc
            release_cached_memory(device)
            timed //= 2
            continue
        _sync(device)
        call = (time.perf_counter() - start) * batch / timed
        break

    vae = adapter.pipe.vae
    z = torch.randn((1, *shape), generator=generator).to(device=vae.device, dtype=vae.dtype)
    start = time.perf_counter()
    vae.decode(z, return_dict=False)
    _sync(device)
    decode = time.perf_counter() - start

    row = 0.0
    if preparation.rows:
        one = torch.randn((1, *shape), generator=generator)
        _sync(device)
        start = time.perf_counter()
        adapter.denoise_once(empty, one, timestep)
        _sync(device)
        row = time.perf_counter() - start

    n_calls = math.ceil(frames / batch) * steps * calls
    seconds = run_seconds(n_calls, call, frames, decode, preparation, row)
    before = preparation.rows * row
    message = (
        f"expected run time on {device.type}: about {format_duration(seconds)} ({frames} frame"
        f"{'s' * (frames != 1)} x {steps} step{'s' * (steps != 1)} in batches of {batch}: "
        f"{n_calls} denoiser calls of {call:.2f} s, {frames} VAE decodes of {decode:.2f} s"
        + (f"; before them {preparation.describe()}: {format_duration(before)}" if before else "")
        + ")"
    )
    hint = ""
    if seconds > SLOW_RUN_S:
        smaller = (
            f"a smaller size (e.g. --height {max(adapter.size_multiple, height // 2)} "
            f"--width {max(adapter.size_multiple, width // 2)})"
        )
        choices = [f"fewer --steps (now {steps})", smaller]
        if adapter.model_id != FAST_MODEL:
            choices.insert(
                0, f"--model {FAST_MODEL} --steps 1 --guidance 0 (one step, no guidance)"
            )
        fitting = preparation.lora_fits * preparation.lora_steps * LORA_STEP_ROWS * row
        if fitting > seconds / 2:  # the LoRA fits dominate
            choices.insert(0, f"fewer --lora-steps (now {preparation.lora_steps})")
        hint = "for a faster run: " + ", ".join(choices[:-1]) + ", or " + choices[-1]
    return RunTimeEstimate(
        seconds, call, decode, n_calls, frames, steps, batch, message, hint, preparation, row
    )
