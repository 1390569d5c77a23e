"""Latent study (paper B) end to end on a tiny random SD pipeline with random-backbone metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from whichway.studies.config import load_config
from whichway.studies.latent_study import (
    centroid_groups,
    find_classes,
    run_latent_study,
    within_class_pairs,
)
from whichway.studies.report import latent_report
from whichway.studies.store import ResultStore

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")


def _images(root: Path, classes: dict[str, int]) -> Path:
    g = torch.Generator().manual_seed(0)
    for k, (name, n) in enumerate(classes.items()):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            base = torch.tensor([200.0 - 80 * k, 120.0, 40.0 + 80 * k])
            px = (
                (base + 50 * torch.randn(36, 44, 3, generator=g))
                .clamp(0, 255)
                .to(torch.uint8)
                .numpy()
            )
            Image.fromarray(px).save(d / f"im{i}.png")
    return root


def _cfg(tiny_dir: Path, root: Path, *extra: str):
    return load_config(
        "latents",
        None,
        [
            f'model.id="{tiny_dir}"',
            'model.device="cpu"',
            f'data.root="{root}"',
            "inversion.steps=1",
            "render.steps=1",
            "render.height=32",
            "render.width=32",
            "render.batch_size=8",
            "interpolation.pairs_per_class=1",
            "interpolation.nao_max_iter=5",
            "centroids.sizes=[2]",
            "centroids.groups=[1]",
            "centroids.nao_max_iter=5",
            "metrics.pretrained=false",
            'metrics.fid_features="random"',
            "metrics.fid_dims=[64, 192]",
            'metrics.classifier="test_vit"',
            "run.progress=false",
            *extra,
        ],
    )


def test_pairs_and_groups_are_seeded_and_valid():
    p = within_class_pairs(6, 5, seed=1, class_name="a")
    assert len(p) == len(set(p)) == 5 and all(0 <= i < j < 6 for i, j in p)
    assert p == within_class_pairs(6, 5, seed=1, class_name="a")
    assert p != within_class_pairs(6, 5, seed=2, class_name="a")
    assert len(within_class_pairs(3, 10, 0, "a")) == 3  # all 3 pairs of 3 items
    gs = centroid_groups(6, [3, 5, 10], [2, 1, 1], seed=0, class_name="a")
    assert [(k, i) for k, i, _ in gs] == [(3, 0), (3, 1), (5, 0)]  # size 10 > 6 images: skipped
    assert all(len(set(m)) == k and max(m) < 6 for k, _, m in gs)
    assert gs == centroid_groups(6, [3, 5, 10], [2, 1, 1], seed=0, class_name="a")


def test_latent_study_end_to_end_and_resume(tiny_pipeline, tmp_path):
    root = _images(tmp_path / "imgs", {"goldfish": 3, "tabby": 3})
    (root / "empty").mkdir()
    cfg = _cfg(tiny_pipeline("sd"), root)
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="class 'empty' has no images"):
        res = run_latent_study(cfg, out)
    # 6 inversions + per class 1 pair + 1 centroid group
    assert res.units == 6 + 2 + 2 and res.ran == 10
    df = ResultStore(out, lock=False).read()
    inv = df[df.kind == "inversion"]
    assert len(inv) == 6 and len(list((out / "latents").rglob("*.safetensors"))) == 6
    interp, cent = df[df.kind == "interpolation"], df[df.kind == "centroids"]
    assert sorted(interp.method.unique()) == ["cog", "lerp", "nao", "slerp"] and len(interp) == 8
    assert (
        sorted(cent.method.unique()) == ["cog", "euclidean", "mode_norm", "nao", "standardized"]
        and len(cent) == 10
    )
    assert all(len(i) == 3 for i in interp.images) and all(len(i) == 1 for i in cent.images)
    assert all((out / f).is_file() for imgs in df.images for f in imgs)
    assert (interp.seconds >= 0).all()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["real_images"] == 6
    for kind, methods in (("interpolation", 4), ("centroids", 5)):
        assert len(metrics[kind]) == methods
        for m in metrics[kind].values():
            assert (
                m["fid_64"] >= 0
                and m["fid_192"] >= 0
                and 0 <= m["accuracy_top1"] <= m["accuracy_top5"] <= 1
            )
    assert (
        metrics["interpolation"]["cog"]["images"] == 6
        and metrics["centroids"]["nao"]["images"] == 2
    )
    # report: Table 1 / Table 2 layout
    md = latent_report(out)
    t1 = pd.read_csv(out / "report" / "interpolation.csv")
    t2 = pd.read_csv(out / "report" / "centroids.csv")
    assert list(t1.method) == ["lerp", "slerp", "nao", "cog"]
    assert list(t2.method) == ["euclidean", "standardized", "mode_norm", "nao", "cog"]
    for t in (t1, t2):
        assert {
            "accuracy_top1",
            "accuracy_top5",
            "fid_64",
            "fid_192",
            "seconds_per_item",
            "images",
        } <= set(t.columns)
    assert "Table 1" in md.read_text() and (out / "report" / "interpolation_examples.png").is_file()
    # resume: nothing left to do, cached latents untouched
    stamp = {p: p.stat().st_mtime_ns for p in (out / "latents").rglob("*.safetensors")}
    with pytest.warns(UserWarning):
        again = run_latent_study(cfg, out)
    assert again.ran == 0 and again.skipped == 10
    assert {p: p.stat().st_mtime_ns for p in (out / "latents").rglob("*.safetensors")} == stamp
    # the inverted latents are what the adapter computes for the images
    from whichway.media import load_image
    from whichway.models import load_adapter
    from whichway.studies.executors import load_tensor

    ad = load_adapter(str(tiny_pipeline("sd")), device="cpu", dtype="float32")
    ref = ad.invert(
        load_image(root / "tabby" / "im1.png"), "tabby", steps=1, guidance=1.0, height=32, width=32
    )
    np.testing.assert_allclose(
        load_tensor(out / "latents" / "tabby" / "im1.safetensors"), ref, rtol=1e-5, atol=1e-5
    )


def test_bad_image_folders(tmp_path):
    cfg = load_config("latents", None, [f'data.root="{tmp_path / "nope"}"'])
    with pytest.raises(ValueError, match="does not exist or is not a folder"):
        find_classes(cfg)
    with pytest.raises(ValueError, match="data.root is not set"):
        find_classes(load_config("latents"))
    root = _images(tmp_path / "imgs", {"a": 1, "b": 3})
    with pytest.warns(UserWarning) as rec:
        classes = find_classes(load_config("latents", None, [f'data.root="{root}"']))
    msgs = " | ".join(str(w.message) for w in rec)
    assert (
        "class 'a' has only 1 image" in msgs
        and "class 'b' has 3 images, fewer than the largest centroid size 25" in msgs
    )
    assert [c.name for c in classes] == ["b"] and classes[0].prompt == "b"
    with pytest.raises(
        ValueError, match="class folder .* does not exist; classes found: \\['a', 'b'\\]"
    ):
        find_classes(
            load_config("latents", None, [f'data.root="{root}"', 'data.classes=["zebra"]'])
        )
    with (
        pytest.warns(UserWarning),
        pytest.raises(ValueError, match="no class under .* has at least 2 images"),
    ):
        find_classes(load_config("latents", None, [f'data.root="{root}"', 'data.classes=["a"]']))
    with pytest.raises(ValueError, match="unknown interpolation.methods entry 'spline'"):
        load_config("latents", None, ['interpolation.methods=["spline"]'])


def test_time_budget_stops_refuses_and_resumes(tiny_pipeline, tmp_path):
    from whichway.studies.executors import LocalExecutor
    from whichway.studies.timebudget import StudyOverBudget

    root = _images(tmp_path / "imgs", {"goldfish": 3, "tabby": 3})
    tiny = tiny_pipeline("sd")
    out = tmp_path / "run"
    over = _cfg(tiny, root, "run.max_hours=1e-9")
    # fresh: the first 2 inversions run, then a clean stop projecting the 8 units left
    with pytest.raises(StudyOverBudget, match=r"for 8 units left \(.* median of 2 done"):
        run_latent_study(over, out)
    assert len(ResultStore(out, lock=False).completed()) == 2
    assert len(list((out / "latents").rglob("*.safetensors"))) == 2
    # resume over budget: refused from the recorded timings before the worker is built
    executor = LocalExecutor()
    with pytest.raises(StudyOverBudget, match=r"for 8 units left \(.* median of 2 done"):
        run_latent_study(over, out, executor=executor)
    assert executor._worker is None
    # resume without a budget: the other 8 units run
    res = run_latent_study(_cfg(tiny, root), out)
    assert (res.units, res.ran) == (10, 8)
    assert len(ResultStore(out, lock=False).completed()) == 10
