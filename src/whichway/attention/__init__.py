"""Interpolation inside the denoiser's attention: AID / PAID (He et al. 2024).

:mod:`whichway.attention.methods` names the methods and their settings (torch-free);
:mod:`whichway.attention.aid` holds the attention math and the diffusers processors;
:mod:`whichway.attention.batch` renders a batch of waypoints with the endpoint rows once;
:mod:`whichway.attention.prior` is AID's Beta prior for choosing the frames' t;
:mod:`whichway.attention.diffmorpher` is DiffMorpher (per-image LoRAs, up-block K/V mix, AdaIN).
Names are imported lazily, so importing the package does not import torch.
"""

from __future__ import annotations

from whichway._lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "AID_LAYERS": "whichway.attention.methods",
    "AID_MODES": "whichway.attention.methods",
    "ATTENTION_FAMILIES": "whichway.attention.methods",
    "METHODS": "whichway.attention.methods",
    "AIDSettings": "whichway.attention.methods",
    "check_warmup_ratio": "whichway.attention.methods",
    "settings_for": "whichway.attention.methods",
    "check_method": "whichway.attention.methods",
    "check_family": "whichway.attention.methods",
    "ATTENTION_KEYS": "whichway.attention.methods",
    "with_guide": "whichway.attention.batch",
    "BetaPrior": "whichway.attention.prior",
    "beta_times": "whichway.attention.prior",
    "BetaSearch": "whichway.attention.prior",
    "search_beta": "whichway.attention.prior",
    "explore_beta": "whichway.attention.prior",
    "fit_beta": "whichway.attention.prior",
    "min_spread_path": "whichway.attention.prior",
    "split_time": "whichway.attention.prior",
    "AIDAttnProcessor": "whichway.attention.aid",
    "AIDControl": "whichway.attention.aid",
    "aid_attention": "whichway.attention.aid",
    "installed": "whichway.attention.aid",
    "AttentionPath": "whichway.attention.batch",
    "render_aid_batch": "whichway.attention.batch",
    "DIFFMORPHER_FAMILIES": "whichway.attention.methods",
    "IMAGE_METHODS": "whichway.attention.methods",
    "DiffMorpherSettings": "whichway.attention.methods",
    "check_diffmorpher": "whichway.attention.methods",
    "check_image_method": "whichway.attention.methods",
    "adain": "whichway.attention.diffmorpher",
    "adain_slerp": "whichway.attention.diffmorpher",
    "fit_lora": "whichway.attention.diffmorpher",
    "lerp_lora": "whichway.attention.diffmorpher",
    "InterpolatedLoRA": "whichway.attention.diffmorpher",
    "KVMixProcessor": "whichway.attention.diffmorpher",
    "LoraFit": "whichway.attention.diffmorpher",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
