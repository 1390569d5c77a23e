"""Waypoint geometry (no model) and batched rendering with a tiny real SD pipeline."""

from __future__ import annotations

import pytest
import torch

from whichway.clouds import path_length_w2, wasserstein2
from whichway.models.base import Conditioning
from whichway.render import conditioning_path, latent_path, render_frames


def _cond(seed: int, groups=((7, 5), (3, 4)), pooled: int | None = 6) -> Conditioning:
    g = torch.Generator().manual_seed(seed)
    clouds = tuple(torch.randn(1, n, d, generator=g) for n, d in groups)
    return Conditioning(clouds, None if pooled is None else torch.randn(1, pooled, generator=g))


def test_path_endpoints_are_exact_per_group():
    a, b = _cond(0), _cond(1)
    path, couplings = conditioning_path(a, b, torch.tensor([0.0, 0.3, 1.0]), coupling="ot")
    assert len(path) == 3 and len(couplings) == 2
    for g, c in enumerate(couplings):
        assert torch.equal(path.clouds[g][0], a.clouds[g][0])
        assert torch.equal(path.clouds[g][-1], b.clouds[g][0][c.perm])
    assert torch.equal(path.pooled[0], a.pooled[0]) and torch.equal(path.pooled[-1], b.pooled[0])
    assert torch.allclose(path.pooled[1], 0.7 * a.pooled[0] + 0.3 * b.pooled[0], atol=1e-6)


def test_ot_path_is_the_geodesic_and_clip_is_not_shorter():
    a, b = _cond(2, groups=((16, 8),), pooled=None), _cond(3, groups=((16, 8),), pooled=None)
    ts = torch.linspace(0, 1, 6)
    ot_path, _ = conditioning_path(
        a.to(dtype=torch.float64), b.to(dtype=torch.float64), ts, coupling="ot"
    )
    clip_path, (clip,) = conditioning_path(
        a.to(dtype=torch.float64), b.to(dtype=torch.float64), ts, coupling="clip"
    )
    w2 = wasserstein2(a.clouds[0][0].double(), b.clouds[0][0].double())
    assert path_length_w2(ot_path.clouds[0]) == pytest.approx(w2, rel=1e-6)
    assert path_length_w2(clip_path.clouds[0]) >= w2 - 1e-9
    assert torch.equal(clip.perm, torch.arange(16))


def test_random_coupling_is_reproducible_with_a_generator():
    a, b = _cond(4), _cond(5)
    ts = torch.tensor([0.0, 0.5, 1.0])
    p1, c1 = conditioning_path(
        a, b, ts, coupling="random", generator=torch.Generator().manual_seed(7)
    )
    p2, c2 = conditioning_path(
        a, b, ts, coupling="random", generator=torch.Generator().manual_seed(7)
    )
    assert all(torch.equal(x.perm, y.perm) for x, y in zip(c1, c2))
    assert torch.equal(p1.clouds[0], p2.clouds[0])


def test_path_rejects_batches_and_mixed_families():
    with pytest.raises(ValueError, match="one prompt per side"):
        conditioning_path(
            Conditioning.cat([_cond(0), _cond(1)]), _cond(2), torch.tensor([0.0, 1.0])
        )
    with pytest.raises(ValueError, match="different model families"):
        conditioning_path(_cond(0), _cond(1, groups=((7, 5),)), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        conditioning_path(_cond(0), _cond(1), torch.tensor([0.0, 1.5]))


def test_latent_paths():
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(4, 8, 8, generator=g), torch.randn(4, 8, 8, generator=g)
    ts = torch.linspace(0, 1, 5)
    fixed = latent_path(x0, None, ts, method="fixed")
    assert fixed.shape == (5, 4, 8, 8) and all(torch.equal(f, x0) for f in fixed)
    for method in ("cog", "slerp", "lerp"):
        path = latent_path(x0, x1, ts, method=method)
        assert torch.equal(path[0], x0) and torch.equal(path[-1], x1), method
    cog_mid = latent_path(x0, x1, torch.tensor([0.5]), method="cog")[0]
    assert torch.allclose(cog_mid, (x0 + x1) / 2**0.5, atol=1e-6)  # (x0 + x1)/2 / ||(1/2, 1/2)||
    with pytest.raises(ValueError, match="needs a second latent"):
        latent_path(x0, None, ts, method="cog")
    with pytest.raises(ValueError, match="equally spaced"):
        latent_path(x0, x1, torch.tensor([0.0, 0.2, 1.0]), method="nao")
    with pytest.raises(ValueError, match="valid choices are: fixed, cog, slerp, lerp, nao"):
        latent_path(x0, x1, ts, method="spline")


# --- with a tiny real pipeline ------------------------------------------------------------------

SIZE = 32
STEPS = 3


@pytest.fixture(scope="module")
def sd(tiny_pipeline):
    from whichway.models import load_adapter

    return load_adapter(str(tiny_pipeline("sd")), device="cpu")


def test_endpoint_frames_equal_the_plain_pipeline(sd):
    """The t = 0 and t = 1 frames are the plain diffusers pipeline's images for A and B."""
    prompts = ("a photo of a cat", "a red dog on grass")
    cond = sd.encode(list(prompts))
    path, _ = conditioning_path(cond.select(0), cond.select(1), torch.tensor([0.0, 0.5, 1.0]))
    frames = render_frames(
        sd,
        path,
        sd.initial_latent(11, SIZE, SIZE),
        steps=STEPS,
        guidance=5.0,
        height=SIZE,
        width=SIZE,
        batch_size=3,
        progress=False,
    )
    for frame, prompt in ((frames[0], prompts[0]), (frames[-1], prompts[1])):
        plain = sd.pipe(
            prompt,
            generator=torch.Generator("cpu").manual_seed(11),
            num_inference_steps=STEPS,
            guidance_scale=5.0,
            height=SIZE,
            width=SIZE,
            output_type="pt",
        ).images[0]
        assert torch.allclose(frame, plain.float().cpu(), atol=1e-5), (frame - plain).abs().max()
    assert not torch.allclose(frames[1], frames[0], atol=1e-3)  # the middle frame is elsewhere


def test_batched_equals_one_at_a_time_and_streams_every_frame(sd):
    cond = sd.encode(["a photo of a cat", "a red dog on grass"])
    path, _ = conditioning_path(cond.select(0), cond.select(1), torch.linspace(0, 1, 5))
    latent = sd.initial_latent(3, SIZE, SIZE)
    seen: list[int] = []
    ticks: list[tuple[int, int]] = []
    batched = render_frames(
        sd,
        path,
        latent,
        steps=STEPS,
        guidance=5.0,
        height=SIZE,
        width=SIZE,
        batch_size=4,
        on_frame=lambda i, img: seen.append(i),
        on_step=lambda done, total: ticks.append((done, total)),
        progress=False,
    )
    # every denoising step of both batches is reported, with the bar hidden too
    assert ticks == [(k, 2 * STEPS) for k in range(1, 2 * STEPS + 1)]
    single = render_frames(
        sd,
        path,
        latent,
        steps=STEPS,
        guidance=5.0,
        height=SIZE,
        width=SIZE,
        batch_size=1,
        progress=False,
    )
    assert seen == [0, 1, 2, 3, 4]
    assert batched.shape == (5, 3, SIZE, SIZE)
    assert torch.allclose(batched, single, atol=1e-4), (batched - single).abs().max()
    assert (
        render_frames(
            sd,
            path,
            latent,
            steps=1,
            guidance=1.0,
            height=SIZE,
            width=SIZE,
            keep=False,
            progress=False,
        )
        is None
    )


def test_render_frames_rejects_mismatched_latents(sd):
    cond = sd.encode(["a cat"]).expand(3)
    with pytest.raises(ValueError, match="3 conditionings but 2 latents"):
        render_frames(
            sd, cond, torch.zeros(2, 4, 4, 4), steps=1, guidance=1.0, height=SIZE, width=SIZE
        )
    with pytest.raises(ValueError, match="batch_size must be a positive integer or .auto., got 0"):
        render_frames(
            sd,
            cond,
            torch.zeros(4, 4, 4),
            steps=1,
            guidance=1.0,
            height=SIZE,
            width=SIZE,
            batch_size=0,
        )
