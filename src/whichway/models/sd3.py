"""Adapter for Stable Diffusion 3 / 3.5 (``StableDiffusion3Pipeline``, MMDiT + flow matching).

SD3 conditions its MMDiT on a *joint* token sequence (Esser et al. 2024, sec. 5.2): the two CLIP
encoders' penultimate hidden states concatenated per token (768 + 1280 = 2048 wide), zero-padded
to T5's width 4096, followed by the T5-XXL tokens:

.. math::  c = [\\,\\mathrm{pad}_{4096}(h^{L}_{1:77} \\oplus h^{G}_{1:77})\\;;\\; h^{T5}_{1:n}\\,] \\in \\mathbb{R}^{(77+n)\\times 4096}

and on a pooled vector p = [pool^L ⊕ pool^G] (2048) through adaptive layer norm. whichway
splits c into its two token groups, CLIP (77, 4096) and T5 (n, 4096), so OT never matches a
CLIP token to a T5 token; the pooled vector is interpolated. The text tokens get no positional
encoding in the MMDiT (only the image patches do), so the token order is expected not to
matter — measured by :func:`whichway.models.invariance.check_invariance`.

Sampling is the pipeline's own flow-matching Euler loop; inversion is the matching Euler
inversion of :mod:`whichway.models.flow`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from whichway.models._common import guided, step_callback, warn_if_truncated
from whichway.models.base import Conditioning, StepCallback
from whichway.models.flow import FlowMatchingAdapter, FlowSchedule, Velocity, flow_schedule
from whichway.models.prompting import clip_encoder, text_device, token_count
from whichway.prompts.chunks import encode_chunks, tokenize_chunks, warn_cut
from whichway.prompts.syntax import ParsedPrompt


class SD3Adapter(FlowMatchingAdapter):
    """Stable Diffusion 3 / 3.5: two token groups (CLIP (77, D), T5 (n, D)) and a pooled vector.

    ``guidance`` is classifier-free guidance as in the pipeline: above 1 the unconditional
    (negative, default the empty prompt) and conditional halves go through the transformer in
    one batch. ``max_sequence_length`` (T5 window) defaults to the pipeline's 256.
    """

    family: ClassVar[str] = "sd3"
    pipeline_classes: ClassVar[tuple[str, ...]] = ("StableDiffusion3Pipeline",)
    default_max_sequence_length = 256

    # --- sizes -----------------------------------------------------------------------------
    @property
    def clip_tokens(self) -> int:
        """Rows of the CLIP token group (the CLIP window, 77)."""
        return int(self.pipe.tokenizer_max_length)

    @property
    def size_multiple(self) -> int:
        """Height and width must be multiples of this (the pipeline checks VAE factor x patch)."""
        return self.vae_scale_factor * int(self.pipe.patch_size)

    @property
    def latent_channels(self) -> int:
        return int(self.pipe.transformer.config.in_channels)

    @property
    def default_size(self) -> tuple[int, int]:
        side = int(self.pipe.default_sample_size) * self.vae_scale_factor
        return side, side

    # --- text ------------------------------------------------------------------------------
    @torch.no_grad()
    def _encode(self, prompts: list[str]) -> Conditioning:
        """The pipeline's own ``encode_prompt`` (all three encoders get the prompt), split into the
        CLIP group (B, 77, D) — zero-padded from 2 x CLIP width to D as the pipeline pads it — and
        the T5 group (B, n, D); pooled (B, 2 x CLIP projection). Float32 CPU. Warns
        (:class:`~whichway.models._common.PromptTruncatedWarning`) when a prompt exceeds the CLIP
        window (77) or the T5 window (``max_sequence_length``)."""
        warn_if_truncated(
            self.pipe.tokenizer, prompts, self.clip_tokens, encoder="CLIP text encoder"
        )
        if self.pipe.text_encoder_3 is not None and self.pipe.tokenizer_3 is not None:
            warn_if_truncated(
                self.pipe.tokenizer_3, prompts, self.max_sequence_length, encoder="T5 text encoder"
            )
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

    def _fits(self, prompt: str) -> bool:
        """Plain prompts within both CLIP windows take the pipeline's path (T5 has its own
        window and cuts, with a warning, as the pipeline does)."""
        return self.long_prompts == "truncate" or all(
            token_count(tok, prompt) <= self.clip_tokens
            for tok in (self.pipe.tokenizer, self.pipe.tokenizer_2)
        )

    @torch.no_grad()
    def _encode_parsed(self, parsed: ParsedPrompt, index: int) -> Conditioning:
        """One prompt with syntax or over the CLIP window: each CLIP encoder's chunks
        (penultimate hidden states) weighted and joined, concatenated per token and zero-padded
        to D -> CLIP group (1, 77·k, D); T5 group (1, n, D) one window, weighted; pooled = both
        CLIP encoders' pooled vectors of the first chunk."""
        pipe = self.pipe
        clouds, pools = [], []
        names = ("CLIP text encoder", "CLIP text encoder 2")
        pairs = ((pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2))
        for (tokenizer, encoder), name in zip(pairs, names):
            chunks = tokenize_chunks(
                tokenizer, parsed, self.clip_tokens, chunked=self.long_prompts == "chunk"
            )
            warn_cut(chunks, index, self.clip_tokens, name)
            cloud, pool = encode_chunks(
                chunks, clip_encoder(encoder, -2), self.weighting, text_device(self)
            )
            clouds.append(cloud.to(encoder.dtype))
            pools.append(pool)
        if pipe.text_encoder_3 is None or pipe.tokenizer_3 is None:
            width = int(pipe.transformer.config.joint_attention_dim)
            t5 = torch.zeros(self.max_sequence_length, width, dtype=clouds[0].dtype)
        else:
            t5 = self._t5_cloud(pipe.tokenizer_3, pipe.text_encoder_3, parsed, index)
        clip = torch.cat(clouds, dim=-1)
        clip = torch.nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
        return Conditioning(
            (
                clip.to("cpu", torch.float32).unsqueeze(0),
                t5.to("cpu", torch.float32).unsqueeze(0),
            ),
            torch.cat(pools, dim=-1).to("cpu", torch.float32).unsqueeze(0),
        )

    def _joint(self, cond: Conditioning, name: str = "cond") -> tuple[Tensor, Tensor]:
        """(prompt_embeds (B, 77 + n, D), pooled (B, p)) on the pipeline's device and dtype."""
        if len(cond.clouds) != 2 or cond.pooled is None:
            raise ValueError(
                f"an SD3 {name} has two token groups (CLIP, T5) and a pooled vector; got "
                f"{len(cond.clouds)} group(s) and {'no' if cond.pooled is None else 'a'} pooled vector"
            )
        clip, t5 = cond.clouds
        if clip.shape[1] % self.clip_tokens or clip.shape[2] != t5.shape[2]:
            raise ValueError(
                f"SD3 token groups must be CLIP (B, {self.clip_tokens}·k, D) and T5 (B, n, D); got "
                f"{tuple(clip.shape)} and {tuple(t5.shape)}"
            )
        joint = torch.cat([clip, t5], dim=1).to(device=self.device, dtype=self.dtype)
        return joint, cond.pooled.to(device=self.device, dtype=self.dtype)

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
        """One ``StableDiffusion3Pipeline`` call: the joint prompt embeddings re-assembled from the
        two groups, the given latents, CFG halves batched by the pipeline when guidance > 1."""
        latents = self._batch_latents(cond, latents, height, width)
        kwargs: dict[str, Any] = {}
        if guidance > 1:
            # the pipeline batches both halves: a CLIP group of another chunk count is tiled
            # (as ComfyUI does; not invisible in joint attention, see docs/prompts.md)
            cond, negative = Conditioning.aligned([cond, self._negative_for(negative, len(cond))])
            neg_embeds, neg_pooled = self._joint(negative, "negative")
            kwargs.update(
                negative_prompt_embeds=neg_embeds, negative_pooled_prompt_embeds=neg_pooled
            )
        embeds, pooled = self._joint(cond)
        out = self.pipe(
            prompt_embeds=embeds,
            pooled_prompt_embeds=pooled,
            latents=latents,
            num_inference_steps=steps,
            guidance_scale=guidance,
            height=height,
            width=width,
            output_type=output_type,
            callback_on_step_end=step_callback(on_step, steps),
            max_sequence_length=self.max_sequence_length,
            **kwargs,
        )
        return out.images

    # --- inversion -------------------------------------------------------------------------
    def schedule(self, steps: int, height: int, width: int) -> FlowSchedule:
        """The σ grid the pipeline samples on (with SD3.5's resolution shift μ when the scheduler
        has ``use_dynamic_shifting``, computed as the pipeline computes it)."""
        config = self._loaded_scheduler.config
        kwargs: dict[str, Any] = {}
        if config.get("use_dynamic_shifting", False):
            from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import (
                calculate_shift,
            )

            _, h, w = self.latent_shape(height, width)
            p = int(self.pipe.transformer.config.patch_size)
            kwargs["mu"] = calculate_shift(
                (h // p) * (w // p),
                config.get("base_image_seq_len", 256),
                config.get("max_image_seq_len", 4096),
                config.get("base_shift", 0.5),
                config.get("max_shift", 1.16),
            )
        return flow_schedule(self._loaded_scheduler, steps, **kwargs)

    def _velocity(self, cond: Conditioning, guidance: float) -> Velocity:
        """The sampler's velocity field: the transformer on [negative; cond] in one batch when
        guidance > 1, combined as v_u + w (v_c − v_u) (Ho & Salimans 2022)."""
        cfg = guidance > 1
        if cfg:
            cond, negative = Conditioning.aligned([cond, self._negative_for(None, len(cond))])
            neg_embeds, neg_pooled = self._joint(negative, "negative")
        embeds, pooled = self._joint(cond)
        if cfg:
            embeds, pooled = torch.cat([neg_embeds, embeds]), torch.cat([neg_pooled, pooled])
        transformer = self.pipe.transformer

        def velocity(x: Tensor, t: Tensor) -> Tensor:
            model_in = torch.cat([x, x]) if cfg else x
            out = transformer(
                hidden_states=model_in,
                timestep=t.to(x.device).expand(model_in.shape[0]),
                encoder_hidden_states=embeds,
                pooled_projections=pooled,
                return_dict=False,
            )[0]
            return guided(out, guidance) if cfg else out

        return velocity

    # --- one denoiser call -----------------------------------------------------------------
    def _denoise(self, cond: Conditioning, x: Tensor, t: Tensor) -> Tensor:
        embeds, pooled = self._joint(cond)
        return self.pipe.transformer(
            hidden_states=x,
            timestep=t.expand(x.shape[0]),
            encoder_hidden_states=embeds,
            pooled_projections=pooled,
            return_dict=False,
        )[0]
