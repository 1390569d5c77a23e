"""Model adapters over diffusers pipelines: SD 1.x/2.x, SDXL, SD3 and Flux.

``load_adapter(model)`` loads a pipeline by hub id or local directory and wraps it in its
family's :class:`Adapter` (the contract in :mod:`whichway.models.base`); ``adapter_for(pipe)``
wraps a pipeline already built in memory. ``check_invariance(adapter)`` measures whether the
denoiser sees the order of the text tokens. ``whichway.models.tiny.build_tiny_pipeline`` saves
tiny random pipelines for offline tests and demos. ``RuntimeOptions`` / ``apply_runtime`` (or
``load_adapter(..., runtime=...)``) add offload, a swapped VAE, tiling, LoRAs, a sampler,
compilation and an attention backend.

Names are imported lazily so that ``import whichway.models`` does not import diffusers.
"""

from __future__ import annotations

from whichway._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "Adapter": "whichway.models.base",
    "Conditioning": "whichway.models.base",
    "StepCallback": "whichway.models.base",
    "load_adapter": "whichway.models.loading",
    "adapter_for": "whichway.models.loading",
    "adapter_class": "whichway.models.loading",
    "family_of": "whichway.models.loading",
    "ModelLoadError": "whichway.models.loading",
    "DEFAULT_MODEL": "whichway.models.loading",
    "FAST_MODEL": "whichway.models.loading",
    "FAMILIES": "whichway.models.loading",
    "PIPELINE_FAMILIES": "whichway.models.loading",
    "PromptTruncatedWarning": "whichway.models._common",
    "check_invariance": "whichway.models.invariance",
    "InvarianceReport": "whichway.models.invariance",
    "build_tiny_pipeline": "whichway.models.tiny",
    "RuntimeOptions": "whichway.models.runtime",
    "LoraSpec": "whichway.models.runtime",
    "RuntimeReport": "whichway.models.runtime",
    "apply_runtime": "whichway.models.runtime",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
