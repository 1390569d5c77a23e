"""whichway.comfyui without a ComfyUI server: token groups of every family, the prompt path
against whichway.interpolate_clouds, ComfyUI's per-seed noise, schedules, install, and the pack's
one-line message when whichway cannot be imported."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from whichway.clouds import couple, interpolate_clouds
from whichway.comfyui.conditioning import prompt_path, token_groups
from whichway.comfyui.install import PACK_NAME, install, pack_dir
from whichway.comfyui.journey import (
    check_fixed_noise,
    journey_frames,
    parse_schedule,
    plan_journey,
)
from whichway.comfyui.noise import PathNoise, noise_path, parse_times, seed_noise
from whichway.gaussian import cog_interpolate

ROOT = Path(__file__).resolve().parents[1]


def _cond(n: int, d: int, p: int | None, seed: int, **extra) -> list:
    g = torch.Generator().manual_seed(seed)
    tensor = torch.randn(1, n, d, generator=g)
    info = dict(extra)
    if p is not None:
        info["pooled_output"] = torch.randn(1, p, generator=g)
    return [[tensor, info]]


def _sd3(n_t5: int, seed: int) -> list:
    g = torch.Generator().manual_seed(seed)
    clip = torch.nn.functional.pad(torch.randn(1, 77, 2048, generator=g), (0, 2048))
    t5 = torch.randn(1, n_t5, 4096, generator=g)
    return [[torch.cat([clip, t5], dim=1), {"pooled_output": torch.randn(1, 2048, generator=g)}]]


@pytest.mark.parametrize(
    ("d", "p", "family", "names"),
    [
        (768, 768, "SD 1.x", ("CLIP-L",)),
        (1024, 1024, "SD 2.x", ("OpenCLIP-H",)),
        (2048, 1280, "SDXL", ("CLIP-L+G",)),
        (4096, 768, "Flux", ("T5",)),
    ],
)
def test_token_groups_one_group_families(d: int, p: int, family: str, names: tuple) -> None:
    cond = _cond(154, d, p, 0)[0]
    groups = token_groups(cond[0], cond[1]["pooled_output"])
    assert (groups.family, groups.names, groups.bounds) == (family, names, ((0, 154),))


def test_token_groups_sd3_splits_clip_from_t5_at_the_zero_padding() -> None:
    tensor, info = _sd3(77, 1)[0]
    groups = token_groups(tensor, info["pooled_output"])
    assert groups.family == "SD3"
    assert groups.names == ("CLIP-L+G", "T5")
    assert groups.bounds == ((0, 77), (77, 154))
    # ComfyUI's SD3 CLIP without CLIP-L/G: T5 rows only, pooled zeros (1, 2048)
    t5 = torch.randn(1, 77, 4096, generator=torch.Generator().manual_seed(2))
    groups = token_groups(t5, torch.zeros(1, 2048))
    assert (groups.names, groups.bounds) == (("T5",), ((0, 77),))
    # ... and without T5: the zero-padded CLIP rows only
    groups = token_groups(tensor[:, :77], info["pooled_output"])
    assert (groups.names, groups.bounds) == (("CLIP-L+G",), ((0, 77),))


@pytest.mark.parametrize(
    ("shape", "pooled"), [((1, 77, 512), (1, 512)), ((1, 77, 768), None), ((1, 77, 2048), (1, 768))]
)
def test_unknown_conditioning_shape_is_refused(shape: tuple, pooled: tuple | None) -> None:
    a = [[torch.zeros(shape), {} if pooled is None else {"pooled_output": torch.zeros(pooled)}]]
    with pytest.raises(ValueError, match="is not one whichway knows; known shapes are"):
        prompt_path(a, a, [0.0, 1.0])


@pytest.mark.parametrize("coupling", ["ot", "clip", "random"])
def test_prompt_path_is_interpolate_clouds_per_group(coupling: str) -> None:
    """SD3: each group is coupled on its own, the path is interpolate_clouds of each group,
    pooled is the lerp; t = 0 is A bit for bit, t = 1 a row permutation of B."""
    a, b = _sd3(77, 1), _sd3(77, 2)
    times = [0.0, 0.3, 0.5, 1.0]
    path = prompt_path(a, b, times, coupling=coupling, seed=7)
    tensor, info = path.conditioning[0]
    assert tensor.shape == (4, 154, 4096)
    ta, tb = a[0][0][0], b[0][0][0]
    for (lo, hi), c in zip(path.groups.bounds, path.couplings):
        gen = torch.Generator().manual_seed(7)
        if coupling != "random":
            expected_c = couple(ta[lo:hi], tb[lo:hi], coupling, generator=gen)
            assert torch.equal(c.perm, expected_c.perm)
        expected = interpolate_clouds(ta[lo:hi], tb[lo:hi], torch.tensor(times), coupling=c)
        assert torch.equal(tensor[:, lo:hi], expected)
        assert torch.equal(tensor[-1, lo:hi], tb[lo:hi][c.perm])
    assert torch.equal(tensor[0], ta)
    pa, pb = a[0][1]["pooled_output"][0], b[0][1]["pooled_output"][0]
    for k, t in enumerate(times):
        assert torch.allclose(info["pooled_output"][k], (1 - t) * pa + t * pb, atol=1e-6)
    assert torch.equal(info["pooled_output"][0], pa) and torch.equal(info["pooled_output"][-1], pb)


def test_prompt_path_ot_is_cheapest_and_keeps_other_keys() -> None:
    a, b = _cond(77, 768, 768, 3, guidance=3.5), _cond(77, 768, 768, 4)
    costs = {
        m: float(prompt_path(a, b, [0.5], coupling=m).couplings[0].cost)
        for m in ("ot", "clip", "random")
    }
    assert costs["ot"] <= costs["clip"] and costs["ot"] <= costs["random"]
    assert prompt_path(a, b, [0.5]).conditioning[0][1]["guidance"] == 3.5


def test_prompt_path_refuses_mixed_families_and_batches() -> None:
    with pytest.raises(ValueError, match="encode both prompts with the same CLIP"):
        prompt_path(_cond(77, 768, 768, 0), _cond(77, 2048, 1280, 0), [0.5])
    batch = [[torch.zeros(2, 77, 768), {"pooled_output": torch.zeros(2, 768)}]]
    with pytest.raises(ValueError, match="a batch of 2 conditionings"):
        prompt_path(batch, batch, [0.5])
    with pytest.raises(ValueError, match="coupling 'clip' needs equal sizes: use ot"):
        prompt_path(_cond(154, 768, 768, 0), _cond(77, 768, 768, 1), [0.5], coupling="clip")


def test_seed_noise_is_comfyuis_batch_of_one() -> None:
    """ComfyUI's prepare_noise: torch.manual_seed(seed) then one randn of the latent's size."""
    generator = torch.manual_seed(11)
    expected = torch.randn((1, 4, 8, 8), generator=generator)[0]
    assert torch.equal(seed_noise(11, (4, 8, 8)), expected)


def test_path_noise_frames_and_mismatch() -> None:
    latent = {"samples": torch.zeros(3, 4, 8, 8)}
    fixed = PathNoise(2, 9, "fixed", (0.0, 0.5, 1.0)).generate_noise(latent)
    assert all(torch.equal(fixed[i], seed_noise(2, (4, 8, 8))) for i in range(3))
    cog = PathNoise(2, 9, "cog", (0.0, 0.5, 1.0)).generate_noise(latent)
    xa, xb = seed_noise(2, (4, 8, 8)), seed_noise(9, (4, 8, 8))
    assert torch.equal(cog[0], xa) and torch.equal(cog[2], xb)
    assert torch.allclose(cog[1], cog_interpolate(xa, xb, 0.5), atol=1e-6)
    assert torch.allclose(cog[1], (xa + xb) / 2**0.5, atol=1e-6)
    with pytest.raises(ValueError, match="latent batch has 2 frames but the noise path 3"):
        PathNoise(2, 9, "cog", (0.0, 0.5, 1.0)).generate_noise({"samples": torch.zeros(2, 4, 8, 8)})
    assert torch.equal(noise_path(4, 4, [0.0, 0.5], (4, 8, 8), "cog")[1], seed_noise(4, (4, 8, 8)))


@pytest.mark.parametrize(
    ("text", "frames", "message"),
    [("0, 1.5", 3, r"\[0, 1\]"), ("0, x", 3, "numbers separated by commas"), ("", 1, "at least 2")],
)
def test_parse_times_errors(text: str, frames: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_times(text, frames)
    assert parse_times("", 5) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert parse_times("0, 0.2,1", 9) == [0.0, 0.2, 1.0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("  ", "schedule is empty"),
        ('"8": "a", "0": "b"', "frame numbers must increase: frame 0 comes after frame 8"),
        ('"0": "a", "0": "b"', "must increase"),
        ('"0": "a"', "at least 2 keyframes"),
        ('"0": "a", "x": "b"', "must be frame numbers"),
        ('"0": "a" "4": "b"', "is not of the form"),
        ("[[keyframe]]\nprompt = 'a'\nfrme = 3", "unknown key"),
        ("fps = 12\n[prompts]\n0 = 'a'\n4 = 'b'", "sets fps, which are this node's fields"),
        (
            "[[keyframe]]\nprompt = 'a'\nnegative_prompt = 'x'\n[[keyframe]]\nprompt = 'b'",
            "negative_prompt is not used",
        ),
    ],
)
def test_bad_schedules(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_schedule(text, 24.0)


def test_fizz_and_toml_schedules_plan_the_same_frames() -> None:
    fizz = parse_schedule('"0": "a cat",\n"4": "a dog",\n"8": "a fox",', 24.0)
    toml = parse_schedule('[prompts]\n0 = "a cat"\n4 = "a dog"\n8 = "a fox"\n', 24.0)
    assert [k.prompt for k in fizz] == [k.prompt for k in toml] == ["a cat", "a dog", "a fox"]
    j1, j2 = plan_journey(fizz, 9, fps=24.0), plan_journey(toml, 9, fps=24.0)
    assert j1 == j2
    assert j1.keyframe_frames == (0, 4, 8)
    assert j1.t == (0.0, 0.25, 0.5, 0.75, 0.0, 0.25, 0.5, 0.75, 1.0)
    with pytest.raises(ValueError, match="raise frames to at least 3"):
        plan_journey(fizz, 2, fps=24.0)
    with pytest.raises(ValueError, match="keyframe 3 is at frame 8 but the journey has 6 frames"):
        plan_journey(fizz, 6, fps=24.0)


def test_journey_frames_keyframes_are_exact() -> None:
    """Keyframe frames carry their prompt's conditioning and their seed's noise exactly; a frame
    inside segment k is the OT path between keyframes k and k+1 at its t."""
    keyframes = parse_schedule(
        "[[keyframe]]\nprompt='a'\nseed=1\nframe=0\n[[keyframe]]\nprompt='b'\nseed=2\nframe=2\n"
        "[[keyframe]]\nprompt='c'\nseed=3\nframe=4\n",
        24.0,
    )
    journey = plan_journey(keyframes, 5, fps=24.0)
    encoded = [_cond(77, 768, 768, s) for s in (10, 11, 12)]
    cond, noise, table = journey_frames(journey, encoded, coupling="ot", noise="cog", seed=0)
    tensor = cond[0][0]
    assert tensor.shape == (5, 77, 768)
    assert torch.equal(tensor[0], encoded[0][0][0][0])
    c = couple(encoded[0][0][0][0], encoded[1][0][0][0])
    assert torch.equal(
        tensor[1], interpolate_clouds(encoded[0][0][0][0], encoded[1][0][0][0], 0.5, coupling=c)
    )
    # frame 2 opens segment 1 at t = 0: keyframe b's rows exactly
    assert torch.equal(tensor[2], encoded[1][0][0][0])
    drawn = noise.generate_noise({"samples": torch.zeros(5, 4, 8, 8)})
    for frame, seed in ((0, 1), (2, 2), (4, 3)):
        assert torch.equal(drawn[frame], seed_noise(seed, (4, 8, 8)))
    assert table.splitlines()[0] == "frame, keyframe segment, t"
    # 'fixed' noise keeps keyframe a's noise through the segment, so keyframe b (seed 2) would
    # get seed 1's: refused, as whichway travel refuses it; one shared seed is fine
    with pytest.raises(ValueError, match=r"segment 1 .* seeds 1 and 2.*set noise to cog"):
        journey_frames(journey, encoded, coupling="ot", noise="fixed", seed=0)
    with pytest.raises(ValueError, match="seeds 1 and 2"):
        check_fixed_noise(keyframes, "fixed", 0)
    check_fixed_noise(parse_schedule('"0": "a", "2": "b", "4": "c"', 24.0), "fixed", 7)
    pinned = parse_schedule(
        "[[keyframe]]\nprompt='a'\nseed=1\nlatent='cog'\n[[keyframe]]\nprompt='b'\nseed=2\n",
        24.0,
    )
    check_fixed_noise(pinned, "fixed", 0)  # the keyframe's own latent wins for its segment


def test_audio_pacing_moves_fast_on_the_beat() -> None:
    """A click at 0.5 s of a 1 s track: audio pacing puts more of the way around the click
    than uniform pacing does (the same plan as whichway travel --pacing audio)."""
    pytest.importorskip("librosa")
    from whichway.comfyui.journey import audio_envelope

    rate = 22050
    wave = torch.zeros(1, 1, rate)
    wave[0, 0, rate // 2 : rate // 2 + 200] = 1.0
    env = audio_envelope({"waveform": wave, "sample_rate": rate}, "onset")
    keyframes = parse_schedule('"0": "a", "24": "b"', 24.0)
    paced = plan_journey(keyframes, 25, fps=24.0, pacing="audio", audio=env)
    uniform = plan_journey(keyframes, 25, fps=24.0)
    jump = max(b - a for a, b in zip(paced.t, paced.t[1:]))
    assert jump > 2 * max(b - a for a, b in zip(uniform.t, uniform.t[1:]))
    assert paced.t[0] == 0.0 and paced.t[-1] == 1.0
    with pytest.raises(ValueError, match="connect a LoadAudio output"):
        audio_envelope("not audio", "onset")


def test_install_links_once_and_refuses_to_overwrite(tmp_path: Path) -> None:
    comfy = tmp_path / "ComfyUI"
    (comfy / "custom_nodes").mkdir(parents=True)
    (comfy / "main.py").write_text("")
    done = install(comfy)
    assert done.action == "linked"
    assert (comfy / "custom_nodes" / PACK_NAME).resolve() == pack_dir()
    assert (comfy / "custom_nodes" / PACK_NAME / "__init__.py").is_file()
    assert install(comfy).action == "already linked"
    other = tmp_path / "Other"
    (other / "custom_nodes" / PACK_NAME).mkdir(parents=True)
    with pytest.raises(ValueError, match="already exists"):
        install(other)
    with pytest.raises(ValueError, match="does not look like ComfyUI"):
        install(tmp_path)
    copied = tmp_path / "Copy"
    (copied / "custom_nodes").mkdir(parents=True)
    assert install(copied, copy=True).action == "copied"
    assert not (copied / "custom_nodes" / PACK_NAME).is_symlink()


def test_cli_install_says_what_it_did(tmp_path: Path) -> None:
    (tmp_path / "custom_nodes").mkdir()
    run = subprocess.run(
        [sys.executable, "-m", "whichway", "comfyui", "install", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(f"linked {tmp_path / 'custom_nodes' / PACK_NAME} -> {pack_dir()}")
    bad = subprocess.run(
        [sys.executable, "-m", "whichway", "comfyui", "install", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "is not a folder" in bad.stderr


@pytest.mark.parametrize(("blocked", "package"), [("whichway", "whichway"), ("ot", "pot")])
def test_pack_without_its_dependencies_logs_one_line(blocked: str, package: str) -> None:
    """The pack folder loaded as ComfyUI loads it (from its file path), in a Python where
    ``blocked`` cannot be imported: no exception, no nodes, one log line naming what to install."""
    script = textwrap.dedent(
        f"""
        import importlib.abc, importlib.util, logging, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == {blocked!r} or name.startswith({blocked!r} + "."):
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        for name in [m for m in sys.modules if m.split(".")[0] in ("whichway", "ot")]:
            del sys.modules[name]
        sys.meta_path.insert(0, Block())
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
        spec = importlib.util.spec_from_file_location("comfyui_whichway_pack", {str(pack_dir() / "__init__.py")!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        print("nodes", len(module.NODE_CLASS_MAPPINGS))
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "nodes 0"
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert f"lacks {package!r}" in lines[0] and "-m pip install" in lines[0]
    if package == "whichway" and pack_dir().is_relative_to(ROOT):
        # linked from this clone: the advice installs the clone (whichway need not be on PyPI)
        assert lines[0].endswith(f'-m pip install -e "{ROOT}[comfyui]"'), lines[0]
    elif package != "whichway":
        assert lines[0].endswith(f"-m pip install {package}"), lines[0]


def test_pack_loads_every_node() -> None:
    from whichway.comfyui.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

    assert set(NODE_CLASS_MAPPINGS) == set(NODE_DISPLAY_NAME_MAPPINGS)
    for cls in NODE_CLASS_MAPPINGS.values():
        assert cls.CATEGORY == "whichway" and callable(getattr(cls, cls.FUNCTION))


def test_path_metrics_node_is_perceptual_path_length() -> None:
    """The node's PPL and smoothness are whichway.metrics' on the same frames (ComfyUI's IMAGE
    layout (T, H, W, 3) turned to (T, 3, H, W)); one t per frame or an error."""
    pytest.importorskip("lpips")
    from whichway.comfyui.nodes import PathMetrics
    from whichway.metrics import perceptual_path_length

    g = torch.Generator().manual_seed(0)
    images = torch.rand(4, 40, 36, 3, generator=g)
    report, ppl, smooth = PathMetrics().run(images, "alex", "random (not comparable)")
    ref = perceptual_path_length(images.permute(0, 3, 1, 2), net="alex", pretrained_backbone=False)
    assert ppl == ref.ppl and smooth == ref.smoothness and ppl > 0
    assert report.startswith("LPIPS-alex (RANDOM backbone: not comparable): PPL")
    with pytest.raises(ValueError, match="2 t values for 4 frames"):
        PathMetrics().run(images, "alex", "random (not comparable)", "0, 1")
    with pytest.raises(ValueError, match="at least 32x32"):
        PathMetrics().run(images[:, :20], "alex", "random (not comparable)")


def test_path_metrics_node_without_lpips_is_one_line() -> None:
    """In a Python without LPIPS (the comfyui extra does not bring the metrics extra) the node
    fails with one line naming the extra to install, not a ModuleNotFoundError traceback."""
    script = textwrap.dedent(
        """
        import importlib.abc, sys, torch
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "lpips" or name.startswith("lpips."):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        sys.meta_path.insert(0, Block())
        from whichway.comfyui.nodes import PathMetrics
        try:
            PathMetrics().run(torch.rand(3, 32, 32, 3), "alex", "random (not comparable)")
        except ValueError as exc:
            print(exc)
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == (
        "the path-metrics node needs the metrics extra (lpips) in the Python running ComfyUI: "
        "pip install 'whichway[metrics]'"
    )


def test_latent_path_node_on_image_latents() -> None:
    """Two LATENTs (as VAEEncode gives them) on a COG path: the ends are the inputs exactly, the
    middle is whichway.gaussian.cog_interpolate; batches and sizes are checked."""
    from whichway.comfyui.nodes import LatentPath

    g = torch.Generator().manual_seed(1)
    a = {"samples": torch.randn(1, 4, 8, 6, generator=g)}
    b = {"samples": torch.randn(1, 4, 8, 6, generator=g)}
    (out,) = LatentPath().run(a, b, "cog", 5)
    path = out["samples"]
    assert path.shape == (5, 4, 8, 6)
    assert torch.equal(path[0], a["samples"][0]) and torch.equal(path[-1], b["samples"][0])
    assert torch.allclose(
        path[2], cog_interpolate(a["samples"][0], b["samples"][0], 0.5), atol=1e-6
    )
    (explicit,) = LatentPath().run(a, b, "lerp", 5, "0, 0.25, 1")
    assert explicit["samples"].shape[0] == 3
    assert torch.allclose(
        explicit["samples"][1], 0.75 * a["samples"][0] + 0.25 * b["samples"][0], atol=1e-6
    )
    with pytest.raises(ValueError, match="one latent per side"):
        LatentPath().run({"samples": torch.zeros(2, 4, 8, 6)}, b, "cog", 3)
    with pytest.raises(ValueError, match="differ in size"):
        LatentPath().run({"samples": torch.zeros(1, 4, 8, 8)}, b, "cog", 3)


def test_cli_path_prints_the_pack_folder() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "whichway", "comfyui", "path"], capture_output=True, text=True
    )
    assert run.returncode == 0 and run.stdout.strip() == str(pack_dir())
