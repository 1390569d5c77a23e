"""compare_couplings: shared end frames, each strip the morph of its coupling, the costs morph
records, and a comparison saved as strips + compare.json."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from whichway.compare import compare_couplings, save_comparison
from whichway.media import to_pil
from whichway.morph import MorphSettings, run_morph


def test_each_strip_is_the_morph_of_its_coupling(tiny_adapter, tmp_path):
    adapter = tiny_adapter("sd")
    t = (0.0, 0.5, 1.0)
    kw = {"steps": 2, "guidance": 4.0, "height": 32, "width": 32, "seed": 7}
    result = compare_couplings(adapter, "a photo of a cat", "a red dog", t, **kw)
    frames = result.frames
    assert list(frames) == ["ot", "clip", "random"]
    for m in frames:
        assert frames[m].shape == (3, 3, 32, 32)
        assert torch.equal(frames[m][0], frames["ot"][0]) and torch.equal(
            frames[m][-1], frames["ot"][-1]
        )
    assert result.metrics is None

    for m in ("ot", "random"):
        run = run_morph(
            adapter,
            MorphSettings("a photo of a cat", "a red dog", t=t, coupling=m, format=None, **kw),
            tmp_path / m,
            progress=False,
        )
        assert result.costs[m] == pytest.approx(sum(c["cost"] for c in run.couplings), rel=1e-12)
        assert result.w2_path_length[m] == pytest.approx(
            sum(c["w2_path_length"] for c in run.couplings), rel=1e-9
        )
        for k, path in enumerate(run.frames):
            ours = np.asarray(to_pil(frames[m][k])).astype(int)
            theirs = np.asarray(_read(path)).astype(int)
            assert np.abs(ours - theirs).max() <= 1  # same frames, other batch layout
    assert (
        result.costs["ot"] <= result.costs["clip"] and result.costs["ot"] <= result.costs["random"]
    )

    strips = save_comparison(result, tmp_path / "cmp", adapter)
    info = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert info["command"] == "compare" and [r["coupling"] for r in info["couplings"]] == list(
        frames
    )
    assert all(p.is_file() for p in strips.values())


def test_end_frames_must_be_0_and_1(tiny_adapter):
    with pytest.raises(ValueError, match="start at 0 and end at 1"):
        compare_couplings(
            tiny_adapter("sd"), "a cat", "a dog", (0.0, 0.5), steps=1, height=32, width=32
        )


def test_small_frames_with_a_meter_are_refused_before_rendering(tiny_adapter, monkeypatch):
    import whichway.render

    adapter = tiny_adapter("sd")
    monkeypatch.setattr(whichway.render, "render_frames", lambda *a, **k: pytest.fail("rendered"))
    with pytest.raises(ValueError, match="at least 32x32 pixels, got 16x16"):
        compare_couplings(
            adapter, "a cat", "a dog", (0.0, 0.5, 1.0), steps=1, height=16, width=16, meter=object()
        )


def _read(path):
    from PIL import Image

    with Image.open(path) as img:
        return img.convert("RGB")


def test_diffmorpher_row_is_the_diffmorpher_morph_on_the_ot_path(tiny_pipeline, tmp_path):
    """attention=("diffmorpher",) adds the DiffMorpher morph of the two images (OT text path,
    slerp + AdaIN latents) as run_morph renders it, with its own end frames; the other rows are
    the same tensors as without it; its LoRAs are cached in ``cache``."""
    from whichway.attention.methods import DiffMorpherSettings
    from whichway.models import load_adapter

    adapter = load_adapter(str(tiny_pipeline("sd")), device="cpu")  # it switches samplers
    g = torch.Generator().manual_seed(0)
    images = []
    for name in ("a.png", "b.png"):
        to_pil(torch.rand(3, 32, 32, generator=g)).save(tmp_path / name)
        images.append(str(tmp_path / name))
    prompts, t = ("a photo of a cat", "a red dog"), (0.0, 0.5, 1.0)
    kw = {"steps": 2, "guidance": 1.0, "height": 32, "width": 32, "seed": 3}
    dm = DiffMorpherSettings(lora_rank=2, lora_steps=1, lora_lr=1e-3)
    plain = compare_couplings(adapter, *prompts, t, methods=("ot", "clip"), **kw)
    result = compare_couplings(
        adapter, *prompts, t, methods=("ot", "clip"), attention=("diffmorpher",),
        image_a=images[0], image_b=images[1], diffmorpher=dm, cache=tmp_path / "cache", **kw,
    )  # fmt: skip
    assert list(result.frames) == ["ot", "clip", "diffmorpher"]
    for m in ("ot", "clip"):
        assert torch.equal(result.frames[m], plain.frames[m])
    assert result.costs["diffmorpher"] == result.costs["ot"]
    # an attention row's cost and W2 length are the OT path's even when ot is not a row
    aid = compare_couplings(adapter, *prompts, t, methods=("clip",), attention=("aid-outer",), **kw)
    assert aid.costs["aid-outer"] == plain.costs["ot"]
    assert aid.w2_path_length["aid-outer"] == plain.w2_path_length["ot"]
    assert len(list((tmp_path / "cache" / "loras").glob("lora-*.safetensors"))) == 2
    assert result.settings["diffmorpher"]["lora_steps"] == 1

    s = MorphSettings(
        *prompts, t=t, coupling="ot", latent="slerp", image_a=images[0], image_b=images[1],
        format=None, method="diffmorpher", lora_rank=2, lora_steps=1, lora_lr=1e-3, **kw,
    )  # fmt: skip
    run = run_morph(adapter, s, tmp_path / "morph", progress=False)
    ours = result.frames["diffmorpher"]
    for k, path in enumerate(run.frames):  # the morph's PNGs: the same frames, 8-bit
        assert np.array_equal(np.array(to_pil(ours[k])), np.array(_read(path)))
    # its own end frames: the images' reconstructions, not the prompts' shared end frames
    assert (ours[0] - result.frames["ot"][0]).abs().max() > 0.05
    with pytest.raises(ValueError, match="give image_a and image_b"):
        compare_couplings(adapter, *prompts, t, attention=("diffmorpher",), **kw)
