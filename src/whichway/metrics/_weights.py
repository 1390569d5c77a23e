"""Clear errors for pretrained weights that download on first use.

The metrics run on networks whose weights are fetched from the internet the first time they are
used (torchvision's AlexNet/VGG for LPIPS, torch-fidelity's InceptionV3 for FID, timm classifiers
from the Hugging Face hub). On an offline machine the libraries fail with a bare ``URLError`` deep
in a stack trace; :func:`fetching` turns that into a :class:`WeightsUnavailableError` that says
which file is missing, where it is looked for and how to provide it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

__all__ = ["WeightsUnavailableError", "fetching", "hub_checkpoint_dir"]


class WeightsUnavailableError(FileNotFoundError):
    """Pretrained weights are neither cached locally nor downloadable.

    A :class:`FileNotFoundError`, so command-line callers report it as a plain error message.
    """


def hub_checkpoint_dir() -> str:
    """Directory where ``torch.hub`` caches downloaded checkpoints (``$TORCH_HOME/hub/checkpoints``)."""
    import torch

    return os.path.join(torch.hub.get_dir(), "checkpoints")


def _is_download_failure(exc: BaseException) -> bool:
    if isinstance(exc, OSError):  # URLError, HTTPError, ConnectionError, socket errors, hub errors
        return True
    if isinstance(exc, RuntimeError):  # truncated or corrupted partial download
        text = str(exc)
        return any(
            key in text for key in ("invalid hash", "PytorchStreamReader", "failed finding central")
        )
    # huggingface_hub's offline errors derive from OSError or ValueError depending on the version.
    name = type(exc).__name__
    return name in {"LocalEntryNotFoundError", "OfflineModeIsEnabled", "HfHubHTTPError"}


@contextlib.contextmanager
def fetching(what: str, *, url: str | None, how: str, testing_hint: str) -> Iterator[None]:
    """Run a block that may download weights; re-raise download failures with instructions.

    Parameters
    ----------
    what : str
        The weights, in words (``"torchvision AlexNet ImageNet weights (alexnet-owt-7be5be79.pth)"``).
    url : str or None
        Where the library downloads them from, if known.
    how : str
        How to provide them by hand (where to copy the file, which variable to set).
    testing_hint : str
        The option that avoids pretrained weights altogether (for tests and smoke runs).
    """
    try:
        yield
    except WeightsUnavailableError:
        raise
    except Exception as exc:  # filtered below; everything else is re-raised untouched
        if not _is_download_failure(exc):
            raise
        source = f" from {url}" if url else ""
        raise WeightsUnavailableError(
            f"could not load the {what}: they are not cached and downloading them{source} failed "
            f"({type(exc).__name__}: {exc}). To use them offline, {how}. For tests and smoke runs "
            f"without pretrained weights, {testing_hint}."
        ) from exc
