"""The adapter contract every pipeline family implements.

An adapter wraps one loaded diffusers pipeline and exposes exactly what interpolation needs:

* prompts -> :class:`Conditioning` (token point clouds per token group + pooled vectors),
* a seed -> the initial latent the plain pipeline would draw for that seed,
* batches of (conditioning, latent) waypoints -> images, in one batched pipeline call,
* an image -> its initial latent (DDIM inversion, or Euler inversion for flow matching),
* one denoiser call, for the token-order invariance check.

Geometry happens between ``encode`` and ``render`` on float32 CPU tensors, so the geometry
modules never import model code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from whichway.models._common import (
    StepCallback,
    check_guidance,
    check_latents,
    check_size,
    check_steps,
    images_to_cpu,
    prepare_image,
    vae_encode,
)

if TYPE_CHECKING:  # pragma: no cover
    from diffusers import DiffusionPipeline


MAX_ALIGNED_ROWS = 24 * 77
"""Most token rows :meth:`Conditioning.aligned` tiles to (24 CLIP chunks): beyond, the least
common multiple of the prompts' lengths costs more attention than it is worth."""


@dataclass(frozen=True)
class Conditioning:
    """Text conditioning of a batch of B prompts.

    clouds : tuple of Tensor (B, n_g, d_g)
        Token point clouds, one per token group. Each group is coupled separately (a token of one
        group is never matched to a token of another). SD 1.x/2.x: one group (77, 768 | 1024);
        SDXL: one group (77, 2048), both encoders' hidden states concatenated per token; SD3: two
        groups, CLIP tokens (77, 4096, zero-padded as the pipeline does) and T5 tokens (n, 4096);
        Flux: one group, T5 tokens (n, 4096). Padding tokens are included: they condition too.
    pooled : Tensor (B, p) or None
        Pooled vector(s) (SDXL ``text_embeds``, SD3/Flux pooled). Interpolated, never coupled.
    """

    clouds: tuple[Tensor, ...]
    pooled: Tensor | None = None

    def __post_init__(self) -> None:
        if not self.clouds:
            raise ValueError("Conditioning needs at least one token group")
        sizes = {c.shape[0] for c in self.clouds}
        if self.pooled is not None:
            sizes.add(self.pooled.shape[0])
        if len(sizes) != 1 or any(c.ndim != 3 for c in self.clouds):
            raise ValueError(
                "every token group must be (B, n, d) and share B with pooled (B, p); got "
                f"{[tuple(c.shape) for c in self.clouds]} and "
                f"{None if self.pooled is None else tuple(self.pooled.shape)}"
            )

    def __len__(self) -> int:
        return self.clouds[0].shape[0]

    def select(self, index: int | slice | Sequence[int] | Tensor) -> Conditioning:
        """Rows ``index`` of the batch (an int keeps the batch axis)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        pick = (
            (lambda t: t[index])
            if isinstance(index, slice)
            else (lambda t: t[torch.as_tensor(index, dtype=torch.long)])
        )
        return Conditioning(
            tuple(pick(c) for c in self.clouds), None if self.pooled is None else pick(self.pooled)
        )

    def expand(self, batch: int) -> Conditioning:
        """Repeat a single-prompt conditioning (B = 1) ``batch`` times."""
        if len(self) != 1:
            raise ValueError(f"expand needs a conditioning of batch 1, got {len(self)}")
        return Conditioning(
            tuple(c.expand(batch, -1, -1) for c in self.clouds),
            None if self.pooled is None else self.pooled.expand(batch, -1),
        )

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Conditioning:
        return Conditioning(
            tuple(c.to(device=device, dtype=dtype) for c in self.clouds),
            None if self.pooled is None else self.pooled.to(device=device, dtype=dtype),
        )

    @property
    def rows(self) -> tuple[int, ...]:
        """Token rows per group, (n_0, n_1, ...)."""
        return tuple(int(c.shape[1]) for c in self.clouds)

    def tile(self, rows: Sequence[int]) -> Conditioning:
        """Each group repeated whole along the token axis to ``rows[g]`` rows (a multiple of n_g).

        In cross-attention softmax(q·Kᵀ/√D)·V, r copies of every key/value row give every copy
        1/r of the original's weight and the same values: the output is unchanged, so a cloud of
        n rows and its r-fold tiling condition a UNet identically (up to float rounding).
        """
        if len(rows) != len(self.clouds) or any(
            r < c.shape[1] or r % c.shape[1] for r, c in zip(rows, self.clouds)
        ):
            raise ValueError(f"cannot tile token groups of {self.rows} rows to {tuple(rows)}")
        return Conditioning(
            tuple(
                c if r == c.shape[1] else c.repeat(1, r // c.shape[1], 1)
                for r, c in zip(rows, self.clouds)
            ),
            self.pooled,
        )

    @staticmethod
    def aligned(items: Sequence[Conditioning]) -> list[Conditioning]:
        """The items tiled (:meth:`tile`) to the least common multiple of their row counts per
        group, so that they can be batched and coupled row for row (long prompts of different
        chunk counts)."""
        if not items:
            return []
        groups = len(items[0].clouds)
        if any(len(c.clouds) != groups for c in items):
            raise ValueError(
                "conditionings to align must come from the same model family; got token groups "
                f"of {[c.rows for c in items]} rows"
            )
        target = [math.lcm(*(c.rows[g] for c in items)) for g in range(groups)]
        if any(t > MAX_ALIGNED_ROWS for t in target):
            counts = sorted({c.rows for c in items})
            raise ValueError(
                f"prompts of {counts} token rows need {max(target)} rows when tiled to a common "
                f"length (their least common multiple), more than {MAX_ALIGNED_ROWS}; give them "
                "chunk counts with a small common multiple (a trailing BREAK adds an empty chunk)"
            )
        return [c.tile(target) for c in items]

    @staticmethod
    def cat(items: Sequence[Conditioning]) -> Conditioning:
        """Concatenate along the batch axis."""
        if not items:
            raise ValueError("cannot concatenate an empty list of conditionings")
        groups = len(items[0].clouds)
        if any(
            len(c.clouds) != groups or (c.pooled is None) != (items[0].pooled is None)
            for c in items
        ):
            raise ValueError("conditionings to concatenate must come from the same model family")
        return Conditioning(
            tuple(torch.cat([c.clouds[g] for c in items]) for g in range(groups)),
            None if items[0].pooled is None else torch.cat([c.pooled for c in items]),
        )


class Adapter:
    """Base class of the per-family adapters (see :func:`whichway.models.load_adapter`).

    Attributes
    ----------
    family : str        "sd", "sdxl", "sd3" or "flux"
    pipe : DiffusionPipeline   the loaded pipeline (built once, reused for every batch)
    model_id : str      hub id or local directory it was loaded from
    device, dtype       where and in what precision the pipeline runs
    """

    family: ClassVar[str] = ""
    #: pipeline class names this adapter serves
    pipeline_classes: ClassVar[tuple[str, ...]] = ()
    #: "ddim" (epsilon/v prediction) or "flow" (flow matching)
    inversion: ClassVar[str] = ""

    #: what a prompt weight does (:data:`whichway.prompts.weighting.WEIGHTING_RULES`)
    weighting: str = "comfyui"
    #: a prompt longer than a CLIP window: "chunk" (75-token chunks) or "truncate"
    long_prompts: str = "chunk"

    #: the sampler an inversion is the exact inverse of ("ddim" or "flow-euler"): what a
    #: real-image morph renders with
    inversion_sampler: ClassVar[str] = ""

    def __init__(self, pipe: DiffusionPipeline, model_id: str = "") -> None:
        self.pipe = pipe
        self.model_id = model_id
        self.device = pipe.device
        self.dtype = pipe.dtype
        # the scheduler the model was loaded with: inversion builds its integrator from it
        self._loaded_scheduler = pipe.scheduler
        # what render uses (``--sampler``, :func:`whichway.models.runtime.set_sampler`)
        self._default_scheduler = pipe.scheduler
        #: the ``--sampler`` name rendering uses; None = the loaded scheduler
        self.sampler: str | None = None
        #: what :func:`whichway.models.runtime.apply_runtime` did (None: the model as loaded)
        self.runtime: Any = None

    # --- sizes -----------------------------------------------------------------------------
    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell along each side."""
        return int(self.pipe.vae_scale_factor)

    @property
    def size_multiple(self) -> int:
        """Height and width must be multiples of this."""
        raise NotImplementedError

    @property
    def default_size(self) -> tuple[int, int]:
        """(height, width) in pixels the pipeline renders by default."""
        raise NotImplementedError

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """(C, h, w) of the unpacked initial latent for an image of height x width."""
        raise NotImplementedError

    # --- text ------------------------------------------------------------------------------
    def encode(self, prompts: Sequence[str]) -> Conditioning:
        """Encode prompts once; float32 CPU tensors. Warns (``warnings.warn``) with the token
        count and the cut text when a prompt is longer than the encoder's window."""
        raise NotImplementedError

    def encode_negative(self, negative_prompt: str | None = None, batch: int = 1) -> Conditioning:
        """The unconditional conditioning the plain pipeline would use (``""`` or zeros, as the
        pipeline's own config says), or the given negative prompt; batch rows."""
        raise NotImplementedError

    # --- latents ---------------------------------------------------------------------------
    def initial_latent(self, seed: int, height: int, width: int) -> Tensor:
        """(C, h, w) float32 CPU: the latent the plain pipeline draws for
        ``generator=torch.Generator("cpu").manual_seed(seed)`` (same on every device)."""
        raise NotImplementedError

    # --- rendering -------------------------------------------------------------------------
    @torch.no_grad()
    def render(
        self,
        cond: Conditioning,
        latents: Tensor,
        *,
        steps: int,
        guidance: float,
        height: int,
        width: int,
        negative: Conditioning | None = None,
        on_step: StepCallback | None = None,
    ) -> Tensor:
        """Render B waypoints in one batched pipeline call (guidance's unconditional and
        conditional halves in the same batch). latents (B, C, h, w) unpacked, unscaled N(0, I)
        draws, or one (C, h, w) shared by the batch; negative: B or 1 rows, default the
        pipeline's own unconditional. Returns (B, 3, H, W) float32 CPU images in [0, 1]."""
        return images_to_cpu(
            self._run(
                cond,
                latents,
                check_steps(steps),
                check_guidance(guidance),
                height,
                width,
                negative,
                on_step,
                "pt",
            )
        )

    @torch.no_grad()
    def render_latent(
        self,
        cond: Conditioning,
        latents: Tensor,
        *,
        steps: int,
        guidance: float,
        height: int,
        width: int,
        negative: Conditioning | None = None,
        on_step: StepCallback | None = None,
    ) -> Tensor:
        """As :meth:`render`, but return the clean latent before the VAE decoder: (B, C, h, w)
        float32 CPU, unpacked, in the denoiser's (shifted, scaled) latent space."""
        out = self._run(
            cond,
            latents,
            check_steps(steps),
            check_guidance(guidance),
            height,
            width,
            negative,
            on_step,
            "latent",
        )
        return out.detach().to("cpu", torch.float32)

    def _run(
        self,
        cond: Conditioning,
        latents: Tensor,
        steps: int,
        guidance: float,
        height: int,
        width: int,
        negative: Conditioning | None,
        on_step: StepCallback | None,
        output_type: str,
    ) -> Tensor:
        """One batched pipeline call returning ``output_type`` "pt" images or "latent"s."""
        raise NotImplementedError

    def _batch_latents(
        self, cond: Conditioning, latents: Tensor, height: int, width: int
    ) -> Tensor:
        """Initial latents (B, C, h, w) or one (1, C, h, w) / (C, h, w) shared by the batch,
        checked against the size and moved to the pipeline's device and dtype."""
        latents = check_latents(latents, self.latent_shape(height, width))
        if latents.shape[0] == 1 and len(cond) > 1:
            latents = latents.expand(len(cond), -1, -1, -1)
        if latents.shape[0] != len(cond):
            raise ValueError(
                f"latents have {latents.shape[0]} rows but cond has {len(cond)}; give B or 1"
            )
        return latents.to(device=self.device, dtype=self.dtype)

    def _inversion_size(
        self, image: Tensor, height: int | None, width: int | None
    ) -> tuple[int, int]:
        """The given size, or the image's own rounded down to a multiple of ``size_multiple``."""
        m = self.size_multiple
        h = height if height is not None else max(m, (int(image.shape[-2]) // m) * m)
        w = width if width is not None else max(m, (int(image.shape[-1]) // m) * m)
        check_size(h, w, m)
        return h, w

    @torch.no_grad()
    def invert(
        self,
        image: Tensor,
        prompt: str,
        *,
        steps: int,
        guidance: float = 1.0,
        height: int | None = None,
        width: int | None = None,
        on_step: StepCallback | None = None,
    ) -> Tensor:
        """Invert an image (3, H, W) in [0, 1] to its initial latent (C, h, w) float32 CPU, so
        that rendering it with ``encode([prompt])`` and the same steps/guidance reconstructs it
        (up to the VAE's own reconstruction error and the inversion's discretisation error).

        The image is resized to height x width (default: its own size rounded down to a
        multiple of :attr:`size_multiple`), encoded by the VAE (the latent distribution's mean,
        shifted and scaled as the pipeline undoes it) and inverted by :meth:`invert_latent`:
        DDIM inversion for the diffusion families, Euler inversion for flow matching.
        """
        if not isinstance(prompt, str):
            raise ValueError(f"prompt must be a string, got {type(prompt).__name__}")
        if not isinstance(image, Tensor):
            raise ValueError("image must be a torch.Tensor (3, H, W) with values in [0, 1]")
        height, width = self._inversion_size(image, height, width)
        clean = vae_encode(self.pipe.vae, prepare_image(image, height, width))
        return self.invert_latent(clean[0], prompt, steps=steps, guidance=guidance, on_step=on_step)

    def invert_latent(
        self,
        latent: Tensor,
        prompt: str,
        *,
        steps: int,
        guidance: float = 1.0,
        on_step: StepCallback | None = None,
    ) -> Tensor:
        """Invert clean latents (B, C, h, w) or (C, h, w) in the denoiser's latent space to
        initial latents of the same shape (float32 CPU, unscaled N(0, I) convention)."""
        raise NotImplementedError

    def denoise_once(self, cond: Conditioning, latent: Tensor, timestep: float) -> Tensor:
        """One denoiser call (no guidance) on latent (B, C, h, w) at ``timestep``; returns the
        model output, for the invariance check."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Settings for ``run.json``."""
        return {
            "model": self.model_id,
            "family": self.family,
            "pipeline": type(self.pipe).__name__,
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
            "scheduler": type(self.pipe.scheduler).__name__,
            "sampler": self.sampler or "default",
            "weighting": self.weighting,
            "long_prompts": self.long_prompts,
            **({"runtime": self.runtime.describe()} if self.runtime is not None else {}),
        }
