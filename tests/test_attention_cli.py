"""`whichway morph --method ...` end to end on the tiny SD pipeline, and the one-line errors a
method request gets before any model loads."""

from __future__ import annotations

import json

import pytest

from whichway.cli import main
from whichway.morph import MorphSettings, run_morph

FAST = ["--steps", "2", "--height", "32", "--width", "32", "--guidance", "4", "--quiet"]
FAST += ["--no-score", "--format", "none", "--frames", "4"]


def test_paid_morph_records_its_method_and_resumes(tiny_pipeline, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["morph", "a cat", "a dog", "--model", str(tiny_pipeline("sd")), "--out", str(out)]
    argv += [*FAST, "--method", "paid", "--guide-prompt", "a cat and a dog", "--no-fused"]
    assert main([*argv, "--warmup-ratio", "0.5"]) == 0
    record = json.loads((out / "run.json").read_text())
    settings = record["settings"]
    assert settings["method"] == "paid"
    assert settings["guide_prompt"] == "a cat and a dog"
    assert (settings["warmup_ratio"], settings["fused"], settings["aid_layers"]) == (
        0.5,
        False,
        "both",
    )
    assert record["status"] == "done" and len(list((out / "frames").glob("*.png"))) == 4
    capsys.readouterr()
    assert main([*argv, "--warmup-ratio", "0.5"]) == 0
    assert "(0 rendered now)" in capsys.readouterr().out
    # another warmup ratio changes the pixels: every frame is rendered again
    assert main([*argv, "--warmup-ratio", "1"]) == 0
    assert "(4 rendered now)" in capsys.readouterr().out


def test_plain_records_no_attention_keys(tiny_adapter, tmp_path):
    """Runs recorded before attention methods existed keep resuming: a plain morph's run.json
    has none of their keys, and MorphSettings.from_record reads it back as plain."""
    adapter = tiny_adapter("sd")
    s = MorphSettings("a cat", "a dog", (0.0, 1.0), steps=1, height=32, width=32, format=None)
    result = run_morph(adapter, s, tmp_path, progress=False)
    recorded = json.loads((result.run_dir / "run.json").read_text())["settings"]
    assert "method" not in recorded and "warmup_ratio" not in recorded
    assert MorphSettings.from_record(recorded).method == "plain"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--method", "aid-outer", "--warmup-ratio", "-0.1"],
            r"--warmup-ratio must lie in \[0, 1\]",
        ),
        (["--guide-prompt", "a cat-dog"], "use --method paid"),
        (["--method", "aid-inner", "--guide-prompt", "x"], "use --method paid"),
        (["--method", "paid"], "needs a guide prompt"),
        (["--aid-layers", "self"], "add --method aid-outer, aid-inner or paid"),
        (["--method", "aid-outer", "--aid-layers", "self"], "flux has one joint attention"),
    ],
)
def test_method_errors_are_one_line_before_any_model_loads(tmp_path, capsys, extra, message):
    import re

    # a model folder that names a Flux pipeline but holds no weights: refused from its index
    model = tmp_path / "flux-model"
    model.mkdir()
    (model / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    argv = ["morph", "a", "b", "--model", str(model), "--out", str(tmp_path / "o"), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(message, err), err


def test_settings_refuse_self_or_cross_layers_on_joint_attention(tiny_adapter, tmp_path):
    s = MorphSettings(
        "a", "b", (0.0, 1.0), steps=1, method="aid-inner", aid_layers="self", format=None
    )
    with pytest.raises(ValueError, match="sd3 has one joint attention per block"):
        run_morph(tiny_adapter("sd3"), s, tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        MorphSettings("a", "b", (0.0, 1.0), method="aid-outer", warmup_ratio=2.0)


def test_beta_prior_spacing_picks_explored_frames_and_resumes(tiny_adapter, tmp_path, monkeypatch):
    import whichway.morph as morph
    from whichway.metrics import LPIPSPath

    monkeypatch.setattr(morph, "BETA_EXPLORATION", 5)  # the official 16, shortened for the test
    meter = LPIPSPath("alex", pretrained_backbone=False)
    s = MorphSettings(
        "a cat", "a dog", (0.0, 0.5, 1.0), steps=1, height=32, width=32, format=None,
        spacing="beta", method="aid-outer", warmup_ratio=1.0,
    )  # fmt: skip
    result = run_morph(tiny_adapter("sd"), s, tmp_path, progress=False, meter=meter)
    record = json.loads((tmp_path / "run.json").read_text())
    explored = record["spacing"]["t_explored"]
    assert record["spacing"]["prior"] == "beta" and len(explored) == 5
    assert result.rendered == 5 and len(result.frames) == 3
    assert result.t[0] == 0 and result.t[-1] == 1 and set(result.t) <= set(explored)
    again = run_morph(tiny_adapter("sd"), s, tmp_path, progress=False, meter=meter)
    assert again.rendered == 0 and again.t == result.t


def test_travel_with_aid_keeps_the_keyframes_and_resumes(tiny_adapter, tmp_path):
    """Every segment is rendered with AID between its two keyframes (batches span segments): the
    keyframe frames are the plain travel's, the frames between them are not; a rerun renders
    nothing; the settings are in run.json."""
    import numpy as np
    from PIL import Image

    from whichway.travel import Keyframe, TravelSettings, run_travel

    adapter = tiny_adapter("sd")
    keyframes = (
        Keyframe("a cat", seed=3),
        Keyframe("a red dog", seed=3),
        Keyframe("a car", seed=3),
    )
    common = {"frames_per_segment": 3, "batch_size": 4, "format": None, "steps": 3,
              "height": 32, "width": 32, "guidance": 4.0}  # fmt: skip
    plain = run_travel(adapter, TravelSettings(keyframes, **common), tmp_path / "p", progress=False)
    s = TravelSettings(keyframes, method="aid-outer", warmup_ratio=1.0, **common)
    aid = run_travel(adapter, s, tmp_path / "a", progress=False)

    def pixels(path):
        return np.asarray(Image.open(path).convert("RGB")).astype(int)

    keys = {0, 3, 6}
    assert len(aid.frames) == len(plain.frames) == 7
    for i in keys:  # the PNGs of the keyframes agree to one 8-bit level (float rounding)
        assert np.abs(pixels(aid.frames[i]) - pixels(plain.frames[i])).max() <= 1, i
    assert any(np.abs(pixels(aid.frames[i]) - pixels(plain.frames[i])).max() > 0 for i in (1, 4))
    record = json.loads((tmp_path / "a" / "run.json").read_text())["settings"]
    assert (record["method"], record["warmup_ratio"]) == ("aid-outer", 1.0)
    assert "method" not in json.loads((tmp_path / "p" / "run.json").read_text())["settings"]
    assert run_travel(adapter, s, tmp_path / "a", progress=False).rendered == 0


def test_bayesian_beta_prior_spacing_records_its_search_and_resumes(tiny_adapter, tmp_path):
    """beta-bo through run_morph (3 evaluations, 3 frames, 2 steps): run.json records every
    evaluated (α, β) with its smoothness and the chosen one, whose quantiles are the frames' t;
    a rerun renders nothing."""
    from whichway.attention.prior import beta_times
    from whichway.metrics import LPIPSPath

    meter = LPIPSPath("alex", pretrained_backbone=False)
    s = MorphSettings(
        "a cat", "a dog", (0.0, 0.5, 1.0), steps=2, height=32, width=32, format=None,
        spacing="beta-bo", beta_evaluations=3,
    )  # fmt: skip
    result = run_morph(tiny_adapter("sd"), s, tmp_path, progress=False, meter=meter)
    record = json.loads((tmp_path / "run.json").read_text())
    search = record["spacing"]
    assert record["settings"]["beta_evaluations"] == 3 and search["prior"] == "beta-bo"
    assert search["bounds"] == [1.0, 2.0]  # 0.5 x 2 warmup steps, widened to 2
    evaluated = [(e["alpha"], e["beta"]) for e in search["evaluated"]]
    assert (
        1 <= len(evaluated) <= 3
        and evaluated == [(1.0, 1.0), (1.0, 1.5), (1.0, 2.0)][: len(evaluated)]
    )
    assert search["step_bounds"] == []  # 3 evaluations are all grid: no GP-UCB step, no box
    best = max(search["evaluated"], key=lambda e: e["smoothness"])
    assert (search["alpha"], search["beta"], search["smoothness"]) == (
        best["alpha"], best["beta"], best["smoothness"],
    )  # fmt: skip
    assert result.t == tuple(beta_times(3, search["alpha"], search["beta"]).tolist())
    assert result.rendered == search["frames_rendered"] and len(result.frames) == 3
    again = run_morph(tiny_adapter("sd"), s, tmp_path, progress=False, meter=meter)
    assert again.rendered == 0 and again.t == result.t


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--beta-evaluations", "5"], "add --spacing beta-bo"),
        (["--spacing", "beta-bo", "--beta-evaluations", "0"], "at least 1 evaluation"),
        (["--spacing", "beta-bo", "--frames", "2"], "at least 3 frames"),
    ],
)
def test_bayesian_beta_prior_errors_are_one_line_before_any_model_loads(
    tmp_path, capsys, extra, message
):
    import re

    model = tmp_path / "no-model"  # never read: the options are refused first
    argv = ["morph", "a", "b", "--model", str(model), "--out", str(tmp_path / "o"), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(message, err), err
