"""Tiny randomly initialised pipelines from the real diffusers/transformers classes.

No machine here can download weights, so tests and offline demos build pipelines the way
diffusers' own pipeline tests do (``get_dummy_components`` under ``torch.manual_seed``): a UNet
with ``block_out_channels=(32, 64)``, a tiny AutoencoderKL, CLIP text encoders with hidden size
32 and a CLIP BPE tokenizer built from a small vocabulary written here. They are saved with
``save_pretrained(safe_serialization=True)`` and loaded back through the same
``from_pretrained`` path a user's hub id takes, so the code under test is the code users run.

:func:`full_size_pipeline` builds, in memory, a pipeline whose UNet has the real SD 1.5
architecture (random weights, ~860M parameters): the real denoiser cost, for benchmarks.
"""

from __future__ import annotations

import itertools
import json
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

TINY_FAMILIES = ("sd", "sdxl", "sd3", "flux")

#: words of the tiny vocabulary: whole-word tokens for the prompts tests and demos use; any
#: other word still tokenizes, letter by letter
TINY_WORDS = (
    "a an the of on in with and at by to from for is are under over near photo painting drawing "
    "picture sketch portrait close up view oil watercolor style cat dog horse bird fish car tree "
    "house city street beach forest mountain river sea lake sky moon sun star astronaut man woman "
    "child person people riding sitting running standing flying red blue green yellow black white "
    "small big old young beautiful dark bright night day morning snow rain field flower flowers "
    "garden table chair cup apple orange fruit bowl boat ship train plane bicycle road bridge "
    "castle robot dragon lion tiger bear elephant giraffe zebra"
).split()

_SPECIAL = ("<|startoftext|>", "<|endoftext|>")
_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789.,;:!?'\"-()&/"


def _bpe(symbols: list[str], merges: list[tuple[str, str]]) -> list[str]:
    """CLIP's byte-pair encoding of one word: repeatedly merge the adjacent pair of best rank."""
    ranks = {pair: rank for rank, pair in enumerate(merges)}
    symbols = list(symbols)
    while len(symbols) > 1:
        pairs = [
            (ranks.get(pair, len(ranks)), i) for i, pair in enumerate(itertools.pairwise(symbols))
        ]
        rank, _ = min(pairs)
        if rank == len(ranks):
            break
        best = merges[rank]
        merged: list[str] = []
        i = 0
        while i < len(symbols):
            if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                merged.append(symbols[i] + symbols[i + 1])
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    return symbols


def write_tiny_clip_vocab(directory: str | Path, words: Iterable[str] = TINY_WORDS) -> Path:
    """Write ``vocab.json`` and ``merges.txt`` of a tiny CLIP BPE vocabulary into ``directory``.

    Tokens: the two special tokens, every character of ``_CHARS`` alone and with the
    end-of-word mark ``</w>``, and for each word the merges that make BPE read it as one token
    (every merge result is a token, so any text tokenizes, unknown words letter by letter).
    Returns the directory.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab: dict[str, int] = {}

    def add(token: str) -> None:
        vocab.setdefault(token, len(vocab))

    for token in _SPECIAL:
        add(token)
    for char in _CHARS:
        add(char)
        add(char + "</w>")
    merges: list[tuple[str, str]] = []
    for word in words:
        word = word.lower()
        if not word or any(c not in _CHARS for c in word):
            raise ValueError(f"tiny vocabulary words must use only {_CHARS!r}; got {word!r}")
        # append merges until BPE (with every merge so far) reads the word as one token; a new
        # merge has the lowest priority, so it never changes how earlier words are read
        pieces = _bpe([*word[:-1], word[-1] + "</w>"], merges)
        while len(pieces) > 1:
            merges.append((pieces[0], pieces[1]))
            add(pieces[0] + pieces[1])
            pieces = _bpe(pieces, merges)
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (directory / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n"
    )
    return directory


def tiny_clip_tokenizer(pad_token: str = "<|endoftext|>", model_max_length: int = 77) -> Any:
    """A ``CLIPTokenizer`` over the tiny vocabulary (SD 1.x pads with ``<|endoftext|>``)."""
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        write_tiny_clip_vocab(tmp)
        return CLIPTokenizer.from_pretrained(
            tmp, pad_token=pad_token, model_max_length=model_max_length
        )


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
        import importlib

        module = importlib.import_module("whichway.models.tiny_mmdit")
        builder = getattr(module, f"build_tiny_{family}")
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
