"""The prompt study with ``study.methods``: AID rows on the OT path beside the couplings, equal
to an independent AID render, and tested against OT in the report."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from whichway.cli import main
from whichway.studies.config import load_config, to_dict, write_config
from whichway.studies.executors import Unit
from whichway.studies.prompt_study import PromptStudyWorker

FIX = Path(__file__).parent / "fixtures"
BASE = [
    'model.device="cpu"',
    "render.steps=2",
    "render.height=32",
    "render.width=32",
    "render.t=[0.0, 0.5, 1.0]",
    "metrics.pretrained=false",
]
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


def test_unit_adds_aid_rows_equal_to_an_aid_render(tiny_pipeline):
    from whichway.attention import AIDSettings, AttentionPath
    from whichway.render import conditioning_path, render_frames

    overrides = [f'model.id="{tiny_pipeline("sd")}"', *BASE, 'study.couplings=["clip"]']
    cfg = load_config("prompts", None, [*overrides, 'study.methods=["aid-inner"]'])
    worker = PromptStudyWorker(to_dict(cfg))
    payload = {"pair_id": "x", "prompt_a": "a black cat", "prompt_b": "a brown dog",
               "similarity": 1.2, "group": 1.5, "seed": 11, "example": True}  # fmt: skip
    res = worker(Unit("x", payload))
    rows = {r["coupling"]: r for r in res.rows}
    assert set(rows) == {"clip", "aid-inner"}
    # the AID row is the OT path's: its cost is OT's (lower than clip's) and its frames are
    # an AID render of that path with the pair's seed
    assert rows["aid-inner"]["coupling_cost"] < rows["clip"]["coupling_cost"]
    a = worker.adapter
    cond = a.encode([payload["prompt_a"], payload["prompt_b"]])
    ts = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    path, _ = conditioning_path(cond.select(0), cond.select(1), ts, coupling="ot")
    latent = a.initial_latent(11, 32, 32)
    attention = AttentionPath(AIDSettings(mode="inner"), path.select([0, 2]),
                              torch.stack([latent, latent]), ts)  # fmt: skip
    frames = render_frames(a, path, latent, steps=2, guidance=cfg.render.guidance, height=32,
                           width=32, negative=worker.negative, progress=False,
                           attention=attention)  # fmt: skip
    steps = worker.meter.distances(frames).double()
    assert torch.allclose(
        torch.tensor(rows["aid-inner"]["lpips_steps"], dtype=torch.float64), steps, atol=1e-5
    )


def test_unknown_study_method_is_refused():
    with pytest.raises(ValueError, match="unknown study.methods entry 'paid'"):
        load_config("prompts", None, ['study.methods=["paid"]'])


def test_report_tests_ot_against_the_aid_rows(tiny_pipeline, tmp_path):
    overrides = [
        f'model.id="{tiny_pipeline("sd")}"', *BASE, 'pairs.source="cxc"',
        f'pairs.sts=["{FIX / "cxc_small.csv"}"]', f'pairs.coco=["{FIX / "coco_small.json"}"]',
        "pairs.n_per_group=1", "run.progress=false", 'study.couplings=["ot", "clip"]',
        'study.methods=["aid-outer"]', "study.example_pairs=0",
    ]  # fmt: skip
    cfg = tmp_path / "study.toml"
    write_config(load_config("prompts", None, overrides), cfg)
    out = tmp_path / "run"
    assert main(["study", "prompts", "run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    sig = pd.read_csv(out / "report" / "significance.csv")
    assert {"ot < clip", "ot < aid-outer"} <= set(sig[sig.metric == "ppl"].comparison)
    assert "ot < aid-outer" not in set(sig[sig.metric == "coupling_cost"].comparison)
    assert "aid-outer" in (out / "report" / "report.md").read_text()
