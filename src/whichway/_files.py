"""Writing results safely, and whichway's own per-machine state (standard library only).

* :func:`write_atomic` writes a file through a temporary name in the same folder and
  ``os.replace``: a crash never leaves half a file, and when the final location cannot be written
  (a full disk, a folder that became read-only) the result is saved to a rescue folder instead and
  :class:`OutputRescuedError` says where, so a finished render is never lost to a write error.
* :func:`cache_dir` is where whichway keeps small per-machine markers (``$WHICHWAY_CACHE_DIR``,
  else ``$XDG_CACHE_HOME/whichway``, else ``~/.cache/whichway``); :func:`first_time` answers
  "has this one-time notice been shown on this machine?".
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "OutputRescuedError",
    "cache_dir",
    "first_time",
    "has_marker",
    "rescue_dir",
    "write_atomic",
]


class OutputRescuedError(OSError):
    """The output could not be written where asked; it was saved to :attr:`rescued` instead.

    An :class:`OSError` whose message is one line naming both places (the CLI prints it as is).
    """

    def __init__(self, message: str, target: Path, rescued: Path) -> None:
        super().__init__(message)
        self.target = target
        self.rescued = rescued

    def __str__(self) -> str:
        return str(self.args[0])


def rescue_dir() -> Path:
    """Folder where outputs that could not be written to their target are saved
    (``<system temp>/whichway-rescue``)."""
    return Path(tempfile.gettempdir()) / "whichway-rescue"


def _via_temp(path: Path, write: Callable[[Path], None]) -> Path:
    # the temporary name keeps the suffix: writers that pick a format by extension (Pillow,
    # imageio, safetensors) see the real one; the leading dot keeps it out of frame listings
    # (not mkstemp: its files are private (0600); the writer creates this one with the usual mode)
    tmp = path.parent / f".{path.stem}.{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix}"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_atomic(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Write a file with ``write(tmp_path)`` to a temporary name, then rename it to ``path``.

    ``write`` receives a path in ``path``'s folder with the same suffix and must write the whole
    file there. Parent folders are created. If writing to ``path``'s folder fails with an
    :class:`OSError`, the file is written to :func:`rescue_dir` instead and
    :class:`OutputRescuedError` is raised naming the rescued copy (if even that fails, the
    original error is raised). Errors that are not :class:`OSError` (a bug in ``write``, a bad
    format) propagate unchanged.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return _via_temp(path, write)
    except OSError as exc:
        try:
            folder = rescue_dir()
            folder.mkdir(parents=True, exist_ok=True)
            rescued = folder / f"{path.stem}-{secrets.token_hex(4)}{path.suffix}"
            try:
                write(rescued)
            except BaseException:
                rescued.unlink(missing_ok=True)
                raise
        except OSError:
            raise exc from None
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise OutputRescuedError(
            f"could not write {path} ({reason}); the result was saved to {rescued} instead: "
            "move it where you want it, then fix the output location (free space, permissions) "
            "or choose another --out",
            path,
            rescued,
        ) from exc


def cache_dir() -> Path:
    """whichway's per-machine state folder (not created here)."""
    env = os.environ.get("WHICHWAY_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "whichway"


def _marker(key: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", key).strip("-") or "notice"
    return cache_dir() / "notices" / safe


def first_time(key: str) -> bool:
    """True the first time ``key`` is asked on this machine (a marker file is then written under
    :func:`cache_dir`/``notices``), False afterwards. If the marker cannot be written the answer
    is True (showing a notice twice beats hiding it)."""
    marker = _marker(key)
    if marker.exists():
        return False
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    except OSError:
        pass
    return True


def has_marker(key: str) -> bool:
    """Whether :func:`first_time` has already been asked ``key`` on this machine."""
    return _marker(key).exists()


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in ``chunk``-byte blocks (LoRA files, audio tracks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def slug(text: str, limit: int = 32) -> str:
    """The folder-name form of a prompt (default run directories of morph, travel, the studio)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit] or "prompt"
