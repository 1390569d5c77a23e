"""Runtime options of a loaded model, applied in one place for every family.

What a user's machine needs beyond the pipeline as it loads: CPU offload of the components,
VAE tiling / slicing and a swapped-in VAE, LoRA adapters (on the denoiser *and* the text
encoders, so the token clouds that get coupled are the LoRA'd model's), the sampler, a compiled
denoiser and an attention backend. :class:`RuntimeOptions` says what to do (checked without a
model); :func:`apply_runtime` does it to a pipeline or an adapter, in the order diffusers needs
(weights first: VAE, LoRA; then sampler, VAE decoding, attention; then device placement or
offload; compilation last) and returns a :class:`RuntimeReport` for ``run.json``.

Samplers are built from the pipeline's own scheduler config (betas, timestep spacing,
prediction type, flow shift), so ``--sampler euler`` on SD 1.5 is the Euler sampler of SD 1.5's
noise schedule. Inversion keeps its exact integrators (DDIM for the diffusion families, flow
Euler for SD3/Flux), built from the scheduler the model was loaded with.

The module's top level imports only the standard library: the CLI checks options with it
before torch or diffusers are imported.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from whichway._files import sha256_file

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from whichway.models.base import Adapter

logger = logging.getLogger(__name__)

OFFLOAD_MODES: tuple[str, ...] = ("none", "model", "sequential")
"""``none``: everything on the device; ``model``: one whole component at a time on the
accelerator (``enable_model_cpu_offload``); ``sequential``: one layer at a time
(``enable_sequential_cpu_offload``, the least memory, the slowest)."""

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

LORA_SUFFIX = ".safetensors"
#: weight-file suffixes that are pickles (refused: loading them can run code)
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
#: file name diffusers' ``save_lora_weights`` writes and ``load_lora_weights`` looks for first
DEFAULT_LORA_FILE = "pytorch_lora_weights.safetensors"


# --- options ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoraSpec:
    """One ``--lora PATH_OR_ID[:SCALE]``.

    source : a ``.safetensors`` file, a directory holding one, a hub id ``owner/name`` (its
        ``pytorch_lora_weights.safetensors`` or only ``.safetensors`` file) or
        ``owner/name/path/in/repo.safetensors``
    scale : the adapter's weight (``set_adapters``), 1.0 = as trained
    """

    source: str
    scale: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source.strip():
            raise ValueError("a LoRA needs a file, directory or hub id, got an empty string")
        if (
            not isinstance(self.scale, (int, float))
            or isinstance(self.scale, bool)
            or not math.isfinite(self.scale)
        ):
            raise ValueError(f"LoRA scale must be a finite number, got {self.scale!r}")
        object.__setattr__(self, "scale", float(self.scale))

    @classmethod
    def parse(cls, text: str) -> LoraSpec:
        """``"style.safetensors:0.8"`` -> LoraSpec("style.safetensors", 0.8); without a numeric
        ``:SCALE`` suffix the whole text is the source and the scale is 1.0 (so ``C:\\x`` or a
        name with a colon stays whole)."""
        if not isinstance(text, str):
            raise ValueError(f"--lora expects PATH_OR_ID[:SCALE], got {text!r}")
        head, sep, tail = text.rpartition(":")
        if sep and head:
            try:
                return cls(head, float(tail))
            except ValueError as exc:
                if "finite" in str(exc):
                    raise ValueError(
                        f"--lora {text!r}: the scale must be a finite number"
                    ) from None
        return cls(text)

    def __str__(self) -> str:
        return f"{self.source}:{self.scale:g}"


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


# --- samplers -----------------------------------------------------------------------------------


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


# --- LoRA ---------------------------------------------------------------------------------------


def _looks_local(source: str) -> bool:
    return (
        os.path.isabs(source)
        or source.startswith(("./", "../", "~", ".\\", "..\\"))
        or "\\" in source
        or os.path.exists(os.path.expanduser(source))
    )


def check_lora_source(source: str) -> None:
    """Model-free check of a LoRA source: a local path must exist and be (or hold) a
    ``.safetensors`` file; a pickle file is refused; anything else must read as a hub id."""
    path = Path(source).expanduser()
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        raise ValueError(
            f"LoRA {source!r} is a {path.suffix} (pickle) file; whichway loads LoRAs from "
            ".safetensors files only (pickles can run code): convert it or use a safetensors release"
        )
    if path.is_file():
        if path.suffix.lower() != LORA_SUFFIX:
            raise ValueError(
                f"LoRA file {source!r} is not a .safetensors file; whichway loads safetensors only"
            )
        return
    if path.is_dir():
        _lora_file_in_dir(path)
        return
    if _looks_local(source):
        raise ValueError(
            f"LoRA {source!r} does not exist; give a .safetensors file, a directory or a hub id"
        )
    parts = source.split("/")
    if len(parts) < 2 or not all(parts[:2]):
        raise ValueError(
            f"LoRA {source!r} is neither an existing file or directory nor a hub id (owner/name "
            "or owner/name/file.safetensors)"
        )
    if len(parts) > 2 and not source.endswith(LORA_SUFFIX):
        raise ValueError(
            f"LoRA {source!r}: a file inside a hub repository must end in .safetensors "
            "(owner/name/path/file.safetensors)"
        )


def _lora_file_in_dir(path: Path) -> Path:
    files = sorted(path.glob(f"*{LORA_SUFFIX}"))
    for f in files:
        if f.name == DEFAULT_LORA_FILE:
            return f
    if len(files) == 1:
        return files[0]
    if not files:
        raise ValueError(f"LoRA directory {str(path)!r} holds no .safetensors file")
    names = ", ".join(f.name for f in files)
    raise ValueError(
        f"LoRA directory {str(path)!r} holds several .safetensors files ({names}); name one"
    )


def resolve_lora_file(source: str) -> Path:
    """The local ``.safetensors`` file of a LoRA source, downloading a hub file into the Hugging
    Face cache (or finding it there when offline) if needed."""
    check_lora_source(source)
    path = Path(source).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        return _lora_file_in_dir(path)
    from huggingface_hub import hf_hub_download

    parts = source.split("/")
    repo, filename = "/".join(parts[:2]), "/".join(parts[2:]) or None
    try:
        if filename is not None:
            return Path(hf_hub_download(repo, filename))
        try:
            return Path(hf_hub_download(repo, DEFAULT_LORA_FILE))
        except Exception as first:
            from huggingface_hub import list_repo_files

            try:
                files = [f for f in list_repo_files(repo) if f.endswith(LORA_SUFFIX)]
            except Exception:
                raise first from None
            if len(files) != 1:
                raise ValueError(
                    f"hub LoRA {repo!r} has {len(files)} .safetensors files"
                    f"{' (' + ', '.join(files) + ')' if files else ''}; give owner/name/FILE.safetensors"
                ) from None
            return Path(hf_hub_download(repo, files[0]))
    except ValueError:
        raise
    except Exception as exc:  # network, offline without a cached copy, missing repository
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(
            f"could not fetch LoRA {source!r} from the hub ({type(exc).__name__}: {first_line}); "
            "download it where the network is available, or pass the local .safetensors file"
        ) from exc


@dataclass(frozen=True)
class LoadedLora:
    """A LoRA as loaded: its source, the file read, the file's SHA-256, its scale, the adapter
    name given to diffusers and the components it went into (e.g. ("unet", "text_encoder"))."""

    source: str
    file: str
    sha256: str
    scale: float
    adapter_name: str
    components: tuple[str, ...]


def load_loras(pipe: Any, specs: tuple[LoraSpec, ...]) -> tuple[LoadedLora, ...]:
    """Load each LoRA with ``pipe.load_lora_weights`` (adapter names ``lora0``, ``lora1``, ...)
    and activate them together with their scales (``set_adapters``). The pipeline's LoRA loader
    puts the denoiser's layers into the UNet / transformer and the text-encoder layers the file
    has into the text encoders, so prompts are encoded by the LoRA'd encoders."""
    if not specs:
        return ()
    if not hasattr(pipe, "load_lora_weights"):
        raise ValueError(f"{type(pipe).__name__} cannot load LoRAs")
    loaded = []
    for index, spec in enumerate(specs):
        file = resolve_lora_file(spec.source)
        name = f"lora{index}"
        before = _adapter_components(pipe)
        try:
            pipe.load_lora_weights(
                str(file.parent), weight_name=file.name, adapter_name=name, use_safetensors=True
            )
        except (ValueError, RuntimeError, KeyError, OSError) as exc:
            first_line = (str(exc).strip().splitlines() or [""])[0][:300]
            raise ValueError(
                f"could not load LoRA {spec.source!r} into this {type(pipe).__name__} "
                f"({type(exc).__name__}: {first_line}); is it a LoRA for this model family?"
            ) from exc
        components = tuple(
            c
            for c, names in _adapter_components(pipe).items()
            if name in names and name not in before.get(c, ())
        )
        if not components:
            raise ValueError(
                f"LoRA {spec.source!r} matched no layer of this {type(pipe).__name__}; is it for another model family?"
            )
        loaded.append(
            LoadedLora(spec.source, str(file), sha256_file(file), spec.scale, name, components)
        )
    pipe.set_adapters([x.adapter_name for x in loaded], adapter_weights=[x.scale for x in loaded])
    return tuple(loaded)


def _adapter_components(pipe: Any) -> dict[str, list[str]]:
    try:
        return dict(pipe.get_list_adapters())
    except ValueError:  # no PEFT backend
        return {}


# --- VAE ----------------------------------------------------------------------------------------


def _vae_subfolder(path: Path) -> str | None:
    """``"vae"`` for a pipeline directory (``vae/config.json``), None for a VAE directory."""
    if (path / "config.json").is_file():
        return None
    if (path / "vae" / "config.json").is_file():
        return "vae"
    raise ValueError(
        f"--vae {str(path)!r} holds no config.json (nor vae/config.json); give a VAE directory, a "
        "pipeline directory or a hub id"
    )


def check_vae_source(source: str) -> None:
    """Model-free check of ``--vae``: a local directory must hold a VAE (config.json and
    safetensors weights), a file is refused."""
    path = Path(source).expanduser()
    if path.is_file():
        raise ValueError(
            f"--vae {source!r} is a file; give the VAE's directory (config.json + safetensors) or a hub id"
        )
    if path.is_dir():
        folder = path / (_vae_subfolder(path) or "")
        if not any(folder.glob("*.safetensors")):
            raise ValueError(
                f"--vae {source!r} holds no .safetensors weights; whichway loads safetensors only"
            )
    elif _looks_local(source):
        raise ValueError(f"--vae {source!r} does not exist")


def load_vae(source: str, pipe: Any) -> Any:
    """An ``AutoencoderKL`` from ``source`` (safetensors only) in the pipeline's dtype, checked to
    fit the pipeline (latent channels and downsampling factor)."""
    from diffusers import AutoencoderKL

    check_vae_source(source)
    path = Path(source).expanduser()
    subfolder = _vae_subfolder(path) if path.is_dir() else None
    from whichway.models._common import dtype_keyword

    try:
        vae = AutoencoderKL.from_pretrained(
            str(path) if path.is_dir() else source,
            subfolder=subfolder,
            use_safetensors=True,
            **{dtype_keyword(): pipe.vae.dtype if pipe.vae is not None else pipe.dtype},
        )
    except Exception as exc:  # missing files, network, not a VAE
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise ValueError(
            f"could not load the VAE {source!r} ({type(exc).__name__}: {first_line}); give a "
            "directory or hub id of a diffusers AutoencoderKL with safetensors weights"
        ) from exc
    vae.to(pipe.vae.device)  # where the VAE it replaces is (placement or offload comes later)
    old = pipe.vae.config
    new = vae.config
    if int(new.latent_channels) != int(old.latent_channels) or len(new.block_out_channels) != len(
        old.block_out_channels
    ):
        raise ValueError(
            f"the VAE {source!r} does not fit this model: {new.latent_channels} latent channels and "
            f"{2 ** (len(new.block_out_channels) - 1)}x downsampling, the model needs "
            f"{old.latent_channels} and {2 ** (len(old.block_out_channels) - 1)}x"
        )
    return vae


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
