"""Tiny randomly initialised pipelines from the real diffusers/transformers classes.

No machine here can download weights, so tests and offline demos build pipelines the way
diffusers' own pipeline tests do (``get_dummy_components`` under ``torch.manual_seed``): a UNet
with ``block_out_channels=(32, 64)``, a tiny AutoencoderKL, CLIP text encoders with hidden size
32 and a CLIP BPE tokenizer over a small vocabulary (:mod:`whichway.models.tiny_tokenizers`). They are saved with
``save_pretrained(safe_serialization=True)`` and loaded back through the same
``from_pretrained`` path a user's hub id takes, so the code under test is the code users run.

:func:`full_size_pipeline` builds, in memory, a pipeline whose UNet has the real SD 1.5
architecture (random weights, ~860M parameters): the real denoiser cost, for benchmarks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from whichway.models.tiny_tokenizers import (  # public here since the tiny models began
    TINY_WORDS,
    tiny_clip_tokenizer,
    write_tiny_clip_vocab,
)

__all__ = [
    "SD15_UNET_CONFIG",
    "TINY_FAMILIES",
    "TINY_WORDS",
    "build_tiny_pipeline",
    "full_size_pipeline",
    "tiny_clip_tokenizer",
    "tiny_sd_pipeline",
    "tiny_sdxl_pipeline",
    "write_tiny_clip_vocab",
]

TINY_FAMILIES = ("sd", "sdxl", "sd3", "flux")


def _clip_config(tokenizer: Any, **overrides: Any) -> Any:
    from transformers import CLIPTextConfig

    settings: dict[str, Any] = dict(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=37,
        layer_norm_eps=1e-5,
        num_attention_heads=4,
        num_hidden_layers=5,
        max_position_embeddings=77,
    )
    settings.update(overrides)
    return CLIPTextConfig(**settings)


def _tiny_vae(**overrides: Any) -> Any:
    from diffusers import AutoencoderKL

    settings: dict[str, Any] = dict(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        sample_size=64,
    )
    settings.update(overrides)
    return AutoencoderKL(**settings)


def _sd15_scheduler() -> Any:
    """SD 1.5's sampler as its model repository configures it (PNDM, scaled-linear betas)."""
    from diffusers import PNDMScheduler

    return PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def tiny_sd_pipeline(*, seed: int = 0) -> Any:
    """An in-memory tiny ``StableDiffusionPipeline`` (PNDM scheduler, like SD 1.5)."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=32,
    )
    scheduler = _sd15_scheduler()
    torch.manual_seed(seed)
    vae = _tiny_vae()
    torch.manual_seed(seed)
    tokenizer = tiny_clip_tokenizer()
    text_encoder = CLIPTextModel(_clip_config(tokenizer))
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )


def tiny_sdxl_pipeline(*, seed: int = 0) -> Any:
    """An in-memory tiny ``StableDiffusionXLPipeline`` (Euler scheduler, like SDXL base).

    Two CLIP encoders of hidden size 32 (the second with a 32-d projection for the pooled
    vector), so tokens are 64-d; ``add_time_ids`` are 6 numbers embedded in 8 dims each.
    """
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80,  # 6 * 8 time ids + 32 pooled
        cross_attention_dim=64,
        norm_num_groups=32,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    )
    torch.manual_seed(seed)
    vae = _tiny_vae(sample_size=128)
    torch.manual_seed(seed)
    tokenizer = tiny_clip_tokenizer()
    text_encoder = CLIPTextModel(_clip_config(tokenizer, hidden_act="gelu", projection_dim=32))
    tokenizer_2 = tiny_clip_tokenizer(pad_token="!")
    text_encoder_2 = CLIPTextModelWithProjection(
        _clip_config(tokenizer_2, hidden_act="gelu", projection_dim=32)
    )
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=scheduler,
        image_encoder=None,
        feature_extractor=None,
        force_zeros_for_empty_prompt=True,
    )


def build_tiny_pipeline(family: str, path: str | Path, *, seed: int = 0) -> Path:
    """Build a tiny random pipeline of ``family`` and save it to ``path``; returns ``path``.

    family : "sd" | "sdxl" | "sd3" | "flux" (the last two from :mod:`whichway.models.tiny_mmdit`)
    The result loads with ``whichway.models.load_adapter(path)`` like any hub id.
    """
    if family not in TINY_FAMILIES:
        raise ValueError(
            f"unknown family {family!r}; valid choices are: {', '.join(TINY_FAMILIES)}"
        )
    path = Path(path)
    if family in ("sd3", "flux"):
        from whichway.models import tiny_mmdit

        builder = getattr(tiny_mmdit, f"build_tiny_{family}")
        return Path(builder(path, seed=seed))
    pipe = tiny_sd_pipeline(seed=seed) if family == "sd" else tiny_sdxl_pipeline(seed=seed)
    path.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(path, safe_serialization=True)
    return path


# --- full-size architecture for timing ----------------------------------------------------------

SD15_UNET_CONFIG: dict[str, Any] = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=(
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768,
    attention_head_dim=8,
    norm_num_groups=32,
)
"""The UNet configuration of Stable Diffusion 1.5 (``unet/config.json``), ~860M parameters."""


def full_size_pipeline(
    family: str = "sd",
    *,
    seed: int = 0,
    device: str | torch.device | None = "cpu",
    dtype: str | torch.dtype | None = None,
    full_vae: bool = False,
) -> Any:
    """An in-memory ``StableDiffusionPipeline`` whose UNet is SD 1.5's architecture, random weights.

    For benchmarks: the UNet has the real compute cost. The text encoder is a one-layer CLIP with
    the real width (768) and the tiny vocabulary; the VAE has SD's 8x downsampling and 4 latent
    channels but narrow blocks (32/64/64/64) unless ``full_vae=True`` (SD's 128/256/512/512), so
    that timing is dominated by the UNet as in the real model at low step counts. Scheduler: PNDM
    as in SD 1.5. Nothing is saved; wrap it with ``whichway.models.adapter_for(pipe)``.

    device : "cpu" (default), "cuda", ... (None: cuda when available)
    dtype : "float32" | "float16" | "bfloat16" or a torch dtype (None: float32 on CPU, float16
        on GPU)
    """
    if family != "sd":
        raise ValueError(
            f"full_size_pipeline supports family 'sd' (SD 1.5 architecture); got {family!r}"
        )
    from diffusers import (
        AutoencoderKL,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**SD15_UNET_CONFIG)
    channels = (128, 256, 512, 512) if full_vae else (32, 64, 64, 64)
    vae = AutoencoderKL(
        block_out_channels=channels,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=2 if full_vae else 1,
        sample_size=512,
        scaling_factor=0.18215,
    )
    tokenizer = tiny_clip_tokenizer()
    text_encoder = CLIPTextModel(
        _clip_config(
            tokenizer,
            hidden_size=768,
            intermediate_size=3072,
            num_attention_heads=12,
            num_hidden_layers=1,
        )
    )
    scheduler = _sd15_scheduler()
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )
    from whichway.models._common import resolve_device, resolve_dtype

    target = resolve_device(device)
    return pipe.to(device=target, dtype=resolve_dtype(dtype, target))
