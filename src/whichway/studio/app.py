"""The studio's page: a ``gr.Blocks`` with the Morph, Travel, Compare, Coupling and Runs tabs.

A thin layer over :class:`whichway.studio.session.Studio`: each handler turns the page's values
into one call of the controller and its result into components. Errors become a one-line
``gr.Error`` in the page (never a traceback) and the app keeps serving.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from gradio import Request  # a handler parameter annotated with it gets the page session

from whichway.studio.handlers import guarded, session_of
from whichway.studio.session import Studio

if TYPE_CHECKING:  # pragma: no cover
    import gradio as gr

logger = logging.getLogger(__name__)

CSS = """
#ww-token-table table { border-collapse: collapse; font-size: 0.9em; }
#ww-token-table td, #ww-token-table th { padding: 2px 8px; border-bottom: 1px solid #ddd; }
#ww-token-table tr.moved td { background: #fff0e0; font-weight: 600; }
#ww-token-table tr.padding td { color: #777; font-style: italic; }
"""


def build_app(studio: Studio) -> gr.Blocks:
    """The page for ``studio`` (not launched; see :func:`launch`)."""
    import gradio as gr

    from whichway.studio.tabs.compare import compare_tab
    from whichway.studio.tabs.coupling import coupling_tab
    from whichway.studio.tabs.morph import morph_tab
    from whichway.studio.tabs.runs import runs_tab
    from whichway.studio.tabs.travel import travel_tab

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

        @guarded
        def load_model(model_id: str) -> str:
            adapter = studio.run_sync(lambda *_: studio.adapter(model_id))  # not under a job
            return f"Model: `{studio.loaded_model}` ({adapter.family}, {adapter.device}, {adapter.dtype})"

        load.click(load_model, model, model_status, api_name="load_model", concurrency_limit=None)

        def cancel(request: Request) -> str:
            studio.cancel(session_of(request))  # this page's jobs, running or waiting
            return "Cancelling after the current batch; finished frames are kept (run it again to resume)."

        rendering = [morph_tab(studio, cancel), travel_tab(studio, cancel), compare_tab(studio)]
        coupling_tab(studio)
        r_pick, refresh = runs_tab(studio)
        # the runs as they are when the page opens, and after every run
        demo.load(refresh, None, r_pick, api_visibility="private")
        for event in rendering:
            event.then(refresh, None, r_pick, api_visibility="private")
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
