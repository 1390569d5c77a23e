"""The studies' time budget (run.max_hours / --max-hours): the figure from the config, a resumed
run refused before any model loads, a fresh run stopped cleanly after its first units."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from whichway.cli import main
from whichway.studies.config import load_config, write_config
from whichway.studies.store import ResultStore
from whichway.studies.timebudget import StudyOverBudget, StudyWork, TimeBudget, study_work

FIX = Path(__file__).parent / "fixtures"
pytestmark = pytest.mark.filterwarnings(
    "ignore::UserWarning", "ignore::FutureWarning", "ignore::DeprecationWarning"
)


def test_denoiser_calls_equal_a_hand_count_of_the_config(tmp_path):
    cfg = load_config(
        "prompts",
        None,
        ["pairs.n_per_group=3", "pairs.stratify=false", "render.steps=50", "render.guidance=7.5"],
    )
    # 3 pairs x (2 shared end frames + 3 couplings x 9 inner frames) x 50 steps x 2 (CFG)
    assert study_work("prompts", cfg) == StudyWork(3, 3 * (2 + 3 * 9) * 50 * 2)
    cfg = load_config(
        "prompts",
        None,
        [
            "pairs.n_per_group=3",
            "pairs.stratify=false",
            "render.steps=7",
            "render.guidance=1.0",
            "render.shared_endpoints=false",
            'study.methods=["aid-outer"]',
        ],
    )
    # 3 pairs x (3 couplings + 1 method) x 11 frames x 7 steps x 1 (no CFG)
    assert study_work("prompts", cfg).denoiser_calls == 3 * 4 * 11 * 7
    dm = ["pairs.n_per_group=3", "pairs.stratify=false", "render.steps=7", "render.guidance=7.5",
          'study.methods=["diffmorpher"]', "diffmorpher.lora_steps=5"]  # fmt: skip
    # + per pair DiffMorpher's 11 frames x 7 steps (guidance 1), 2 inversions x 7, 2 fits x 5
    # steps of 2.2 rows each (forward and backward)
    assert study_work("prompts", load_config("prompts", None, dm)).denoiser_calls == 3 * (
        (2 + 3 * 9) * 7 * 2 + 11 * 7 + 2 * 7 + 22
    )

    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
    cfg = load_config(
        "latents",
        None,
        [
            f'data.root="{tmp_path}"',
            "data.images_per_class=5",
            "inversion.steps=10",
            "inversion.guidance=1.0",
            "render.steps=12",
            "render.guidance=3.0",
            "interpolation.pairs_per_class=4",
            "interpolation.interior=3",
            "centroids.sizes=[3]",
            "centroids.groups=[2]",
        ],
    )
    work = study_work("latents", cfg)
    # units: 2 classes x (5 inversions + 4 pairs + 2 centroids)
    assert work.units == 2 * (5 + 4 + 2)
    # inversions: 10 images x 10 steps; renders: (8 paths x 4 methods x 3 points + 4 centroids x
    # 5 methods) frames x 12 steps x 2 (CFG)
    assert work.denoiser_calls == 10 * 10 + (8 * 4 * 3 + 4 * 5) * 12 * 2


def test_projection_is_units_left_times_the_median_over_workers():
    budget = TimeBudget(1.0, study_work("prompts", load_config("prompts")))
    budget.check(10, [100.0, 360.0, 500.0], workers=1)  # 10 x 360 s = 1 h: fits exactly
    with pytest.raises(StudyOverBudget, match=r"~1\.1 h for 11 units left \(360 s per unit"):
        budget.check(11, [100.0, 360.0, 500.0])
    budget.check(11, [100.0, 360.0, 500.0], workers=2)
    budget.check(10**6, [])  # nothing recorded: nothing to project


def _config(tiny_dir: Path, tmp: Path) -> Path:
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
        "metrics.pretrained=false",
        "study.example_pairs=0",
        "run.progress=false",
    ]
    path = tmp / "study.toml"
    write_config(load_config("prompts", None, overrides), path)
    return path


def _units(out: Path) -> set[str]:
    return ResultStore(out, lock=False).completed()


_REFUSE = """
import sys
from whichway.cli import main
rc = main(sys.argv[1:])
print({"rc": rc, "torch": "torch" in sys.modules, "diffusers": "diffusers" in sys.modules})
"""


def test_budget_stops_a_fresh_run_refuses_its_resume_and_a_rerun_finishes_it(
    tiny_pipeline, tmp_path, capsys
):
    cfg = _config(tiny_pipeline("sd"), tmp_path)
    out = tmp_path / "run"
    run = ["study", "prompts", "run", str(cfg), "--out", str(out), "--no-report"]

    # fresh run, no history: the first max(2, workers) = 2 units run, then a clean stop
    capsys.readouterr()
    assert main([*run, "--max-hours", "1e-9"]) == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]
    assert len(errors) == 1, errors  # one line (beside diffusers' loading bars)
    err = errors[0].strip()
    assert err.startswith("whichway study: error: study needs ~"), err
    assert "study needs ~" in err and "5 units left" in err and "median of 2 done" in err
    assert err.endswith("--max-hours 1e-09"), err
    kept = _units(out)
    assert len(kept) == 2
    work = study_work("prompts", load_config("prompts", cfg))
    assert f"the config asks for {work.units} units, {work.denoiser_calls:,} denoiser calls" in err

    # resume with the budget: refused from the recorded timings before any model loads
    proc = subprocess.run(
        [sys.executable, "-c", _REFUSE, *run, "--max-hours", "1e-9"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [ln for ln in proc.stderr.splitlines() if "error" in ln]
    assert len(lines) == 1 and "study needs ~" in lines[0], proc.stderr
    assert "5 units left" in lines[0] and "median of 2 done" in lines[0]
    state = eval(proc.stdout.strip().splitlines()[-1])  # the dict printed by _REFUSE
    # no pipeline was built (diffusers never imported; torch is, by the seeded pair sampler)
    assert state["rc"] == 2 and state["diffusers"] is False
    assert _units(out) == kept

    # a rerun with room to spare (and the units kept) finishes the study
    assert main([*run, "--max-hours", "1000"]) == 0
    assert "7 units, 5 run now, 2 already done" in capsys.readouterr().out
    assert _units(out) >= kept and len(_units(out)) == 7
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete"


def test_bad_max_hours_is_refused_before_anything_runs(tmp_path, capsys):
    cfg = tmp_path / "s.toml"
    write_config(load_config("prompts"), cfg)
    for bad in ("-1", "nan", "inf"):
        assert main(["study", "prompts", "run", str(cfg), "--max-hours", bad]) == 2
        assert "--max-hours must be a number of hours >= 0" in capsys.readouterr().err
    assert main(["study", "prompts", "run", str(cfg), "--set", "run.max_hours=-2"]) == 2
    assert "run.max_hours must be >= 0" in capsys.readouterr().err
    assert not (tmp_path / "study-prompts-s").exists()


def test_init_writes_the_budget_commented_and_it_round_trips(tmp_path, capsys):
    for study in ("prompts", "latents"):
        path = tmp_path / f"{study}.toml"
        assert main(["study", study, "init", str(path), "--set", "run.max_hours=2.5"]) == 0
        lines = path.read_text().splitlines()
        i = lines.index("max_hours = 2.5")
        assert lines[i - 1].startswith("# time budget in hours") and "0 = no limit" in lines[i - 1]
        assert load_config(study, path).run.max_hours == 2.5
    assert load_config("prompts").run.max_hours == 0.0  # default: no limit
