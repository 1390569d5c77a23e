"""The Travel tab: a journey through a table of keyframes, with an optional audio track, written to
the run folder exactly as ``whichway travel`` writes it."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gradio import Request  # a handler parameter annotated with it gets the page session

from whichway.studio.handlers import (
    COUPLINGS,
    FORMATS,
    generation_controls,
    guarded,
    stream_run,
)
from whichway.travel import PACINGS, TRAVEL_LATENTS

if TYPE_CHECKING:  # pragma: no cover
    from whichway.studio.session import Studio


def travel_tab(studio: Studio, cancel: Callable[[], str]) -> Any:
    """Build the tab (inside the page's ``gr.Blocks``); returns the Travel button's event."""
    import gradio as gr

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
            v_steps, v_guidance, v_height, v_width = generation_controls("travel")
            v_format = gr.Dropdown(list(FORMATS), value="mp4", label="Video")
        v_neg = gr.Textbox(label="Negative prompt")
        v_motion = gr.Textbox(
            value="",
            label="Motion adapter (optional: a MotionAdapter folder or hub id; SD 1.x and SDXL models)",
            placeholder="guoyww/animatediff-motion-adapter-v1-5-2",
            elem_id="ww-travel-motion",
        )
        with gr.Row():
            v_go = gr.Button("Travel", variant="primary", elem_id="ww-travel-go")
            v_cancel = gr.Button("Cancel", elem_id="ww-travel-cancel")
        v_status = gr.Markdown(elem_id="ww-travel-status")
        v_video = gr.Video(label="Video", elem_id="ww-travel-video")
        v_gallery = gr.Gallery(label="Frames", columns=8, elem_id="ww-travel-gallery")
        v_files = gr.File(
            label="Video, run.json, strip", file_count="multiple", elem_id="ww-travel-files"
        )

        @guarded
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
            motion="",
            request: Request = None,
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
                motion=motion,
            )
            yield [], "Starting…", None, None
            rate = settings.fps
            yield from stream_run(
                studio,
                studio.travel_job(settings, prepared=prepared),
                None,
                progress,
                lambda k: f"{k / rate:.2f}s",
                request,
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
                v_motion,
            ],
            [v_gallery, v_status, v_files, v_video],
            api_name="travel",
            concurrency_limit=None,
        )
        v_cancel.click(cancel, None, v_status, api_visibility="private", queue=False)
    return travel_event
