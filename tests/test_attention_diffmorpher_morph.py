"""``--method diffmorpher`` end to end on the tiny SD model: end frames, cached LoRAs, resume,
and one-line errors before any model loads."""

from __future__ import annotations

import json
import re

import pytest
import torch

from whichway.attention.methods import LORA_STEP_ROWS
from whichway.cli import main
from whichway.models.timing import Preparation, run_seconds
from whichway.morph import MorphSettings, pending_preparation, run_morph

FAST = ["--steps", "2", "--height", "32", "--width", "32", "--guidance", "1", "--quiet"]


def _images(tmp_path):
    from whichway.media import to_pil

    g = torch.Generator().manual_seed(0)
    for name in ("a.png", "b.png"):
        to_pil(torch.rand(3, 32, 32, generator=g)).save(tmp_path / name)
    return str(tmp_path / "a.png"), str(tmp_path / "b.png")


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_end_frames_are_the_inverted_images_under_their_own_lora(tiny_pipeline, tmp_path, family):
    """As today's image morph: each end frame is exactly the render of its image's inversion,
    both (inversion and render) under that image's LoRA; the LoRAs are fitted once, cached, and
    a rerun neither refits nor renders again; run.json records the settings."""
    from safetensors.torch import load_file

    from whichway.attention.diffmorpher import RowAlphas, interpolated_loras
    from whichway.attention.lora_cache import lora_key
    from whichway.attention.methods import DiffMorpherSettings
    from whichway.media import load_image
    from whichway.models import load_adapter

    adapter = load_adapter(str(tiny_pipeline(family)), device="cpu")
    a, b = _images(tmp_path)
    prompts = ("a photo of a cat", "a red dog")
    s = MorphSettings(
        *prompts,
        t=(0.0, 0.5, 1.0),
        latent="slerp",
        steps=4,
        guidance=1.0,
        height=32,
        width=32,
        image_a=a,
        image_b=b,
        format=None,
        method="diffmorpher",
        lora_rank=2,
        lora_steps=2,
        lora_lr=1e-3,
    )
    run = tmp_path / "run"
    # the run-time estimate's work before the frames: two fits of 2 steps, two 4-step inversions
    assert pending_preparation(adapter, s, run) == Preparation(2, 2, 2, 4)
    result = run_morph(adapter, s, run, progress=False)
    assert pending_preparation(adapter, s, run) == Preparation(0, 2, 0, 4)  # all of it cached
    info = json.loads((run / "run.json").read_text())
    assert info["settings"]["method"] == "diffmorpher"
    assert {k: info["settings"][k] for k in ("lora_rank", "lora_steps", "lora_lr")} == {
        "lora_rank": 2,
        "lora_steps": 2,
        "lora_lr": 1e-3,
    }
    assert info["settings"]["attn_lambda"] == 0.6
    assert "warmup_ratio" not in info["settings"]
    dm = DiffMorpherSettings(2, 2, 1e-3)
    for frame, path, prompt in (
        (result.frames[0], a, prompts[0]),
        (result.frames[-1], b, prompts[1]),
    ):
        key = lora_key(adapter, path, prompt, dm, (32, 32))
        lora = load_file(run / "loras" / f"lora-{key}.safetensors")
        adapter.use_scheduler("ddim")
        try:
            with interpolated_loras(adapter.pipe.unet, lora, lora, RowAlphas(torch.zeros(1))):
                latent = adapter.invert(
                    load_image(path), prompt, steps=4, guidance=1.0, height=32, width=32
                )
                expected = adapter.render(
                    adapter.encode([prompt]),
                    latent[None],
                    steps=4,
                    guidance=1.0,
                    height=32,
                    width=32,
                )[0]
        finally:
            adapter.use_scheduler("default")
        assert (load_image(frame) - expected).abs().max() <= 1 / 255 + 1e-6
    cached = sorted((run / "loras").glob("lora-*.safetensors"))
    assert len(cached) == 2
    stamps = [p.stat().st_mtime_ns for p in cached]
    again = run_morph(adapter, s, run, progress=False)
    assert again.rendered == 0
    assert [p.stat().st_mtime_ns for p in cached] == stamps


def test_run_time_estimate_adds_the_lora_fits_not_cached(tiny_adapter, tmp_path):
    """With N LoRA steps the estimate exceeds the plain image morph's by 2 fits x N steps x
    LORA_STEP_ROWS denoiser rows; a LoRA cached in the run folder drops its fit."""
    from whichway.attention.lora_cache import lora_file, lora_key
    from whichway.attention.methods import DiffMorpherSettings

    adapter = tiny_adapter("sd")
    a, b = _images(tmp_path)
    common = {"t": (0.0, 1.0), "steps": 3, "height": 32, "width": 32, "image_a": a, "image_b": b}
    run = tmp_path / "run"
    plain = pending_preparation(adapter, MorphSettings("x", "y", guidance=5.0, **common), run)
    assert plain == Preparation(0, 0, 2, 3)  # inversions at guidance 1: one row per step
    s = MorphSettings("x", "y", method="diffmorpher", lora_steps=7, **common)
    dm = pending_preparation(adapter, s, run)
    assert dm == Preparation(2, 7, 2, 3)
    calls, call, decode, row = 6, 0.5, 0.25, 0.125
    extra = run_seconds(calls, call, 2, decode, dm, row) - run_seconds(
        calls, call, 2, decode, plain, row
    )
    assert extra == pytest.approx(2 * 7 * LORA_STEP_ROWS * row, rel=1e-12)
    assert run_seconds(calls, call, 2, decode) == calls * call + 2 * decode
    key = lora_key(adapter, a, "x", DiffMorpherSettings(lora_steps=7), (32, 32))
    lora_file(run / "loras", key).parent.mkdir(parents=True)
    lora_file(run / "loras", key).touch()
    assert pending_preparation(adapter, s, run) == Preparation(1, 7, 2, 3)
    assert pending_preparation(adapter, MorphSettings("x", "y", (0.0, 1.0)), run) == Preparation()


BASE = ["morph", "a cat", "a dog", "--method", "diffmorpher"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "morphs between two images: give --image-a and --image-b"),
        (["--image-a", "A", "--image-b", "B", "--lora-rank", "0"], "--lora-rank must be"),
        (["--image-a", "A", "--image-b", "B", "--lora-steps", "-3"], "--lora-steps must be"),
        (["--image-a", "A", "--image-b", "B", "--lora-lr", "0"], r"--lora-lr must lie in \(0, 1\]"),
        (["--image-a", "A", "--image-b", "B", "--attn-lambda", "2"], r"--attn-lambda must lie"),
        (["--image-a", "A", "--image-b", "B", "--warmup-ratio", "0.3"], r"--warmup-ratio set"),
        (["--image-a", "A", "--image-b", "B", "--no-fused"], r"--fused/--no-fused set"),
    ],
)
def test_cli_rejects_bad_diffmorpher_requests_in_one_line(tmp_path, capsys, extra, message):
    """No model is named that exists: the check comes before any load."""
    extra = [
        str(tmp_path / "a.png") if x == "A" else str(tmp_path / "b.png") if x == "B" else x
        for x in extra
    ]
    _images(tmp_path)
    rc = main(
        [*BASE, "--model", str(tmp_path / "no-model"), "--out", str(tmp_path / "o"), *FAST, *extra]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert re.search(message, err), err


def test_cli_lora_options_need_diffmorpher(tmp_path, capsys):
    rc = main(["morph", "a", "b", "--lora-rank", "4", "--model", str(tmp_path / "none"), *FAST])
    assert rc == 2
    err = capsys.readouterr().err
    assert "add --method diffmorpher" in err and len(err.strip().splitlines()) == 1


def test_cli_rejects_an_unsupported_family_before_loading(tiny_pipeline, tmp_path, capsys):
    a, b = _images(tmp_path)
    model = str(tiny_pipeline("sd3"))
    rc = main([*BASE, "--image-a", a, "--image-b", b, "--model", model, *FAST])
    assert rc == 2
    # (building the tiny model reports on stderr first)
    err = [line for line in capsys.readouterr().err.splitlines() if "shards" not in line]
    expected = (
        "whichway morph: error: --method diffmorpher is built for sd, sdxl models (UNet up blocks), "
        "not sd3; use --method plain or aid-outer/aid-inner with this model"
    )
    assert [line for line in err if line.strip()] == [expected]


def test_perceptual_reschedule_keeps_the_end_frames(tiny_pipeline, tmp_path):
    """DiffMorpher's reschedule is ``--spacing perceptual``: the frames are re-spaced (recorded
    in run.json, t from 0 to 1) and the end frames are the uniform run's, pixel for pixel."""
    from whichway.media import load_image
    from whichway.metrics import LPIPSPath
    from whichway.models import load_adapter

    adapter = load_adapter(str(tiny_pipeline("sd")), device="cpu")
    a, b = _images(tmp_path)
    common = dict(
        t=(0.0, 0.25, 0.5, 0.75, 1.0),
        steps=2,
        guidance=1.0,
        height=32,
        width=32,
        image_a=a,
        image_b=b,
        format=None,
        method="diffmorpher",
        lora_rank=2,
        lora_steps=1,
    )
    uniform = run_morph(
        adapter, MorphSettings("a cat", "a dog", **common), tmp_path / "u", progress=False
    )
    meter = LPIPSPath("alex", pretrained_backbone=False)
    spaced = run_morph(
        adapter,
        MorphSettings("a cat", "a dog", spacing="perceptual", **common),
        tmp_path / "p",
        progress=False,
        meter=meter,
    )
    info = json.loads((tmp_path / "p" / "run.json").read_text())
    assert info["spacing"]["frames_rendered"] >= 5
    assert info["t"][0] == 0.0 and info["t"][-1] == 1.0 and len(info["t"]) == 5
    for i in (0, -1):
        assert torch.equal(load_image(uniform.frames[i]), load_image(spaced.frames[i]))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "diffmorpher"], "uses method diffmorpher, which morphs between two images"),
        (["--method", "aid-outer", "--lora-rank", "4"], "--lora-rank set(s) how DiffMorpher acts"),
    ],
)
def test_travel_refuses_diffmorpher_without_images_in_one_line(tmp_path, capsys, extra, message):
    rc = main(["travel", "a cat", "a dog", "--model", str(tmp_path / "none"), *extra])
    assert rc == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
