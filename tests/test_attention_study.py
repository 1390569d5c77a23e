"""The prompt study with ``study.methods``: AID, PAID and DiffMorpher rows on the OT path beside
the couplings, each equal to an independent render of that method, tested against OT in the
report, refused before any model loads when they cannot run, and resumed without rendering."""

from __future__ import annotations

import re
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


def test_unit_method_rows_equal_independent_renders(tiny_pipeline, tmp_path):
    from whichway.attention import AIDSettings, AttentionPath, settings_for, with_guide
    from whichway.media import load_image, save_image
    from whichway.morph import MorphSettings, run_morph
    from whichway.render import conditioning_path, render_frames

    overrides = [f'model.id="{tiny_pipeline("sd")}"', *BASE, 'study.couplings=["clip"]',
                 'study.methods=["aid-inner", "paid", "diffmorpher"]', "study.save_frames=true",
                 'study.guide_prompt="{a} and {b}"', "diffmorpher.lora_steps=1"]  # fmt: skip
    cfg = load_config("prompts", None, overrides)
    worker = PromptStudyWorker(to_dict(cfg))
    guide = "a black cat and a brown dog"
    payload = {"pair_id": "x", "prompt_a": "a black cat", "prompt_b": "a brown dog",
               "similarity": 1.2, "group": 1.5, "seed": 11, "guide": guide}  # fmt: skip
    res = worker(Unit("x", payload))
    rows = {r["coupling"]: r for r in res.rows}
    assert set(rows) == {"clip", "aid-inner", "paid", "diffmorpher"}
    assert rows["paid"]["guide_prompt"] == guide and rows["aid-inner"]["guide_prompt"] == ""
    # every method row is the OT path's: its cost is OT's (lower than clip's)
    assert rows["aid-inner"]["coupling_cost"] < rows["clip"]["coupling_cost"]
    assert rows["paid"]["coupling_cost"] == rows["diffmorpher"]["coupling_cost"]

    def lpips(name):
        return torch.tensor(rows[name]["lpips_steps"], dtype=torch.float64)

    # AID and PAID: independent renders of the OT path with the pair's seed (PAID: the guide in
    # the middle frame, the official PAID settings)
    a = worker.adapter
    cond = a.encode([payload["prompt_a"], payload["prompt_b"], guide])
    ts = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    path, _ = conditioning_path(cond.select(0), cond.select(1), ts, coupling="ot")
    latent = a.initial_latent(11, 32, 32)
    paid = settings_for("paid", fused=True, warmup_ratio=0.5, layers="both")
    for name, aid, waypoints in [("aid-inner", AIDSettings(mode="inner"), path),
                                 ("paid", paid, with_guide(path, ts, cond.select(2)))]:  # fmt: skip
        attention = AttentionPath(aid, path.select([0, 2]), torch.stack([latent, latent]), ts)
        frames = render_frames(a, waypoints, latent, steps=2, guidance=cfg.render.guidance,
                               height=32, width=32, negative=worker.negative, progress=False,
                               attention=attention)  # fmt: skip
        assert torch.allclose(lpips(name), worker.meter.distances(frames).double(), atol=1e-6)
    assert not torch.allclose(lpips("paid"), lpips("aid-inner"), rtol=0.05, atol=0)

    # DiffMorpher: `whichway morph --method diffmorpher` between the unit's end frames saved as
    # images (official slerp latents, OT text path, its guidance 1), frame for frame
    files = []
    for k, name in ((0, "a.png"), (2, "b.png")):
        files.append(str(save_image(res.files[f"frames/x/clip/{k:04d}.png"], tmp_path / name)))
    s = MorphSettings("a black cat", "a brown dog", (0.0, 0.5, 1.0), coupling="ot",
                      latent="slerp", steps=2, guidance=1.0, height=32, width=32,
                      image_a=files[0], image_b=files[1], format=None, method="diffmorpher",
                      lora_steps=1)  # fmt: skip
    morph = torch.stack([load_image(f) for f in run_morph(a, s, tmp_path / "morph").frames])
    ours = torch.stack([res.files[f"frames/x/diffmorpher/{k:04d}.png"] for k in range(3)])
    assert torch.equal((ours * 255).round() / 255, morph)  # the morph's frames are 8-bit
    assert torch.allclose(lpips("diffmorpher"), worker.meter.distances(ours).double(), atol=1e-6)
    # its end frames are its own (the images' reconstructions), not the shared ones
    assert not torch.equal(ours[0], res.files["frames/x/clip/0000.png"])


def test_unknown_study_method_is_refused():
    with pytest.raises(ValueError, match="unknown study.methods entry 'pa1d'"):
        load_config("prompts", None, ['study.methods=["pa1d"]'])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (['study.methods=["paid"]'], "study.methods has paid, which needs a guide prompt"),
        (['study.guide_prompt="{a} with {c}"', 'study.methods=["paid"]'], r"names '\{c\}'"),
        (['study.guide_prompt="{a} and {b}"'], "study.guide_prompt is PAID's guide prompt"),
        (["diffmorpher.lora_steps=-1"], "diffmorpher.lora_steps must be a whole number"),
        (["diffmorpher.attn_lambda=2"], "diffmorpher.attn_lambda must lie in"),
    ],
)
def test_method_config_errors_are_one_line(overrides, message):
    from whichway.studies.config import check_prompt_methods

    with pytest.raises(ValueError, match=message) as info:
        check_prompt_methods(load_config("prompts", None, overrides))
    assert "\n" not in str(info.value)


def test_method_errors_before_any_model_loads(tmp_path, capsys):
    # a model folder that is not a pipeline: loading it would fail, so the errors come first
    pairs = tmp_path / "pairs.csv"
    pd.DataFrame({"prompt_a": ["a cat", "a red car"], "prompt_b": ["a dog", "a blue car"],
                  "guide": ["a cat-dog", " "]}).to_csv(pairs, index=False)  # fmt: skip
    common = [f'model.id="{tmp_path / "nothing"}"', *BASE, 'pairs.source="file"',
              f'pairs.file="{pairs}"', "pairs.stratify=false", "pairs.n_per_group=2"]  # fmt: skip
    cfg = tmp_path / "study.toml"
    for extra, message in [
        (['study.methods=["paid"]'], "pair 'p[0-9a-f]+' .'a red car' -> 'a blue car'. has an empty guide"),
        (['study.methods=["paid"]', 'study.guide_prompt="{a} and {b}"'], "has a guide column and study.guide_prompt is set"),
    ]:  # fmt: skip
        write_config(load_config("prompts", None, [*common, *extra]), cfg)
        assert main(["study", "prompts", "run", str(cfg), "--out", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and re.search(message, err)
    # DiffMorpher on an SD3 folder: refused from its model_index.json
    sd3 = tmp_path / "sd3"
    sd3.mkdir()
    (sd3 / "model_index.json").write_text('{"_class_name": "StableDiffusion3Pipeline"}')
    write_config(load_config("prompts", None, [*common, f'model.id="{sd3}"',
                                               'study.methods=["diffmorpher"]']), cfg)  # fmt: skip
    assert main(["study", "prompts", "run", str(cfg), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert (
        "diffmorpher in study.methods is built for sd, sdxl models (UNet up blocks), not sd3; remove it from study.methods"
        in err
    )


def test_report_tests_ot_against_the_method_rows_and_resume_renders_nothing(
    tiny_pipeline, tmp_path, capsys
):
    overrides = [
        f'model.id="{tiny_pipeline("sd")}"', *BASE, 'pairs.source="cxc"',
        f'pairs.sts=["{FIX / "cxc_small.csv"}"]', f'pairs.coco=["{FIX / "coco_small.json"}"]',
        "pairs.n_per_group=1", "pairs.group_width=2.5", "run.progress=false",
        'study.couplings=["ot", "clip"]',
        'study.methods=["aid-outer", "paid", "diffmorpher"]', "diffmorpher.lora_steps=1",
        'study.guide_prompt="{a}, then {b}"',
        "study.example_pairs=0",
    ]  # fmt: skip
    cfg = tmp_path / "study.toml"
    write_config(load_config("prompts", None, overrides), cfg)
    out = tmp_path / "run"
    assert main(["study", "prompts", "run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    sig = pd.read_csv(out / "report" / "significance.csv")
    tested = {"ot < clip", "ot < aid-outer", "ot < paid", "ot < diffmorpher"}
    assert tested <= set(sig[sig.metric == "ppl"].comparison)
    assert "ot < aid-outer" not in set(sig[sig.metric == "coupling_cost"].comparison)
    report = (out / "report" / "report.md").read_text()
    assert "aid-outer" in report and "paid: AID whose middle frames follow" in report
    assert "diffmorpher: between the pair's two end frames" in report and "1 steps" in report
    rows = pd.read_csv(out / "report" / "summary.csv")
    assert list(dict.fromkeys(rows.coupling)) == ["ot", "clip", "aid-outer", "paid", "diffmorpher"]
    capsys.readouterr()
    # a finished run resumes without rendering (nor loading the model)
    assert main(["study", "prompts", "run", str(cfg), "--out", str(out), "--no-progress"]) == 0
    assert " 0 run now" in capsys.readouterr().out


def test_runs_recorded_before_the_method_settings_existed_resume():
    from whichway.studies.config import PromptStudyConfig
    from whichway.studies.prompt_study import check_resumable

    new = to_dict(load_config("prompts", None, []))
    old = {k: dict(v) for k, v in new.items()}
    del old["study"]["guide_prompt"]  # a run made before the setting existed
    check_resumable(old, new, to_dict(PromptStudyConfig()))
    changed = to_dict(load_config("prompts", None, ['study.methods=["paid"]',
                                                     'study.guide_prompt="{a}"']))  # fmt: skip
    with pytest.raises(ValueError, match="study.guide_prompt: '' -> '{a}'"):
        check_resumable(old, changed, to_dict(PromptStudyConfig()))
