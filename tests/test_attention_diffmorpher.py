"""DiffMorpher's pieces against the official formulas (Zhang et al. 2024, code
``Kevin-thu/DiffMorpher``: ``utils/model_utils.slerp``/``calc_mean_std``, ``utils/lora_utils.
load_lora``, ``model.LoadProcessor``), restated here from the official code, and the batched
rendering on the tiny SD model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from whichway.attention.diffmorpher import (
    InterpolatedLoRA,
    KVMixProcessor,
    RowAlphas,
    adain_slerp,
    diffmorpher_hooks,
    fit_lora,
    lerp_lora,
    lora_loss,
)
from whichway.attention.methods import DiffMorpherSettings

TOL = 1e-6


def _official_slerp_adain(p0, p1, fract):
    """The official ``slerp(p0, p1, fract, adain=True)`` for one (1, C, h, w) pair."""

    def calc_mean_std(feat, eps=1e-5):
        n, c = feat.shape[:2]
        var = feat.view(n, c, -1).var(dim=2) + eps
        return feat.view(n, c, -1).mean(dim=2).view(n, c, 1, 1), var.sqrt().view(n, c, 1, 1)

    p0, p1 = p0.double(), p1.double()
    mean1, std1 = calc_mean_std(p0)
    mean2, std2 = calc_mean_std(p1)
    mean = mean1 * (1 - fract) + mean2 * fract
    std = std1 * (1 - fract) + std2 * fract
    dot = (torch.sum(p0 * p1) / (torch.linalg.norm(p0) * torch.linalg.norm(p1))).clamp(
        -1 + 1e-7, 1 - 1e-7
    )
    theta_0 = torch.arccos(dot)
    s0 = torch.sin(theta_0 - theta_0 * fract) / torch.sin(theta_0)
    s1 = torch.sin(theta_0 * fract) / torch.sin(theta_0)
    return F.instance_norm(p0 * s0 + p1 * s1) * std + mean


def test_adain_slerp_is_the_official_formula():
    g = torch.Generator().manual_seed(0)
    z_a = torch.randn(4, 8, 8, generator=g, dtype=torch.float64) * 1.3 + 0.2
    z_b = torch.randn(4, 8, 8, generator=g, dtype=torch.float64) * 0.7 - 0.1
    alphas = torch.tensor([0.0, 0.2, 0.5, 0.9, 1.0], dtype=torch.float64)
    ours = adain_slerp(z_a, z_b, alphas)
    for i, a in enumerate(alphas.tolist()):
        ref = _official_slerp_adain(z_a[None], z_b[None], a)[0]
        torch.testing.assert_close(ours[i], ref, atol=TOL, rtol=0)


def _loras(seed: int, names=("l.to_q", "l.to_k")):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name in names:
        out[f"{name}.down"] = torch.randn(3, 6, generator=g, dtype=torch.float64)
        out[f"{name}.up"] = torch.randn(5, 3, generator=g, dtype=torch.float64)
    return out


def test_lerp_lora_interpolates_each_factor():
    a, b = _loras(0), _loras(1)
    mixed = lerp_lora(a, b, 0.3)
    for key in a:
        torch.testing.assert_close(mixed[key], 0.7 * a[key] + 0.3 * b[key], atol=TOL, rtol=0)
    with pytest.raises(ValueError, match="different layers"):
        lerp_lora(a, _loras(1, names=("l.to_v",)), 0.5)


def test_interpolated_lora_rows_equal_the_official_per_frame_lora():
    """One batch with a different α per row equals, row by row, the official frame: the linear
    layer with down_α, up_α = lerp_lora(A, B, α) loaded (W x + up_α down_α x)."""
    torch.manual_seed(0)
    base = torch.nn.Linear(6, 5, dtype=torch.float64)
    a, b = _loras(0, ("l",)), _loras(1, ("l",))
    alphas = torch.tensor([0.0, 1.0, 0.25, 0.6], dtype=torch.float64)
    layer = InterpolatedLoRA(
        base,
        RowAlphas(alphas),
        torch.stack([a["l.down"], b["l.down"]]),
        torch.stack([a["l.up"], b["l.up"]]),
    )
    x = torch.randn(8, 7, 6, dtype=torch.float64)  # two halves (guidance) of 4 rows
    out = layer(x)
    for n in range(8):
        mix = lerp_lora(a, b, float(alphas[n % 4]))
        ref = base(x[n]) + x[n] @ mix["l.down"].T @ mix["l.up"].T
        torch.testing.assert_close(out[n], ref, atol=TOL, rtol=0)


def test_kv_mix_processor_is_the_official_load_processor():
    """Middle rows: plain attention with encoder_hidden_states = (1 - α) h_A + α h_B (the
    official LoadProcessor at attn_beta 0); endpoint rows and inactive calls: plain."""
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    from whichway.attention.aid import AIDControl

    torch.manual_seed(0)
    attn = Attention(32, heads=4, dim_head=8, out_bias=True).double()
    plain = AttnProcessor2_0()
    coefs = torch.tensor([0.3, 0.8], dtype=torch.float64)
    control = AIDControl(coefs, warmup_calls=1)
    attn.set_processor(KVMixProcessor(control, plain))
    h = torch.randn(8, 10, 32, dtype=torch.float64)  # [uncond A, B, m1, m2; cond A, B, m1, m2]
    control.advance()
    out = attn(h)
    for half in (0, 4):
        for j in (0, 1):
            torch.testing.assert_close(out[half + j], plain(attn, h[half + j : half + j + 1])[0])
        for i, c in enumerate(coefs.tolist()):
            row = half + 2 + i
            ctx = (1 - c) * h[half] + c * h[half + 1]
            ref = plain(attn, h[row : row + 1], encoder_hidden_states=ctx[None])[0]
            torch.testing.assert_close(out[row], ref, atol=TOL, rtol=0)
    control.advance()  # call 1 >= warmup: plain
    torch.testing.assert_close(attn(h), plain(attn, h), atol=TOL, rtol=0)


@pytest.mark.parametrize(("lamb", "steps", "calls"), [(0.6, 50, 30), (0.6, 4, 3), (0.0, 4, 0)])
def test_warmup_calls_are_the_official_count(lamb, steps, calls):
    """The official ``self.id < 50 * self.lamd``: calls i < λ·steps."""
    assert DiffMorpherSettings(attn_lambda=lamb).warmup_calls(steps) == calls


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lora_rank": 0}, "--lora-rank"),
        ({"lora_steps": -1}, "--lora-steps"),
        ({"lora_steps": 10**9}, r"--lora-steps must be a whole number in \[0, 100000\]"),
        ({"lora_rank": 4096}, r"--lora-rank must be a whole number in \[1, 1024\]"),
        ({"lora_lr": 0.0}, "--lora-lr"),
        ({"lora_lr": 2.0}, "--lora-lr"),
        ({"attn_lambda": 1.5}, "--attn-lambda"),
    ],
)
def test_settings_out_of_range_are_one_line_errors(kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        DiffMorpherSettings(**kwargs)
    assert "\n" not in str(err.value)


def _image(size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, size, size, generator=g) * 2 - 1


def test_fitted_lora_lowers_its_training_loss(tiny_adapter, tiny_pipeline):
    adapter = tiny_adapter("sd")
    pipe = adapter.pipe
    image = _image(32, 3)
    embeds = adapter.encode(["a red cube"]).clouds[0]
    # the same 32 draws of (x0, ε, t) before and after: a paired comparison
    before = lora_loss(pipe.unet, pipe.vae, pipe.scheduler, image, embeds, None, draws=32)
    fit = fit_lora(
        pipe.unet,
        pipe.vae,
        pipe.scheduler,
        image,
        embeds,
        rank=4,
        steps=30,
        lr=1e-2,
        generator=torch.Generator().manual_seed(0),
    )
    after = lora_loss(pipe.unet, pipe.vae, pipe.scheduler, image, embeds, fit.weights, draws=32)
    assert len(fit.losses) == 30
    # the studio's disk/memory figure of a LoRA file, from the UNet config alone, is the fit's
    from whichway.budget import lora_file_bytes

    assert lora_file_bytes(tiny_pipeline("sd"), 4) == 4 * sum(
        w.numel() for w in fit.weights.values()
    )
    # a random tiny UNet predicts noise of variance 1 from a 32px image: the LoRA can only take
    # a few percent off (measured 1.099 -> 1.064)
    assert after < 0.98 * before, (before, after)
    # the UNet is left as it was
    again = lora_loss(pipe.unet, pipe.vae, pipe.scheduler, image, embeds, None, draws=32)
    assert again == before


def test_batched_render_mixes_kv_for_the_first_lambda_calls_only(tiny_adapter):
    """Rows [A, B, m] in one batch: the up-block self-attention mix acts on calls i < λ·steps
    (counted), the LoRAs are interpolated per row, and the end frames are the plain renders
    with their own LoRA."""
    from whichway.attention.batch import render_aid_batch
    from whichway.attention.diffmorpher import KVMixProcessor as Mix

    adapter = tiny_adapter("sd")
    pipe = adapter.pipe
    unet = pipe.unet
    names = [n for n, m in unet.named_modules() if n.endswith("to_q")]
    g = torch.Generator().manual_seed(1)
    lora_a = {}
    lora_b = {}
    for n in names:
        lin = unet.get_submodule(n)
        for lora in (lora_a, lora_b):
            for t in ("to_q", "to_k", "to_v", "to_out.0"):
                key = n[: -len("to_q")] + t
                shape_in = unet.get_submodule(key).in_features
                shape_out = unet.get_submodule(key).out_features
                lora[f"{key}.down"] = torch.randn(2, shape_in, generator=g) * 0.05
                lora[f"{key}.up"] = torch.randn(shape_out, 2, generator=g) * 0.05
        del lin
    settings = DiffMorpherSettings(attn_lambda=0.6)
    ends = adapter.encode(["a red cube", "a blue ball"])
    cond = adapter.encode(["a red cube and a blue ball"])
    end_latents = torch.stack([adapter.initial_latent(s, 32, 32) for s in (0, 1)])
    mid_latent = adain_slerp(end_latents[0], end_latents[1], torch.tensor([0.5]))
    mixed_calls = []
    original = Mix.__call__

    def counting(self, attn, hidden_states, encoder_hidden_states=None, *a, **k):
        if encoder_hidden_states is None and self.control.active:
            mixed_calls.append(self.control.current)
        return original(self, attn, hidden_states, encoder_hidden_states, *a, **k)

    Mix.__call__ = counting
    try:
        images = render_aid_batch(
            adapter,
            settings,
            ends,
            end_latents,
            cond,
            mid_latent,
            torch.tensor([0.5]),
            steps=4,
            guidance=1.0,
            height=32,
            width=32,
            hooks=diffmorpher_hooks(lora_a, lora_b),
        )
    finally:
        Mix.__call__ = original
    up_self = sum(
        1 for n, m in unet.named_modules() if n.startswith("up_blocks") and n.endswith("attn1")
    )
    assert up_self > 0
    assert sorted(set(mixed_calls)) == [0, 1, 2]  # 4 steps, λ = 0.6: i < 2.4
    assert len(mixed_calls) == 3 * up_self
    assert images.shape == (1, 3, 32, 32)
    # the layers are back: a plain render after equals a plain render before
    from whichway.attention.diffmorpher import interpolated_loras

    assert not any(isinstance(m, InterpolatedLoRA) for m in unet.modules())
    with interpolated_loras(unet, lora_a, lora_b, RowAlphas(torch.zeros(1))):
        end_a = adapter.render(
            ends.select([0]), end_latents[:1], steps=4, guidance=1.0, height=32, width=32
        )
    both = render_aid_batch(
        adapter,
        settings,
        ends,
        end_latents,
        ends.select([0]),
        end_latents[:1],
        torch.tensor([0.0]),
        steps=4,
        guidance=1.0,
        height=32,
        width=32,
        hooks=diffmorpher_hooks(lora_a, lora_b),
    )
    torch.testing.assert_close(both, end_a, atol=1e-5, rtol=0)
