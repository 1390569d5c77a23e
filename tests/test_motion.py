"""Motion journeys (AnimateDiff through whichway's travel): the identity adapter reproduces the
still travel, the conditioning at the UNet input is the OT path, the context windows and their
weights follow FreeNoise's definition, reruns keep or redo the video as a whole, and bad input is
refused in one line before weights load."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch

from whichway.cli import main
from whichway.motion.windows import context_windows, resolve_context, window_weights

SIZE = 32
STEPS = 2


@pytest.fixture(scope="module")
def animatediff(tmp_path_factory):
    from whichway.models.tiny_motion import build_tiny_animatediff

    return build_tiny_animatediff(tmp_path_factory.mktemp("animatediff"))


@pytest.fixture(scope="module")
def base(animatediff):
    from whichway.models import load_adapter

    return load_adapter(str(animatediff / "base"), device="cpu", dtype="float32")


def _unet(base, animatediff, name):
    from whichway.motion.adapter import check_motion_source, motion_unet

    return motion_unet(base, check_motion_source(str(animatediff / name)))


def _render(base, unet, cond, latents, **kw):
    from whichway.motion.denoise import render_motion

    frames = {}
    options = dict(context_length=4, context_stride=2, steps=STEPS, guidance=7.5)
    options.update(kw)
    render_motion(
        base,
        unet,
        cond,
        latents,
        height=SIZE,
        width=SIZE,
        on_frame=frames.__setitem__,
        progress=False,
        **options,
    )
    return torch.stack([frames[i] for i in range(len(frames))])


def _still(base, cond, latents, negative):
    """The still travel's frames (what travel's Renderer hands render_frames) of the same rows."""
    n = len(cond)
    options = dict(steps=STEPS, guidance=7.5, height=SIZE, width=SIZE)
    return base.render(cond, latents, negative=negative.expand(n), **options)


def _journey_rows(base, n_per_segment=3):
    """The travel path of a 3-keyframe journey: conditioning, latents, negative per frame."""
    from whichway.travel import Keyframe, TravelSettings, prepare_travel
    from whichway.travel.rendering import Journey

    s = TravelSettings(
        (
            Keyframe("a photo of a cat", seed=1),
            Keyframe("a dog", seed=2),
            Keyframe("a red car", seed=3),
        ),
        frames_per_segment=n_per_segment,
        steps=STEPS,
        height=SIZE,
        width=SIZE,
    )
    plan = prepare_travel(s).plan
    journey = Journey(base, s, SIZE, SIZE, None)
    positions = [plan.position(i) for i in range(plan.n_frames)]
    return journey, positions, journey.rows(positions)


# --- windows and callbacks (no model) ---------------------------------------------------------------


@pytest.mark.parametrize("length", range(1, 10))
def test_pyramid_weights_are_freenoise_weights(length):
    from diffusers.models.attention import FreeNoiseTransformerBlock

    for scheme in ("pyramid", "flat"):
        assert window_weights(length, scheme) == FreeNoiseTransformerBlock._get_frame_weights(
            None, length, scheme
        )


@pytest.mark.parametrize(
    "n,length,stride", [(12, 4, 2), (13, 4, 4), (12, 4, 4), (3, 4, 1), (25, 16, 4)]
)
def test_windows_cover_every_frame_with_full_windows(n, length, stride):
    windows = context_windows(n, length, stride)
    assert windows[0][0] == 0 and windows[-1][1] == n
    covered = set()
    for a, b in windows:
        assert b - a == min(length, n)
        covered.update(range(a, b))
    assert covered == set(range(n))
    starts = [a for a, _ in windows]
    assert all(0 < y - x <= stride for x, y in itertools.pairwise(starts))


def test_context_defaults_follow_the_adapter():
    assert resolve_context(None, None, 32) == (16, 4)
    assert resolve_context(None, None, 8) == (8, 4)
    assert resolve_context(3, None, 32) == (3, 3)
    with pytest.raises(ValueError, match="motion_max_seq_length"):
        resolve_context(40, 4, 32)


def test_lerp_callback_is_freenoise_lerp_and_ot_callback_is_interpolate_clouds():
    from diffusers.pipelines.free_noise_utils import AnimateDiffFreeNoiseMixin

    from whichway.clouds import interpolate_clouds
    from whichway.motion.interpolation import lerp_interpolation, ot_interpolation

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1, 9, 6, generator=g), torch.randn(1, 9, 6, generator=g)
    ours = lerp_interpolation(4, 11, a, b)
    theirs = AnimateDiffFreeNoiseMixin._lerp(None, 4, 11, a, b)
    assert ours.shape == (8, 9, 6)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    ot = ot_interpolation("ot")(4, 11, a, b)
    ts = torch.arange(8, dtype=torch.float32) / 7
    torch.testing.assert_close(ot, interpolate_clouds(a[0], b[0], ts, method="ot"), rtol=0, atol=0)
    # OT pairs tokens differently from the lerp, and both start at a and end at a permutation of b
    assert not torch.allclose(ot, ours)
    torch.testing.assert_close(ot[0], a[0])


def test_callbacks_inside_diffusers_freenoise_pipeline(animatediff):
    """In diffusers' own AnimateDiffPipeline with FreeNoise, the lerp callback gives its default
    per-frame embeddings and the OT callback gives interpolate_clouds per segment."""
    from diffusers import AnimateDiffPipeline, MotionAdapter

    from whichway.clouds import interpolate_clouds
    from whichway.motion.interpolation import lerp_interpolation, ot_interpolation

    pipe = AnimateDiffPipeline.from_pretrained(
        str(animatediff / "base"), motion_adapter=MotionAdapter.from_pretrained(
            str(animatediff / "motion"))
    )  # fmt: skip
    prompts = {0: "a photo of a cat", 4: "a dog", 9: "a red car"}

    def embeds(callback):
        pipe.enable_free_noise(
            context_length=4, context_stride=2, prompt_interpolation_callback=callback
        )
        out, _ = pipe._encode_prompt_free_noise(prompts, 10, torch.device("cpu"), 1, False)
        return out

    with torch.no_grad():  # as the pipeline calls them
        torch.testing.assert_close(embeds(lerp_interpolation), embeds(None), rtol=0, atol=0)
        ot = embeds(ot_interpolation("ot"))
        keys = pipe.encode_prompt(list(prompts.values()), "cpu", 1, False)[0]
    for k, (a, b) in enumerate(itertools.pairwise(prompts)):
        ts = torch.arange(b - a + 1, dtype=torch.float32) / (b - a)
        expected = interpolate_clouds(keys[k], keys[k + 1], ts, method="ot")
        torch.testing.assert_close(ot[a : b + 1], expected, rtol=0, atol=1e-6)


def test_shuffled_noise_repeats_the_first_window_shuffled():
    from whichway.motion.denoise import shuffled_noise

    latents = torch.randn(11, 4, 2, 2, generator=torch.Generator().manual_seed(0))
    out = shuffled_noise(latents, 4, 2, seed=5)
    torch.testing.assert_close(out[:4], latents[:4], rtol=0, atol=0)  # the first window as drawn
    for start in range(4, 11, 2):  # each block: distinct frames of the block `length` before it
        source = [out[k] for k in range(start - 4, start - 2)]
        picks = [
            next(k for k, x in enumerate(source) if torch.equal(x, out[f]))
            for f in range(start, min(start + 2, 11))
        ]
        assert len(set(picks)) == len(picks)
    torch.testing.assert_close(out, shuffled_noise(latents, 4, 2, seed=5), rtol=0, atol=0)
    assert not torch.equal(out, shuffled_noise(latents, 4, 2, seed=6))


# --- rendering with the tiny AnimateDiff ------------------------------------------------------------


def test_identity_adapter_renders_the_still_travel(base, animatediff):
    _, _, (cond, latents, negative) = _journey_rows(base)
    unet = _unet(base, animatediff, "motion-identity")
    motion = _render(base, unet, cond, latents, negative=negative)
    still = _still(base, cond, latents, negative)
    assert motion.shape == still.shape == (len(cond), 3, SIZE, SIZE)
    torch.testing.assert_close(motion, still, rtol=0, atol=1e-4)


def test_random_adapter_moves_the_frames_and_windows_matter(base, animatediff):
    _, _, (cond, latents, negative) = _journey_rows(base)
    unet = _unet(base, animatediff, "motion")
    motion = _render(base, unet, cond, latents, negative=negative)
    still = _still(base, cond, latents, negative)
    assert (motion - still).abs().amax(dim=(1, 2, 3)).min() > 1e-3  # every frame moved
    one_window = _render(
        base, unet, cond, latents, negative=negative, context_length=len(cond), context_stride=1
    )
    assert (motion - one_window).abs().max() > 1e-3  # the windows (not one pass) decided the video


def test_unet_input_is_the_ot_travel_path_one_window_at_a_time(base, animatediff):
    from whichway.render import conditioning_path

    journey, positions, (cond, latents, negative) = _journey_rows(base)
    unet = _unet(base, animatediff, "motion")
    seen = []

    def capture(module, args, kwargs):
        seen.append((args[0].shape, kwargs["encoder_hidden_states"].detach().clone()))

    handle = unet.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        _render(base, unet, cond, latents, negative=negative, steps=1)
    finally:
        handle.remove()
    windows = context_windows(len(positions), 4, 2)
    assert len(seen) == len(windows)
    for (shape, states), (a, b) in zip(seen, windows):
        assert shape[2] == b - a == 4  # one window of frames per UNet call (batch: uncond, cond)
        frames = states[b - a :]  # the conditional half
        for j, i in enumerate(range(a, b)):
            k, t = positions[i]
            expected, _ = conditioning_path(
                journey.cond[k],
                journey.cond[k + 1],
                torch.tensor([t], dtype=torch.float64),
                couplings=journey.couplings[k],
            )
            torch.testing.assert_close(frames[j], expected.clouds[0][0], rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def base_sdxl(animatediff):
    from whichway.models import load_adapter

    return load_adapter(str(animatediff / "base-sdxl"), device="cpu", dtype="float32")


def test_sdxl_identity_adapter_renders_the_still_sdxl_travel(base_sdxl, animatediff):
    _, _, (cond, latents, negative) = _journey_rows(base_sdxl, n_per_segment=2)
    assert len(cond) == 5 and cond.pooled is not None
    unet = _unet(base_sdxl, animatediff, "motion-identity")
    motion = _render(base_sdxl, unet, cond, latents, negative=negative)
    still = _still(base_sdxl, cond, latents, negative)
    assert motion.shape == still.shape == (5, 3, SIZE, SIZE)
    torch.testing.assert_close(motion, still, rtol=0, atol=1e-4)
    moved = _render(
        base_sdxl, _unet(base_sdxl, animatediff, "motion"), cond, latents, negative=negative
    )
    assert (moved - still).abs().amax(dim=(1, 2, 3)).min() > 1e-3  # a random adapter moves each


def test_sdxl_each_frame_gets_its_own_pooled_path_and_time_ids_at_the_unet(base_sdxl, animatediff):
    from whichway.render import conditioning_path

    journey, positions, (cond, latents, negative) = _journey_rows(base_sdxl, n_per_segment=2)
    unet = _unet(base_sdxl, animatediff, "motion")
    seen = []

    def capture(module, args, kwargs):  # the time + added embedding the first block receives
        seen.append(kwargs["temb"].detach().clone())

    handle = unet.down_blocks[0].register_forward_pre_hook(capture, with_kwargs=True)
    try:
        _render(base_sdxl, unet, cond, latents, negative=negative, steps=1, context_length=5)
    finally:
        handle.remove()
    assert len(seen) == 1 and seen[0].shape[0] == 10  # one window: 5 unconditional, 5 conditional
    still_unet, t = base_sdxl.pipe.unet, base_sdxl.pipe.scheduler.timesteps[0]
    ids = base_sdxl.time_ids(SIZE, SIZE, 1)
    for i, (k, s) in enumerate(positions):
        expected, _ = conditioning_path(
            journey.cond[k],
            journey.cond[k + 1],
            torch.tensor([s], dtype=torch.float64),
            couplings=journey.couplings[k],
        )
        torch.testing.assert_close(cond.pooled[i], expected.pooled[0], rtol=0, atol=1e-6)
        # what the still SDXL UNet's first block receives for this frame's conditioning
        still_seen: list = []
        hook = still_unet.down_blocks[0].register_forward_pre_hook(
            lambda m, a, kw, out=still_seen: out.append(kw["temb"]), with_kwargs=True
        )
        try:
            with torch.no_grad():
                still_unet(
                    latents[i : i + 1],
                    t,
                    encoder_hidden_states=expected.clouds[0].float(),
                    added_cond_kwargs={"text_embeds": expected.pooled.float(), "time_ids": ids},
                )
        finally:
            hook.remove()
        want = still_seen[0]
        torch.testing.assert_close(seen[0][5 + i], want[0], rtol=0, atol=1e-5)
    assert (seen[0][5] - seen[0][9]).abs().max() > 1e-4  # the frames' embeddings differ


def test_cli_motion_run_records_and_resumes_as_a_whole(animatediff, tmp_path, capsys):
    out = tmp_path / "run"
    argv = [
        "travel", "a photo of a cat", "a dog", "--model", str(animatediff / "base"),
        "--motion", str(animatediff / "motion"), "--height", str(SIZE), "--width", str(SIZE),
        "--steps", "1", "--frames-per-segment", "5", "--fps", "4", "--context-length", "4",
        "--context-stride", "2", "--out", str(out), "--quiet", "--format", "gif",
    ]  # fmt: skip
    assert main(argv) == 0
    record = json.loads((out / "run.json").read_text())
    m = record["motion"]
    assert m["adapter"] == str(animatediff / "motion")
    import hashlib

    weights = animatediff / "motion" / "diffusion_pytorch_model.safetensors"
    assert m["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert (m["context_length"], m["context_stride"], m["window_weights"]) == (4, 2, [1, 2, 2, 1])
    assert m["windows"] == [[0, 4], [2, 6]]
    assert len(record["plan"]["t"]) == 6
    first = {p.name: p.read_bytes() for p in (out / "frames").glob("*.png")}
    assert len(first) == 6
    assert "(6 rendered now)" in capsys.readouterr().out
    assert main(argv) == 0  # nothing missing: the video is kept
    assert "(0 rendered now)" in capsys.readouterr().out
    (out / "frames" / "00003.png").unlink()  # one frame missing: the whole video again
    assert main(argv) == 0
    assert "(6 rendered now)" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in (out / "frames").glob("*.png")} == first


def test_cli_identity_motion_frames_are_the_still_travel_frames(animatediff, tmp_path):
    from whichway.media import load_image

    common = [
        "travel", "a photo of a cat", "a dog", "a red car", "--seeds", "1,2,3",
        "--model", str(animatediff / "base"), "--height", str(SIZE), "--width", str(SIZE),
        "--steps", str(STEPS), "--frames-per-segment", "3", "--quiet", "--format", "none",
    ]  # fmt: skip
    identity = ["--motion", str(animatediff / "motion-identity"), "--context-length", "4"]
    assert main([*common, *identity, "--out", str(tmp_path / "m")]) == 0
    assert main([*common, "--out", str(tmp_path / "s")]) == 0
    motion = json.loads((tmp_path / "m" / "run.json").read_text())
    still = json.loads((tmp_path / "s" / "run.json").read_text())
    assert motion["plan"]["t"] == still["plan"]["t"] and len(still["plan"]["t"]) == 7
    for name in still["frames"]:
        a = load_image(tmp_path / "m" / name)
        b = load_image(tmp_path / "s" / name)
        torch.testing.assert_close(a, b, rtol=0, atol=1 / 255 + 1e-6)  # PNG rounding at most


# --- refusals -------------------------------------------------------------------------------------


def _refused(capsys, argv, *needles):
    capsys.readouterr()
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def fake_models(tmp_path, animatediff):
    """Config-only base models (no weights): the checks must refuse before anything loads."""
    sd3 = tmp_path / "sd3"
    sd3.mkdir()
    (sd3 / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusion3Pipeline"}))
    other = tmp_path / "wide"
    (other / "unet").mkdir(parents=True)
    (other / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    (other / "unet" / "config.json").write_text(json.dumps({"block_out_channels": [320, 640]}))
    empty = tmp_path / "no-weights"
    empty.mkdir()
    (empty / "config.json").write_text((animatediff / "motion" / "config.json").read_text())
    return sd3, other, empty


def test_bad_motion_input_is_one_line_before_loading(animatediff, fake_models, capsys, monkeypatch):
    import whichway.models

    def boom(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(whichway.models, "load_adapter", boom)
    sd3, other, empty = fake_models
    motion = str(animatediff / "motion")
    common = ["travel", "a cat", "a dog", "--frames-per-segment", "4", "--steps", "1"]
    base = ["--model", str(animatediff / "base")]
    _refused(
        capsys,
        [*common, *base, "--motion", motion, "--context-length", "0"],
        "--context-length",
        ">= 1",
    )
    _refused(
        capsys,
        [*common, *base, "--motion", motion, "--context-length", "4", "--context-stride", "5"],
        "--context-stride 5 is larger",
    )
    _refused(capsys, [*common, *base, "--context-length", "4"], "give --motion")
    _refused(capsys, [*common, *base, "--motion", str(empty)], "holds no weights")
    _refused(
        capsys,
        [*common, *base, "--motion", str(animatediff / "base" / "unet")],
        "not a MotionAdapter",
    )
    _refused(
        capsys,
        [*common, *base, "--motion", motion, "--context-length", "64"],
        "motion_max_seq_length",
    )
    _refused(
        capsys,
        [*common, "--model", str(sd3), "--motion", motion],
        "SD 1.x or SDXL base model",
        "sd3",
    )
    _refused(capsys, [*common, "--model", str(other), "--motion", motion], "[32, 64]", "[320, 640]")


# --- memory of one window -------------------------------------------------------------------------

# The peak is this process's own VmHWM (KiB), not ru_maxrss: Linux starts a child's ru_maxrss at
# the RSS of the process it was spawned from, so under a large pytest process every run would read
# the parent's size and the comparison could not fail.
_PEAK = """
import sys, torch
from whichway.models import load_adapter
from whichway.motion.adapter import check_motion_source, motion_unet
from whichway.motion.denoise import render_motion
def peak_kib():
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmHWM")).split()[1])
d, size = sys.argv[1], int(sys.argv[2])
adapter = load_adapter(d + "/base", device="cpu", dtype="float32")
unet = motion_unet(adapter, check_motion_source(d + "/motion"))
base = peak_kib()
for n, length in ((4, 4), (12, 4), (12, 12)):  # in the order of their expected peaks
    cond = adapter.encode(["a cat"]).expand(n)
    latents = torch.stack([adapter.initial_latent(i, size, size) for i in range(n)])
    render_motion(adapter, unet, cond, latents, steps=1, guidance=1.0, height=size, width=size,
                  context_length=length, context_stride=length, progress=False)
    print(peak_kib() - base)
"""


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads Linux's VmHWM")
def test_a_journey_of_three_windows_peaks_at_one_window(animatediff):
    """Peak RSS growth (a fresh interpreter; the peak only rises, so the runs go from the smallest
    expected peak up): 3L frames in windows of L stay near L frames in one window, far below 3L
    frames in one window (what the windows save)."""
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-c", _PEAK, str(animatediff), "128"],
        capture_output=True,
        text=True,
        check=True,
    )
    one_window, windowed, unwindowed = (int(x) for x in run.stdout.split()[-3:])  # KiB
    assert unwindowed > one_window * 1.5, (one_window, unwindowed)  # frames cost memory here
    assert windowed < one_window + 0.35 * (unwindowed - one_window), (
        one_window,
        windowed,
        unwindowed,
    )


# --- memory estimate and out-of-memory --------------------------------------------------------------


def test_window_estimate_is_frames_times_denoising_and_doctor_prints_it(base, animatediff, capsys):
    from whichway.models.memory import plan_memory, window_memory

    plan = plan_memory(base, 64, 64, 7.5, capacity_bytes=None)
    den, dec = plan.denoise_frame_bytes, plan.decode_frame_bytes
    for frames in (1, 4, 16):
        w = window_memory(plan, frames, motion_weights=1000)
        assert w.bytes == plan.base_bytes + 1000 + max(frames * den, dec)
    capped = plan_memory(base, 64, 64, 7.5, capacity_bytes=plan.base_bytes + 10 * max(den, dec))
    w = window_memory(capped, 16)
    usable = capped.headroom * capped.capacity_bytes
    assert window_memory(capped, w.max_frames).fits and w.max_frames >= 1
    assert capped.base_bytes + (w.max_frames + 1) * den > usable  # the longest, not shorter
    model, motion = str(animatediff / "base"), str(animatediff / "motion")
    argv = ["doctor", "--model", model, "--height", "64", "--width", "64"]
    assert main([*argv, "--context-length", "8", "--motion", motion]) == 0
    assert "motion context window of 8 frames" in capsys.readouterr().out
    _refused(capsys, [*argv, "--context-length", "0"], "--context-length must be >= 1")


def test_auto_batch_picks_the_longest_window_that_fits_or_refuses(base, animatediff):
    from whichway.models.memory import plan_memory, window_memory
    from whichway.motion.adapter import check_motion_source
    from whichway.travel import Keyframe, TravelSettings
    from whichway.travel.motion import fit_context_length

    motion = check_motion_source(str(animatediff / "motion"))
    weights = motion.weights.stat().st_size
    plan = plan_memory(base, SIZE, SIZE, 7.5, capacity_bytes=None)
    den = plan.denoise_frame_bytes

    def settings(**kw):
        keys = (Keyframe("a cat", seed=1), Keyframe("a dog", seed=2))
        return TravelSettings(
            keys,
            height=SIZE,
            width=SIZE,
            batch_size="auto",
            motion=str(animatediff / "motion"),
            **kw,
        )

    def fit(s, frames):  # a fake device: the weights, the motion weights and `frames` frames
        cap = int((plan.base_bytes + weights + (frames + 0.5) * den) / plan.headroom)
        capped = plan_memory(base, SIZE, SIZE, 7.5, capacity_bytes=cap)
        assert window_memory(capped, frames, weights).fits
        assert not window_memory(capped, frames + 1, weights).fits
        return fit_context_length(s, base, motion, SIZE, SIZE, capacity_bytes=cap)

    # unknown capacity: the adapter's default; room for 5 frames: 5; room for 40: still 16
    assert fit_context_length(settings(), base, motion, SIZE, SIZE, capacity_bytes=None) == 16
    assert fit(settings(), 5) == 5
    assert fit(settings(), 40) == 16
    assert fit(settings(context_length=4), 5) == 4  # a given length that fits is kept
    with pytest.raises(
        ValueError, match=r"--context-length 8 does not fit.*longest that fits is 5"
    ):
        fit(settings(context_length=8), 5)
    with pytest.raises(ValueError, match="not even a motion window of 6 frame"):
        fit(settings(context_stride=6), 5)  # shorter than the stride: refused, not shrunk
    with pytest.raises(ValueError, match="not even a motion window of 1 frame"):
        fit_context_length(settings(), base, motion, SIZE, SIZE, capacity_bytes=plan.base_bytes)


def test_auto_batch_motion_journey_records_the_fitted_window_or_refuses_in_one_line(
    base, animatediff, tmp_path, capsys, monkeypatch
):
    import whichway.models.memory as memory
    from whichway.models.memory import plan_memory

    model, motion = str(animatediff / "base"), str(animatediff / "motion")
    weights = (animatediff / "motion" / "diffusion_pytorch_model.safetensors").stat().st_size
    plan = plan_memory(base, SIZE, SIZE, 7.5, capacity_bytes=None)
    room = {"frames": 3}

    def fake_capacity(device, components=()):  # a device with room for room["frames"] frames
        return int(
            (plan.base_bytes + weights + (room["frames"] + 0.5) * plan.denoise_frame_bytes)
            / plan.headroom
        )

    monkeypatch.setattr(memory, "capacity", fake_capacity)
    argv = [
        "travel", "a cat", "a dog", "--model", model, "--motion", motion,
        "--height", str(SIZE), "--width", str(SIZE), "--steps", "1",
        "--frames-per-segment", "7", "--batch-size", "auto", "--quiet",
    ]  # fmt: skip
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    assert run["motion"]["context_length"] == 3
    assert all(end - start == 3 for start, end in run["motion"]["windows"])
    assert len(list((tmp_path / "a" / "frames").glob("*.png"))) == 8
    room["frames"] = 0
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]  # after the loading bars: one line
    assert last.startswith("whichway travel: error: not even a motion window"), last
    assert "--context-length" in last, last


def test_out_of_memory_in_a_window_is_one_line_naming_context_length(
    animatediff, tmp_path, capsys, monkeypatch
):
    import whichway.motion.adapter as motion_adapter

    real = motion_adapter.motion_unet

    def failing(adapter, source):  # the allocator fails inside the first window
        unet = real(adapter, source)

        def oom(module, args, kwargs):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

        unet.register_forward_pre_hook(oom, with_kwargs=True)
        return unet

    monkeypatch.setattr(motion_adapter, "motion_unet", failing)
    argv = [
        "travel", "a cat", "a dog", "--model", str(animatediff / "base"),
        "--motion", str(animatediff / "motion"), "--height", str(SIZE), "--width", str(SIZE),
        "--steps", "1", "--frames-per-segment", "3", "--out", str(tmp_path / "o"), "--quiet",
    ]  # fmt: skip
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]  # after the loading bars: one line
    assert last.startswith("whichway travel: error: out of memory"), last
    for needle in ("--context-length", "--offload model", "--vae-tiling"):
        assert needle in last, last


# --- studio -----------------------------------------------------------------------------------------


def test_studio_travel_takes_a_motion_adapter(animatediff, tmp_path):
    from whichway.studio.session import Studio

    studio = Studio(tmp_path / "runs", str(animatediff / "base"), device="cpu", dtype="float32")
    keys = [["a cat", 1, None], ["a dog", 2, None]]
    options = dict(frames_per_segment=3, steps=1, height=SIZE, width=SIZE, format="none")
    with pytest.raises(ValueError, match="holds no weights"):
        empty = tmp_path / "empty"
        empty.mkdir()
        (empty / "config.json").write_text((animatediff / "motion" / "config.json").read_text())
        studio.travel_settings(keys, motion=str(empty), **options)
    settings, prepared = studio.travel_settings(keys, motion=str(animatediff / "motion"), **options)
    assert settings.motion == str(animatediff / "motion") and prepared.motion.sha256
    frames = []
    result = studio.travel_job(settings, prepared=prepared)(
        lambda i, path: frames.append(i), lambda done, total: None, lambda: False
    )
    assert sorted(frames) == list(range(4))
    assert json.loads((result.run_dir / "run.json").read_text())["motion"]["context_length"] == 16


# --- compare: the motion rows ---------------------------------------------------------------------


def test_compare_motion_rows_are_the_lerp_and_ot_paths_through_the_adapter(
    base, animatediff, tmp_path
):
    from whichway.compare import compare_couplings, save_comparison
    from whichway.metrics import LPIPSPath
    from whichway.metrics.lpips_path import LPIPS_MIN_SIDE as LPIPS_SIDE

    options = dict(steps=1, height=LPIPS_SIDE, width=LPIPS_SIDE, seed=3)
    t = [0, 0.25, 0.5, 0.75, 1]
    identity = compare_couplings(
        base, "a photo of a cat", "a red car", t, methods=("ot", "clip"),
        motion=str(animatediff / "motion-identity"), context_length=4,
        **{**options, "height": SIZE, "width": SIZE},
    )  # fmt: skip
    # the identity adapter changes nothing: each motion row is its coupling's still row
    for moving, still in (("lerp+motion", "clip"), ("ot+motion", "ot")):
        torch.testing.assert_close(
            identity.frames[moving], identity.frames[still], rtol=0, atol=1e-4
        )
        assert identity.costs[moving] == pytest.approx(identity.costs[still])
    meter = LPIPSPath("alex", pretrained_backbone=False)
    moving = compare_couplings(
        base, "a photo of a cat", "a red car", t, methods=("ot",), meter=meter,
        motion=str(animatediff / "motion"), context_length=4, **options,
    )  # fmt: skip
    rows = {row["coupling"]: row for row in moving.summary()}
    assert set(rows) == {"ot", "lerp+motion", "ot+motion"}
    assert (moving.frames["ot+motion"] - moving.frames["ot"]).abs().max() > 1e-3
    for row in rows.values():
        steps = moving.metrics[row["coupling"]].steps
        assert row["mean_step"] == pytest.approx(float(steps.mean()))
        assert row["max_step"] == pytest.approx(float(steps.max()))
    saved = save_comparison(moving, tmp_path / "cmp", base)
    assert saved["ot+motion"].is_file()
    record = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert record["settings"]["motion"]["sha256"]


def test_compare_command_adds_the_motion_rows(animatediff, tmp_path):
    import csv

    out = tmp_path / "cmp"
    rc = main(
        [
            "compare", "a cat", "a red car", "--model", str(animatediff / "base"),
            "--motion", str(animatediff / "motion"), "--context-length", "4", "--couplings", "ot",
            "--frames", "3", "--steps", "1", "--height", str(SIZE), "--width", str(SIZE),
            "--no-score", "--quiet", "--out", str(out),
        ]
    )  # fmt: skip
    assert rc == 0
    with open(out / "compare.csv", newline="") as f:
        assert [r["coupling"] for r in csv.DictReader(f)] == ["ot", "lerp+motion", "ot+motion"]
    assert (out / "ot+motion.png").is_file()
    assert json.loads((out / "compare.json").read_text())["settings"]["context_length"] == 4


def test_studio_compare_adds_the_motion_rows(animatediff, tmp_path):
    from whichway.studio.session import Studio
    from whichway.studio.tabs.compare import _compare_table

    studio = Studio(tmp_path / "runs", str(animatediff / "base"), device="cpu", dtype="float32")
    with pytest.raises(ValueError, match="does not exist"):
        studio.compare_job("a cat", "a dog", motion=str(tmp_path / "nowhere"))
    job = studio.compare_job(
        "a cat", "a dog", frames=3, steps=1, height=SIZE, width=SIZE,
        motion=str(animatediff / "motion"),
    )  # fmt: skip
    result, _target, strips, _ = job(None, lambda done, total: None, lambda: False)
    assert {"lerp+motion", "ot+motion"} <= set(strips) and strips["ot+motion"].is_file()
    table = _compare_table(result, None)
    assert "| ot+motion |" in table and "mean / max step" in table
