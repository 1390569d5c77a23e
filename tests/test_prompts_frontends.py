"""The prompt layer in the front ends: Deforum schedules with weights and --neg, the options,
malformed prompts refused in one line before any model loads, the token-matching labels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from whichway.cli import main
from whichway.travel import Keyframe

JOURNEY = {
    "0": "a beautiful forest, (sunlight:1.2), masterpiece --neg blurry, lowres",
    "12": "a dark cave with glowing crystals",
    "24": "an alien city at night",
}
TINY = ["--steps", "1", "--height", "32", "--width", "32", "--guidance", "2", "--quiet"]


@pytest.fixture
def no_model(monkeypatch):
    import whichway.models

    def boom(*args, **kwargs):
        raise AssertionError("a model was loaded before the prompts were checked")

    monkeypatch.setattr(whichway.models, "load_adapter", boom, raising=False)


def test_deforum_journey_splits_neg_per_keyframe_records_it_and_applies_weights(
    tiny_pipeline, tmp_path
):
    schedule = tmp_path / "journey.json"
    schedule.write_text(json.dumps(JOURNEY))
    out = tmp_path / "run"
    rc = main(
        ["travel", str(schedule), "--model", str(tiny_pipeline("sd")), "--out", str(out), *TINY]
    )
    assert rc == 0
    info = json.loads((out / "run.json").read_text())
    keyframes = info["keyframes"]
    assert [k["prompt"] for k in keyframes] == [
        "a beautiful forest, (sunlight:1.2), masterpiece",
        "a dark cave with glowing crystals",
        "an alien city at night",
    ]
    assert [k["negative_prompt"] for k in keyframes] == ["blurry, lowres", None, None]
    assert info["plan"]["keyframe_frames"] == [0, 12, 24] and info["weighting"] == "comfyui"

    # frame 0 is the plain pipeline on the weighted prompt's conditioning and its own negative
    from whichway.models import load_adapter

    adapter = load_adapter(str(tiny_pipeline("sd")), device="cpu")
    cond = adapter.encode([keyframes[0]["prompt"]]).clouds[0]
    literal = adapter.encode([r"a beautiful forest, \(sunlight:1.2\), masterpiece"]).clouds[0]
    assert cond.shape == literal.shape and not torch.allclose(cond, literal, atol=1e-3)

    def plain(negative: str) -> np.ndarray:
        image = adapter.pipe(
            prompt_embeds=cond,
            negative_prompt=negative,
            generator=torch.Generator("cpu").manual_seed(0),
            num_inference_steps=1,
            guidance_scale=2.0,
            height=32,
            width=32,
            output_type="np",
        ).images[0]
        return np.clip(np.rint(image * 255), 0, 255).astype(int)

    frame = np.asarray(Image.open(out / info["frames"][0]).convert("RGB")).astype(int)
    assert np.abs(frame - plain("blurry, lowres")).max() <= 1

    # the keyframe's negative travels with it: keyframe 0's own, interpolated row by row to the
    # run's default (keyframes 1 and 2) over segment 0
    from whichway.travel import read_schedule
    from whichway.travel.rendering import Journey

    settings = read_schedule(schedule).to_settings(steps=1, height=32, width=32)
    journey = Journey(adapter, settings, 32, 32, tmp_path / "journey")
    blurry, default = adapter.encode_negative("blurry, lowres"), adapter.encode_negative(None)
    assert not torch.allclose(blurry.clouds[0], default.clouds[0], atol=1e-2)
    torch.testing.assert_close(journey.negative[0].clouds[0], blurry.clouds[0], rtol=0, atol=0)
    torch.testing.assert_close(journey.negative[2].clouds[0], default.clouds[0], rtol=0, atol=0)
    _, _, negative = journey.rows([(0, 0.25), (1, 0.5)])
    torch.testing.assert_close(
        negative.clouds[0][0], 0.75 * blurry.clouds[0][0] + 0.25 * default.clouds[0][0]
    )
    torch.testing.assert_close(negative.clouds[0][1], default.clouds[0][0])


def test_keyframe_neg_split_and_its_errors():
    kf = Keyframe("a forest, (sun:1.2) --neg blurry")
    assert (kf.prompt, kf.negative_prompt) == ("a forest, (sun:1.2)", "blurry")
    assert Keyframe("a forest --neg").negative_prompt is None
    with pytest.raises(ValueError, match="negative prompt twice"):
        Keyframe("a forest --neg blurry", negative_prompt="dark")
    with pytest.raises(ValueError, match=r"'--neg' appears twice at position 20"):
        Keyframe("a forest --neg blur --neg dark")
    with pytest.raises(ValueError, match=r"negative prompt .*position 0 "):
        Keyframe("a forest --neg (blurry")


@pytest.mark.parametrize(
    ("schedule", "needles"),
    [
        ({"0": "a (forest", "12": "a cave"}, ["keyframe", "'a (forest'", "position 2"]),
        ({"0": "a forest", "12": "a (cave:big)"}, ["weight 'big' is not a number", "position 8"]),
        ({"0": "a --neg b --neg c", "12": "a cave"}, ["'--neg' appears twice", "position 10"]),
    ],
)
def test_malformed_schedule_prompt_is_one_line_before_any_model(
    no_model, tmp_path, capsys, schedule, needles
):
    path = tmp_path / "journey.json"
    path.write_text(json.dumps(schedule))
    rc = main(["travel", str(path), "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("whichway travel: error: ") and "\n" not in err
    for needle in needles:
        assert needle in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["morph", "a (cat", "a dog"], ["prompt A", "'a (cat'", "position 2"]),
        (["morph", "a cat", "a dog)"], ["prompt B", "position 5"]),
        (["morph", "a cat", "a dog", "--negative-prompt", "(x:y)"], ["negative prompt", "'y'"]),
        (["grid", "prompts", "a cat", "a [dog", "a fox"], ["prompt", "position 2"]),
        (["morph", "a cat", "a dog", "--weighting", "louder"], ["invalid choice: 'louder'"]),
        # Deforum's --neg is read in travel keyframes; in a morph prompt it would be encoded as text
        (
            ["morph", "a cat --neg blurry", "a dog"],
            ["prompt A", "travel keyframes only", "position 6", "--negative-prompt"],
        ),
    ],
)
def test_malformed_cli_prompts_are_one_line_before_any_model(no_model, capsys, argv, needles):
    try:
        rc = main(argv)
    except SystemExit as exit_:  # argparse's own refusal of a bad choice
        rc = exit_.code
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert any(all(n in line for n in needles) for line in err), err
    if argv[-1] != "louder":
        assert len(err) == 1 and err[0].startswith(f"whichway {argv[0]}: error: ")


def test_token_matching_labels_weights_chunks_and_copies(tiny_adapter):
    from whichway.matching import token_matching

    adapter = tiny_adapter("sd")
    long = " ".join(["a red car near the big old tree under sky"] * 10)  # 100 tokens: 2 chunks
    matching = token_matching(adapter, long, "a (red:1.5) [dog]")
    (group,) = matching.groups
    a, b = group.labels_a.tokens, group.labels_b.tokens
    assert len(a) == len(b) == 154 and len(group.perm) == 154
    assert "chunk 2" in a[77] and a[77].startswith("<|startoftext|>")
    assert b[1] == "a" and b[2] == "red ×1.5" and b[3] == f"dog ×{1 / 1.1:.3g}"
    assert "copy 2" in b[77]  # the one-chunk prompt is tiled to 154 rows
    assert group.labels_b.padding[5] and not group.labels_b.padding[4]  # after its end token
    # a plain prompt's labels are the tokenizer's own, padding from its attention mask
    plain = token_matching(adapter, "a photo of a cat", "a red dog").groups[0].labels_a
    enc = adapter.pipe.tokenizer("a photo of a cat", padding="max_length", max_length=77)
    assert plain.padding == tuple(m == 0 for m in enc.attention_mask)
