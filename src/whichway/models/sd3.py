"""Adapter for Stable Diffusion 3 / 3.5 (``StableDiffusion3Pipeline``, MMDiT + flow matching).

SD3 conditions its MMDiT on a *joint* token sequence (Esser et al. 2024, sec. 5.2): the two CLIP
encoders' penultimate hidden states concatenated per token (768 + 1280 = 2048 wide), zero-padded
to T5's width 4096, followed by the T5-XXL tokens:

.. math::  c = [\\,\\mathrm{pad}_{4096}(h^{L}_{1:77} \\oplus h^{G}_{1:77})\\;;\\; h^{T5}_{1:n}\\,] \\in \\mathbb{R}^{(77+n)\\times 4096}

and on a pooled vector p = [pool^L ⊕ pool^G] (2048) through adaptive layer norm. whichway
splits c into its two token groups, CLIP (77, 4096) and T5 (n, 4096), so OT never matches a
CLIP token to a T5 token; the pooled vector is interpolated. The text tokens get no positional
encoding in the MMDiT (only the image patches do), which is why the token order is expected not
to matter — measured by :func:`whichway.models.invariance.check_invariance`.

Sampling is the pipeline's own flow-matching Euler loop; inversion is the matching Euler
inversion of :mod:`whichway.models.flow`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from whichway.models._common import (
    check_guidance,
    check_latents,
    check_prompts,
    check_size,
    check_steps,
    cpu_normal_latent,
    guided,
    images_to_cpu,
    prepare_image,
    step_callback,
    vae_encode,
    warn_if_truncated,
)
from whichway.models.base import Adapter, Conditioning, StepCallback
from whichway.models.flow import FlowSchedule, euler_invert, flow_schedule

if TYPE_CHECKING:  # pragma: no cover
    from diffusers import DiffusionPipeline


class SD3Adapter(Adapter):
    """Stable Diffusion 3 / 3.5: two token groups (CLIP, T5) and a pooled vector.

    ``guidance`` is classifier-free guidance as in the pipeline: above 1 the unconditional
    (negative) and conditional halves go through the transformer in one batch.

    Attributes
    ----------
    max_sequence_length : int
        T5 token window (the pipeline's default, 256; at most 512). The T5 group has this many
        rows, padding included.
    inversion_refine : int
        Fixed-point refinements per Euler inversion step (:func:`whichway.models.flow.euler_invert`).
    """

    family: ClassVar[str] = "sd3"
    pipeline_classes: ClassVar[tuple[str, ...]] = ("StableDiffusion3Pipeline",)
    inversion: ClassVar[str] = "flow"
    #: default dtype on an accelerator (read by ``load_adapter``); SD3.5 overflows in float16
    gpu_dtype: ClassVar[torch.dtype] = torch.bfloat16

    def __init__(
        self,
        pipe: DiffusionPipeline,
        model_id: str = "",
        *,
        max_sequence_length: int = 256,
        inversion_refine: int = 0,
    ) -> None:
        super().__init__(pipe, model_id)
        if not isinstance(max_sequence_length, int) or not 1 <= max_sequence_length <= 512:
            raise ValueError(f"max_sequence_length must be an integer in [1, 512], got {max_sequence_length!r}")
        self.max_sequence_length = max_sequence_length
        self.inversion_refine = inversion_refine
        self._negative_cache: dict[str, Conditioning] = {}

    # --- sizes -----------------------------------------------------------------------------
    @property
    def clip_tokens(self) -> int:
        """Rows of the CLIP token group (the CLIP window, 77)."""
        return int(self.pipe.tokenizer_max_length)

    @property
    def _multiple(self) -> int:
        return int(self.pipe.vae_scale_factor * self.pipe.patch_size)

    @property
    def default_size(self) -> tuple[int, int]:
        side = int(self.pipe.default_sample_size * self.pipe.vae_scale_factor)
        return side, side

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        check_size(height, width, self._multiple)
        f = self.pipe.vae_scale_factor
        return int(self.pipe.transformer.config.in_channels), height // f, width // f

    # --- text ------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> Conditioning:
        """Encode prompts with the pipeline's own ``encode_prompt`` (all three encoders get the
        prompt), then split the joint sequence (B, 77 + n, D) into the CLIP group (B, 77, D),
        zero-padded from 2 x CLIP width to D as the pipeline pads it, and the T5 group (B, n, D).
        pooled: (B, 2 x CLIP projection). Float32 CPU."""
        prompts = check_prompts(prompts)
        warn_if_truncated(self.pipe.tokenizer, prompts, self.clip_tokens, encoder="CLIP")
        if self.pipe.text_encoder_3 is not None and self.pipe.tokenizer_3 is not None:
            warn_if_truncated(self.pipe.tokenizer_3, prompts, self.max_sequence_length, encoder="T5")
        embeds, _, pooled, _ = self.pipe.encode_prompt(
            prompt=prompts,
            prompt_2=None,
            prompt_3=None,
            device=self.device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=False,
            max_sequence_length=self.max_sequence_length,
        )
        embeds = embeds.detach().to("cpu", torch.float32)
        n_clip = self.clip_tokens
        return Conditioning(
            (embeds[:, :n_clip].contiguous(), embeds[:, n_clip:].contiguous()),
            pooled.detach().to("cpu", torch.float32),
        )

    def encode_negative(self, negative_prompt: str | None = None, batch: int = 1) -> Conditioning:
        """The pipeline's unconditional input: ``negative_prompt or ""`` through all three
        encoders (SD3 has no zeroed unconditional); cached per text."""
        if negative_prompt is not None and not isinstance(negative_prompt, str):
            raise ValueError(f"negative_prompt must be a string or None, got {type(negative_prompt).__name__}")
        if not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be a positive integer, got {batch!r}")
        text = negative_prompt or ""
        if text not in self._negative_cache:
            self._negative_cache[text] = self.encode([text])
        return self._negative_cache[text].expand(batch)

    def _joint(self, cond: Conditioning) -> tuple[Tensor, Tensor]:
        """(prompt_embeds (B, 77 + n, D), pooled (B, p)) on the pipeline's device and dtype."""
        if len(cond.clouds) != 2 or cond.pooled is None:
            raise ValueError(
                "an SD3 conditioning has two token groups (CLIP, T5) and a pooled vector; got "
                f"{len(cond.clouds)} group(s) and pooled={'none' if cond.pooled is None else 'set'}"
            )
        clip, t5 = cond.clouds
        if clip.shape[1] != self.clip_tokens or clip.shape[2] != t5.shape[2]:
            raise ValueError(
                f"SD3 token groups must be CLIP (B, {self.clip_tokens}, D) and T5 (B, n, D); got "
                f"{tuple(clip.shape)} and {tuple(t5.shape)}"
            )
        joint = torch.cat([clip, t5], dim=1).to(device=self.device, dtype=self.dtype)
        return joint, cond.pooled.to(device=self.device, dtype=self.dtype)

    # --- latents ---------------------------------------------------------------------------
    def initial_latent(self, seed: int, height: int, width: int) -> Tensor:
        """(16, H/8, W/8) float32 CPU: what ``prepare_latents`` draws for a CPU generator
        seeded with ``seed`` (drawn in the pipeline's dtype, so casting back is exact)."""
        return cpu_normal_latent(self.latent_shape(height, width), seed, dtype=self.dtype)

    # --- rendering -------------------------------------------------------------------------
    def _negative_for(self, negative: Conditioning | None, batch: int) -> Conditioning:
        negative = self.encode_negative(None, 1) if negative is None else negative
        if len(negative) == 1 and batch > 1:
            negative = negative.expand(batch)
        if len(negative) != batch:
            raise ValueError(f"negative conditioning has {len(negative)} rows, expected 1 or {batch}")
        return negative

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
        """One pipeline call for B waypoints: joint prompt embeddings re-assembled from the two
        groups, the given initial latents, CFG halves batched by the pipeline. Returns
        (B, 3, H, W) float32 CPU in [0, 1]."""
        check_steps(steps)
        guidance = check_guidance(guidance)
        latents = check_latents(latents, self.latent_shape(height, width))
        if len(cond) != latents.shape[0]:
            raise ValueError(f"got {len(cond)} conditionings but {latents.shape[0]} latents")
        embeds, pooled = self._joint(cond)
        kwargs: dict[str, Any] = {}
        if guidance > 1:
            neg_embeds, neg_pooled = self._joint(self._negative_for(negative, len(cond)))
            kwargs.update(negative_prompt_embeds=neg_embeds, negative_pooled_prompt_embeds=neg_pooled)
        out = self.pipe(
            prompt_embeds=embeds,
            pooled_prompt_embeds=pooled,
            latents=latents.to(device=self.device, dtype=self.dtype),
            num_inference_steps=steps,
            guidance_scale=guidance,
            height=height,
            width=width,
            output_type="pt",
            callback_on_step_end=step_callback(on_step),
            max_sequence_length=self.max_sequence_length,
            **kwargs,
        )
        return images_to_cpu(out.images)

    def schedule(self, steps: int, height: int, width: int) -> FlowSchedule:
        """The σ grid the pipeline samples on for this size (resolution shift when configured)."""
        config = self.pipe.scheduler.config
        kwargs: dict[str, Any] = {}
        if config.get("use_dynamic_shifting", False):
            from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift

            _, h, w = self.latent_shape(height, width)
            p = self.pipe.transformer.config.patch_size
            kwargs["mu"] = calculate_shift(
                (h // p) * (w // p),
                config.get("base_image_seq_len", 256),
                config.get("max_image_seq_len", 4096),
                config.get("base_shift", 0.5),
                config.get("max_shift", 1.16),
            )
        return flow_schedule(self.pipe.scheduler, steps, **kwargs)

    def _velocity(self, cond: Conditioning, guidance: float, negative: Conditioning | None = None) -> Any:
        """velocity(x, t) of the sampler: the transformer on [negative; cond] when guidance > 1
        (one batched call), combined as v_u + w (v_c − v_u)."""
        embeds, pooled = self._joint(cond)
        if guidance > 1:
            neg_embeds, neg_pooled = self._joint(self._negative_for(negative, len(cond)))
            embeds, pooled = torch.cat([neg_embeds, embeds]), torch.cat([neg_pooled, pooled])
        transformer = self.pipe.transformer

        def velocity(x: Tensor, t: Tensor) -> Tensor:
            model_in = torch.cat([x, x]) if guidance > 1 else x
            out = transformer(
                hidden_states=model_in,
                timestep=t.to(x.device).expand(model_in.shape[0]),
                encoder_hidden_states=embeds,
                pooled_projections=pooled,
                return_dict=False,
            )[0]
            return guided(out, guidance) if guidance > 1 else out

        return velocity

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
        """Euler inversion of clean model-space latents (B, 16, h, w) (VAE mean, shifted and
        scaled): integrate the prompt's (guided) velocity from σ = 0 back to σ = 1 on the
        sampler's own grid (:func:`whichway.models.flow.euler_invert`). Returns (B, 16, h, w)
        float32 CPU initial latents."""
        check_steps(steps)
        guidance = check_guidance(guidance)
        if not isinstance(latent, Tensor) or latent.ndim != 4:
            raise ValueError("latent must be a torch.Tensor (B, C, h, w) of clean model-space latents")
        f = self.pipe.vae_scale_factor
        height, width = latent.shape[-2] * f, latent.shape[-1] * f
        check_latents(latent, self.latent_shape(height, width))
        cond = self.encode([prompt]).expand(latent.shape[0])
        noise = euler_invert(
            self._velocity(cond, guidance),
            latent.to(self.device),
            self.schedule(steps, height, width),
            refine=self.inversion_refine,
            model_dtype=self.dtype,
            on_step=on_step,
        )
        return noise.to("cpu", torch.float32)

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
        """Invert an image (3, H, W) in [0, 1] (resized to height x width, default its own size)
        to its initial latent (16, h, w) float32 CPU: the VAE mean latent, shifted and scaled
        as the pipeline undoes it, then :meth:`invert_latent`."""
        if not isinstance(image, Tensor):
            raise ValueError("image must be a torch.Tensor (3, H, W) with values in [0, 1]")
        height = int(image.shape[-2]) if height is None else height
        width = int(image.shape[-1]) if width is None else width
        self.latent_shape(height, width)  # validates the size
        pixels = prepare_image(image, height, width).to(self.device)
        clean = vae_encode(self.pipe.vae, pixels)
        return self.invert_latent(clean, prompt, steps=steps, guidance=guidance, on_step=on_step)[0]

    @torch.no_grad()
    def denoise_once(self, cond: Conditioning, latent: Tensor, timestep: float) -> Tensor:
        """One transformer call (no guidance) on latent (B, 16, h, w) at ``timestep`` (the
        scheduler's scale, σ x 1000); returns the velocity (B, 16, h, w) on the model's device."""
        if latent.ndim != 4 or latent.shape[0] != len(cond):
            raise ValueError(
                f"latent must be (B, C, h, w) with B = {len(cond)} conditionings, got {tuple(latent.shape)}"
            )
        embeds, pooled = self._joint(cond)
        x = latent.to(device=self.device, dtype=self.dtype)
        t = torch.full((x.shape[0],), float(timestep), device=self.device, dtype=torch.float32)
        return self.pipe.transformer(
            hidden_states=x,
            timestep=t,
            encoder_hidden_states=embeds,
            pooled_projections=pooled,
            return_dict=False,
        )[0]
