"""The Ray executor on a local CPU-only Ray gives the local executor's results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from whichway.studies.config import load_config
from whichway.studies.executors import LocalExecutor, RayExecutor
from whichway.studies.prompt_study import DETERMINISTIC_COLUMNS, run_prompt_study
from whichway.studies.store import ResultStore

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.filterwarnings(
    "ignore::UserWarning", "ignore::FutureWarning", "ignore::DeprecationWarning"
)


def test_ray_matches_local(tiny_pipeline, tmp_path):
    pairs = tmp_path / "pairs.csv"
    pd.DataFrame(
        {
            "prompt_a": ["a red car", "a black cat", "a bowl of fruit"],
            "prompt_b": ["a blue bus", "a brown dog", "a plate of cake"],
        }
    ).to_csv(pairs, index=False)
    cfg = load_config(
        "prompts",
        None,
        [
            f'model.id="{tiny_pipeline("sd")}"',
            'model.device="cpu"',
            'pairs.source="file"',
            f'pairs.file="{pairs}"',
            "pairs.n_per_group=5",
            "pairs.stratify=false",
            "render.steps=1",
            "render.height=32",
            "render.width=32",
            "render.t=[0.0, 0.5, 1.0]",
            "metrics.pretrained=false",
            "study.example_pairs=0",
            "run.progress=false",
        ],
    )
    # Ray gives each 1-CPU actor one BLAS/OpenMP thread; the local run takes one too, so both sum
    # the UNet's and LPIPS's float32 products in the same order
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = run_prompt_study(cfg, tmp_path / "local", executor=LocalExecutor())
    finally:
        torch.set_num_threads(threads)
    ex = RayExecutor(workers=2, num_cpus=2)
    try:
        assert ex.num_gpus_per_worker == 0 and ex.workers == 2
        remote = run_prompt_study(cfg, tmp_path / "ray", executor=ex)
    finally:
        ex.close()
    assert local.ran == remote.ran == 3

    def table(d: Path) -> pd.DataFrame:
        df = ResultStore(d, lock=False).read()
        return (
            df[list(DETERMINISTIC_COLUMNS)]
            .sort_values(["unit_id", "coupling"])
            .reset_index(drop=True)
        )

    a, b = table(tmp_path / "local"), table(tmp_path / "ray")
    assert len(a) == 9 and not b.duplicated(["unit_id", "coupling"]).any()
    # same work, same thread count: every column equal, rendered-image metrics included
    for col in a.columns:
        if a[col].dtype.kind == "f":
            np.testing.assert_allclose(a[col], b[col], rtol=1e-9, atol=0, err_msg=col)
        else:
            assert a[col].tolist() == b[col].tolist(), col
    # an unstratified run (pairs without similarity) still reports: one group "0"
    from whichway.studies.report import prompt_report

    text = prompt_report(tmp_path / "local").read_text()
    assert "shown as group 0" in text
    sig = pd.read_csv(tmp_path / "local" / "report" / "significance.csv")
    assert sorted(set(sig.group.astype(str))) == ["0.0", "all"]
