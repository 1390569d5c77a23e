"""LPIPS path distances: once-per-frame features equal lpips' own pairwise calls; path identities."""

from __future__ import annotations

import urllib.error

import pytest
import torch

from whichway.metrics import LPIPSPath, WeightsUnavailableError, perceptual_path_length


@pytest.fixture(scope="module")
def alex() -> LPIPSPath:
    return LPIPSPath("alex", pretrained_backbone=False)


@pytest.fixture(scope="module")
def vgg() -> LPIPSPath:
    return LPIPSPath("vgg", pretrained_backbone=False)


def _frames(t: int = 7, size: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a, b = torch.rand(2, 3, size, size, generator=g)
    w = torch.linspace(0, 1, t).view(-1, 1, 1, 1) ** 2
    return ((1 - w) * a + w * b + 0.05 * torch.rand(t, 3, size, size, generator=g)).clamp(0, 1)


def _naive(meter: LPIPSPath, frames: torch.Tensor) -> torch.Tensor:
    """The lpips package's own forward, two backbone passes per pair, inputs in [0, 1]."""
    with torch.no_grad():
        return torch.stack(
            [
                meter.model(frames[k : k + 1], frames[k + 1 : k + 2], normalize=True).flatten()[0]
                for k in range(frames.shape[0] - 1)
            ]
        ).double()


@pytest.mark.parametrize("batch_size", [1, 3, 7, 16])
def test_once_per_frame_equals_naive_pairwise_alex(alex, batch_size):
    frames = _frames()
    d = alex.distances(frames, batch_size=batch_size)
    assert d.shape == (6,) and d.dtype == torch.float64
    torch.testing.assert_close(d, _naive(alex, frames), atol=1e-6, rtol=0)
    assert (d > 0).all()


def test_once_per_frame_equals_naive_pairwise_vgg(vgg):
    frames = _frames(t=5, size=48, seed=1)
    torch.testing.assert_close(
        vgg.distances(frames, batch_size=2), _naive(vgg, frames), atol=1e-6, rtol=0
    )


def test_backbone_runs_once_per_frame(alex, monkeypatch):
    seen = []
    original = alex.backbone.forward

    def counting(x):
        seen.append(x.shape[0])
        return original(x)

    monkeypatch.setattr(alex.backbone, "forward", counting)
    alex.distances(_frames(t=11), batch_size=4)
    assert sum(seen) == 11 and seen == [4, 4, 3]


def test_equals_an_independent_lpips_model():
    """Against a separately built lpips.LPIPS (same seeded random backbone, lpips' own layout and
    forward), on a larger frame size where the spatial averages run over many positions."""
    import lpips

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        reference = lpips.LPIPS(
            net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False
        ).eval()
    meter = LPIPSPath("alex", pretrained_backbone=False, seed=3)
    frames = _frames(t=4, size=96, seed=4)
    with torch.no_grad():
        expected = torch.stack(
            [
                reference(frames[k : k + 1], frames[k + 1 : k + 2], normalize=True).flatten()[0]
                for k in range(3)
            ]
        ).double()
    torch.testing.assert_close(meter.distances(frames, batch_size=4), expected, atol=1e-6, rtol=0)


def test_identical_frames_have_zero_ppl(alex):
    frame = _frames(t=1)[0]
    m = alex.path_metrics(frame.expand(5, -1, -1, -1).clone())
    # zero up to float32 rounding: one batched backbone pass need not be bitwise equal per row
    assert 0.0 <= m.ppl <= 1e-10 and m.max_step <= 1e-10
    m = alex.path_metrics(frame.expand(5, -1, -1, -1).clone(), batch_size=1)
    assert m.ppl == 0.0 and m.smoothness == 1.0  # one frame per pass: bitwise equal features


def test_reversed_path_has_the_same_ppl(alex):
    frames = _frames(t=9, seed=2)
    fwd = alex.distances(frames, batch_size=4)
    bwd = alex.distances(frames.flip(0), batch_size=4)
    torch.testing.assert_close(bwd.flip(0), fwd, atol=1e-6, rtol=0)
    assert alex.path_metrics(frames.flip(0)).ppl == pytest.approx(
        alex.path_metrics(frames).ppl, abs=1e-5
    )


def test_path_metrics_use_t_and_float64_input(alex):
    frames = _frames(t=4).double()
    t = [0.0, 0.2, 0.9, 1.0]
    m = alex.path_metrics(frames, t)
    d = m.steps
    assert m.ppl == pytest.approx(float(d.sum()))
    expected = float(d[0] / 0.2**2 + d[1] / 0.7**2 + d[2] / 0.1**2)
    assert m.ppl_normalized == pytest.approx(expected, rel=1e-9)


def test_functional_form_matches_the_class(alex):
    frames = _frames(t=5)
    m = perceptual_path_length(frames, net="alex", pretrained_backbone=False)
    assert m.ppl == pytest.approx(
        alex.path_metrics(frames).ppl, abs=1e-6
    )  # same seed -> same backbone


def test_random_backbone_is_seeded_without_touching_global_rng():
    state = torch.random.get_rng_state()
    a = LPIPSPath("alex", pretrained_backbone=False, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = LPIPSPath("alex", pretrained_backbone=False, seed=5)
    for pa, pb in zip(a.model.net.parameters(), b.model.net.parameters()):
        assert torch.equal(pa, pb)


def test_offline_backbone_error_says_what_and_how(monkeypatch, tmp_path):
    import torchvision.models._api as api

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsUnavailableError) as info:
        LPIPSPath("alex")
    message = str(info.value)
    assert "alexnet-owt-7be5be79.pth" in message
    assert str(tmp_path) in message and "TORCH_HOME" in message
    assert "pretrained_backbone=False" in message
    assert isinstance(info.value, FileNotFoundError)  # the CLI prints it as a plain error


def test_bad_inputs_raise_clear_errors(alex):
    frames = _frames(t=3)
    with pytest.raises(ValueError, match=r"\(T, 3, H, W\)"):
        alex.distances(frames[:, 0])
    with pytest.raises(ValueError, match=r"\(T, 3, H, W\)"):
        alex.distances(torch.rand(3, 4, 64, 64))
    with pytest.raises(ValueError, match="at least 2 frames"):
        alex.distances(frames[:1])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        alex.distances(frames * 2 - 1)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        alex.distances(frames * 255)
    with pytest.raises(ValueError, match="floating"):
        alex.distances((frames * 255).to(torch.uint8))
    with pytest.raises(ValueError, match="non-finite"):
        alex.distances(frames.clone().fill_(float("nan")))
    with pytest.raises(ValueError, match="at least 32x32"):
        alex.distances(torch.rand(3, 3, 16, 64))
    with pytest.raises(ValueError, match="batch_size"):
        alex.distances(frames, batch_size=0)
    with pytest.raises(ValueError, match="one t per frame"):
        alex.path_metrics(frames, [0.0, 1.0])
    with pytest.raises(ValueError, match="valid choices are: alex, vgg"):
        LPIPSPath("squeeze", pretrained_backbone=False)
