"""One prompt pair rendered with each coupling (ot, clip, random) side by side.

The three paths share their end frames: at t = 0 every coupling conditions on E_A and at t = 1 on
E_B (up to a row permutation the model cannot see, DESIGN 1.1), so t = 0 and t = 1 are rendered
once and only the interior frames of each coupling are rendered, all in one batched call, with
the same initial latent (seed) for every frame, as paper A's protocol and the prompt study do.
The random coupling draws its permutation from ``torch.Generator().manual_seed(seed)``, as
``whichway morph --coupling random --seed S`` does, so each strip is the morph of that coupling.

For each coupling: the coupling cost C(sigma) = sum_i ||E_A[i] - E_B[sigma(i)]||^2 (summed over
token groups), the W2 length of the conditioning path, and with an LPIPS meter the perceptual path
length PPL = sum_k LPIPS(frame_k, frame_k+1) and smoothness (:mod:`whichway.metrics`).

Further rows: AID/PAID on the OT path (shared end frames), DiffMorpher between two images on
the OT path (its own end frames: the images' reconstructions under their LoRAs) and motion
videos (their own end frames).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from PIL.Image import Image as PILImage
    from torch import Tensor

    from whichway.attention.methods import DiffMorpherSettings
    from whichway.metrics.smoothness import PathMetrics
    from whichway.models.base import Adapter
    from whichway.morph import MorphSettings

__all__ = [
    "CouplingComparison",
    "compare_couplings",
    "diffmorpher_morph",
    "diffmorpher_row",
    "save_comparison",
]


@dataclass(frozen=True)
class CouplingComparison:
    """Frames and figures of one pair under each coupling.

    t : waypoint times (T,)
    frames : method -> Tensor (T, 3, H, W) in [0, 1]; frames 0 and T-1 are the same tensors for
        every coupling and AID/PAID row (shared end frames); the ``diffmorpher`` row's end frames
        are its own (each image inverted and rendered under its own LoRA), as are the motion
        rows' (motion moves them)
    costs : method -> coupling cost summed over token groups
    w2_path_length : method -> W2 length of the conditioning path summed over token groups
    metrics : method -> PathMetrics (PPL, smoothness, ...), or None without an LPIPS meter
    settings : what was rendered (prompts, seed, steps, guidance, size)
    """

    t: tuple[float, ...]
    frames: dict[str, Tensor]
    costs: dict[str, float]
    w2_path_length: dict[str, float]
    metrics: dict[str, PathMetrics] | None
    settings: dict[str, Any]

    def summary(self) -> list[dict[str, Any]]:
        """One dict per row (coupling, attention method or motion row, in ``frames``' order):
        ``coupling`` (the row's name, for method rows too: the column the prompt study's results
        name their rows by, so compare.csv and a study's table read alike), ``cost``,
        ``w2_path_length``, ``ppl``, ``smoothness``, ``mean_step`` and ``max_step`` (the
        LPIPS figures None without a meter)."""
        rows = []
        for m in self.frames:
            pm = None if self.metrics is None else self.metrics[m]
            rows.append(
                {
                    "coupling": m,
                    "cost": self.costs[m],
                    "w2_path_length": self.w2_path_length[m],
                    "ppl": None if pm is None else pm.ppl,
                    "smoothness": None if pm is None else pm.smoothness,
                    "mean_step": None if pm is None else pm.consistency,  # flicker: mean, max
                    "max_step": None if pm is None else pm.max_step,
                }
            )
        return rows


def compare_couplings(
    adapter: Adapter,
    prompt_a: str,
    prompt_b: str,
    t: Sequence[float],
    *,
    methods: Sequence[str] = ("ot", "clip", "random"),
    seed: int = 0,
    steps: int = 30,
    guidance: float = 7.5,
    height: int | None = None,
    width: int | None = None,
    negative_prompt: str | None = None,
    batch_size: int | str | None = None,
    meter: Any = None,
    on_step: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    attention: Sequence[str] = (),
    guide_prompt: str | None = None,
    warmup_ratio: float | None = None,
    aid_layers: str | None = None,
    fused: bool | None = None,
    motion: str | None = None,
    context_length: int | None = None,
    image_a: str | os.PathLike[str] | PILImage | None = None,
    image_b: str | os.PathLike[str] | PILImage | None = None,
    diffmorpher: DiffMorpherSettings | None = None,
    cache: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> CouplingComparison:
    """Render the path of ``prompt_a`` -> ``prompt_b`` under each coupling in ``methods``.

    ``t`` are the waypoint times (strictly increasing, first 0 and last 1: the end frames are
    shared). ``meter`` is a :class:`whichway.metrics.LPIPSPath` for PPL and smoothness (None: no
    perceptual figures). ``on_step``/``should_stop`` as in :func:`whichway.render.render_frames`.
    ``attention``: attention methods (``aid-outer``, ``aid-inner``, ``paid``, ``diffmorpher``;
    :mod:`whichway.attention`) rendered as further rows on the OT path, PAID with
    ``guide_prompt``; AID's end frames are the shared ones (it leaves them unchanged).
    ``warmup_ratio``, ``aid_layers``, ``fused``: how AID acts in every AID/PAID row, named as
    :class:`whichway.morph.MorphSettings` names them (None: the official value, 0.5, ``both``,
    True; :class:`whichway.attention.methods.AIDSettings`); given without an AID/PAID row they
    are refused.
    ``diffmorpher`` morphs between ``image_a`` and ``image_b`` (paths or PIL images, the images
    of prompt A and B; required with it) with ``diffmorpher`` settings (default: the official
    ones): a LoRA fitted per image, each image inverted under its own LoRA (DDIM, the render's
    steps, guidance 1, as ``whichway morph`` inverts), the middle latents the AdaIN'd slerp of
    the two (the official latent path), the text path the OT coupling; it is exactly the
    ``run_morph`` of ``MorphSettings(..., coupling="ot", latent="slerp", method="diffmorpher")``
    (:func:`whichway.morph.morph_inputs`), so its end frames are its own: the images'
    reconstructions under their LoRAs. The LoRAs and inverted latents are cached in ``cache``
    (``loras/``, ``latents/``, as a morph's run folder; None: a temporary folder, fitted again
    next time).
    ``motion``: a MotionAdapter (:mod:`whichway.motion`): two more rows, the lerp path
    (FreeNoise's default prompt interpolation, ``"lerp+motion"``) and the OT path
    (``"ot+motion"``), each denoised as one video of T frames from the seed's latent, in context
    windows of ``context_length``; their end frames are their own (motion moves them).
    ``progress``: progress bars with ETA on stderr (LoRA fits log theirs).
    Renders 2 + (len(methods) + len(attention)) x (T - 2) frames (+ 2 x T with ``motion``; the
    ``diffmorpher`` row T, not T - 2).
    """
    import torch

    from whichway._checks import check_choice
    from whichway.attention.methods import DiffMorpherSettings
    from whichway.clouds import COUPLING_METHODS, path_length_w2
    from whichway.models.base import Conditioning
    from whichway.morph import check_times
    from whichway.render import conditioning_path, render_frames

    ts = tuple(float(x) for x in t)
    check_times(ts)
    if ts[0] != 0.0 or ts[-1] != 1.0:
        raise ValueError(
            f"a comparison shares its end frames: t must start at 0 and end at 1, got {list(ts)}"
        )
    if not methods:
        raise ValueError("give at least one coupling to compare")
    for m in methods:
        check_choice("coupling", m, COUPLING_METHODS)
    if not prompt_a.strip() or not prompt_b.strip():
        raise ValueError("give both prompts (A and B)")
    from whichway.attention.methods import check_family, check_method

    aid_settings = _aid_settings(attention, warmup_ratio, aid_layers, fused)
    for m in attention:
        if m == "plain" or m in methods:
            raise ValueError(
                f"{m!r} is not an attention method; give aid-outer, aid-inner, paid or diffmorpher"
            )
        check_method(
            m, aid_settings["warmup_ratio"], aid_settings["aid_layers"],
            guide_prompt if m == "paid" else None,
        )  # fmt: skip
    images = _check_images(attention, image_a, image_b, diffmorpher)
    for m in attention:
        check_family(m, adapter.family, aid_settings["aid_layers"], listed=True)
    source = None
    if motion is not None:  # before anything is rendered
        from whichway.motion.adapter import check_motion_family, check_motion_source
        from whichway.motion.windows import check_context

        check_context(context_length, None)
        source = check_motion_source(motion)
        check_motion_family(adapter.family, dict(adapter.pipe.unet.config), source)
    height = height or adapter.default_size[0]
    width = width or adapter.default_size[1]
    if meter is not None:
        from whichway.metrics.lpips_path import LPIPS_MIN_SIDE

        if min(height, width) < LPIPS_MIN_SIDE:  # before anything is rendered
            raise ValueError(
                f"PPL and smoothness measure frames with LPIPS, which needs at least {LPIPS_MIN_SIDE}x"
                f"{LPIPS_MIN_SIDE} pixels, got {height}x{width}; render larger frames or pass no meter"
            )
    T = len(ts)
    times = torch.tensor(ts, dtype=torch.float64)

    # PAID's guide is encoded with A and B: one token count for the three clouds
    guides = [guide_prompt] if "paid" in attention and guide_prompt else []
    both = adapter.encode([prompt_a, prompt_b, *guides])
    cond_a, cond_b = both.select(0), both.select(1)
    guide = both.select(2) if guides else None
    parts = [Conditioning.cat([cond_a, cond_b])]
    index: dict[str, list[int]] = {}
    costs: dict[str, float] = {}
    lengths: dict[str, float] = {}
    n = 2

    def figures(coupling: str) -> tuple[Any, float, float]:
        """The conditioning path of ``coupling``, its cost and its W2 length."""
        path, couplings = conditioning_path(
            cond_a, cond_b, times, coupling=coupling,
            generator=torch.Generator().manual_seed(seed),
        )  # fmt: skip
        cost = float(sum(float(c.cost) for c in couplings))
        return path, cost, float(sum(float(path_length_w2(g.double())) for g in path.clouds))

    for m in methods:
        path, costs[m], lengths[m] = figures(m)
        inner = path.select(slice(1, T - 1))
        if len(inner):
            parts.append(inner)
        index[m] = [0, *range(n, n + T - 2), 1]
        n += T - 2
    frames = render_frames(
        adapter,
        Conditioning.cat(parts),
        adapter.initial_latent(seed, height, width),
        steps=steps,
        guidance=guidance,
        height=height,
        width=width,
        batch_size=batch_size,
        negative=adapter.encode_negative(negative_prompt, 1),
        progress=progress,
        on_step=on_step,
        should_stop=should_stop,
    )
    assert frames is not None
    per_method = {m: frames[index[m]] for m in methods}
    # every attention row's text path is the OT path: its cost and W2 length, OT a row or not
    ot = (costs.get("ot", float("nan")), lengths.get("ot", float("nan")))
    if attention and "ot" not in costs:
        ot = figures("ot")[1:]
    aid = tuple(m for m in attention if m != "diffmorpher")
    if aid:
        extra = _attention_rows(
            adapter, cond_a, cond_b, times, aid, guide, seed, aid_settings,
            steps=steps, guidance=guidance, height=height, width=width, batch_size=batch_size,
            negative=adapter.encode_negative(negative_prompt, 1), progress=progress,
            on_step=on_step, should_stop=should_stop,
        )  # fmt: skip
        frames = torch.cat([frames, *extra.values()])
        for m, rows in extra.items():
            start = n
            index[m] = [0, *range(start, start + len(rows)), 1]
            n += len(rows)
            per_method[m] = frames[index[m]]
            costs[m], lengths[m] = ot
        methods = (*methods, *extra)
    if images is not None:
        dm = diffmorpher or DiffMorpherSettings()
        rows, recorded = diffmorpher_row(
            adapter, prompt_a, prompt_b, ts, images, dm, seed, cache,
            steps=steps, guidance=guidance, height=height, width=width,
            negative_prompt=negative_prompt, batch_size=batch_size, progress=progress,
            on_step=on_step, should_stop=should_stop,
        )  # fmt: skip
        frames = torch.cat([frames, rows])
        index["diffmorpher"] = list(range(n, n + T))
        n += T
        per_method["diffmorpher"] = frames[index["diffmorpher"]]
        costs["diffmorpher"], lengths["diffmorpher"] = ot
        methods = (*methods, "diffmorpher")
    if source is not None:
        moving = _motion_rows(
            adapter, cond_a, cond_b, times, source, context_length, seed,
            steps=steps, guidance=guidance, height=height, width=width,
            negative=adapter.encode_negative(negative_prompt, 1), should_stop=should_stop,
            progress=progress,
        )  # fmt: skip
        frames = torch.cat([frames, *moving.values()])
        for m in moving:
            index[m] = list(range(n, n + T))
            n += T
            per_method[m] = frames[index[m]]
        for m, coupling in (("lerp+motion", "clip"), ("ot+motion", "ot")):
            _, couplings = conditioning_path(cond_a, cond_b, times[:1], coupling=coupling)
            costs[m] = float(sum(float(c.cost) for c in couplings))
            lengths[m] = lengths.get(coupling, float("nan"))
        methods = (*methods, *moving)
    metrics = None
    if meter is not None:
        from whichway.metrics.smoothness import path_metrics_from_steps

        with torch.inference_mode():
            feats = meter.features(frames)
            metrics = {}
            for m in methods:
                idx = torch.tensor(index[m], device=feats[0].device)
                d = meter.pair_distances([f[idx[:-1]] for f in feats], [f[idx[1:]] for f in feats])
                metrics[m] = path_metrics_from_steps(d.to(torch.float64).cpu(), times)
    settings = {
        "prompt_a": prompt_a,
        "prompt_b": prompt_b,
        "t": list(ts),
        "methods": list(methods),
        "seed": seed,
        "steps": steps,
        "guidance": guidance,
        "height": height,
        "width": width,
        "negative_prompt": negative_prompt,
        "batch_size": batch_size,
        **({"guide_prompt": guide_prompt} if "paid" in attention else {}),
        **(aid_settings if any(m != "diffmorpher" for m in attention) else {}),
        **({"motion": source.record(), "context_length": context_length} if source else {}),
        **(
            {
                "image_a": recorded[0],
                "image_b": recorded[1],
                "diffmorpher": {**asdict(dm), "latent": "slerp"},
            }
            if images is not None
            else {}
        ),
    }
    return CouplingComparison(ts, per_method, costs, lengths, metrics, settings)


def _motion_rows(
    adapter: Adapter,
    cond_a: Any,
    cond_b: Any,
    times: Tensor,
    source: Any,
    context_length: int | None,
    seed: int,
    *,
    steps: int,
    guidance: float,
    height: int,
    width: int,
    negative: Any,
    should_stop: Callable[[], bool] | None,
    progress: bool = False,
) -> dict[str, Tensor]:
    """The lerp and OT paths of A -> B, each denoised as one motion video of T frames from the
    seed's latent: {"lerp+motion": (T, 3, H, W), "ot+motion": (T, 3, H, W)}."""
    import torch

    from whichway.motion.adapter import max_positions, motion_unet
    from whichway.motion.denoise import render_motion
    from whichway.motion.windows import resolve_context
    from whichway.render import conditioning_path

    length, stride = resolve_context(context_length, None, max_positions(source))
    unet = motion_unet(adapter, source)
    latent = adapter.initial_latent(seed, height, width)
    latents = latent.unsqueeze(0).expand(len(times), *latent.shape)
    out = {}
    for name, coupling in (("lerp+motion", "clip"), ("ot+motion", "ot")):
        path, _ = conditioning_path(cond_a, cond_b, times, coupling=coupling)
        frames: dict[int, Tensor] = {}
        render_motion(
            adapter, unet, path, latents, steps=steps, guidance=guidance, height=height,
            width=width, context_length=length, context_stride=stride, negative=negative,
            on_frame=frames.__setitem__, should_stop=should_stop, progress=progress,
        )  # fmt: skip
        out[name] = torch.stack([frames[i] for i in range(len(times))])
    return out


def _attention_rows(
    adapter: Adapter,
    cond_a: Any,
    cond_b: Any,
    times: Tensor,
    attention: Sequence[str],
    guide: Any,
    seed: int,
    aid_settings: dict[str, Any],
    **options: Any,
) -> dict[str, Tensor]:
    """The interior frames (T - 2, 3, H, W) of each attention method on the OT path, the seed's
    latent for every frame; the endpoint rows are the path's own t = 0 and t = 1; ``guide``:
    PAID's encoded guide prompt; ``aid_settings``: warmup_ratio, aid_layers, fused
    (:func:`_aid_settings`)."""
    import torch

    from whichway.attention.batch import AttentionPath, with_guide
    from whichway.attention.methods import settings_for
    from whichway.render import conditioning_path, render_frames

    path, _ = conditioning_path(cond_a, cond_b, times, coupling="ot")
    ends_cond = path.select([0, len(times) - 1])
    inner = path.select(slice(1, len(times) - 1))
    latent = adapter.initial_latent(seed, options["height"], options["width"])
    out = {}
    for m in attention:
        aid = settings_for(
            m,
            fused=aid_settings["fused"],
            warmup_ratio=aid_settings["warmup_ratio"],
            layers=aid_settings["aid_layers"],
        )
        cond = inner
        if m == "paid":
            cond = with_guide(inner, times[1:-1], guide)
        rows = AttentionPath(aid, ends_cond, torch.stack([latent, latent]), times[1:-1])
        out[m] = render_frames(adapter, cond, latent, attention=rows, **options)
    return out


def _aid_settings(
    attention: Sequence[str],
    warmup_ratio: float | None,
    aid_layers: str | None,
    fused: bool | None,
) -> dict[str, Any]:
    """How AID acts in the AID/PAID rows of ``attention`` as MorphSettings fields
    (``warmup_ratio``, ``aid_layers``, ``fused``), the official value where None; any of them
    given without an AID/PAID row is refused (one-line ValueError)."""
    from whichway.attention.methods import aid_fields

    asked = {"warmup_ratio": warmup_ratio, "aid_layers": aid_layers, "fused": fused}
    if not any(m != "diffmorpher" for m in attention) and any(
        v is not None for v in asked.values()
    ):
        named = ", ".join(k for k, v in asked.items() if v is not None)
        raise ValueError(
            f"{named} set(s) how AID acts; add aid-outer, aid-inner or paid to attention"
        )
    if fused is not None and not isinstance(fused, bool):
        raise ValueError(f"fused must be True or False, got {fused!r}")
    return aid_fields(warmup_ratio, aid_layers, fused)


def _check_images(
    attention: Sequence[str],
    image_a: Any,
    image_b: Any,
    diffmorpher: DiffMorpherSettings | None,
) -> tuple[Any, Any] | None:
    """The two images of a ``diffmorpher`` row (None without one), checked before anything
    renders: both given, each a PIL image or a readable image file; images or settings without
    the row are refused."""
    if "diffmorpher" not in attention:
        if image_a is not None or image_b is not None or diffmorpher is not None:
            raise ValueError(
                "image_a, image_b and diffmorpher settings are for the DiffMorpher row; add "
                "'diffmorpher' to attention"
            )
        return None
    if image_a is None or image_b is None:
        raise ValueError(
            "the diffmorpher row morphs between two images: give image_a and image_b (the images "
            "of prompt A and prompt B)"
        )
    from PIL.Image import Image as PILImage

    from whichway.media import load_image

    out = []
    for image in (image_a, image_b):
        if isinstance(image, PILImage):
            out.append(image)
            continue
        load_image(str(image))  # ValueError/OSError naming the file when it is not an image
        out.append(str(image))
    return out[0], out[1]


def _image_file(image: Any, folder: Path) -> str:
    """A path for ``image``: itself when a path; a PIL image saved once as
    ``folder/image-<content hash>.png`` (the same image, the same file, so cached LoRAs and
    inversions keyed by the file are found again)."""
    if not hasattr(image, "tobytes"):
        return str(image)
    import hashlib

    from whichway._files import write_atomic

    rgb = image.convert("RGB")
    digest = hashlib.sha256(repr(rgb.size).encode() + rgb.tobytes()).hexdigest()[:16]
    target = folder / f"image-{digest}.png"
    if not target.is_file():
        write_atomic(target, rgb.save)
    return str(target)


def diffmorpher_morph(
    prompt_a: str,
    prompt_b: str,
    ts: Sequence[float],
    paths: tuple[str, str],
    settings: DiffMorpherSettings,
    seed: int,
    *,
    steps: int,
    guidance: float,
    height: int | None,
    width: int | None,
    negative_prompt: str | None,
    batch_size: int | str | None,
) -> MorphSettings:
    """The :class:`whichway.morph.MorphSettings` a DiffMorpher row renders: the morph of the
    image files ``paths`` (prompt A's, prompt B's) at the times ``ts`` with ``settings``, on the
    OT text path from the official slerp latents (``coupling="ot"``, ``latent="slerp"``,
    ``method="diffmorpher"``). :func:`diffmorpher_row` renders it; its
    :func:`whichway.morph.pending_preparation` is the LoRA fits and inversions still to do."""
    from whichway.morph import MorphSettings

    return MorphSettings(
        prompt_a, prompt_b, tuple(ts), coupling="ot", latent="slerp", seed=seed, steps=steps,
        guidance=guidance, height=height, width=width, negative_prompt=negative_prompt,
        image_a=paths[0], image_b=paths[1], batch_size=batch_size, format=None,
        method="diffmorpher", **asdict(settings),
    )  # fmt: skip


def diffmorpher_row(
    adapter: Adapter,
    prompt_a: str,
    prompt_b: str,
    ts: tuple[float, ...],
    images: tuple[Any, Any],
    settings: DiffMorpherSettings,
    seed: int,
    cache: str | os.PathLike[str] | None,
    *,
    steps: int,
    guidance: float,
    height: int,
    width: int,
    negative_prompt: str | None,
    batch_size: int | str | None,
    progress: bool,
    on_step: Callable[[int, int], None] | None,
    should_stop: Callable[[], bool] | None,
) -> tuple[Tensor, tuple[str | None, str | None]]:
    """The T frames (T, 3, H, W) of the DiffMorpher morph of ``images`` on the OT path: the
    frames :func:`whichway.morph.run_morph` renders for :func:`diffmorpher_morph`'s settings
    (the same :func:`whichway.morph.morph_inputs`),
    rendered under the inversion sampler, the adapter's own restored afterwards; and the image
    files to record (a PIL image's copy in ``cache``; None when that was a temporary folder).

    images : two image files or PIL images, prompt A's and prompt B's (each gets a LoRA fitted
        with its prompt and is inverted under it); ts : the frames' t, 0 and 1 included;
    cache : the folder of the LoRAs and inverted latents (``loras/``, ``latents/``; None: a
        temporary folder). The DiffMorpher row of :func:`compare_couplings` and of the prompt
        study (:mod:`whichway.studies.prompt_study`, between each pair's end frames)."""
    import tempfile

    import torch

    from whichway.morph import morph_inputs, use_inversion_sampler
    from whichway.render import conditioning_path, render_frames

    with contextlib.ExitStack() as stack:
        folder = (
            Path(cache)
            if cache is not None
            else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="whichway-dm-")))
        )
        folder.mkdir(parents=True, exist_ok=True)
        paths = [_image_file(image, folder) for image in images]
        s = diffmorpher_morph(
            prompt_a, prompt_b, ts, (paths[0], paths[1]), settings, seed, steps=steps,
            guidance=guidance, height=height, width=width, negative_prompt=negative_prompt,
            batch_size=batch_size,
        )  # fmt: skip
        cond = adapter.encode([prompt_a, prompt_b])

        def path_at(times: Tensor) -> tuple[Any, Any]:
            return conditioning_path(cond.select(0), cond.select(1), times, coupling="ot")

        restore = use_inversion_sampler(adapter, "the diffmorpher row")
        try:
            _, latents_at, frames_at = morph_inputs(
                adapter, s, height, width, folder, path_at, None, should_stop
            )
            times = torch.tensor(ts, dtype=torch.float64)
            at = frames_at(times)
            frames = render_frames(
                adapter, at.pop("cond"), latents_at(times), steps=steps, guidance=guidance,
                height=height, width=width, batch_size=batch_size,
                negative=adapter.encode_negative(negative_prompt, 1), progress=progress,
                on_step=on_step, should_stop=should_stop, **at,
            )  # fmt: skip
        finally:
            if restore is not None:
                adapter.use_scheduler(restore)
    assert frames is not None
    recorded = tuple(
        p if cache is not None or not hasattr(image, "tobytes") else None
        for p, image in zip(paths, images, strict=True)
    )
    return frames, (recorded[0], recorded[1])


def save_comparison(
    result: CouplingComparison, out_dir: str | os.PathLike[str], adapter: Adapter | None = None
) -> dict[str, Path]:
    """Write ``<method>.png`` (t-labelled strip per row), ``compare.png`` (every row's strip
    one under the other, each frame labelled with its row and t), ``compare.csv`` (one line per
    row: :meth:`CouplingComparison.summary`, empty PPL/smoothness cells without LPIPS) and
    ``compare.json`` (settings and figures) into ``out_dir``; returns method -> strip path."""
    import csv
    import io

    from whichway._files import write_atomic
    from whichway.media import contact_strip, labelled_grid, to_pil
    from whichway.morph import versions, write_json_atomic

    run_dir = Path(out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    strips = {}
    for m, frames in result.frames.items():
        strip = contact_strip([to_pil(f) for f in frames], list(result.t))
        strips[m] = write_atomic(run_dir / f"{m}.png", strip.save)
    rows = [(m, k) for m in result.frames for k in range(len(result.t))]
    sheet = labelled_grid(
        [to_pil(result.frames[m][k]) for m, k in rows],
        [f"{m} t={result.t[k]:.2f}" for m, k in rows],
        columns=len(result.t),
    )
    write_atomic(run_dir / "compare.png", sheet.save)
    summary = result.summary()
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=list(summary[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(summary)
    write_atomic(run_dir / "compare.csv", lambda tmp: tmp.write_text(table.getvalue()))
    info = {
        "command": "compare",
        **({} if adapter is None else adapter.describe()),
        "settings": result.settings,
        "couplings": summary,
        "strips": {m: p.name for m, p in strips.items()},
        "versions": versions(),
        "status": "done",
    }
    write_json_atomic(run_dir / "compare.json", info)
    return strips
