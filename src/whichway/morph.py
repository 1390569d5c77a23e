"""Morph from prompt A to prompt B: the frames of the path, a contact strip, an animation and a
``run.json`` with every setting, in one run directory.

Re-running the same settings into the same directory resumes: frames already on disk are kept
and only the missing ones are rendered.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from whichway._checks import SettingError, check_batch_size, check_choice
from whichway.attention.methods import BO_EVALUATIONS, DiffMorpherSettings
from whichway.prompts.syntax import check_no_negative_markers, check_prompts_syntax

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

    from whichway.models.base import Adapter
    from whichway.models.timing import Preparation

logger = logging.getLogger(__name__)

RUN_FILE = "run.json"
FRAMES_DIR = "frames"
SPACINGS = ("uniform", "perceptual", "beta", "beta-bo")
"""How the frames' t are chosen: as given, re-spaced to equal LPIPS steps, or by AID's Beta
prior (:mod:`whichway.attention.prior`): fitted to explored frames (beta) or chosen by Bayesian
optimisation of the frames' smoothness (beta-bo)."""
BETA_EXPLORATION = 16
"""Frames AID's Beta-prior search renders before choosing (the official default), at least
as many as the morph has."""
# Settings that do not change the pixels of a frame; changing them keeps finished frames.
_PRESENTATION_KEYS = frozenset({"batch_size", "format", "pingpong", "fps", "out"})


@dataclass(frozen=True)
class MorphSettings:
    """Everything that defines a morph. ``t`` are the waypoint times, strictly increasing in
    [0, 1]; ``latent`` is ``fixed`` (one seed for every frame, the paper's setting) or a latent
    path method between ``seed`` and ``seed_b`` (or between two inverted images)."""

    prompt_a: str
    prompt_b: str
    t: tuple[float, ...]
    coupling: str = "ot"
    latent: str = "fixed"
    seed: int = 0
    seed_b: int | None = None
    steps: int = 30
    guidance: float = 7.5
    height: int | None = None
    width: int | None = None
    negative_prompt: str | None = None
    spacing: str = "uniform"
    image_a: str | None = None
    image_b: str | None = None
    inversion_steps: int | None = None
    inversion_guidance: float = 1.0
    batch_size: int | str | None = 4
    format: str | None = "gif"
    pingpong: bool = False
    fps: float = 8.0
    method: str = "plain"
    warmup_ratio: float = 0.5
    aid_layers: str = "both"
    fused: bool = True
    guide_prompt: str | None = None
    lora_rank: int = 16
    lora_steps: int = 200
    lora_lr: float = 2e-4
    attn_lambda: float = 0.6
    beta_evaluations: int = BO_EVALUATIONS

    def __post_init__(self) -> None:
        from whichway.attention.methods import check_diffmorpher, check_image_method, check_method
        from whichway.clouds import COUPLING_METHODS
        from whichway.media import ANIMATION_FORMATS
        from whichway.render import LATENT_METHODS

        check_prompts_syntax(
            ("prompt A", self.prompt_a),
            ("prompt B", self.prompt_b),
            ("negative prompt", self.negative_prompt),
        )
        check_no_negative_markers(("prompt A", self.prompt_a), ("prompt B", self.prompt_b))
        check_choice("coupling", self.coupling, COUPLING_METHODS)
        check_choice("latent method", self.latent, LATENT_METHODS)
        if self.format is not None:
            check_choice("animation format", self.format, ANIMATION_FORMATS)
        check_times(self.t)
        check_method(self.method, self.warmup_ratio, self.aid_layers, self.guide_prompt)
        check_image_method(self.method, self.image_a is not None and self.image_b is not None)
        check_diffmorpher(self.lora_rank, self.lora_steps, self.lora_lr, self.attn_lambda)
        check_choice("spacing", self.spacing, SPACINGS)
        if self.spacing != "uniform" and self.latent == "nao":
            raise SettingError(
                "{s} spacing moves t, but a NAO latent path is optimised for equally spaced "
                "points; use {latent} cog/slerp/lerp/fixed with {spacing} {s}",
                s=self.spacing,
            )
        if self.spacing != "uniform":
            from whichway.metrics.lpips_path import LPIPS_MIN_SIDE

            for name in ("height", "width"):
                value = getattr(self, name)
                if value is not None and value < LPIPS_MIN_SIDE:
                    raise ValueError(
                        f"{self.spacing} spacing measures frames with LPIPS, which needs {name} >= "
                        f"{LPIPS_MIN_SIDE}, got {value}"
                    )
        if self.spacing == "beta-bo":
            check_beta_search(self.beta_evaluations, len(self.t))
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        check_batch_size(self.batch_size)
        if (self.image_a is None) != (self.image_b is None):
            raise SettingError(
                "give both {image_a} and {image_b} (a real-image morph inverts both), or neither"
            )

    def diffmorpher(self) -> DiffMorpherSettings:
        """This morph's DiffMorpher settings (LoRA rank, steps, learning rate, λ)."""
        return DiffMorpherSettings(self.lora_rank, self.lora_steps, self.lora_lr, self.attn_lambda)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> MorphSettings:
        """The settings a ``run.json`` ``"settings"`` entry describes (what :func:`run_morph`
        records: these fields, the resolved size, the runtime options), to resume it."""
        kept = {f.name: record[f.name] for f in fields(cls) if f.name in record}
        return cls(**{**kept, "t": tuple(kept.get("t", ()))})


@dataclass(frozen=True)
class MorphResult:
    """Where a morph's outputs are; ``rendered`` counts the frames rendered in this call (the rest
    were already on disk)."""

    run_dir: Path
    t: tuple[float, ...]
    frames: tuple[Path, ...]
    strip: Path
    animation: Path | None
    couplings: tuple[dict[str, Any], ...]
    rendered: int


def check_beta_search(evaluations: int, frames: int) -> None:
    """Beta-bo spacing: at least one objective evaluation and a frame between the ends."""
    if not isinstance(evaluations, int) or evaluations < 1:
        raise SettingError(
            "the Beta prior search needs at least 1 evaluation, got {n}; use {beta_evaluations} "
            "N with N >= 1",
            n=evaluations,
        )
    if frames < 3:
        raise SettingError(
            "beta-bo spacing places frames between the ends: it needs at least 3 frames, got {n}; "
            "use {frames} N with N >= 3",
            n=frames,
        )


def beta_search_bounds(s: MorphSettings) -> tuple[float, float]:
    """The (lo, hi) range of α and β the Bayesian prior search explores: the official
    [1, warmup ratio × steps], widened to hi = 2 for runs of fewer warmup steps."""
    return 1.0, max(2.0, s.warmup_ratio * s.steps)


def check_times(t: tuple[float, ...] | list[float]) -> None:
    """Waypoint times: at least 2, strictly increasing, in [0, 1]."""
    if len(t) < 2:
        raise SettingError(
            "a morph needs at least 2 frames, got {n}; use {frames} N with N >= 2", n=len(t)
        )
    if any(not (0.0 <= x <= 1.0) for x in t):
        raise ValueError(f"t values must lie in [0, 1], got {list(t)}")
    if any(b <= a for a, b in itertools.pairwise(t)):
        raise ValueError(f"t values must be strictly increasing, got {list(t)}")


def uniform_times(frames: int) -> tuple[float, ...]:
    """``frames`` equally spaced times from 0 to 1 (rounded to 6 decimals, exact ends)."""
    if frames < 2:
        raise ValueError(f"a morph needs at least 2 frames, got {frames}")
    return tuple(round(k / (frames - 1), 6) for k in range(frames))


def versions() -> dict[str, str]:
    """Versions of the libraries that decide the pixels, for ``run.json``."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("whichway", "torch", "diffusers", "transformers", "scipy", "pot"):
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    return out


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON through a temporary file and ``os.replace``: never half a file (see
    :func:`whichway._files.write_atomic`)."""
    from whichway._files import write_atomic

    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    write_atomic(path, lambda tmp: tmp.write_text(text))


def cancel_point(
    should_stop: Callable[[], bool] | None,
    run_dir: Path,
    info: dict[str, Any],
    done: int,
    total: int,
) -> None:
    """A cancel between a run's phases: when ``should_stop()`` says so, ``run.json`` records
    ``"status": "cancelled"`` (what is on disk is kept, the same settings resume) and
    :class:`whichway.render.RenderCancelled` is raised. Shared by morph and travel."""
    from whichway.render import RenderCancelled, stop_if_asked

    try:
        stop_if_asked(should_stop, done, total)
    except RenderCancelled:
        info["status"] = "cancelled"
        write_json_atomic(run_dir / RUN_FILE, info)
        raise


def previous_run(
    run_dir: Path,
    record: dict[str, Any],
    presentation: frozenset[str] = _PRESENTATION_KEYS,
    pixels: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> dict[str, Any] | None:
    """The run.json already in ``run_dir`` if it was written with the same pixel-defining
    settings (``record`` without the ``presentation`` keys, or what ``pixels(settings)`` keeps),
    so its frames can be kept; else None. Shared by morph and travel."""
    run_file = run_dir / RUN_FILE
    if not run_file.is_file():
        return None
    try:
        previous = json.loads(run_file.read_text())
    except (OSError, json.JSONDecodeError):
        logger.warning("ignoring unreadable %s; rendering every frame again", run_file)
        return None

    if pixels is None:

        def pixels(settings: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in settings.items() if k not in presentation}

    if pixels(previous.get("settings", {})) != pixels(record):
        if any((run_dir / FRAMES_DIR).glob("*.png")):
            logger.warning(
                "%s holds frames of different settings; they will be overwritten", run_dir
            )
        return None
    return previous


def _timings(
    wall: float, compiled_before: float | None, compiled_after: float | None
) -> dict[str, float]:
    """Seconds of this call's rendering (inversion included), split into the one-off
    ``torch.compile`` time (when the denoiser is compiled and torch reports it) and the rest."""
    compiled = (
        0.0
        if compiled_before is None or compiled_after is None
        else max(0.0, compiled_after - compiled_before)
    )
    out = {"render_seconds": round(wall - compiled, 3)}
    if compiled > 0:
        out["compile_seconds"] = round(compiled, 3)
    return out


def inversion_file(
    adapter: Adapter,
    path: str,
    prompt: str,
    *,
    steps: int,
    guidance: float,
    height: int,
    width: int,
    cache: Path,
    lora_key: str | None = None,
) -> Path:
    """Where :func:`inverted_latent` caches the inversion of one image: ``cache /
    inverted-KEY.pt``, KEY from the model, the image file (path, size, mtime), prompt, steps,
    guidance, size, the runtime pixel settings and the DiffMorpher LoRA's key (``lora_key``)."""
    import hashlib

    from whichway.models.runtime import runtime_pixel_settings

    stat = Path(path).stat() if Path(path).is_file() else None
    key_parts = [
        adapter.model_id,
        str(Path(path).resolve()),
        stat and stat.st_size,
        stat and stat.st_mtime_ns,
        prompt,
        steps,
        guidance,
        height,
        width,
    ]
    runtime = runtime_pixel_settings(adapter)
    if runtime is not None:  # a LoRA or another VAE inverts to another latent
        key_parts.append(runtime)
    if lora_key is not None:
        key_parts.append(["diffmorpher-lora", lora_key])
    key = hashlib.sha256(json.dumps(key_parts).encode()).hexdigest()[:16]
    return cache / f"inverted-{key}.pt"


def inverted_latent(
    adapter: Adapter,
    path: str,
    prompt: str,
    *,
    steps: int,
    guidance: float,
    height: int,
    width: int,
    cache: Path,
    should_stop: Callable[[], bool] | None = None,
    lora: tuple[dict[str, Tensor], str] | None = None,
) -> Tensor:
    """Invert one image to its initial latent (C, h, w), cached in ``cache`` (a run directory's
    ``latents/``) so a resumed run does not invert again. Shared by morph and travel.
    ``lora``: (weights, key) of a DiffMorpher LoRA the UNet inverts under (the official code
    inverts each image with its own LoRA loaded).
    ``should_stop()`` is polled after every inversion step (:class:`whichway.render.RenderCancelled`)."""
    import torch

    from whichway.media import load_image

    cached = inversion_file(
        adapter,
        path,
        prompt,
        steps=steps,
        guidance=guidance,
        height=height,
        width=width,
        cache=cache,
        lora_key=None if lora is None else lora[1],
    )
    if cached.is_file():
        logger.info("using the inverted latent of %s cached in %s", path, cached)
        return torch.load(cached, weights_only=True)
    image = load_image(path, size=(height, width))
    logger.info("inverting %s (%d DDIM/Euler steps, guidance %g)", path, steps, guidance)
    import contextlib

    from whichway.render import stop_if_asked

    under: Any = contextlib.nullcontext()
    if lora is not None:
        from whichway.attention.diffmorpher import RowAlphas, interpolated_loras

        under = interpolated_loras(adapter.pipe.unet, lora[0], lora[0], RowAlphas(torch.zeros(1)))
    with under:
        latent = adapter.invert(
            image,
            prompt,
            steps=steps,
            guidance=guidance,
            height=height,
            width=width,
            on_step=lambda: stop_if_asked(should_stop),
        )
    from whichway._files import write_atomic

    write_atomic(cached, lambda tmp: torch.save(latent, tmp))
    return latent


def _initial_latents(
    adapter: Adapter,
    s: MorphSettings,
    height: int,
    width: int,
    run_dir: Path,
    should_stop: Callable[[], bool] | None = None,
    loras: list[tuple[dict[str, Tensor], str]] | None = None,
) -> tuple[Tensor, Tensor | None, str]:
    """(latent A, latent B or None, latent method actually used). DiffMorpher: the images'
    LoRAs are fitted (or loaded from ``run_dir/loras``) first, appended to ``loras``, and each
    image is inverted under its own."""
    if s.image_a is not None and s.image_b is not None:
        fitted: list[Any] = [None, None]
        if s.method == "diffmorpher":
            from whichway.attention.lora_cache import fitted_lora

            dm = s.diffmorpher()
            fitted = [
                fitted_lora(
                    adapter,
                    path,
                    prompt,
                    dm,
                    height=height,
                    width=width,
                    cache=run_dir / "loras",
                    should_stop=should_stop,
                )
                for path, prompt in ((s.image_a, s.prompt_a), (s.image_b, s.prompt_b))
            ]
            if loras is not None:
                loras.extend(fitted)
        if (s.inversion_steps or s.steps) != s.steps or s.inversion_guidance != s.guidance:
            logger.warning(
                "inverting with %d steps at guidance %g but rendering with %d steps at guidance %g: "
                "the end frames will not reproduce the images exactly (use the same values for that)",
                s.inversion_steps or s.steps,
                s.inversion_guidance,
                s.steps,
                s.guidance,
            )
        latents = [
            inverted_latent(
                adapter,
                path,
                prompt,
                **inversion_options(s, height, width, run_dir),
                should_stop=should_stop,
                lora=lora,
            )
            for path, prompt, lora in (
                (s.image_a, s.prompt_a, fitted[0]),
                (s.image_b, s.prompt_b, fitted[1]),
            )
        ]
        method = "cog" if s.latent == "fixed" else s.latent
        return latents[0], latents[1], method
    latent_a = adapter.initial_latent(s.seed, height, width)
    if s.latent == "fixed":
        return latent_a, None, "fixed"
    seed_b = s.seed + 1 if s.seed_b is None else s.seed_b
    return latent_a, adapter.initial_latent(seed_b, height, width), s.latent


def inversion_options(s: Any, height: int, width: int, run_dir: str | Path) -> dict[str, Any]:
    """How a morph or travel (``s``: :class:`MorphSettings` or a TravelSettings, read for
    ``inversion_steps``, ``steps``, ``inversion_guidance``) inverts its images and where it caches
    them: the keyword arguments :func:`inverted_latent` and :func:`inversion_file` share, so a
    run and its estimate name the same files."""
    return {
        "steps": s.inversion_steps or s.steps,
        "guidance": s.inversion_guidance,
        "height": height,
        "width": width,
        "cache": Path(run_dir) / "latents",
    }


def preparation_files(
    adapter: Adapter, s: MorphSettings, run_dir: str | Path
) -> tuple[list[Path], list[Path]]:
    """(LoRA files, inverted-latent files) a morph of ``s`` between two images fits or inverts
    into ``run_dir`` (``loras/``, ``latents/``) before its frames; both empty without images."""
    if s.image_a is None or s.image_b is None:
        return [], []
    run_dir = Path(run_dir)
    height, width = s.height or adapter.default_size[0], s.width or adapter.default_size[1]
    loras, inverted = [], []
    for path, prompt in ((s.image_a, s.prompt_a), (s.image_b, s.prompt_b)):
        key = None
        if s.method == "diffmorpher":
            from whichway.attention.lora_cache import lora_file, lora_key

            dm = s.diffmorpher()
            key = lora_key(adapter, path, prompt, dm, (height, width))
            loras.append(lora_file(run_dir / "loras", key))
        inverted.append(
            inversion_file(
                adapter, path, prompt, **inversion_options(s, height, width, run_dir), lora_key=key
            )
        )
    return loras, inverted


def missing_preparation(
    adapter: Adapter,
    loras: Sequence[Path],
    inverted: Sequence[Path],
    *,
    lora_steps: int,
    steps: int,
    guidance: float,
) -> Preparation:
    """The :class:`whichway.models.timing.Preparation` of the distinct ``loras`` and
    ``inverted`` files not written yet: each LoRA ``lora_steps`` fit steps, each inversion
    ``steps`` x (1 + the adapter's refinements) x the rows and calls of ``guidance``."""
    from whichway.models.memory import denoiser_load
    from whichway.models.timing import Preparation

    rows, calls = denoiser_load(adapter, guidance)
    refine = int(getattr(adapter, "inversion_refine", 0) or 0)
    return Preparation(
        lora_fits=sum(not f.is_file() for f in set(loras)),
        lora_steps=lora_steps if loras else 0,
        inversions=sum(not f.is_file() for f in set(inverted)),
        inversion_rows=steps * (1 + refine) * rows * calls,
    )


def pending_preparation(adapter: Adapter, s: MorphSettings, run_dir: str | Path) -> Preparation:
    """The work :func:`run_morph` does before the frames, less what ``run_dir`` caches: an image
    morph inverts both images (``latents/``), DiffMorpher first fits a LoRA per image
    (``loras/``, ``s.lora_steps`` steps each). For :func:`whichway.models.timing.estimate_run_time`."""
    from whichway.models.timing import Preparation

    if s.image_a is None or s.image_b is None:
        return Preparation()
    loras, inverted = preparation_files(adapter, s, run_dir)
    return missing_preparation(
        adapter,
        loras,
        inverted,
        lora_steps=s.lora_steps,
        steps=s.inversion_steps or s.steps,
        guidance=s.inversion_guidance,
    )


def morph_inputs(
    adapter: Adapter,
    s: MorphSettings,
    height: int,
    width: int,
    run_dir: Path,
    path_at: Callable[[Tensor], tuple[Any, Any]],
    guide: Any = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[str, Callable[[Tensor], Tensor], Callable[[Tensor], dict[str, Any]]]:
    """What a morph of ``s`` renders at given times: (latent method used, ``latents_at(times)``
    -> initial latents (n, C, h, w), ``frames_at(times)`` -> ``{"cond": ..., "attention": ...}``,
    the keyword arguments of :func:`whichway.render.render_frames` besides the latents).

    ``path_at(times)`` is the conditioning path (and its couplings); ``guide`` PAID's encoded
    guide prompt (1 row). Real images are inverted (cached in ``run_dir/latents``); DiffMorpher
    fits (or loads from ``run_dir/loras``) each image's LoRA first, inverts each image under its
    own, and AdaIN-normalises the middle latents (:func:`whichway.attention.diffmorpher.adain`).
    Shared by :func:`run_morph` and :func:`whichway.compare.compare_couplings`."""
    import torch

    from whichway.render import latent_path

    loras: list[Any] = []
    latent_a, latent_b, method = _initial_latents(
        adapter, s, height, width, run_dir, should_stop, loras
    )

    def latents_at(times: Tensor) -> Tensor:
        # DiffMorpher: AdaIN of the middle latents to the endpoints' channel statistics (the end
        # frames keep their inverted latents, so they reconstruct the images)
        latents = latent_path(latent_a, latent_b, times, method=method)
        if s.method != "diffmorpher" or latent_b is None:
            return latents
        from whichway.attention.diffmorpher import adain

        middle = (times > 0) & (times < 1)
        latents = latents.clone()
        latents[middle] = adain(latents[middle], latent_a, latent_b, times[middle])
        return latents

    def frames_at(times: Tensor) -> dict[str, Any]:
        # the waypoints' conditioning (PAID: the guide prompt's in the middle) and, for an
        # attention method, the path's endpoint rows each batch is denoised beside
        cond = path_at(times)[0]
        if s.method == "plain":
            return {"cond": cond}
        from whichway.attention.batch import AttentionPath, with_guide
        from whichway.attention.methods import settings_for

        ends = path_at(torch.tensor([0.0, 1.0], dtype=torch.float64))[0]
        end_latents = torch.stack([latent_a, latent_a if latent_b is None else latent_b])
        if s.method == "diffmorpher":
            from whichway.attention.diffmorpher import diffmorpher_hooks

            dm = s.diffmorpher()
            hooks_ = diffmorpher_hooks(loras[0][0], loras[1][0])
            return {
                "cond": cond,
                "attention": AttentionPath(dm, ends, end_latents, times, hooks=hooks_),
            }
        aid = settings_for(
            s.method, fused=s.fused, warmup_ratio=s.warmup_ratio, layers=s.aid_layers
        )
        return {
            "cond": cond if guide is None else with_guide(cond, times, guide),
            "attention": AttentionPath(aid, ends, end_latents, times),
        }

    return method, latents_at, frames_at


def _render(
    adapter: Adapter,
    s: MorphSettings,
    run_dir: Path,
    info: dict[str, Any],
    todo: list[int],
    ts: Tensor,
    path_at: Callable[[Tensor], tuple[Any, Any]],
    height: int,
    width: int,
    progress: bool,
    meter: Any,
    hooks: dict[str, Any],
    guide: Any = None,
) -> int:
    """Render the frames ``todo`` (uniform spacing) or the whole re-spaced path (perceptual),
    writing PNGs and recording in ``info`` what was chosen. ``guide``: PAID's encoded guide
    prompt (1 row). Returns the frames rendered."""
    import torch

    from whichway.media import save_image
    from whichway.render import render_frames

    frames_dir = run_dir / FRAMES_DIR
    method, latents_at, frames_at = morph_inputs(
        adapter, s, height, width, run_dir, path_at, guide, hooks.get("should_stop")
    )
    info["latent_used"] = method

    options = {
        "steps": s.steps,
        "guidance": s.guidance,
        "height": height,
        "width": width,
        "batch_size": s.batch_size,
        "negative": adapter.encode_negative(s.negative_prompt, 1),
        "progress": progress,
        "on_step": hooks.get("on_step"),
        "should_stop": hooks.get("should_stop"),
    }
    on_frame = hooks.get("on_frame")
    if s.spacing == "perceptual":
        from whichway.metrics import respace

        def render_at(times: Tensor) -> Tensor:
            latents = latents_at(times)
            at = frames_at(times)
            return render_frames(adapter, at.pop("cond"), latents, **at, **options)

        spaced = respace(render_at, len(ts), coarse=ts, distance=meter, refine=1)
        for k, image in enumerate(spaced.frames):
            save_image(image, frames_dir / f"{k:04d}.png")
            if on_frame is not None:
                on_frame(k, frames_dir / f"{k:04d}.png")
        info["t"] = spaced.t.to(torch.float64).tolist()
        info["spacing"] = {
            "t_coarse": spaced.t_coarse.tolist(),
            "steps_before": spaced.steps_before.tolist(),
            "steps_after": spaced.steps_after.tolist(),
            "frames_rendered": spaced.n_rendered,
        }
        return spaced.n_rendered
    if s.spacing == "beta-bo":
        from whichway.attention.prior import search_beta

        def render_seq(times: Tensor) -> Tensor:
            latents = latents_at(times)
            at = frames_at(times)
            return render_frames(adapter, at.pop("cond"), latents, **at, **options)

        found = search_beta(
            render_seq,
            meter,
            len(ts),
            evaluations=s.beta_evaluations,
            bounds=beta_search_bounds(s),
            generator=torch.Generator().manual_seed(s.seed),
        )
        for k, image in enumerate(found.frames):
            save_image(image, frames_dir / f"{k:04d}.png")
            if on_frame is not None:
                on_frame(k, frames_dir / f"{k:04d}.png")
        info["t"] = found.t.tolist()
        info["spacing"] = {
            "prior": "beta-bo",
            "alpha": found.alpha,
            "beta": found.beta,
            "smoothness": found.smoothness,
            "bounds": list(beta_search_bounds(s)),
            "evaluated": [{"alpha": a, "beta": b, "smoothness": v} for a, b, v in found.evaluated],
            # the box each GP-UCB step searched (sequential domain reduction), in order
            "step_bounds": [{"alpha": list(a), "beta": list(b)} for a, b in found.bounds],
            "frames_rendered": found.rendered,
        }
        return found.rendered
    if s.spacing == "beta":
        from whichway.attention.prior import explore_beta

        def render_one(times: Tensor) -> Tensor:
            latents = latents_at(times)
            at = frames_at(times)
            return render_frames(adapter, at.pop("cond"), latents, **at, **options)

        explored = max(BETA_EXPLORATION, len(ts))
        prior = explore_beta(render_one, meter, len(ts), exploration=explored)
        for k, image in enumerate(prior.frames):
            save_image(image, frames_dir / f"{k:04d}.png")
            if on_frame is not None:
                on_frame(k, frames_dir / f"{k:04d}.png")
        info["t"] = prior.t.tolist()
        info["spacing"] = {
            "prior": "beta",
            "alpha": prior.alpha,
            "beta": prior.beta,
            "t_explored": prior.explored.tolist(),
            "steps_explored": prior.distances.tolist(),
            "frames_rendered": len(prior.explored),
        }
        return len(prior.explored)
    index = torch.tensor(todo)

    def write(i: int, image: Tensor) -> None:
        target = frames_dir / f"{todo[i]:04d}.png"
        save_image(image, target)
        if on_frame is not None:
            on_frame(todo[i], target)

    at = frames_at(ts[index])
    render_frames(
        adapter,
        at.pop("cond"),
        latents_at(ts)[index],
        on_frame=write,
        keep=False,
        **at,
        **options,
    )
    return len(todo)


def run_morph(
    adapter: Adapter,
    settings: MorphSettings,
    out_dir: str | os.PathLike[str],
    *,
    progress: bool = True,
    meter: Any = None,
    on_frame: Callable[[int, Path], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> MorphResult:
    """Render the morph of ``settings`` with ``adapter`` into ``out_dir``.

    Writes ``frames/NNNN.png`` (streamed as each batch finishes), ``strip.png`` (t-labelled
    contact strip), ``morph.<format>`` and ``run.json``. Frames already rendered with the same
    settings are kept (resume).

    With ``settings.spacing == "perceptual"`` the path is first rendered at ``settings.t``, its
    per-step LPIPS distances measured with ``meter`` (a :class:`whichway.metrics.LPIPSPath`; an
    AlexNet one by default), and the frames re-rendered at times with equal perceptual steps
    (:func:`whichway.metrics.respace`, one refinement round); the chosen t go into ``run.json``.

    Front ends (the web app) follow a run with ``on_frame(index, png_path)`` after each frame is
    written, ``on_step(done, total)`` after each denoising step, and stop it with
    ``should_stop()`` (polled between batches): :class:`whichway.render.RenderCancelled` is then
    raised, the finished frames stay on disk and ``run.json`` says ``"status": "cancelled"``, so
    the same settings resume.
    """
    import torch

    from whichway.clouds import path_length_w2
    from whichway.media import contact_strip, write_animation
    from whichway.render import RenderCancelled, conditioning_path

    s = settings
    if s.method != "plain":
        from whichway.attention.methods import check_family

        check_family(s.method, adapter.family, s.aid_layers)
    run_dir = Path(out_dir)
    frames_dir = run_dir / FRAMES_DIR
    frames_dir.mkdir(parents=True, exist_ok=True)
    height, width = s.height or adapter.default_size[0], s.width or adapter.default_size[1]
    record = _settings_record(s, adapter)
    from whichway.models.runtime import compile_seconds

    previous = previous_run(run_dir, record)
    n = len(s.t)
    done = (
        set()
        if previous is None
        else {k for k in range(n) if (frames_dir / f"{k:04d}.png").is_file()}
    )
    ts = torch.tensor(s.t, dtype=torch.float64)
    if s.spacing != "uniform":
        # the chosen times are only known once every frame is rendered: all or nothing
        if previous is not None and previous.get("status") == "done" and len(done) == n:
            ts = torch.tensor(previous["t"], dtype=torch.float64)
        else:
            done = set()
    library_versions = versions()
    info: dict[str, Any] = {
        "whichway": library_versions.get("whichway", ""),
        "command": "morph",
        **adapter.describe(),
        "settings": record,
        "t": ts.tolist(),
        "frames": [f"{FRAMES_DIR}/{k:04d}.png" for k in range(n)],
        "versions": library_versions,
        "status": "running",
    }
    write_json_atomic(run_dir / RUN_FILE, info)

    cancel_point(should_stop, run_dir, info, len(done), n)  # before encoding
    # Each prompt is encoded once; couplings and paths are pure geometry on the encoded clouds.
    # PAID's guide prompt is encoded with them, so all three clouds have the same token count.
    guide_prompts = [] if s.guide_prompt is None else [s.guide_prompt]
    cond = adapter.encode([s.prompt_a, s.prompt_b, *guide_prompts])
    guide = cond.select(2) if guide_prompts else None

    def path_at(times: Tensor) -> tuple[Any, tuple[Any, ...]]:
        # a fresh generator per call: a random coupling is the same permutation every time
        return conditioning_path(
            cond.select(0),
            cond.select(1),
            times,
            coupling=s.coupling,
            generator=torch.Generator().manual_seed(s.seed),
        )

    todo = [k for k in range(n) if k not in done]
    if todo:
        # Inverted latents reconstruct only under the sampler they were inverted for (DDIM for
        # the diffusion families, flow Euler for SD3/Flux): switch to it for this run, then give
        # the adapter back as it was.
        restore = (
            use_inversion_sampler(adapter, "a real-image morph") if s.image_a is not None else None
        )
        try:
            hooks = {"on_frame": on_frame, "on_step": on_step, "should_stop": should_stop}
            compiled_before = compile_seconds()
            started = time.perf_counter()
            try:
                rendered = _render(
                    adapter,
                    s,
                    run_dir,
                    info,
                    todo,
                    ts,
                    path_at,
                    height,
                    width,
                    progress,
                    meter,
                    hooks,
                    guide,
                )
            except RenderCancelled:
                info["status"] = "cancelled"
                write_json_atomic(run_dir / RUN_FILE, info)
                raise
            info.update(adapter.describe())  # records the scheduler actually used
            info["timings"] = _timings(
                time.perf_counter() - started, compiled_before, compile_seconds()
            )
        finally:
            if restore is not None:
                adapter.use_scheduler(restore)
    else:
        logger.info("all %d frames already rendered in %s", n, run_dir)
        rendered = 0
        info["latent_used"] = (previous or {}).get("latent_used")
    ts = torch.tensor(info["t"], dtype=torch.float64)
    cancel_point(should_stop, run_dir, info, n, n)  # before the strip and animation are written

    path, couplings = path_at(ts)
    coupling_info = tuple(
        {
            "group": g,
            "method": c.method,
            "cost": float(c.cost),
            "w2_path_length": path_length_w2(path.clouds[g].double()),
            "tokens_moved": None
            if c.perm is None
            else int((c.perm != torch.arange(len(c.perm))).sum()),
        }
        for g, c in enumerate(couplings)
    )
    info["couplings"] = list(coupling_info)

    from PIL import Image

    from whichway._files import write_atomic

    frames = tuple(frames_dir / f"{k:04d}.png" for k in range(n))

    def picture(k: int) -> Image.Image:
        with Image.open(frames[k]) as im:
            return im.convert("RGB")

    # the strip shows at most STRIP_MAX_FRAMES frames (evenly picked, ends included): its memory
    # does not grow with the frame count; only an animation holds every frame
    shown = strip_frames(n)
    strip = run_dir / "strip.png"
    times = ts.tolist()
    write_atomic(strip, contact_strip([picture(k) for k in shown], [times[k] for k in shown]).save)
    animation = None
    if s.format is not None:
        animation = write_animation(
            [picture(k) for k in range(n)],
            run_dir / f"morph.{s.format}",
            fps=s.fps,
            pingpong=s.pingpong,
        )
    info.update(
        status="done", strip=strip.name, animation=None if animation is None else animation.name
    )
    write_json_atomic(run_dir / RUN_FILE, info)
    return MorphResult(
        run_dir, tuple(ts.tolist()), frames, strip, animation, coupling_info, rendered=rendered
    )


STRIP_MAX_FRAMES = 32
"""Most frames a morph's contact strip shows (a longer morph's strip picks them evenly)."""


def strip_frames(n: int, most: int = STRIP_MAX_FRAMES) -> list[int]:
    """Indices of the frames a strip of ``n`` frames shows: all of them up to ``most``, else
    ``most`` evenly spaced ones with the first and the last."""
    if n <= most:
        return list(range(n))
    return sorted({round(j * (n - 1) / (most - 1)) for j in range(most)})


def with_runtime(record: dict[str, Any], adapter: Adapter) -> dict[str, Any]:
    """``record`` plus the adapter's pixel-changing runtime options (LoRAs by SHA-256, VAE,
    sampler, attention) under ``"runtime"`` when it has any, and its prompt weighting rule and
    long-prompt mode under ``"prompts"`` when they are not the defaults: part of what a resumed
    run must match. Shared by morph and travel."""
    from whichway.models.runtime import runtime_pixel_settings
    from whichway.prompts.options import DEFAULT_LONG_PROMPTS, DEFAULT_WEIGHTING

    runtime = runtime_pixel_settings(adapter)
    record = record if runtime is None else {**record, "runtime": runtime}
    # the prompt layer's choices change pixels too (recorded when not the defaults, so runs
    # made before they existed still resume)
    defaults = {"weighting": DEFAULT_WEIGHTING, "long_prompts": DEFAULT_LONG_PROMPTS}
    prompts = {k: getattr(adapter, k, v) for k, v in defaults.items()}
    return record if prompts == defaults else {**record, "prompts": prompts}


def _settings_record(s: MorphSettings, adapter: Adapter) -> dict[str, Any]:
    """The settings ``run.json`` records and a resume must match (a plain morph leaves out the
    attention-method keys, so runs recorded before they existed still resume)."""
    from whichway.attention.methods import ATTENTION_KEYS, DIFFMORPHER_KEYS

    height, width = s.height or adapter.default_size[0], s.width or adapter.default_size[1]
    record = {**asdict(s), "t": list(s.t), "height": height, "width": width}
    if s.method != "diffmorpher":  # runs recorded before DiffMorpher existed still resume
        record = {k: v for k, v in record.items() if k not in DIFFMORPHER_KEYS}
    else:  # AID's own settings do not act
        dropped = set(ATTENTION_KEYS) - {"method"}
        record = {k: v for k, v in record.items() if k not in dropped}
    if s.method == "plain":
        record = {k: v for k, v in record.items() if k not in ATTENTION_KEYS}
    if s.spacing != "beta-bo":  # runs recorded before the Bayesian prior existed still resume
        record.pop("beta_evaluations")
    return with_runtime(record, adapter)


def can_resume(run_dir: str | os.PathLike[str], settings: MorphSettings, adapter: Adapter) -> bool:
    """True when ``run_dir`` holds no run yet, or a run of the same pixel-defining settings (on
    ``adapter``, with its runtime options) whose finished frames :func:`run_morph` would keep;
    False when it holds a run of other settings (whose frames a run of ``settings`` would
    overwrite)."""
    run_dir = Path(run_dir)
    if not (run_dir / RUN_FILE).is_file() and not any((run_dir / FRAMES_DIR).glob("*.png")):
        return True
    return previous_run(run_dir, _settings_record(settings, adapter)) is not None


def use_inversion_sampler(adapter: Adapter, what: str) -> str | None:
    """Switch ``adapter`` to the sampler its inversion is exact for (DDIM for the diffusion
    families, flow Euler for SD3/Flux), warning when ``--sampler`` asked for another; returns the
    name to give back to ``adapter.use_scheduler`` afterwards (None: nothing to restore).
    Inverted latents reconstruct their images only under that sampler; shared by morph and travel."""
    if not hasattr(adapter, "use_scheduler"):
        return None
    asked = getattr(adapter, "sampler", None)
    inversion = getattr(adapter, "inversion_sampler", "") or "its inversion's sampler"
    if asked is not None and asked != inversion:
        logger.warning(
            "%s renders with %s, the sampler its inversion is exact for; --sampler %s applies to "
            "prompt-only runs",
            what,
            inversion,
            asked,
        )
    return adapter.use_scheduler("inversion")
