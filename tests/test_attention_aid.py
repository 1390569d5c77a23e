"""AID's attention processors against the official formulas (He et al. 2024, code
``QY-H00/attention-interpolation-diffusion``), written here with diffusers' own legacy attention
helpers (``head_to_batch_dim``, ``get_attention_scores``, ``bmm``) as the official processors
compute them, on random diffusers ``Attention`` modules."""

from __future__ import annotations

import pytest
import torch

from whichway.attention import AIDAttnProcessor, AIDControl, aid_attention

TOL = 1e-6


def _module(cross: bool, seed: int = 0):
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    torch.manual_seed(seed)
    attn = Attention(
        32, cross_attention_dim=24 if cross else None, heads=4, dim_head=8, out_bias=True
    ).double()
    attn.set_processor(AttnProcessor2_0())
    return attn


def _inputs(rows: int, cross: bool, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(rows, 10, 32, generator=g, dtype=torch.float64)
    context = torch.randn(rows, 7, 24, generator=g, dtype=torch.float64) if cross else None
    return hidden, context


def _official(attn, hidden, context, coefs, mode, fused):
    """The official Outer/InnerInterpolatedAttnProcessor for one middle row per call: rows of
    the batch [A, m, B], each row's c in (0, c, 1); returns the middle row's output."""
    outs = []
    for i, c in enumerate(coefs.tolist()):
        rows = [0, 2 + i, 1]
        h = hidden[rows]
        ctx = h if context is None else context[rows]
        coef = torch.tensor([0.0, c, 1.0], dtype=h.dtype).reshape(-1, 1, 1)
        query = attn.head_to_batch_dim(attn.to_q(h))
        key, value = attn.to_k(ctx), attn.to_v(ctx)
        k_a, k_b = key[0:1].expand(3, -1, -1), key[-1:].expand(3, -1, -1)
        v_a, v_b = value[0:1].expand(3, -1, -1), value[-1:].expand(3, -1, -1)
        if mode == "inner":
            k_a = k_b = (1 - coef) * k_a + coef * k_b
            v_a = v_b = (1 - coef) * v_a + coef * v_b
        k_a, k_b, v_a, v_b = (attn.head_to_batch_dim(x) for x in (k_a, k_b, v_a, v_b))
        if fused:
            own_k, own_v = attn.head_to_batch_dim(key), attn.head_to_batch_dim(value)
            k_a, k_b = torch.cat([own_k, k_a], -2), torch.cat([own_k, k_b], -2)
            v_a, v_b = torch.cat([own_v, v_a], -2), torch.cat([own_v, v_b], -2)
        out_a = attn.batch_to_head_dim(torch.bmm(attn.get_attention_scores(query, k_a), v_a))
        out_b = attn.batch_to_head_dim(torch.bmm(attn.get_attention_scores(query, k_b), v_b))
        out = (1 - coef) * out_a + coef * out_b if mode == "outer" else out_a
        out = attn.to_out[1](attn.to_out[0](out))
        outs.append(out[1])
    return torch.stack(outs)


def _aid(attn, hidden, context, coefs, mode, fused, warmup=1):
    control = AIDControl(coefs, warmup_calls=warmup)
    control.advance()
    processor = AIDAttnProcessor(control, attn.get_processor(), mode=mode, fused=fused)
    with torch.no_grad():
        return processor(attn, hidden, context)


@pytest.mark.parametrize("mode", ["outer", "inner"])
@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("cross", [False, True])
def test_processor_equals_the_official_formula(mode, fused, cross):
    attn = _module(cross)
    coefs = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    hidden, context = _inputs(5, cross)
    with torch.no_grad():
        expected = _official(attn, hidden, context, coefs, mode, fused)
    out = _aid(attn, hidden, context, coefs, mode, fused)
    assert torch.allclose(out[2:], expected, atol=TOL, rtol=0)
    # the endpoint rows attend plainly
    with torch.no_grad():
        plain = attn.get_processor()(attn, hidden, context)
    assert torch.allclose(out[:2], plain[:2], atol=TOL, rtol=0)
    assert not torch.allclose(out[2:], plain[2:], atol=1e-3)


@pytest.mark.parametrize("mode", ["outer", "inner"])
@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("cross", [False, True])
def test_at_c0_and_c1_a_row_attends_like_the_endpoint(mode, fused, cross):
    """A middle row holding the endpoint's own inputs at c = 0 (A) or c = 1 (B) gets plain
    attention: duplicated keys/values leave softmax attention unchanged."""
    attn = _module(cross, seed=3)
    hidden, context = _inputs(2, cross, seed=4)
    rows = [0, 1, 0, 1]
    hidden = hidden[rows]
    context = None if context is None else context[rows]
    out = _aid(attn, hidden, context, torch.tensor([0.0, 1.0]), mode, fused)
    with torch.no_grad():
        plain = attn.get_processor()(attn, hidden, context)
    assert torch.allclose(out, plain, atol=TOL, rtol=0)


def test_unconditional_half_and_inactive_calls_are_plain():
    attn = _module(cross=True)
    hidden, context = _inputs(8, cross=True)  # [uncond x 4; cond A, B, m1, m2]
    coefs = torch.tensor([0.3, 0.6], dtype=torch.float64)
    with torch.no_grad():
        plain = attn.get_processor()(attn, hidden, context)
    out = _aid(attn, hidden, context, coefs, "outer", True)
    assert torch.allclose(out[:6], plain[:6], atol=TOL, rtol=0)
    assert not torch.allclose(out[6:], plain[6:], atol=1e-3)
    expected = _official(attn, hidden[4:], context[4:], coefs, "outer", True)
    assert torch.allclose(out[6:], expected, atol=TOL, rtol=0)
    # after the warmup the processor hands every call to the plain processor, bit for bit
    assert torch.equal(_aid(attn, hidden, context, coefs, "outer", True, warmup=0), plain)


@pytest.mark.parametrize("fused", [False, True])
def test_inner_cross_attention_is_attention_on_the_lerped_condition(fused):
    """to_k / to_v have no bias, so inner AID on cross-attention equals plain cross-attention on
    (1 - c) E_A + c E_B, fused or not (the identity with paper A's row-order path)."""
    attn = _module(cross=True, seed=5)
    assert attn.to_k.bias is None and attn.to_v.bias is None
    hidden, context = _inputs(4, cross=True, seed=6)
    coefs = torch.tensor([0.25, 0.7], dtype=torch.float64)
    c = coefs.reshape(-1, 1, 1)
    context = torch.cat([context[:2], (1 - c) * context[0:1] + c * context[1:2]])
    out = _aid(attn, hidden, context, coefs, "inner", fused)
    with torch.no_grad():
        plain = attn.get_processor()(attn, hidden, context)
    assert torch.allclose(out, plain, atol=TOL, rtol=0)


def test_aid_attention_rejects_unknown_modes():
    q = torch.zeros(1, 1, 2, 4)
    with pytest.raises(ValueError, match="unknown AID mode"):
        aid_attention(q, q, q, torch.zeros(1), q, q, q, q, mode="middle", scale=1.0)


def _joint_module(seed: int = 0):
    from diffusers.models.attention_processor import Attention, JointAttnProcessor2_0

    torch.manual_seed(seed)
    attn = Attention(
        query_dim=32, added_kv_proj_dim=24, dim_head=8, heads=4, out_dim=32,
        context_pre_only=False, bias=True, processor=JointAttnProcessor2_0(),
    ).double()  # fmt: skip
    return attn


def _joint_reference(attn, hidden, context, coefs, mode, fused):
    """The joint-attention AID formula, written out per middle row with softmax: keys/values
    K*_E = [K_E,img; K_m,txt] for E = A (row 0), B (row 1); fused prepends the row's own."""
    heads = attn.heads

    def split(x):  # (n, H*d) -> (H, n, d)
        return x.view(x.shape[0], heads, -1).transpose(0, 1)

    def attn_(q, k, v):
        w = torch.softmax(q @ k.transpose(-1, -2) * attn.scale, dim=-1)
        return w @ v

    proj = []
    for r in range(hidden.shape[0]):
        q = torch.cat([split(attn.to_q(hidden[r])), split(attn.add_q_proj(context[r]))], 1)
        k = torch.cat([split(attn.to_k(hidden[r])), split(attn.add_k_proj(context[r]))], 1)
        v = torch.cat([split(attn.to_v(hidden[r])), split(attn.add_v_proj(context[r]))], 1)
        proj.append((q, k, v))
    n = hidden.shape[1]
    outs = []
    for i, c in enumerate(coefs.tolist()):
        q, k, v = proj[2 + i]
        ka = torch.cat([proj[0][1][:, :n], k[:, n:]], 1)
        va = torch.cat([proj[0][2][:, :n], v[:, n:]], 1)
        kb = torch.cat([proj[1][1][:, :n], k[:, n:]], 1)
        vb = torch.cat([proj[1][2][:, :n], v[:, n:]], 1)
        if mode == "inner":
            ka = kb = (1 - c) * ka + c * kb
            va = vb = (1 - c) * va + c * vb
        if fused:
            ka, kb = torch.cat([k, ka], 1), torch.cat([k, kb], 1)
            va, vb = torch.cat([v, va], 1), torch.cat([v, vb], 1)
        out = (1 - c) * attn_(q, ka, va) + c * attn_(q, kb, vb)
        out = out.transpose(0, 1).reshape(q.shape[1], -1)
        outs.append((attn.to_out[0](out[:n]), attn.to_add_out(out[n:])))
    return torch.stack([o[0] for o in outs]), torch.stack([o[1] for o in outs])


@pytest.mark.parametrize("mode", ["outer", "inner"])
@pytest.mark.parametrize("fused", [False, True])
def test_joint_processor_equals_the_joint_formula_and_is_plain_at_the_ends(mode, fused):
    from whichway.attention.aid import AIDJointAttnProcessor

    attn = _joint_module()
    g = torch.Generator().manual_seed(2)
    hidden = torch.randn(5, 9, 32, generator=g, dtype=torch.float64)
    context = torch.randn(5, 6, 24, generator=g, dtype=torch.float64)
    coefs = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    control = AIDControl(coefs, warmup_calls=1)
    control.advance()
    processor = AIDJointAttnProcessor(control, attn.get_processor(), mode=mode, fused=fused)
    with torch.no_grad():
        image, text = processor(attn, hidden, context)
        plain_image, plain_text = attn.get_processor()(attn, hidden, context)
        ref_image, ref_text = _joint_reference(attn, hidden, context, coefs, mode, fused)
    assert torch.allclose(image[2:], ref_image, atol=TOL, rtol=0)
    assert torch.allclose(text[2:], ref_text, atol=TOL, rtol=0)
    assert torch.allclose(image[:2], plain_image[:2], atol=TOL, rtol=0)
    assert not torch.allclose(image[2:], plain_image[2:], atol=1e-3)
    # rows holding A's inputs at c = 0 and B's at c = 1 attend plainly
    rows = [0, 1, 0, 1]
    control.coefs = torch.tensor([0.0, 1.0], dtype=torch.float64)
    with torch.no_grad():
        image, text = processor(attn, hidden[rows], context[rows])
        plain_image, plain_text = attn.get_processor()(attn, hidden[rows], context[rows])
    assert torch.allclose(image, plain_image, atol=TOL, rtol=0)
    assert torch.allclose(text, plain_text, atol=TOL, rtol=0)


@pytest.mark.parametrize("single", [False, True])
@pytest.mark.parametrize("mode", ["outer", "inner"])
def test_flux_processor_replaces_only_the_image_tokens(single, mode):
    """Flux ([text; image], rotary embedding): a middle row holding A's image tokens with its
    own text at c = 0 (B's at c = 1) attends exactly as plainly, unfused: the end frame's keys
    replace the image tokens only, at the same rotary positions."""
    from diffusers.models.embeddings import FluxPosEmbed
    from diffusers.models.transformers.transformer_flux import FluxAttention, FluxAttnProcessor

    from whichway.attention.aid import AIDFluxAttnProcessor

    torch.manual_seed(0)
    attn = FluxAttention(
        query_dim=32, heads=4, dim_head=8, added_kv_proj_dim=None if single else 32,
        pre_only=single, processor=FluxAttnProcessor(),
    ).double()  # fmt: skip
    g = torch.Generator().manual_seed(1)
    n_text, n_image = 5, 9
    text = torch.randn(2, n_text, 32, generator=g, dtype=torch.float64)
    image = torch.randn(2, n_image, 32, generator=g, dtype=torch.float64)
    other = torch.randn(2, n_text, 32, generator=g, dtype=torch.float64)  # the middle rows' text
    ids = torch.cat([torch.zeros(n_text, 3), torch.rand(n_image, 3, generator=g) * 8])
    rotary = tuple(x.double() for x in FluxPosEmbed(theta=10000, axes_dim=[2, 2, 4])(ids))
    rows_text, rows_image = torch.cat([text, other]), torch.cat([image, image])
    control = AIDControl(torch.tensor([0.0, 1.0]), warmup_calls=1, text_tokens=n_text)
    control.advance()
    aid = AIDFluxAttnProcessor(control, attn.get_processor(), mode=mode, fused=False)

    def run(processor):
        with torch.no_grad():
            if single:
                return processor(attn, torch.cat([rows_text, rows_image], 1), None, None, rotary)
            return torch.cat(processor(attn, rows_image, rows_text, None, rotary)[::-1], 1)

    plain, out = run(attn.get_processor()), run(aid)
    assert torch.allclose(out, plain, atol=TOL, rtol=0)
    rows_image = torch.cat([image, image.flip(0)])  # the middle rows now hold the other image
    assert not torch.allclose(run(aid)[2:], run(attn.get_processor())[2:], atol=1e-3)


def test_separate_negative_calls_are_plain_and_not_counted():
    """With the negative branch as its own call (Flux's true CFG), the pipeline's "uncond"
    calls are inactive and do not advance the warmup; an unlabelled call is an error."""
    control = AIDControl(torch.tensor([0.5]), warmup_calls=2, separate_negative=True)
    seen = []
    for branch in ("cond", "uncond", "cond", "uncond", "cond"):
        control.branch = branch
        control.advance()
        seen.append(control.active)
    assert seen == [True, False, True, False, False] and control.calls == 3
    control.branch = None
    with pytest.raises(RuntimeError, match="label its denoiser calls"):
        control.advance()


def test_branch_labels_are_taken_off_when_the_render_raises():
    """labelled_branches passes each call's label to control.branch and puts the denoiser's
    own cache_context back on exit, also when the block raises (a failed or cancelled render)
    and when the instance already had its own; a denoiser that cannot label its calls is
    refused up front when the negative branch is a call of its own."""
    import contextlib

    from whichway.attention.aid import labelled_branches

    class Labelled(torch.nn.Module):
        @contextlib.contextmanager
        def cache_context(self, name):
            yield

    denoiser, control = Labelled(), AIDControl(torch.tensor([0.5]), warmup_calls=1)
    seen = []
    with pytest.raises(KeyError), labelled_branches(denoiser, control):
        with denoiser.cache_context("uncond"):
            seen.append(control.branch)
        seen.append(control.branch)
        raise KeyError("cancelled")
    assert seen == ["uncond", None] and "cache_context" not in vars(denoiser)
    own = denoiser.cache_context
    denoiser.cache_context = own  # an instance's own method is restored, not deleted
    with labelled_branches(denoiser, control):
        assert denoiser.cache_context is not own
    assert vars(denoiser)["cache_context"] == own
    control = AIDControl(torch.tensor([0.5]), warmup_calls=1, separate_negative=True)
    refused = pytest.raises(RuntimeError, match="label its denoiser calls")
    with refused, labelled_branches(torch.nn.Linear(1, 1), control):
        pass
