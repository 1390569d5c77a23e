"""Prompt study end to end on a tiny random SD pipeline: unit properties, CLI + report, resume
after SIGKILL (subprocess), bad inputs."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from whichway.cli import main
from whichway.studies.config import load_config, to_dict, write_config
from whichway.studies.executors import Unit
from whichway.studies.prompt_study import DETERMINISTIC_COLUMNS, PromptStudyWorker
from whichway.studies.store import ResultStore

FIX = Path(__file__).parent / "fixtures"
pytestmark = pytest.mark.filterwarnings(
    "ignore::UserWarning", "ignore::FutureWarning", "ignore::DeprecationWarning"
)


def _config(tiny_dir: Path, tmp: Path, **sets: str) -> Path:
    overrides = [
        f'model.id="{tiny_dir}"',
        'model.device="cpu"',
        'pairs.source="cxc"',
        f'pairs.sts=["{FIX / "cxc_small.csv"}"]',
        f'pairs.coco=["{FIX / "coco_small.json"}"]',
        "pairs.n_per_group=1",
        "render.steps=1",
        "render.height=32",
        "render.width=32",
        "render.t=[0.0, 0.5, 1.0]",
        "render.batch_size=8",
        "metrics.pretrained=false",
        "study.example_pairs=2",
        "run.progress=false",
    ] + [f"{k}={v}" for k, v in sets.items()]
    path = tmp / "study.toml"
    write_config(load_config("prompts", None, overrides), path)
    return path


def _table(run_dir: Path) -> pd.DataFrame:
    df = ResultStore(run_dir, lock=False).read()
    return (
        df[list(DETERMINISTIC_COLUMNS)].sort_values(["unit_id", "coupling"]).reset_index(drop=True)
    )


def _assert_same_table(a: pd.DataFrame, b: pd.DataFrame, rtol: float = 1e-6) -> None:
    assert list(a.unit_id) == list(b.unit_id) and list(a.coupling) == list(b.coupling)
    for col in a.columns:
        if a[col].dtype.kind == "f":
            np.testing.assert_allclose(a[col], b[col], rtol=rtol, atol=1e-12, err_msg=col)
        else:
            assert a[col].tolist() == b[col].tolist(), col


@pytest.fixture(scope="module")
def full_run(tiny_pipeline, tmp_path_factory):
    """An uninterrupted run through the CLI (7 pairs: one per non-empty group of the fixture)."""
    tmp = tmp_path_factory.mktemp("prompt_study")
    cfg = _config(tiny_pipeline("sd"), tmp)
    out = tmp / "run"
    assert main(["study", "prompts", "run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    return cfg, out


# --- the unit ---------------------------------------------------------------------------------
def test_unit_rows_follow_the_geometry_and_match_an_independent_render(tiny_pipeline):
    from whichway.render import conditioning_path, render_frames

    cfg = load_config(
        "prompts",
        None,
        [
            f'model.id="{tiny_pipeline("sd")}"',
            'model.device="cpu"',
            "render.steps=1",
            "render.height=32",
            "render.width=32",
            "render.t=[0.0, 0.25, 0.5, 1.0]",
            "metrics.pretrained=false",
            "render.shared_endpoints=false",
        ],
    )
    worker = PromptStudyWorker(to_dict(cfg))
    payload = {
        "pair_id": "x",
        "prompt_a": "a black cat on a red sofa",
        "prompt_b": "a brown dog in a field",
        "similarity": 1.2,
        "group": 1.5,
        "seed": 11,
        "example": True,
    }
    res = worker(Unit("x", payload))
    rows = {r["coupling"]: r for r in res.rows}
    assert set(rows) == {"ot", "clip", "random"}
    # OT is the cheapest coupling and its path is a W2 geodesic: length = sqrt(C(σ*)/n)
    assert rows["ot"]["coupling_cost"] <= rows["clip"]["coupling_cost"] + 1e-9
    assert rows["ot"]["coupling_cost"] <= rows["random"]["coupling_cost"] + 1e-9
    n = worker.adapter.encode(["x"]).clouds[0].shape[1]
    assert rows["ot"]["w2_path_length"] == pytest.approx(
        math.sqrt(rows["ot"]["coupling_cost"] / n), rel=1e-6
    )
    assert rows["random"]["w2_path_length"] >= rows["ot"]["w2_path_length"] - 1e-9
    assert len(rows["ot"]["lpips_steps"]) == 3
    assert rows["ot"]["ppl"] == pytest.approx(sum(rows["ot"]["lpips_steps"]), rel=1e-12)
    assert set(res.files) == {f"strips/x/{c}.png" for c in rows}  # example pair -> strips kept
    # the same path rendered and measured independently, frame by frame
    cond = worker.adapter.encode([payload["prompt_a"], payload["prompt_b"]])
    path, _ = conditioning_path(
        cond.select(0), cond.select(1), torch.tensor(cfg.render.t), coupling="ot"
    )
    latent = worker.adapter.initial_latent(11, 32, 32)
    frames = render_frames(
        worker.adapter,
        path,
        latent,
        steps=1,
        guidance=cfg.render.guidance,
        height=32,
        width=32,
        batch_size=1,
        progress=False,
    )
    ref = worker.meter.path_metrics(frames, cfg.render.t)
    np.testing.assert_allclose(rows["ot"]["lpips_steps"], ref.steps.numpy(), rtol=1e-3, atol=1e-10)
    # shared endpoints (t=1 rendered from E_B, not σ-permuted E_B) agree on this invariant model
    import copy
    import dataclasses

    shared = copy.copy(worker)  # same loaded model and LPIPS network, other render setting
    shared.cfg = dataclasses.replace(
        cfg, render=dataclasses.replace(cfg.render, shared_endpoints=True)
    )
    rows2 = {r["coupling"]: r for r in shared(Unit("x", payload)).rows}
    for c in rows:
        np.testing.assert_allclose(
            rows2[c]["lpips_steps"], rows[c]["lpips_steps"], rtol=1e-3, atol=1e-10
        )
        assert rows2[c]["coupling_cost"] == pytest.approx(rows[c]["coupling_cost"], rel=1e-12)


# --- end to end -------------------------------------------------------------------------------
def test_cli_run_and_report(full_run):
    _, out = full_run
    df = ResultStore(out, lock=False).read()
    assert len(df) == 21 and df.unit_id.nunique() == 7
    assert not df.duplicated(["unit_id", "coupling"]).any()
    assert sorted(df.group.unique()) == [0.5, 1.0, 1.5, 2.5, 3.0, 4.0, 5.0]
    assert (df.groupby("unit_id").seed.nunique() == 1).all()  # one seed per pair
    rep = out / "report"
    for name in (
        "report.md",
        "summary.csv",
        "significance.csv",
        "ppl_by_group.png",
        "cost_by_group.png",
        "examples.png",
    ):
        assert (rep / name).is_file(), name
    summary = pd.read_csv(rep / "summary.csv")
    assert len(summary) == 8 * 3  # 7 groups + "all", 3 couplings each
    assert {
        "ppl_mean",
        "ppl_median",
        "coupling_cost_mean",
        "w2_path_length_mean",
        "smoothness_mean",
    } <= set(summary.columns)
    sig = pd.read_csv(rep / "significance.csv")
    assert set(sig.comparison) == {"ot < clip", "ot < random"} and set(sig.metric) == {
        "ppl",
        "coupling_cost",
    }
    assert len(sig) == 2 * 2 * 8
    overall = sig[
        (sig.group == "all") & (sig.metric == "coupling_cost") & (sig.comparison == "ot < random")
    ]
    assert overall.n.item() == 7 and overall.pvalue.item() == pytest.approx(
        1 / 2**7
    )  # OT always cheaper
    text = (rep / "report.md").read_text()
    assert "Figure 3" in text and "Significance" in text and "Figure 2" in text
    import json

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["units"] == 7
    assert manifest["pairs"]["pairs_unresolved"] == 3 and "torch" in manifest["versions"]
    # report again from the CLI
    assert main(["study", "prompts", "report", str(out)]) == 0


def test_rerun_is_a_no_op_and_changed_settings_refuse_to_resume(full_run, capsys):
    cfg, out = full_run
    before = _table(out)
    assert main(["study", "prompts", "run", str(cfg), "--out", str(out), "--no-report"]) == 0
    assert "0 run now, 7 already done" in capsys.readouterr().out
    _assert_same_table(before, _table(out), rtol=0)
    assert (
        main(["study", "prompts", "run", str(cfg), "--out", str(out), "--set", "render.steps=2"])
        == 2
    )
    assert "different configuration (render.steps: 1 -> 2)" in capsys.readouterr().err


def test_resume_after_sigkill_equals_uninterrupted_run(full_run, tmp_path, capsys):
    cfg, ref_out = full_run
    out = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "whichway",
        "study",
        "prompts",
        "run",
        str(cfg),
        "--out",
        str(out),
        "--no-report",
        "--no-progress",
    ]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if list((out / "results").glob("shard-*.parquet")):
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    done = ResultStore(out, lock=False).completed()
    assert 1 <= len(done) < 7
    # resume in this process (a fresh store and worker, as a new process would build them)
    assert main(cmd[3:]) == 0
    assert f"{7 - len(done)} run now, {len(done)} already done" in capsys.readouterr().out
    got = _table(out)
    assert not got.duplicated(["unit_id", "coupling"]).any() and got.unit_id.nunique() == 7
    _assert_same_table(_table(ref_out), got)
    assert not list((out / "results").glob(".*.tmp"))


# --- bad inputs -------------------------------------------------------------------------------
def test_cli_errors(tmp_path, capsys, tiny_pipeline):
    cfg = _config(tiny_pipeline("sd"), tmp_path)
    assert (
        main(
            [
                "study",
                "prompts",
                "run",
                str(cfg),
                "--set",
                "render.stepz=3",
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "unknown key(s) 'stepz' in [render]" in capsys.readouterr().err
    assert main(["study", "prompts", "run", str(tmp_path / "none.toml")]) == 2
    assert "not found; write one with `whichway study prompts init" in capsys.readouterr().err
    assert (
        main(
            [
                "study",
                "prompts",
                "run",
                str(cfg),
                "--set",
                'pairs.source="file"',
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "needs pairs.file" in capsys.readouterr().err
    assert main(["study", "prompts", "report", str(tmp_path / "nothing")]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["study", "prompts", "report", str(tmp_path / "empty")]) == 2
    assert "not a study run directory" in capsys.readouterr().err
    assert main(["study", "prompts", "init", str(tmp_path / "d.toml")]) == 0
    assert load_config("prompts", tmp_path / "d.toml") == load_config("prompts")
    assert main(["study", "prompts", "init", str(tmp_path / "d.toml")]) == 2
    assert "pass --force" in capsys.readouterr().err
