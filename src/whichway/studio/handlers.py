"""What the studio's tabs share: the choices their controls offer, handlers whose errors become a
one-line message in the page (never a traceback), and a morph or travel job streamed into a
gallery, a status line and the files to download as its frames finish."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from whichway.clouds import COUPLING_METHODS
from whichway.media import ANIMATION_FORMATS
from whichway.render import LATENT_METHODS
from whichway.studio.session import user_message

if TYPE_CHECKING:  # pragma: no cover
    from whichway.studio.session import Studio

COUPLINGS = COUPLING_METHODS
LATENTS = LATENT_METHODS
FORMATS = (*ANIMATION_FORMATS, "none")
# Handlers are not limited by Gradio's queue: each checks its request (the studio's limits, the
# disk, the memory) as soon as it arrives and refuses at once, then waits for the studio's one job
# slot (Studio.stream), saying so in the page.


def session_of(request: Any) -> str | None:
    """The page session of a handler's ``gr.Request`` (None without one: a direct call): the
    owner of the jobs it starts, and of the jobs its Cancel stops."""
    return getattr(request, "session_hash", None)


def page_error(exc: BaseException) -> Exception:
    """``exc`` as a ``gr.Error``: its one-line user message, shown until dismissed."""
    import gradio as gr

    return gr.Error(user_message(exc), duration=None)


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn any exception of a handler (a function or a generator) into a one-line page error."""
    import functools
    import inspect

    import gradio as gr

    if inspect.isgeneratorfunction(fn):  # a streaming handler: guard every step

        @functools.wraps(fn)
        def streaming(*args: Any, **kwargs: Any) -> Iterator[Any]:
            try:
                yield from fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as exc:
                raise page_error(exc) from None

        return streaming

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as exc:
            raise page_error(exc) from None

    return wrapper


def frame_items(frames: dict[int, Path], ts: tuple[float, ...]) -> list[tuple[str, str]]:
    """Gallery items (path, caption ``t=...``) of the frames on disk so far."""
    return [(str(frames[k]), f"t={ts[k]:.3f}" if k < len(ts) else f"#{k}") for k in sorted(frames)]


def finished_outputs(result: Any) -> tuple[list[tuple[str, str]], str, list[str], str | None]:
    """(gallery, status, download files, video) of a finished morph or travel run."""
    if hasattr(result, "plan"):  # a travel
        frames = dict(enumerate(result.frames))
        items = [(str(p), f"{k / result.plan.fps:.2f}s") for k, p in frames.items()]
        files = [
            str(p)
            for p in (result.video, result.run_dir / "run.json", result.strip)
            if p is not None
        ]
        status = f"Done: {len(result.frames)} frames in `{result.run_dir.name}` ({result.rendered} rendered now)."
        video = (
            str(result.video)
            if result.video is not None and result.video.suffix == ".mp4"
            else None
        )
        return items, status, files, video
    files = [
        str(p)
        for p in (result.animation, result.run_dir / "run.json", result.strip)
        if p is not None
    ]
    costs = "; ".join(
        f"group {c['group']}: {c['method']} cost {c['cost']:.4g}, W2 path length {c['w2_path_length']:.4g}"
        for c in result.couplings
    )
    status = f"Done: {len(result.frames)} frames in `{result.run_dir.name}` ({result.rendered} rendered now). {costs}"
    return frame_items(dict(enumerate(result.frames)), result.t), status, files, None


def stream_run(
    studio: Studio,
    job: Callable[..., Any],
    n_frames: int | None,
    progress: Any,
    caption: Callable[[int], str],
    request: Any = None,
) -> Iterator[tuple]:
    """Yield (gallery, status, files, video) while a morph or travel job runs; frames appear as
    their batch finishes. ``request`` (the handler's ``gr.Request``): whose Cancel stops it."""
    frames: dict[int, Path] = {}
    for kind, value in studio.stream(job, session_of(request)):
        if kind == "frame":
            k, path = value
            frames[k] = Path(path)
            items = [(str(frames[i]), caption(i)) for i in sorted(frames)]
            of = f" of {n_frames}" if n_frames else ""
            yield items, f"Rendering: {len(frames)}{of} frames done.", None, None
        elif kind == "step":
            done, total = value
            progress((done, total), desc="denoising", unit="steps")
        elif kind == "queued":
            yield [], "Waiting for the running job to finish…", None, None
        elif kind == "error":
            raise page_error(value)
        elif kind == "done":
            yield finished_outputs(value)


def generation_controls(tab: str) -> tuple[Any, Any, Any, Any]:
    """The steps, guidance, height and width fields of a tab, in the current row (element ids
    ``ww-<tab>-steps``, ``-guidance``, ``-h``, ``-w``); 0 height or width = the model's size."""
    import gradio as gr

    return (
        gr.Number(value=30, precision=0, label="Steps", elem_id=f"ww-{tab}-steps"),
        gr.Number(value=7.5, label="Guidance", elem_id=f"ww-{tab}-guidance"),
        gr.Number(value=0, precision=0, label="Height (0 = model default)", elem_id=f"ww-{tab}-h"),
        gr.Number(value=0, precision=0, label="Width (0 = model default)", elem_id=f"ww-{tab}-w"),
    )


def aid_controls(tab: str) -> tuple[Any, Any, Any]:
    """The AID fields of a tab (warmup ratio, AID layers, fused), in the current row, with the
    official defaults (:class:`whichway.attention.methods.AIDSettings`); labels from
    :data:`~whichway.studio.session.FIELD_NAMES`, element ids ``ww-<tab>-warmup``, ``-layers``,
    ``-fused``."""
    import gradio as gr

    from whichway.attention.methods import AID_LAYERS, AIDSettings
    from whichway.studio.session import FIELD_NAMES

    official = AIDSettings()
    return (
        gr.Slider(
            0,
            1,
            value=official.warmup_ratio,
            step=0.05,
            label=FIELD_NAMES["warmup_ratio"],
            elem_id=f"ww-{tab}-warmup",
        ),
        gr.Radio(
            list(AID_LAYERS),
            value=official.layers,
            label=FIELD_NAMES["aid_layers"],
            elem_id=f"ww-{tab}-layers",
        ),
        gr.Checkbox(value=official.fused, label=FIELD_NAMES["fused"], elem_id=f"ww-{tab}-fused"),
    )


def diffmorpher_controls(tab: str) -> tuple[Any, Any, Any, Any]:
    """DiffMorpher's LoRA rank, LoRA steps, learning rate and attention λ fields of a tab, in the
    current row, with the official settings filled in and named in their labels (element ids
    ``ww-<tab>-lora-rank``, ``-lora-steps``, ``-lora-lr``, ``-attn-lambda``)."""
    import gradio as gr

    from whichway.attention.methods import MAX_LORA_STEPS, DiffMorpherSettings
    from whichway.studio.session import FIELD_NAMES

    official = DiffMorpherSettings()
    return (
        gr.Number(
            value=official.lora_rank,
            precision=0,
            label=f"{FIELD_NAMES['lora_rank']} (official {official.lora_rank})",
            elem_id=f"ww-{tab}-lora-rank",
        ),
        gr.Number(
            value=official.lora_steps,
            precision=0,
            label=f"{FIELD_NAMES['lora_steps']} (official {official.lora_steps}, "
            f"at most {MAX_LORA_STEPS:,})",
            elem_id=f"ww-{tab}-lora-steps",
        ),
        gr.Number(
            value=official.lora_lr,
            label=f"{FIELD_NAMES['lora_lr']} (official {official.lora_lr:g})",
            elem_id=f"ww-{tab}-lora-lr",
        ),
        gr.Slider(
            0,
            1,
            value=official.attn_lambda,
            step=0.05,
            label=f"{FIELD_NAMES['attn_lambda']}: K/V mixed for the first λ·steps "
            f"(official {official.attn_lambda:g})",
            elem_id=f"ww-{tab}-attn-lambda",
        ),
    )
