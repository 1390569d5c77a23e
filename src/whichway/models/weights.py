"""Extra weights a run adds to a loaded pipeline: LoRA adapters (on the denoiser *and* the text
encoders, so the token clouds that get coupled are the LoRA'd model's) and a swapped-in VAE, each
from a ``.safetensors`` file, a folder or the hub; pickles are refused.

The module's top level imports only the standard library: the sources are checked before torch
or diffusers are imported.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from whichway._files import sha256_file

LORA_SUFFIX = ".safetensors"
#: weight-file suffixes that are pickles (refused: loading them can run code)
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
#: file name diffusers' ``save_lora_weights`` writes and ``load_lora_weights`` looks for first
DEFAULT_LORA_FILE = "pytorch_lora_weights.safetensors"


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


# --- LoRA files -----------------------------------------------------------------------------------


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
