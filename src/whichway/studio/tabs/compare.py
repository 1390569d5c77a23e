"""The Compare tab: one pair rendered with the ot, clip and random couplings from the same seed,
and optionally AID / PAID / DiffMorpher (between two uploaded images) on the OT path, with each
row's cost, W2 path length, PPL and smoothness."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gradio import Request  # a handler parameter annotated with it gets the page session

from whichway.attention.methods import IMAGE_METHODS, METHODS
from whichway.studio.handlers import (
    COUPLINGS,
    aid_controls,
    diffmorpher_controls,
    generation_controls,
    guarded,
    page_error,
    session_of,
)
from whichway.studio.session import FIELD_NAMES

if TYPE_CHECKING:  # pragma: no cover
    from whichway.studio.session import Studio

ATTENTION_METHODS = (*(m for m in METHODS if m != "plain"), *IMAGE_METHODS)
"""Attention methods the tab can add beside the couplings (diffmorpher: with the two images)."""
MOTION_ROWS = ("lerp+motion", "ot+motion")
"""The rows a motion adapter adds: the lerp and the OT path, each denoised as one video."""
STRIPS = (*COUPLINGS, *ATTENTION_METHODS, *MOTION_ROWS)


def _compare_table(result: Any, note: str | None) -> str:
    """Markdown table of the comparison's summary, one row per coupling or method."""
    lines = [
        "| row | cost | W2 path length | PPL | smoothness | mean / max step (flicker) |",
        "|---|---|---|---|---|---|",
    ]
    for row in result.summary():
        ppl = "-" if row["ppl"] is None else f"{row['ppl']:.4g}"
        smooth = "-" if row["smoothness"] is None else f"{row['smoothness']:.3f}"
        steps = (
            "-" if row["mean_step"] is None else f"{row['mean_step']:.4g} / {row['max_step']:.4g}"
        )
        lines.append(
            f"| {row['coupling']} | {row['cost']:.6g} | {row['w2_path_length']:.6g} | {ppl} | "
            f"{smooth} | {steps} |"
        )
    if note:
        lines.append(
            f"\n<details><summary>About PPL and smoothness</summary>\n\n{note}\n</details>"
        )
    return "\n".join(lines)


def compare_tab(studio: Studio) -> Any:
    """Build the tab (inside the page's ``gr.Blocks``); returns the Compare button's event."""
    import gradio as gr

    with gr.Tab("Compare", id="compare", elem_id="ww-tab-compare"):
        gr.Markdown(
            "One pair rendered with the **ot**, **clip** and **random** couplings from the same seed; the "
            "end frames (t = 0 and t = 1) are rendered once and shared. **diffmorpher** morphs "
            "between Image A and Image B (its end frames are the images' reconstructions)."
        )
        with gr.Row():
            c_a = gr.Textbox(label="Prompt A", elem_id="ww-compare-a")
            c_b = gr.Textbox(label="Prompt B", elem_id="ww-compare-b")
        c_neg = gr.Textbox(label="Negative prompt")
        with gr.Row():
            c_frames = gr.Number(value=5, precision=0, label="Frames", elem_id="ww-compare-frames")
            c_t = gr.Textbox(label="Explicit t (overrides frames)", elem_id="ww-compare-t")
            c_seed = gr.Number(value=0, precision=0, label="Seed", elem_id="ww-compare-seed")
        with gr.Row():
            c_steps, c_guidance, c_height, c_width = generation_controls("compare")
        with gr.Row():
            c_attention = gr.CheckboxGroup(
                list(ATTENTION_METHODS),
                value=[],
                label=f"{FIELD_NAMES['methods']}: also interpolate inside attention (AID / PAID / "
                "DiffMorpher, on the OT path)",
                elem_id="ww-compare-attention",
            )
            c_guide = gr.Textbox("", label=FIELD_NAMES["guide_prompt"], elem_id="ww-compare-guide")
        # how AID acts in every AID/PAID row (shown while one is ticked)
        with gr.Row(visible=False) as c_aid_row:
            c_warmup, c_layers, c_fused = aid_controls("compare")
        # diffmorpher morphs between two images, with its LoRA fields (shown while it is ticked)
        with gr.Row():
            c_img_a = gr.Image(
                type="filepath",
                label=f"{FIELD_NAMES['image_a']} (DiffMorpher only)",
                sources=["upload"],
                elem_id="ww-compare-image-a",
            )
            c_img_b = gr.Image(
                type="filepath",
                label=f"{FIELD_NAMES['image_b']} (DiffMorpher only)",
                sources=["upload"],
                elem_id="ww-compare-image-b",
            )
        with gr.Row(visible=False) as c_dm_row:
            c_rank, c_lora_steps, c_lora_lr, c_lambda = diffmorpher_controls("compare")
        c_attention.change(
            lambda ticked: (
                gr.update(visible=any(m in METHODS[1:] for m in ticked or ())),
                gr.update(visible="diffmorpher" in (ticked or ())),
            ),
            c_attention,
            [c_aid_row, c_dm_row],
            queue=False,
            api_visibility="private",
        )
        c_motion = gr.Textbox(
            "",
            label="Motion adapter (optional): also the lerp and OT paths as motion videos",
            placeholder="a MotionAdapter folder or hub id (SD 1.x and SDXL models)",
            elem_id="ww-compare-motion",
        )
        c_go = gr.Button("Compare", variant="primary", elem_id="ww-compare-go")
        c_table = gr.Markdown(elem_id="ww-compare-table")
        c_strips = (
            [
                gr.Image(label=f"{m} coupling", type="filepath", elem_id=f"ww-compare-{m}")
                for m in COUPLINGS
            ]
            + [
                gr.Image(
                    label=f"{m} (OT path{', its own end frames' if m in IMAGE_METHODS else ''})",
                    type="filepath",
                    elem_id=f"ww-compare-{m}",
                )
                for m in ATTENTION_METHODS
            ]
            + [
                gr.Image(label=m, type="filepath", elem_id=f"ww-compare-{m.replace('+', '-')}")
                for m in MOTION_ROWS
            ]
        )

        @guarded
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
            attention,
            guide,
            motion="",
            img_a=None,
            img_b=None,
            lora_rank=16,
            lora_steps=200,
            lora_lr=2e-4,
            attn_lambda=0.6,
            warmup=0.5,
            layers="both",
            fused=True,
            request: Request = None,
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
                attention=attention,
                guide_prompt=guide,
                warmup_ratio=warmup,
                aid_layers=layers,
                fused=fused,
                motion=motion,
                image_a=img_a,
                image_b=img_b,
                lora_rank=lora_rank,
                lora_steps=lora_steps,
                lora_lr=lora_lr,
                attn_lambda=attn_lambda,
            )
            for kind, value in studio.stream(job, session_of(request)):
                if kind == "step":
                    progress(value, desc="denoising", unit="steps")
                elif kind == "error":
                    raise page_error(value)
                elif kind == "done":
                    result, target, strips, note = value
                    table = f"{_compare_table(result, note)}\n\nSaved in `{target.name}`."
                    shown = [str(strips[m]) if m in strips else None for m in STRIPS]
                    return (table, *shown)
            raise gr.Error("the comparison ended without a result")  # pragma: no cover

        compare_event = c_go.click(
            compare,
            [c_a, c_b, c_neg, c_frames, c_t, c_seed, c_steps, c_guidance, c_height, c_width]
            + [c_attention, c_guide, c_motion, c_img_a, c_img_b]
            + [c_rank, c_lora_steps, c_lora_lr, c_lambda, c_warmup, c_layers, c_fused],
            [c_table, *c_strips],
            api_name="compare",
            concurrency_limit=None,
        )
    return compare_event
