"""Putting the node pack into a ComfyUI: ``whichway comfyui install /path/to/ComfyUI``.

ComfyUI loads every folder of its ``custom_nodes/`` that has an ``__init__.py``. The pack folder
ships inside the whichway package (``whichway/comfyui/pack``), so the installed whichway and the
nodes ComfyUI loads are always the same version; installing links it (or copies it, where links
are not possible) as ``custom_nodes/comfyui-whichway``.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PACK_NAME", "Installed", "install", "pack_dir"]

#: The folder name in custom_nodes/ (not "whichway": it must not look like the package itself).
PACK_NAME = "comfyui-whichway"


def pack_dir() -> Path:
    """The pack folder of the installed whichway."""
    return Path(__file__).resolve().parent / "pack"


@dataclass(frozen=True)
class Installed:
    """What :func:`install` did: ``path`` in custom_nodes/, the pack folder it points at, and
    ``action`` (``"linked"``, ``"copied"``, ``"already linked"``)."""

    path: Path
    target: Path
    action: str


def _custom_nodes(comfy_dir: Path) -> Path:
    if not comfy_dir.is_dir():
        raise ValueError(
            f"{str(comfy_dir)!r} is not a folder; give the ComfyUI folder (with main.py)"
        )
    custom = comfy_dir / "custom_nodes"
    if not (comfy_dir / "main.py").is_file() and not custom.is_dir():
        raise ValueError(
            f"{str(comfy_dir)!r} does not look like ComfyUI (no main.py, no custom_nodes/); give the "
            "folder ComfyUI was cloned into, or its --base-directory"
        )
    return custom


def install(comfy_dir: str | os.PathLike[str], *, copy: bool = False) -> Installed:
    """Link (or copy) the pack into ``comfy_dir/custom_nodes/comfyui-whichway``.

    A link that already points at this pack is left as it is; anything else at that path is a
    ValueError (nothing is overwritten). Restart ComfyUI afterwards to load the nodes.
    """
    custom = _custom_nodes(Path(comfy_dir).expanduser())
    target = pack_dir()
    dest = custom / PACK_NAME
    if dest.is_symlink() or dest.exists():
        if dest.is_symlink() and dest.resolve() == target:
            return Installed(dest, target, "already linked")
        raise ValueError(
            f"{str(dest)!r} already exists and is not a link to this whichway's pack ({target}); "
            "remove it first"
        )
    custom.mkdir(parents=True, exist_ok=True)
    if copy:
        shutil.copytree(target, dest, ignore=shutil.ignore_patterns("__pycache__"))
        return Installed(dest, target, "copied")
    try:
        dest.symlink_to(target, target_is_directory=True)
    except OSError as exc:
        raise ValueError(f"could not link {dest} -> {target} ({exc.strerror}); use --copy") from exc
    return Installed(dest, target, "linked")
