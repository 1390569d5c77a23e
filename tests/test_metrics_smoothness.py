"""Path statistics from step distances: Gini, PPL (both normalisations), smoothness, consistency."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from whichway.metrics import PathMetrics, gini, path_metrics_from_steps


def _gini_mean_abs_difference(x: torch.Tensor) -> float:
    """Reference: G = sum_ij |x_i - x_j| / (2 n^2 mean)."""
    x = x.double()
    n = x.numel()
    return float((x[:, None] - x[None, :]).abs().sum() / (2 * n * n * x.mean()))


def test_gini_of_equal_steps_is_zero():
    assert float(gini(torch.full((10,), 0.37))) == 0.0
    assert float(gini(torch.tensor([2.0]))) == 0.0


def test_gini_of_one_jump_is_n_minus_one_over_n():
    for n in (2, 5, 10):
        x = torch.zeros(n)
        x[n // 2] = 3.0
        assert float(gini(x)) == pytest.approx((n - 1) / n, abs=1e-15)


def test_gini_of_all_zero_steps_is_defined_as_zero():
    assert float(gini(torch.zeros(4))) == 0.0
    m = path_metrics_from_steps(torch.zeros(4))
    assert m.smoothness == 1.0 and m.ppl == 0.0 and m.max_step == 0.0


def test_gini_matches_mean_absolute_difference_and_is_scale_invariant():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(17, generator=g, dtype=torch.float64)
    assert float(gini(x)) == pytest.approx(_gini_mean_abs_difference(x), abs=1e-13)
    assert float(gini(7.5 * x)) == pytest.approx(float(gini(x)), abs=1e-13)
    assert float(gini(x[torch.randperm(17, generator=g)])) == pytest.approx(
        float(gini(x)), abs=1e-15
    )


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=1e3, allow_nan=False), min_size=1, max_size=30))
def test_gini_lies_between_zero_and_n_minus_one_over_n(values):
    x = torch.tensor(values, dtype=torch.float64)
    g = float(gini(x))
    n = len(values)
    assert -1e-12 <= g <= (n - 1) / n + 1e-12
    if x.sum() > 0:
        assert g == pytest.approx(_gini_mean_abs_difference(x), abs=1e-9)


def test_path_metrics_formulas_uniform_t():
    d = torch.tensor([0.1, 0.3, 0.2, 0.4], dtype=torch.float64)
    m = path_metrics_from_steps(d)
    assert isinstance(m, PathMetrics)
    assert m.ppl == pytest.approx(1.0, abs=1e-15)
    # uniform t: dt = 1/(T-1) so sum d/dt^2 = (T-1)^2 * sum d
    assert m.ppl_normalized == pytest.approx(16 * 1.0, abs=1e-12)
    assert m.consistency == pytest.approx(0.25, abs=1e-15)
    assert m.max_step == pytest.approx(0.4)
    assert m.smoothness == pytest.approx(1 - _gini_mean_abs_difference(d), abs=1e-13)
    assert m.steps.dtype == torch.float64 and m.t.shape == (5,)
    assert m.n_frames == 5


def test_path_metrics_nonuniform_t_and_reversal():
    d = torch.tensor([0.2, 0.1, 0.4])
    t = [0.0, 0.5, 0.6, 1.0]
    m = path_metrics_from_steps(d, t)
    expected = 0.2 / 0.5**2 + 0.1 / 0.1**2 + 0.4 / 0.4**2
    assert m.ppl_normalized == pytest.approx(expected, rel=1e-6)
    # the same path walked backwards: same PPL, same normalised PPL, same smoothness
    r = path_metrics_from_steps(d.flip(0), [1 - v for v in reversed(t)])
    assert r.ppl == pytest.approx(m.ppl, abs=1e-15)
    assert r.ppl_normalized == pytest.approx(m.ppl_normalized, rel=1e-12)
    assert r.smoothness == pytest.approx(m.smoothness, abs=1e-15)
    # strictly decreasing t is a valid (reversed) parametrisation too
    assert path_metrics_from_steps(d, list(reversed(t))).ppl == pytest.approx(m.ppl)


def test_to_dict_is_json_ready():
    import json

    m = path_metrics_from_steps(torch.tensor([0.1, 0.2]))
    data = json.loads(json.dumps(m.to_dict()))
    assert data["n_frames"] == 3 and data["t"] == [0.0, 0.5, 1.0]
    assert set(data) >= {"ppl", "ppl_normalized", "smoothness", "consistency", "max_step", "steps"}


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="non-negative"):
        gini(torch.tensor([0.1, -0.2]))
    with pytest.raises(ValueError, match="1-D"):
        gini(torch.ones(2, 2))
    with pytest.raises(ValueError, match="floating"):
        gini(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="at least one step"):
        path_metrics_from_steps(torch.zeros(0))
    with pytest.raises(ValueError, match="non-negative"):
        path_metrics_from_steps(torch.tensor([0.1, -1.0]))
    with pytest.raises(ValueError, match="non-finite"):
        path_metrics_from_steps(torch.tensor([0.1, float("nan")]))
    with pytest.raises(ValueError, match="one t per frame"):
        path_metrics_from_steps(torch.tensor([0.1, 0.2]), [0.0, 1.0])
    with pytest.raises(ValueError, match="strictly monotonic"):
        path_metrics_from_steps(torch.tensor([0.1, 0.2]), [0.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="strictly monotonic"):
        path_metrics_from_steps(torch.tensor([0.1, 0.2]), [0.0, 0.7, 0.5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        path_metrics_from_steps(torch.tensor([0.1, 0.2]), [0.0, 0.5, 1.5])
