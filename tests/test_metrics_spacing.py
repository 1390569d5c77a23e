"""Perceptual frame spacing on render functions with a known, non-uniform speed."""

from __future__ import annotations

import logging

import pytest
import torch

from whichway.metrics import LPIPSPath, invert_cumulative, respace


def _render_t_squared(t: torch.Tensor) -> torch.Tensor:
    """Flat grey frames of value t²: the path moves 2t times faster at t than uniform."""
    return (t.float() ** 2).view(-1, 1, 1, 1).expand(-1, 3, 8, 8).clone()


def _mean_abs_difference(frames: torch.Tensor) -> torch.Tensor:
    return (frames[1:] - frames[:-1]).abs().mean(dim=(1, 2, 3))


def test_invert_cumulative_is_exact_for_piecewise_linear_distance():
    knots = torch.tensor([0.0, 0.1, 0.5, 1.0], dtype=torch.float64)
    # distance proportional to dt: the inverse is the uniform grid
    t = invert_cumulative(knots, knots.diff() * 3.0, 6)
    torch.testing.assert_close(t, torch.linspace(0, 1, 6, dtype=torch.float64), atol=1e-15, rtol=0)
    # the middle target lands on a stretch of zero distance [0.1, 0.5]: any point of it is a
    # preimage (the end is taken); endpoints stay
    t = invert_cumulative(knots, torch.tensor([1.0, 0.0, 1.0]), 3)
    assert t[0] == 0.0 and 0.1 <= float(t[1]) <= 0.5 and t[2] == 1.0


@pytest.mark.parametrize("refine, tolerance", [(0, 0.06), (1, 0.005)])
def test_steps_become_equal_on_a_t_squared_path(refine, tolerance):
    n = 11
    res = respace(_render_t_squared, n, distance=_mean_abs_difference, refine=refine)
    # uniform t: steps (2k+1)/100, from 0.01 to 0.19 -- a spread of 1.8 times the mean
    assert res.spread_before == pytest.approx(1.8, rel=1e-5)
    assert res.spread_after < tolerance  # (max - min) / mean of the re-spaced steps
    assert res.t[0] == 0.0 and res.t[-1] == 1.0
    assert (res.t.diff() > 0).all()
    # the exact answer: s(t) = t², so equal spacing is t_i = sqrt(i / (n - 1))
    exact = torch.linspace(0, 1, n, dtype=torch.float64).sqrt()
    assert (res.t - exact).abs().max() < (0.01 if refine == 0 else 1e-3)
    torch.testing.assert_close(res.frames, _render_t_squared(res.t))
    torch.testing.assert_close(res.steps_after, _mean_abs_difference(res.frames).double())
    assert res.rounds == refine and res.n_rendered == n * (2 + refine)


def test_refinement_keeps_improving_and_custom_coarse_grid():
    spreads = [
        respace(_render_t_squared, 9, distance=_mean_abs_difference, refine=r).spread_after
        for r in (0, 1, 2)
    ]
    assert spreads[0] > spreads[1] > spreads[2]
    res = respace(
        _render_t_squared,
        5,
        distance=_mean_abs_difference,
        coarse=torch.linspace(0, 1, 41),
        refine=0,
    )
    assert res.t_coarse.shape == (41,) and res.steps_before.shape == (40,) and res.t.shape == (5,)
    assert res.spread_after < 0.01


def test_still_path_keeps_uniform_spacing_with_a_warning(caplog):
    def still(t: torch.Tensor) -> torch.Tensor:
        return torch.full((t.numel(), 3, 8, 8), 0.5)

    with caplog.at_level(logging.WARNING, logger="whichway.metrics.spacing"):
        res = respace(still, 4, distance=_mean_abs_difference, refine=0)
    assert "looks the same" in caplog.text
    torch.testing.assert_close(res.t, torch.linspace(0, 1, 4, dtype=torch.float64))


def test_with_lpips_distance_on_a_blend():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 3, 48, 48, generator=g)

    def render(t: torch.Tensor) -> torch.Tensor:
        w = (t.float() ** 3).view(-1, 1, 1, 1)
        return (1 - w) * a + w * b

    res = respace(render, 7, distance=LPIPSPath("alex", pretrained_backbone=False), refine=1)
    assert res.t[0] == 0.0 and res.t[-1] == 1.0 and (res.t.diff() > 0).all()
    assert res.spread_after < res.spread_before


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="n_frames"):
        respace(_render_t_squared, 1, distance=_mean_abs_difference)
    with pytest.raises(ValueError, match="refine"):
        respace(_render_t_squared, 5, distance=_mean_abs_difference, refine=-1)
    with pytest.raises(ValueError, match="strictly increasing"):
        respace(
            _render_t_squared,
            5,
            distance=_mean_abs_difference,
            coarse=torch.tensor([0.0, 0.6, 0.4, 1.0]),
        )
    with pytest.raises(ValueError, match="strictly increasing"):
        respace(
            _render_t_squared, 5, distance=_mean_abs_difference, coarse=torch.tensor([0.0, 1.5])
        )
    with pytest.raises(ValueError, match="render"):
        respace("not a function", 5, distance=_mean_abs_difference)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"render\(t\) must return frames \(5, 3, H, W\)"):
        respace(lambda t: torch.zeros(3, 3, 8, 8), 5, distance=_mean_abs_difference)
    with pytest.raises(ValueError, match=r"\(4,\) step distances"):
        respace(_render_t_squared, 5, distance=lambda f: torch.zeros(2))
    with pytest.raises(ValueError, match="non-negative"):
        respace(_render_t_squared, 5, distance=lambda f: -torch.ones(f.shape[0] - 1))
