"""Bounded work: every request is sized before anything is allocated or loaded.

The issue's table of over-ambitious inputs, each run as a real ``whichway`` process on the tiny
model: one line on stderr, exit status 2, and the refusing process's peak memory (its
``ru_maxrss``, read by a wrapper process that runs only it) under 1 GB and its wall time under
2 s. The figures of :mod:`whichway.budget` are checked exactly against their formulas and against
the memory model ``doctor`` uses.
"""

from __future__ import annotations

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
