"""Scoring run directories and frame folders; the `whichway score` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from whichway.cli import main
from whichway.media import save_image
from whichway.metrics import LPIPSPath, score_run
from whichway.metrics.score import load_frames


def _write_frames(
    folder: Path, n: int, size: tuple[int, int] = (48, 64), seed: int = 0
) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    a, b = torch.rand(2, 3, *size, generator=g)
    paths = []
    for k in range(n):
        w = k / max(n - 1, 1)
        paths.append(save_image((1 - w) * a + w * b, folder / f"{k:04d}.png"))
    return paths


def _write_run(run: Path, t: list[float]) -> dict:
    _write_frames(run / "frames", len(t))
    record = {
        "whichway": "0.1.0",
        "command": "morph",
        "settings": {"prompt_a": "a", "prompt_b": "b"},
        "t": t,
        "frames": [f"frames/{k:04d}.png" for k in range(len(t))],
        "couplings": [{"group": 0, "method": "ot", "cost": 12.5, "w2_path_length": 0.4}],
    }
    (run / "run.json").write_text(json.dumps(record))
    return record


def test_plain_frame_folder_uses_uniform_t_and_writes_nothing(tmp_path):
    files = _write_frames(tmp_path, 5)
    metrics = score_run(tmp_path, pretrained_backbone=False)
    expected = LPIPSPath("alex", pretrained_backbone=False).path_metrics(load_frames(files))
    assert metrics["ppl"] == pytest.approx(expected.ppl, abs=1e-9)
    assert metrics["t"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert metrics["lpips"] == {
        "net": "alex",
        "version": "0.1",
        "pretrained_backbone": False,
        "frame_size": [48, 64],
    }
    assert not (tmp_path / "run.json").exists()


def test_run_directory_uses_its_t_and_updates_run_json_atomically(tmp_path):
    t = [0.0, 0.1, 0.5, 1.0]
    record = _write_run(tmp_path, t)
    metrics = score_run(tmp_path, pretrained_backbone=False)
    d = metrics["steps"]
    assert metrics["ppl_normalized"] == pytest.approx(
        d[0] / 0.1**2 + d[1] / 0.4**2 + d[2] / 0.5**2, rel=1e-9
    )
    assert metrics["couplings"] == record["couplings"]
    saved = json.loads((tmp_path / "run.json").read_text())
    assert {k: v for k, v in saved.items() if k != "metrics"} == record  # everything else kept
    assert saved["metrics"]["ppl"] == metrics["ppl"] and saved["metrics"]["t"] == t
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "frames",
        "run.json",
    ]  # no temporary files left
    # scoring again overwrites the metrics instead of nesting them
    score_run(tmp_path, net="alex", pretrained_backbone=False)
    assert json.loads((tmp_path / "run.json").read_text())["metrics"]["ppl"] == pytest.approx(
        metrics["ppl"]
    )


def test_frames_subfolder_without_run_json(tmp_path):
    _write_frames(tmp_path / "frames", 3)
    assert score_run(tmp_path, pretrained_backbone=False, write=False)["n_frames"] == 3


def test_bad_directories_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        score_run(tmp_path / "missing", pretrained_backbone=False)
    _write_frames(tmp_path / "one", 1)
    with pytest.raises(ValueError, match="at least 2 frames, found 1"):
        score_run(tmp_path / "one", pretrained_backbone=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="at least 2 frames, found 0"):
        score_run(tmp_path / "empty", pretrained_backbone=False)
    _write_frames(tmp_path / "mixed", 2)
    _write_frames(tmp_path / "mixed", 1, size=(64, 64))  # overwrites 0000.png with another size
    with pytest.raises(ValueError, match="differ in size"):
        score_run(tmp_path / "mixed", pretrained_backbone=False)
    run = tmp_path / "run"
    _write_run(run, [0.0, 0.5, 1.0])
    (run / "frames" / "0001.png").unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        score_run(run, pretrained_backbone=False)
    bad = tmp_path / "bad"
    record = _write_run(bad, [0.0, 0.5, 1.0])
    (bad / "run.json").write_text(json.dumps({**record, "t": [0.0, 1.0]}))
    with pytest.raises(ValueError, match="3 frames but 2 t values"):
        score_run(bad, pretrained_backbone=False)
    with pytest.raises(ValueError, match="valid choices are: alex, vgg"):
        score_run(run, net="squeeze")


def test_cli_table_and_json(tmp_path, capsys):
    _write_run(tmp_path, [0.0, 0.5, 1.0])
    assert main(["score", str(tmp_path), "--random-backbone", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert (
        "PPL  sum d_k" in out and "smoothness" in out and "coupling cost" in out and "RANDOM" in out
    )
    assert (
        main(
            ["score", str(tmp_path), "--random-backbone", "--device", "cpu", "--json", "--no-write"]
        )
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert data["n_frames"] == 3 and data["lpips"]["net"] == "alex"


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
    assert main(["score", str(tmp_path / "nope"), "--random-backbone"]) == 2
    assert "does not exist" in capsys.readouterr().err
