"""Study throughput: prompt-pair units per second on a tiny random SD pipeline.

Measured in one run, on the same model and pairs:

* local executor, endpoints shared by the three couplings (the default),
* local executor, every coupling rendering its own endpoints (``render.shared_endpoints=false``;
  the baseline the sharing is compared with),
* Ray executor on a local CPU-only Ray (``--ray-workers`` actors, one model each; default shared
  endpoints, so compared with the local run with shared endpoints), unless ``--no-ray``,

and for each the share of a unit's time spent outside the model's render calls (pair loading,
geometry, LPIPS, bookkeeping; the driver's Parquet writes are outside the unit and reported as
the gap between wall time and summed unit time).

    python benchmarks/bench_studies.py            # 6 pairs, 11 frames, 1 step, 32 px
    python benchmarks/bench_studies.py --quick    # 3 pairs, 3 frames, 1 step

Times are warm: each executor first runs a one-pair warm-up study (model load, first kernels).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _result import WARM, Result, add_arguments, report


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="a short run (3 pairs, 3 frames, 1 step)")
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--frames", type=int, default=11)
    ap.add_argument("--size", type=int, default=32, help="image side in pixels")
    ap.add_argument("--ray-workers", type=int, default=2)
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of the local executor (Ray gives each 1-CPU actor one thread; "
        "on a shared, oversubscribed CPU more threads spin-wait and run slower)",
    )
    add_arguments(ap)
    args = ap.parse_args()
    if args.device != "cpu":
        ap.error("the study benchmark runs the tiny model on the CPU only (--device cpu)")
    if args.quick:
        args.pairs, args.steps, args.frames = 3, 1, 3
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)

    import pandas as pd
    import torch

    torch.set_num_threads(args.threads)

    from whichway.models.tiny import build_tiny_pipeline
    from whichway.studies.config import load_config
    from whichway.studies.executors import LocalExecutor, RayExecutor
    from whichway.studies.prompt_study import run_prompt_study
    from whichway.studies.store import ResultStore

    tmp = Path(tempfile.mkdtemp(prefix="bench_studies_"))
    model = build_tiny_pipeline("sd", tmp / "tiny_sd")
    subjects = [
        "cat",
        "dog",
        "car",
        "house",
        "tree",
        "bus",
        "bowl",
        "bird",
        "horse",
        "boat",
        "lamp",
        "chair",
    ]
    n = args.pairs
    pairs = pd.DataFrame(
        {
            "prompt_a": [f"a photo of a red {subjects[i % 12]} number {i}" for i in range(n)],
            "prompt_b": [
                f"a drawing of a blue {subjects[(i + 5) % 12]} number {i}" for i in range(n)
            ],
        }
    )
    pairs.to_csv(tmp / "pairs.csv", index=False)
    ts = [round(k / (args.frames - 1), 6) for k in range(args.frames)]
    base = [
        f'model.id="{model}"',
        'model.device="cpu"',
        'pairs.source="file"',
        f'pairs.file="{tmp / "pairs.csv"}"',
        "pairs.stratify=false",
        f"pairs.n_per_group={n}",
        f"render.steps={args.steps}",
        f"render.height={args.size}",
        f"render.width={args.size}",
        f"render.t={ts}",
        "render.batch_size=8",
        "metrics.pretrained=false",
        "study.example_pairs=0",
        "run.progress=false",
    ]

    def measure(name: str, overrides: list[str], executor) -> dict:
        cfg = load_config("prompts", None, base + overrides)
        out = tmp / name.replace(",", "").replace(" ", "-")
        start = time.perf_counter()
        run_prompt_study(cfg, out, executor=executor)
        wall = time.perf_counter() - start
        df = ResultStore(out, lock=False).read().drop_duplicates("unit_id")
        outside = 1 - df.unit_render_seconds.sum() / df.unit_seconds.sum()
        return {
            "name": name,
            "units": len(df),
            "wall_s": wall,
            "units_per_s": len(df) / wall,
            "unit_s": df.unit_seconds.mean(),
            "outside_model": outside,
        }

    print(
        f"tiny SD, {n} pairs x 3 couplings, {args.frames} frames, {args.steps} steps, {args.size}px, CPU, "
        f"local executor with {args.threads} torch thread(s)"
    )
    results = []
    local = LocalExecutor()
    # warm-up (model load, first-call kernels) is part of neither measurement
    # (one pair; the worker spec ignores the pair count, so the executor keeps its loaded worker)
    run_prompt_study(
        load_config("prompts", None, base + ["pairs.n_per_group=1"]), tmp / "warmup", executor=local
    )
    results.append(measure("local, shared endpoints", [], local))
    local2 = LocalExecutor()
    run_prompt_study(
        load_config(
            "prompts", None, base + ["pairs.n_per_group=1", "render.shared_endpoints=false"]
        ),
        tmp / "warmup2",
        executor=local2,
    )
    results.append(
        measure("local, endpoints per coupling", ["render.shared_endpoints=false"], local2)
    )
    if not args.no_ray:
        t0 = time.perf_counter()
        ray_ex = RayExecutor(workers=args.ray_workers, num_cpus=max(2, args.ray_workers))
        run_prompt_study(
            load_config("prompts", None, base + ["pairs.n_per_group=1"]),
            tmp / "warmup3",
            executor=ray_ex,
        )
        print(
            f"(Ray start + {args.ray_workers} actors loading the model: {time.perf_counter() - t0:.1f} s, not counted)"
        )
        try:
            results.append(measure(f"ray, {args.ray_workers} actors", [], ray_ex))
        finally:
            ray_ex.close()
    # each figure changes one thing: endpoint sharing (shared vs per-coupling, both local) and the
    # executor (Ray vs local, both with the default shared endpoints)
    shared, per_coupling = results[0], results[1]
    refs = {id(shared): per_coupling}
    for r in results[2:]:
        refs[id(r)] = shared
    print(
        f"{'run':34s} {'units':>5s} {'wall s':>8s} {'units/s':>8s} {'s/unit':>8s} {'ratio':>7s} "
        f"{'compared with':34s} {'outside model':>13s}"
    )
    for r in results:
        ref = refs.get(id(r))
        ratio = f"{r['units_per_s'] / ref['units_per_s']:6.2f}x" if ref else f"{'-':>7s}"
        vs = ref["name"] if ref else "(reference)"
        print(
            f"{r['name']:34s} {r['units']:5d} {r['wall_s']:8.2f} {r['units_per_s']:8.3f} {r['unit_s']:8.3f} "
            f"{ratio:>7s} {vs:34s} {r['outside_model']:12.1%}"
        )
    figures = [
        Result(
            bench="studies",
            compared=f"prompt-study throughput, tiny SD ({n} pairs x 3 couplings, {args.frames} frames, {args.steps} "
            f"step(s), {args.size}px): {r['name']} vs {refs[id(r)]['name']}",
            ours=f"{r['units_per_s']:.2f} pairs/s",
            baseline=f"{refs[id(r)]['units_per_s']:.2f} pairs/s",
            ratio=r["units_per_s"] / refs[id(r)]["units_per_s"],
            regime=WARM,
            device="cpu",
            notes=f"{r['outside_model']:.0%} of a pair's time outside model calls",
        )
        for r in results
        if id(r) in refs
    ]
    report(figures, args.json)


if __name__ == "__main__":
    main()
