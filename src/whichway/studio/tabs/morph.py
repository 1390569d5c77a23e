"""The Morph tab: one A -> B morph, streamed frame by frame into the page, written to the run
folder exactly as ``whichway morph`` writes it."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gradio import Request  # a handler parameter annotated with it gets the page session

from whichway.attention.methods import (
    BO_EVALUATIONS,
    IMAGE_METHODS,
    METHODS,
)
from whichway.morph import SPACINGS
from whichway.studio.handlers import (
    COUPLINGS,
    FORMATS,
    LATENTS,
    aid_controls,
    diffmorpher_controls,
    generation_controls,
    guarded,
    stream_run,
)
from whichway.studio.session import FIELD_NAMES

if TYPE_CHECKING:  # pragma: no cover
    from whichway.studio.session import Studio


def morph_tab(studio: Studio, cancel: Callable[[], str]) -> Any:
    """Build the tab (inside the page's ``gr.Blocks``); returns the Morph button's event."""
    import gradio as gr

    with gr.Tab("Morph", id="morph", elem_id="ww-tab-morph"):
        with gr.Row():
            m_a = gr.Textbox(label=FIELD_NAMES["prompt_a"], elem_id="ww-morph-a")
            m_b = gr.Textbox(label=FIELD_NAMES["prompt_b"], elem_id="ww-morph-b")
        m_neg = gr.Textbox(label="Negative prompt", elem_id="ww-morph-neg")
        with gr.Row():
            m_coupling = gr.Radio(list(COUPLINGS), value="ot", label="Coupling")
            m_latent = gr.Dropdown(list(LATENTS), value="fixed", label=FIELD_NAMES["latent"])
            m_spacing = gr.Radio(list(SPACINGS), value="uniform", label=FIELD_NAMES["spacing"])
        with gr.Row():
            m_frames = gr.Number(
                value=11, precision=0, label=FIELD_NAMES["frames"], elem_id="ww-morph-frames"
            )
            m_t = gr.Textbox(
                label=f"{FIELD_NAMES['t']} (overrides frames), e.g. 0, 0.25, 0.5, 1",
                elem_id="ww-morph-t",
            )
            m_seed = gr.Number(value=0, precision=0, label="Seed", elem_id="ww-morph-seed")
            m_seed_b = gr.Textbox(
                label="Seed B (latent paths; empty = seed + 1)", elem_id="ww-morph-seed-b"
            )
            m_beta_evaluations = gr.Number(  # shown with the beta-bo spacing, which it sets
                value=BO_EVALUATIONS,
                precision=0,
                label=FIELD_NAMES["beta_evaluations"],
                visible=False,
                elem_id="ww-morph-beta-evaluations",
            )

        def spacing_fields(spacing: str) -> Any:
            """Show the beta-bo search's evaluation budget while that spacing is chosen."""
            return gr.update(visible=spacing == "beta-bo")

        m_spacing.change(
            spacing_fields,
            m_spacing,
            m_beta_evaluations,
            queue=False,
            api_visibility="private",
        )
        with gr.Row():
            m_steps, m_guidance, m_height, m_width = generation_controls("morph")
        with gr.Accordion("Interpolation inside attention (AID / PAID / DiffMorpher)", open=False):
            m_method = gr.Radio(
                [*METHODS, *IMAGE_METHODS],
                value="plain",
                label=FIELD_NAMES["method"],
                elem_id="ww-morph-method",
            )
            # each method's own settings, shown while it is chosen (the handler reads the
            # guide prompt for paid only and the LoRA settings for diffmorpher only)
            with gr.Row(visible=False) as m_aid_row:
                m_warmup, m_layers, m_fused = aid_controls("morph")
            m_guide = gr.Textbox(
                "",
                label=f"{FIELD_NAMES['guide_prompt']} (the middle frames' prompt)",
                visible=False,
                elem_id="ww-morph-guide",
            )
            with gr.Row(visible=False) as m_dm_row:  # needs Image A and Image B; SD and SDXL
                m_rank, m_lora_steps, m_lora_lr, m_lambda = diffmorpher_controls("morph")
        with gr.Accordion("Real images and output", open=False) as m_images:
            with gr.Row():
                m_img_a = gr.Image(
                    type="filepath",
                    label=f"{FIELD_NAMES['image_a']} (optional; DiffMorpher needs both)",
                    sources=["upload"],
                )
                m_img_b = gr.Image(
                    type="filepath",
                    label=f"{FIELD_NAMES['image_b']} (optional)",
                    sources=["upload"],
                )
            with gr.Row():
                m_batch = gr.Number(
                    value=None, precision=0, label="Batch size (0 or empty: auto, as the CLI)"
                )
                m_format = gr.Dropdown(list(FORMATS), value="gif", label="Animation")
                m_fps = gr.Number(value=8, label="fps")
                m_pingpong = gr.Checkbox(label="Ping-pong")

        def method_fields(method: str) -> tuple[Any, ...]:
            """Show the AID row, the guide prompt and the LoRA row of the chosen method; open
            the images for DiffMorpher, which needs both."""
            return (
                gr.update(visible=method in METHODS[1:]),
                gr.update(visible=method == "paid"),
                gr.update(visible=method in IMAGE_METHODS),
                gr.update(open=True) if method in IMAGE_METHODS else gr.update(),
            )

        m_method.change(
            method_fields,
            m_method,
            [m_aid_row, m_guide, m_dm_row, m_images],
            queue=False,
            api_visibility="private",
        )
        with gr.Row():
            m_go = gr.Button("Morph", variant="primary", elem_id="ww-morph-go")
            m_cancel = gr.Button("Cancel", elem_id="ww-morph-cancel")
        m_status = gr.Markdown(elem_id="ww-morph-status")
        m_gallery = gr.Gallery(label="Frames", columns=6, elem_id="ww-morph-gallery")
        m_files = gr.File(
            label="Animation, run.json, strip", file_count="multiple", elem_id="ww-morph-files"
        )

        @guarded
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
            method,
            warmup,
            layers,
            fused,
            guide,
            lora_rank,
            lora_steps,
            lora_lr,
            attn_lambda,
            beta_evaluations,
            request: Request,
            progress=gr.Progress(),  # noqa: B008 (gradio injects it)
        ):
            settings = studio.morph_settings(
                a,
                b,
                negative_prompt=neg,
                coupling=coupling,
                latent=latent,
                spacing=spacing,
                beta_evaluations=beta_evaluations,
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
                method=method,
                warmup_ratio=warmup,
                aid_layers=layers,
                fused=fused,
                guide_prompt=guide,
                lora_rank=lora_rank,
                lora_steps=lora_steps,
                lora_lr=lora_lr,
                attn_lambda=attn_lambda,
            )
            yield [], "Starting…", None
            ts = settings.t
            for gallery, status, files, _video in stream_run(
                studio,
                studio.morph_job(settings),
                len(ts),
                progress,
                lambda k: f"t={ts[k]:.3f}" if k < len(ts) else "",
                request,
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
            m_method,
            m_warmup,
            m_layers,
            m_fused,
            m_guide,
            m_rank,
            m_lora_steps,
            m_lora_lr,
            m_lambda,
            m_beta_evaluations,
        ]
        morph_event = m_go.click(
            morph,
            m_inputs,
            [m_gallery, m_status, m_files],
            api_name="morph",
            concurrency_limit=None,
        )

    m_cancel.click(cancel, None, m_status, api_name="cancel", queue=False)
    return morph_event
