"""Damaged results files and cached latents: named, set aside, recomputed; ``verify`` and reports.

Each resume must end with exactly the table of an uninterrupted run (tiny random SD pipeline).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from test_studies_latents import _cfg as _latent_cfg
from test_studies_latents import _images
from test_studies_runs import _config

from whichway.cli import main
from whichway.studies.config import load_config
from whichway.studies.executors import DamagedTensorError, LocalExecutor, load_tensor, save_tensor
from whichway.studies.latent_study import DETERMINISTIC_COLUMNS as LATENT_COLUMNS
from whichway.studies.latent_study import run_latent_study
from whichway.studies.prompt_study import DETERMINISTIC_COLUMNS, run_prompt_study
from whichway.studies.store import ResultStore
from whichway.studies.verify import verify_run

pytestmark = pytest.mark.filterwarnings(
    "ignore::UserWarning", "ignore::FutureWarning", "ignore::DeprecationWarning"
)
STORE_LOG = "whichway.studies.store"


class _Stop(Exception):
    """Stands for a run killed part-way."""


class StopAfter:
    """Runs units on ``inner`` and stops the run after ``n`` units, or at the first unit ``stop_at``
    accepts (``inner`` keeps its loaded worker for the next runs)."""

    def __init__(self, inner: LocalExecutor, n: int = 10**9, stop_at=None) -> None:
        self.inner, self.n, self.stop_at = inner, n, stop_at

    def map(self, spec, units):
        for k, unit in enumerate(units):
            if k >= self.n or (self.stop_at and self.stop_at(unit)):
                raise _Stop
            yield from self.inner.map(spec, [unit])

    def close(self) -> None:
        pass


def _table(run_dir: Path, columns=DETERMINISTIC_COLUMNS) -> pd.DataFrame:
    df = ResultStore(run_dir, lock=False).read()
    return (
        df[list(columns)]
        .sort_values(
            list(columns[:2]) if columns is DETERMINISTIC_COLUMNS else ["unit_id", "method"]
        )
        .reset_index(drop=True)
    )


def _results(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "results").glob("*.parquet"))


def _damaged(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "results" / "damaged").glob("*"))


@pytest.fixture(scope="module")
def executor():
    """One local executor for the module's runs: the model is loaded once."""
    ex = LocalExecutor()
    yield ex
    ex.close()


@pytest.fixture(scope="module")
def prompt_runs(tiny_pipeline, tmp_path_factory, executor):
    """An uninterrupted run (4 pairs: similarity <= 2.5) and a run stopped after 2 pairs (2 shards)."""
    tmp = tmp_path_factory.mktemp("damaged")
    cfg = load_config(
        "prompts", _config(tiny_pipeline("sd"), tmp, **{"pairs.max_similarity": "2.5"})
    )
    full = tmp / "full"
    run_prompt_study(cfg, full, executor=executor, progress=False)
    partial = tmp / "partial"
    with pytest.raises(_Stop):
        run_prompt_study(cfg, partial, executor=StopAfter(executor, 2), progress=False)
    assert len(_results(partial)) == 2 and all(
        p.name.startswith("shard-") for p in _results(partial)
    )
    return cfg, full, partial, _table(full), executor


def _resume(runs, src: Path, dst: Path, damage, caplog) -> tuple[object, list[str]]:
    """Copy a run, damage it (damage(run_dir) -> name of the damaged file), resume; the warnings."""
    cfg, executor = runs[0], runs[-1]
    shutil.copytree(src, dst)
    name = damage(dst)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=STORE_LOG):
        res = run_prompt_study(cfg, dst, executor=executor, progress=False)
    lines = [r.getMessage() for r in caplog.records if r.name == STORE_LOG]
    assert _damaged(dst) == [name]  # set aside, not deleted
    assert len(lines) == 1 and name in lines[0] and "\n" not in lines[0], lines
    return res, lines


def _truncate(path: Path) -> str:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path.name


def test_uninterrupted_run_records_checksums(prompt_runs):
    _, full, _, ref, _ = prompt_runs
    assert len(ref) == 12 and not ref.duplicated(["unit_id", "coupling"]).any()
    (compact,) = _results(full)
    assert compact.name.startswith("compact-") and "-4u-" in compact.name
    manifest = json.loads((full / "manifest.json").read_text())
    assert manifest["results_files"] == {
        compact.name: {
            "sha256": hashlib.sha256(compact.read_bytes()).hexdigest(),
            "rows": 12,
            "units": 4,
        }
    }
    assert manifest["units"] == 4 and manifest["status"] == "complete"
    rep = verify_run(full)
    assert (
        rep.complete
        and rep.units_recorded == 4
        and rep.files == (compact.name,)
        and not rep.damaged
    )


def test_truncated_shard_is_set_aside_and_recomputed(prompt_runs, tmp_path, caplog):
    _, _, partial, ref, _ = prompt_runs

    def damage(d: Path) -> str:
        return _truncate(_results(d)[0])

    res, lines = _resume(prompt_runs, partial, tmp_path / "run", damage, caplog)
    assert (
        "not readable as Parquet" in lines[0]
        and "the 1 unit(s) it held will be computed again" in lines[0]
    )
    assert (res.ran, res.skipped) == (3, 1)
    pd.testing.assert_frame_equal(_table(tmp_path / "run"), ref, check_exact=True)


def test_random_bytes_shard_verify_then_resume(prompt_runs, tmp_path, capsys, caplog):
    _, _, partial, ref, _ = prompt_runs
    run = tmp_path / "run"

    def damage(d: Path) -> str:
        p = _results(d)[1]
        p.write_bytes(
            torch.randint(
                0,
                256,
                (p.stat().st_size,),
                generator=torch.Generator().manual_seed(0),
                dtype=torch.uint8,
            )
            .numpy()
            .tobytes()
        )
        # verify (read-only) names it and leaves it in place
        assert main(["study", "prompts", "verify", str(d)]) == 1
        out = capsys.readouterr().out
        assert "INCOMPLETE" in out and f"damaged: results/{p.name}: checksum mismatch" in out
        assert "units: 4 expected, 1 recorded, 3 missing" in out and "1 damaged" in out
        assert p.is_file()
        return p.name

    res, lines = _resume(prompt_runs, partial, run, damage, caplog)
    assert "checksum mismatch" in lines[0]
    assert (res.ran, res.skipped) == (3, 1)
    pd.testing.assert_frame_equal(_table(run), ref, check_exact=True)
    assert main(["study", "prompts", "verify", str(run)]) == 0
    out = capsys.readouterr().out
    assert (
        "complete" in out
        and "units: 4 expected, 4 recorded, 0 missing" in out
        and "set aside earlier (1" in out
    )


def test_truncated_compact_file_is_recomputed(prompt_runs, tmp_path, capsys, caplog):
    _, full, _, ref, _ = prompt_runs
    run = tmp_path / "run"
    shutil.copytree(full, run)
    name = _truncate(_results(run)[0])
    # a report with nothing readable refuses, pointing to verify
    assert main(["study", "prompts", "report", str(run)]) == 2
    err = capsys.readouterr().err
    assert "no readable results" in err and name in err and "whichway study prompts verify" in err
    shutil.rmtree(run)
    res, lines = _resume(prompt_runs, full, run, lambda d: _truncate(_results(d)[0]), caplog)
    assert "the 4 unit(s) it held will be computed again" in lines[0]
    assert (res.ran, res.skipped) == (4, 0)
    pd.testing.assert_frame_equal(_table(run), ref, check_exact=True)
    assert verify_run(run).complete


def test_parquet_of_another_schema_is_set_aside(prompt_runs, tmp_path, capsys, caplog):
    _, full, _, ref, _ = prompt_runs
    run = tmp_path / "run"
    unit = ref.unit_id[0]  # it even claims a real unit: read as results it would record it twice

    def damage(d: Path) -> str:
        pq.write_table(
            pa.table({"unit_id": [unit], "coupling": ["ot"], "score": [1]}),
            d / "results" / "x.parquet",
        )
        rep = verify_run(d)
        assert not rep.complete and [x.name for x in rep.damaged] == ["x.parquet"]
        assert rep.damaged[0].reason.startswith("schema mismatch") and rep.units_recorded == 4
        # the report covers what is readable and says what it left out
        assert main(["study", "prompts", "report", str(d)]) == 0
        text = (d / "report" / "report.md").read_text()
        assert "Partial report" in text and "results/x.parquet" in text
        capsys.readouterr()
        return "x.parquet"

    res, lines = _resume(prompt_runs, full, run, damage, caplog)
    assert "schema mismatch" in lines[0] and "none is lost" in lines[0]
    assert (res.ran, res.skipped) == (0, 4)
    pd.testing.assert_frame_equal(_table(run), ref, check_exact=True)


def test_verify_trusts_checksums_not_only_the_reader(prompt_runs, tmp_path, capsys):
    _, full, _, _, _ = prompt_runs
    run = tmp_path / "run"
    shutil.copytree(full, run)
    (path,) = _results(run)
    t = pq.read_table(path)
    ppl = t.column("ppl").to_pylist()
    ppl[0] += 1.0
    pq.write_table(t.set_column(t.schema.get_field_index("ppl"), "ppl", pa.array(ppl)), path)
    assert len(pq.read_table(path)) == 12  # perfectly readable
    assert main(["study", "prompts", "verify", str(run)]) == 1
    assert (
        f"damaged: results/{path.name}: checksum mismatch (manifest.json records"
        in capsys.readouterr().out
    )
    path.unlink()
    rep = verify_run(run)
    assert rep.missing_files == (path.name,) and rep.units_missing == 4 and not rep.complete
    assert main(["study", "latents", "verify", str(run)]) == 2  # another study's directory
    assert "holds a 'prompts' study" in capsys.readouterr().err


def test_compaction_is_durable_and_recorded_before_shards_go(tmp_path, monkeypatch):
    with ResultStore(tmp_path) as st:
        st.write_manifest({"study": "x"})
        for i in range(3):
            st.write({f"u{i}": [{"v": float(i)}]})
        shards = [p.name for p in _results(tmp_path)]
        seen = []
        real = Path.unlink

        def unlink(self, *a, **k):
            if (
                self.name in shards
            ):  # at each shard's removal the compacted file is in place and recorded
                (c,) = [p for p in _results(tmp_path) if p.name.startswith("compact-")]
                rec = json.loads((tmp_path / "manifest.json").read_text())["results_files"]
                seen.append(
                    rec
                    == {
                        c.name: {
                            "sha256": hashlib.sha256(c.read_bytes()).hexdigest(),
                            "rows": 3,
                            "units": 3,
                        }
                    }
                )
            return real(self, *a, **k)

        monkeypatch.setattr(Path, "unlink", unlink)
        st.compact()
    assert seen == [True, True, True]
    assert ResultStore(tmp_path, lock=False).completed() == {"u0", "u1", "u2"}
    assert not list((tmp_path / "results").glob(".*"))


def test_damaged_file_name_collision_gets_a_suffix(tmp_path, caplog):
    with ResultStore(tmp_path) as st:
        st.write({"a": [{"v": 1.0}]})
    (shard,) = _results(tmp_path)
    (tmp_path / "results" / "damaged").mkdir()
    (tmp_path / "results" / "damaged" / shard.name).write_bytes(b"earlier")
    _truncate(shard)
    with ResultStore(tmp_path) as st:
        assert st.completed() == set()
        st.write({"a": [{"v": 1.0}]})
    stem = shard.name[: -len(".parquet")]
    assert _damaged(tmp_path) == sorted([shard.name, f"{stem}.1.parquet"])
    assert (tmp_path / "results" / "damaged" / shard.name).read_bytes() == b"earlier"


# --- latent study: the inversion cache ---------------------------------------------------------
def test_cached_tensor_checks():
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "t.safetensors"
        x = torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(0))
        save_tensor(p, x)
        assert torch.equal(load_tensor(p), x)
        data = p.read_bytes()
        flipped = bytearray(data)
        flipped[-1] ^= 1  # still parses: only the checksum can tell
        for bad, why in (
            (data[: len(data) // 2], "checksum mismatch"),
            (bytes(flipped), "checksum mismatch"),
            (os.urandom(len(data)), "not a safetensors file"),
        ):
            p.write_bytes(bad)
            with pytest.raises(DamagedTensorError, match=why):
                load_tensor(p)


def test_damaged_cached_latents_are_set_aside_and_recomputed(
    tiny_pipeline, tmp_path, capsys, caplog
):
    root = _images(tmp_path / "imgs", {"goldfish": 3})
    cfg = _latent_cfg(tiny_pipeline("sd"), root)
    full, part = tmp_path / "full", tmp_path / "part"
    ex = LocalExecutor()
    run_latent_study(cfg, full, executor=ex)
    # stopped after the inversions: every latent cached, no path or centroid yet
    with pytest.raises(_Stop):
        run_latent_study(
            cfg, part, executor=StopAfter(ex, stop_at=lambda u: u.payload["kind"] != "inversion")
        )
    ref = _table(full, LATENT_COLUMNS)
    (pair,) = (
        ref[ref.unit_id.str.startswith("interp:")].drop_duplicates("unit_id").members
    )  # images a path needs
    cut, noise = (
        part / "latents" / "goldfish" / f"{Path(m).stem}.safetensors" for m in pair.split("|")
    )
    _truncate(cut)
    noise.write_bytes(os.urandom(noise.stat().st_size))
    assert main(["study", "latents", "verify", str(part)]) == 1
    out = capsys.readouterr().out
    assert "cached latents: 2 damaged" in out and str(cut.relative_to(part)) in out
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="whichway.studies.latent_study"):
        res = run_latent_study(cfg, part, executor=ex)
    ex.close()
    lines = [r.getMessage() for r in caplog.records if "damaged cached latent" in r.getMessage()]
    assert len(lines) == 2 and "computed again" in lines[0]
    assert (
        res.ran == 2
    )  # the path and the centroid; the 2 latents were recomputed, not recorded again
    for p in (cut, noise):
        assert (p.parent / "damaged" / p.name).is_file()
        assert torch.equal(load_tensor(p), load_tensor(full / p.relative_to(part)))
    pd.testing.assert_frame_equal(_table(part, LATENT_COLUMNS), ref, check_exact=True)
    assert json.loads((part / "metrics.json").read_text()) == json.loads(
        (full / "metrics.json").read_text()
    )
    assert main(["study", "latents", "verify", str(part)]) == 0


def test_files_of_an_older_whichway_are_read_but_reported_unchecked(tmp_path):
    (tmp_path / "results").mkdir()
    pq.write_table(
        pa.table({"unit_id": ["a", "b"], "v": [1.0, 2.0]}),
        tmp_path / "results" / "shard-0123.parquet",
    )
    (tmp_path / "manifest.json").write_text(
        json.dumps({"study": "prompts", "units": 2, "status": "complete"})
    )
    with ResultStore(tmp_path) as st:
        assert st.completed() == {"a", "b"} and not st.damaged
        st.write({"c": [{"v": 3.0}]})
        with pytest.raises(
            ValueError, match="do not match the columns this run records: v: string"
        ):
            st.write({"d": [{"v": "text"}]})
    rep = verify_run(tmp_path)
    assert (
        rep.unchecked == ("shard-0123.parquet",) and len(rep.files) == 1 and rep.units_recorded == 3
    )
