"""Pair sources, stratified sampling and study configs (no model needed)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from whichway.studies import config as cfg
from whichway.studies.pairs import (
    group_labels,
    load_coco_captions,
    load_cxc,
    load_pair_file,
    pair_seed,
    similarity_group,
    stratified_sample,
)

FIX = Path(__file__).parent / "fixtures"
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CXC_FILES = [DATA / "cxc" / "sts_val.csv", DATA / "cxc" / "sts_test.csv"]
COCO_FILES = [
    DATA / "coco" / "captions_val2017.json",
    DATA / "coco" / "captions_val2014_subset.json",
]


def small():
    return load_cxc([FIX / "cxc_small.csv"], [FIX / "coco_small.json"])


# --- CxC loader -----------------------------------------------------------------------------
def test_cxc_fixture_resolution_counts():
    ps = small()
    assert ps.n_total == 14
    assert ps.n_unresolved == 3
    assert len(ps.pairs) == 11
    assert ps.summary() == {
        "pairs_read": 14,
        "pairs_resolved": 11,
        "pairs_unresolved": 3,
        "pairs_invalid": 0,
    }
    assert "COCO_val2014:sentid:99999" in ps.unresolved_ids
    row = ps.pairs.set_index("pair_id").loc["COCO_val2014:sentid:11|COCO_val2014:sentid:12"]
    assert row.prompt_a == "A black cat sleeping on a red sofa."
    assert row.prompt_b == "A cat curled up asleep on a couch."
    assert row.similarity == 4.8 and row.sampling_method == "c2c_cocaption"
    assert ps.pairs["pair_id"].is_unique and list(ps.pairs["pair_id"]) == sorted(
        ps.pairs["pair_id"]
    )
    # trailing spaces in the COCO text are stripped
    assert not ps.pairs["prompt_b"].str.endswith(" ").any()


def test_similarity_groups_edges():
    s = pd.Series([0.0, 0.49, 0.5, 0.99, 1.0, 2.5, 4.5, 4.99, 5.0, math.nan])
    g = similarity_group(s)
    assert g.iloc[:9].tolist() == [0.5, 0.5, 1.0, 1.0, 1.5, 3.0, 5.0, 5.0, 5.0]
    assert math.isnan(g.iloc[9])
    assert group_labels() == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0]
    with pytest.raises(ValueError, match="whole number of group widths"):
        group_labels(0.3, 5.0)


def test_stratified_counts_warnings_and_reproducibility():
    ps = small()
    with pytest.warns(UserWarning) as rec:
        s = stratified_sample(ps.pairs, 2, seed=3)
    msgs = " | ".join(str(w.message) for w in rec)
    assert (
        "group 2 is empty" in msgs and "group 3.5 is empty" in msgs and "group 4.5 is empty" in msgs
    )
    assert "fewer than 2 pairs" in msgs and "1 (1)" in msgs
    counts = s.groupby("group").size().to_dict()
    assert counts == {0.5: 2, 1.0: 1, 1.5: 1, 2.5: 2, 3.0: 1, 4.0: 1, 5.0: 2}
    # seeded: same seed same sample, whatever the input order
    shuffled = ps.pairs.sample(frac=1.0, random_state=7)
    with pytest.warns(UserWarning):
        s2 = stratified_sample(shuffled, 2, seed=3)
    pd.testing.assert_frame_equal(s, s2)
    # another seed picks other pairs in the 3-pair group
    picks = set()
    for seed in range(8):
        with pytest.warns(UserWarning):
            picks.add(
                tuple(stratified_sample(ps.pairs, 2, seed=seed).query("group == 5.0").pair_id)
            )
    assert len(picks) > 1
    # a larger sample extends a smaller one
    with pytest.warns(UserWarning):
        s1 = stratified_sample(ps.pairs, 1, seed=3)
    assert set(s1.pair_id) <= set(s.pair_id)


def test_pair_seed_is_stable_and_distinct():
    assert pair_seed(0, "a|b") == pair_seed(0, "a|b")
    assert pair_seed(0, "a|b") != pair_seed(1, "a|b") != pair_seed(0, "a|c")
    assert 0 <= pair_seed(5, "x") < 2**63


@pytest.mark.skipif(
    not all(p.is_file() for p in CXC_FILES + COCO_FILES), reason="shared data absent"
)
def test_cxc_real_data_counts():
    ps = load_cxc(CXC_FILES, COCO_FILES)
    assert ps.n_total == 88_054
    assert len(ps.pairs) == 12_979
    assert ps.n_unresolved == 88_054 - 12_979
    counts = similarity_group(ps.pairs["similarity"]).value_counts().sort_index()
    assert counts.tolist() == [547, 433, 689, 1037, 1544, 2148, 2620, 2408, 1223, 330]
    with pytest.warns(UserWarning, match=r"1 \(433\), 5 \(330\)"):
        s = stratified_sample(ps.pairs, 500, seed=0)
    assert s.groupby("group").size().tolist() == [500, 433, 500, 500, 500, 500, 500, 500, 500, 330]
    assert s["pair_id"].is_unique
    with pytest.warns(UserWarning):
        again = stratified_sample(ps.pairs, 500, seed=0)
    assert again["pair_id"].tolist() == s["pair_id"].tolist()


# --- plain pair files -------------------------------------------------------------------------
def _pairs_df():
    return pd.DataFrame(
        {
            "prompt_a": ["a cat", "a red car", "a house", "a cat"],
            "prompt_b": ["a dog", "a blue car", "a tree", "a dog"],
            "similarity": [2.0, 4.1, 0.2, 2.0],
        }
    )


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_pair_file_formats_agree(tmp_path, fmt):
    df = _pairs_df()
    path = tmp_path / f"pairs.{fmt}"
    if fmt == "csv":
        df.to_csv(path, index=False)
    elif fmt == "jsonl":
        df.to_json(path, orient="records", lines=True)
    else:
        df.to_parquet(path)
    with pytest.warns(UserWarning, match="1 duplicate pair"):
        ps = load_pair_file(path)
    assert len(ps.pairs) == 3 and ps.n_total == 4
    assert sorted(ps.pairs.similarity) == [0.2, 2.0, 4.1]
    assert ps.pairs.pair_id.str.startswith("p").all()


def test_pair_file_without_similarity(tmp_path):
    path = tmp_path / "p.csv"
    _pairs_df().drop(columns="similarity").iloc[:3].to_csv(path, index=False)
    ps = load_pair_file(path)
    assert ps.pairs.similarity.isna().all()
    with pytest.raises(ValueError, match="no similarity"):
        stratified_sample(ps.pairs, 2)
    s = stratified_sample(ps.pairs, 2, stratify=False)
    assert len(s) == 2 and s.group.isna().all()


def test_bad_pair_inputs(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("prompt_a,text\nx,y\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['prompt_b'\]"):
        load_pair_file(bad)
    with pytest.raises(ValueError, match="does not exist"):
        load_pair_file(tmp_path / "nope.csv")
    (tmp_path / "p.txt").write_text("x")
    with pytest.raises(ValueError, match="unknown format '.txt'"):
        load_pair_file(tmp_path / "p.txt")
    garbage = tmp_path / "g.parquet"
    garbage.write_bytes(b"not a parquet file")
    with pytest.raises(ValueError, match="could not read prompt pair file"):
        load_pair_file(garbage)
    cxc = tmp_path / "sts.csv"
    cxc.write_text("caption1,caption2\nCOCO_val2014:sentid:11,COCO_val2014:sentid:12\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['agg_score'\]"):
        load_cxc([cxc], [FIX / "coco_small.json"])
    broken = tmp_path / "c.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="could not read COCO captions"):
        load_coco_captions([broken])
    (tmp_path / "d.json").write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="no 'annotations' list"):
        load_coco_captions([tmp_path / "d.json"])
    out_of_range = tmp_path / "r.csv"
    out_of_range.write_text("prompt_a,prompt_b,similarity\na,b,7\nc,d,1\n")
    with pytest.warns(UserWarning, match=r"1 pair\(s\) dropped"):
        ps = load_pair_file(out_of_range)
    assert ps.n_invalid == 1 and len(ps.pairs) == 1


def test_all_groups_empty_is_an_error():
    with pytest.raises(ValueError, match="n_per_group must be >= 1"):
        stratified_sample(small().pairs, 0)


# --- configs ----------------------------------------------------------------------------------
def test_config_roundtrip_and_overrides(tmp_path):
    c = cfg.load_config(
        "prompts",
        None,
        [
            "render.steps=3",
            'study.couplings=["ot", "random"]',
            "model.id=some/model",
            "render.t=[0, 0.5, 1]",
        ],
    )
    assert (
        c.render.steps == 3 and c.study.couplings == ("ot", "random") and c.model.id == "some/model"
    )
    assert c.render.t == (0.0, 0.5, 1.0)
    path = cfg.write_config(c, tmp_path / "c.toml")
    assert cfg.load_config("prompts", path) == c
    lat = cfg.load_config("latents")
    assert lat.model.id == "stabilityai/stable-diffusion-2-1-base" and lat.inversion.steps == 400
    assert cfg.load_config("latents", cfg.write_config(lat, tmp_path / "l.toml")) == lat


def test_config_errors(tmp_path):
    with pytest.raises(
        ValueError, match=r"unknown key\(s\) 'stepz' in \[render\].*valid keys are: steps, guidance"
    ):
        cfg.load_config("prompts", None, ["render.stepz=3"])
    p = tmp_path / "c.toml"
    p.write_text('[modle]\nid = "x"\n')
    with pytest.raises(
        ValueError, match="unknown key.*'modle'.*valid keys are: model, pairs, render"
    ):
        cfg.load_config("prompts", p)
    with pytest.raises(ValueError, match="render.steps must be an integer"):
        cfg.load_config("prompts", None, ["render.steps=fast"])
    with pytest.raises(
        ValueError, match="unknown study.couplings entry 'emd'; valid choices are: ot, clip, random"
    ):
        cfg.load_config("prompts", None, ['study.couplings=["emd"]'])
    with pytest.raises(ValueError, match="unknown run.executor 'dask'"):
        cfg.load_config("prompts", None, ["run.executor=dask"])
    with pytest.raises(ValueError, match="render.t must be increasing from 0.0 to 1.0"):
        cfg.load_config("prompts", None, ["render.t=[0.5, 1]"])
    with pytest.raises(ValueError, match="same length"):
        cfg.load_config("latents", None, ["centroids.sizes=[3]"])
    with pytest.raises(ValueError, match="must look like section.key=value"):
        cfg.load_config("prompts", None, ["render.steps"])
    p.write_text("[render\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        cfg.load_config("prompts", p)
    with pytest.raises(ValueError, match="could not read study config"):
        cfg.load_config("prompts", tmp_path / "missing.toml")
    with pytest.raises(ValueError, match="unknown study 'words'"):
        cfg.load_config("words")
