"""Samplers: the names ``--sampler`` offers per model family and the diffusers scheduler each
name builds from a loaded scheduler's config, so ``--sampler euler`` on SD 1.5 is the Euler
sampler of SD 1.5's noise schedule (betas, timestep spacing, prediction type, flow shift).

The module's top level imports only the standard library: the CLI checks a sampler against a
model folder with it before torch or diffusers are imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from whichway.models.base import Adapter

DIFFUSION_SAMPLERS: tuple[str, ...] = (
    "ddim",
    "euler",
    "euler-a",
    "dpm++2m",
    "dpm++2m-karras",
    "unipc",
    "heun",
    "lms",
    "pndm",
    "deis",
)
"""Samplers of the diffusion (ε / v-prediction) families, SD 1.x/2.x and SDXL."""

SAMPLERS: dict[str, tuple[str, ...]] = {
    "sd": DIFFUSION_SAMPLERS,
    "sdxl": DIFFUSION_SAMPLERS,
    # FlowMatchHeun takes no custom sigmas, which FluxPipeline always passes: SD3 only
    "sd3": ("flow-euler", "flow-heun", "flow-unipc", "flow-dpm++2m"),
    "flux": ("flow-euler", "flow-unipc", "flow-dpm++2m"),
}
"""family -> the samplers ``--sampler`` offers for it (each tested against the plain pipeline)."""

ALL_SAMPLERS: tuple[str, ...] = tuple(
    dict.fromkeys(s for names in SAMPLERS.values() for s in names)
)


def valid_samplers_text(family: str | None = None) -> str:
    """'valid choices are: ...' for one family, or per family for all."""
    if family is not None:
        return f"valid choices for a {family} model are: {', '.join(SAMPLERS[family])}"
    return "valid choices are: " + "; ".join(
        f"{fam}: {', '.join(names)}" for fam, names in SAMPLERS.items()
    )


PIPELINE_FAMILIES: dict[str, str] = {
    "StableDiffusionPipeline": "sd",
    "StableDiffusionXLPipeline": "sdxl",
    "StableDiffusion3Pipeline": "sd3",
    "FluxPipeline": "flux",
}
"""diffusers pipeline class name -> family (here, not in ``loading``, so that checking a sampler
against a model folder needs no torch)."""


def family_of_pipeline_class(class_name: str | None) -> str | None:
    """The family of a diffusers pipeline class name (None when unsupported or unknown)."""
    return PIPELINE_FAMILIES.get(class_name or "")


def local_family(model: str | None) -> str | None:
    """The family of a local diffusers folder from its ``model_index.json`` (stdlib only, so it
    runs before torch is imported); None for a hub id, no model or an unknown pipeline."""
    import json
    from pathlib import Path

    index = Path(str(model)).expanduser() / "model_index.json" if model else None
    if index is None or not index.is_file():
        return None
    try:
        class_name = json.loads(index.read_text()).get("_class_name")
    except (OSError, ValueError):
        return None
    return family_of_pipeline_class(class_name if isinstance(class_name, str) else None)


def check_sampler(name: str, family: str) -> str:
    """``name`` if it is a sampler of ``family``, else ValueError listing the family's samplers."""
    if family not in SAMPLERS:
        raise ValueError(
            f"unknown model family {family!r}; valid choices are: {', '.join(SAMPLERS)}"
        )
    if name not in SAMPLERS[family]:
        raise ValueError(
            f"sampler {name!r} does not apply to a {family} model; {valid_samplers_text(family)}"
        )
    return name


def _from_config(cls: Any, config: Any, **overrides: Any) -> Any:
    """``cls.from_config(config, **overrides)`` passing only the overrides ``cls`` accepts."""
    import inspect

    accepted = inspect.signature(cls.__init__).parameters
    return cls.from_config(config, **{k: v for k, v in overrides.items() if k in accepted})


# Every diffusion sampler gets the plain (non-Karras) sigmas unless its name says otherwise, so a
# name means the same sampler whatever scheduler the model shipped with.
_PLAIN_SIGMAS = {
    "use_karras_sigmas": False,
    "use_exponential_sigmas": False,
    "use_beta_sigmas": False,
}


def build_scheduler(name: str, config: Any) -> Any:
    """The diffusers scheduler ``name`` built from a loaded scheduler's ``config``.

    Diffusion samplers keep the config's noise schedule (betas, timestep spacing and offset,
    prediction type); flow samplers keep its shift (and Flux's resolution-dependent shift):

    ========================  =================================================================
    ddim                      DDIMScheduler, no x̂₀ clipping (the sampler DDIM inversion inverts)
    euler / euler-a           EulerDiscreteScheduler / EulerAncestralDiscreteScheduler
    dpm++2m[-karras]          DPMSolverMultistepScheduler, dpmsolver++, order 2 [Karras sigmas]
    unipc, heun, lms, deis    UniPCMultistep, HeunDiscrete, LMSDiscrete, DEISMultistep
    pndm                      PNDMScheduler with PLMS steps only (skip_prk_steps, as SD ships it)
    flow-euler / flow-heun    FlowMatchEulerDiscreteScheduler / FlowMatchHeunDiscreteScheduler
    flow-unipc, flow-dpm++2m  UniPC / DPM-Solver++ 2M on flow sigmas (flow_prediction, the shift)
    ========================  =================================================================
    """
    import diffusers

    from whichway.models._common import ddim_scheduler

    if name not in ALL_SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; {valid_samplers_text()}")
    if name.startswith("flow-"):
        flow = {
            "use_flow_sigmas": True,
            "prediction_type": "flow_prediction",
            "flow_shift": float(config.get("shift", 1.0)),
        }
        if name == "flow-euler":
            return _from_config(
                diffusers.FlowMatchEulerDiscreteScheduler, config, stochastic_sampling=False
            )
        if name == "flow-heun":
            return _from_config(diffusers.FlowMatchHeunDiscreteScheduler, config)
        if name == "flow-unipc":
            return _from_config(diffusers.UniPCMultistepScheduler, config, **flow)
        return _from_config(
            diffusers.DPMSolverMultistepScheduler,
            config,
            **flow,
            algorithm_type="dpmsolver++",
            solver_order=2,
        )
    if config.get("prediction_type") == "flow_prediction" or (
        "shift" in config and "beta_start" not in config
    ):
        raise ValueError(
            f"sampler {name!r} is a diffusion sampler but this model samples by flow matching"
        )
    if name == "ddim":
        return ddim_scheduler(config)
    if name == "pndm":
        return _from_config(
            diffusers.PNDMScheduler, config, skip_prk_steps=bool(config.get("skip_prk_steps", True))
        )
    classes = {
        "euler": diffusers.EulerDiscreteScheduler,
        "euler-a": diffusers.EulerAncestralDiscreteScheduler,
        "dpm++2m": diffusers.DPMSolverMultistepScheduler,
        "dpm++2m-karras": diffusers.DPMSolverMultistepScheduler,
        "unipc": diffusers.UniPCMultistepScheduler,
        "heun": diffusers.HeunDiscreteScheduler,
        "lms": diffusers.LMSDiscreteScheduler,
        "deis": diffusers.DEISMultistepScheduler,
    }
    overrides: dict[str, Any] = dict(_PLAIN_SIGMAS)
    if name.startswith("dpm++2m"):
        overrides.update(
            algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=name.endswith("karras")
        )
    return _from_config(classes[name], config, **overrides)


def set_sampler(adapter: Adapter, name: str | None) -> str:
    """Render with sampler ``name`` (None: the scheduler the model was loaded with) from now on.

    The adapter's inversion is unaffected (it builds its integrator from the loaded scheduler);
    returns the scheduler class now in use."""
    loaded = adapter._loaded_scheduler
    if name is None:
        scheduler = loaded
    else:
        check_sampler(name, adapter.family)
        scheduler = build_scheduler(name, loaded.config)
    adapter._default_scheduler = scheduler
    adapter.pipe.scheduler = scheduler
    adapter.sampler = name
    return type(scheduler).__name__
