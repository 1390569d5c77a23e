"""Memory planning (`whichway doctor`, --batch-size auto with out-of-memory back-off), the fast
offline hub failure, and the run-time estimate, on the tiny SD pipeline on a CPU."""

from __future__ import annotations

import json
import logging
import math
import time

import numpy as np
import pytest
import torch
from PIL import Image

from whichway.cli import main

SIZE = ["--height", "32", "--width", "32"]


def _weights(module: torch.nn.Module) -> tuple[int, int]:
    tensors = {id(t): t for t in [*module.parameters(), *module.buffers()]}.values()
    return sum(t.numel() for t in tensors), sum(t.numel() * t.element_size() for t in tensors)


def test_doctor_prints_the_weights_and_the_batch_table(tiny_pipeline, tiny_adapter, capsys):
    adapter = tiny_adapter("sd")
    assert main(["doctor", "--model", str(tiny_pipeline("sd")), "--device", "cpu", *SIZE]) == 0
    out = capsys.readouterr().out
    assert "torch " + torch.__version__ in out and "device cpu" in out
    rows = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0] in {"unet", "vae", "text_encoder", "total"}:
            rows[parts[0]] = (int(parts[1]), int(parts[2]))
    expected = {
        name: _weights(getattr(adapter.pipe, name)) for name in ("unet", "vae", "text_encoder")
    }
    assert {k: rows[k] for k in expected} == expected
    assert rows["total"] == tuple(sum(v[i] for v in expected.values()) for i in range(2))
    assert "at 32x32, guidance 7.5 (2 denoiser rows per frame)" in out
    table = [line.split() for line in out.splitlines() if line.split()[-1:] in (["yes"], ["no"])]
    assert [row[0] for row in table if row[0].isdigit()] == ["1", "2", "4", "8", "16", "32"]
    assert "largest batch that fits:" in out


def test_doctor_without_a_model_prints_the_environment(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "diffusers" in out and "device cpu" in out and "weights" not in out


def test_plan_is_linear_in_the_batch_and_finds_the_largest_that_fits(tiny_adapter):
    from whichway.models.memory import decoder_elements, denoiser_elements, plan_memory

    adapter = tiny_adapter("sd")
    weights = sum(
        _weights(m)[1] for m in (adapter.pipe.unet, adapter.pipe.vae, adapter.pipe.text_encoder)
    )
    den = 2 * denoiser_elements(adapter, 32, 32) * 4  # two CFG rows, float32
    dec = decoder_elements(adapter.pipe.vae, 32, 32) * 4
    per_frame = max(den, dec)
    cap = math.ceil((weights + 3.5 * per_frame) / 0.9)  # room for 3.5 frames
    plan = plan_memory(adapter, 32, 32, 7.5, capacity_bytes=cap)
    assert (plan.weights_bytes, plan.base_bytes, plan.per_frame_bytes) == (
        weights,
        weights,
        per_frame,
    )
    assert (plan.denoise_frame_bytes, plan.decode_frame_bytes, plan.rows_per_frame) == (den, dec, 2)
    assert plan.max_batch == 3 and plan.advice == ""
    assert [(e.batch, e.bytes, e.fits) for e in plan.estimates[:3]] == [
        (1, weights + per_frame, True),
        (2, weights + 2 * per_frame, True),
        (4, weights + 4 * per_frame, False),
    ]
    no_cfg = plan_memory(adapter, 32, 32, 1.0, capacity_bytes=cap)
    assert no_cfg.rows_per_frame == 1 and no_cfg.denoise_frame_bytes == den // 2
    tight = plan_memory(adapter, 32, 32, 7.5, capacity_bytes=weights)
    assert tight.max_batch == 0 and "does not fit in this machine's memory" in tight.advice


def test_plan_under_offload_counts_only_the_weights_on_the_device(tiny_adapter, monkeypatch):
    import types

    from whichway.models.memory import plan_memory

    adapter = tiny_adapter("sd")
    parts = {m: _weights(getattr(adapter.pipe, m))[1] for m in ("unet", "vae", "text_encoder")}
    plain = plan_memory(adapter, 32, 32, 7.5, capacity_bytes=None)
    layer = 2 * max(
        p.numel() * p.element_size()
        for m in ("unet", "vae", "text_encoder")
        for p in getattr(adapter.pipe, m).parameters()
    )
    for offload, resident in (("model", max(parts.values())), ("sequential", layer)):
        options = types.SimpleNamespace(offload=offload)
        monkeypatch.setattr(
            adapter, "runtime", types.SimpleNamespace(options=options), raising=False
        )
        plan = plan_memory(adapter, 32, 32, 7.5, capacity_bytes=None)
        assert plan.base_bytes == resident < plain.base_bytes == sum(parts.values())
        assert plan.per_frame_bytes == plain.per_frame_bytes
        # a device that holds the resident weights and two frames, but not all the weights
        cap = math.ceil((resident + 2.5 * plan.per_frame_bytes) / 0.9)
        assert plan_memory(adapter, 32, 32, 7.5, capacity_bytes=cap).max_batch == 2


def test_auto_batch_halves_after_out_of_memory_and_frames_match(
    tiny_pipeline, tiny_adapter, tmp_path, capsys, caplog, monkeypatch
):
    from diffusers import UNet2DConditionModel

    from whichway.morph import MorphSettings, run_morph, uniform_times

    reference = tmp_path / "reference"
    settings = MorphSettings(
        "a photo of a cat",
        "a red dog",
        t=uniform_times(5),
        steps=2,
        guidance=4.0,
        height=32,
        width=32,
        batch_size=2,
        format=None,
    )
    run_morph(tiny_adapter("sd"), settings, reference, progress=False)

    seen: list[int] = []
    forward = UNet2DConditionModel.forward

    def limited(self, sample, *args, **kwargs):  # a device that holds at most 2 frames (4 CFG rows)
        seen.append(sample.shape[0])
        if sample.shape[0] > 4:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return forward(self, sample, *args, **kwargs)

    monkeypatch.setattr(UNet2DConditionModel, "forward", limited)
    auto = tmp_path / "auto"
    with caplog.at_level(logging.WARNING, logger="whichway.render"):
        assert (
            main(
                [
                    "morph",
                    "a photo of a cat",
                    "a red dog",
                    "--model",
                    str(tiny_pipeline("sd")),
                    "--device",
                    "cpu",
                    "--frames",
                    "5",
                    "--steps",
                    "2",
                    "--guidance",
                    "4",
                    "--format",
                    "none",
                    "--no-score",
                    *SIZE,
                    "--batch-size",
                    "auto",
                    "--out",
                    str(auto),
                ]
            )
            == 0
        )
    out = capsys.readouterr().out
    assert "expected run time on cpu" in out and "denoiser calls" in out
    assert 10 in seen  # auto chose all 5 frames (two CFG rows each)
    assert any("retrying with 2 frames per batch" in r.message for r in caplog.records)
    last_oom = len(seen) - 1 - seen[::-1].index(10)
    assert max(seen[last_oom + 1 :]) == 4
    info = json.loads((auto / "run.json").read_text())
    assert info["status"] == "done" and info["settings"]["batch_size"] == "auto"
    for k in range(5):
        a = np.asarray(Image.open(auto / "frames" / f"{k:04d}.png"))
        b = np.asarray(Image.open(reference / "frames" / f"{k:04d}.png"))
        assert np.array_equal(a, b)


def test_unreachable_hub_fails_within_seconds_with_the_load_message(tmp_path, capsys, monkeypatch):
    import huggingface_hub.constants
    from diffusers import DiffusionPipeline

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")

    def no_retries(*args, **kwargs):
        raise AssertionError("diffusers must not be asked to fetch a model the hub cannot serve")

    monkeypatch.setattr(DiffusionPipeline, "load_config", no_retries)
    start = time.perf_counter()
    rc = main(
        [
            "morph",
            "a",
            "b",
            "--model",
            "whichway-tests/not-cached-anywhere",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err
    assert rc == 2
    assert "could not load model 'whichway-tests/not-cached-anywhere'" in err
    assert "no connection to http://127.0.0.1:9" in err and "hf download" in err
    assert elapsed < 10  # the probe's own timeout is 3 s; diffusers' retries took ~30 s


def test_run_time_estimate_adds_up_and_hints_at_faster_choices(tiny_adapter, monkeypatch):
    from whichway.models import timing

    monkeypatch.setattr(timing, "SLOW_RUN_S", 0.0)  # every run counts as slow: the hint shows
    est = timing.estimate_run_time(
        tiny_adapter("sd"), frames=5, steps=3, guidance=4.0, height=32, width=32, batch_size=2
    )
    assert est.denoiser_calls == 3 * 3 and est.batch_size == 2
    assert est.seconds == pytest.approx(9 * est.call_seconds + 5 * est.decode_seconds, rel=1e-12)
    assert est.message.startswith("expected run time on cpu") and "9 denoiser calls" in est.message
    assert "--model stabilityai/sd-turbo --steps 1 --guidance 0" in est.hint
    assert "fewer --steps (now 3)" in est.hint and "--height 16 --width 16" in est.hint
    from whichway.attention.methods import LORA_STEP_ROWS

    prep = timing.Preparation(lora_fits=2, lora_steps=50, inversions=1, inversion_rows=3)
    est = timing.estimate_run_time(
        tiny_adapter("sd"), 5, 3, 4.0, 32, 32, batch_size=2, preparation=prep
    )
    assert est.seconds == pytest.approx(
        9 * est.call_seconds
        + 5 * est.decode_seconds
        + (2 * 50 * LORA_STEP_ROWS + 3) * est.row_seconds,
        rel=1e-12,
    )
    assert "before them 2 LoRA fits x 50 steps, 1 inversion" in est.message
    assert "fewer --lora-steps (now 50)" in est.hint


def test_batch_size_option_accepts_auto_and_refuses_zero(capsys, tmp_path):
    assert main(["morph", "a", "b", "--batch-size", "0", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--batch-size must be a positive integer or 'auto', got 0" in err[0]
    with pytest.raises(SystemExit):
        main(["morph", "a", "b", "--batch-size", "many"])
    assert "positive integer or 'auto'" in capsys.readouterr().err


def test_out_of_memory_is_one_line_with_what_to_try(tiny_pipeline, monkeypatch, capsys):
    import whichway.cli._options

    def too_big(args):  # the weights alone do not fit on the device
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.20 GiB\nmore detail")

    monkeypatch.setattr(whichway.cli._options, "load_model", too_big)
    model = str(tiny_pipeline("sd"))
    capsys.readouterr()  # building the tiny model prints progress
    assert main(["doctor", "--model", model]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(
        "whichway doctor: error: out of memory (CUDA out of memory. Tried"
    )
    assert f"whichway doctor --model {model}" in err and "--offload model" in err
