"""The studio's Compare job with AID / PAID rows (session API, no browser), and its page error
for PAID without a guide prompt before anything is rendered."""

from __future__ import annotations

import json

import pytest

from whichway._checks import SettingError
from whichway.studio.session import FIELD_NAMES, Studio, user_message


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
    with pytest.raises(SettingError) as refused:
        studio.morph_settings("a", "b", frames=3, method="aid-outer", warmup_ratio=2)
    assert refused.value.worded(FIELD_NAMES) == "Warmup ratio must lie in [0, 1], got 2.0"


def test_morph_settings_diffmorpher_needs_the_two_images(tmp_path):
    from PIL import Image

    studio = Studio(tmp_path / "runs", "never-loaded")
    with pytest.raises(ValueError) as err:  # MorphSettings' own check, worded with the fields
        studio.morph_settings("a cat", "a dog", frames=3, method="diffmorpher")
    assert user_message(err.value) == (
        "Method diffmorpher morphs between two images: give Image A and Image B (and their "
        "prompts as Prompt A/Prompt B)"
    )
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
    assert user_message(err.value) == (  # the check MorphSettings makes, for a listed method
        "diffmorpher in Attention methods morphs between two images: give Image A and Image B "
        "(and their prompts as Prompt A/Prompt B)"
    )
    assert studio.loaded_model is None


def _images(tmp_path):
    from PIL import Image

    for name, color in (("a.png", (200, 30, 30)), ("b.png", (30, 30, 200))):
        Image.new("RGB", (32, 32), color).save(tmp_path / name)
    return str(tmp_path / "a.png"), str(tmp_path / "b.png")


def test_morph_tab_messages_name_its_fields_not_flags(tmp_path, tab_handler):
    """Refusals from the torch-free checks the CLI shares read in the page's terms."""
    studio = Studio(tmp_path / "runs", "never-loaded")
    morph, gr = tab_handler(studio, "morph")
    a, b = _images(tmp_path)
    page = {"a": "a cat", "b": "a dog", "method": "diffmorpher", "img_a": a, "img_b": b}
    for change, message in (
        (
            {"img_a": None, "img_b": None},
            (
                "Method diffmorpher morphs between two images: give Image A and Image B (and "
                "their prompts as Prompt A/Prompt B)"
            ),
        ),
        ({"lora_rank": 0}, "LoRA rank must be a whole number in [1, 1024] (official 16), got 0"),
        ({"lora_steps": 2.5}, "LoRA steps must be a whole number, got 2.5"),
        ({"lora_lr": 0}, "LoRA learning rate must lie in (0, 1] (official 2e-4), got 0.0"),
        ({"attn_lambda": 1.5}, "Attention λ must lie in [0, 1] (official 0.6), got 1.5"),
        (
            {"method": "paid"},
            (
                "the paid method needs a guide prompt (the middle frames' prompt): give PAID guide "
                "prompt"
            ),
        ),
        (
            {"method": "plain", "img_b": None},
            "give both Image A and Image B (a real-image morph inverts both), or neither",
        ),
        ({"t": "0.5"}, "a morph needs at least 2 frames, got 1; use Frames N with N >= 2"),
    ):
        with pytest.raises(gr.Error) as refused:
            morph(**{**page, **change})
        assert refused.value.message == message
    # the batch field, empty or (once its accordion has been opened) 0, means auto
    assert studio.morph_settings("a", "b", batch_size=0).batch_size is None
    # the LoRA fields count for diffmorpher only, as the guide prompt for paid only
    assert studio.morph_settings("a", "b", lora_rank=0, lora_lr="x").lora_rank == 16
    assert studio.loaded_model is None  # refused before any model


def test_morph_tab_fits_the_loras_its_fields_ask_for(tiny_pipeline, tmp_path, tab_handler):
    """The four DiffMorpher fields reach run_morph: run.json records them and the two cached
    LoRAs are the ones fitted with them (their cache key holds rank, steps and rate)."""
    from whichway.attention.lora_cache import lora_key
    from whichway.attention.methods import DIFFMORPHER_KEYS, DiffMorpherSettings

    studio = Studio(tmp_path / "runs", str(tiny_pipeline("sd")), device="cpu",
                    lpips_random_backbone=True)  # fmt: skip
    morph, _ = tab_handler(studio, "morph")
    a, b = _images(tmp_path)
    asked = {"lora_rank": 2, "lora_steps": 1, "lora_lr": 1e-3, "attn_lambda": 0.4}
    shown = morph(
        a="a cat", b="a red dog", frames=3, steps=2, guidance=1.0, height=32, width=32,
        img_a=a, img_b=b, fmt="none", method="diffmorpher", **asked,
    )  # fmt: skip
    assert shown[-1][1].startswith("Done: 3 frames")
    run = studio.out_dir / "a-cat--a-red-dog--ot"
    settings = json.loads((run / "run.json").read_text())["settings"]
    assert {k: settings[k] for k in DIFFMORPHER_KEYS} == asked
    dm = DiffMorpherSettings(**asked)
    adapter = studio.adapter()
    keys = {
        lora_key(adapter, settings[image], settings[prompt], dm, (32, 32))
        for image, prompt in (("image_a", "prompt_a"), ("image_b", "prompt_b"))
    }
    assert {p.name for p in (run / "loras").glob("*.safetensors")} == {
        f"lora-{k}.safetensors" for k in keys
    }


def test_studio_counts_diffmorpher_loras_against_its_limits(tiny_pipeline, tmp_path, monkeypatch):
    """A DiffMorpher morph's LoRA steps count against --max-steps, and its two LoRA files
    (lora_file_bytes each, checked against a fit in test_attention_diffmorpher) against the
    disk: free space one byte short of frames + LoRAs is refused, naming the LoRA files; the
    memory refusal names the LoRA weights."""
    import whichway.budget as budget
    from whichway.studio.limits import Limits

    model = tiny_pipeline("sd")
    studio = Studio(tmp_path / "runs", str(model), limits=Limits(max_steps=100))
    a, b = _images(tmp_path)
    page = dict(frames=3, method="diffmorpher", image_a=a, image_b=b, height=32, width=32)
    with pytest.raises(ValueError) as err:
        studio.morph_settings("a cat", "a dog", lora_steps=101, steps=2, **page)
    assert user_message(err.value) == (
        "101 LoRA steps is more than this studio's limit of 100 (whichway studio --max-steps)"
    )
    frames = 3 * budget.frame_disk_bytes(32, 32)
    lora = budget.lora_file_bytes(model, 16)
    monkeypatch.setattr(budget, "free_disk", lambda out: frames + 2 * lora)
    studio.morph_settings("a cat", "a dog", lora_steps=100, steps=2, **page)  # fits exactly
    monkeypatch.setattr(budget, "free_disk", lambda out: frames + 2 * lora - 1)
    refused = r"^3 frames and 2 rank-16 LoRA files of .* for the frames and the LoRA files on disk"
    with pytest.raises(ValueError, match=refused):
        studio.morph_settings("a cat", "a dog", lora_steps=100, steps=2, **page)
    monkeypatch.setattr(budget, "free_disk", lambda out: None)  # the memory check's wording
    available = [10**12, 1]  # one frame fits; the frames and the LoRA pairs do not
    monkeypatch.setattr(budget, "cpu_memory", lambda: (None, available.pop(0)))
    refused = r" of memory for 3 frames of 32x32 and the LoRA weights; 1 B available$"
    with pytest.raises(ValueError, match=refused):
        studio.morph_settings("a cat", "a dog", lora_steps=100, steps=2, **page)


def test_travel_counts_a_lora_per_image_and_a_pair_per_diffmorpher_segment(tmp_path):
    from whichway.studio.session import _travel_loras
    from whichway.travel import Keyframe, TravelSettings

    a, b = _images(tmp_path)
    keys = [Keyframe("a", image=a, method="diffmorpher"), Keyframe("b", image=b)]
    keys[1:] = [Keyframe("b", image=b, method="diffmorpher"), Keyframe("c", image=a)]
    keys.append(Keyframe("d"))  # a plain segment from c: no LoRA
    s = TravelSettings(keys, fps=4, frames_per_segment=2, lora_rank=8)
    # b is fitted once for both of its segments; a and c share a file but not a prompt
    assert _travel_loras(s) == (8, 200, 3, 2)
    assert _travel_loras(TravelSettings(keys[2:], fps=4, frames_per_segment=2)) is None


def test_methods_the_model_is_not_built_for_are_refused_before_it_loads(tmp_path):
    """The studio's model family (a local folder's model_index.json, no weights here) decides
    which methods a morph or travel may use, in the page's words."""
    model = tmp_path / "flux"
    model.mkdir()
    (model / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    studio = Studio(tmp_path / "runs", str(model))
    a, b = _images(tmp_path)
    with pytest.raises(ValueError) as err:
        studio.morph_settings("a", "b", frames=3, method="aid-inner", aid_layers="self")
    assert user_message(err.value) == (
        "AID layers self needs separate self- and cross-attention (sd, sdxl); flux has one joint "
        "attention per block: use AID layers both"
    )
    rows = [["a", 1, None, "diffmorpher", "", "a.png"], ["b", 2, None, "", "", "b.png"]]
    with pytest.raises(ValueError) as err:  # the method column's, named as the segment's
        studio.travel_settings(rows, frames_per_segment=2, images=[a, b])
    assert user_message(err.value) == (
        "segment 1 ('a' -> 'b') uses diffmorpher (the method column of Keyframes), which is built "
        "for sd, sdxl models (UNet up blocks), not flux; give that segment another method with "
        "this model"
    )
    rows[0][3] = ""  # the Method field's
    with pytest.raises(ValueError) as err:
        studio.travel_settings(rows, frames_per_segment=2, images=[a, b], method="diffmorpher")
    assert user_message(err.value).startswith("Method diffmorpher is built for sd, sdxl models")
    assert studio.loaded_model is None


def test_compare_tab_diffmorpher_takes_its_lora_fields(tiny_pipeline, tmp_path, tab_handler):
    """The Compare tab's LoRA fields reach the diffmorpher row and its AID fields the aid-outer
    row (compare.json records both);
    its refusals name the page's fields: the attention checklist for a family the method is
    not built for (from a local folder's model_index.json, before loading), LoRA rank; its
    LoRA steps count against the studio's step limit."""
    sd3 = tmp_path / "sd3"
    sd3.mkdir()
    (sd3 / "model_index.json").write_text('{"_class_name": "StableDiffusion3Pipeline"}')
    a, b = _images(tmp_path)
    page = {"a": "a cat", "b": "a red dog", "frames": 3, "steps": 2, "guidance": 1.0,
            "height": 32, "width": 32, "attention": ["diffmorpher"], "img_a": a, "img_b": b}  # fmt: skip
    compare, gr = tab_handler(Studio(tmp_path / "runs", str(sd3)), "compare")
    with pytest.raises(gr.Error) as refused:
        compare(**page)
    assert refused.value.message == (
        "diffmorpher in Attention methods is built for sd, sdxl models (UNet up blocks), not sd3; "
        "remove it from Attention methods with this model"
    )
    from whichway.studio.limits import Limits

    studio = Studio(tmp_path / "runs", str(tiny_pipeline("sd")), device="cpu",
                    lpips_random_backbone=True, limits=Limits(max_steps=100))  # fmt: skip
    compare, gr = tab_handler(studio, "compare")
    for change, message in (
        ({"lora_rank": 0}, "LoRA rank must be a whole number in [1, 1024] (official 16), got 0"),
        ({"lora_steps": 101},
         "101 LoRA steps is more than this studio's limit of 100 (whichway studio --max-steps)"),
    ):  # fmt: skip
        with pytest.raises(gr.Error) as refused:
            compare(**page, **change)
        assert refused.value.message == message
    asked = {"lora_rank": 2, "lora_steps": 1, "lora_lr": 1e-3, "attn_lambda": 0.4}
    aid = {"warmup": 0.25, "layers": "self", "fused": False}
    compare(**{**page, "attention": ["aid-outer", "diffmorpher"]}, **asked, **aid)
    info = json.loads(next(studio.out_dir.glob("compare--*/compare.json")).read_text())
    assert info["settings"]["diffmorpher"] == {**asked, "latent": "slerp"}
    recorded = {k: info["settings"][k] for k in ("warmup_ratio", "aid_layers", "fused")}
    assert recorded == {"warmup_ratio": 0.25, "aid_layers": "self", "fused": False}
    assert len(list((studio.out_dir / "cache" / "loras").glob("lora-*.safetensors"))) == 2


def test_studio_size_and_step_refusals_name_its_fields(tmp_path, monkeypatch):
    """The disk/memory/scheduler checks the CLI shares name the page's Steps, Height and Width."""
    import whichway.budget as budget
    from whichway.studio.limits import Limits

    studio = Studio(tmp_path / "runs", "never-loaded", limits=Limits(max_steps=5000))
    with pytest.raises(ValueError, match=r"^Steps 1001 is more than the scheduler's 1000 "):
        studio.morph_settings("a", "b", frames=3, steps=1001)
    monkeypatch.setattr(budget, "cpu_memory", lambda: (None, 1000))
    with pytest.raises(ValueError, match=r"^Height 64, Width 64 needs .* for one frame of 64x64"):
        studio.morph_settings("a", "b", frames=3, height=64, width=64)


def test_morph_tab_sets_the_beta_search_budget(tmp_path, tab_handler, monkeypatch):
    """The Beta search evaluations field: the official 24 by default, shown with the beta-bo
    spacing only, refused by the CLI's own check in the field's words, and what MorphSettings
    gets (the run stops where the model would load)."""
    from whichway.attention.methods import BO_EVALUATIONS
    from whichway.morph import check_beta_search
    from whichway.studio.app import build_app

    studio = Studio(tmp_path / "runs", "never-loaded")
    morph, gr = tab_handler(studio, "morph")
    shown = next(f.fn for f in build_app(studio).fns.values() if f.name == "spacing_fields")
    assert [shown(s)["visible"] for s in ("uniform", "beta", "beta-bo")] == [False, False, True]
    page = {"a": "a cat", "b": "a dog", "frames": 3, "height": 32, "width": 32}
    with pytest.raises(SettingError) as cli:
        check_beta_search(0, 3)
    for value, message in (
        (0, cli.value.worded(FIELD_NAMES)),
        (2.5, "Beta search evaluations must be a whole number, got 2.5"),
    ):
        with pytest.raises(gr.Error) as refused:
            morph(**page, spacing="beta-bo", beta_evaluations=value)
        assert refused.value.message == message
    assert cli.value.worded(FIELD_NAMES) == (
        "the Beta prior search needs at least 1 evaluation, got 0; use Beta search evaluations N "
        "with N >= 1"
    )
    asked = []

    def stop(settings):
        asked.append(settings.beta_evaluations)
        raise ValueError("stopped before the model")

    monkeypatch.setattr(studio, "morph_job", stop)
    for change in ({"beta_evaluations": 5}, {}, {"spacing": "uniform", "beta_evaluations": 0}):
        with pytest.raises(gr.Error):
            morph(**page, **{"spacing": "beta-bo", **change})
    assert asked == [5, BO_EVALUATIONS, BO_EVALUATIONS]  # the field counts for beta-bo only
    assert studio.loaded_model is None
