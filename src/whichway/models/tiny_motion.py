"""A tiny random AnimateDiff setup: a tiny SD 1.x pipeline and a tiny ``MotionAdapter`` whose
blocks match its UNet (``block_out_channels=(32, 64)``), as diffusers' AnimateDiff tests build them.

:func:`build_tiny_animatediff` saves, under one folder,

- ``base/``: the tiny SD 1.x pipeline (``whichway.models.tiny.tiny_sd_pipeline``);
- ``base-sdxl/``: the tiny SDXL pipeline (``tiny_sdxl_pipeline``: the same UNet blocks, so the
  same adapters fit it);
- ``motion/``: a random ``MotionAdapter`` (``MotionAdapter.from_pretrained`` loads it like a hub id);
- ``motion-identity/``: the same adapter with every motion module's ``proj_out`` weight and bias
  zeroed. Each motion module returns ``x + proj_out(temporal(x))``, so this adapter adds nothing:
  an AnimateDiff UNet built with it computes each frame as the base UNet does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

__all__ = ["build_tiny_animatediff", "tiny_motion_adapter", "zero_motion_output"]

#: folder names under :func:`build_tiny_animatediff`'s output
BASE_DIR, SDXL_BASE_DIR = "base", "base-sdxl"
MOTION_DIR, IDENTITY_DIR = "motion", "motion-identity"


def tiny_motion_adapter(*, seed: int = 0, identity: bool = False) -> Any:
    """An in-memory tiny ``MotionAdapter`` for :func:`whichway.models.tiny.tiny_sd_pipeline`'s
    UNet (two blocks of 32 and 64 channels, 2 motion layers per block, 32 positions).

    identity : zero every ``proj_out`` (:func:`zero_motion_output`): the adapter adds nothing.
    """
    from diffusers import MotionAdapter

    torch.manual_seed(seed)
    adapter = MotionAdapter(
        block_out_channels=(32, 64),
        motion_layers_per_block=2,
        motion_norm_num_groups=2,
        motion_num_attention_heads=4,
        motion_max_seq_length=32,
    )
    # diffusers initialises proj_out to zero only in some versions: make the random adapter move
    for name, param in adapter.named_parameters():
        if ".proj_out." in name:
            torch.nn.init.normal_(param, std=0.2)
    return zero_motion_output(adapter) if identity else adapter


def zero_motion_output(module: Any) -> Any:
    """Zero the weight and bias of every ``proj_out`` inside the motion modules of ``module`` (a
    ``MotionAdapter`` or a ``UNetMotionModel``); returns ``module``. Each motion module then
    adds ``proj_out(...) = 0`` to its input: the temporal layers become the identity."""
    zeroed = 0
    with torch.no_grad():
        for name, param in module.named_parameters():
            if "motion_modules" in name and ".proj_out." in name:
                param.zero_()
                zeroed += 1
    if zeroed == 0:
        raise ValueError("no motion module proj_out found: is this a MotionAdapter?")
    return module


def build_tiny_animatediff(path: str | Path, *, seed: int = 0) -> Path:
    """Save a tiny SD 1.x pipeline to ``path/base`` (a tiny SDXL one to ``path/base-sdxl``), a random MotionAdapter to ``path/motion`` and
    its identity twin (every ``proj_out`` zero) to ``path/motion-identity``; returns ``path``.

    ``whichway travel ... --model path/base --motion path/motion`` renders with them."""
    from whichway.models.tiny import tiny_sd_pipeline, tiny_sdxl_pipeline

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tiny_sd_pipeline(seed=seed).save_pretrained(path / BASE_DIR, safe_serialization=True)
    tiny_sdxl_pipeline(seed=seed).save_pretrained(path / SDXL_BASE_DIR, safe_serialization=True)
    tiny_motion_adapter(seed=seed).save_pretrained(path / MOTION_DIR, safe_serialization=True)
    tiny_motion_adapter(seed=seed, identity=True).save_pretrained(
        path / IDENTITY_DIR, safe_serialization=True
    )
    return path
