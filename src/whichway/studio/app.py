"""The studio's page: a ``gr.Blocks`` with the Morph, Travel, Compare, Coupling and Runs tabs.

A thin layer over :class:`whichway.studio.session.Studio`: each handler turns the page's values
into one call of the controller and its result into components. Errors become a one-line
``gr.Error`` in the page (never a traceback) and the app keeps serving.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from whichway.clouds import COUPLING_METHODS
from whichway.media import ANIMATION_FORMATS
from whichway.render import LATENT_METHODS
from whichway.studio.session import Studio, user_message
from whichway.travel import PACINGS, TRAVEL_LATENTS

if TYPE_CHECKING:  # pragma: no cover
    import gradio as gr

logger = logging.getLogger(__name__)

COUPLINGS = COUPLING_METHODS
LATENTS = LATENT_METHODS
FORMATS = (*ANIMATION_FORMATS, "none")
# Handlers are not limited by Gradio's queue: each checks its request (the studio's limits, the
# disk, the memory) as soon as it arrives and refuses at once, then waits for the studio's one job
# slot (Studio.stream), saying so in the page.

CSS = """
#ww-token-table table { border-collapse: collapse; font-size: 0.9em; }
#ww-token-table td, #ww-token-table th { padding: 2px 8px; border-bottom: 1px solid #ddd; }
#ww-token-table tr.moved td { background: #fff0e0; font-weight: 600; }
#ww-token-table tr.padding td { color: #777; font-style: italic; }
"""


def _error(exc: BaseException) -> Exception:
    import gradio as gr

    return gr.Error(user_message(exc), duration=None)


def _guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
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
                raise _error(exc) from None

        return streaming

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as exc:
            raise _error(exc) from None

    return wrapper


def _frame_items(frames: dict[int, Path], ts: tuple[float, ...]) -> list[tuple[str, str]]:
    return [(str(frames[k]), f"t={ts[k]:.3f}" if k < len(ts) else f"#{k}") for k in sorted(frames)]


def _finished(result: Any) -> tuple[list[tuple[str, str]], str, list[str], str | None]:
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
    return _frame_items(dict(enumerate(result.frames)), result.t), status, files, None


def _stream_run(
    studio: Studio,
    job: Callable[..., Any],
    n_frames: int | None,
    progress: Any,
    caption: Callable[[int], str],
) -> Iterator[tuple]:
    """Yield (gallery, status, files, video) while a morph or travel job runs; frames appear as
    their batch finishes."""
    frames: dict[int, Path] = {}
    for kind, value in studio.stream(job):
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
            raise _error(value)
        elif kind == "done":
            yield _finished(value)


def _token_table(matching: Any) -> str:
    rows = []
    for g in matching.groups:
        for r in g.rows:
            cls = "padding" if r.collapsed else ("moved" if r.moved else "")
            a_rows = f"{r.rows_a[0]}..{r.rows_a[-1]}" if r.collapsed else str(r.rows_a[0])
            b_rows = "padding" if r.collapsed else str(r.rows_b[0])
            moved = f"{r.moved} of {len(r.rows_a)}" if r.collapsed else ("moved" if r.moved else "")
            rows.append(
                f"<tr class='{cls}'><td>{g.group}</td><td>{a_rows}</td><td>{html.escape(r.token_a)}</td>"
                f"<td>&rarr;</td><td>{html.escape(r.token_b)}</td><td>{b_rows}</td>"
                f"<td>{r.sq_distance:.4g}</td><td>{moved}</td></tr>"
            )
    head = (
        "<tr><th>group</th><th>A row</th><th>A token</th><th></th><th>B token</th><th>B row</th>"
        "<th>squared distance</th><th>left row order</th></tr>"
    )
    return f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def _cost_table(matching: Any) -> str:
    lines = [
        "| coupling | cost (sum of squared distances) | rows off the diagonal |",
        "|---|---|---|",
    ]
    for m, c in matching.costs.items():
        moved = (
            sum(g.moved for g in matching.groups) if m == "ot" else ("0" if m == "clip" else "-")
        )
        lines.append(f"| {m} | {c:.6g} | {moved} |")
    return "\n".join(lines)


def _compare_table(result: Any, note: str | None) -> str:
    lines = ["| coupling | cost | W2 path length | PPL | smoothness |", "|---|---|---|---|---|"]
    for row in result.summary():
        ppl = "-" if row["ppl"] is None else f"{row['ppl']:.4g}"
        smooth = "-" if row["smoothness"] is None else f"{row['smoothness']:.3f}"
        lines.append(
            f"| {row['coupling']} | {row['cost']:.6g} | {row['w2_path_length']:.6g} | {ppl} | {smooth} |"
        )
    if note:
        lines.append(
            f"\n<details><summary>About PPL and smoothness</summary>\n\n{note}\n</details>"
        )
    return "\n".join(lines)


def _run_choices(studio: Studio) -> list[tuple[str, str]]:
    return [(f"{r.name}  ({r.kind}, {r.status})", r.name) for r in studio.runs()]


def build_app(studio: Studio) -> gr.Blocks:
    """The page for ``studio`` (not launched; see :func:`launch`)."""
    import gradio as gr

    with gr.Blocks(title="whichway studio") as demo:
        gr.Markdown(
            "# whichway studio\nOptimal-transport paths between prompts: which token of A travels to which "
            "token of B. Runs are written to the run folder exactly as `whichway morph` writes them."
        )
        with gr.Row():
            model = gr.Textbox(
                label="Model (hub id or local pipeline folder)",
                value=studio.model_id or "",
                scale=4,
                elem_id="ww-model",
            )
            load = gr.Button("Load", scale=1, elem_id="ww-load")
        model_status = gr.Markdown(
            f"Model: `{studio.loaded_model}`"
            if studio.loaded_model
            else "Model loads on first use.",
            elem_id="ww-model-status",
        )
        gr.Markdown(studio.limits.describe(), elem_id="ww-limits")

        @_guarded
        def load_model(model_id: str) -> str:
            adapter = studio.run_sync(lambda *_: studio.adapter(model_id))  # not under a job
            return f"Model: `{studio.loaded_model}` ({adapter.family}, {adapter.device}, {adapter.dtype})"

        load.click(load_model, model, model_status, api_name="load_model", concurrency_limit=None)

        # --- Morph -----------------------------------------------------------------------------
        with gr.Tab("Morph", id="morph", elem_id="ww-tab-morph"):
            with gr.Row():
                m_a = gr.Textbox(label="Prompt A", elem_id="ww-morph-a")
                m_b = gr.Textbox(label="Prompt B", elem_id="ww-morph-b")
            m_neg = gr.Textbox(label="Negative prompt", elem_id="ww-morph-neg")
            with gr.Row():
                m_coupling = gr.Radio(list(COUPLINGS), value="ot", label="Coupling")
                m_latent = gr.Dropdown(list(LATENTS), value="fixed", label="Latent path")
                m_spacing = gr.Radio(["uniform", "perceptual"], value="uniform", label="Spacing")
            with gr.Row():
                m_frames = gr.Number(
                    value=11, precision=0, label="Frames", elem_id="ww-morph-frames"
                )
                m_t = gr.Textbox(
                    label="Explicit t (overrides frames), e.g. 0, 0.25, 0.5, 1",
                    elem_id="ww-morph-t",
                )
                m_seed = gr.Number(value=0, precision=0, label="Seed", elem_id="ww-morph-seed")
                m_seed_b = gr.Textbox(
                    label="Seed B (latent paths; empty = seed + 1)", elem_id="ww-morph-seed-b"
                )
            with gr.Row():
                m_steps = gr.Number(value=30, precision=0, label="Steps", elem_id="ww-morph-steps")
                m_guidance = gr.Number(value=7.5, label="Guidance", elem_id="ww-morph-guidance")
                m_height = gr.Number(
                    value=0, precision=0, label="Height (0 = model default)", elem_id="ww-morph-h"
                )
                m_width = gr.Number(
                    value=0, precision=0, label="Width (0 = model default)", elem_id="ww-morph-w"
                )
            with gr.Accordion("Real images and output", open=False):
                with gr.Row():
                    m_img_a = gr.Image(
                        type="filepath", label="Image A (optional)", sources=["upload"]
                    )
                    m_img_b = gr.Image(
                        type="filepath", label="Image B (optional)", sources=["upload"]
                    )
                with gr.Row():
                    m_batch = gr.Number(
                        value=None, precision=0, label="Batch size (empty: auto, as the CLI)"
                    )
                    m_format = gr.Dropdown(list(FORMATS), value="gif", label="Animation")
                    m_fps = gr.Number(value=8, label="fps")
                    m_pingpong = gr.Checkbox(label="Ping-pong")
            with gr.Row():
                m_go = gr.Button("Morph", variant="primary", elem_id="ww-morph-go")
                m_cancel = gr.Button("Cancel", elem_id="ww-morph-cancel")
            m_status = gr.Markdown(elem_id="ww-morph-status")
            m_gallery = gr.Gallery(label="Frames", columns=6, elem_id="ww-morph-gallery")
            m_files = gr.File(
                label="Animation, run.json, strip", file_count="multiple", elem_id="ww-morph-files"
            )

            @_guarded
            def morph(
                a,
                b,
                neg,
                coupling,
                latent,
                spacing,
                frames,
                t,
                seed,
                seed_b,
                steps,
                guidance,
                height,
                width,
                img_a,
                img_b,
                batch,
                fmt,
                fps,
                pingpong,
                progress=gr.Progress(),  # noqa: B008 (gradio injects it)
            ):
                settings = studio.morph_settings(
                    a,
                    b,
                    negative_prompt=neg,
                    coupling=coupling,
                    latent=latent,
                    spacing=spacing,
                    frames=frames,
                    t=t,
                    seed=seed,
                    seed_b=seed_b,
                    steps=steps,
                    guidance=guidance,
                    height=height,
                    width=width,
                    image_a=img_a,
                    image_b=img_b,
                    batch_size=batch,
                    format=fmt,
                    fps=fps,
                    pingpong=pingpong,
                )
                yield [], "Starting…", None
                ts = settings.t
                for gallery, status, files, _video in _stream_run(
                    studio,
                    studio.morph_job(settings),
                    len(ts),
                    progress,
                    lambda k: f"t={ts[k]:.3f}" if k < len(ts) else "",
                ):
                    yield gallery, status, files

            m_inputs = [
                m_a,
                m_b,
                m_neg,
                m_coupling,
                m_latent,
                m_spacing,
                m_frames,
                m_t,
                m_seed,
                m_seed_b,
                m_steps,
                m_guidance,
                m_height,
                m_width,
                m_img_a,
                m_img_b,
                m_batch,
                m_format,
                m_fps,
                m_pingpong,
            ]
            morph_event = m_go.click(
                morph,
                m_inputs,
                [m_gallery, m_status, m_files],
                api_name="morph",
                concurrency_limit=None,
            )

        def cancel() -> str:
            studio.cancel()
            return "Cancelling after the current batch; finished frames are kept (run it again to resume)."

        m_cancel.click(cancel, None, m_status, api_name="cancel", queue=False)

        # --- Travel ----------------------------------------------------------------------------
        with gr.Tab("Travel", id="travel", elem_id="ww-tab-travel"):
            gr.Markdown(
                "A journey through the keyframes below: each segment follows the OT path between its prompts and "
                "a COG path between their seeds. Empty seed = the seed below; empty time = spread evenly. With "
                "an audio track the MP4 carries it, and audio pacing moves on its beats."
            )
            v_keys = gr.Dataframe(
                headers=["prompt", "seed", "time (s)"],
                datatype=["str", "number", "number"],
                value=[
                    ["a photo of a cat", 0, None],
                    ["a photo of a dog", 1, None],
                    ["a red fox", 2, None],
                ],
                row_count=(3, "dynamic"),
                column_count=(3, "fixed"),
                type="array",
                interactive=True,
                label="Keyframes",
                elem_id="ww-travel-keys",
            )
            with gr.Row():
                v_audio = gr.Audio(type="filepath", sources=["upload"], label="Audio (optional)")
                with gr.Column():
                    v_pacing = gr.Radio(list(PACINGS), value="uniform", label="Pacing")
                    v_coupling = gr.Radio(list(COUPLINGS), value="ot", label="Coupling")
                    v_latent = gr.Dropdown(list(TRAVEL_LATENTS), value="cog", label="Latent path")
            with gr.Row():
                v_fps = gr.Number(value=24, label="fps", elem_id="ww-travel-fps")
                v_seconds = gr.Number(
                    value=0,
                    label="Seconds (0 = from frames per segment or the last time)",
                    elem_id="ww-travel-seconds",
                )
                v_fps_seg = gr.Number(
                    value=0,
                    precision=0,
                    label="Frames per segment (0 = from seconds)",
                    elem_id="ww-travel-per-segment",
                )
                v_seed = gr.Number(value=0, precision=0, label="Seed", elem_id="ww-travel-seed")
            with gr.Row():
                v_steps = gr.Number(value=30, precision=0, label="Steps", elem_id="ww-travel-steps")
                v_guidance = gr.Number(value=7.5, label="Guidance", elem_id="ww-travel-guidance")
                v_height = gr.Number(
                    value=0, precision=0, label="Height (0 = default)", elem_id="ww-travel-h"
                )
                v_width = gr.Number(
                    value=0, precision=0, label="Width (0 = default)", elem_id="ww-travel-w"
                )
                v_format = gr.Dropdown(list(FORMATS), value="mp4", label="Video")
            v_neg = gr.Textbox(label="Negative prompt")
            with gr.Row():
                v_go = gr.Button("Travel", variant="primary", elem_id="ww-travel-go")
                v_cancel = gr.Button("Cancel", elem_id="ww-travel-cancel")
            v_status = gr.Markdown(elem_id="ww-travel-status")
            v_video = gr.Video(label="Video", elem_id="ww-travel-video")
            v_gallery = gr.Gallery(label="Frames", columns=8, elem_id="ww-travel-gallery")
            v_files = gr.File(
                label="Video, run.json, strip", file_count="multiple", elem_id="ww-travel-files"
            )

            @_guarded
            def travel(
                keys,
                audio,
                pacing,
                coupling,
                latent,
                fps,
                seconds,
                per_segment,
                seed,
                steps,
                guidance,
                height,
                width,
                fmt,
                neg,
                progress=gr.Progress(),  # noqa: B008 (gradio injects it)
            ):
                settings, prepared = studio.travel_settings(
                    keys,
                    audio=audio,
                    fps=fps,
                    seconds=seconds,
                    frames_per_segment=per_segment,
                    pacing=pacing,
                    coupling=coupling,
                    latent=latent,
                    seed=seed,
                    steps=steps,
                    guidance=guidance,
                    height=height,
                    width=width,
                    negative_prompt=neg,
                    format=fmt,
                )
                yield [], "Starting…", None, None
                rate = settings.fps
                yield from _stream_run(
                    studio,
                    studio.travel_job(settings, prepared=prepared),
                    None,
                    progress,
                    lambda k: f"{k / rate:.2f}s",
                )

            travel_event = v_go.click(
                travel,
                [
                    v_keys,
                    v_audio,
                    v_pacing,
                    v_coupling,
                    v_latent,
                    v_fps,
                    v_seconds,
                    v_fps_seg,
                    v_seed,
                    v_steps,
                    v_guidance,
                    v_height,
                    v_width,
                    v_format,
                    v_neg,
                ],
                [v_gallery, v_status, v_files, v_video],
                api_name="travel",
                concurrency_limit=None,
            )
            v_cancel.click(cancel, None, v_status, api_visibility="private", queue=False)

        # --- Compare ---------------------------------------------------------------------------
        with gr.Tab("Compare", id="compare", elem_id="ww-tab-compare"):
            gr.Markdown(
                "One pair rendered with the **ot**, **clip** and **random** couplings from the same seed; the "
                "end frames (t = 0 and t = 1) are rendered once and shared."
            )
            with gr.Row():
                c_a = gr.Textbox(label="Prompt A", elem_id="ww-compare-a")
                c_b = gr.Textbox(label="Prompt B", elem_id="ww-compare-b")
            c_neg = gr.Textbox(label="Negative prompt")
            with gr.Row():
                c_frames = gr.Number(
                    value=5, precision=0, label="Frames", elem_id="ww-compare-frames"
                )
                c_t = gr.Textbox(label="Explicit t (overrides frames)", elem_id="ww-compare-t")
                c_seed = gr.Number(value=0, precision=0, label="Seed", elem_id="ww-compare-seed")
            with gr.Row():
                c_steps = gr.Number(
                    value=30, precision=0, label="Steps", elem_id="ww-compare-steps"
                )
                c_guidance = gr.Number(value=7.5, label="Guidance", elem_id="ww-compare-guidance")
                c_height = gr.Number(
                    value=0, precision=0, label="Height (0 = default)", elem_id="ww-compare-h"
                )
                c_width = gr.Number(
                    value=0, precision=0, label="Width (0 = default)", elem_id="ww-compare-w"
                )
            c_go = gr.Button("Compare", variant="primary", elem_id="ww-compare-go")
            c_table = gr.Markdown(elem_id="ww-compare-table")
            c_strips = [
                gr.Image(label=f"{m} coupling", type="filepath", elem_id=f"ww-compare-{m}")
                for m in COUPLINGS
            ]

            @_guarded
            def compare(
                a,
                b,
                neg,
                frames,
                t,
                seed,
                steps,
                guidance,
                height,
                width,
                progress=gr.Progress(),  # noqa: B008
            ):
                job = studio.compare_job(
                    a,
                    b,
                    t=t,
                    frames=frames,
                    seed=seed,
                    steps=steps,
                    guidance=guidance,
                    height=height,
                    width=width,
                    negative_prompt=neg,
                )
                for kind, value in studio.stream(job):
                    if kind == "step":
                        progress(value, desc="denoising", unit="steps")
                    elif kind == "error":
                        raise _error(value)
                    elif kind == "done":
                        result, target, strips, note = value
                        table = f"{_compare_table(result, note)}\n\nSaved in `{target.name}`."
                        return (table, *[str(strips[m]) for m in COUPLINGS])
                raise gr.Error("the comparison ended without a result")  # pragma: no cover

            compare_event = c_go.click(
                compare,
                [c_a, c_b, c_neg, c_frames, c_t, c_seed, c_steps, c_guidance, c_height, c_width],
                [c_table, *c_strips],
                api_name="compare",
                concurrency_limit=None,
            )

        # --- Coupling --------------------------------------------------------------------------
        with gr.Tab("Coupling", id="coupling", elem_id="ww-tab-coupling"):
            gr.Markdown(
                "The OT coupling pairs each token of A with one token of B so that the summed squared distance "
                "is smallest. Orange rows/lines left row order (the usual row-by-row interpolation would pair "
                "them differently); padding rows that pair with padding are collapsed into one row."
            )
            with gr.Row():
                k_a = gr.Textbox(label="Prompt A", elem_id="ww-coupling-a")
                k_b = gr.Textbox(label="Prompt B", elem_id="ww-coupling-b")
                k_seed = gr.Number(value=0, precision=0, label="Seed (random coupling)")
            k_go = gr.Button("Match tokens", variant="primary", elem_id="ww-coupling-go")
            k_costs = gr.Markdown(elem_id="ww-coupling-costs")
            k_plot = gr.Plot(label="Token matching", elem_id="ww-coupling-plot")
            k_table = gr.HTML(elem_id="ww-token-table")

            @_guarded
            def coupling(a: str, b: str, seed: Any) -> tuple[str, Any, str]:
                from whichway.matching import matching_figure

                matching = studio.token_matching(a, b, seed)  # waits for the job slot
                return _cost_table(matching), matching_figure(matching), _token_table(matching)

            k_go.click(
                coupling,
                [k_a, k_b, k_seed],
                [k_costs, k_plot, k_table],
                api_name="coupling",
                concurrency_limit=None,
            )

        # --- Runs ------------------------------------------------------------------------------
        with gr.Tab("Runs", id="runs", elem_id="ww-tab-runs"):
            gr.Markdown(f"Run folders under `{studio.out_dir}`, newest first.")
            with gr.Row():
                r_pick = gr.Dropdown(
                    choices=_run_choices(studio),
                    label="Run",
                    scale=4,
                    allow_custom_value=True,
                    elem_id="ww-runs-pick",
                )
                r_refresh = gr.Button("Refresh", scale=1, elem_id="ww-runs-refresh")
                r_resume = gr.Button("Resume", scale=1, elem_id="ww-runs-resume")
            r_status = gr.Markdown(elem_id="ww-runs-status")
            r_strip = gr.Image(label="Strip", type="filepath", elem_id="ww-runs-strip")
            with gr.Row():
                r_anim = gr.Image(label="Animation", type="filepath", elem_id="ww-runs-anim")
                r_video = gr.Video(label="Animation", visible=False, elem_id="ww-runs-video")
            r_settings = gr.JSON(label="Settings (run.json)", elem_id="ww-runs-settings")

            def refresh() -> Any:
                return gr.Dropdown(choices=_run_choices(studio))

            @_guarded
            def open_run(name: str | None) -> tuple:
                if not name:
                    return "", None, None, gr.Video(value=None, visible=False), None
                run = studio.open_run(name)
                strip = run.file("strip")
                if strip is None and run.kind == "compare":
                    strip = next((run.path / s for s in run.info.get("strips", {}).values()), None)
                anim = run.file("animation") or run.file("video")
                is_video = anim is not None and anim.suffix == ".mp4"
                status = (
                    f"`{run.name}`: {run.kind}, {run.status}, {len(run.frames)} frames on disk."
                )
                return (
                    status,
                    None if strip is None else str(strip),
                    None if anim is None or is_video else str(anim),
                    gr.Video(value=str(anim) if is_video else None, visible=is_video),
                    run.info,
                )

            r_refresh.click(refresh, None, r_pick, api_name="runs")
            r_pick.change(
                open_run,
                r_pick,
                [r_status, r_strip, r_anim, r_video, r_settings],
                api_name="open_run",
            )

            @_guarded
            def resume(name: str | None, progress=gr.Progress()):  # noqa: B008
                if not name:
                    raise ValueError("pick a run to resume")
                job = studio.resume_job(name)
                n = len(studio.open_run(name).info.get("frames", [])) or None
                for _gallery, status, _files, _video in _stream_run(
                    studio, job, n, progress, lambda k: ""
                ):
                    yield status

            r_resume.click(
                resume, r_pick, r_status, api_name="resume", concurrency_limit=None
            ).then(refresh, None, r_pick, api_visibility="private")

        demo.load(
            refresh, None, r_pick, api_visibility="private"
        )  # the runs as they are when the page opens
        morph_event.then(refresh, None, r_pick, api_visibility="private")
        travel_event.then(refresh, None, r_pick, api_visibility="private")
        compare_event.then(refresh, None, r_pick, api_visibility="private")
    return demo


def launch(
    studio: Studio,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    share: bool = False,
    block: bool = True,
    quiet: bool = False,
) -> gr.Blocks:
    """Build and serve the page. Only the run folder (and Gradio's own upload folder) is served."""
    import os

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # a local tool does not phone home
    studio.out_dir.mkdir(parents=True, exist_ok=True)
    demo = build_app(studio)
    demo.queue(default_concurrency_limit=1)
    demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        allowed_paths=[str(studio.out_dir)],
        prevent_thread_lock=not block,
        quiet=quiet,
        ssr_mode=False,
        css=CSS,
        inbrowser=False,
    )
    return demo
