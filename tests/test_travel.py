"""`whichway travel`: plans, music pacing, keyframes equal to the plain pipeline, MP4 with sound,
resume, perceptual pacing and every bad input, on a tiny SD pipeline (offline)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from whichway.cli import main
from whichway.travel import (
    Keyframe,
    TravelSettings,
    plan_travel,
    prepare_travel,
    read_schedule,
    run_travel,
)

SR = 22050
CLICKS = np.arange(0.25, 4.0, 0.5)  # a click every half second, 4 s of audio
FAST = {"steps": 2, "guidance": 4.0, "height": 32, "width": 32}


@pytest.fixture(autouse=True)
def _one_thread():
    # the tiny model is far faster on one thread than on a contended pool
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def click_track(tmp_path_factory) -> str:
    """4 s of silence with a 3 ms click every 0.5 s (at 0.25, 0.75, ...), written with numpy."""
    import soundfile as sf

    y = np.zeros(4 * SR, np.float32)
    for c in CLICKS:
        i = round(c * SR)
        y[i : i + 64] = 1.0
    path = tmp_path_factory.mktemp("audio") / "clicks.wav"
    sf.write(path, y, SR)
    return str(path)


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _plain(adapter, prompt: str, seed: int) -> np.ndarray:
    image = adapter.pipe(
        prompt,
        generator=torch.Generator("cpu").manual_seed(seed),
        num_inference_steps=2,
        guidance_scale=4.0,
        height=32,
        width=32,
        output_type="np",
    ).images[0]
    return np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)


# --- plans (no model) ---------------------------------------------------------------------------


def test_uniform_plan_counts_frames_and_places_keyframes():
    keys = [Keyframe("a cat"), Keyframe("a dog"), Keyframe("a fox")]
    plan = plan_travel(keys, fps=24, seconds=12)
    assert plan.n_frames == 12 * 24 and plan.duration == 12.0
    assert plan.keyframe_frames == (0, 144, 287)  # spread evenly: round(287 / 2) = 144
    assert (
        plan.position(0) == (0, 0.0)
        and plan.position(144) == (1, 0.0)
        and plan.position(287) == (1, 1.0)
    )
    assert plan.t[1] == 1 / 144 and plan.t[145] == 1 / 143
    # times in seconds, frames keyed by number, and holds after the last keyframe
    timed = plan_travel(
        [Keyframe("a", at=0), Keyframe("b", at=1.0), Keyframe("c", at=2.0)], fps=4, seconds=3
    )
    assert timed.keyframe_frames == (0, 4, 8) and timed.n_frames == 12
    assert timed.t[8:] == (1.0,) * 4 and timed.segment[8:] == (1,) * 4
    assert plan_travel([Keyframe("a"), Keyframe("b", at=2.0)], fps=24).n_frames == 49
    assert plan_travel([Keyframe("a"), Keyframe("b")], fps=8, frames_per_segment=10).n_frames == 11


def test_perceptual_plan_gives_equal_shares_of_measured_distance():
    from whichway.metrics import invert_cumulative

    keys = [Keyframe("a"), Keyframe("b"), Keyframe("c")]
    knots = [0.0, 0.5, 1.0]
    distances = [(knots, [0.1, 0.1]), (knots, [0.5, 0.1])]  # segment 2 is three times longer
    plan = plan_travel(keys, fps=10, seconds=4.1, pacing="perceptual", distances=distances)
    assert plan.keyframe_frames == (0, 10, 40)  # 1/4 of the perceptual length, 1/4 of the frames
    expected = invert_cumulative(
        torch.tensor(knots, dtype=torch.float64), torch.tensor([0.5, 0.1], dtype=torch.float64), 31
    ).tolist()
    assert plan.t[10:41] == pytest.approx([0.0, *expected[1:-1], 1.0], abs=1e-12)
    # segment 2's first half holds 5/6 of its distance: it gets 5/6 of its frames
    assert sum(1 for s, t in zip(plan.segment, plan.t) if s == 1 and 0 < t < 0.5) == 24


def test_audio_pacing_moves_fast_on_clicks_and_never_stalls(click_track):
    from whichway.audio import envelope, load_audio

    env = envelope(load_audio(click_track))
    plan = plan_travel(
        [Keyframe("a"), Keyframe("b")],
        fps=24,
        seconds=3,
        pacing="audio",
        audio=env,
        audio_start=0.5,
        audio_floor=0.1,
    )
    assert plan.n_frames == 72 and plan.t[0] == 0.0 and plan.t[-1] == 1.0
    dt = np.diff(plan.t)
    start = 0.5 + np.arange(len(dt)) / 24  # track time at the start of each step
    clicks = CLICKS[(CLICKS > 0.5) & (CLICKS < 3.45)]
    around = [dt[np.abs(start - c) <= 1 / 24].max() for c in clicks]
    gap = np.min(np.abs(start[:, None] + 0.5 / 24 - clicks[None]), axis=1)
    between = dt[gap > 0.15]
    assert len(around) == 6 and len(between) > 20
    assert min(around) > 10 * between.max()
    assert between.min() > 0  # the floor keeps motion going in silence


def test_snap_beats_moves_keyframes_onto_beats(click_track):
    from whichway.audio import envelope, load_audio

    env = envelope(load_audio(click_track), beats=True)
    assert env.beats is not None and len(env.beats) >= 4
    plan = plan_travel(
        [Keyframe("a"), Keyframe("b"), Keyframe("c")],
        fps=24,
        seconds=3,
        audio=env,
        audio_start=0.1,
        snap_beats=True,
    )
    middle = plan.keyframe_frames[1] / 24 + 0.1
    assert np.min(np.abs(env.beats - middle)) <= 0.5 / 24


@pytest.mark.parametrize("suffix", [".flac", ".ogg", ".mp3"])
def test_audio_files_decode_to_mono(tmp_path, suffix):
    import soundfile as sf

    from whichway._files import sha256_file
    from whichway.audio import load_audio

    stereo = np.zeros((SR, 2), np.float32)
    stereo[SR // 2 : SR // 2 + 64, 0] = 0.9
    path = tmp_path / f"clicks{suffix}"
    sf.write(path, stereo, SR)
    track = load_audio(path)
    assert track.samples.ndim == 1 and track.sample_rate == SR
    assert track.duration == pytest.approx(1.0, abs=0.06)  # mp3 frames pad the end a little
    assert track.sha256 == sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()


# --- rendering ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def journey(tiny_adapter, click_track, tmp_path_factory):
    """Three keyframes, 2 s at 4 fps, music pacing, MP4 with the click track from 0.5 s."""
    adapter = tiny_adapter("sd")
    settings = TravelSettings(
        (
            Keyframe("a photo of a cat", seed=1),
            Keyframe("a red dog", seed=2),
            Keyframe("a blue car", seed=3),
        ),
        fps=4,
        seconds=2,
        pacing="audio",
        audio=click_track,
        audio_start=0.5,
        batch_size=3,
        **FAST,
    )
    out = tmp_path_factory.mktemp("journey")
    seen: list[int] = []
    steps: list[tuple[int, int]] = []
    result = run_travel(
        adapter,
        settings,
        out,
        progress=False,
        on_frame=lambda i, p: seen.append(i),
        on_step=lambda done, total: steps.append((done, total)),
    )
    return adapter, settings, result, seen, steps


def test_travel_writes_frames_video_with_sound_and_run_json(journey, click_track):
    from whichway.clouds import couple
    from whichway.media import probe_streams

    adapter, _, result, seen, steps = journey
    plan = result.plan
    assert plan.n_frames == 8 and len(result.frames) == 8 and result.rendered == 8
    assert [p.name for p in result.frames] == [f"{i:05d}.png" for i in range(8)]
    assert sorted(seen) == list(range(8))
    assert (
        steps[-1][0] == steps[-1][1] == len(steps)
    )  # one bar over the whole journey: 3 batches x 2 steps
    assert len(steps) == 6
    streams = probe_streams(result.video)
    assert [s["type"] for s in streams] == ["video", "audio"]
    video, audio = streams
    assert (
        video["codec"] == "h264"
        and video["frames"] == 8
        and video["duration"] == pytest.approx(2.0, abs=0.01)
    )
    assert audio["codec"] == "aac" and audio["duration"] == pytest.approx(2.0, abs=0.05)
    info = json.loads((result.run_dir / "run.json").read_text())
    assert info["status"] == "done" and info["command"] == "travel"
    assert [k["prompt"] for k in info["keyframes"]] == [
        "a photo of a cat",
        "a red dog",
        "a blue car",
    ]
    assert info["plan"]["t"] == list(plan.t) and info["plan"]["keyframe_frames"] == list(
        plan.keyframe_frames
    )
    with open(click_track, "rb") as fh:
        assert info["audio"]["sha256"] == hashlib.sha256(fh.read()).hexdigest()
    assert info["audio"]["start"] == 0.5 and info["audio"]["duration_used"] == 2.0
    assert {"torch", "diffusers", "whichway"} <= set(info["versions"])
    cond = adapter.encode(["a photo of a cat", "a red dog", "a blue car"])
    for k, seg in enumerate(info["segments"]):
        (group,) = seg["couplings"]
        ref = couple(cond.clouds[0][k], cond.clouds[0][k + 1], "ot")
        assert group["method"] == "ot" and group["cost"] == pytest.approx(float(ref.cost), rel=1e-6)
        # an OT displacement path is a W2 geodesic: its length is W2(E_k, E_k+1) = sqrt(cost / n)
        assert group["w2_path_length"] == pytest.approx((float(ref.cost) / 77) ** 0.5, rel=1e-4)
        assert seg["latent"] == "cog"
    with Image.open(result.strip) as strip:
        assert strip.width > 3 * 32


def test_keyframe_frames_equal_the_plain_pipeline(journey):
    adapter, settings, result, _, _ = journey
    for k, frame in enumerate(result.plan.keyframe_frames):
        kf = settings.keyframes[k]
        diff = np.abs(
            _pixels(result.frames[frame]).astype(int)
            - _plain(adapter, kf.prompt, kf.seed).astype(int)
        )
        assert diff.max() <= 1


def test_rerun_renders_only_missing_frames(journey, tmp_path):
    import shutil

    adapter, settings, result, _, _ = journey
    run_dir = tmp_path / "copy"
    shutil.copytree(result.run_dir, run_dir)
    kept = {i: _pixels(run_dir / "frames" / f"{i:05d}.png") for i in range(8)}
    (run_dir / "frames" / "00002.png").unlink()
    (run_dir / "frames" / "00006.png").unlink()
    written: list[int] = []
    again = run_travel(
        adapter, settings, run_dir, progress=False, on_frame=lambda i, p: written.append(i)
    )
    assert again.rendered == 2 and sorted(written) == [2, 6]
    for i in range(8):
        assert np.abs(_pixels(again.frames[i]).astype(int) - kept[i].astype(int)).max() <= 1
    # presentation settings (format, batch size) keep every frame
    from dataclasses import replace

    gif = run_travel(
        adapter, replace(settings, format="gif", batch_size=1), run_dir, progress=False
    )
    assert gif.rendered == 0
    with Image.open(gif.video) as anim:
        assert anim.n_frames == 8


def test_cancelled_run_keeps_its_frames_and_resumes(tiny_adapter, tmp_path):
    from whichway.render import RenderCancelled

    adapter = tiny_adapter("sd")
    settings = TravelSettings(
        (Keyframe("a photo of a cat", seed=7), Keyframe("a red dog", seed=7)),
        fps=2,
        seconds=2,
        batch_size=2,
        format=None,
        **FAST,
    )
    written: list[int] = []
    with pytest.raises(RenderCancelled):
        run_travel(
            adapter,
            settings,
            tmp_path,
            progress=False,
            on_frame=lambda i, p: written.append(i),
            should_stop=lambda: len(written) >= 2,
        )
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "cancelled"
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == ["00000.png", "00001.png"]
    assert run_travel(adapter, settings, tmp_path, progress=False).rendered == 2


def test_out_of_memory_retry_keeps_the_step_count_true(tiny_adapter, tmp_path, monkeypatch):
    from diffusers import UNet2DConditionModel

    adapter = tiny_adapter("sd")
    # 36 frames: more than one render chunk (32 frames at batch 2)
    settings = TravelSettings(
        (Keyframe("a photo of a cat", seed=7), Keyframe("a red dog", seed=8)),
        fps=18,
        seconds=2,
        batch_size=2,
        format=None,
        **FAST,
    )
    reference = run_travel(adapter, settings, tmp_path / "reference", progress=False)
    forward = UNet2DConditionModel.forward
    failures: list[int] = []

    def limited(self, sample, *args, **kwargs):  # a device that holds one frame (2 CFG rows)
        if sample.shape[0] > 2:
            failures.append(sample.shape[0])
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return forward(self, sample, *args, **kwargs)

    monkeypatch.setattr(UNet2DConditionModel, "forward", limited)
    steps: list[tuple[int, int]] = []
    result = run_travel(
        adapter,
        settings,
        tmp_path / "oom",
        progress=False,
        on_step=lambda done, total: steps.append((done, total)),
    )
    # the first batch of 2 fails at its first step; every later frame, in this chunk and the
    # next, renders one at a time without running out of memory again
    assert result.rendered == 36 and failures == [4]
    assert all(done <= total for done, total in steps)
    assert steps[-1] == (72, 72)  # 36 frames x 2 steps, the failed batch not counted
    for ours, ref in zip(result.frames, reference.frames):
        assert np.abs(_pixels(ours).astype(int) - _pixels(ref).astype(int)).max() <= 1


def test_image_keyframe_is_inverted_once_and_the_sampler_restored(tiny_pipeline, tmp_path):
    from whichway.models import load_adapter

    adapter = load_adapter(
        str(tiny_pipeline("sd")), device="cpu"
    )  # its own copy: the sampler changes
    before = adapter.describe()["scheduler"]
    Image.new("RGB", (32, 32), "blue").save(tmp_path / "blue.png")
    settings = TravelSettings(
        (
            Keyframe("a photo of a cat", image=str(tmp_path / "blue.png")),
            Keyframe("a red dog", seed=3),
        ),
        fps=2,
        seconds=1.5,
        format=None,
        **{**FAST, "guidance": 1.0},
    )
    inversions: list[str] = []
    invert = adapter.invert
    adapter.invert = lambda *a, **k: inversions.append("invert") or invert(*a, **k)
    result = run_travel(adapter, settings, tmp_path / "run", progress=False)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["scheduler"] == "DDIMScheduler" and info["segments"][0]["latent"] == "cog"
    assert len(list((tmp_path / "run" / "latents").glob("inverted-*.pt"))) == 1
    assert adapter.describe()["scheduler"] == before and result.rendered == 3
    assert inversions == ["invert"]
    # a rerun (a frame deleted) takes the cached inversion
    (tmp_path / "run" / "frames" / "00001.png").unlink()
    assert run_travel(adapter, settings, tmp_path / "run", progress=False).rendered == 1
    assert inversions == ["invert"]


def test_perceptual_pacing_respaces_the_whole_journey(tiny_adapter, tmp_path, monkeypatch):
    from whichway.metrics import LPIPSPath

    adapter = tiny_adapter("sd")
    meter = LPIPSPath("alex", pretrained_backbone=False)
    settings = TravelSettings(
        (Keyframe("a photo of a cat", seed=4), Keyframe("a red dog", seed=4)),
        fps=4,
        seconds=1.5,
        pacing="perceptual",
        coarse=3,
        format=None,
        **FAST,
    )
    result = run_travel(adapter, settings, tmp_path, progress=False, meter=meter)
    info = json.loads((tmp_path / "run.json").read_text())
    ((knots, steps),) = info["perceptual"]["distances"]
    assert knots == [0.0, 0.5, 1.0] and len(steps) == 2
    expected = plan_travel(
        settings.keyframes, fps=4, seconds=1.5, pacing="perceptual", distances=[(knots, steps)]
    )
    assert result.plan.t == expected.t and result.plan.keyframe_frames == (0, 5)
    assert result.rendered == 3 + 6 and result.spread is not None
    assert info["perceptual"]["spread_before"] == result.spread["before"]
    assert len(info["perceptual"]["steps_after"]) == 5
    assert info["segments"][0]["latent"] == "fixed"  # one seed: the latent stays
    # resume reuses the measurement: nothing is rendered again
    assert info["perceptual"]["meter"] == "lpips-alex-random"
    import whichway.travel.pacing

    measure_frames = whichway.travel.pacing.measure_frames
    monkeypatch.setattr(
        whichway.travel.pacing, "measure_frames", lambda *a, **k: pytest.fail("measured again")
    )
    assert run_travel(adapter, settings, tmp_path, progress=False, meter=meter).rendered == 0
    assert (
        json.loads((tmp_path / "run.json").read_text())["perceptual"]["steps_after"]
        == info["perceptual"]["steps_after"]
    )
    monkeypatch.setattr(whichway.travel.pacing, "measure_frames", measure_frames)
    # ... but not one taken by another meter: the coarse pass is measured again (here twice the
    # distances, so the same pacing and every final frame kept)
    again = run_travel(
        adapter,
        settings,
        tmp_path,
        progress=False,
        meter=lambda frames: 2 * meter.distances(frames),
    )
    assert again.rendered == 3 and again.plan.t == result.plan.t
    assert json.loads((tmp_path / "run.json").read_text())["perceptual"]["meter"].endswith(
        "<lambda>"
    )


def test_cli_schedule_with_frame_table_and_segment_overrides(tiny_pipeline, tmp_path, capsys):
    schedule = tmp_path / "journey.toml"
    schedule.write_text(
        'fps = 2\nformat = "gif"\nseed = 3\n'
        '[[keyframe]]\nprompt = "a photo of a cat"\ncoupling = "clip"\n'
        '[[keyframe]]\nprompt = "a red dog"\nframe = 2\n'
    )
    out = tmp_path / "run"
    rc = main(
        [
            "travel",
            str(schedule),
            "--model",
            str(tiny_pipeline("sd")),
            "--out",
            str(out),
            "--quiet",
            "--steps",
            "2",
            "--height",
            "32",
            "--width",
            "32",
            "--guidance",
            "4",
        ]
    )
    assert rc == 0
    info = json.loads((out / "run.json").read_text())
    assert info["plan"]["keyframe_frames"] == [0, 2] and info["plan"]["n_frames"] == 3
    assert (
        info["segments"][0]["coupling"] == "clip"
        and info["segments"][0]["couplings"][0]["method"] == "clip"
    )
    assert info["settings"]["seed"] == 3 and info["settings"]["steps"] == 2
    with Image.open(out / "travel.gif") as gif:
        assert gif.n_frames == 3
    assert "3 frames" in capsys.readouterr().out


def test_deforum_table_reads_as_frame_keyed_keyframes(tmp_path):
    path = tmp_path / "deforum.json"
    path.write_text(json.dumps({"0": "a cat", "48": "a dog", "24": "a fox"}))
    schedule = read_schedule(path)
    keys = schedule.keyframes(fps=24)
    assert [k.prompt for k in keys] == ["a cat", "a fox", "a dog"]
    assert plan_travel(keys, fps=24).keyframe_frames == (0, 24, 48)
    toml = tmp_path / "deforum.toml"
    toml.write_text('[prompts]\n0 = "a cat"\n12 = "a dog"\n')
    assert plan_travel(read_schedule(toml).keyframes(fps=12), fps=12).n_frames == 13
    settings = read_schedule(toml).to_settings(fps=6, steps=None)
    assert settings.fps == 6 and settings.steps == 30 and settings.keyframes[1].at == 2.0


# --- bad input: one line, before any model, nothing written ----------------------------------------


@pytest.fixture
def no_model(monkeypatch):
    def refuse(args):
        raise AssertionError("the model must not be loaded for bad input")

    monkeypatch.setattr("whichway.cli._options.load_model", refuse)
    monkeypatch.setattr("whichway.cli.travel.load_model", refuse)


def _schedule(tmp_path, text: str) -> str:
    path = tmp_path / "s.toml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            lambda d, a: ["a cat", "a dog", "--seconds", "2", "--audio", str(d / "missing.wav")],
            "does not exist",
        ),
        (
            lambda d, a: ["a cat", "a dog", "--seconds", "2", "--audio", str(d / "noise.wav")],
            "could not decode",
        ),
        (
            lambda d, a: ["a cat", "a dog", "--seconds", "3", "--audio", a, "--audio-start", "2"],
            "lasts 4.00 s",
        ),
        (
            lambda d, a: ["a cat", "a dog", "a fox", "--at", "0,5,3", "--seconds", "6"],
            "times must increase",
        ),
        (lambda d, a: ["a cat", "--seconds", "2"], "at least 2 keyframes"),
        (lambda d, a: ["a cat", "a dog", "--seconds", "2", "--fps", "0"], "--fps must be > 0"),
        (lambda d, a: ["a cat", "a dog", "--seconds", "2", "--pacing", "audio"], "needs a track"),
        (
            lambda d, a: ["a cat", "a dog", "--seeds", "1,2,3", "--seconds", "2"],
            "3 values for 2 prompts",
        ),
        (
            lambda d, a: [
                "a cat",
                "a dog",
                "--latent",
                "fixed",
                "--seeds",
                "1,2",
                "--seconds",
                "2",
            ],
            "one seed",
        ),
        (lambda d, a: ["a cat", "a dog"], "how long the video is"),
        (
            lambda d, a: [
                _schedule(
                    d,
                    '[[keyframe]]\nprompt = "a"\nimage = "noise.wav"\n[[keyframe]]\nprompt = "b"\nat = 2\n',
                )
            ],
            "keyframe 1: could not read",
        ),
        (
            lambda d, a: [_schedule(d, 'fps = 4\n[[keyframe]]\npromt = "a"\n')],
            "unknown key(s) 'promt'",
        ),
        (
            lambda d, a: [_schedule(d, 'frames = 4\n[[keyframe]]\nprompt = "a"\n')],
            "valid keys are: fps",
        ),
        (lambda d, a: [str(d / "nothing.toml")], "does not exist"),
        (
            lambda d, a: [_schedule(d, 'steps = "2"\n[[keyframe]]\nprompt = "a"\n')],
            "steps must be an integer",
        ),
    ],
)
def test_bad_input_is_one_line_before_any_model(
    no_model, tmp_path, click_track, capsys, args, message
):
    (tmp_path / "noise.wav").write_bytes(b"this is not audio")
    out = tmp_path / "run"
    rc = main(["travel", *args(tmp_path, click_track), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("whichway travel: error: ") and "\n" not in err
    assert message in err
    assert not out.exists()


def test_prepare_refuses_a_keyframe_past_the_end():
    with pytest.raises(ValueError, match="past the end"):
        prepare_travel(TravelSettings((Keyframe("a"), Keyframe("b", at=5.0)), fps=4, seconds=2))


def test_a_track_that_is_only_muxed_is_not_analysed(click_track, monkeypatch):
    import whichway.audio

    calls: list[str] = []
    real = whichway.audio.envelope
    monkeypatch.setattr(
        whichway.audio, "envelope", lambda *a, **k: calls.append("envelope") or real(*a, **k)
    )
    keys = (Keyframe("a"), Keyframe("b"))
    muxed = prepare_travel(TravelSettings(keys, fps=4, seconds=2, audio=click_track))
    assert muxed.audio is not None and muxed.envelope is None and calls == []
    paced = prepare_travel(
        TravelSettings(keys, fps=4, seconds=2, audio=click_track, pacing="audio")
    )
    assert paced.envelope is not None and calls == ["envelope"]


def test_settings_come_back_from_the_run_json_record():
    keys = (
        Keyframe("a cat", seed=1, at=0.0),
        Keyframe("a dog", negative_prompt="blur", coupling="clip"),
        Keyframe("a car", latent="slerp", at=2.0),
    )
    settings = TravelSettings(
        keys, fps=6, pacing="uniform", steps=3, height=32, width=32, batch_size=2, format=None
    )
    record = json.loads(
        json.dumps({**settings.record(), "model": "tiny-sd", "runtime": {"sampler": "euler"}})
    )
    assert TravelSettings.from_record(record) == settings
