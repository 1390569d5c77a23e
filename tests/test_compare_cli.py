"""``whichway compare``: the outputs of a run with a DiffMorpher row, and one-line errors (exit 2)
before any model loads."""

from __future__ import annotations

import csv
import json
import re

import pytest
import torch

from whichway.cli import main


def _images(tmp_path):
    from whichway.media import to_pil

    g = torch.Generator().manual_seed(0)
    for name in ("a.png", "b.png"):
        to_pil(torch.rand(3, 32, 32, generator=g)).save(tmp_path / name)
    return str(tmp_path / "a.png"), str(tmp_path / "b.png")


def test_compare_writes_strips_and_a_summary(tiny_pipeline, tmp_path, capsys):
    a, b = _images(tmp_path)
    out = tmp_path / "cmp"
    rc = main(
        [
            "compare", "a photo of a cat", "a red dog", "--model", str(tiny_pipeline("sd")),
            "--couplings", "ot", "--methods", "diffmorpher", "--image-a", a, "--image-b", b,
            "--lora-rank", "2", "--lora-steps", "1", "--frames", "3", "--steps", "2",
            "--guidance", "1", "--height", "32", "--width", "32", "--out", str(out),
            "--lpips-random-backbone", "--quiet",
        ]
    )  # fmt: skip
    assert rc == 0
    for name in ("compare.png", "ot.png", "diffmorpher.png", "compare.json", "compare.csv"):
        assert (out / name).is_file(), name
    assert len(list((out / "loras").glob("lora-*.safetensors"))) == 2  # cached for a rerun
    with open(out / "compare.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["coupling"] for r in rows] == ["ot", "diffmorpher"]
    assert all(float(r["ppl"]) >= 0 and float(r["smoothness"]) <= 1 for r in rows)  # LPIPS: present
    info = json.loads((out / "compare.json").read_text())
    assert info["settings"]["diffmorpher"]["lora_rank"] == 2
    assert info["settings"]["image_a"] == a
    assert "diffmorpher: cost" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--methods", "dm"], r"unknown 'dm' in --methods; choose from aid-outer, "),
        (["--couplings", "ot,nearest"], r"unknown 'nearest' in --couplings"),
        (["--methods", "diffmorpher"], r"give --image-a and --image-b"),
        (["--methods", "paid"], r"--methods paid needs --guide-prompt"),
        (["--guide-prompt", "x"], r"add paid to --methods"),
        (["--image-a", "A", "--image-b", "B"], r"add diffmorpher to --methods"),
        (["--lora-rank", "4"], r"--lora-rank set\(s\) how DiffMorpher acts; add diffmorpher"),
        (["--methods", "diffmorpher", "--image-a", "A", "--image-b", "B", "--attn-lambda", "2"],
         r"--attn-lambda must lie in \[0, 1\]"),
        (["--t", "0,0.5"], r"--t must start at 0 and end at 1"),
        (["--context-length", "4"], r"add --motion ADAPTER"),
        (["--motion", "NOWHERE"], r"does not exist"),
        (["--model", "SD3", "--methods", "diffmorpher", "--image-a", "A", "--image-b", "B"],
         r"diffmorpher in --methods is built for sd, sdxl models .UNet up blocks., not sd3; remove it from --methods with this model$"),
        (["--model", "SD3", "--methods", "aid-outer", "--aid-layers", "self"],
         r"--aid-layers self needs separate self- and cross-attention .sd, sdxl.; sd3 has one joint attention per block: use --aid-layers both$"),
        (["--methods", "aid-inner", "--warmup-ratio", "2"], r"--warmup-ratio must lie in \[0, 1\], got 2.0$"),
        (["--methods", "diffmorpher", "--image-a", "A", "--image-b", "B", "--no-fused"],
         r"--fused/--no-fused set\(s\) how AID acts; add aid-outer, aid-inner or paid to --methods$"),
    ],
)  # fmt: skip
def test_bad_requests_are_one_line_errors_before_loading(tmp_path, capsys, extra, message):
    """The model folder does not exist: every check comes before any load."""
    _images(tmp_path)
    (tmp_path / "sd3").mkdir()
    (tmp_path / "sd3" / "model_index.json").write_text(
        '{"_class_name": "StableDiffusion3Pipeline"}'
    )
    names = {"A": "a.png", "B": "b.png", "NOWHERE": "nowhere", "SD3": "sd3"}
    extra = [str(tmp_path / names[x]) if x in names else x for x in extra]
    argv = ["compare", "a cat", "a dog", "--model", str(tmp_path / "no-model"), *extra]
    rc = main([*argv, "--out", str(tmp_path / "o"), "--height", "32", "--width", "32"])
    assert rc == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("whichway compare: error: ") and re.search(message, err), err
