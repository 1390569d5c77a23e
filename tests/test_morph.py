"""`whichway morph` / `grid` end to end on tiny pipelines loaded by path, as a user's hub id is."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from PIL import Image

from whichway.cli import main
from whichway.morph import MorphSettings, check_times, run_morph, uniform_times

FAST = ["--steps", "2", "--height", "32", "--width", "32", "--guidance", "4", "--quiet"]


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.mark.parametrize("family", ["sd", "sdxl", "sd3", "flux"])
def test_cli_morph_writes_a_complete_run(tiny_pipeline, tmp_path, capsys, family):
    out = tmp_path / "run"
    rc = main(
        [
            "morph",
            "a photo of a cat",
            "a red dog",
            "--model",
            str(tiny_pipeline(family)),
            "--frames",
            "4",
            "--format",
            "gif",
            "--out",
            str(out),
            *FAST,
        ]
    )
    assert rc == 0
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "done" and info["family"] == family
    assert info["t"] == [0.0, 0.333333, 0.666667, 1.0]
    assert info["settings"]["coupling"] == "ot" and info["settings"]["seed"] == 0
    assert {"torch", "diffusers", "whichway"} <= set(info["versions"])
    assert [c["method"] for c in info["couplings"]] == ["ot"] * len(info["couplings"])
    for f in info["frames"]:
        assert _pixels(out / f).shape == (32, 32, 3)
    assert (out / "strip.png").is_file()
    with Image.open(out / "morph.gif") as gif:
        assert gif.n_frames == 4
    assert "4 frames" in capsys.readouterr().out


def test_morph_endpoints_match_the_plain_pipeline_and_reruns_are_identical(tiny_pipeline, tmp_path):
    from whichway.models import load_adapter

    adapter = load_adapter(str(tiny_pipeline("sd")), device="cpu")
    settings = MorphSettings(
        "a photo of a cat",
        "a red dog",
        t=(0.0, 0.5, 1.0),
        steps=2,
        guidance=4.0,
        height=32,
        width=32,
        seed=5,
        format=None,
    )
    first = run_morph(adapter, settings, tmp_path / "a", progress=False)
    again = run_morph(adapter, settings, tmp_path / "b", progress=False)
    for p, q in zip(first.frames, again.frames):
        assert np.array_equal(_pixels(p), _pixels(q))
    for frame, prompt in ((first.frames[0], "a photo of a cat"), (first.frames[-1], "a red dog")):
        plain = adapter.pipe(
            prompt,
            generator=torch.Generator("cpu").manual_seed(5),
            num_inference_steps=2,
            guidance_scale=4.0,
            height=32,
            width=32,
            output_type="np",
        ).images[0]
        expected = np.clip(np.rint(plain * 255), 0, 255).astype(np.uint8)
        assert np.abs(_pixels(frame).astype(int) - expected.astype(int)).max() <= 1


def test_rerun_resumes_only_missing_frames(tiny_pipeline, tmp_path):
    from whichway.models import load_adapter

    adapter = load_adapter(str(tiny_pipeline("sd")), device="cpu")
    settings = MorphSettings(
        "a cat", "a dog", t=uniform_times(4), steps=2, height=32, width=32, format=None
    )
    full = run_morph(adapter, settings, tmp_path, progress=False)
    kept = {p: _pixels(p) for p in full.frames}
    full.frames[1].unlink()
    full.frames[3].unlink()
    resumed = run_morph(adapter, settings, tmp_path, progress=False)
    assert resumed.rendered == 2
    for p in full.frames:
        assert np.array_equal(_pixels(p), kept[p])
    # a setting that changes pixels invalidates the finished frames
    other = run_morph(
        adapter,
        MorphSettings(
            "a cat",
            "a dog",
            t=uniform_times(4),
            steps=2,
            height=32,
            width=32,
            format=None,
            coupling="clip",
        ),
        tmp_path,
        progress=False,
    )
    assert other.rendered == 4


def test_latent_path_between_two_seeds(tiny_pipeline, tmp_path):
    from whichway.models import load_adapter

    adapter = load_adapter(str(tiny_pipeline("sd")), device="cpu")
    s = MorphSettings(
        "a cat",
        "a cat",
        t=(0.0, 0.5, 1.0),
        latent="cog",
        seed=1,
        seed_b=2,
        steps=2,
        height=32,
        width=32,
        format=None,
    )
    result = run_morph(adapter, s, tmp_path, progress=False)
    alone = run_morph(
        adapter,
        MorphSettings(
            "a cat", "a cat", t=(0.0, 1.0), seed=2, steps=2, height=32, width=32, format=None
        ),
        tmp_path / "b",
        progress=False,
    )
    # the last latent is seed_b's own latent: same picture up to batch float noise (1 level of 255)
    diff = np.abs(_pixels(result.frames[-1]).astype(int) - _pixels(alone.frames[-1]).astype(int))
    assert diff.max() <= 1
    assert json.loads((tmp_path / "run.json").read_text())["latent_used"] == "cog"


def test_real_image_morph_inverts_both_images(tiny_pipeline, tmp_path):
    out = tmp_path / "run"
    for name, color in (("a.png", (200, 30, 30)), ("b.png", (30, 30, 200))):
        Image.new("RGB", (32, 32), color).save(tmp_path / name)
    rc = main(
        [
            "morph",
            "a cat",
            "a dog",
            "--model",
            str(tiny_pipeline("sd")),
            "--frames",
            "3",
            "--image-a",
            str(tmp_path / "a.png"),
            "--image-b",
            str(tmp_path / "b.png"),
            "--inversion-steps",
            "2",
            "--format",
            "none",
            "--out",
            str(out),
            *FAST,
        ]
    )
    assert rc == 0
    info = json.loads((out / "run.json").read_text())
    assert info["latent_used"] == "cog"
    assert len(list((out / "latents").glob("inverted-*.pt"))) == 2  # cached for resumed runs


def test_real_image_morph_end_frames_are_the_inverted_images(tiny_pipeline, tmp_path):
    """The end frames of an image morph are exactly what rendering each image's inversion gives,
    with the DDIM sampler the inversion is for, the morph's steps and guidance; and the adapter
    gets its own scheduler back. (That inversion reconstructs is tested at latent level in
    test_models_sd.py: a random tiny VAE cannot round-trip pixels.)"""
    from whichway.media import load_image, to_pil
    from whichway.models import load_adapter

    adapter = load_adapter(str(tiny_pipeline("sd")), device="cpu")
    default = adapter.scheduler_name
    g = torch.Generator().manual_seed(0)
    for name in ("a.png", "b.png"):
        to_pil(torch.rand(3, 32, 32, generator=g)).save(tmp_path / name)
    prompts = ("a photo of a cat", "a red dog")
    s = MorphSettings(
        *prompts,
        t=(0.0, 0.5, 1.0),
        steps=4,
        guidance=1.0,
        height=32,
        width=32,
        image_a=str(tmp_path / "a.png"),
        image_b=str(tmp_path / "b.png"),
        format=None,
    )
    result = run_morph(adapter, s, tmp_path / "run", progress=False)
    assert adapter.scheduler_name == default  # given back as it was
    assert json.loads((tmp_path / "run" / "run.json").read_text())["scheduler"] == "DDIMScheduler"
    for frame, name, prompt in (
        (result.frames[0], "a.png", prompts[0]),
        (result.frames[-1], "b.png", prompts[1]),
    ):
        latent = adapter.invert(
            load_image(tmp_path / name), prompt, steps=4, guidance=1.0, height=32, width=32
        )
        expected = adapter.render(
            adapter.encode([prompt]), latent[None], steps=4, guidance=1.0, height=32, width=32
        )[0]
        assert (load_image(frame) - expected).abs().max() <= 1 / 255 + 1e-6
        adapter.use_scheduler("default")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--frames", "1"], "at least 2 frames"),
        (["--t", "0,0.5,0.4"], "strictly increasing"),
        (["--t", "0,1.5"], r"must lie in \[0, 1\]"),
        (["--image-a", "nowhere.png"], "give both --image-a and --image-b"),
    ],
)
def test_cli_rejects_bad_paths(tiny_pipeline, tmp_path, capsys, extra, message):
    rc = main(
        [
            "morph",
            "a",
            "b",
            "--model",
            str(tiny_pipeline("sd")),
            "--out",
            str(tmp_path),
            *FAST,
            *extra,
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "error:" in err
    import re

    assert re.search(message, err), err


def test_cli_unreadable_image_names_the_file(tiny_pipeline, tmp_path, capsys):
    (tmp_path / "a.png").write_text("not a png")
    Image.new("RGB", (32, 32)).save(tmp_path / "b.png")
    rc = main(
        [
            "morph",
            "a",
            "b",
            "--model",
            str(tiny_pipeline("sd")),
            "--image-a",
            str(tmp_path / "a.png"),
            "--image-b",
            str(tmp_path / "b.png"),
            "--out",
            str(tmp_path / "o"),
            *FAST,
        ]
    )
    assert rc == 2 and "a.png" in capsys.readouterr().err


def test_cli_unknown_model_says_it_could_not_be_loaded(tmp_path, capsys):
    rc = main(
        [
            "morph",
            "a",
            "b",
            "--model",
            str(tmp_path / "no-such-model"),
            "--out",
            str(tmp_path / "o"),
            *FAST,
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "could not load model" in err and "HF_HUB_OFFLINE" in err


def test_check_times():
    check_times((0.0, 1.0))
    with pytest.raises(ValueError, match="at least 2 frames"):
        check_times((0.0,))
    with pytest.raises(ValueError, match="at least 2 frames"):
        uniform_times(1)
    assert uniform_times(3) == (0.0, 0.5, 1.0)


def test_seed_and_prompt_grids(tiny_pipeline, tmp_path, capsys):
    model = str(tiny_pipeline("sd"))
    rc = main(
        [
            "grid",
            "seeds",
            "a cat",
            "--seeds",
            "0,1,2",
            "--size",
            "3",
            "--model",
            model,
            "--out",
            str(tmp_path / "seeds.png"),
            *FAST,
        ]
    )
    assert rc == 0 and (tmp_path / "seeds.png").is_file()
    rc = main(
        [
            "grid",
            "prompts",
            "a cat",
            "a dog",
            "a red cat",
            "--size",
            "3",
            "--model",
            model,
            "--out",
            str(tmp_path / "prompts.png"),
            *FAST,
        ]
    )
    assert rc == 0 and (tmp_path / "prompts.png").is_file()
    assert main(["grid", "prompts", "a", "b", "--model", model, *FAST]) == 2
    assert "3 or 4 prompts" in capsys.readouterr().err


def test_prompt_grid_corners_are_the_prompts_themselves(tiny_pipeline, tmp_path):
    from whichway.grid import prompt_grid
    from whichway.models import load_adapter
    from whichway.render import render_frames

    adapter = load_adapter(str(tiny_pipeline("sd")), device="cpu")
    prompts = ["a cat", "a dog", "a red cat", "green grass"]
    result = prompt_grid(
        adapter,
        prompts,
        tmp_path / "g.png",
        size=2,
        steps=2,
        guidance=4.0,
        height=32,
        width=32,
        progress=False,
    )
    alone = render_frames(
        adapter,
        adapter.encode(prompts),
        adapter.initial_latent(0, 32, 32),
        steps=2,
        guidance=4.0,
        height=32,
        width=32,
        progress=False,
    )
    corners = [result.cells[0, 0], result.cells[0, 1], result.cells[1, 0], result.cells[1, 1]]
    for corner, image in zip(corners, alone):
        assert torch.allclose(corner, image, atol=1e-5)


def test_perceptual_spacing_records_its_times_and_resumes(tiny_pipeline, tmp_path):
    from whichway.metrics import LPIPSPath
    from whichway.models import load_adapter

    adapter = load_adapter(str(tiny_pipeline("sd")), device="cpu")
    meter = LPIPSPath("alex", pretrained_backbone=False)
    s = MorphSettings(
        "a photo of a cat",
        "a red dog",
        t=uniform_times(4),
        steps=2,
        height=32,
        width=32,
        format=None,
        spacing="perceptual",
    )
    result = run_morph(adapter, s, tmp_path, progress=False, meter=meter)
    info = json.loads((tmp_path / "run.json").read_text())
    t = info["t"]
    assert t[0] == 0.0 and t[-1] == 1.0 and all(b > a for a, b in itertools.pairwise(t))
    assert list(result.t) == t and len(result.frames) == 4
    assert info["spacing"]["t_coarse"] == list(uniform_times(4))
    assert result.rendered == info["spacing"]["frames_rendered"] >= 8  # coarse pass + final pass
    # the measured steps of the final frames are what the respacer reported
    measured = meter.distances(torch.stack([_tensor(p) for p in result.frames]))
    assert torch.allclose(
        measured, torch.tensor(info["spacing"]["steps_after"], dtype=measured.dtype), atol=2e-3
    )
    again = run_morph(adapter, s, tmp_path, progress=False, meter=meter)
    assert again.rendered == 0 and list(again.t) == t


def _tensor(path) -> torch.Tensor:
    from whichway.media import load_image

    return load_image(path)


def test_perceptual_spacing_refuses_nao_paths():
    with pytest.raises(ValueError, match="equally spaced"):
        MorphSettings("a", "b", t=(0.0, 0.5, 1.0), latent="nao", spacing="perceptual")


def test_cli_prints_and_stores_path_metrics(tiny_pipeline, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(
        [
            "morph",
            "a cat",
            "a dog",
            "--model",
            str(tiny_pipeline("sd")),
            "--frames",
            "3",
            "--format",
            "none",
            "--out",
            str(out),
            "--lpips-random-backbone",
            *FAST,
        ]
    )
    assert rc == 0
    assert "PPL" in capsys.readouterr().out
    metrics = json.loads((out / "run.json").read_text())["metrics"]
    assert len(metrics["steps"]) == 2 and metrics["ppl"] == pytest.approx(sum(metrics["steps"]))


def test_settings_come_back_from_the_run_json_record(tiny_adapter):
    from dataclasses import replace

    from whichway.morph import _settings_record

    settings = MorphSettings(
        "a cat",
        "a dog",
        t=(0.0, 0.25, 1.0),
        latent="slerp",
        seed_b=4,
        steps=3,
        height=32,
        width=32,
        batch_size="auto",
        format=None,
    )
    record = json.loads(json.dumps(_settings_record(settings, tiny_adapter("sd"))))
    assert MorphSettings.from_record(record) == settings
    # what a run with runtime options records (LoRAs, sampler) is not a setting of the morph itself
    record["runtime"] = {"sampler": "euler", "loras": [{"sha256": "0" * 64, "scale": 0.8}]}
    assert MorphSettings.from_record(record) == settings
    # the model's own size stands in for an unset one
    adapter = tiny_adapter("sd")
    unset = replace(settings, height=None, width=None)
    height, width = adapter.default_size
    assert MorphSettings.from_record(_settings_record(unset, adapter)) == replace(
        settings, height=height, width=width
    )


def test_perceptual_spacing_needs_frames_lpips_can_measure():
    with pytest.raises(ValueError, match="needs height >= 32, got 16"):
        MorphSettings("a cat", "a dog", t=(0.0, 0.5, 1.0), spacing="perceptual", height=16)
    MorphSettings(
        "a cat", "a dog", t=(0.0, 0.5, 1.0), spacing="uniform", height=16
    )  # no LPIPS, no limit
