"""The studio's Compare job with AID / PAID rows (session API, no browser), and its page error
for PAID without a guide prompt before anything is rendered."""

from __future__ import annotations

import json

import pytest

from whichway.studio.session import Studio


def test_compare_job_adds_attention_strips(tiny_pipeline, tmp_path):
    studio = Studio(tmp_path / "runs", str(tiny_pipeline("sd")), device="cpu",
                    lpips_random_backbone=True)  # fmt: skip
    small = {"steps": 2, "height": 32, "width": 32, "guidance": 4.0}
    job = studio.compare_job(
        "a cat", "a red dog", frames=3, attention=["aid-outer", "paid"],
        guide_prompt="a cat and a dog", **small,
    )  # fmt: skip
    result, target, strips, _note = studio.run_sync(job)
    assert set(strips) == {"ot", "clip", "random", "aid-outer", "paid"}
    assert all(p.is_file() for p in strips.values())
    rows = json.loads((target / "compare.json").read_text())["couplings"]
    assert [r["coupling"] for r in rows] == ["ot", "clip", "random", "aid-outer", "paid"]
    assert all(r["ppl"] is not None for r in rows)  # LPIPS (random backbone) measured every row
    assert result.settings["guide_prompt"] == "a cat and a dog"


def test_paid_without_a_guide_is_refused_before_loading(tmp_path):
    studio = Studio(tmp_path / "runs", "never-loaded")
    with pytest.raises(ValueError, match="needs a guide prompt"):
        studio.compare_job("a cat", "a dog", frames=3, attention=["paid"])


def test_morph_settings_carry_the_method(tmp_path):
    studio = Studio(tmp_path / "runs", "never-loaded")
    s = studio.morph_settings(
        "a dog", "a car", frames=3, method="paid", warmup_ratio=0.3, aid_layers="self",
        fused=False, guide_prompt=" a dog driving a car ", spacing="beta", height=32, width=32,
    )  # fmt: skip
    assert (s.method, s.warmup_ratio, s.aid_layers, s.fused) == ("paid", 0.3, "self", False)
    assert s.guide_prompt == "a dog driving a car" and s.spacing == "beta"
    plain = studio.morph_settings("a dog", "a car", frames=3, guide_prompt="stale text")
    assert plain.method == "plain" and plain.guide_prompt is None
    with pytest.raises(ValueError, match=r"warmup ratio must lie in \[0, 1\]"):
        studio.morph_settings("a", "b", frames=3, method="aid-outer", warmup_ratio=2)


def test_morph_settings_diffmorpher_needs_the_two_images(tmp_path):
    from PIL import Image

    studio = Studio(tmp_path / "runs", "never-loaded")
    with pytest.raises(ValueError, match="morphs between two images: upload Image A and Image B"):
        studio.morph_settings("a cat", "a dog", frames=3, method="diffmorpher")
    for name in ("a.png", "b.png"):
        Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / name)
    s = studio.morph_settings(
        "a cat", "a dog", frames=3, method="diffmorpher", height=32, width=32,
        image_a=str(tmp_path / "a.png"), image_b=str(tmp_path / "b.png"),
    )  # fmt: skip
    # the official DiffMorpher settings
    assert (s.method, s.lora_rank, s.lora_steps, s.lora_lr, s.attn_lambda) == (
        "diffmorpher", 16, 200, 2e-4, 0.6,
    )  # fmt: skip


def test_diffmorpher_without_images_names_the_image_fields(tmp_path):
    from whichway.studio.session import user_message

    studio = Studio(tmp_path / "runs", "never-loaded")
    with pytest.raises(ValueError) as err:
        studio.compare_job("a cat", "a dog", frames=3, attention=["aid-outer", "diffmorpher"])
    message = user_message(err.value)
    assert "upload Image A and Image B" in message and "--" not in message
    assert studio.loaded_model is None
