"""Tiny, randomly initialised SD3 and Flux pipelines for offline tests and demos.

Both are assembled from the real diffusers/transformers classes (the way diffusers' own pipeline
tests build ``get_dummy_components()``), with every width shrunk so a 64x64 image renders in well
under a second on a CPU, and saved with ``save_pretrained(path, safe_serialization=True)`` so they
load through exactly the ``DiffusionPipeline.from_pretrained(path)`` code path a hub id takes.
Nothing is downloaded: the CLIP tokenizers (shared with the SD/SDXL builders) and the T5 tokenizer
come from :mod:`whichway.models.tiny_tokenizers`.

Shapes kept faithful to the real models where it matters to whichway:

* VAE with 16 latent channels and a downsampling factor of 8 (four blocks), with the real
  models' ``scaling_factor`` / ``shift_factor``;
* SD3: two CLIP encoders with projection (hidden 32 each, so the CLIP tokens are 64 wide) and a
  T5 encoder of width 96, so the CLIP token rows are zero-padded to the T5 width exactly as the
  pipeline pads 2048-wide CLIP rows to 4096; a 1-layer MMDiT with patch size 2;
* Flux: one CLIP encoder (pooled vector only) and a T5 encoder of width 32, a Flux transformer
  with one double-stream and one single-stream block, 3-axis RoPE, and (by default) a distilled
  guidance embedding as in FLUX.1-dev.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from whichway.models.tiny_tokenizers import (  # tiny_t5_tokenizer: public here before
    tiny_clip_tokenizer,
    tiny_t5_tokenizer,
)

CLIP_WINDOW = 77
"""Token window of the tiny CLIP tokenizers (as the real CLIP encoders)."""


def _tiny_vae(seed: int, *, scaling_factor: float, shift_factor: float) -> Any:
    """AutoencoderKL with 16 latent channels and a x8 downsampling (4 blocks of 4-8 channels)."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(4, 8, 8, 8),
        layers_per_block=1,
        latent_channels=16,
        norm_num_groups=4,
        sample_size=64,
        scaling_factor=scaling_factor,
        shift_factor=shift_factor,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )


def _clip_config(tokenizer: Any) -> Any:
    """CLIP text encoder config of hidden size 32 (projection 32) matching ``tokenizer``'s ids."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=3,
        num_attention_heads=4,
        projection_dim=32,
        max_position_embeddings=CLIP_WINDOW,
        layer_norm_eps=1e-5,
        hidden_act="gelu",
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _t5_encoder(seed: int, vocab_size: int, d_model: int) -> Any:
    import torch
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
        is_encoder_decoder=False,
        use_cache=False,
        pad_token_id=0,
        eos_token_id=1,
    )
    return T5EncoderModel(config)


def _save(pipe: Any, path: str | Path) -> Path:
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(out, safe_serialization=True)
    return out


def build_tiny_sd3(path: str | Path, seed: int = 0) -> Path:
    """Save a tiny random ``StableDiffusion3Pipeline`` under ``path`` and return the path.

    Components: ``SD3Transformer2DModel`` (1 joint block, patch 2, 16 in/out channels,
    joint_attention_dim 96, pooled_projection_dim 64, default 64x64 images), two
    ``CLIPTextModelWithProjection`` (hidden 32, projection 32), ``T5EncoderModel`` (d_model 96),
    the tiny tokenizers, a 16-channel x8 VAE with SD3's scaling/shift factors and a
    ``FlowMatchEulerDiscreteScheduler`` with SD3's ``shift=3.0``. Every module is initialised
    under ``torch.manual_seed(seed + k)``, so the same seed gives the same weights.
    """
    import torch
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextModelWithProjection

    clip_tok = tiny_clip_tokenizer()  # CLIP-L pads with <|endoftext|>
    clip_tok_2 = tiny_clip_tokenizer(pad_token="!")  # CLIP-G pads with "!"
    t5_tok = tiny_t5_tokenizer()

    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=96,
        caption_projection_dim=32,
        pooled_projection_dim=64,
        pos_embed_max_size=16,
    )
    torch.manual_seed(seed + 1)
    text_encoder = CLIPTextModelWithProjection(_clip_config(clip_tok))
    torch.manual_seed(seed + 2)
    text_encoder_2 = CLIPTextModelWithProjection(_clip_config(clip_tok_2))
    text_encoder_3 = _t5_encoder(seed + 3, len(t5_tok), d_model=96)
    vae = _tiny_vae(seed + 4, scaling_factor=1.5305, shift_factor=0.0609)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder.eval(),
        tokenizer=clip_tok,
        text_encoder_2=text_encoder_2.eval(),
        tokenizer_2=clip_tok_2,
        text_encoder_3=text_encoder_3.eval(),
        tokenizer_3=t5_tok,
    )
    return _save(pipe, path)


def build_tiny_flux(path: str | Path, seed: int = 0, *, guidance_embeds: bool = True) -> Path:
    """Save a tiny random ``FluxPipeline`` under ``path`` and return the path.

    Components: ``FluxTransformer2DModel`` (1 double-stream + 1 single-stream block, 2 heads of
    16 = 2 + 6 + 8 RoPE axes, in_channels 64 = 16 latent channels x 2x2 patches,
    joint_attention_dim 32, pooled_projection_dim 32, ``guidance_embeds`` as in FLUX.1-dev
    (False gives a schnell-like model without distilled guidance)), ``CLIPTextModel`` (hidden 32;
    its pooled output is the pooled vector), ``T5EncoderModel`` (d_model 32), the tiny
    tokenizers, a 16-channel x8 VAE with Flux's scaling/shift factors and a
    ``FlowMatchEulerDiscreteScheduler`` with Flux's resolution-dependent shift.
    """
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    clip_tok = tiny_clip_tokenizer()
    t5_tok = tiny_t5_tokenizer()

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=guidance_embeds,
        axes_dims_rope=(2, 6, 8),
    )
    torch.manual_seed(seed + 1)
    text_encoder = CLIPTextModel(_clip_config(clip_tok))
    text_encoder_2 = _t5_encoder(seed + 2, len(t5_tok), d_model=32)
    vae = _tiny_vae(seed + 3, scaling_factor=0.3611, shift_factor=0.1159)
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    pipe = FluxPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder.eval(),
        tokenizer=clip_tok,
        text_encoder_2=text_encoder_2.eval(),
        tokenizer_2=t5_tok,
        transformer=transformer,
    )
    return _save(pipe, path)
