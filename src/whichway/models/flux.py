"""Adapter for FLUX.1 (``FluxPipeline``: dev, schnell; MMDiT with RoPE + flow matching).

Flux conditions its transformer on the T5-XXL token states (n = 512 by default, 4096 wide)
through joint attention, and on CLIP-L's pooled vector (768) through the modulation. whichway
therefore has one token group, the T5 tokens (B, n, 4096), and one pooled vector (B, 768).
Positions enter Flux only through rotary embeddings (RoPE) with 3-axis position ids: the image
patches get (0, row, column), and *every* text token gets the same id (0, 0, 0), i.e. the
identity rotation — so the transformer cannot see the order of the text tokens and the T5 group
is a point cloud, as measured by :func:`whichway.models.invariance.check_invariance`.

Latents: Flux draws an unpacked latent (16, H/8, W/8) and packs it into 2x2 patches, a sequence
(H/16 · W/16, 64). The adapter's latents are the unpacked ones (so COG/SLERP act on the same
Gaussian the pipeline draws); rendering packs them exactly as ``prepare_latents`` does, so the
t = 0 frame equals the plain pipeline's image for the same seed.

Guidance. ``guidance`` is the pipeline's ``guidance_scale``: for guidance-distilled models
(FLUX.1-dev, ``transformer.config.guidance_embeds``) it is fed to the transformer as an
embedding, one forward pass per step, no unconditional branch; models without the embedding
(FLUX.1-schnell) ignore it, exactly as the pipeline does. True classifier-free guidance with the
negative conditioning is opt-in through :attr:`FluxAdapter.true_cfg_scale` (> 1), the pipeline's
``true_cfg_scale``; it doubles the transformer calls.
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


class FluxAdapter(Adapter):
    """FLUX.1: one token group (T5 tokens) and CLIP's pooled vector.

    Attributes
    ----------
    max_sequence_length : int
        T5 token window (the pipeline's default, 512; schnell was trained with 256).
    true_cfg_scale : float
        Scale of true classifier-free guidance with the negative conditioning (the pipeline's
        ``true_cfg_scale``); 1.0 (default) = off, as in the pipeline. When on and no negative
        conditioning is given, the empty prompt is the unconditional.
    denoise_guidance : float
        Distilled-guidance value used by :meth:`denoise_once` (the pipeline's default, 3.5).
    inversion_refine : int
        Fixed-point refinements per Euler inversion step (:func:`whichway.models.flow.euler_invert`).
    """

    family: ClassVar[str] = "flux"
    pipeline_classes: ClassVar[tuple[str, ...]] = ("FluxPipeline",)
    inversion: ClassVar[str] = "flow"
    #: default dtype on an accelerator (read by ``load_adapter``): Flux is trained in bfloat16
    gpu_dtype: ClassVar[torch.dtype] = torch.bfloat16

    def __init__(
        self,
        pipe: DiffusionPipeline,
        model_id: str = "",
        *,
        max_sequence_length: int = 512,
        true_cfg_scale: float = 1.0,
        inversion_refine: int = 0,
    ) -> None:
        super().__init__(pipe, model_id)
        if not isinstance(max_sequence_length, int) or not 1 <= max_sequence_length <= 512:
            raise ValueError(f"max_sequence_length must be an integer in [1, 512], got {max_sequence_length!r}")
        self.max_sequence_length = max_sequence_length
        self.true_cfg_scale = check_guidance(true_cfg_scale)
        self.denoise_guidance = 3.5
        self.inversion_refine = inversion_refine
        self._negative_cache: dict[str, Conditioning] = {}

    @property
    def distilled_guidance(self) -> bool:
        """Whether the transformer takes ``guidance`` as an embedding (FLUX.1-dev) or not (schnell)."""
        return bool(self.pipe.transformer.config.guidance_embeds)

    # --- sizes -----------------------------------------------------------------------------
    @property
    def _multiple(self) -> int:
        return int(self.pipe.vae_scale_factor * 2)

    @property
    def default_size(self) -> tuple[int, int]:
        side = int(self.pipe.default_sample_size * self.pipe.vae_scale_factor)
        return side, side

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """(16, H/8, W/8): the unpacked latent (the pipeline packs it into 2x2 patches)."""
        check_size(height, width, self._multiple)
        f = self.pipe.vae_scale_factor
        return int(self.pipe.transformer.config.in_channels) // 4, height // f, width // f

    # --- packing ---------------------------------------------------------------------------
    def pack(self, latents: Tensor) -> Tensor:
        """(B, C, h, w) -> (B, h/2 · w/2, 4C), the pipeline's own ``_pack_latents``."""
        b, c, h, w = latents.shape
        return self.pipe._pack_latents(latents, b, c, h, w)

    def unpack(self, packed: Tensor, height: int, width: int) -> Tensor:
        """(B, h/2 · w/2, 4C) -> (B, C, h, w) for an image of height x width pixels."""
        return self.pipe._unpack_latents(packed, height, width, self.pipe.vae_scale_factor)

    def _ids(self, n_text: int, h: int, w: int) -> tuple[Tensor, Tensor]:
        """(txt_ids (n, 3) zeros, img_ids (h/2 · w/2, 3) = (0, row, col)) as the pipeline builds them."""
        txt = torch.zeros(n_text, 3, device=self.device, dtype=self.dtype)
        img = self.pipe._prepare_latent_image_ids(1, h // 2, w // 2, self.device, self.dtype)
        return txt, img

    # --- text ------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> Conditioning:
        """Encode prompts with the pipeline's ``encode_prompt``: clouds = (T5 tokens (B, n, D),),
        pooled = CLIP pooled (B, p). Float32 CPU. Warns when a prompt exceeds the CLIP window
        (77; only the pooled vector is affected) or the T5 window (``max_sequence_length``)."""
        prompts = check_prompts(prompts)
        warn_if_truncated(self.pipe.tokenizer, prompts, int(self.pipe.tokenizer_max_length), encoder="CLIP")
        warn_if_truncated(self.pipe.tokenizer_2, prompts, self.max_sequence_length, encoder="T5")
        embeds, pooled, _ = self.pipe.encode_prompt(
            prompt=prompts,
            prompt_2=None,
            device=self.device,
            num_images_per_prompt=1,
            max_sequence_length=self.max_sequence_length,
        )
        return Conditioning(
            (embeds.detach().to("cpu", torch.float32).contiguous(),),
            pooled.detach().to("cpu", torch.float32),
        )

    def encode_negative(self, negative_prompt: str | None = None, batch: int = 1) -> Conditioning:
        """The negative conditioning for true CFG: ``negative_prompt or ""`` encoded like a
        prompt (used only when :attr:`true_cfg_scale` > 1); cached per text."""
        if negative_prompt is not None and not isinstance(negative_prompt, str):
            raise ValueError(f"negative_prompt must be a string or None, got {type(negative_prompt).__name__}")
        if not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be a positive integer, got {batch!r}")
        text = negative_prompt or ""
        if text not in self._negative_cache:
            self._negative_cache[text] = self.encode([text])
        return self._negative_cache[text].expand(batch)

    def _embeds(self, cond: Conditioning) -> tuple[Tensor, Tensor]:
        """(prompt_embeds (B, n, D), pooled (B, p)) on the pipeline's device and dtype."""
        if len(cond.clouds) != 1 or cond.pooled is None:
            raise ValueError(
                "a Flux conditioning has one token group (T5) and a pooled vector; got "
                f"{len(cond.clouds)} group(s) and pooled={'none' if cond.pooled is None else 'set'}"
            )
        return (
            cond.clouds[0].to(device=self.device, dtype=self.dtype),
            cond.pooled.to(device=self.device, dtype=self.dtype),
        )

    def _negative_for(self, negative: Conditioning | None, batch: int) -> Conditioning:
        negative = self.encode_negative(None, 1) if negative is None else negative
        if len(negative) == 1 and batch > 1:
            negative = negative.expand(batch)
        if len(negative) != batch:
            raise ValueError(f"negative conditioning has {len(negative)} rows, expected 1 or {batch}")
        return negative

    # --- latents ---------------------------------------------------------------------------
    def initial_latent(self, seed: int, height: int, width: int) -> Tensor:
        """(16, H/8, W/8) float32 CPU: the unpacked draw of ``prepare_latents`` for a CPU
        generator seeded with ``seed``, before packing."""
        return cpu_normal_latent(self.latent_shape(height, width), seed, dtype=self.dtype)

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
        """One pipeline call for B waypoints with packed initial latents; ``guidance`` is the
        distilled guidance scale, true CFG only when :attr:`true_cfg_scale` > 1. Returns
        (B, 3, H, W) float32 CPU in [0, 1]."""
        check_steps(steps)
        guidance = check_guidance(guidance)
        latents = check_latents(latents, self.latent_shape(height, width))
        if len(cond) != latents.shape[0]:
            raise ValueError(f"got {len(cond)} conditionings but {latents.shape[0]} latents")
        embeds, pooled = self._embeds(cond)
        kwargs: dict[str, Any] = {}
        if self.true_cfg_scale > 1:
            neg_embeds, neg_pooled = self._embeds(self._negative_for(negative, len(cond)))
            kwargs.update(
                negative_prompt_embeds=neg_embeds,
                negative_pooled_prompt_embeds=neg_pooled,
                true_cfg_scale=self.true_cfg_scale,
            )
        out = self.pipe(
            prompt_embeds=embeds,
            pooled_prompt_embeds=pooled,
            latents=self.pack(latents.to(device=self.device, dtype=self.dtype)),
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
        """The σ grid ``FluxPipeline`` samples on: σ = linspace(1, 1/steps, steps) shifted by
        μ(image sequence length) (``calculate_shift``), as in the pipeline's ``__call__``."""
        import numpy as np
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        check_steps(steps)
        config = self.pipe.scheduler.config
        _, h, w = self.latent_shape(height, width)
        sigmas = None if config.get("use_flow_sigmas", False) else np.linspace(1.0, 1 / steps, steps)
        mu = calculate_shift(
            (h // 2) * (w // 2),
            config.get("base_image_seq_len", 256),
            config.get("max_image_seq_len", 4096),
            config.get("base_shift", 0.5),
            config.get("max_shift", 1.15),
        )
        return flow_schedule(self.pipe.scheduler, steps, sigmas=sigmas, mu=mu)

    def _transformer(self, x: Tensor, t: Tensor, embeds: Tensor, pooled: Tensor, guidance: float) -> Tensor:
        """The transformer on unpacked latents x (B, C, h, w) at sampler timestep t (scale 1000),
        called as the pipeline calls it (packed, t / 1000, guidance embedding, RoPE ids); returns
        the unpacked velocity (B, C, h, w)."""
        b, _, h, w = x.shape
        f = self.pipe.vae_scale_factor
        txt_ids, img_ids = self._ids(embeds.shape[1], h, w)
        timestep = t.to(x.device).expand(b).to(x.dtype)
        g = None
        if self.distilled_guidance:
            g = torch.full((b,), float(guidance), device=x.device, dtype=torch.float32)
        out = self.pipe.transformer(
            hidden_states=self.pack(x),
            timestep=timestep / 1000,
            guidance=g,
            pooled_projections=pooled,
            encoder_hidden_states=embeds,
            txt_ids=txt_ids,
            img_ids=img_ids,
            return_dict=False,
        )[0]
        return self.unpack(out, h * f, w * f)

    def _velocity(self, cond: Conditioning, guidance: float, negative: Conditioning | None = None) -> Any:
        """velocity(x, t) of the sampler: distilled guidance as an input, true CFG
        v_u + s (v_c − v_u) in one batched call when :attr:`true_cfg_scale` > 1."""
        embeds, pooled = self._embeds(cond)
        scale = self.true_cfg_scale
        if scale > 1:
            neg_embeds, neg_pooled = self._embeds(self._negative_for(negative, len(cond)))
            embeds, pooled = torch.cat([neg_embeds, embeds]), torch.cat([neg_pooled, pooled])

        def velocity(x: Tensor, t: Tensor) -> Tensor:
            if scale > 1:
                uncond, cond_v = self._transformer(torch.cat([x, x]), t, embeds, pooled, guidance).chunk(2)
                return uncond + scale * (cond_v - uncond)
            return self._transformer(x, t, embeds, pooled, guidance)

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
        """Euler inversion of clean model-space latents (B, 16, h, w) (unpacked; VAE mean,
        shifted and scaled) back to the initial latents (B, 16, h, w) float32 CPU on the
        pipeline's σ grid; packing, RoPE ids and guidance as in :meth:`render`."""
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
        to its unpacked initial latent (16, h, w) float32 CPU: VAE mean latent, shifted and
        scaled, then :meth:`invert_latent`. For FLUX.1-dev pass the ``guidance`` you will
        render with (it is an input of the velocity field)."""
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
        """One transformer call (no CFG; distilled guidance :attr:`denoise_guidance` when the
        model has it) on unpacked latent (B, 16, h, w) at ``timestep`` (scheduler scale,
        σ x 1000); returns the unpacked velocity (B, 16, h, w) on the model's device."""
        if not isinstance(latent, Tensor) or latent.ndim != 4 or latent.shape[0] != len(cond):
            raise ValueError(
                f"latent must be a Tensor (B, C, h, w) with B = {len(cond)} conditionings, got "
                f"{tuple(latent.shape) if isinstance(latent, Tensor) else type(latent).__name__}"
            )
        embeds, pooled = self._embeds(cond)
        x = latent.to(device=self.device, dtype=self.dtype)
        t = torch.tensor(float(timestep), dtype=torch.float32)
        return self._transformer(x, t, embeds, pooled, self.denoise_guidance)
