"""The Coupling tab: which token of prompt A travels to which token of prompt B under the OT
coupling, as a plot, a table and each coupling's cost."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from whichway.studio.handlers import guarded

if TYPE_CHECKING:  # pragma: no cover
    from whichway.studio.session import Studio


def _token_table(matching: Any) -> str:
    """HTML table: each token of A, the token of B it travels to, their squared distance."""
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
    """Markdown table of each coupling's cost and how many rows leave the diagonal."""
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


def coupling_tab(studio: Studio) -> None:
    """Build the tab (inside the page's ``gr.Blocks``)."""
    import gradio as gr

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

        @guarded
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
