"""The Runs tab: the run folders under the studio's output folder, each with its strip, animation
and settings, and resuming an unfinished one."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gradio import Request  # a handler parameter annotated with it gets the page session

from whichway.studio.handlers import guarded, stream_run

if TYPE_CHECKING:  # pragma: no cover
    from whichway.studio.session import Studio


def _run_choices(studio: Studio) -> list[tuple[str, str]]:
    """Dropdown choices (label, run name) of the run folders, newest first."""
    return [(f"{r.name}  ({r.kind}, {r.status})", r.name) for r in studio.runs()]


def runs_tab(studio: Studio) -> tuple[Any, Callable[[], Any]]:
    """Build the tab (inside the page's ``gr.Blocks``); returns the run picker and the function that
    refreshes its choices (the other tabs' events end with it)."""
    import gradio as gr

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

        @guarded
        def open_run(name: str | None) -> tuple:
            if not name:
                return "", None, None, gr.Video(value=None, visible=False), None
            run = studio.open_run(name)
            strip = run.file("strip")
            if strip is None and run.kind == "compare":
                strip = next((run.path / s for s in run.info.get("strips", {}).values()), None)
            anim = run.file("animation") or run.file("video")
            is_video = anim is not None and anim.suffix == ".mp4"
            status = f"`{run.name}`: {run.kind}, {run.status}, {len(run.frames)} frames on disk."
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

        @guarded
        def resume(name: str | None, request: Request, progress=gr.Progress()):  # noqa: B008
            if not name:
                raise ValueError("pick a run to resume")
            job = studio.resume_job(name)
            n = len(studio.open_run(name).info.get("frames", [])) or None
            for _gallery, status, _files, _video in stream_run(
                studio, job, n, progress, lambda k: "", request
            ):
                yield status

        r_resume.click(resume, r_pick, r_status, api_name="resume", concurrency_limit=None).then(
            refresh, None, r_pick, api_visibility="private"
        )
    return r_pick, refresh
