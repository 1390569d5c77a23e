"""The studio's Travel tab with a method per segment: its handler (called as the page calls it)
runs the travel ``run_travel`` runs for the same settings, and its refusals name the page's
fields, never the command line's flags, before any model loads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from whichway.studio.session import Studio

SMALL = {"steps": 2, "guidance": 4.0, "height": 32, "width": 32, "fmt": "none", "fps": 4,
         "per_segment": 2}  # fmt: skip


def _pixels(path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def test_travel_tab_runs_a_mixed_travel_as_run_travel_does(tiny_pipeline, tmp_path, tab_handler):
    """Segment 1 plain, segment 2 aid-outer (its row's method): run.json records each segment's
    method, and every frame equals run_travel's for the same settings, built independently."""
    from whichway.travel import Keyframe, TravelSettings, run_travel

    studio = Studio(tmp_path / "runs", str(tiny_pipeline("sd")), device="cpu")
    travel, _ = tab_handler(studio, "travel")
    rows = [["a cat", 1, None, "", "", ""], ["a red dog", 2, None, "aid-outer", "", ""],
            ["a car", 3, None, "", "", ""]]  # fmt: skip
    shown = travel(keys=rows, warmup=1.0, layers="self", fused=False, **SMALL)
    assert shown[-1][1].startswith("Done: 5 frames")
    run = studio.open_run("travel-a-cat--a-car")
    segments = run.info["segments"]
    assert [s["method"] for s in segments] == ["plain", "aid-outer"]
    assert {k: segments[1][k] for k in ("warmup_ratio", "aid_layers", "fused")} == {
        "warmup_ratio": 1.0, "aid_layers": "self", "fused": False,
    }  # fmt: skip

    keyframes = (Keyframe("a cat", seed=1), Keyframe("a red dog", seed=2, method="aid-outer"),
                 Keyframe("a car", seed=3))  # fmt: skip
    direct = TravelSettings(
        keyframes, fps=4, frames_per_segment=2, steps=2, guidance=4.0, height=32, width=32,
        format=None, warmup_ratio=1.0, aid_layers="self", fused=False,
    )  # fmt: skip
    theirs = run_travel(studio.adapter(), direct, tmp_path / "direct", progress=False)
    assert (
        json.loads((tmp_path / "direct" / "run.json").read_text())["settings"]
        == (run.info["settings"])
    )
    assert len(run.frames) == len(theirs.frames) == 5
    for ours, reference in zip(run.frames, theirs.frames, strict=True):
        assert np.array_equal(_pixels(ours), _pixels(reference)), ours.name


def test_travel_tab_messages_name_its_fields_not_flags(tmp_path, tab_handler):
    """Refusals of the torch-free checks the command line shares read in the page's terms."""
    from PIL import Image

    studio = Studio(tmp_path / "runs", "never-loaded")
    travel, gr = tab_handler(studio, "travel")
    cat = tmp_path / "cat.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(cat)
    rows = [["a cat", 1, None, "", "", ""], ["a dog", 2, None, "", "", ""]]
    seg = "segment 1 ('a cat' -> 'a dog')"
    for change, message in (
        (
            {"method": "paid"},
            (
                f"{seg} uses method paid but has no guide prompt: give keyframe 1 a guide prompt (the "
                "guide prompt column of Keyframes) or set PAID guide prompt for every paid segment"
            ),
        ),
        (
            {"keys": [[*rows[0][:3], "diffmorpher", "", "cat.png"], rows[1]], "images": [cat]},
            (
                f"{seg} uses method diffmorpher, which morphs between two images: give keyframes 1 "
                "and 2 an image (the image column of Keyframes, naming a file under Keyframe "
                "images), or use another method for it"
            ),
        ),
        (
            {"keys": [[*rows[0][:3], "", "", "dog.png"], rows[1]], "images": [cat]},
            (
                "keyframe 1: image 'dog.png' is not among the Keyframe images (cat.png); upload it "
                "there or clear the cell"
            ),
        ),
        (
            {"keys": [[*rows[0][:3], "aid", "", ""], rows[1]]},
            (
                "keyframe 1: method must be one of plain, aid-outer, aid-inner, paid, diffmorpher "
                "(empty: the Method field's), got 'aid'"
            ),
        ),
        (
            {"keys": [[*rows[0][:3], "", "a cat-dog", ""], rows[1]]},
            (
                "keyframe 1 gives a guide prompt, but segment 1 ('a cat' -> 'a dog') uses method "
                "plain; a guide prompt is PAID's: give that keyframe method paid or drop the guide"
            ),
        ),
        (
            {"method": "diffmorpher", "lora_rank": 0},
            "LoRA rank must be a whole number in [1, 1024] (official 16), got 0",
        ),
        (
            {"keys": [rows[0], [*rows[1][:3], "aid-inner", "", ""]]},
            (
                "keyframe 2 is the last one: its method would apply to the segment leaving it, and "
                "there is none; set it on the keyframe that starts the segment"
            ),
        ),
        (
            {"method": "aid-outer", "motion": "some/adapter"},
            (
                "Method aid-outer (attention interpolation) renders stills; it does not combine with "
                "Motion adapter yet: drop one of them"
            ),
        ),
        ({"pacing": "audio"}, "Pacing audio needs a track: give Audio"),
        ({"fps": -1}, "fps must be > 0, got -1.0"),
    ):
        with pytest.raises(gr.Error) as refused:
            travel(**{"keys": rows, **SMALL, **change})
        assert refused.value.message == message
        assert "--" not in refused.value.message
    # each method's fields count only when some segment uses that method, as on the Morph tab
    settings, _ = studio.travel_settings(
        rows, frames_per_segment=2, guide_prompt="stale", lora_rank=0, warmup_ratio="x"
    )
    assert settings.guide_prompt is None and settings.lora_rank == 16
    paid, _ = studio.travel_settings(
        [[*rows[0][:3], "paid", " a cat-dog ", ""], rows[1]], frames_per_segment=2,
        guide_prompt="run-wide",
    )  # fmt: skip
    assert paid.segment_guide(0) == "a cat-dog" and paid.guide_prompt == "run-wide"
    assert studio.loaded_model is None  # refused before any model


def test_travel_tab_takes_diffmorpher_between_uploaded_images(tmp_path):
    """A diffmorpher row between two image rows: the images are the uploads the image column
    names (kept under the run folder's uploads/), the LoRA fields reach the settings."""
    from PIL import Image

    studio = Studio(tmp_path / "runs", "never-loaded")
    for name, color in (("cat.png", (200, 30, 30)), ("dog.png", (30, 30, 200))):
        Image.new("RGB", (32, 32), color).save(tmp_path / name)
    settings, _ = studio.travel_settings(
        [["a cat", 1, None, "diffmorpher", "", "cat.png"], ["a dog", 2, None, "", "", "dog.png"]],
        frames_per_segment=2, height=32, width=32, lora_rank=2, lora_steps=1, lora_lr=1e-3,
        attn_lambda=0.4, images=[str(tmp_path / "cat.png"), str(tmp_path / "dog.png")],
    )  # fmt: skip
    assert settings.segment_methods() == ("diffmorpher",)
    lora = (settings.lora_rank, settings.lora_steps, settings.lora_lr, settings.attn_lambda)
    assert lora == (2, 1, 1e-3, 0.4)
    for kf, name in zip(settings.keyframes, ("cat.png", "dog.png"), strict=True):
        assert kf.image.startswith(str(studio.out_dir / "uploads"))
        assert Path(kf.image).read_bytes() == (tmp_path / name).read_bytes()
    assert studio.loaded_model is None
