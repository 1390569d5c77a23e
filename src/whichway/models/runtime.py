"""Runtime options of a loaded model, applied in one place for every family.

What a user's machine needs beyond the pipeline as it loads: CPU offload of the components,
VAE tiling / slicing and a swapped-in VAE, LoRA adapters (on the denoiser *and* the text
encoders, so the token clouds that get coupled are the LoRA'd model's), the sampler, a compiled
denoiser and an attention backend. :class:`RuntimeOptions` says what to do (checked without a
model); :func:`apply_runtime` does it to a pipeline or an adapter, in the order diffusers needs
(weights first: VAE, LoRA; then sampler, VAE decoding, attention; then device placement or
offload; compilation last) and returns a :class:`RuntimeReport` for ``run.json``.

The samplers are :mod:`whichway.models.samplers`, the LoRA and VAE files
:mod:`whichway.models.weights`; their public names are importable from here too. Inversion keeps
its exact integrators (DDIM for the diffusion families, flow Euler for SD3/Flux), built from the
scheduler the model was loaded with.

The module's top level imports only the standard library: the CLI checks options with it
before torch or diffusers are imported.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from whichway.models.samplers import (
    ALL_SAMPLERS,
    DIFFUSION_SAMPLERS,
    PIPELINE_FAMILIES,
    SAMPLERS,
    build_scheduler,
    check_sampler,
    family_of_pipeline_class,
    set_sampler,
    valid_samplers_text,
)
from whichway.models.weights import (
    DEFAULT_LORA_FILE,
    LORA_SUFFIX,
    LoadedLora,
    LoraSpec,
    check_lora_source,
    check_vae_source,
    load_loras,
    load_vae,
    resolve_lora_file,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "ALL_SAMPLERS",
    "DEFAULT_LORA_FILE",
    "DIFFUSION_SAMPLERS",
    "LORA_SUFFIX",
    "OFFLOAD_MODES",
    "PIPELINE_FAMILIES",
    "SAMPLERS",
    "LoadedLora",
    "LoraSpec",
    "RuntimeOptions",
    "RuntimeReport",
    "apply_runtime",
    "attention_backends",
    "build_scheduler",
    "check_attention_backend",
    "check_lora_source",
    "check_sampler",
    "check_vae_source",
    "compile_seconds",
    "denoiser_name",
    "family_of_pipeline_class",
    "load_loras",
    "load_vae",
    "resolve_lora_file",
    "runtime_pixel_settings",
    "set_attention",
    "set_sampler",
    "valid_samplers_text",
]

logger = logging.getLogger(__name__)

OFFLOAD_MODES: tuple[str, ...] = ("none", "model", "sequential")
"""``none``: everything on the device; ``model``: one whole component at a time on the
accelerator (``enable_model_cpu_offload``); ``sequential``: one layer at a time
(``enable_sequential_cpu_offload``, the least memory, the slowest)."""


# --- options ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuntimeOptions:
    """How to run a loaded model (every field's default leaves the pipeline as it loads).

    offload : "none" | "model" | "sequential" (needs an accelerator)
    vae_tiling, vae_slicing : decode (and encode) the VAE in tiles / one image at a time
    vae : hub id or directory of an ``AutoencoderKL`` to use instead of the pipeline's
        (e.g. an fp16-safe SDXL VAE); a pipeline directory with a ``vae/`` folder also works
    loras : LoRA adapters with their scales, all active together
    sampler : a name of :data:`SAMPLERS` for the model's family; None = the pipeline's own
    compile : ``torch.compile`` the denoiser (UNet / transformer)
    compile_backend : the ``torch.compile`` backend ("inductor"; "eager" traces without
        generating code, for tests)
    attention : a diffusers attention backend (``set_attention_backend``), e.g. "native",
        "flash", "sage"; None = the model's default
    """

    offload: str = "none"
    vae_tiling: bool = False
    vae_slicing: bool = False
    vae: str | None = None
    loras: tuple[LoraSpec, ...] = ()
    sampler: str | None = None
    compile: bool = False
    compile_backend: str = "inductor"
    attention: str | None = None

    def __post_init__(self) -> None:
        if self.offload not in OFFLOAD_MODES:
            raise ValueError(
                f"unknown offload mode {self.offload!r}; valid choices are: {', '.join(OFFLOAD_MODES)}"
            )
        loras = tuple(LoraSpec.parse(x) if isinstance(x, str) else x for x in self.loras)
        if not all(isinstance(x, LoraSpec) for x in loras):
            raise ValueError("loras must be LoraSpec or 'PATH_OR_ID[:SCALE]' strings")
        object.__setattr__(self, "loras", loras)
        if self.sampler is not None and self.sampler not in ALL_SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; {valid_samplers_text()}")
        if self.vae is not None and (not isinstance(self.vae, str) or not self.vae.strip()):
            raise ValueError("--vae needs a hub id or a directory")
        if self.attention is not None and (
            not isinstance(self.attention, str) or not self.attention
        ):
            raise ValueError("--attention needs a backend name")

    @property
    def is_default(self) -> bool:
        """True when these options leave the pipeline exactly as it loads."""
        return self == RuntimeOptions(compile_backend=self.compile_backend)

    def check(
        self,
        *,
        family: str | None = None,
        device: str | torch.device | None = None,
        attention: bool = True,
    ) -> None:
        """Model-free checks (ValueError with what to do): the LoRA and VAE sources that are
        local paths, the sampler against ``family`` when known, offload against ``device`` when
        known (a CPU cannot offload) and, with ``attention``, the attention backend against the
        installed diffusers (which imports diffusers)."""
        for spec in self.loras:
            check_lora_source(spec.source)
        if self.vae is not None:
            check_vae_source(self.vae)
        if family is not None and self.sampler is not None:
            check_sampler(self.sampler, family)
        if self.offload != "none" and device is not None and _device_type(device) == "cpu":
            raise ValueError(
                f"--offload {self.offload} needs an accelerator (it moves components between CPU "
                "memory and the GPU) but the model runs on the CPU; use --offload none (the "
                "default) or run on a GPU (--device cuda)"
            )
        if attention and self.attention is not None:
            check_attention_backend(self.attention)

    def describe(self) -> dict[str, Any]:
        """The options as JSON-able settings."""
        return {
            "offload": self.offload,
            "vae_tiling": self.vae_tiling,
            "vae_slicing": self.vae_slicing,
            "vae": self.vae,
            "loras": [{"source": s.source, "scale": s.scale} for s in self.loras],
            "sampler": self.sampler,
            "compile": self.compile,
            "attention": self.attention,
        }


def _device_type(device: Any) -> str:
    return str(getattr(device, "type", device)).split(":")[0]


# --- attention and compilation -----------------------------------------------------------------


def attention_backends() -> tuple[str, ...]:
    """The attention backends the installed diffusers names (``AttentionBackendName``); empty
    when it has none."""
    try:
        from diffusers.models.attention_dispatch import AttentionBackendName
    except ImportError:
        return ()
    return tuple(b.value for b in AttentionBackendName)


def check_attention_backend(name: str) -> str:
    """``name`` if the installed diffusers offers it, else ValueError listing the ones it does."""
    valid = attention_backends()
    if not valid:
        import diffusers

        raise ValueError(
            f"the installed diffusers {diffusers.__version__} has no attention backends "
            "(set_attention_backend); upgrade diffusers or drop --attention"
        )
    if name not in valid:
        raise ValueError(
            f"unknown attention backend {name!r}; valid choices are: {', '.join(valid)}"
        )
    return name


def denoiser_name(pipe: Any) -> str:
    """``"unet"`` or ``"transformer"``: the pipeline's denoiser component."""
    for name in ("unet", "transformer"):
        if getattr(pipe, name, None) is not None:
            return name
    raise ValueError(f"{type(pipe).__name__} has no unet or transformer")


def set_attention(pipe: Any, backend: str) -> int:
    """Route the denoiser's attention through diffusers' ``backend``; returns the number of
    attention layers that took it. ValueError when the denoiser's attention does not go through
    diffusers' dispatcher (the UNets of SD 1.x/2.x/SDXL call PyTorch's SDPA directly)."""
    check_attention_backend(backend)
    name = denoiser_name(pipe)
    model = getattr(pipe, name)
    routed = sum(
        1
        for m in model.modules()
        if getattr(m, "processor", None) is not None and hasattr(m.processor, "_attention_backend")
    )
    if not routed:
        raise ValueError(
            f"--attention: this model's {type(model).__name__} does not route attention through "
            "diffusers' attention backends (the installed diffusers does so for the SD3 and Flux "
            "transformers); drop --attention"
        )
    try:
        model.set_attention_backend(backend)
    except (RuntimeError, ImportError) as exc:  # the backend's package is missing
        raise ValueError(f"--attention {backend}: {str(exc).strip().splitlines()[0]}") from exc
    return routed


def compile_seconds() -> float | None:
    """Seconds ``torch.compile`` has spent compiling in this process so far (None when the
    installed torch does not report it). The difference around a render is its compile time."""
    try:
        from torch._dynamo.utils import calculate_time_spent

        return float(calculate_time_spent().get("total_wall_time", 0.0))
    except Exception:
        return None


# --- applying -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuntimeReport:
    """What :func:`apply_runtime` did, for ``run.json``.

    options : the options applied
    loras : each LoRA as loaded (file, SHA-256, scale, components)
    scheduler : class name of the scheduler rendering now
    device : where the denoiser runs (the accelerator under offload)
    attention_layers : attention layers routed through ``options.attention`` (0 when unset)
    compiled : the compiled component ("unet" / "transformer"), or None
    """

    options: RuntimeOptions
    loras: tuple[LoadedLora, ...] = ()
    scheduler: str = ""
    device: str = ""
    attention_layers: int = 0
    compiled: str | None = None

    def describe(self) -> dict[str, Any]:
        """JSON-able record: the options, with each LoRA's file and SHA-256."""
        info = self.options.describe()
        info["loras"] = [
            {
                "source": x.source,
                "file": x.file,
                "sha256": x.sha256,
                "scale": x.scale,
                "adapter_name": x.adapter_name,
                "components": list(x.components),
            }
            for x in self.loras
        ]
        info["scheduler"] = self.scheduler
        info["execution_device"] = self.device
        if self.compiled:
            info["compiled"] = self.compiled
            info["compile_backend"] = self.options.compile_backend
        return info

    def pixel_settings(self) -> dict[str, Any]:
        """The settings that change a frame's pixels (for deciding whether a run can resume):
        everything but offload, compilation and where it runs; LoRAs by content (SHA-256)."""
        return {
            "vae": self.options.vae,
            "vae_tiling": self.options.vae_tiling,
            "vae_slicing": self.options.vae_slicing,
            "loras": [[x.sha256, x.scale] for x in self.loras],
            "sampler": self.options.sampler,
            "attention": self.options.attention,
        }


def runtime_pixel_settings(adapter: Any) -> dict[str, Any] | None:
    """:meth:`RuntimeReport.pixel_settings` of an adapter's runtime, or None if it has none."""
    report = getattr(adapter, "runtime", None)
    if report is None or report.options.is_default:
        return None
    return report.pixel_settings()


def apply_runtime(
    target: Any,
    options: RuntimeOptions,
    *,
    device: str | torch.device | None = None,
) -> RuntimeReport:
    """Apply ``options`` to an :class:`~whichway.models.base.Adapter` or a bare diffusers pipeline.

    Order: swap the VAE, load the LoRAs (weights before anything hooks or compiles the modules),
    set the sampler, VAE tiling / slicing and the attention backend, then place the pipeline on
    ``device`` (default: where it is) or set up CPU offload with ``device`` as the accelerator,
    and compile the denoiser last. On an adapter the sampler becomes what it renders with (its
    inversion keeps the loaded scheduler's DDIM / flow Euler integrator), its device becomes the
    execution device, cached prompt encodings are dropped (a LoRA changes them) and the report is
    kept as ``adapter.runtime``. Apply once, to a freshly loaded model: LoRAs are added, not
    replaced. Offload needs an accelerator: ValueError on a CPU, before anything changes.
    """
    import torch

    from whichway.models.base import Adapter

    if not isinstance(options, RuntimeOptions):
        raise ValueError(f"options must be RuntimeOptions, got {type(options).__name__}")
    adapter = target if isinstance(target, Adapter) else None
    pipe = target.pipe if adapter is not None else target
    family = adapter.family if adapter is not None else None
    if family is None:
        family = family_of_pipeline_class(type(pipe).__name__)
    if options.offload != "none" and device is None:
        device = _accelerator()
    resolved = torch.device(device) if device is not None else None
    options.check(family=family, device=resolved)

    if options.vae is not None:
        pipe.vae = load_vae(options.vae, pipe)
    loras = load_loras(pipe, options.loras)
    if options.sampler is not None:
        if adapter is not None:
            set_sampler(adapter, options.sampler)
        else:
            pipe.scheduler = build_scheduler(options.sampler, pipe.scheduler.config)
    if options.vae_tiling:
        pipe.vae.enable_tiling()
    if options.vae_slicing:
        pipe.vae.enable_slicing()
    routed = set_attention(pipe, options.attention) if options.attention is not None else 0

    if options.offload == "model":
        pipe.enable_model_cpu_offload(device=resolved)
    elif options.offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=resolved)
    elif resolved is not None:
        pipe.to(resolved)
    compiled = None
    if options.compile:
        compiled = denoiser_name(pipe)
        getattr(pipe, compiled).compile(backend=options.compile_backend)

    execution = pipe._execution_device if options.offload != "none" else pipe.device
    report = RuntimeReport(
        options=options,
        loras=loras,
        scheduler=type(pipe.scheduler).__name__,
        device=str(execution),
        attention_layers=routed,
        compiled=compiled,
    )
    if adapter is not None:
        adapter.device = execution
        adapter.dtype = pipe.dtype
        if hasattr(adapter, "_negative_cache"):
            adapter._negative_cache.clear()
        adapter.runtime = report
    logger.info("runtime: %s", json.dumps(report.describe()))
    return report


def _accelerator() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"  # refused by RuntimeOptions.check with the clear message
