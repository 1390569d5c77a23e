"""Bounded work: every request is sized before anything is allocated or loaded.

The issue's table of over-ambitious inputs, each run as a real ``whichway`` process on the tiny
model: one line on stderr, exit status 2, and the refusing process's peak memory (its
``ru_maxrss``, read by a wrapper process that runs only it) under 1 GB and its wall time under
2 s. The figures of :mod:`whichway.budget` are checked exactly against their formulas and against
the memory model ``doctor`` uses.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from whichway import budget

SRC = str(Path(__file__).resolve().parents[1] / "src")

# A wrapper that runs one whichway process and reports its peak RSS (children only: itself is
# not counted), its wall time, exit status and stderr, as JSON.
_WRAPPER = r"""
import json, resource, subprocess, sys, time
start = time.perf_counter()
done = subprocess.run([sys.executable, "-m", "whichway", *sys.argv[1:]], capture_output=True, text=True)
wall = time.perf_counter() - start
peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"rc": done.returncode, "stderr": done.stderr, "stdout": done.stdout,
                  "wall": wall, "peak_bytes": peak_kb * 1024}))
"""


def run_measured(args: list[str], cwd: Path) -> dict:
    """Run ``whichway *args`` in a fresh process; its exit status, output, wall time and peak RSS."""
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run(
        [sys.executable, "-c", _WRAPPER, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        check=True,
    )
    return json.loads(out.stdout)


TABLE = [
    ("morph", ["morph", "a cat", "a dog", "--frames", "1000000000"]),
    ("travel", ["travel", "a cat", "a dog", "--seconds", "1000000000"]),
    ("travel", ["travel", "a cat", "a dog", "--frames-per-segment", "1000000000"]),
    ("grid", ["grid", "seeds", "a cat", "--seeds", "0,1,2", "--size", "100000"]),
    ("morph", ["morph", "a cat", "a dog", "--height", "32768", "--width", "32768"]),
    ("morph", ["morph", "a cat", "a dog", "--steps", "1000000000"]),
]


@pytest.mark.parametrize(("command", "args"), TABLE, ids=[" ".join(a[-2:]) for _, a in TABLE])
def test_oversized_requests_are_refused_in_one_line_fast_and_small(
    tiny_pipeline, tmp_path, command, args
):
    result = run_measured([*args, "--model", str(tiny_pipeline("sd"))], tmp_path)
    assert result["rc"] == 2, result
    lines = result["stderr"].strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"whichway {command}: error: "), lines
    # the figure and the limit: "needs 4.2 TB ... 76.4 GB free" / "more than ... 1000"
    assert re.search(
        r"needs [\d.]+ [kMGTPE]?B .*; [\d.]+ [kMGTPE]?B (free|available)", lines[0]
    ) or ("1000 training timesteps" in lines[0]), lines[0]
    # the refusal names the argument at fault (not --frames for a frame too large)
    culprit = f"--height {args[-3]} --width" if "--width" in args else f"{args[-2]} "
    assert lines[0].split("error: ")[1].startswith(culprit), lines[0]
    assert result["peak_bytes"] < 1e9, result["peak_bytes"]
    assert result["wall"] < 2.0, result["wall"]
    assert not list(tmp_path.rglob("*.png")) and not list(tmp_path.rglob("run.json"))


def test_disk_and_memory_figures_follow_their_formulas(tmp_path):
    facts = budget.ModelFacts(default_size=(64, 64), vae_channels=(32, 64), train_timesteps=1000)
    need = budget.build_need(
        "--frames 10",
        frames=10,
        height=64,
        width=48,
        steps=3,
        guidance=7.5,
        facts=facts,
        on_cpu=True,
        batch=4,
        held_bytes_per_frame=7,
    )
    assert need.disk_bytes == 10 * (64 * 48 * budget.PNG_BYTES_PER_PIXEL + budget.PNG_HEADER_BYTES)
    decode = 4 * budget.vae_decode_elements((32, 64), 64, 48)
    assert need.memory_bytes == 10 * (budget.FRAME_BOOKKEEPING_BYTES + 7) + 4 * (
        3 * 64 * 48 * 4 + decode
    )
    assert need.denoiser_calls == 10 * 3 * 2
    # the limits: one byte short refuses with both figures, exactly enough passes
    budget.check_need(need, tmp_path, free_bytes=need.disk_bytes, available_bytes=need.memory_bytes)
    with pytest.raises(ValueError, match=r"needs 31\.7 kB for the frames on disk; 31\.7 kB free"):
        budget.check_need(need, tmp_path, free_bytes=need.disk_bytes - 1, available_bytes=None)
    with pytest.raises(ValueError, match=r"of memory for 10 frames of 48x64; .* available"):
        budget.check_need(need, None, free_bytes=None, available_bytes=need.memory_bytes - 1)
    # what a run keeps per frame: an animation encoded in memory holds the RGB frames; a travel's
    # MP4 is streamed from the PNGs by ffmpeg and holds none
    assert budget.morph_held_bytes(64, 48) == 3 * 64 * 48
    assert budget.morph_held_bytes(64, 48, animated=False) == 0
    for fmt, held in (("gif", 3 * 64 * 48), ("webp", 3 * 64 * 48), ("mp4", 0), (None, 0)):
        assert budget.travel_held_bytes(64, 48, fmt) == held, fmt


def test_model_facts_match_the_loaded_model(tiny_pipeline, tiny_adapter):
    """The sizes read from the config files are the ones the loaded pipeline uses, and the VAE
    term is the one of doctor's memory model."""
    from whichway.models.memory import decoder_elements

    facts = budget.model_facts(tiny_pipeline("sd"))
    adapter = tiny_adapter("sd")
    assert facts.default_size == tuple(adapter.default_size)
    assert facts.train_timesteps == adapter.pipe.scheduler.config.num_train_timesteps
    assert facts.vae_channels == tuple(adapter.pipe.vae.config.block_out_channels)
    for h, w in ((64, 64), (40, 72), (512, 768)):
        assert budget.vae_decode_elements(facts.vae_channels, h, w) == decoder_elements(
            adapter.pipe.vae, h, w
        )
    assert budget.model_facts("stabilityai/sd-turbo") == budget.ModelFacts()


def test_large_but_possible_work_goes_ahead(tiny_pipeline, tmp_path):
    """A long morph that fits is not refused: check_args hands back its run directory."""
    import argparse

    from whichway.cli import build_parser
    from whichway.cli.morph import check_args

    parser = build_parser()
    args = parser.parse_args(
        ["morph", "a", "b", "--model", str(tiny_pipeline("sd")), "--frames", "4000"]
        + ["--out", str(tmp_path / "run")]
    )
    assert isinstance(args, argparse.Namespace)
    assert check_args(args) == tmp_path / "run"
    assert not (tmp_path / "run").exists()  # nothing written by a check


def test_format_size_units():
    assert budget.format_size(999) == "999 B"
    assert budget.format_size(1536) == "1.5 kB"
    assert budget.format_size(3.7e12) == "3.7 TB"


# --- cancel in every phase of a morph ----------------------------------------------------------


def _image_morph(tmp_path):
    import torch

    from whichway.media import to_pil
    from whichway.morph import MorphSettings

    g = torch.Generator().manual_seed(0)
    for name in ("a.png", "b.png"):
        to_pil(torch.rand(3, 16, 16, generator=g)).save(tmp_path / name)
    return MorphSettings(
        "a cat",
        "a dog",
        t=(0.0, 0.5, 1.0),
        steps=3,
        guidance=1.0,
        height=16,
        width=16,
        image_a=str(tmp_path / "a.png"),
        image_b=str(tmp_path / "b.png"),
        batch_size=1,
        format="gif",
    )


def _stop_after(polls: int):
    """A should_stop that says stop from its ``polls``-th call on, and counts its calls."""
    calls = []

    def should_stop() -> bool:
        calls.append(1)
        return len(calls) >= polls

    return should_stop, calls


@pytest.mark.parametrize(
    ("polls", "phase"),
    [(1, "encoding"), (2, "inversion"), (5, "inversion"), (9, "rendering")],
)
def test_a_cancel_stops_a_morph_in_its_phase(tiny_pipeline, tmp_path, polls, phase):
    """Polls: 1 = before encoding, 2..7 = after each of the 2 x 3 inversion steps, then one per
    batch of one frame. The run stops at that poll, records "cancelled" and keeps only finished
    files: no inverted latent of an unfinished inversion, no frame of an unfinished batch."""
    from whichway.models import load_adapter
    from whichway.morph import run_morph
    from whichway.render import RenderCancelled

    adapter = load_adapter(str(tiny_pipeline("sd")), device="cpu")
    should_stop, calls = _stop_after(polls)
    run = tmp_path / "run"
    with pytest.raises(RenderCancelled):
        run_morph(adapter, _image_morph(tmp_path), run, progress=False, should_stop=should_stop)
    assert len(calls) == polls  # stopped at the first poll that said so
    assert json.loads((run / "run.json").read_text())["status"] == "cancelled"
    latents = list((run / "latents").glob("*.pt")) if (run / "latents").exists() else []
    frames = sorted((run / "frames").glob("*.png"))
    if phase == "encoding":
        assert not latents and not frames
    elif phase == "inversion":
        assert len(latents) == (polls - 2) // 3 and not frames  # only finished inversions
    else:
        assert len(latents) == 2 and len(frames) == polls - 8
    assert not list(run.rglob("*.tmp*"))


def test_a_cancel_after_the_last_frame_skips_the_strip_and_resumes(tiny_pipeline, tmp_path):
    """The writing phase: a cancel once every frame is on disk stops before the strip and the
    animation; the same settings then finish without rendering again."""
    from whichway.models import load_adapter
    from whichway.morph import run_morph
    from whichway.render import RenderCancelled

    adapter = load_adapter(str(tiny_pipeline("sd")), device="cpu")
    settings = _image_morph(tmp_path)
    written = []
    with pytest.raises(RenderCancelled):
        run_morph(
            adapter,
            settings,
            tmp_path / "run",
            progress=False,
            on_frame=lambda k, p: written.append(k),
            should_stop=lambda: len(written) == 3,
        )
    run = tmp_path / "run"
    assert len(list((run / "frames").glob("*.png"))) == 3
    assert not (run / "strip.png").exists() and not (run / "morph.gif").exists()
    assert json.loads((run / "run.json").read_text())["status"] == "cancelled"
    result = run_morph(adapter, settings, run, progress=False)
    assert result.rendered == 0 and (run / "strip.png").is_file() and (run / "morph.gif").is_file()


def test_a_study_that_cannot_fit_the_disk_is_refused_before_loading(tiny_pipeline, tmp_path):
    from whichway.cli import main

    assert main(["study", "prompts", "init", str(tmp_path / "p.toml")]) == 0
    (tmp_path / "pairs.csv").write_text("prompt_a,prompt_b,similarity\na cat,a dog,3\n")
    sets = [
        f'model.id="{tiny_pipeline("sd")}"',
        'pairs.source="file"',
        'pairs.file="pairs.csv"',
        "pairs.n_per_group=100000000",
        "study.save_frames=true",
    ]
    args = ["study", "prompts", "run", "p.toml"] + [x for s in sets for x in ("--set", s)]
    result = run_measured(args, tmp_path)
    assert result["rc"] == 2
    line = result["stderr"].strip()
    assert re.fullmatch(
        r"whichway study: error: pairs\.n_per_group 100000000 x 10 groups x 3 couplings "
        r"\(11 frames each\) needs [\d.]+ TB for the frames on disk; [\d.]+ [kMGT]?B free in .*",
        line,
    ), line
    assert result["peak_bytes"] < 1e9 and result["wall"] < 2.0
    assert not list(tmp_path.glob("study-*"))


# --- a 100,000-frame travel plans and starts in the memory of a short one ----------------------

_TRAVEL = r"""
import json, sys
from whichway.models import load_adapter
from whichway.render import RenderCancelled
from whichway.travel import Keyframe, TravelSettings, run_travel

model, out, per_segment = sys.argv[1], sys.argv[2], int(sys.argv[3])
adapter = load_adapter(model, device="cpu")
settings = TravelSettings(
    (Keyframe("a cat", seed=1), Keyframe("a dog", seed=2)),
    frames_per_segment=per_segment, steps=1, guidance=2.0, height=16, width=16, batch_size=4,
    format=None,
)
written = []
try:
    run_travel(adapter, settings, out, progress=False, on_frame=lambda i, p: written.append(i),
               should_stop=lambda: len(written) >= 8)  # stop after the first two batches
    status = "done"
except RenderCancelled:
    status = "cancelled"
with open("/proc/self/status") as f:  # VmHWM: this process's own peak (see _travel_peak)
    peak = int(next(line for line in f if line.startswith("VmHWM")).split()[1]) * 1024
print(json.dumps({"peak": peak, "written": len(written), "status": status}))
"""


def _travel_peak(model: Path, out: Path, per_segment: int) -> dict:
    """Peak memory of one travel in a fresh process, read as its VmHWM: Linux starts a child's
    ``ru_maxrss`` at the RSS of the process that spawned it, so under a large pytest process both
    runs would read the parent's size and the 1.5x comparison could not fail."""
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(
        [sys.executable, "-c", _TRAVEL, str(model), str(out), str(per_segment)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads Linux's VmHWM")
def test_a_100000_frame_travel_starts_in_the_memory_of_a_100_frame_one(tiny_pipeline, tmp_path):
    """8x8 latents (16x16 pixels on the tiny model), stopped after two batches of four frames:
    the peak RSS of the 100,000-frame run is within 1.5x that of the 100-frame run, since the
    conditioning and latent paths are built per batch and the plan is arithmetic."""
    model = tiny_pipeline("sd")
    short = _travel_peak(model, tmp_path / "short", 99)  # 100 frames
    long = _travel_peak(model, tmp_path / "long", 99_999)  # 100,000 frames
    for run in (short, long):
        assert run["status"] == "cancelled" and run["written"] == 8
    info = json.loads((tmp_path / "long" / "run.json").read_text())
    assert info["status"] == "cancelled" and info["plan"]["n_frames"] == 100_000
    assert len(list((tmp_path / "long" / "frames").glob("*.png"))) == 8
    assert long["peak"] < 1.5 * short["peak"], (long["peak"], short["peak"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["couple", "--steps", "1000000000"], r"--steps 1000000000 needs [\d.]+ TB of memory"),
        (["couple", "--random", "1000000", "768"], r"needs [\d.]+ TB of memory for --random N D"),
    ],
)
def test_couple_refuses_what_cannot_fit_the_memory(tmp_path, args, message):
    result = run_measured(args, tmp_path)
    assert result["rc"] == 2 and re.search(message, result["stderr"]), result
    assert result["peak_bytes"] < 1e9 and result["wall"] < 2.0


def test_invert_refuses_too_many_steps_and_too_large_an_image(tiny_pipeline, tmp_path):
    from PIL import Image

    Image.new("RGB", (32, 32)).save(tmp_path / "i.png")
    model = ["--model", str(tiny_pipeline("sd")), "--prompt", "a cat"]
    for extra, message in (
        (["--steps", "100000"], "more than the scheduler's 1000 training timesteps"),
        (
            ["--height", "65536", "--width", "65536"],
            r"^whichway invert: error: --height 65536 --width 65536 needs [\d.]+ TB of memory for one frame",
        ),
    ):
        result = run_measured(["invert", "i.png", *model, *extra], tmp_path)
        assert result["rc"] == 2 and re.search(message, result["stderr"]), result
        assert result["peak_bytes"] < 1e9 and result["wall"] < 2.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["i.png"]


def test_a_long_morphs_strip_shows_32_evenly_picked_frames():
    from whichway.morph import STRIP_MAX_FRAMES, strip_frames

    assert strip_frames(11) == list(range(11))
    assert strip_frames(STRIP_MAX_FRAMES) == list(range(STRIP_MAX_FRAMES))
    for n in (33, 100, 100_000):
        shown = strip_frames(n)
        gaps = {b - a for a, b in itertools.pairwise(shown)}
        assert len(shown) == STRIP_MAX_FRAMES and shown[0] == 0 and shown[-1] == n - 1
        assert max(gaps) - min(gaps) <= 1  # evenly spaced, up to rounding
