"""AID rendering on tiny real pipelines: the endpoint rows are denoised beside every batch, and
the exact identities of AID with whichway's own paths hold."""

from __future__ import annotations

import pytest
import torch

from whichway.attention import AIDSettings, AttentionPath, check_family, check_method
from whichway.models.base import Conditioning
from whichway.render import conditioning_path, latent_path, render_frames

SIZE = 32
STEPS = 4
PROMPTS = ("a photo of a cat", "a red dog on grass")
TS = torch.linspace(0, 1, 5, dtype=torch.float64)


@pytest.fixture(scope="module")
def sd(tiny_pipeline):
    from whichway.models import load_adapter

    return load_adapter(str(tiny_pipeline("sd")), device="cpu")


CHANGED = 5e-4
"""A frame differs from another by more than this (the tiny model's AID effects are ~3e-3)."""

_PLAIN: dict[tuple[int, str, float], torch.Tensor] = {}


def _plain(adapter, coupling="clip", guidance=5.0):
    """The plain morph's frames, rendered once per module run."""
    key = (id(adapter), coupling, guidance)
    if key not in _PLAIN:
        _PLAIN[key] = _render(adapter, coupling, guidance=guidance)
    return _PLAIN[key]


def _render(
    adapter, coupling="clip", aid=None, *, batch_size=5, guidance=5.0, steps=STEPS, negative=None
):
    cond = adapter.encode(list(PROMPTS))

    def path(times):
        gen = torch.Generator().manual_seed(0)
        return conditioning_path(cond.select(0), cond.select(1), times, coupling=coupling,
                                 generator=gen)[0]  # fmt: skip

    ends = torch.stack([adapter.initial_latent(s, SIZE, SIZE) for s in (1, 2)])
    attention = None
    if aid is not None:
        attention = AttentionPath(aid, path(torch.tensor([0.0, 1.0])), ends, TS)
    return render_frames(
        adapter,
        path(TS),
        latent_path(ends[0], ends[1], TS, method="slerp"),
        steps=steps,
        guidance=guidance,
        height=SIZE,
        width=SIZE,
        batch_size=batch_size,
        progress=False,
        attention=attention,
        negative=negative,
    )


@pytest.mark.parametrize("mode", ["outer", "inner"])
def test_warmup_zero_is_the_plain_method_exactly(sd, mode):
    plain = _plain(sd)
    assert torch.equal(_render(sd, aid=AIDSettings(mode=mode, warmup_ratio=0.0)), plain)


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("coupling", ["clip", "ot"])
def test_inner_cross_attention_only_is_the_coupling_s_own_morph(sd, coupling, fused):
    """to_k / to_v are linear without bias: AID-inner on cross-attention with a coupling's
    pairing renders that coupling's plain morph (paper A's clip or OT path)."""
    aid = AIDSettings(mode="inner", fused=fused, warmup_ratio=1.0, layers="cross")
    plain = _plain(sd, coupling)
    frames = _render(sd, coupling, aid)
    assert torch.allclose(frames, plain, atol=2e-6, rtol=0), (frames - plain).abs().max()
    # the pairing matters: the other coupling's morph differs by ~8e-5 on the tiny model
    other = _plain(sd, "ot" if coupling == "clip" else "clip")
    assert (frames[1:-1] - other[1:-1]).abs().amax(dim=(1, 2, 3)).min() > 2e-5


@pytest.mark.parametrize("mode", ["outer", "inner"])
def test_self_attention_changes_the_middle_and_never_the_ends(sd, mode):
    aid = AIDSettings(mode=mode, fused=True, warmup_ratio=1.0, layers="self")
    plain = _plain(sd)
    frames = _render(sd, aid=aid)
    assert torch.allclose(frames[[0, -1]], plain[[0, -1]], atol=2e-6, rtol=0)
    for k in range(1, len(TS) - 1):
        assert not torch.allclose(frames[k], plain[k], atol=CHANGED), k


def test_frames_do_not_depend_on_the_batching_and_cost_k_plus_two_rows(sd):
    """Every batch carries the same endpoint rows, so a frame is the same in any batch; under
    guidance a batch of k frames is one denoiser call of 2 (k + 2) rows per step."""
    aid = AIDSettings(mode="outer", fused=True, warmup_ratio=0.5, layers="both")
    rows: list[int] = []
    hook = sd.pipe.unet.register_forward_pre_hook(lambda _m, a: rows.append(a[0].shape[0]))
    try:
        whole = _render(sd, aid=aid, batch_size=5)
    finally:
        hook.remove()
    # t = 0 and t = 1 are the endpoint rows themselves: 3 middle rows + 2 endpoint rows, twice
    assert set(rows) == {2 * (3 + 2)} and len(rows) >= STEPS  # PNDM: one extra call
    pieces = _render(sd, aid=aid, batch_size=2)
    assert torch.allclose(whole, pieces, atol=1e-5, rtol=0)
    assert not torch.allclose(whole, _plain(sd), atol=CHANGED)


def test_without_guidance_every_row_is_conditional(sd):
    aid = AIDSettings(mode="outer", warmup_ratio=1.0, layers="self")
    plain = _plain(sd, guidance=1.0)
    frames = _render(sd, aid=aid, guidance=1.0)
    assert torch.allclose(frames[[0, -1]], plain[[0, -1]], atol=2e-6, rtol=0)
    assert not torch.allclose(frames[2], plain[2], atol=CHANGED)


def test_sdxl_identities(tiny_pipeline):
    from whichway.models import load_adapter

    sdxl = load_adapter(str(tiny_pipeline("sdxl")), device="cpu")
    plain = _render(sdxl, "ot")
    cross = AIDSettings(mode="inner", fused=True, warmup_ratio=1.0, layers="cross")
    assert torch.allclose(_render(sdxl, "ot", cross), plain, atol=2e-6, rtol=0)
    frames = _render(sdxl, "ot", AIDSettings(warmup_ratio=1.0))
    assert torch.allclose(frames[[0, -1]], plain[[0, -1]], atol=2e-6, rtol=0)
    assert not torch.allclose(frames[2], plain[2], atol=CHANGED)


def test_method_checks_are_one_line_errors():
    check_method("aid-outer", 0.5, "both", None)
    with pytest.raises(ValueError, match=r"--warmup-ratio must lie in \[0, 1\]"):
        check_method("aid-inner", 1.5, "both", None)
    with pytest.raises(ValueError, match="use --method paid"):
        check_method("aid-outer", 0.5, "both", "a dog driving a car")
    with pytest.raises(ValueError, match="needs a guide prompt"):
        check_method("paid", 0.5, "both", None)
    with pytest.raises(ValueError, match="method"):
        check_method("no-such-method", 0.5, "both", None)
    check_method("diffmorpher", 0.5, "both", None)  # a method since DiffMorpher landed
    check_family("aid-outer", "sdxl")
    with pytest.raises(ValueError, match=r"sd, sdxl, sd3, flux models, not kandinsky"):
        check_family("aid-outer", "kandinsky")
    with pytest.raises(ValueError, match="flux has one joint attention per block"):
        check_family("aid-outer", "flux", "cross")


def test_compare_adds_attention_rows_on_the_ot_path(sd):
    from whichway.compare import compare_couplings

    ts = (0.0, 0.5, 1.0)
    options = {"seed": 1, "steps": STEPS, "guidance": 4.0, "height": SIZE, "width": SIZE}
    result = compare_couplings(
        sd, *PROMPTS, ts, methods=("ot",), attention=("aid-inner", "paid"),
        guide_prompt="a cat and a dog", **options,
    )  # fmt: skip
    assert list(result.frames) == ["ot", "aid-inner", "paid"]
    ot = result.frames["ot"]
    for m in ("aid-inner", "paid"):
        assert torch.equal(result.frames[m][[0, -1]], ot[[0, -1]])  # shared end frames
        # one shared seed and AID on the first half of the steps: a change of ~6e-5 on the tiny
        # model, above the float noise (2e-6) of the identities above
        assert (result.frames[m][1] - ot[1]).abs().max() > 2e-5
    # the aid-inner row is AID's render of the OT path with the official defaults
    cond = sd.encode(list(PROMPTS))
    path, _ = conditioning_path(cond.select(0), cond.select(1), torch.tensor(ts), coupling="ot")
    latent = sd.initial_latent(1, SIZE, SIZE)
    attention = AttentionPath(
        AIDSettings(mode="inner"), path.select([0, 2]), torch.stack([latent, latent]),
        torch.tensor(ts),
    )  # fmt: skip
    direct = render_frames(
        sd, path, latent, steps=STEPS, guidance=4.0, height=SIZE, width=SIZE, progress=False,
        attention=attention,
    )  # fmt: skip
    assert torch.allclose(result.frames["aid-inner"], direct, atol=2e-6, rtol=0)
    assert [row["coupling"] for row in result.summary()] == ["ot", "aid-inner", "paid"]
    with pytest.raises(ValueError, match="needs a guide prompt"):
        compare_couplings(sd, *PROMPTS, ts, attention=("paid",), **options)
    # other AID settings: the row is AID's render with them, and compare.json's settings say so
    asked = {"warmup_ratio": 0.25, "aid_layers": "self", "fused": False}
    other = compare_couplings(sd, *PROMPTS, ts, methods=("ot",), attention=("aid-inner",),
                              **asked, **options)  # fmt: skip
    aid = AIDSettings(mode="inner", warmup_ratio=0.25, layers="self", fused=False)
    attention = AttentionPath(aid, path.select([0, 2]), torch.stack([latent, latent]),
                              torch.tensor(ts))  # fmt: skip
    direct = render_frames(
        sd, path, latent, steps=STEPS, guidance=4.0, height=SIZE, width=SIZE, progress=False,
        attention=attention,
    )  # fmt: skip
    assert torch.allclose(other.frames["aid-inner"], direct, atol=2e-6, rtol=0)
    assert (other.frames["aid-inner"][1] - result.frames["aid-inner"][1]).abs().max() > 2e-5
    assert {k: other.settings[k] for k in asked} == asked
    with pytest.raises(ValueError, match="warmup_ratio set.s. how AID acts; add aid-outer"):
        compare_couplings(sd, *PROMPTS, ts, warmup_ratio=0.25, **options)
    with pytest.raises(ValueError, match="^fused must be True or False, got 'no'$"):
        compare_couplings(sd, *PROMPTS, ts, attention=("aid-inner",), fused="no", **options)


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_joint_attention_families(tiny_adapter, family):
    """SD3's and Flux's joint attention: warmup 0 is the plain morph exactly; AID changes the
    middle frames and never the end frames."""
    model = tiny_adapter(family)
    plain = _render(model, "ot")
    assert torch.equal(_render(model, "ot", AIDSettings(warmup_ratio=0.0)), plain)
    for mode in ("outer", "inner"):
        frames = _render(model, "ot", AIDSettings(mode=mode, warmup_ratio=1.0))
        assert torch.allclose(frames[[0, -1]], plain[[0, -1]], atol=2e-6, rtol=0)
        assert (frames[1:-1] - plain[1:-1]).abs().amax(dim=(1, 2, 3)).min() > 2e-5, mode


def test_flux_true_cfg_acts_on_the_conditional_calls_of_the_warmup_steps(tiny_adapter, monkeypatch):
    """Flux's true CFG calls the transformer twice per step (conditional, then negative): warmup
    0 is the plain true-CFG morph exactly; a warmup of both steps changes the middle frames and
    not the end frames, and AID acts in exactly the conditional calls (the warmup counts steps,
    not transformer calls; the negative branch attends plainly)."""
    import whichway.attention.aid as aid

    model = tiny_adapter("flux")
    monkeypatch.setattr(model, "true_cfg_scale", 3.0)
    negative = model.encode_negative("a blurry photo")
    negative_embeds = model._embeds(negative, "negative")[0]

    def render(aid_settings=None):
        return _render(model, "ot", aid_settings, steps=2, guidance=2.0, negative=negative)

    plain = render()
    assert torch.equal(render(AIDSettings(warmup_ratio=0.0)), plain)

    calls: list[bool] = []  # per transformer call: is it the negative branch?
    acted: list[int] = []  # the transformer call during which AID attention ran, per layer call
    transformer = model.pipe.transformer

    def record(_, args, kwargs):
        context = kwargs["encoder_hidden_states"]
        calls.append(bool((context == negative_embeds.to(context)).all()))

    joint = aid._joint_aid
    monkeypatch.setattr(aid, "_joint_aid", lambda *a: acted.append(len(calls) - 1) or joint(*a))
    hook = transformer.register_forward_pre_hook(record, with_kwargs=True)
    try:
        frames = render(AIDSettings(warmup_ratio=1.0))  # both steps
    finally:
        hook.remove()
    assert calls == [False, True, False, True]  # the pipeline's order: conditional, negative
    layers = len(transformer.transformer_blocks) + len(transformer.single_transformer_blocks)
    assert acted == [0] * layers + [2] * layers  # each conditional call, every layer once
    assert "cache_context" not in vars(transformer)  # the label hook is taken off again
    assert torch.allclose(frames[[0, -1]], plain[[0, -1]], atol=2e-6, rtol=0)
    assert (frames[1:-1] - plain[1:-1]).abs().amax(dim=(1, 2, 3)).min() > 2e-5


def test_several_segments_in_one_batch_equal_each_segment_alone(sd):
    """A batch spanning two segments (a travel's) carries each segment's endpoints: frames equal
    those of each segment rendered alone, and only the endpoints in use are denoised."""
    from whichway.attention import render_aid_batch

    cond = sd.encode(["a cat", "a dog", "a red car"])
    latent = sd.initial_latent(4, SIZE, SIZE)
    ends_latents = torch.stack([latent] * 3)
    aid = AIDSettings(mode="outer", warmup_ratio=1.0, layers="self")
    options = {"steps": STEPS, "guidance": 5.0, "height": SIZE, "width": SIZE}
    ts = torch.tensor([0.3, 0.6], dtype=torch.float64)

    def middle(k):
        return conditioning_path(cond.select(k), cond.select(k + 1), ts, coupling="clip")[0]

    rows: list[int] = []
    hook = sd.pipe.unet.register_forward_pre_hook(lambda _m, a: rows.append(a[0].shape[0]))
    try:
        both = render_aid_batch(
            sd, aid, cond, ends_latents, Conditioning.cat([middle(0), middle(1)]), latent,
            torch.cat([ts, ts]), pairs=torch.tensor([[0, 1], [0, 1], [1, 2], [1, 2]]), **options,
        )  # fmt: skip
    finally:
        hook.remove()
    assert set(rows) == {2 * (3 + 4)}  # three keyframes, four frames, under guidance
    for k in (0, 1):
        alone = render_aid_batch(
            sd, aid, cond.select([k, k + 1]), ends_latents[:2], middle(k), latent, ts, **options
        )
        assert torch.allclose(both[2 * k : 2 * k + 2], alone, atol=2e-6, rtol=0)
