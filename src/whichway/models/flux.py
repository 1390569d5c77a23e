"""Adapter for FLUX.1 (``FluxPipeline``: dev, schnell; MMDiT with RoPE + flow matching).

Flux conditions its transformer on the T5-XXL token states (n = 512 by default, 4096 wide)
through joint attention, and on CLIP-L's pooled vector (768) through the modulation. whichway
therefore has one token group, the T5 tokens (B, n, 4096), and one pooled vector (B, 768).
Positions enter Flux only through rotary embeddings (RoPE) with 3-axis position ids: the image
patches get (0, row, column), and *every* text token gets the same id (0, 0, 0), i.e. the
identity rotation — so the transformer is expected not to see the order of the text tokens,
as measured by :func:`whichway.models.invariance.check_invariance`.

Latents: Flux draws an unpacked latent (16, H/8, W/8) and packs it into 2x2 patches, a sequence
(H/16 · W/16, 64). The adapter's latents are the unpacked ones (so COG/SLERP act on the same
Gaussian the pipeline draws); rendering packs them exactly as ``prepare_latents`` does, so the
t = 0 frame equals the plain pipeline's image for the same seed.

Guidance. ``guidance`` is the pipeline's ``guidance_scale``: for guidance-distilled models
(FLUX.1-dev, ``transformer.config.guidance_embeds``) it is fed to the transformer as an
embedding — one forward pass per step, no unconditional branch; models without the embedding
(FLUX.1-schnell) ignore it, exactly as the pipeline does. True classifier-free guidance with the
negative conditioning is opt-in through :attr:`FluxAdapter.true_cfg_scale` > 1 (the pipeline's
``true_cfg_scale``); it doubles the transformer calls (the pipeline runs the two branches one
after the other).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from whichway.models._common import check_guidance, step_callback, warn_if_truncated
from whichway.models.base import Conditioning, StepCallback
from whichway.models.flow import FlowMatchingAdapter, FlowSchedule, Velocity, flow_schedule
from whichway.models.prompting import text_device
from whichway.prompts.syntax import ParsedPrompt

if TYPE_CHECKING:  # pragma: no cover
    from diffusers import DiffusionPipeline


class FluxAdapter(FlowMatchingAdapter):
    """FLUX.1: one token group (T5 tokens (n, D)) and CLIP's pooled vector.

    Attributes (beyond :class:`~whichway.models.flow.FlowMatchingAdapter`'s)
    ----------
    true_cfg_scale : float
        Scale of true classifier-free guidance with the negative conditioning (the pipeline's
        ``true_cfg_scale``); 1.0 (default) = off, as in the pipeline. When on and no negative
        conditioning is given, the empty prompt is the unconditional.
    denoise_guidance : float
        Distilled-guidance value :meth:`denoise_once` feeds a guidance-distilled transformer (the
        pipeline's default, 3.5).
    """

    family: ClassVar[str] = "flux"
    pipeline_classes: ClassVar[tuple[str, ...]] = ("FluxPipeline",)
    default_max_sequence_length = 512

    def __init__(
        self,
        pipe: DiffusionPipeline,
        model_id: str = "",
        *,
        max_sequence_length: int | None = None,
        inversion_refine: int = 0,
        true_cfg_scale: float = 1.0,
        denoise_guidance: float = 3.5,
    ) -> None:
        super().__init__(
            pipe,
            model_id,
            max_sequence_length=max_sequence_length,
            inversion_refine=inversion_refine,
        )
        self.true_cfg_scale = check_guidance(true_cfg_scale)
        self.denoise_guidance = check_guidance(denoise_guidance)

    @property
    def distilled_guidance(self) -> bool:
        """Whether the transformer takes ``guidance`` as an embedding (FLUX.1-dev) or not (schnell)."""
        return bool(self.pipe.transformer.config.guidance_embeds)

    # --- sizes -----------------------------------------------------------------------------
    @property
    def latent_channels(self) -> int:
        return int(self.pipe.transformer.config.in_channels) // 4

    @property
    def default_size(self) -> tuple[int, int]:
        side = int(self.pipe.default_sample_size) * self.vae_scale_factor
        return side, side

    # --- packing ---------------------------------------------------------------------------
    def pack(self, latents: Tensor) -> Tensor:
        """(B, C, h, w) -> (B, h/2 · w/2, 4C): the pipeline's own ``_pack_latents``."""
        b, c, h, w = latents.shape
        return self.pipe._pack_latents(latents, b, c, h, w)

    def unpack(self, packed: Tensor, height: int, width: int) -> Tensor:
        """(B, h/2 · w/2, 4C) -> (B, C, h, w) for an image of height x width pixels."""
        return self.pipe._unpack_latents(packed, height, width, self.vae_scale_factor)

    def _ids(self, n_text: int, h: int, w: int) -> tuple[Tensor, Tensor]:
        """(txt_ids (n, 3) all zeros, img_ids (h/2 · w/2, 3) = (0, row, col)), as the pipeline
        builds them."""
        txt = torch.zeros(n_text, 3, device=self.device, dtype=self.dtype)
        img = self.pipe._prepare_latent_image_ids(1, h // 2, w // 2, self.device, self.dtype)
        return txt, img

    # --- text ------------------------------------------------------------------------------
    @torch.no_grad()
    def _encode(self, prompts: list[str]) -> Conditioning:
        """The pipeline's own ``encode_prompt``: clouds = (T5 tokens (B, n, D),), pooled = CLIP
        pooled (B, p). Float32 CPU. Warns when a prompt exceeds the CLIP window (77; only the
        pooled vector is affected) or the T5 window (``max_sequence_length``)."""
        warn_if_truncated(
            self.pipe.tokenizer,
            prompts,
            int(self.pipe.tokenizer_max_length),
            encoder="CLIP text encoder",
        )
        warn_if_truncated(
            self.pipe.tokenizer_2, prompts, self.max_sequence_length, encoder="T5 text encoder"
        )
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

    def _fits(self, prompt: str) -> bool:
        """Every plain prompt takes the pipeline's path: T5 has its own window
        (``max_sequence_length``) and CLIP gives only the pooled vector, from its first 77
        tokens (a longer prompt warns: that is what Flux cannot take)."""
        return True

    @torch.no_grad()
    def _encode_parsed(self, parsed: ParsedPrompt, index: int) -> Conditioning:
        """One prompt with syntax: T5 tokens (1, n, D) weighted by ``self.weighting`` in one
        window; pooled from CLIP on the text without syntax (weights do not move it, as in
        ComfyUI)."""
        text = parsed.text
        warn_if_truncated(
            self.pipe.tokenizer, [text], int(self.pipe.tokenizer_max_length), "CLIP text encoder"
        )
        pooled = self.pipe._get_clip_prompt_embeds(
            prompt=[text], device=text_device(self), num_images_per_prompt=1
        )
        t5 = self._t5_cloud(self.pipe.tokenizer_2, self.pipe.text_encoder_2, parsed, index)
        return Conditioning(
            (t5.to("cpu", torch.float32).unsqueeze(0),),
            pooled.detach().to("cpu", torch.float32),
        )

    def _embeds(self, cond: Conditioning, name: str = "cond") -> tuple[Tensor, Tensor]:
        """(prompt_embeds (B, n, D), pooled (B, p)) on the pipeline's device and dtype."""
        if len(cond.clouds) != 1 or cond.pooled is None:
            raise ValueError(
                f"a Flux {name} has one token group (T5) and a pooled vector; got "
                f"{len(cond.clouds)} group(s) and {'no' if cond.pooled is None else 'a'} pooled vector"
            )
        return (
            cond.clouds[0].to(device=self.device, dtype=self.dtype),
            cond.pooled.to(device=self.device, dtype=self.dtype),
        )

    # --- rendering -------------------------------------------------------------------------
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
        """One ``FluxPipeline`` call with packed initial latents; ``guidance`` is the distilled
        guidance scale; true CFG only when :attr:`true_cfg_scale` > 1. Latent output unpacked."""
        embeds, pooled = self._embeds(cond)
        latents = self._batch_latents(cond, latents, height, width)
        kwargs: dict[str, Any] = {}
        if self.true_cfg_scale > 1:
            neg_embeds, neg_pooled = self._embeds(
                self._negative_for(negative, len(cond)), "negative"
            )
            kwargs.update(
                negative_prompt_embeds=neg_embeds,
                negative_pooled_prompt_embeds=neg_pooled,
                true_cfg_scale=self.true_cfg_scale,
            )
        out = self.pipe(
            prompt_embeds=embeds,
            pooled_prompt_embeds=pooled,
            latents=self.pack(latents),
            num_inference_steps=steps,
            guidance_scale=guidance,
            height=height,
            width=width,
            output_type=output_type,
            callback_on_step_end=step_callback(on_step, steps),
            max_sequence_length=self.max_sequence_length,
            **kwargs,
        )
        images = out.images
        return self.unpack(images, height, width) if output_type == "latent" else images

    # --- inversion -------------------------------------------------------------------------
    def schedule(self, steps: int, height: int, width: int) -> FlowSchedule:
        """The σ grid ``FluxPipeline`` samples on: σ = linspace(1, 1/steps, steps) shifted by
        μ(image sequence length) (``calculate_shift``), as in the pipeline's ``__call__``."""
        import numpy as np
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        config = self._loaded_scheduler.config
        _, h, w = self.latent_shape(height, width)
        sigmas = (
            None if config.get("use_flow_sigmas", False) else np.linspace(1.0, 1 / steps, steps)
        )
        mu = calculate_shift(
            (h // 2) * (w // 2),
            config.get("base_image_seq_len", 256),
            config.get("max_image_seq_len", 4096),
            config.get("base_shift", 0.5),
            config.get("max_shift", 1.15),
        )
        return flow_schedule(self._loaded_scheduler, steps, sigmas=sigmas, mu=mu)

    def _transformer(
        self, x: Tensor, t: Tensor, embeds: Tensor, pooled: Tensor, guidance: float
    ) -> Tensor:
        """The transformer on unpacked latents x (B, C, h, w) at sampler timestep t (scale 1000),
        called as the pipeline calls it (packed input, t / 1000, distilled guidance embedding,
        RoPE ids); returns the unpacked velocity (B, C, h, w)."""
        b, _, h, w = x.shape
        f = self.vae_scale_factor
        txt_ids, img_ids = self._ids(embeds.shape[1], h, w)
        timestep = t.to(x.device).expand(b).to(x.dtype)
        g = (
            torch.full((b,), float(guidance), device=x.device, dtype=torch.float32)
            if self.distilled_guidance
            else None
        )
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

    def _velocity(self, cond: Conditioning, guidance: float) -> Velocity:
        """The sampler's velocity field: distilled guidance as an input; with
        :attr:`true_cfg_scale` s > 1, v_u + s (v_c − v_u) from one batched call."""
        embeds, pooled = self._embeds(cond)
        scale = self.true_cfg_scale
        if scale > 1:
            neg_embeds, neg_pooled = self._embeds(self._negative_for(None, len(cond)), "negative")
            embeds, pooled = torch.cat([neg_embeds, embeds]), torch.cat([neg_pooled, pooled])

        def velocity(x: Tensor, t: Tensor) -> Tensor:
            if scale > 1:
                v_u, v_c = self._transformer(torch.cat([x, x]), t, embeds, pooled, guidance).chunk(
                    2
                )
                return v_u + scale * (v_c - v_u)
            return self._transformer(x, t, embeds, pooled, guidance)

        return velocity

    # --- one denoiser call -----------------------------------------------------------------
    def _denoise(self, cond: Conditioning, x: Tensor, t: Tensor) -> Tensor:
        embeds, pooled = self._embeds(cond)
        return self._transformer(x, t, embeds, pooled, self.denoise_guidance)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["distilled_guidance"] = self.distilled_guidance
        info["true_cfg_scale"] = self.true_cfg_scale
        return info
