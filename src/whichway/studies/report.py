"""Markdown reports with CSV tables and PNG figures for both studies.

Prompt study (``RUN_DIR/report/``):

* ``summary.csv`` -- per similarity group and coupling: n, mean / median / std of PPL, coupling
  cost, W2 path length, smoothness; and the same pooled over groups ("all").
* ``significance.csv`` -- paired one-sided Wilcoxon signed-rank tests, OT < CLIP and OT < random,
  per group and overall, for PPL and coupling cost, with stars at 0.05 / 0.01 / 0.001 (paper A's
  significance table); OT < each ``study.methods`` row (AID, PAID, DiffMorpher) on PPL.
* ``ppl_by_group.png`` / ``cost_by_group.png`` -- box plots by group and coupling (paper A's
  Figure 3); ``examples.png`` -- the three couplings' strips of a few pairs (Figure 2).
* ``report.md`` -- all of it in one page.

Latent study: ``interpolation.csv`` and ``centroids.csv`` in paper B's Table 1/2 layout (method,
accuracy, FID at each feature size, time per path or centroid) and example image rows.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from whichway.studies.store import ResultStore

log = logging.getLogger(__name__)

REPORT_DIR = "report"
PROMPT_METRICS: tuple[str, ...] = ("ppl", "coupling_cost", "w2_path_length", "smoothness")
COUPLING_ORDER: tuple[str, ...] = ("ot", "clip", "random")
METHOD_ORDER: tuple[str, ...] = ("aid-outer", "aid-inner", "paid", "diffmorpher")
"""``study.methods`` rows, after the couplings in tables and figures."""
COUPLING_COLORS: dict[str, str] = {
    "ot": "#1b9e77",
    "clip": "#d95f02",
    "random": "#7570b3",
    "aid-outer": "#e7298a",
    "aid-inner": "#66a61e",
    "paid": "#e6ab02",
    "diffmorpher": "#a6761d",
}


def row_order(names: Any) -> list[str]:
    """The couplings, then the attention methods, then anything else (sorted) among ``names``."""
    have = set(names)
    known = [c for c in (*COUPLING_ORDER, *METHOD_ORDER) if c in have]
    return known + sorted(have - set(known))


def _read(run_dir: Path, study: str) -> tuple[Any, dict[str, Any], list[str]]:
    """(readable rows, manifest, lines to put at the top of report.md).

    Damaged results files (see :mod:`whichway.studies.store`) are left out with one warning each
    and named in the report; with nothing readable the report is refused with the ``verify`` hint.
    """
    store = ResultStore(run_dir, lock=False)
    manifest = store.read_manifest()
    if manifest.get("study") != study:
        raise ValueError(
            f"{str(run_dir)!r} holds a {manifest.get('study')!r} study, not a {study!r} study"
        )
    df = store.read()
    damaged = store.damaged
    names = ", ".join(f"results/{d.name}" for d in damaged)
    if df.empty and damaged:
        raise ValueError(
            f"{str(run_dir)!r} has no readable results: {len(damaged)} damaged results file(s) ({names}); "
            f"see `whichway study {study} verify {run_dir}`, then run the study again to set them aside and "
            "compute their units again"
        )
    if df.empty:
        raise ValueError(f"{str(run_dir)!r} has no recorded results yet; run the study first")
    note: list[str] = []
    if damaged:
        units = df["unit_id"].nunique()
        of = f" of {manifest['units']}" if isinstance(manifest.get("units"), int) else ""
        log.warning(
            "the report covers the readable results only (%d%s units); damaged: %s",
            units,
            of,
            names,
        )
        note = [
            (
                f"> **Partial report:** {len(damaged)} damaged results file(s) left out ({names}); it covers "
                f"{units}{of} units. Run `whichway study {study} verify {run_dir}` for details; running the "
                "study again sets the damaged files aside and computes their units again."
            ),
            "",
        ]
    return df, manifest, note


def _md_table(df: Any, floatfmt: str = ".4g") -> str:
    """A Markdown table of a DataFrame (no extra dependency)."""
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        cells = []
        for v in row:
            if isinstance(v, float):
                cells.append(format(v, floatfmt))
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def prompt_summary(df: Any, metrics: Sequence[str] = PROMPT_METRICS) -> Any:
    """Mean / median / std of each metric per (group, coupling), plus pooled rows (group "all")."""
    import pandas as pd

    parts = []
    for key, sub in [(g, s) for g, s in df.groupby("group", sort=True)] + [("all", df)]:
        agg = sub.groupby("coupling")[list(metrics)].agg(["mean", "median", "std"])
        agg.columns = [f"{m}_{s}" for m, s in agg.columns]
        agg.insert(0, "n", sub.groupby("coupling").size())
        agg.insert(0, "group", key)
        parts.append(agg.reset_index())
    out = pd.concat(parts, ignore_index=True)
    order = {c: i for i, c in enumerate((*COUPLING_ORDER, *METHOD_ORDER))}
    out["_o"] = out["coupling"].map(lambda c: order.get(c, 99))
    out["_g"] = out["group"].map(lambda g: 1e9 if g == "all" else float(g))
    return out.sort_values(["_g", "_o"]).drop(columns=["_o", "_g"]).reset_index(drop=True)


def _box_plot(df: Any, metric: str, ylabel: str, path: Path, sig: Any = None) -> None:
    """Box plots of ``metric`` by group (x) and coupling (colour), paper A's Figure 3."""
    plt = _plt()
    groups = sorted(df["group"].unique())
    couplings = row_order(df["coupling"])
    width = 0.8 / max(1, len(couplings))
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(groups) + 2), 4.2))
    for j, c in enumerate(couplings):
        data = [
            df[(df.group == g) & (df.coupling == c)][metric].dropna().to_numpy() for g in groups
        ]
        pos = [i + (j - (len(couplings) - 1) / 2) * width for i in range(len(groups))]
        bp = ax.boxplot(
            data,
            positions=pos,
            widths=width * 0.9,
            patch_artist=True,
            showfliers=False,
            manage_ticks=False,
        )
        for box in bp["boxes"]:
            box.set_facecolor(COUPLING_COLORS.get(c, "#999999"))
            box.set_alpha(0.75)
        ax.plot(
            [],
            [],
            color=COUPLING_COLORS.get(c, "#999999"),
            lw=8,
            label=c.upper() if c in ("ot", "clip") else c,
        )
    if sig is not None and not sig.empty:
        top = ax.get_ylim()[1]
        for i, g in enumerate(groups):
            marks = sig[(sig.group == g)]["stars"].tolist()
            label = "/".join(m or "ns" for m in marks)
            ax.text(i, top, label, ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([f"{g:g}" for g in groups])
    ax.set_xlabel("similarity group (upper edge)")
    ax.set_ylabel(ylabel)
    ax.legend(
        frameon=False, fontsize=8, ncol=len(couplings), loc="upper left", bbox_to_anchor=(0, -0.15)
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _examples_figure(run_dir: Path, df: Any, path: Path, max_pairs: int = 4) -> list[str]:
    """Stack the saved strips of a few pairs (one row per coupling), paper A's Figure 2."""
    from PIL import Image

    have = df[df["strip"].astype(str) != ""] if "strip" in df.columns else df.iloc[0:0]
    pairs = list(dict.fromkeys(have["pair_id"]))[:max_pairs]
    if not pairs:
        return []
    plt = _plt()
    rows = []
    for pid in pairs:
        for c in row_order(have.coupling):
            sel = have[(have.pair_id == pid) & (have.coupling == c)]
            if len(sel) and (run_dir / sel.strip.iloc[0]).is_file():
                rows.append((pid, c, sel.iloc[0]))
    if not rows:
        return []
    import textwrap

    fig, axes = plt.subplots(len(rows), 1, figsize=(10, 1.5 * len(rows) + 0.4), squeeze=False)
    for ax, (_pid, c, row) in zip(axes[:, 0], rows):
        with Image.open(run_dir / row.strip) as img:
            ax.imshow(img.convert("RGB"))
        ax.set_axis_off()
        ax.set_anchor("W")  # strips flush left, under their captions
        title = (
            f'{c}: "{row.prompt_a}" -> "{row.prompt_b}" (sim {row.similarity:g}, PPL {row.ppl:.3g})'
        )
        ax.set_title("\n".join(textwrap.wrap(title, 140)), fontsize=7, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return pairs


def _method_notes(methods: Sequence[str], cfg: dict[str, Any]) -> list[str]:
    """How each ``study.methods`` row was made (report.md lines)."""
    notes = []
    if "paid" in methods:
        guide = cfg.get("study", {}).get("guide_prompt") or "the pairs file's guide column"
        notes.append(f"- paid: AID whose middle frames follow the guide prompt ({guide})")
    if "diffmorpher" in methods:
        dm = cfg.get("diffmorpher", {})
        notes.append(
            "- diffmorpher: between the pair's two end frames (8-bit images), a LoRA per image "
            f"(rank {dm.get('lora_rank')}, {dm.get('lora_steps')} steps at {dm.get('lora_lr')}), "
            f"each inverted under its own, λ {dm.get('attn_lambda')}, guidance "
            f"{dm.get('guidance')}; its end frames are the images' reconstructions"
        )
    return notes


def prompt_report(run_dir: str | Path) -> Path:
    """Write the prompt study's report into ``RUN_DIR/report``; returns the ``report.md`` path."""
    import pandas as pd

    from whichway.studies.stats import significance_table

    run_dir = Path(run_dir)
    df, manifest, note = _read(run_dir, "prompts")
    unstratified = bool(df["group"].isna().any())
    df["group"] = df["group"].fillna(0.0)  # pairs without a similarity score: one group "0"
    out = run_dir / REPORT_DIR
    out.mkdir(exist_ok=True)
    couplings = [c for c in COUPLING_ORDER if c in set(df.coupling)]
    methods = [c for c in row_order(df.coupling) if c not in COUPLING_ORDER]  # study.methods
    summary = prompt_summary(df)
    summary.to_csv(out / "summary.csv", index=False)
    sig_parts = []
    others = [c for c in couplings if c != "ot"]
    if "ot" in couplings and others + methods:
        # the methods' rows share the OT path's coupling cost: they are tested on PPL only
        for metric, against in (("ppl", others + methods), ("coupling_cost", others)):
            if against:
                sig_parts.append(significance_table(df, metric, reference="ot", others=against))
    sig = pd.concat(sig_parts, ignore_index=True) if sig_parts else pd.DataFrame()
    sig.to_csv(out / "significance.csv", index=False)
    _box_plot(
        df,
        "ppl",
        "PPL (sum of per-step LPIPS)",
        out / "ppl_by_group.png",
        sig[sig.metric == "ppl"] if not sig.empty else None,
    )
    _box_plot(df, "coupling_cost", "coupling cost C(σ)", out / "cost_by_group.png")
    examples = _examples_figure(run_dir, df, out / "examples.png")

    cfg = manifest.get("config", {})
    pairs_info = manifest.get("pairs", {})
    lines = [
        "# Prompt-pair study: OT vs CLIP vs random couplings",
        "",
        *note,
        (
            f"- model: `{cfg.get('model', {}).get('id', '?')}`; steps {cfg.get('render', {}).get('steps')}, "
            f"guidance {cfg.get('render', {}).get('guidance')}, t = {cfg.get('render', {}).get('t')}"
        ),
        (
            f"- pairs: {df.pair_id.nunique()} recorded of {manifest.get('units', '?')} sampled; "
            f"source read {pairs_info.get('pairs_read', '?')} pairs, {pairs_info.get('pairs_unresolved', 0)} "
            "unresolved caption ids dropped"
        ),
        f"- study seed {manifest.get('seed')}; one seed per pair; couplings: {', '.join(couplings)}"
        + (f"; attention methods on the OT path: {', '.join(methods)}" if methods else ""),
        *_method_notes(methods, cfg),
        *(["- pairs without a similarity score are shown as group 0"] if unstratified else []),
        "",
        (
            "PPL = Σₖ LPIPS(frameₖ, frameₖ₊₁); coupling cost C(σ) = Σᵢ ‖E_A[i] − E_B[σ(i)]‖². Tests: paired "
            "one-sided Wilcoxon signed-rank (H1: OT lower), * p < 0.05, ** p < 0.01, *** p < 0.001."
        ),
        "",
        "## PPL by similarity group (Figure 3)",
        "",
        "![PPL](ppl_by_group.png)",
        "",
        "![coupling cost](cost_by_group.png)",
        "",
        "## Significance (OT vs each coupling)",
        "",
    ]
    if not sig.empty:
        show = sig[
            ["group", "comparison", "metric", "n", "median_diff", "win_rate", "pvalue", "stars"]
        ]
        lines += [_md_table(show), ""]
    else:
        lines += ["(needs the OT coupling and at least one other)", ""]
    cols = [
        "group",
        "coupling",
        "n",
        "ppl_mean",
        "ppl_median",
        "coupling_cost_mean",
        "w2_path_length_mean",
        "smoothness_mean",
    ]
    lines += ["## Summary by group and coupling", "", _md_table(summary[cols]), ""]
    if examples:
        lines += ["## Example paths (Figure 2)", "", "![examples](examples.png)", ""]
    if "unit_seconds" in df.columns:
        per_unit = df.drop_duplicates("unit_id")
        share = 1 - (per_unit["unit_render_seconds"].sum() / per_unit["unit_seconds"].sum())
        lines += [
            "## Time",
            "",
            (
                f"- {per_unit.unit_seconds.mean():.3g} s per pair (median {per_unit.unit_seconds.median():.3g} s), "
                f"{share:.1%} of it outside the model's render calls"
            ),
            "",
        ]
    lines += ["Tables: [summary.csv](summary.csv), [significance.csv](significance.csv)", ""]
    md = out / "report.md"
    md.write_text("\n".join(lines), encoding="utf-8")
    return md


# --- latent study ----------------------------------------------------------------------------
def latent_tables(df: Any, metrics: dict[str, Any]) -> dict[str, Any]:
    """Paper B's Table 1 (interpolation) and Table 2 (centroids) as DataFrames.

    metrics : ``{"interpolation": {method: {"fid_64": .., "accuracy_top1": ..}}, "centroids": ...}``
    (written by :func:`whichway.studies.latent_study.score_latent_study`).
    """
    import pandas as pd

    tables = {}
    for kind in ("interpolation", "centroids"):
        sub = df[df["kind"] == kind]
        rows = []
        for method, m in metrics.get(kind, {}).items():
            times = sub[sub.method == method]["seconds"]
            row = {
                "method": method,
                "images": m.get("images", 0),
                "accuracy_top1": m.get("accuracy_top1"),
                "accuracy_top5": m.get("accuracy_top5"),
            }
            for k, v in m.items():
                if k.startswith("fid_"):
                    row[k] = v
            row["seconds_per_item"] = float(times.mean()) if len(times) else float("nan")
            rows.append(row)
        tables[kind] = pd.DataFrame(rows)
    return tables


def latent_report(run_dir: str | Path) -> Path:
    """Write the latent study's report into ``RUN_DIR/report``; returns the ``report.md`` path."""
    import json

    run_dir = Path(run_dir)
    df, manifest, note = _read(run_dir, "latents")
    mpath = run_dir / "metrics.json"
    if not mpath.is_file():
        raise ValueError(
            f"{str(run_dir)!r} has no metrics.json; the scoring phase of the run did not finish"
        )
    metrics = json.loads(mpath.read_text())
    out = run_dir / REPORT_DIR
    out.mkdir(exist_ok=True)
    tables = latent_tables(df, metrics)
    cfg = manifest.get("config", {})
    # the inversion method the run recorded ("ddim" for SD/SDXL, "flow" for SD3/Flux)
    inv_rows = df[df.kind == "inversion"]
    inv_methods = (
        sorted(str(m) for m in inv_rows["method"].dropna().unique()) if "method" in inv_rows else []
    )
    inv_method = "/".join(inv_methods) or "?"
    lines = [
        "# Latent study: COG vs LERP / SLERP / NAO and centroid baselines",
        "",
        *note,
        (
            f"- model: `{cfg.get('model', {}).get('id', '?')}`; {inv_method} inversion, "
            f"{cfg.get('inversion', {}).get('steps')} inversion steps, guidance {cfg.get('inversion', {}).get('guidance')}; "
            f"render {cfg.get('render', {}).get('steps')} steps"
        ),
        (
            f"- classes: {manifest.get('classes', '?')}; images inverted: {manifest.get('images', '?')}; "
            f"study seed {manifest.get('seed')}"
        ),
        (
            f"- FID against the {metrics.get('real_images', '?')} real images; accuracy of classifier "
            f"`{metrics.get('classifier', '?')}` (class = the folder's prompt)"
        ),
        "",
    ]
    for kind, title in (
        ("interpolation", "Table 1: interpolation (interior points of within-class paths)"),
        ("centroids", "Table 2: centroids"),
    ):
        t = tables[kind]
        t.to_csv(out / f"{kind}.csv", index=False)
        lines += [f"## {title}", ""]
        lines += [_md_table(t) if not t.empty else "(none)", ""]
        fig = _latent_examples(run_dir, df[df.kind == kind], out / f"{kind}_examples.png")
        if fig:
            lines += [f"![{kind} examples]({kind}_examples.png)", ""]
    lines += ["Tables: [interpolation.csv](interpolation.csv), [centroids.csv](centroids.csv)", ""]
    md = out / "report.md"
    md.write_text("\n".join(lines), encoding="utf-8")
    return md


def _latent_examples(run_dir: Path, df: Any, path: Path, max_units: int = 2) -> bool:
    """One image row per method for a few units (interior points or centroids)."""
    from PIL import Image

    if df.empty or "images" not in df.columns:
        return False
    units = list(dict.fromkeys(df.unit_id))[:max_units]
    rows = []
    for u in units:
        for r in df[df.unit_id == u].itertuples(index=False):
            files = [run_dir / f for f in list(r.images)]
            if files and all(f.is_file() for f in files):
                rows.append((u, r.method, files))
    if not rows:
        return False
    plt = _plt()
    ncol = max(len(f) for _, _, f in rows)
    fig, axes = plt.subplots(
        len(rows), ncol, figsize=(1.4 * ncol + 1, 1.4 * len(rows) + 0.3), squeeze=False
    )
    for i, (_u, method, files) in enumerate(rows):
        for j in range(ncol):
            ax = axes[i, j]
            ax.set_axis_off()
            if j < len(files):
                with Image.open(files[j]) as img:
                    ax.imshow(img.convert("RGB"))
        axes[i, 0].set_title(f"{method}", fontsize=7, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
