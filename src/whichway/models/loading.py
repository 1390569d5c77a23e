"""Load a diffusers pipeline by hub id or local directory and wrap it in its family's adapter.

The family is read from the pipeline class named in the model's ``model_index.json`` before any
weight is loaded, so an unsupported model fails fast; weights are loaded with
``use_safetensors=True`` and no remote code.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

import torch

from whichway.models._common import dtype_keyword, resolve_device, resolve_dtype
from whichway.models.samplers import PIPELINE_FAMILIES  # torch-free, for checks before loading

if TYPE_CHECKING:  # pragma: no cover
    from diffusers import DiffusionPipeline

    from whichway.models.base import Adapter
    from whichway.models.runtime import RuntimeOptions

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
"""The paper's model (Stable Diffusion 1.5); what ``whichway morph`` uses by default."""

FAST_MODEL = "stabilityai/sd-turbo"
"""A fast choice for CPU users: SD 2.1 distilled, 512x512 in 1-4 steps with guidance 0."""

FAMILIES: dict[str, str] = {
    "sd": "whichway.models.sd:SDAdapter",
    "sdxl": "whichway.models.sdxl:SDXLAdapter",
    "sd3": "whichway.models.sd3:SD3Adapter",
    "flux": "whichway.models.flux:FluxAdapter",
}
"""family -> "module:Class" of its adapter (imported lazily)."""


class ModelLoadError(ValueError):
    """A model could not be loaded (unknown id or path, offline without a cached copy, missing
    or non-safetensors files). The message says why and what to do."""


def family_of(pipeline_class: str) -> str:
    """The family serving a diffusers pipeline class name; ValueError naming the supported ones."""
    family = PIPELINE_FAMILIES.get(pipeline_class)
    if family is None:
        supported = ", ".join(f"{fam} ({cls})" for cls, fam in PIPELINE_FAMILIES.items())
        raise ValueError(
            f"unsupported pipeline {pipeline_class!r}; whichway supports the families: {supported}"
        )
    return family


def adapter_class(family: str) -> type[Adapter]:
    """Import the adapter class of ``family`` ("sd" | "sdxl" | "sd3" | "flux")."""
    if family not in FAMILIES:
        raise ValueError(
            f"unknown model family {family!r}; valid choices are: {', '.join(FAMILIES)}"
        )
    module_name, class_name = FAMILIES[family].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def _gist(exc: BaseException) -> str:
    """The first line of an exception, prefixed by its type, at most 300 characters."""
    text = str(exc).strip().splitlines()[0].rstrip(". ") if str(exc).strip() else ""
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _load_error(model: str, exc: BaseException) -> ModelLoadError:
    return ModelLoadError(
        f"could not load model {model!r}: {_gist(exc)}. Check that the hub id or local directory "
        "is right (a local directory must hold model_index.json and safetensors weights). "
        "For a hub "
        "id the files must be downloaded, or already in the Hugging Face cache when there is no "
        "network or HF_HUB_OFFLINE=1 is set: run `hf download "
        f"{model}` once where the network is available, or pass the local directory instead."
    )


def _pipeline_class_name(model: str, local_files_only: bool = False) -> str:
    """Read ``_class_name`` from the model's ``model_index.json`` (cheap; no weights)."""
    from diffusers import DiffusionPipeline

    try:
        config = DiffusionPipeline.load_config(model, local_files_only=local_files_only)
    except Exception as exc:  # hub / filesystem errors come in many types; all mean "cannot load"
        raise _load_error(model, exc) from exc
    name = config.get("_class_name") if isinstance(config, dict) else None
    if not name:
        raise ModelLoadError(
            f"could not load model {model!r}: its model_index.json names no pipeline class; "
            "is it a diffusers pipeline directory?"
        )
    return str(name)


def load_adapter(
    model: str = DEFAULT_MODEL,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    variant: str | None = None,
    runtime: RuntimeOptions | None = None,
) -> Adapter:
    """Load a pipeline and wrap it in its family's adapter.

    model : hub id or local directory of a diffusers pipeline (StableDiffusionPipeline,
        StableDiffusionXLPipeline, StableDiffusion3Pipeline or FluxPipeline)
    device : "cpu", "cuda", "cuda:N", ...; default cuda when available, else cpu
    dtype : "float32" | "float16" | "bfloat16" or a torch dtype; default float32 on CPU, the
        family's accelerator dtype (float16; bfloat16 for Flux) elsewhere
    variant : weight file variant, e.g. "fp16" (``diffusion_pytorch_model.fp16.safetensors``)
    runtime : offload, VAE, LoRA, sampler, compile, attention
        (:class:`~whichway.models.runtime.RuntimeOptions`), checked against the family and
        device before any weight is loaded and applied by
        :func:`~whichway.models.runtime.apply_runtime`

    Raises :class:`ModelLoadError` when the model cannot be loaded, ValueError for an
    unsupported pipeline or bad device/dtype.
    """
    if not isinstance(model, str) or not model.strip():
        raise ValueError("model must be a non-empty hub id or local directory path")
    resolved_device = resolve_device(device)
    from whichway.models.hub import check_hub

    hub = check_hub(model)  # seconds, instead of diffusers' retries when there is no network
    if hub.error:
        raise _load_error(model, ConnectionError(hub.error))
    family = family_of(_pipeline_class_name(model, hub.local_files_only))
    if runtime is not None:
        runtime.check(family=family, device=resolved_device)
    cls = adapter_class(family)
    resolved_dtype = resolve_dtype(
        dtype, resolved_device, gpu_default=getattr(cls, "gpu_dtype", torch.float16)
    )

    from diffusers import DiffusionPipeline

    logger.info("loading %s (%s) on %s in %s", model, family, resolved_device, resolved_dtype)
    try:
        pipe = DiffusionPipeline.from_pretrained(
            model,
            **{dtype_keyword(): resolved_dtype},
            variant=variant,
            use_safetensors=True,
            trust_remote_code=False,
            local_files_only=hub.local_files_only,
        )
    except Exception as exc:  # missing files, wrong variant, corrupted weights, network
        raise _load_error(model, exc) from exc
    if runtime is None:
        return adapter_for(pipe.to(resolved_device), model_id=model)
    from whichway.models.runtime import apply_runtime

    adapter = adapter_for(pipe, model_id=model)
    apply_runtime(adapter, runtime, device=resolved_device)  # places (or offloads) the pipeline
    return adapter


def adapter_for(pipe: DiffusionPipeline, model_id: str = "") -> Adapter:
    """Wrap an already-built pipeline (e.g. an in-memory full-size random UNet for benchmarks).

    The pipeline's own tqdm bar is disabled: adapters report progress through ``on_step``.
    """
    family = family_of(type(pipe).__name__)
    pipe.set_progress_bar_config(disable=True)
    return adapter_class(family)(pipe, model_id=model_id)


def describe_load_error(exc: BaseException) -> dict[str, Any]:
    """A small dict for logs and reports: the error type and gist."""
    return {"error": type(exc).__name__, "message": _gist(exc)}
