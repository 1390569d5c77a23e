"""DiffMorpher's per-image LoRAs in a run: fitted once per image + prompt + settings and cached
in the run directory (``loras/``), so a resumed or repeated run does not fit again."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

    from whichway.attention.methods import DiffMorpherSettings
    from whichway.models.base import Adapter

logger = logging.getLogger(__name__)


def lora_key(
    adapter: Adapter, path: str, prompt: str, settings: DiffMorpherSettings, size: tuple[int, int]
) -> str:
    """A 16-hex key of what a fitted LoRA depends on: model, image file (path, size, mtime),
    prompt, rank, steps, learning rate and the render size."""
    file = Path(path)
    stat = file.stat() if file.is_file() else None
    parts = [
        adapter.model_id,
        str(file.resolve()),
        stat and stat.st_size,
        stat and stat.st_mtime_ns,
        prompt,
        settings.lora_rank,
        settings.lora_steps,
        settings.lora_lr,
        list(size),
    ]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def lora_file(cache: Path, key: str) -> Path:
    """Where :func:`fitted_lora` keeps the LoRA of key ``key`` (:func:`lora_key`) in ``cache``."""
    return cache / f"lora-{key}.safetensors"


def fitted_lora(
    adapter: Adapter,
    path: str,
    prompt: str,
    settings: DiffMorpherSettings,
    *,
    height: int,
    width: int,
    cache: Path,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[dict[str, Tensor], str]:
    """The LoRA of one image (:func:`whichway.attention.diffmorpher.fit_lora` with the image
    resized to height x width, its prompt, ``settings``' rank/steps/learning rate, seed 0 as
    the official ``set_seed(0)``), loaded from ``cache`` when fitted before; returns (weights,
    key). Progress (with ETA) on the log; ``should_stop()`` polled every step."""
    import time

    import torch
    from safetensors.torch import load_file, save_file

    from whichway._files import write_atomic
    from whichway.attention.diffmorpher import fit_lora
    from whichway.media import load_image
    from whichway.render import stop_if_asked

    key = lora_key(adapter, path, prompt, settings, (height, width))
    cached = lora_file(cache, key)
    if cached.is_file():
        logger.info("using the LoRA of %s cached in %s", path, cached)
        return load_file(cached), key
    pipe = adapter.pipe
    image = load_image(path, size=(height, width))[None] * 2 - 1
    cond = adapter.encode([prompt])
    embeds = cond.clouds[0]
    added = None
    if adapter.family == "sdxl":  # SDXL's added conditions: pooled text and size/crop ids
        size = torch.tensor([[height, width, 0, 0, height, width]], dtype=torch.float32)
        added = {
            "text_embeds": cond.pooled.to(adapter.device, adapter.pipe.unet.dtype),
            "time_ids": size.to(adapter.device, adapter.pipe.unet.dtype),
        }
    started = time.perf_counter()

    def report(step: int, loss: float) -> None:
        stop_if_asked(should_stop)
        done = step + 1
        if done % max(1, settings.lora_steps // 10) == 0 or done == settings.lora_steps:
            eta = (time.perf_counter() - started) / done * (settings.lora_steps - done)
            logger.info(
                "fitting the LoRA of %s: step %d/%d, loss %.4f, ETA %.0fs",
                path,
                done,
                settings.lora_steps,
                loss,
                eta,
            )

    fit = fit_lora(
        pipe.unet,
        pipe.vae,
        pipe.scheduler,
        image.to(adapter.device),
        embeds,
        rank=settings.lora_rank,
        steps=settings.lora_steps,
        lr=settings.lora_lr,
        generator=torch.Generator().manual_seed(0),
        added_cond=added,
        on_step=report,
    )
    weights = {k: v.contiguous() for k, v in fit.weights.items()}
    write_atomic(cached, lambda tmp: save_file(weights, str(tmp)))
    return weights, key
