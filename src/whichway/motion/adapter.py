"""A motion adapter (AnimateDiff ``MotionAdapter``): checked before any weights load, loaded,
and merged with the base model's UNet into diffusers' ``UNetMotionModel``.

A source is a diffusers folder (``config.json`` and ``diffusion_pytorch_model.safetensors``) or a
hub id of one (``guoyww/animatediff-motion-adapter-v1-5-2``). Motion adapters exist for
UNet models: SD 1.x and SDXL here (for SDXL, whichway's window loop gives each frame its own pooled
vector and time ids, where ``AnimateDiffSDXLPipeline`` gives a video one); SD3 and Flux have no
UNet.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from whichway.models.base import Adapter

MOTION_FAMILIES = ("sd", "sdxl")
WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors",)


@dataclass(frozen=True)
class MotionSource:
    """A checked motion adapter source: ``config`` is its ``config.json`` when local (None for a
    hub id, read when it loads), ``sha256`` the SHA-256 of its local weights file."""

    source: str
    config: dict[str, Any] | None
    weights: Path | None
    sha256: str | None

    def record(self) -> dict[str, Any]:
        """The ``run.json`` entry."""
        return {
            "adapter": self.source,
            "weights": None if self.weights is None else str(self.weights),
            "sha256": self.sha256,
        }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_motion_source(source: str) -> MotionSource:
    """Model-free check of ``--motion``: a local folder must hold a MotionAdapter's
    ``config.json`` and safetensors weights; a file, a pickle or a missing path is refused with
    what to give instead; anything else must read as a hub id (owner/name)."""
    from whichway.models.weights import _looks_local

    if not isinstance(source, str) or not source.strip():
        raise ValueError("--motion needs a MotionAdapter folder or hub id")
    path = Path(source).expanduser()
    if path.is_dir():
        config_file = path / "config.json"
        if not config_file.is_file():
            raise ValueError(
                f"motion adapter folder {source!r} has no config.json; give a diffusers "
                "MotionAdapter folder (MotionAdapter.save_pretrained) or a hub id"
            )
        try:
            config = json.loads(config_file.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"motion adapter {source!r}: config.json is not JSON ({exc})") from exc
        if not isinstance(config, dict) or config.get("_class_name") != "MotionAdapter":
            name = config.get("_class_name") if isinstance(config, dict) else None
            raise ValueError(
                f"{source!r} holds a {name or 'non-diffusers'} config, not a MotionAdapter; give "
                "a motion adapter folder such as guoyww/animatediff-motion-adapter-v1-5-2"
            )
        weights = next((path / n for n in WEIGHT_NAMES if (path / n).is_file()), None)
        if weights is None:
            pickles = sorted(p.name for p in path.glob("*.bin"))
            extra = f" (it has {', '.join(pickles)}: pickles are not loaded)" if pickles else ""
            raise ValueError(
                f"motion adapter folder {source!r} holds no weights: expected "
                f"{WEIGHT_NAMES[0]}{extra}; download the adapter's safetensors weights"
            )
        return MotionSource(str(path), config, weights, _sha256(weights))
    if path.is_file():
        raise ValueError(
            f"--motion {source!r} is a file; give the MotionAdapter folder that holds it with its "
            "config.json (diffusers layout) or a hub id"
        )
    if _looks_local(source):
        raise ValueError(f"motion adapter {source!r} does not exist; give a folder or a hub id")
    parts = source.split("/")
    if len(parts) != 2 or not all(parts):
        raise ValueError(
            f"motion adapter {source!r} is neither an existing folder nor a hub id (owner/name)"
        )
    return MotionSource(source, None, None, None)


def check_motion_family(
    family: str, unet_config: dict[str, Any] | None, motion: MotionSource
) -> None:
    """Refuse a base model of a family without motion adapters here, or whose UNet blocks differ
    from the adapter's (``block_out_channels``), before weights load when both configs are local."""
    if family not in MOTION_FAMILIES:
        raise ValueError(
            f"--motion needs an SD 1.x or SDXL base model; a {family} model has no UNet for a "
            "motion adapter. Give --model an SD 1.5 or SDXL checkpoint"
        )
    if unet_config is None or motion.config is None:
        return
    base = tuple(unet_config.get("block_out_channels", ()))
    own = tuple(motion.config.get("block_out_channels", ()))
    if base and own and base != own:
        raise ValueError(
            f"motion adapter {motion.source!r} was made for a UNet with blocks {list(own)}, but the "
            f"base model's UNet has {list(base)} (another family?); give a matching --model"
        )


def check_motion_base(model: str, motion: MotionSource) -> None:
    """:func:`check_motion_family` for ``--model`` when it is a local folder (its
    ``model_index.json`` names the pipeline class); a hub id is checked when it loads."""
    folder = Path(model).expanduser()
    index = folder / "model_index.json"
    if not index.is_file():
        return
    try:
        name = json.loads(index.read_text()).get("_class_name", "")
    except (OSError, ValueError, AttributeError):
        return
    from whichway.models.samplers import PIPELINE_FAMILIES

    family = PIPELINE_FAMILIES.get(name)
    if family is not None:
        check_motion_family(family, unet_config_of(model), motion)


def unet_config_of(model: str) -> dict[str, Any] | None:
    """The base model's ``unet/config.json`` when ``model`` is a local folder (None otherwise)."""
    file = Path(model).expanduser() / "unet" / "config.json"
    if not file.is_file():
        return None
    try:
        config = json.loads(file.read_text())
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def max_positions(motion: MotionSource) -> int | None:
    """The adapter's ``motion_max_seq_length`` (frames a window may hold) when its config is known."""
    if motion.config is None:
        return None
    value = motion.config.get("motion_max_seq_length")
    return int(value) if isinstance(value, int) else None


def motion_unet(adapter: Adapter, motion: MotionSource) -> Any:
    """diffusers' ``UNetMotionModel`` made of ``adapter``'s UNet (spatial layers, shared weights
    copied) and the motion adapter's temporal layers, on the adapter's device and dtype."""
    import torch
    from diffusers import MotionAdapter, UNetMotionModel

    check_motion_family(adapter.family, dict(adapter.pipe.unet.config), motion)
    try:
        loaded = MotionAdapter.from_pretrained(motion.source, use_safetensors=True)
    except Exception as exc:  # hub / file errors come in many types; all mean "cannot load"
        from whichway.models.loading import _gist

        raise ValueError(
            f"could not load motion adapter {motion.source!r}: {_gist(exc)}; give a MotionAdapter "
            "folder with safetensors weights, or a hub id already in the Hugging Face cache"
        ) from exc
    check_motion_family(
        adapter.family, dict(adapter.pipe.unet.config), _with_config(motion, loaded)
    )
    unet = UNetMotionModel.from_unet2d(adapter.pipe.unet, loaded)
    # from_unet2d leaves SDXL's add_embedding (pooled + time ids) random: every spatial weight of
    # the base UNet is copied over, the motion modules stay the adapter's
    unet.load_state_dict(adapter.pipe.unet.state_dict(), strict=False)
    if unet.device != torch.device(adapter.device):
        unet = unet.to(device=adapter.device)
    if unet.dtype != adapter.dtype:
        unet = unet.to(dtype=adapter.dtype)
    return unet.eval()


def _with_config(motion: MotionSource, loaded: Any) -> MotionSource:
    return MotionSource(motion.source, dict(loaded.config), motion.weights, motion.sha256)
