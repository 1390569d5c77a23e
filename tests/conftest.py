"""Shared fixtures: tiny random pipelines of each family, built once per test session.

``tiny_pipeline("sd")`` returns the directory of a tiny StableDiffusionPipeline saved with
``save_pretrained``; load it with ``whichway.models.load_adapter(path)`` or pass it to the CLI as
``--model``. Families: "sd", "sdxl", "sd3", "flux" (the last two are built by
``whichway.models.tiny_mmdit``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

# Tests never touch the network: a hub id must fail fast instead of hanging on a download.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _whichway_cache_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """whichway's own per-machine state (one-time notices) goes to a temporary folder in tests."""
    monkeypatch.setenv("WHICHWAY_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "whichway-cache"))


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Factory: family -> directory of a tiny random pipeline of that family (built once)."""
    built: dict[str, Path] = {}

    def factory(family: str) -> Path:
        if family not in built:
            from whichway.models.tiny import build_tiny_pipeline

            built[family] = build_tiny_pipeline(
                family, tmp_path_factory.mktemp(f"tiny_{family}"), seed=0
            )
        return built[family]

    return factory


@pytest.fixture(scope="session")
def tiny_adapter(tiny_pipeline: Callable[[str], Path]) -> Callable[[str], object]:
    """Factory: family -> an Adapter over the tiny pipeline, float32 on CPU (loaded once).

    Shared across tests: a test that changes the adapter's scheduler must load its own copy.
    """
    loaded: dict[str, object] = {}

    def factory(family: str) -> object:
        if family not in loaded:
            from whichway.models import load_adapter

            loaded[family] = load_adapter(str(tiny_pipeline(family)), device="cpu", dtype="float32")
        return loaded[family]

    return factory


@pytest.fixture
def tab_handler() -> Callable[..., tuple[Callable[..., list | tuple], object]]:
    """Factory: (studio, api name) -> (call, gradio): the studio tab's handler as the page calls
    it (inputs by parameter name, the page's own defaults for the rest, a table's default as its
    rows); a refusal is the ``gr.Error`` the page shows."""
    import inspect

    gr = pytest.importorskip("gradio")

    def factory(studio: object, api_name: str) -> tuple[Callable[..., list | tuple], object]:
        from whichway.studio.app import build_app

        event = next(f for f in build_app(studio).fns.values() if f.api_name == api_name)
        names = list(inspect.signature(event.fn).parameters)
        values = [c.value for c in event.inputs]
        values = [v["data"] if isinstance(v, dict) and "data" in v else v for v in values]
        defaults = dict(zip(names, values, strict=False))

        def call(**page: object) -> list | tuple:
            out = event.fn(**{**defaults, **page}, request=None)  # a generator, or one tuple
            return out if isinstance(out, tuple) else list(out)

        return call, gr

    return factory
