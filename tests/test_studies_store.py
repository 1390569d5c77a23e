"""Result store, executors (local) and statistics (no model needed)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from whichway.studies.executors import (
    LocalExecutor,
    Unit,
    UnitResult,
    WorkerSpec,
    load_tensor,
    make_executor,
    run_units,
)
from whichway.studies.stats import paired_wilcoxon, significance_table, stars
from whichway.studies.store import ResultStore, RunLockedError


class SquareWorker:
    """A worker whose results depend only on the unit (for the executor tests)."""

    def __init__(self, offset: float = 0.0, fail_on: str = "") -> None:
        self.offset = offset
        self.fail_on = fail_on

    def __call__(self, unit: Unit) -> UnitResult:
        if unit.unit_id == self.fail_on:
            raise RuntimeError(f"boom on {unit.unit_id}")
        x = float(unit.payload)
        rows = tuple({"k": k, "value": x * x + self.offset + k} for k in range(2))
        img = torch.full((3, 4, 4), min(1.0, x / 10))
        return UnitResult(
            unit.unit_id,
            rows,
            files={f"img/{unit.unit_id}.png": img},
            tensors={f"cache/{unit.unit_id}.safetensors": torch.tensor([x])},
        )


SPEC = WorkerSpec("test_studies_store:SquareWorker", {"offset": 0.5})
UNITS = [Unit(f"u{i}", i) for i in range(6)]


# --- store ------------------------------------------------------------------------------------
def test_store_write_read_resume_and_no_duplicates(tmp_path):
    with ResultStore(tmp_path) as st:
        st.write({"a": [{"x": 1.0}, {"x": 2.0}]})
        st.write({"b": [{"x": 3.0}], "c": [{"x": 4.0, "extra": "s"}]})
        assert st.completed() == {"a", "b", "c"}
        with pytest.raises(ValueError, match="already recorded"):
            st.write({"b": [{"x": 9.0}]})
        with pytest.raises(ValueError, match="has no rows"):
            st.write({"d": []})
        with pytest.raises(ValueError, match="nothing to write"):
            st.write({})
    # a new process (new store object) sees the same completed set
    with ResultStore(tmp_path) as st:
        assert st.completed() == {"a", "b", "c"}
        df = st.read()
        assert sorted(df.unit_id) == ["a", "a", "b", "c"]
        assert sorted(df.x) == [1.0, 2.0, 3.0, 4.0]
    # no temporary files are left behind
    assert not list((tmp_path / "results").glob(".*"))


def test_store_lock_is_exclusive(tmp_path):
    st = ResultStore(tmp_path)
    with pytest.raises(RunLockedError, match="being written by another process"):
        ResultStore(tmp_path)
    st.close()
    ResultStore(tmp_path).close()  # released
    ro = ResultStore(tmp_path, lock=False)
    with pytest.raises(RuntimeError, match="read-only"):
        ro.write({"x": [{"v": 1}]})


def test_store_compact_is_crash_safe(tmp_path):
    with ResultStore(tmp_path) as st:
        for i in range(5):
            st.write({f"u{i}": [{"v": i}]})
        before = st.read().sort_values("unit_id").reset_index(drop=True)
        st.compact()
        files = list((tmp_path / "results").glob("*.parquet"))
        assert len(files) == 1 and files[0].name.startswith("compact-")
        after = st.read().sort_values("unit_id").reset_index(drop=True)
        pd.testing.assert_frame_equal(before, after)
    # simulate a compaction that died after writing the merged file but before deleting shards
    d = tmp_path / "again"
    with ResultStore(d) as st:
        for i in range(3):
            st.write({f"u{i}": [{"v": i}]})
        shards = {p.name: p.read_bytes() for p in (d / "results").glob("shard-*.parquet")}
        st.compact()
        for name, data in shards.items():  # resurrect the superseded shards
            (d / "results" / name).write_bytes(data)
    with ResultStore(d) as st:
        assert st.completed() == {"u0", "u1", "u2"}
        assert len(st.read()) == 3  # superseded shards are not read twice
        st.compact()
        assert len(list((d / "results").glob("*.parquet"))) == 1


def test_manifest_roundtrip(tmp_path):
    with ResultStore(tmp_path) as st:
        st.write_manifest({"config": {"a": 1}, "seed": 3})
        assert st.read_manifest() == {"config": {"a": 1}, "seed": 3}
    with pytest.raises(ValueError, match="not a study run directory"):
        ResultStore(tmp_path / "empty", lock=False).read_manifest()


# --- executors --------------------------------------------------------------------------------
def test_run_units_local_records_everything_once(tmp_path):
    with ResultStore(tmp_path) as st:
        info = run_units(st, LocalExecutor(), SPEC, UNITS[:3], progress=False)
        assert info["ran"] == 3 and info["skipped"] == 0
        info = run_units(st, LocalExecutor(), SPEC, UNITS, progress=False)
        assert info["ran"] == 3 and info["skipped"] == 3
        df = st.read()
    assert len(df) == 12 and not df.duplicated(["unit_id", "k"]).any()
    got = df.set_index(["unit_id", "k"])["value"]
    for i in range(6):
        assert got[(f"u{i}", 1)] == i * i + 0.5 + 1
    assert (tmp_path / "img" / "u5.png").is_file()
    assert load_tensor(tmp_path / "cache" / "u4.safetensors").item() == 4.0


def test_failing_unit_keeps_finished_units(tmp_path):
    spec = WorkerSpec("test_studies_store:SquareWorker", {"fail_on": "u3"})
    with ResultStore(tmp_path) as st:
        with pytest.raises(RuntimeError, match="boom on u3"):
            run_units(st, LocalExecutor(), spec, UNITS, progress=False)
        assert st.completed() == {"u0", "u1", "u2"}


def test_executor_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown executor 'dask'; valid choices are: local, ray"):
        make_executor("dask")
    with pytest.raises(ValueError, match="must look like 'package.module:name'"):
        WorkerSpec("nocolon").build()
    with pytest.raises(ValueError, match="cannot import worker factory"):
        WorkerSpec("whichway.nothing_here:X").build()
    with ResultStore(tmp_path) as st, pytest.raises(ValueError, match="unit ids must be unique"):
        run_units(st, LocalExecutor(), SPEC, [Unit("a", 1), Unit("a", 2)], progress=False)


# --- stats ------------------------------------------------------------------------------------
def test_stars_levels():
    assert [stars(p) for p in (0.2, 0.05, 0.049, 0.01, 0.0099, 0.001, 0.0009, math.nan)] == [
        "",
        "",
        "*",
        "*",
        "**",
        "**",
        "***",
        "",
    ]


def test_paired_wilcoxon_matches_exact_small_case():
    # all 6 differences negative: exact one-sided p = 1 / 2**6
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    y = x + np.array([0.5, 0.1, 0.3, 0.2, 0.6, 0.4])
    t = paired_wilcoxon(x, y)
    assert t.n == 6 and t.n_nonzero == 6 and t.win_rate == 1.0
    assert t.pvalue == pytest.approx(1 / 64, rel=1e-12)
    assert t.statistic == 0.0 and t.stars == "*"
    # the opposite alternative gives p = 1
    assert paired_wilcoxon(x, y, alternative="greater").pvalue == pytest.approx(1.0)
    # identical samples: no evidence either way
    same = paired_wilcoxon(x, x)
    assert math.isnan(same.pvalue) and same.stars == ""
    # NaN pairs are dropped
    assert paired_wilcoxon([1.0, math.nan, 2.0], [2.0, 0.0, 3.0]).n == 2
    with pytest.raises(ValueError, match="paired"):
        paired_wilcoxon([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="unknown alternative 'lower'"):
        paired_wilcoxon(x, y, alternative="lower")


def test_significance_table_per_group_and_overall():
    from scipy.stats import wilcoxon

    g = torch.Generator().manual_seed(0)
    rows = []
    for i in range(40):
        group = 0.5 if i < 20 else 5.0
        base = float(torch.rand((), generator=g))
        rows += [
            {"pair_id": f"p{i}", "group": group, "coupling": "ot", "ppl": base},
            {"pair_id": f"p{i}", "group": group, "coupling": "clip", "ppl": base + 0.3 + 0.01 * i},
            {
                "pair_id": f"p{i}",
                "group": group,
                "coupling": "random",
                "ppl": base + float(torch.randn((), generator=g)),
            },
        ]
    df = pd.DataFrame(rows).sample(frac=1.0, random_state=1)  # order must not matter
    tab = significance_table(df, "ppl")
    assert list(tab["group"]) == [0.5, 0.5, 5.0, 5.0, "all", "all"]
    assert list(tab["comparison"]) == ["ot < clip", "ot < random"] * 3
    assert tab.loc[tab.comparison == "ot < clip", "n"].tolist() == [20, 20, 40]
    assert (tab.loc[tab.comparison == "ot < clip", "stars"] == "***").all()
    # equals scipy on the matched pairs
    wide = df.pivot(index="pair_id", columns="coupling", values="ppl")
    ref = wilcoxon(wide["ot"], wide["random"], alternative="less").pvalue
    assert tab.query(
        "group == 'all' and comparison == 'ot < random'"
    ).pvalue.item() == pytest.approx(ref, rel=1e-12)
    with pytest.raises(ValueError, match=r"lack column\(s\) \['ppl'\]"):
        significance_table(df.drop(columns="ppl"))
    with pytest.raises(ValueError, match="no rows for the reference coupling 'ot'"):
        significance_table(df[df.coupling != "ot"])
