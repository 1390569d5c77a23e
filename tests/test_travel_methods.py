"""Per-segment methods in travel (plain, AID, PAID): each segment's frames are what rendering
it alone with its method gives, run.json records them, and a rerun renders again only the
segments whose method changed."""

from __future__ import annotations

import json

import pytest
import torch

from whichway.cli import main
from whichway.models.timing import Preparation
from whichway.travel import Keyframe, TravelSettings, run_travel
from whichway.travel.rendering import Journey, Renderer, pending_preparation

SIZE = 32
COMMON = {"frames_per_segment": 3, "batch_size": 4, "format": None, "steps": 2,
          "height": SIZE, "width": SIZE, "guidance": 4.0, "warmup_ratio": 1.0}  # fmt: skip
PROMPTS = ("a cat", "a red dog", "a car")
GUIDE = "a cat and a dog"


def _keyframes(*methods: str | None, guide: str | None = None) -> tuple[Keyframe, ...]:
    """Three keyframes (seeds 1, 2, 3); ``methods`` for the two segments."""
    return tuple(
        Keyframe(
            p,
            seed=k + 1,
            method=methods[k] if k < 2 else None,
            guide_prompt=guide if k < 2 and methods[k] == "paid" else None,
        )
        for k, p in enumerate(PROMPTS)
    )


def _rendered(adapter, s: TravelSettings, tmp_path) -> torch.Tensor:
    """Every frame of ``s``'s uniform plan (7 positions) through the travel renderer."""
    positions = [(k, j / 3) for k in range(2) for j in range(3)] + [(1, 1.0)]
    journey = Journey(adapter, s, SIZE, SIZE, tmp_path)
    renderer = Renderer(adapter, journey, s, SIZE, SIZE, len(positions), False, {})
    out: list[torch.Tensor] = []
    renderer.render(positions, on_chunk=out.append)
    renderer.close()
    return torch.cat(out)


@pytest.fixture(scope="module")
def plain(tiny_adapter, tmp_path_factory) -> torch.Tensor:
    """The all-plain travel's 7 frames."""
    s = TravelSettings(_keyframes(None, None), **COMMON)
    return _rendered(tiny_adapter("sd"), s, tmp_path_factory.mktemp("plain"))


def test_mixed_segments_equal_each_method_alone(tiny_adapter, tmp_path, plain):
    """Segment 1 plain, segment 2 AID, rendered in one chunk: segment 1's frames equal an
    all-plain travel's, segment 2's an all-AID travel's, the keyframes are unchanged."""
    adapter = tiny_adapter("sd")
    aid = _rendered(
        adapter, TravelSettings(_keyframes(None, None), method="aid-outer", **COMMON), tmp_path
    )
    mixed = _rendered(adapter, TravelSettings(_keyframes(None, "aid-outer"), **COMMON), tmp_path)
    assert (aid[4:6] - plain[4:6]).abs().max() > 1e-4  # AID changes the middle frames
    torch.testing.assert_close(mixed[:3], plain[:3], atol=2e-6, rtol=0)
    torch.testing.assert_close(mixed[3:], aid[3:], atol=2e-6, rtol=0)
    torch.testing.assert_close(mixed[[0, 3, 6]], plain[[0, 3, 6]], atol=2e-6, rtol=0)


def test_plain_frames_on_both_sides_of_an_aid_segment_keep_their_places(tiny_adapter, tmp_path):
    """Four keyframes, segments plain, aid-outer, plain in one chunk: the plain group's frames
    (segments 1 and 3, not contiguous) share batches and each lands at its own index
    (``on_frame``, as travel writes its frames), equal to the all-plain travel's; segment 2's
    equal the all-AID travel's."""
    adapter = tiny_adapter("sd")
    prompts = (*PROMPTS, "a boat")

    def frames(*methods: str | None, **run: str) -> torch.Tensor:
        keys = tuple(
            Keyframe(p, seed=k + 1, method=methods[k] if k < 3 else None)
            for k, p in enumerate(prompts)
        )
        s = TravelSettings(keys, **run, **COMMON)
        positions = [(k, j / 3) for k in range(3) for j in range(3)] + [(2, 1.0)]
        renderer = Renderer(
            adapter, Journey(adapter, s, SIZE, SIZE, tmp_path), s, SIZE, SIZE, 10, False, {}
        )
        out: dict[int, torch.Tensor] = {}
        renderer.render(positions, on_frame=out.__setitem__)
        renderer.close()
        return torch.stack([out[i] for i in range(10)])

    plain, aid = frames(None, None, None), frames(None, None, None, method="aid-outer")
    mixed = frames(None, "aid-outer", None)
    assert (aid[4:6] - plain[4:6]).abs().max() > 1e-4
    torch.testing.assert_close(mixed[3:6], aid[3:6], atol=2e-6, rtol=0)
    keep = [0, 1, 2, 6, 7, 8, 9]
    torch.testing.assert_close(mixed[keep], plain[keep], atol=2e-6, rtol=0)


def test_paid_segment_equals_an_independent_paid_render(tiny_adapter, tmp_path, plain):
    """A paid segment beside a plain one: its middle frames equal PAID rendered through the
    lower-level API (guide prompt in the middle, the two keyframes as endpoint rows), its end
    frames the plain keyframes; the plain segment is the plain travel's."""
    from whichway.attention.batch import AttentionPath, with_guide
    from whichway.attention.methods import settings_for
    from whichway.render import conditioning_path, latent_path, render_frames

    adapter = tiny_adapter("sd")
    mixed = _rendered(
        adapter, TravelSettings(_keyframes("paid", None, guide=GUIDE), **COMMON), tmp_path
    )
    ts = torch.tensor([0.0, 1 / 3, 2 / 3, 1.0], dtype=torch.float64)
    cond = adapter.encode(["a cat", "a red dog", GUIDE])
    path, _ = conditioning_path(cond.select(0), cond.select(1), ts, coupling="ot")
    ends = torch.stack(
        [adapter.initial_latent(1, SIZE, SIZE), adapter.initial_latent(2, SIZE, SIZE)]
    )
    aid = settings_for("paid", fused=True, warmup_ratio=1.0, layers="both")
    expected = render_frames(
        adapter,
        with_guide(path, ts, cond.select(2)),
        latent_path(ends[0], ends[1], ts, method="cog"),
        steps=2,
        guidance=4.0,
        height=SIZE,
        width=SIZE,
        batch_size=4,
        progress=False,
        attention=AttentionPath(aid, cond.select([0, 1]), ends, ts),
    )
    assert (expected[1:3] - plain[1:3]).abs().max() > 1e-4  # the guide changes them
    torch.testing.assert_close(mixed[:4], expected, atol=2e-6, rtol=0)
    torch.testing.assert_close(mixed[3:], plain[3:], atol=2e-6, rtol=0)


def test_changed_segment_method_renders_that_segment_only(tiny_adapter, tmp_path):
    """A plain run (recorded without method keys, as runs made before methods existed) resumes
    under per-segment methods: switching segment 2 to PAID renders its 4 frames only, run.json
    records each segment's method, a rerun renders nothing."""
    adapter = tiny_adapter("sd")
    out = tmp_path / "run"
    first = run_travel(
        adapter, TravelSettings(_keyframes(None, None), **COMMON), out, progress=False
    )
    assert first.rendered == 7
    settings = json.loads((out / "run.json").read_text())["settings"]
    assert "method" not in settings and all("method" not in kf for kf in settings["keyframes"])
    kept = (out / "frames" / "00001.png").stat().st_mtime_ns
    s = TravelSettings(_keyframes(None, "paid", guide=GUIDE), **COMMON)
    second = run_travel(adapter, s, out, progress=False)
    assert second.rendered == 4  # frames 3..6: segment 2 and the last keyframe
    assert (out / "frames" / "00001.png").stat().st_mtime_ns == kept
    record = json.loads((out / "run.json").read_text())
    assert record["settings"]["keyframes"][1]["method"] == "paid"
    assert [seg["method"] for seg in record["segments"]] == ["plain", "paid"]
    assert record["segments"][1]["guide_prompt"] == GUIDE
    assert TravelSettings.from_record(record["settings"]).segment_methods() == ("plain", "paid")
    assert run_travel(adapter, s, out, progress=False).rendered == 0


def test_diffmorpher_segments_equal_morph_and_fit_each_lora_once(
    tiny_pipeline, tmp_path, monkeypatch
):
    """Two DiffMorpher segments through three image keyframes: each segment's frames equal
    run_morph's DiffMorpher morph of its two images (to half an 8-bit level), and the three
    LoRAs are fitted once each (the middle keyframe's serves both segments)."""
    import numpy as np
    from PIL import Image

    import whichway.attention.diffmorpher as diffmorpher
    from whichway.media import to_pil
    from whichway.models import load_adapter
    from whichway.morph import MorphSettings, run_morph, use_inversion_sampler

    adapter = load_adapter(str(tiny_pipeline("sd")), device="cpu")  # it switches samplers
    g = torch.Generator().manual_seed(0)
    images = []
    for name in ("a.png", "b.png", "c.png"):
        to_pil(torch.rand(3, SIZE, SIZE, generator=g)).save(tmp_path / name)
        images.append(str(tmp_path / name))
    fits = []
    fit_lora = diffmorpher.fit_lora
    monkeypatch.setattr(
        diffmorpher, "fit_lora", lambda *a, **k: fits.append(1) or fit_lora(*a, **k)
    )
    dm = {"lora_rank": 2, "lora_steps": 1, "lora_lr": 1e-3}
    keyframes = tuple(
        Keyframe(p, image=image, method="diffmorpher" if k < 2 else None)
        for k, (p, image) in enumerate(zip(PROMPTS, images))
    )
    options = {**COMMON, "guidance": 1.0, "warmup_ratio": 0.5}
    s = TravelSettings(keyframes, **options, **dm)
    # the run-time estimate's work before the frames: three fits of one step and three 2-step
    # inversions (the middle keyframe's once), none left once the LoRAs and latents are cached
    assert pending_preparation(adapter, s, tmp_path / "travel") == Preparation(3, 1, 3, 2)
    restore = use_inversion_sampler(adapter, "the test")
    try:
        travel = _rendered(adapter, s, tmp_path / "travel")
        assert pending_preparation(adapter, s, tmp_path / "travel") == Preparation(0, 1, 0, 2)
        still = tuple(Keyframe(kf.prompt, image=kf.image) for kf in keyframes)
        plain = _rendered(adapter, TravelSettings(still, **options), tmp_path / "plain")
    finally:
        adapter.use_scheduler(restore)
    assert len(fits) == 3
    assert (travel[1:3] - plain[1:3]).abs().max() > 1e-2  # DiffMorpher is not the plain path
    assert len(list((tmp_path / "travel" / "loras").glob("lora-*.safetensors"))) == 3
    morph = MorphSettings(
        PROMPTS[0], PROMPTS[1], (0.0, 1 / 3, 2 / 3, 1.0), latent="cog", image_a=images[0],
        image_b=images[1], format=None, method="diffmorpher", steps=2, guidance=1.0,
        height=SIZE, width=SIZE, **dm,
    )  # fmt: skip
    # in the travel's folder: morph finds the LoRAs and inverted latents cached there
    run = run_morph(adapter, morph, tmp_path / "travel", progress=False)
    assert len(fits) == 3
    for k, path in enumerate(run.frames):
        theirs = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
        # PNGs hold 8-bit levels: within half a level of the float frame (plus float noise)
        assert (travel[k] - theirs / 255).abs().max() <= 0.5 / 255 + 1e-5, k


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--methods", "plain,paid"], "segment 2 .* uses method paid but has no guide prompt"),
        (["--methods", "plain"], "--methods gives 1 methods for 2 segments"),
        (["--guide-prompt", "x"], "no segment uses method paid"),
        (["--methods", "plain,plain", "--warmup-ratio", "1"], "add --method aid-outer"),
        (["--methods", "plain,diffmorpher"], "segment 2 .* diffmorpher, which morphs between two"),
        (["--lora-steps", "3"], "set.s. how DiffMorpher acts"),
    ],
)
def test_travel_method_errors_are_one_line_before_any_model_loads(tmp_path, capsys, extra, message):
    import re

    model = tmp_path / "model"  # a model folder that holds no weights: nothing may load
    model.mkdir()
    (model / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    argv = ["travel", "a", "b", "c", "--model", str(model), "--out", str(tmp_path / "o")]
    assert main([*argv, "--frames-per-segment", "2", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(message, err), err


def test_settings_refuse_methods_that_cannot_run():
    with pytest.raises(ValueError, match="keyframe 1 gives a guide prompt, but segment 1"):
        TravelSettings((Keyframe("a", guide_prompt="g"), Keyframe("b")))
    with pytest.raises(ValueError, match="keyframe 2 is the last one"):
        TravelSettings((Keyframe("a"), Keyframe("b", method="aid-outer")))
    with pytest.raises(ValueError, match="does not combine with --motion"):
        TravelSettings((Keyframe("a", method="aid-inner"), Keyframe("b")), motion="m")
    s = TravelSettings(
        (
            Keyframe("a", method="paid"),
            Keyframe("b", method="paid", guide_prompt="g2"),
            Keyframe("c"),
        ),
        guide_prompt="g1",
    )
    assert [s.segment_guide(k) for k in range(2)] == ["g1", "g2"]


def test_schedule_sets_methods_per_keyframe(tmp_path):
    """A schedule's keyframe ``method`` / ``guide_prompt`` set the segment leaving it; the
    DiffMorpher settings are schedule keys; the record keeps unset keyframe keys out."""
    from whichway.travel import read_schedule

    (tmp_path / "a.png").write_bytes(b"")  # paths only: nothing is read here
    (tmp_path / "journey.toml").write_text(
        'method = "aid-inner"\nlora_steps = 5\n'
        '[[keyframe]]\nprompt = "a"\nimage = "a.png"\nmethod = "diffmorpher"\n'
        '[[keyframe]]\nprompt = "b"\nimage = "a.png"\nmethod = "paid"\nguide_prompt = "g"\n'
        '[[keyframe]]\nprompt = "c"\n'
        '[[keyframe]]\nprompt = "d"\n'
    )
    s = read_schedule(tmp_path / "journey.toml").to_settings(frames_per_segment=2)
    assert s.segment_methods() == ("diffmorpher", "paid", "aid-inner")
    assert (s.segment_guide(1), s.lora_steps) == ("g", 5)
    record = s.record()
    assert record["lora_steps"] == 5 and "method" not in record["keyframes"][2]
    assert TravelSettings.from_record(record).segment_methods() == s.segment_methods()
