"""Decide, in a few seconds, whether a hub id can be loaded before diffusers tries.

Without a network, ``DiffusionPipeline.load_config("owner/name")`` retries its request with
back-off for half a minute or more before failing. :func:`check_hub` instead looks for the
model's ``model_index.json`` in the Hugging Face cache and, unless offline mode is on, probes the
hub endpoint once with a short timeout:

* a local path: nothing to check (diffusers reads it without the network);
* offline (``HF_HUB_OFFLINE=1``) or the endpoint unreachable: load from the cache
  (``local_files_only=True``) when ``model_index.json`` is cached, else fail at once;
* the endpoint reachable: load as usual.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 3.0
"""Seconds the hub endpoint has to answer the probe (DNS included)."""

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_TRUE = {"1", "on", "yes", "true"}


@dataclass(frozen=True)
class HubCheck:
    """What :func:`check_hub` found.

    local_files_only : load from the Hugging Face cache only (offline or no network)
    error : why the model cannot be loaded ("" when it may be)
    """

    local_files_only: bool
    error: str = ""


def is_hub_id(model: str) -> bool:
    """Whether ``model`` names a hub repository ("owner/name") rather than an existing path."""
    return not os.path.exists(model) and bool(_HUB_ID.match(model)) and not model.startswith(".")


def offline_mode() -> bool:
    """``HF_HUB_OFFLINE`` as set now (the environment) or when huggingface_hub was imported."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE:
        return True
    if "HF_HUB_OFFLINE" in os.environ:  # set to a false value now: it wins
        return False
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def endpoint() -> str:
    """The hub endpoint: ``HF_ENDPOINT`` as set now, else huggingface_hub's."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def probe(url: str, timeout: float = PROBE_TIMEOUT_S) -> str:
    """One HEAD request to ``url`` through huggingface_hub's HTTP session (its proxies and
    headers), within ``timeout`` seconds, name resolution included. Returns "" when anything
    answered (any HTTP status), else the reason it did not."""
    from huggingface_hub.utils import get_session

    result: list[str] = []

    def run() -> None:
        try:
            get_session().head(url, timeout=timeout)
            result.append("")
        except Exception as exc:
            result.append(
                f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            )

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout + 0.5)
    return result[0] if result else f"no answer within {timeout:g} s"


def cached_index(model: str) -> str | None:
    """Path of the cached ``model_index.json`` of hub id ``model``, or None."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(model, "model_index.json")
    return found if isinstance(found, str) else None


def check_hub(model: str, timeout: float = PROBE_TIMEOUT_S) -> HubCheck:
    """Whether and how ``model`` can be loaded, decided within about ``timeout`` seconds."""
    if not is_hub_id(model):
        return HubCheck(False)
    cached = cached_index(model) is not None
    if offline_mode():
        if cached:
            return HubCheck(True)
        return HubCheck(
            True, "offline mode (HF_HUB_OFFLINE=1) and no copy in the Hugging Face cache"
        )
    url = endpoint()
    reason = probe(url, timeout)
    if not reason:
        return HubCheck(False)
    if cached:
        logger.info(
            "the hub (%s) is not reachable (%s); loading %s from the cache", url, reason, model
        )
        return HubCheck(True)
    return HubCheck(
        True, f"no connection to {url} ({reason}) and no copy in the Hugging Face cache"
    )
