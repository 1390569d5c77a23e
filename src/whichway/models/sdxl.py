"""Adapter for Stable Diffusion XL (``StableDiffusionXLPipeline``).

SDXL conditions its UNet on two things: cross-attention over the tokens, whose vectors are the
penultimate hidden states of both CLIP encoders concatenated per token (77, 768 + 1280 = 2048),
and an added embedding of the second encoder's pooled projection (``text_embeds``, 1280) with the
size/crop ``time_ids``. The tokens form one cloud, coupled by optimal transport; the pooled vector
is interpolated, never coupled. Everything else (sizes, schedulers, DDIM inversion) is inherited
from :class:`whichway.models.sd.SDAdapter`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from whichway.models.base import Conditioning
from whichway.models.prompting import clip_encoder, text_device
from whichway.models.sd import SDAdapter
from whichway.prompts.chunks import encode_chunks
from whichway.prompts.syntax import ParsedPrompt


class SDXLAdapter(SDAdapter):
    """Stable Diffusion XL: one token cloud (B, 77, 2048) and a pooled vector (B, 1280)."""

    family: ClassVar[str] = "sdxl"
    pipeline_classes: ClassVar[tuple[str, ...]] = ("StableDiffusionXLPipeline",)

    @property
    def default_size(self) -> tuple[int, int]:
        size = int(self.pipe.default_sample_size) * self.vae_scale_factor
        return size, size

    @property
    def _tokenizers(self) -> list[tuple[Any, str]]:
        return [
            (self.pipe.tokenizer, "CLIP ViT-L text encoder"),
            (self.pipe.tokenizer_2, "OpenCLIP ViT-bigG text encoder"),
        ]

    def _encode(self, prompts: list[str]) -> Conditioning:
        embeds, _, pooled, _ = self.pipe.encode_prompt(
            prompt=prompts,
            device=self.device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=False,
        )
        return Conditioning((embeds.float().cpu(),), pooled.float().cpu())

    def _encode_parsed(self, parsed: ParsedPrompt, index: int) -> Conditioning:
        """One prompt with syntax or longer than the window: each encoder's chunks (penultimate
        hidden states, as ``encode_prompt`` takes them) weighted by ``self.weighting``, joined
        along the tokens and concatenated per token: (1, 77·k, 768 + 1280); pooled from the
        second encoder's first chunk (as A1111 and ComfyUI take it)."""
        clouds: list[Tensor] = []
        pooled = None
        encoders = (self.pipe.text_encoder, self.pipe.text_encoder_2)
        for (tokenizer, name), encoder in zip(self._tokenizers, encoders):
            if tokenizer is None or encoder is None:
                continue
            chunks = self._chunks(tokenizer, parsed, index, name)
            cloud, pool = encode_chunks(
                chunks, clip_encoder(encoder, -2), self.weighting, text_device(self)
            )
            clouds.append(cloud.to(encoder.dtype))
            pooled = pool if pool is not None else pooled
        if len({c.shape[0] for c in clouds}) != 1:
            raise ValueError(
                f"prompt {index}: the two tokenizers split it into different chunk counts "
                f"{[c.shape[0] // 77 for c in clouds]}; shorten it or add BREAK"
            )
        cloud = torch.cat(clouds, dim=-1).float().cpu().unsqueeze(0)
        return Conditioning((cloud,), pooled.float().cpu().unsqueeze(0))

    def _encode_negative(self, negative_prompt: str | None) -> Conditioning:
        # the pipeline's own rule: zeros when no negative prompt is given and the model's config
        # says force_zeros_for_empty_prompt (SDXL base), else the encoded "" / negative prompt
        _, embeds, _, pooled = self.pipe.encode_prompt(
            prompt=[""],
            device=self.device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=True,
            negative_prompt=None if negative_prompt is None else [negative_prompt],
        )
        return Conditioning((embeds.float().cpu(),), pooled.float().cpu())

    def _check_cond(self, cond: Conditioning, name: str = "cond") -> None:
        if not isinstance(cond, Conditioning):
            raise ValueError(
                f"{name} must be a Conditioning (from adapter.encode), got {type(cond).__name__}"
            )
        if len(cond.clouds) != 1 or cond.pooled is None:
            raise ValueError(
                f"{name} must have one token group and a pooled vector for an sdxl model; got "
                f"{len(cond.clouds)} group(s) and "
                f"{'a' if cond.pooled is not None else 'no'} pooled vector"
            )

    def _pipe_conditioning(
        self, cond: Conditioning, negative: Conditioning | None
    ) -> dict[str, Tensor]:
        kwargs = {"prompt_embeds": cond.clouds[0], "pooled_prompt_embeds": cond.pooled}
        if negative is not None:
            kwargs["negative_prompt_embeds"] = negative.clouds[0]
            kwargs["negative_pooled_prompt_embeds"] = negative.pooled
        return kwargs

    def time_ids(self, height: int, width: int, batch: int) -> Tensor:
        """SDXL's micro-conditioning as the pipeline builds it by default: original size,
        crop top-left (0, 0), target size -> (batch, 6)."""
        ids = torch.tensor(
            [[height, width, 0, 0, height, width]], dtype=self.dtype, device=self.device
        )
        return ids.expand(batch, -1)

    def _unet_kwargs(
        self, cond: Conditioning, height: int, width: int, guidance: float
    ) -> dict[str, Any]:
        kwargs = super()._unet_kwargs(cond, height, width, guidance)
        kwargs["added_cond_kwargs"] = {
            "text_embeds": cond.pooled,
            "time_ids": self.time_ids(height, width, len(cond)),
        }
        return kwargs
