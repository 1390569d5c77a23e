"""Paper A's prompt-pair study: OT vs CLIP (row order) vs random couplings, at scale.

Protocol (DESIGN.md section 1.1, arXiv 2511.12757): pairs of captions sampled per similarity
group; for every pair, the same initial latent (one seed per pair) is rendered along the
displacement path E_t[i] = (1 - t) E_A[i] + t E_B[sigma(i)] of each coupling sigma at
t in {0, 0.1, ..., 1}; the path is measured by its perceptual path length
PPL = sum_k LPIPS(frame_k, frame_k+1) and its coupling cost C(sigma) = sum_i ||E_A[i] - E_B[sigma(i)]||^2.

One **unit** is one pair; it records one row per coupling (and per method of ``study.methods``,
each on the OT text path, :mod:`whichway.attention`: AID and PAID (its guide prompt per pair,
:func:`pair_guides`) beside the shared end frames, DiffMorpher between the pair's end frames taken
as 8-bit images, :func:`whichway.compare.diffmorpher_row`). Per unit:

* both prompts are encoded once (``adapter.encode([a, b])``);
* the seed is derived from the study seed and the pair id (:func:`whichway.studies.pairs.pair_seed`),
  so a pair renders the same on every machine and after a resume;
* **endpoints are rendered once** and shared by the couplings: at t = 0 every coupling's
  conditioning is E_A itself, and at t = 1 it is E_B with its rows permuted by sigma. A model whose
  text conditioning is permutation-invariant (cross-attention; checked by ``whichway
  check-invariance``) renders the permuted E_B exactly like E_B, so the t = 1 frame is rendered
  from E_B and reused. For a model that sees token order set ``render.shared_endpoints = false``
  (every coupling then renders its own t = 1 frame);
* all frames of the pair (endpoints + every coupling's interior frames) go through the model in
  one batched ``render_frames`` call, and each frame's LPIPS features are computed once, in
  batches; the per-step distances of each coupling's path come from the cached features;
* recorded per (pair, coupling): coupling cost (summed over token groups), W2 path length of the
  conditioning path (:func:`whichway.clouds.path_length_w2`), per-step LPIPS, PPL (paper A's
  sum and the StyleGAN-style normalised sum), smoothness (1 - Gini), consistency, max step, the
  render time attributed to the coupling's frames (each batch's time split evenly over its frames;
  endpoints split evenly over the couplings), and the metric time.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from whichway.studies.config import (
    STUDY_CONFIGS,
    PromptStudyConfig,
    check_method_families,
    check_prompt_methods,
    from_dict,
    to_dict,
)
from whichway.studies.executors import Unit, UnitResult, WorkerSpec

log = logging.getLogger(__name__)

WORKER = "whichway.studies.prompt_study:PromptStudyWorker"
STUDY = "prompts"

#: Columns that are the same in every run of the same config (timings excluded); used to compare
#: runs (resume, local vs Ray).
DETERMINISTIC_COLUMNS: tuple[str, ...] = (
    "unit_id",
    "pair_id",
    "coupling",
    "group",
    "similarity",
    "seed",
    "coupling_cost",
    "w2_path_length",
    "ppl",
    "ppl_normalized",
    "smoothness",
    "consistency",
    "max_step",
)


def safe_name(text: str) -> str:
    """A file-system-safe version of an id (pair ids hold ':' and '|')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:120] or "unit"


def as_prompt(text: str, source: str) -> str:
    """A pair's text as a prompt: captions of the CxC data set (``source`` "cxc:...") are text,
    their brackets escaped so the prompt syntax does not read them as weights; a pairs file is
    written by the user, in the prompt syntax."""
    from whichway.prompts.syntax import escape_prompt

    return escape_prompt(text) if str(source).startswith("cxc") else text


def pair_guides(config: PromptStudyConfig, sample: Any) -> list[str]:
    """PAID's guide prompt of every sampled pair (prompt syntax), checked before any model loads:
    the pairs file's ``guide`` column, or ``study.guide_prompt`` with ``{a}``/``{b}`` filled in
    by the pair's prompts (escaped like the prompts for CxC captions). Both at once, neither, a
    pair whose guide is empty or a guide that is not valid prompt syntax: a one-line ValueError
    naming the pair."""
    from whichway.prompts.syntax import check_prompts_syntax

    template = config.study.guide_prompt
    column = "guide" in sample.columns
    if column and template:
        raise ValueError(
            "the pairs file has a guide column and study.guide_prompt is set; PAID takes one guide "
            "source: empty study.guide_prompt or drop the column"
        )
    if not column and not template:
        raise ValueError(
            "study.methods has paid, which needs a guide prompt per pair: set study.guide_prompt "
            '(e.g. "{a} and {b}") or give the pairs file a guide column'
        )
    guides = []
    for row in sample.itertuples(index=False):
        if column:
            guide = str(row.guide).strip()
        else:
            a, b = (as_prompt(x, row.source) for x in (row.prompt_a, row.prompt_b))
            guide = template.format(a=a, b=b).strip()
        if not guide:
            raise ValueError(
                f"pair {row.pair_id!r} ({row.prompt_a!r} -> {row.prompt_b!r}) has an empty guide "
                "prompt; PAID needs one per pair: fill its guide cell"
            )
        check_prompts_syntax((f"guide prompt of pair {row.pair_id!r}", guide))
        guides.append(guide)
    return guides


def resolve_device(name: str) -> str:
    import torch

    return name or ("cuda" if torch.cuda.is_available() else "cpu")


class PromptStudyWorker:
    """Loads the model and the LPIPS network once; measures one pair per call.

    config : the study config as a plain dict (:func:`whichway.studies.config.to_dict`)
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        import torch

        from whichway.metrics.lpips_path import LPIPSPath
        from whichway.models import load_adapter

        self.cfg: PromptStudyConfig = from_dict(PromptStudyConfig, config)
        m = self.cfg.model
        self.adapter = load_adapter(
            m.id,
            device=m.device or None,
            dtype=m.dtype or None,
            variant=m.variant or None,
            runtime=m.runtime_options(),
        )
        r = self.cfg.render
        dh, dw = self.adapter.default_size
        self.height, self.width = r.height or dh, r.width or dw
        self.negative = self.adapter.encode_negative(r.negative_prompt or None, 1)
        device = self.cfg.metrics.device or str(self.adapter.device)
        self.meter = LPIPSPath(
            self.cfg.metrics.lpips_net,
            pretrained_backbone=self.cfg.metrics.pretrained,
            device=device,
        )
        self.ts = torch.tensor(r.t, dtype=torch.float64)
        # a hub id's family is known only now
        check_method_families(self.cfg.study.methods, self.adapter.family)

    def describe(self) -> dict[str, Any]:
        return {**self.adapter.describe(), "height": self.height, "width": self.width}

    def _diffmorpher(self, prompts: list[str], end_frames: Any) -> Any:
        """DiffMorpher's T frames (T, 3, H, W) between a pair's end frames (2, 3, H, W), taken as
        the 8-bit images a user would save: :func:`whichway.compare.diffmorpher_row` (a LoRA per
        image fitted with its prompt, each inverted under its own, the OT text path, the AdaIN'd
        slerp of the inverted latents) with ``[diffmorpher]``'s settings and guidance."""
        from whichway.compare import diffmorpher_row
        from whichway.media import to_pil

        r, dm = self.cfg.render, self.cfg.diffmorpher
        frames, _ = diffmorpher_row(
            self.adapter, prompts[0], prompts[1], r.t, (to_pil(end_frames[0]), to_pil(end_frames[1])),
            dm.settings(), 0, None, steps=r.steps, guidance=dm.guidance, height=self.height,
            width=self.width, negative_prompt=r.negative_prompt or None, batch_size=r.batch_size,
            progress=False, on_step=None, should_stop=None,
        )  # fmt: skip
        return frames.to(end_frames)

    # --- one pair ------------------------------------------------------------------------------
    def __call__(self, unit: Unit) -> UnitResult:
        import torch

        from whichway.clouds import path_length_w2
        from whichway.metrics.smoothness import path_metrics_from_steps
        from whichway.models.base import Conditioning
        from whichway.render import conditioning_path, render_frames
        from whichway.studies.pairs import derive_seed

        start = time.perf_counter()
        p = unit.payload
        cfg, r = self.cfg, self.cfg.render
        couplings = cfg.study.couplings
        T = len(self.ts)
        seed = int(p["seed"])

        t_model = time.perf_counter()
        source = str(p.get("source", ""))
        prompts = [as_prompt(p["prompt_a"], source), as_prompt(p["prompt_b"], source)]
        # PAID's guide is encoded with A and B (as morph does): one token count for the clouds
        guide_text = str(p.get("guide", "")) if "paid" in cfg.study.methods else ""
        both = self.adapter.encode([*prompts, *([guide_text] if guide_text else [])])
        cond_a, cond_b = both.select(0), both.select(1)
        latent = self.adapter.initial_latent(seed, self.height, self.width)
        encode_s = time.perf_counter() - t_model

        # Conditioning paths of every coupling (pure tensor math).
        paths: dict[str, Any] = {}
        costs: dict[str, float] = {}
        w2_len: dict[str, float] = {}
        for name in couplings:
            g = torch.Generator().manual_seed(derive_seed("coupling", seed, name))
            cond, cps = conditioning_path(cond_a, cond_b, self.ts, coupling=name, generator=g)
            paths[name] = cond
            costs[name] = float(sum(float(c.cost) for c in cps))
            w2_len[name] = float(sum(float(path_length_w2(grp)) for grp in cond.clouds))

        # One batched render: [t=0 (E_A), t=1 (E_B)] + each coupling's frames to render.
        shared = r.shared_endpoints
        parts = [Conditioning.cat([cond_a, cond_b])] if shared else []
        index: dict[str, list[int]] = {}
        n = 2 if shared else 0
        for name in couplings:
            own = paths[name].select(slice(1, T - 1)) if shared else paths[name]
            parts.append(own)
            body = list(range(n, n + len(own)))
            n += len(own)
            index[name] = [0, *body, 1] if shared else body
        all_cond = Conditioning.cat(parts)
        frame_seconds = [0.0] * n
        marks: dict[int, float] = {}
        clock = [time.perf_counter()]

        def on_frame(i: int, image: Any) -> None:
            b = i // r.batch_size
            if b not in marks:  # first frame of a finished batch: the batch's time
                now = time.perf_counter()
                marks[b] = now - clock[0]
                clock[0] = now
                size = min(r.batch_size, n - b * r.batch_size)
                for j in range(b * r.batch_size, b * r.batch_size + size):
                    frame_seconds[j] = marks[b] / size

        frames = render_frames(
            self.adapter,
            all_cond,
            latent,
            steps=r.steps,
            guidance=r.guidance,
            height=self.height,
            width=self.width,
            batch_size=r.batch_size,
            negative=self.negative,
            on_frame=on_frame,
            progress=False,
        )
        assert frames is not None
        render_s = sum(frame_seconds)
        methods = cfg.study.methods
        if methods:  # on the OT path; AID/PAID share the (OT) end frames, DiffMorpher has its own
            from whichway.attention.batch import AttentionPath, with_guide
            from whichway.attention.methods import AIDSettings, settings_for

            if "ot" not in paths:
                g = torch.Generator().manual_seed(derive_seed("coupling", seed, "ot"))
                paths["ot"], cps = conditioning_path(
                    cond_a, cond_b, self.ts, coupling="ot", generator=g
                )
                costs["ot"] = float(sum(float(c.cost) for c in cps))
                w2_len["ot"] = float(sum(float(path_length_w2(x)) for x in paths["ot"].clouds))
            ot = paths["ot"]
            ends = [0, 1] if shared else [index["ot"][0], index["ot"][-1]] if "ot" in index else []
            inner = ot if not ends else ot.select(slice(1, T - 1))
            times = self.ts if not ends else self.ts[1:-1]
            official = AIDSettings()
            for name in methods:
                t_method = time.perf_counter()
                if name == "diffmorpher":  # between the pair's end frames, as 8-bit images
                    if ends:
                        end_frames = frames[ends]
                    else:  # no shared and no OT end frames: render the OT path's two
                        end_frames = render_frames(
                            self.adapter, ot.select([0, T - 1]), latent, steps=r.steps,
                            guidance=r.guidance, height=self.height, width=self.width,
                            negative=self.negative, progress=False,
                        )  # fmt: skip
                    extra = self._diffmorpher(prompts, end_frames)
                else:
                    aid = settings_for(
                        name,
                        fused=official.fused,
                        warmup_ratio=official.warmup_ratio,
                        layers=official.layers,
                    )
                    cond = inner if name != "paid" else with_guide(inner, times, both.select(2))
                    attention = AttentionPath(
                        aid, ot.select([0, T - 1]), torch.stack([latent, latent]), times
                    )
                    extra = render_frames(
                        self.adapter, cond, latent, steps=r.steps, guidance=r.guidance,
                        height=self.height, width=self.width, batch_size=r.batch_size,
                        negative=self.negative, progress=False, attention=attention,
                    )  # fmt: skip
                seconds = time.perf_counter() - t_method
                frame_seconds += [seconds / len(extra)] * len(extra)
                render_s += seconds
                body = list(range(n, n + len(extra)))
                n += len(extra)
                frames = torch.cat([frames, extra])
                own_ends = name == "diffmorpher" or not ends  # DiffMorpher renders its own
                index[name] = body if own_ends else [ends[0], *body, ends[1]]
                costs[name], w2_len[name] = costs["ot"], w2_len["ot"]
        couplings = (*couplings, *methods)

        # LPIPS features once per frame, distances per coupling path from the cache.
        t_metric = time.perf_counter()
        with torch.inference_mode():
            bs = max(1, cfg.metrics.batch_size)
            chunks = [self.meter.features(frames[s : s + bs]) for s in range(0, n, bs)]
            feats = [torch.cat([c[layer] for c in chunks]) for layer in range(len(chunks[0]))]
            steps_by: dict[str, Any] = {}
            for name in couplings:
                idx = torch.tensor(index[name], device=feats[0].device)
                left = [f[idx[:-1]] for f in feats]
                right = [f[idx[1:]] for f in feats]
                steps_by[name] = self.meter.pair_distances(left, right).to(torch.float64).cpu()
        metric_s = time.perf_counter() - t_metric

        files: dict[str, Any] = {}
        want_strip = cfg.study.save_strips or bool(p.get("example"))
        rows = []
        for name in couplings:
            pm = path_metrics_from_steps(steps_by[name], self.ts)
            own = [i for i in index[name] if not (shared and i in (0, 1))]
            endpoint_share = (
                (frame_seconds[0] + frame_seconds[1]) / len(couplings) if shared else 0.0
            )
            strip = ""
            stem = f"{safe_name(unit.unit_id)}/{name}"
            if want_strip:
                strip = f"strips/{stem}.png"
                files[strip] = _strip_png(frames[index[name]], r.t)
            if cfg.study.save_frames:
                for k, i in enumerate(index[name]):
                    files[f"frames/{stem}/{k:04d}.png"] = frames[i]
            rows.append(
                {
                    "pair_id": p["pair_id"],
                    "prompt_a": p["prompt_a"],
                    "prompt_b": p["prompt_b"],
                    "similarity": float(p["similarity"]),
                    "group": float(p["group"]),
                    "source": p.get("source", ""),
                    "seed": seed,
                    "coupling": name,
                    "guide_prompt": guide_text if name == "paid" else "",
                    "coupling_cost": costs[name],
                    "w2_path_length": w2_len[name],
                    "ppl": pm.ppl,
                    "ppl_normalized": pm.ppl_normalized,
                    "smoothness": pm.smoothness,
                    "consistency": pm.consistency,
                    "max_step": pm.max_step,
                    "lpips_steps": [float(v) for v in pm.steps.tolist()],
                    "n_frames": T,
                    "render_seconds": sum(frame_seconds[i] for i in own) + endpoint_share,
                    "metric_seconds": metric_s / len(couplings),
                    "encode_seconds": encode_s / len(couplings),
                    "strip": strip,
                }
            )
        total = time.perf_counter() - start
        for row in rows:
            row["unit_seconds"] = total
            row["unit_render_seconds"] = render_s
        return UnitResult(unit.unit_id, tuple(rows), files=files, seconds=total)


def _strip_png(frames: Any, ts: Any) -> bytes:
    """PNG bytes of a labelled contact strip of frames (T, 3, H, W)."""
    import io

    from whichway.media import contact_strip, to_pil

    img = contact_strip([to_pil(f) for f in frames], list(ts))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


# --- driver --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StudyRun:
    """Outcome of a study run: where, how many units, how many ran now / were already done."""

    run_dir: Path
    units: int
    ran: int
    skipped: int
    seconds: float


def load_study_pairs(cfg: PromptStudyConfig) -> tuple[Any, dict[str, Any]]:
    """Load and sample the pairs a config asks for; returns (sample DataFrame, loader summary)."""
    from whichway.studies.pairs import load_cxc, load_pair_file, stratified_sample

    pc = cfg.pairs
    if pc.source == "cxc":
        if not pc.sts or not pc.coco:
            raise ValueError(
                "pairs.source = 'cxc' needs pairs.sts (Crisscrossed Captions sts_*.csv files) and "
                "pairs.coco (COCO captions JSON files)"
            )
        ps = load_cxc(pc.sts, pc.coco, max_similarity=pc.max_similarity)
    else:
        if not pc.file:
            raise ValueError(
                "pairs.source = 'file' needs pairs.file (CSV / JSONL / Parquet with prompt_a, prompt_b)"
            )
        ps = load_pair_file(pc.file, max_similarity=pc.max_similarity)
    sample = stratified_sample(
        ps.pairs,
        pc.n_per_group,
        seed=cfg.study.seed,
        width=pc.group_width,
        max_similarity=pc.max_similarity,
        stratify=pc.stratify,
    )
    summary = ps.summary()
    summary["pairs_sampled"] = len(sample)
    summary["unresolved_examples"] = list(ps.unresolved_ids)
    return sample, summary


def build_units(cfg: PromptStudyConfig, sample: Any) -> list[Unit]:
    """One unit per sampled pair (payload: prompts, similarity, group, seed; PAID's guide prompt
    with ``paid`` in ``study.methods``, :func:`pair_guides`).

    ``study.example_pairs`` pairs, spread over the similarity groups (the first pair of evenly
    spaced groups), are marked as examples: their strips are kept for the report's Figure 2.
    """
    from whichway.studies.pairs import pair_seed

    examples: set[str] = set()
    k = cfg.study.example_pairs
    if k > 0:
        firsts = sample.groupby("group", dropna=False, sort=True).head(1)["pair_id"].tolist()
        step = max(1, len(firsts) // k)
        examples = set(firsts[::step][:k])
    guides = pair_guides(cfg, sample) if "paid" in cfg.study.methods else None
    units = []
    for k, row in enumerate(sample.itertuples(index=False)):
        units.append(
            Unit(
                row.pair_id,
                {
                    "pair_id": row.pair_id,
                    "prompt_a": row.prompt_a,
                    "prompt_b": row.prompt_b,
                    "similarity": float(row.similarity),
                    "group": float(row.group),
                    "source": row.source,
                    "seed": pair_seed(cfg.study.seed, row.pair_id),
                    "example": row.pair_id in examples,
                    **({"guide": guides[k]} if guides is not None else {}),
                },
            )
        )
    return units


# Settings that may change between a run and its resumption (they do not change any number).
_RESUMABLE_KEYS = {
    "run",
    "study.save_frames",
    "study.save_strips",
    "study.example_pairs",
    "pairs.n_per_group",
    "metrics.device",
    "metrics.batch_size",
    "render.batch_size",
    "model.device",
    "data.images_per_class",
    "interpolation.pairs_per_class",
}


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def check_resumable(
    old: Mapping[str, Any], new: Mapping[str, Any], defaults: Mapping[str, Any] | None = None
) -> None:
    """Raise ValueError when a run directory's config differs from ``new`` in a setting that
    changes results (model, pairs source, render settings, seed, couplings, metrics).
    ``defaults``: the config class's defaults; a setting the old run did not record (it was
    made before the setting existed) counts as its default, so such a run still resumes."""
    a, b = _flat(old), _flat(new)
    if defaults is not None:
        a = {**{k: v for k, v in _flat(defaults).items() if k in b}, **a}
    differ = sorted(
        k
        for k in set(a) | set(b)
        if a.get(k) != b.get(k)
        and k not in _RESUMABLE_KEYS
        and k.split(".")[0] not in _RESUMABLE_KEYS
    )
    if differ:
        detail = ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in differ[:6])
        raise ValueError(
            f"the run directory holds results of a different configuration ({detail}); resume with "
            "the same settings or choose a new --out directory"
        )


def prepare_run(
    store: Any, study: str, cfg_dict: Mapping[str, Any], extra: Mapping[str, Any]
) -> dict[str, Any]:
    """Check a run directory can take this config (resume) and write its manifest."""
    import datetime

    from whichway import __version__
    from whichway.studies.store import MANIFEST, versions

    path = store.run_dir / MANIFEST
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    if path.is_file():
        old = store.read_manifest()
        if old.get("study") != study:
            raise ValueError(
                f"{str(store.run_dir)!r} holds a {old.get('study')!r} study, not {study!r}"
            )
        check_resumable(old.get("config", {}), cfg_dict, to_dict(STUDY_CONFIGS[study]()))
        created = old.get("created", created)
    manifest = {
        "whichway": __version__,
        "command": "study",
        "study": study,
        "created": created,
        "config": dict(cfg_dict),
        "model": dict(cfg_dict).get("model", {}),
        "seed": dict(cfg_dict).get("study", {}).get("seed"),
        "versions": versions(),
        "status": "running",
        **dict(extra),
    }
    store.write_manifest(manifest)
    return manifest


def run_prompt_study(
    config: PromptStudyConfig,
    run_dir: str | Path,
    *,
    executor: Any = None,
    progress: bool | None = None,
) -> StudyRun:
    """Run (or resume) the prompt-pair study of ``config`` into ``run_dir``.

    Finished pairs found in ``run_dir`` are skipped; each finished pair is recorded atomically.
    executor : a :class:`~whichway.studies.executors.LocalExecutor` / ``RayExecutor``; default
        from ``config.run`` (closed at the end when built here).
    """
    import datetime

    from whichway.studies.executors import make_executor, run_units
    from whichway.studies.store import ResultStore
    from whichway.studies.timebudget import time_budget

    run_dir = Path(run_dir)
    check_prompt_methods(config)
    sample, summary = load_study_pairs(config)
    units = build_units(config, sample)
    cfg_dict = to_dict(config)
    own = executor is None
    with ResultStore(run_dir) as store:
        manifest = prepare_run(
            store,
            STUDY,
            cfg_dict,
            {"pairs": summary, "units": len(units), "couplings": list(config.study.couplings)},
        )
        if own:
            rc = config.run
            executor = make_executor(
                rc.executor,
                address=rc.address,
                workers=rc.workers,
                cpus_per_worker=rc.cpus_per_worker,
            )
        try:
            # the worker needs neither the pair source nor the run settings: leaving them out keeps
            # the spec (and an executor's loaded workers) the same across runs that differ only there
            spec = WorkerSpec(WORKER, {"config": {**cfg_dict, "pairs": {}, "run": {}}})
            info = run_units(
                store,
                executor,
                spec,
                units,
                progress=config.run.progress if progress is None else progress,
                desc="pairs",
                budget=time_budget(STUDY, config),
            )
        finally:
            if own:
                executor.close()
        store.compact()  # one file instead of one shard per unit (crash-safe, see store.py)
        manifest.update(
            status="complete",
            finished=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            units_recorded=len(store.completed()),
        )
        store.write_manifest(manifest)
    return StudyRun(
        run_dir, len(units), int(info["ran"]), int(info["skipped"]), float(info["seconds"])
    )
