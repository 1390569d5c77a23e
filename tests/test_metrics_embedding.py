"""Embedding-space path measures: coupling cost, W2, W2 path length, stretch."""

from __future__ import annotations

import math

import pytest
import torch

from whichway.metrics import embedding_path_metrics


def _clouds(n: int = 9, d: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(
        n, d, generator=g, dtype=torch.float64
    ) + 0.5


def test_ot_path_is_a_geodesic():
    x, y = _clouds()
    m = embedding_path_metrics(x, y, torch.linspace(0, 1, 11), "ot")
    assert m.path_length_w2 == pytest.approx(m.w2, rel=1e-10)
    assert m.stretch == pytest.approx(1.0, abs=1e-10)
    assert m.cost / x.shape[0] == pytest.approx(m.w2**2, rel=1e-12)  # W2^2 = C(sigma*) / n


def test_other_couplings_cost_more_and_give_longer_paths():
    x, y = _clouds(seed=1)
    ot = embedding_path_metrics(x, y, torch.linspace(0, 1, 11), "ot")
    clip = embedding_path_metrics(x, y, torch.linspace(0, 1, 11), "clip")
    rnd = embedding_path_metrics(
        x, y, [0.0, 0.25, 0.5, 0.75, 1.0], "random", generator=torch.Generator().manual_seed(0)
    )
    for other in (clip, rnd):
        assert other.cost >= ot.cost - 1e-9
        assert other.path_length_w2 >= ot.path_length_w2 - 1e-9
        assert other.stretch >= 1.0 - 1e-12
        assert other.w2 == pytest.approx(ot.w2, rel=1e-12)
    # clip coupling: cost is the row-wise sum of squared distances
    assert clip.cost == pytest.approx(float((x - y).square().sum()), rel=1e-12)
    assert clip.to_dict()["method"] == "clip"


def test_batched_clouds():
    x1, y1 = _clouds(seed=2)
    x2, y2 = _clouds(seed=3)
    m = embedding_path_metrics(
        torch.stack([x1, x2]), torch.stack([y1, y2]), torch.linspace(0, 1, 5), "clip"
    )
    single = embedding_path_metrics(x2, y2, torch.linspace(0, 1, 5), "clip")
    assert isinstance(m.path_length_w2, torch.Tensor) and m.path_length_w2.shape == (2,)
    assert float(m.path_length_w2[1]) == pytest.approx(single.path_length_w2, rel=1e-10)
    assert m.to_dict()["stretch"][1] == pytest.approx(single.stretch, rel=1e-10)


def test_identical_clouds_have_undefined_stretch():
    x, _ = _clouds()
    m = embedding_path_metrics(x, x, [0.0, 1.0], "ot")
    assert m.w2 == 0.0 and m.path_length_w2 == 0.0 and math.isnan(m.stretch)


def test_bad_inputs_raise_clear_errors():
    x, y = _clouds()
    with pytest.raises(ValueError, match="at least 2 times"):
        embedding_path_metrics(x, y, [0.5], "ot")
    with pytest.raises(ValueError, match="valid choices"):
        embedding_path_metrics(x, y, [0.0, 1.0], "nearest")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        embedding_path_metrics(x, y, [0.0, 2.0], "ot")
