"""Streaming Fréchet distance: exact identities, Gaussian closed form, reference libraries."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch
from torch import nn

from whichway.metrics import (
    FID,
    FrechetAccumulator,
    FrechetStatistics,
    InceptionFeatures,
    WeightsUnavailableError,
    frechet_distance,
)


def _exact_moments(n: int, mean: torch.Tensor, cov_sqrt: torch.Tensor, seed: int) -> torch.Tensor:
    """Samples (n, d) whose sample mean is exactly ``mean`` and sample covariance ``cov_sqrt @ cov_sqrt.T``."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, mean.numel(), generator=g, dtype=torch.float64)
    z = z - z.mean(0)
    chol = torch.linalg.cholesky(z.T @ z / (n - 1))
    z = torch.linalg.solve_triangular(chol, z.T, upper=False).T  # sample covariance = I
    return mean + z @ cov_sqrt.T


def _spd(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


def test_fid_of_a_set_with_itself_is_zero():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 16, generator=g) * 3 + 1
    a, b = FrechetAccumulator(), FrechetAccumulator()
    a.update(x)
    b.update(x[:120])
    b.update(x[120:])
    assert 0.0 <= a.compute(b) <= 1e-6
    assert 0.0 <= a.compute(a.statistics()) <= 1e-6


def test_fid_with_itself_is_zero_for_singular_covariance():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(10, 64, generator=g)  # n < d: covariance of rank 9
    acc = FrechetAccumulator()
    acc.update(x)
    assert acc.compute(acc) <= 1e-6


def test_closed_form_for_diagonal_gaussians():
    d = 6
    mu1 = torch.linspace(-1, 1, d, dtype=torch.float64)
    mu2 = torch.linspace(0, 3, d, dtype=torch.float64)
    a = torch.linspace(0.5, 4, d, dtype=torch.float64)
    b = torch.linspace(2, 0.1, d, dtype=torch.float64)
    expected = float((mu1 - mu2).square().sum() + (a.sqrt() - b.sqrt()).square().sum())
    assert frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b)) == pytest.approx(
        expected, rel=1e-12
    )
    # the same through the accumulator, on features whose sample moments are exactly these
    fa, fb = FrechetAccumulator(), FrechetAccumulator()
    fa.update(_exact_moments(400, mu1, torch.diag(a.sqrt()), seed=2))
    xb = _exact_moments(250, mu2, torch.diag(b.sqrt()), seed=3)
    for chunk in xb.split(64):
        fb.update(chunk)
    assert fa.compute(fb) == pytest.approx(expected, rel=1e-9)
    assert fb.compute(fa) == pytest.approx(expected, rel=1e-9)


def test_general_covariances_match_scipy_sqrtm_formula():
    import scipy.linalg

    s1, s2 = _spd(12, 4), _spd(12, 5)
    mu1, mu2 = torch.zeros(12, dtype=torch.float64), torch.full((12,), 0.5, dtype=torch.float64)
    root = scipy.linalg.sqrtm(s1.numpy() @ s2.numpy()).real
    expected = float(0.25 * 12 + np.trace(s1.numpy()) + np.trace(s2.numpy()) - 2 * np.trace(root))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    # symmetry
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(expected, rel=1e-9)


def test_equals_reference_libraries_on_the_same_features():
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    from torchmetrics.image.fid import _compute_fid

    g = torch.Generator().manual_seed(6)
    real = torch.randn(500, 32, generator=g).abs()  # ReLU-like features
    fake = (torch.randn(400, 32, generator=g) * 1.3 + 0.2).abs()
    ra, fa = FrechetAccumulator(), FrechetAccumulator()
    for chunk in real.split(77):
        ra.update(chunk)
    for chunk in fake.split(50):
        fa.update(chunk)
    ours = fa.compute(ra)
    ref = fid_statistics_to_metric(
        fid_features_to_statistics(real.double()),
        fid_features_to_statistics(fake.double()),
        verbose=False,
    )["frechet_inception_distance"]
    assert ours == pytest.approx(ref, rel=1e-7)
    tm = float(
        _compute_fid(
            real.double().mean(0),
            torch.cov(real.double().T),
            fake.double().mean(0),
            torch.cov(fake.double().T),
        )
    )
    assert ours == pytest.approx(tm, rel=1e-7)


def test_streaming_and_merging_give_the_batch_statistics():
    g = torch.Generator().manual_seed(7)
    x = (
        torch.randn(321, 9, generator=g, dtype=torch.float64) * 5 + 1000
    )  # large offset: cancellation-prone
    one, streamed, left, right = (FrechetAccumulator() for _ in range(4))
    one.update(x)
    for chunk in x.split(10):
        streamed.update(chunk)
    left.update(x[:100])
    right.update(x[100:])
    merged = left.merge(right)
    ref_mean = x.mean(0)
    ref_cov = torch.from_numpy(np.cov(x.numpy(), rowvar=False))
    for acc in (one, streamed, merged):
        s = acc.statistics()
        assert s.n == 321
        torch.testing.assert_close(s.mean, ref_mean, atol=1e-10, rtol=0)
        torch.testing.assert_close(s.cov, ref_cov, atol=1e-9, rtol=1e-10)


def test_reset_and_statistics_round_trip(tmp_path):
    acc = FrechetAccumulator(dim=3)
    acc.update(torch.randn(20, 3, generator=torch.Generator().manual_seed(8)))
    stats = acc.statistics()
    stats.save(tmp_path / "ref.pt")
    back = FrechetStatistics.load(tmp_path / "ref.pt")
    assert back.n == 20 and torch.equal(back.mean, stats.mean) and torch.equal(back.cov, stats.cov)
    acc.reset()
    assert acc.n == 0 and acc.dim == 3
    with pytest.raises(ValueError, match="at least 2 samples"):
        acc.statistics()


class _TinyFeatures(nn.Module):
    """A small random convolutional feature extractor: images (N, 3, H, W) -> (N, 8)."""

    def __init__(self) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):  # seeded weights, caller's RNG untouched
            torch.manual_seed(0)
            self.conv = nn.Conv2d(3, 8, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)).mean(dim=(2, 3))


def test_fid_class_with_a_pluggable_extractor():
    g = torch.Generator().manual_seed(9)
    real = torch.rand(40, 3, 32, 32, generator=g)
    fake = torch.rand(30, 3, 32, 32, generator=g) ** 2
    ext = _TinyFeatures()
    fid = FID(ext, batch_size=16)
    fid.update(real[:25], real=True)
    fid.update(real[25:], real=True)
    fid.update(fake, real=False)
    with torch.no_grad():
        fr, ff = ext(real).double(), ext(fake).double()
    ra, fa = FrechetAccumulator(), FrechetAccumulator()
    ra.update(fr)
    fa.update(ff)
    assert fid.compute() == pytest.approx(fa.compute(ra), rel=1e-6)
    assert fid.compute() > 0
    fid.reset(keep_real=True)
    assert fid.real.n == 40 and fid.fake.n == 0
    fid.update(real, real=False)
    assert fid.compute() <= 1e-6  # FID(x, x) = 0
    fid.reset()
    assert fid.real.n == 0
    fid.update_features(fr, real=True)
    fid.update(fake, real=False)
    assert fid.compute() == pytest.approx(fa.compute(ra), rel=1e-6)


def test_offline_inception_error_says_what_and_how(monkeypatch, tmp_path):
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(fe, "load_state_dict_from_url", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsUnavailableError) as info:
        FID(dims=2048)
    message = str(info.value)
    assert "weights-inception-2015-12-05-6726825d.pth" in message
    assert str(tmp_path) in message and "weights_path" in message and "feature_extractor" in message


def test_bad_inputs_raise_clear_errors():
    acc = FrechetAccumulator()
    with pytest.raises(ValueError, match=r"\(N, d\)"):
        acc.update(torch.randn(5))
    acc.update(torch.randn(5, 3))
    with pytest.raises(ValueError, match="dimension 4"):
        acc.update(torch.randn(5, 4))
    with pytest.raises(ValueError, match="non-finite"):
        acc.update(torch.full((2, 3), float("inf")))
    other = FrechetAccumulator()
    other.update(torch.randn(5, 4))
    with pytest.raises(ValueError, match="cannot merge"):
        acc.merge(other)
    with pytest.raises(ValueError, match="dimensions differ"):
        acc.compute(other)
    with pytest.raises(ValueError, match="positive integer"):
        FrechetAccumulator(dim=0)
    with pytest.raises(ValueError, match="same length"):
        frechet_distance(torch.zeros(3), torch.eye(3), torch.zeros(2), torch.eye(3))
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        frechet_distance(torch.zeros(3), torch.eye(2), torch.zeros(3), torch.eye(3))
    with pytest.raises(ValueError, match="valid choices"):
        InceptionFeatures(dims=100)
    fid = FID(_TinyFeatures())
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        fid.update(torch.rand(4, 3, 32, 32) * 2 - 1, real=True)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        fid.update(torch.rand(4, 32, 32), real=True)
    with pytest.raises(ValueError, match=r"\(N, d\)"):
        FID(lambda x: x).update(torch.rand(2, 3, 8, 8), real=True)
    with pytest.raises(ValueError, match="batch_size"):
        FID(_TinyFeatures(), batch_size=0)
