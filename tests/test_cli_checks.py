"""Every command refuses what it can check without a model before loading anything heavy.

The loaders (``whichway.models.load_adapter``, the LPIPS builder, ``build_tiny_pipeline``, the
study runners) are replaced by functions that fail the test if called, so a refusal that comes
after a model, weights or data were loaded is caught. Refusals are one line on stderr, exit code 2.
A few end-to-end runs on the tiny model check what must still work: ``grid --out FOLDER``, a
``morph --no-score`` that never touches the network, the once-per-machine LPIPS note, and a
rescued output when the target cannot be written.
"""

from __future__ import annotations

import json
import socket
import sys
import types
from pathlib import Path

import pytest
from PIL import Image

from whichway.cli import main

TINY = ["--steps", "1", "--height", "32", "--width", "32", "--guidance", "2", "--quiet"]


def _boom(what: str):
    def fail(*args, **kwargs):
        raise AssertionError(f"{what} was called before the arguments were checked")

    return fail


@pytest.fixture
def no_loading(monkeypatch):
    """Fail the test if any model, LPIPS weights, tiny pipeline or study is loaded."""
    import whichway.models
    from whichway.metrics import lpips_path

    monkeypatch.setattr(whichway.models, "load_adapter", _boom("load_adapter"), raising=False)
    monkeypatch.setattr(lpips_path, "_build_lpips", _boom("the LPIPS builder"))
    tiny = types.ModuleType("whichway.models.tiny")
    tiny.build_tiny_pipeline = _boom("build_tiny_pipeline")
    monkeypatch.setitem(sys.modules, "whichway.models.tiny", tiny)
    for name, func in (("prompt_study", "run_prompt_study"), ("latent_study", "run_latent_study")):
        fake = types.ModuleType(f"whichway.studies.{name}")
        setattr(fake, func, _boom(func))
        monkeypatch.setitem(sys.modules, f"whichway.studies.{name}", fake)


def _refused(capsys, argv: list[str], *needles: str) -> str:
    """Run the command; assert exit code 2 and exactly one stderr line containing ``needles``."""
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert len(lines) == 1, err
    command = argv[0]
    assert lines[0].startswith(f"whichway {command}: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "cat.png"
    Image.new("RGB", (40, 40), "orange").save(path)
    return path


@pytest.fixture
def not_an_image(tmp_path) -> Path:
    path = tmp_path / "notes.png"
    path.write_text("hello")
    return path


@pytest.fixture
def a_file(tmp_path) -> Path:
    path = tmp_path / "file.txt"
    path.write_text("x")
    return path


# --- morph ------------------------------------------------------------------------------------
def test_morph_refuses_before_loading(no_loading, capsys, tmp_path, a_file, image, not_an_image):
    base = ["morph", "a cat", "a dog", "--model", "nobody/none", "--out", str(tmp_path / "run")]
    _refused(capsys, [*base, "--height", "63"], "--height must be a positive multiple of 8, got 63")
    _refused(capsys, [*base, "--width", "0"], "--width")
    _refused(capsys, ["morph", "a", "b", "--out", str(a_file)], "is a file")
    _refused(
        capsys, ["morph", "a", "b", "--out", str(a_file / "run")], "is a file, not a directory"
    )
    _refused(capsys, [*base, "--frames", "1"], "--frames must be >= 2")
    _refused(capsys, [*base, "--t", "0,0.6,0.5,1"], "strictly increasing")
    _refused(capsys, [*base, "--t", "0,1.5"], "must lie in [0, 1]")
    _refused(capsys, [*base, "--seed", "-1"], "--seed must be an integer in 0..")
    _refused(capsys, [*base, "--steps", "0"], "--steps")
    _refused(capsys, [*base, "--fps", "0"], "--fps")
    _refused(capsys, [*base, "--batch-size", "0"], "--batch-size")
    _refused(capsys, [*base, "--image-a", str(image)], "give both --image-a and --image-b")
    _refused(
        capsys,
        [*base, "--image-a", str(image), "--image-b", str(tmp_path / "no.png")],
        "--image-b",
        "no.png",
    )
    _refused(
        capsys,
        [*base, "--image-a", str(not_an_image), "--image-b", str(image)],
        "notes.png",
        "not a readable image",
    )
    _refused(
        capsys,
        [*base, "--image-a", str(image), "--image-b", str(image), "--inversion-steps", "0"],
        "--inversion-steps",
    )
    # perceptual spacing needs LPIPS: still refused before LPIPS is built
    _refused(capsys, [*base, "--spacing", "perceptual", "--height", "16"], "--height >= 32")
    _refused(capsys, [*base, "--spacing", "perceptual", "--latent", "nao"], "equally spaced")
    assert not (tmp_path / "run").exists()


def test_a_sampler_of_another_family_is_refused_without_importing_torch(tiny_pipeline, tmp_path):
    import subprocess

    flux = tiny_pipeline("flux")
    code = (
        "import sys\n"
        "from whichway.cli import main\n"
        f"rc = main(['morph', 'a', 'b', '--model', {str(flux)!r}, '--sampler', 'euler-a', '--out', {str(tmp_path / 'o')!r}])\n"
        "print(rc, 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["2", "False"]
    assert "valid choices for a flux model are: flow-euler" in done.stderr


def test_morph_no_score_never_touches_the_network(tiny_pipeline, tmp_path, monkeypatch, capsys):
    import torch.hub

    from whichway.metrics import lpips_path

    model = str(tiny_pipeline("sd"))  # built before the network is cut
    monkeypatch.setattr(socket.socket, "connect", _boom("socket.connect"))
    monkeypatch.setattr(socket, "create_connection", _boom("socket.create_connection"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _boom("torch.hub.download_url_to_file"))
    monkeypatch.setattr(lpips_path, "_build_lpips", _boom("the LPIPS builder"))
    out = tmp_path / "run"
    rc = main(
        [
            "morph",
            "a cat",
            "a dog",
            "--model",
            model,
            "--frames",
            "2",
            "--format",
            "none",
            "--no-score",
            "--out",
            str(out),
            *TINY,
        ]
    )
    assert rc == 0, capsys.readouterr().err
    assert json.loads((out / "run.json").read_text())["status"] == "done"
    assert "PPL" not in capsys.readouterr().out


def test_missing_lpips_weights_cost_one_short_line_once(
    tiny_pipeline, tmp_path, monkeypatch, capsys, caplog
):
    """Offline without cached weights: the first morph tries once and says so in one short line;
    later morphs neither try again nor print anything about it."""
    import urllib.error

    import torch.hub

    model = str(tiny_pipeline("sd"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # nothing cached
    monkeypatch.setenv("WHICHWAY_CACHE_DIR", str(tmp_path / "cache"))  # a machine never seen
    attempts = []

    def offline(url, *args, **kwargs):
        attempts.append(url)
        raise urllib.error.URLError("offline (test)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    argv = ["morph", "a cat", "a dog", "--model", model, "--frames", "2", "--format", "none", *TINY]
    caplog.set_level("DEBUG", logger="whichway")
    assert main([*argv, "--out", str(tmp_path / "one")]) == 0
    notes = [r.getMessage() for r in caplog.records if r.levelno >= 30]
    assert len(notes) == 1 and "\n" not in notes[0] and len(notes[0]) < 160, notes
    assert "whichway score --help" in notes[0] and "alexnet" in notes[0]
    assert len(attempts) == 1
    caplog.clear()
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "two")]) == 0
    assert [r for r in caplog.records if r.levelno >= 30] == []
    assert "Downloading" not in capsys.readouterr().err
    assert len(attempts) == 1  # no second attempt


# --- grid -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kind", [["seeds", "a cat", "--seeds", "0,1,2"], ["prompts", "a", "b", "c"]]
)
def test_grid_refuses_before_loading(no_loading, capsys, tmp_path, a_file, kind):
    base = ["grid", *kind, "--model", "nobody/none"]
    line = _refused(
        capsys,
        [*base, "--out", str(tmp_path / "g.txt")],
        "'.txt'",
        ".png, .jpg, .jpeg, .webp",
        "folder",
    )
    assert "grid.png" in line
    _refused(capsys, [*base, "--out", str(a_file / "g.png")], "is a file, not a directory")
    _refused(capsys, [*base, "--size", "1"], "--size must be >= 2")
    _refused(capsys, [*base, "--height", "20"], "--height must be a positive multiple of 8")
    _refused(capsys, [*base, "--steps", "0"], "--steps")


def test_grid_specific_refusals(no_loading, capsys):
    _refused(capsys, ["grid", "seeds", "a", "--seeds", "0,0,1"], "--seeds must be different seeds")
    _refused(capsys, ["grid", "seeds", "a", "--seeds", "4"], "--seeds needs at least 2 seeds")
    _refused(capsys, ["grid", "seeds", "a", "--seeds", "0,-3"], "--seeds must be an integer in 0..")
    _refused(capsys, ["grid", "seeds", "a", "--seeds", "0,x"], "comma-separated integers")
    _refused(capsys, ["grid", "seeds", "a", "--axes", "0,0"], "--axes")
    _refused(capsys, ["grid", "prompts", "a", "b"], "3 or 4 prompts")
    _refused(capsys, ["grid", "prompts", "a", "b", "c", "--seed", "-2"], "--seed")


def test_grid_out_without_extension_is_a_folder(tiny_pipeline, tmp_path, capsys):
    model = str(tiny_pipeline("sd"))
    rc = main(
        [
            "grid",
            "seeds",
            "a cat",
            "--seeds",
            "0,1",
            "--size",
            "2",
            "--model",
            model,
            "--out",
            str(tmp_path / "g1"),
            *TINY,
        ]
    )
    assert rc == 0, capsys.readouterr().err
    with Image.open(tmp_path / "g1" / "grid.png") as grid:
        assert grid.width > 64 and grid.height > 64  # 2 x 2 cells of 32 px with captions
    assert str(tmp_path / "g1" / "grid.png") in capsys.readouterr().out
    assert [p.name for p in (tmp_path / "g1").iterdir()] == ["grid.png"]  # no temporary file left


def test_grid_that_cannot_be_written_is_rescued(tiny_pipeline, tmp_path, monkeypatch, capsys):
    """The target folder fails at write time (after the up-front checks passed): the finished grid
    goes to the rescue folder and the one-line error says where."""
    import tempfile

    import whichway._files as files

    model = str(tiny_pipeline("sd"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    real = files._via_temp

    def disk_full(path, write):
        if path.parent == tmp_path / "out":
            raise OSError(28, "No space left on device")
        return real(path, write)

    monkeypatch.setattr(files, "_via_temp", disk_full)
    rc = main(
        [
            "grid",
            "prompts",
            "a",
            "b",
            "c",
            "--size",
            "2",
            "--model",
            model,
            "--out",
            str(tmp_path / "out" / "g.png"),
            *TINY,
        ]
    )
    line = capsys.readouterr().err.strip().splitlines()[-1]  # after diffusers' loading bars
    assert rc == 2 and line.startswith("whichway grid: error: could not write ")
    assert "No space left on device" in line and "saved to" in line
    rescued = list((tmp_path / "tmp" / "whichway-rescue").glob("g-*.png"))
    assert len(rescued) == 1 and str(rescued[0]) in line
    with Image.open(rescued[0]) as img:
        assert img.width > 64


# --- invert -----------------------------------------------------------------------------------
def test_invert_refuses_before_loading(no_loading, capsys, tmp_path, image, not_an_image, a_file):
    base = ["invert", str(image), "--prompt", "a cat", "--model", "nobody/none"]
    _refused(capsys, [*base, "--out", str(tmp_path / "z.npy")], "'.npy'", ".safetensors, .pt, .pth")
    _refused(capsys, [*base, "--out", str(a_file / "z.pt")], "is a file, not a directory")
    _refused(capsys, [*base, "--height", "30"], "--height must be a positive multiple of 8")
    _refused(capsys, [*base, "--steps", "0"], "--steps must be >= 1")
    _refused(capsys, [*base, "--refine", "-1"], "--refine must be >= 0")
    _refused(
        capsys, ["invert", str(not_an_image), "--prompt", "a"], "notes.png", "not a readable image"
    )
    _refused(capsys, ["invert", str(tmp_path / "none.png"), "--prompt", "a"], "does not exist")


def test_invert_out_folder_gets_the_default_name(image, tmp_path):
    from whichway.cli import build_parser
    from whichway.cli.invert import check_args

    args = build_parser().parse_args(
        ["invert", str(image), "--prompt", "a", "--out", str(tmp_path / "lat")]
    )
    assert check_args(args) == tmp_path / "lat" / "cat.latent.safetensors"


# --- score ------------------------------------------------------------------------------------
def test_score_refuses_before_loading_lpips(no_loading, capsys, tmp_path, image):
    frames = tmp_path / "frames"
    frames.mkdir()
    Image.new("RGB", (40, 40)).save(frames / "0000.png")
    _refused(capsys, ["score", str(tmp_path), "--batch-size", "0"], "--batch-size must be >= 1")
    _refused(capsys, ["score", str(tmp_path)], "1 frame(s)", "at least 2")
    _refused(capsys, ["score", str(tmp_path / "nowhere")], "does not exist")
    _refused(capsys, ["score", str(image)], "not a directory")


# --- couple -----------------------------------------------------------------------------------
def test_couple_refuses_before_loading(no_loading, capsys, tmp_path, a_file):
    _refused(capsys, ["couple", "--steps", "1"], "--steps must be >= 2")
    _refused(
        capsys, ["couple", "--embeddings", str(a_file)], "'.txt'", ".pt, .pth, .safetensors, .npz"
    )
    _refused(capsys, ["couple", "--embeddings", str(tmp_path / "none.pt")], "does not exist")
    _refused(capsys, ["couple", "one prompt", "--model", "nobody/none"], "two prompts")
    _refused(capsys, ["couple", "--random", "0", "4"], "N >= 1")
    _refused(capsys, ["couple", "a", "b", "--model", "m", "--seed", "-1"], "--seed")


# --- check-invariance -------------------------------------------------------------------------
def test_check_invariance_refuses_before_loading(no_loading, capsys):
    base = ["check-invariance", "--model", "nobody/none"]
    _refused(capsys, [*base, "--height", "12"], "--height must be a positive multiple of 8")
    _refused(capsys, [*base, "--tolerance", "0"], "--tolerance must be a number > 0")
    _refused(capsys, [*base, "--timestep", "-5"], "--timestep must be >= 0")
    _refused(capsys, [*base, "--seed", "-1"], "--seed")


# --- study ------------------------------------------------------------------------------------
def test_study_refuses_before_loading(no_loading, capsys, tmp_path, a_file):
    cfg = tmp_path / "study.toml"
    assert (
        main(
            [
                "study",
                "prompts",
                "init",
                str(cfg),
                "--set",
                'pairs.source="file"',
                "--set",
                f'pairs.file="{tmp_path / "pairs.csv"}"',
            ]
        )
        == 0
    )
    (tmp_path / "pairs.csv").write_text("prompt_a,prompt_b\na,b\n")
    base = ["study", "prompts", "run", str(cfg)]
    _refused(capsys, [*base, "--out", str(a_file)], "is a file")
    _refused(
        capsys,
        [*base, "--out", str(tmp_path / "o"), "--set", "render.height=20"],
        "render.height must be a positive multiple of 8",
    )
    _refused(
        capsys,
        [*base, "--out", str(tmp_path / "o"), "--set", f'pairs.file="{tmp_path / "missing.csv"}"'],
        "missing.csv",
        "does not exist",
    )
    _refused(capsys, ["study", "latents", "run", str(cfg), "--out", str(tmp_path / "o")], "unknown")
    _refused(capsys, ["study", "prompts", "init", str(tmp_path / "cfg.txt")], "'.txt'", ".toml")
    assert not (tmp_path / "o").exists()


# --- tiny-model -------------------------------------------------------------------------------
def test_tiny_model_refuses_before_building(no_loading, capsys, tmp_path, a_file):
    _refused(capsys, ["tiny-model", "sd", str(a_file)], "is not a directory")
    _refused(capsys, ["tiny-model", "sd", str(a_file / "m")], "is a file, not a directory")
    _refused(capsys, ["tiny-model", "sd", str(tmp_path / "m"), "--seed", "-1"], "--seed")


# --- the shared helpers -----------------------------------------------------------------------
def test_out_file_or_folder(tmp_path):
    from whichway.cli._options import IMAGE_EXTENSIONS, out_file_or_folder

    assert (
        out_file_or_folder(tmp_path / "g1", "grid.png", IMAGE_EXTENSIONS)
        == tmp_path / "g1" / "grid.png"
    )
    assert (
        out_file_or_folder(tmp_path / "a.PNG", "grid.png", IMAGE_EXTENSIONS) == tmp_path / "a.PNG"
    )
    (tmp_path / "runs.v2").mkdir()
    assert (
        out_file_or_folder(tmp_path / "runs.v2", "grid.png", IMAGE_EXTENSIONS)
        == tmp_path / "runs.v2" / "grid.png"
    )
    with pytest.raises(ValueError, match=r"'\.gif'; give a file name ending in one of: \.png"):
        out_file_or_folder(tmp_path / "a.gif", "grid.png", IMAGE_EXTENSIONS)


def test_small_checks():
    from whichway.cli._options import (
        check_animation_format,
        check_at_least,
        check_seeds,
        check_size,
        check_t_values,
    )

    assert check_t_values([0, 0.5, 1]) == (0.0, 0.5, 1.0)
    with pytest.raises(ValueError, match="at least 2 values"):
        check_t_values([0.5])
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\], got nan"):
        check_t_values([0, float("nan")])
    assert check_size("--height", None) is None and check_size("--height", 64) == 64
    with pytest.raises(ValueError, match=r"got 63 \(e\.g\. 64\)"):
        check_size("--height", 63)
    assert check_seeds("--seeds", [0, 2**64 - 1], minimum=2, distinct=True) == (0, 2**64 - 1)
    with pytest.raises(ValueError, match="0..18446744073709551615"):
        check_seeds("--seeds", [2**64])
    assert check_at_least("--n", None, 2) is None
    assert check_animation_format("none") is None and check_animation_format("mp4") == "mp4"
    with pytest.raises(ValueError, match="gif, mp4, webp, none"):
        check_animation_format("avi")


def test_write_atomic(tmp_path, monkeypatch):
    import os
    import tempfile

    from whichway._files import OutputRescuedError, write_atomic

    target = write_atomic(tmp_path / "a" / "b.txt", lambda p: p.write_text("done"))
    assert target.read_text() == "done" and [p.name for p in target.parent.iterdir()] == ["b.txt"]
    umask = os.umask(0)
    os.umask(umask)
    assert (
        target.stat().st_mode & 0o777 == 0o666 & ~umask
    )  # the usual mode, not a private temp file's

    def broken(p: Path) -> None:
        p.write_text("half")
        raise RuntimeError("bug in the writer")

    with pytest.raises(RuntimeError, match="bug in the writer"):
        write_atomic(tmp_path / "a" / "c.txt", broken)
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["b.txt"]  # no half file, no temp left

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "blocker").write_text("a file where a folder should be")
    with pytest.raises(OutputRescuedError) as info:
        write_atomic(tmp_path / "blocker" / "out.txt", lambda p: p.write_text("precious"))
    err = info.value
    assert (
        err.rescued.read_text() == "precious"
        and err.rescued.parent == tmp_path / "tmp" / "whichway-rescue"
    )
    assert "\n" not in str(err) and str(err.rescued) in str(err) and isinstance(err, OSError)


def test_first_time_is_once_per_cache_dir(tmp_path, monkeypatch):
    from whichway._files import first_time, has_marker

    monkeypatch.setenv("WHICHWAY_CACHE_DIR", str(tmp_path / "c"))
    assert not has_marker("some note")
    assert first_time("some note") is True
    assert first_time("some note") is False and has_marker("some note")
    monkeypatch.setenv("WHICHWAY_CACHE_DIR", str(tmp_path / "other"))
    assert first_time("some note") is True


def test_score_help_says_where_the_lpips_weights_go(capsys):
    """The once-per-machine note points at `whichway score --help`: it must name the file and
    the folder."""
    from whichway.metrics.lpips_path import backbone_weights_file

    with pytest.raises(SystemExit):
        main(["score", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert backbone_weights_file("alex") in text and backbone_weights_file("vgg") in text
    assert "$TORCH_HOME/hub/checkpoints" in text


# --- travel, studio, doctor ---------------------------------------------------------------------


def test_travel_refuses_before_loading(no_loading, capsys, tmp_path, a_file, not_an_image):
    base = [
        "travel",
        "a cat",
        "a dog",
        "a fox",
        "--seconds",
        "2",
        "--model",
        "nobody/none",
        "--out",
        str(tmp_path / "run"),
    ]
    _refused(capsys, [*base, "--height", "63"], "--height must be a positive multiple of 8, got 63")
    _refused(capsys, ["travel", "a", "b", "--out", str(a_file)], "is a file")
    _refused(capsys, [*base, "--fps", "0"], "--fps")
    _refused(capsys, [*base, "--seeds", "1,2"], "--seeds gives 2 values for 3 prompts")
    _refused(capsys, [*base, "--at", "0,2,1"], "keyframe times must increase")
    _refused(capsys, [*base, "--audio", str(tmp_path / "missing.wav")], "missing.wav")
    _refused(capsys, ["travel", "a cat", "--out", str(tmp_path / "run")], "at least 2 keyframes")
    _refused(capsys, [*base, "--offload", "model", "--device", "cpu"], "accelerator")
    assert not (tmp_path / "run").exists()


def test_studio_and_doctor_refuse_before_loading(no_loading, capsys, tmp_path, a_file):
    _refused(capsys, ["studio", "--port", "0", "--out", str(tmp_path / "runs")], "--port")
    _refused(capsys, ["studio", "--out", str(a_file)], "is a file")
    _refused(
        capsys,
        [
            "studio",
            "--model",
            "nobody/none",
            "--offload",
            "model",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "runs"),
        ],
        "accelerator",
    )
    _refused(
        capsys,
        ["doctor", "--model", "nobody/none", "--height", "63", "--width", "64"],
        "--height must be a positive multiple of 8, got 63",
    )
    assert not (tmp_path / "runs").exists()


def test_torch_free_twins_equal_their_sources():
    from whichway.cli import _options
    from whichway.cli.morph import LPIPS_MIN_SIDE
    from whichway.media import ANIMATION_FORMATS
    from whichway.metrics.lpips_path import LPIPS_MIN_SIDE as LPIPS_SIDE

    assert _options.ANIMATION_FORMATS == ANIMATION_FORMATS and LPIPS_MIN_SIDE == LPIPS_SIDE
