"""SD3 and Flux adapters on tiny random pipelines built from the real diffusers classes.

Every comparison is against the plain diffusers pipeline called in the same test (its own
``encode_prompt``, ``prepare_latents`` and ``__call__``), so the tests fail if the adapters'
plumbing drifts from what a user of diffusers would get.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from whichway.models import PromptTruncatedWarning, check_invariance, load_adapter
from whichway.models.base import Conditioning
from whichway.models.flow import (
    FlowMatchingAdapter,
    FlowSchedule,
    euler_invert,
    euler_sample,
    flow_schedule,
)
from whichway.models.flux import FluxAdapter
from whichway.models.sd3 import SD3Adapter

H = W = 64
STEPS = 4
INV_STEPS = 8
PROMPT = "a photo of a cat sitting on a red chair"
FAMILIES = ("sd3", "flux")


@pytest.fixture(scope="module")
def fresh_adapter(tiny_pipeline: Callable[[str], Path]) -> Callable[..., FlowMatchingAdapter]:
    """A new adapter per call (for tests that change adapter settings), float32 CPU."""

    def make(family: str, **settings: object) -> FlowMatchingAdapter:
        adapter = load_adapter(str(tiny_pipeline(family)), device="cpu", dtype="float32")
        for name, value in settings.items():
            setattr(adapter, name, value)
        return adapter  # type: ignore[return-value]

    return make


def _plain(
    adapter: FlowMatchingAdapter, prompt: str, seed: int, guidance: float, **kwargs: object
) -> torch.Tensor:
    """The plain pipeline's image for a prompt and a CPU-generator seed."""
    return adapter.pipe(
        prompt,
        num_inference_steps=STEPS,
        guidance_scale=guidance,
        height=H,
        width=W,
        generator=torch.Generator("cpu").manual_seed(seed),
        output_type="pt",
        **kwargs,
    ).images.float()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


# --- loading -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "cls", "pipeline"),
    [
        ("sd3", SD3Adapter, "StableDiffusion3Pipeline"),
        ("flux", FluxAdapter, "FluxPipeline"),
    ],
)
def test_load_by_path_detects_family(tiny_adapter, family, cls, pipeline) -> None:
    adapter = tiny_adapter(family)
    assert isinstance(adapter, cls)
    assert adapter.family == family and adapter.inversion == "flow"
    assert adapter.gpu_dtype == torch.bfloat16
    info = adapter.describe()
    assert info["pipeline"] == pipeline and info["family"] == family and info["dtype"] == "float32"
    assert adapter.latent_shape(H, W) == (16, 8, 8)


def test_bad_settings_and_sizes(tiny_adapter, tiny_pipeline) -> None:
    sd3 = tiny_adapter("sd3")
    with pytest.raises(ValueError, match="positive multiple of 16"):
        sd3.latent_shape(72, 64)
    with pytest.raises(ValueError, match="max_sequence_length must be an integer in"):
        SD3Adapter(sd3.pipe, max_sequence_length=600)
    with pytest.raises(ValueError, match="inversion_refine must be a non-negative integer"):
        SD3Adapter(sd3.pipe, inversion_refine=-1)
    with pytest.raises(ValueError, match="negative_prompt must be a string"):
        sd3.encode_negative(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="prompts must be a non-empty sequence"):
        sd3.encode([])


# --- text ----------------------------------------------------------------------------------------


@torch.no_grad()
def test_sd3_encode_matches_pipeline(tiny_adapter) -> None:
    adapter = tiny_adapter("sd3")
    prompts = [PROMPT, "a dog"]
    cond = adapter.encode(prompts)
    embeds, _, pooled, _ = adapter.pipe.encode_prompt(
        prompts, None, None, do_classifier_free_guidance=False
    )
    clip, t5 = cond.clouds
    assert clip.shape == (2, 77, 96) and t5.shape == (2, 256, 96) and cond.pooled.shape == (2, 64)
    assert clip.dtype == torch.float32 and clip.device.type == "cpu"
    torch.testing.assert_close(torch.cat([clip, t5], dim=1), embeds, rtol=0, atol=0)
    torch.testing.assert_close(cond.pooled, pooled, rtol=0, atol=0)
    # the CLIP group is 2 x 32 wide, zero-padded to T5's 96 exactly as the pipeline pads it
    assert torch.all(clip[..., 64:] == 0) and clip[..., :64].abs().max() > 0


@torch.no_grad()
def test_flux_encode_matches_pipeline(tiny_adapter) -> None:
    adapter = tiny_adapter("flux")
    prompts = [PROMPT, "a dog"]
    cond = adapter.encode(prompts)
    embeds, pooled, text_ids = adapter.pipe.encode_prompt(prompts, None)
    assert (
        len(cond.clouds) == 1
        and cond.clouds[0].shape == (2, 512, 32)
        and cond.pooled.shape == (2, 32)
    )
    torch.testing.assert_close(cond.clouds[0], embeds, rtol=0, atol=0)
    torch.testing.assert_close(cond.pooled, pooled, rtol=0, atol=0)
    assert torch.all(text_ids == 0)  # every text token has RoPE position (0, 0, 0)


@pytest.mark.parametrize("family", FAMILIES)
def test_negative_is_the_empty_prompt(tiny_adapter, family) -> None:
    adapter = tiny_adapter(family)
    neg = adapter.encode_negative(None, 3)
    empty = adapter.encode([""])
    assert len(neg) == 3
    for g, e in zip(neg.clouds, empty.clouds):
        torch.testing.assert_close(g, e.expand(3, -1, -1), rtol=0, atol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_long_prompt_warns_with_count_and_cut_text(fresh_adapter, family) -> None:
    adapter = fresh_adapter(family, max_sequence_length=16)
    adapter.long_prompts = "truncate"  # SD3's CLIP part is otherwise chunked, not cut
    long_prompt = " ".join(["a red car"] * 40)  # 120 words: over CLIP's 77 and T5's 16
    with pytest.warns(PromptTruncatedWarning) as record:
        adapter.encode([long_prompt])
    messages = [str(w.message) for w in record]
    assert any("CLIP text encoder window is 77" in m and "cuts: 'a red car" in m for m in messages)
    assert any("T5 text encoder window is 16" in m for m in messages)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PromptTruncatedWarning)
        adapter.encode(["a red car"])  # short prompt: no warning


# --- latents and rendering ---------------------------------------------------------------------


def test_sd3_initial_latent_is_the_pipeline_draw(tiny_adapter) -> None:
    adapter = tiny_adapter("sd3")
    drawn = adapter.pipe.prepare_latents(
        1, 16, H, W, torch.float32, torch.device("cpu"), torch.Generator("cpu").manual_seed(5)
    )
    torch.testing.assert_close(adapter.initial_latent(5, H, W), drawn[0], rtol=0, atol=0)


def test_flux_initial_latent_packs_to_the_pipeline_draw(tiny_adapter) -> None:
    adapter = tiny_adapter("flux")
    packed, img_ids = adapter.pipe.prepare_latents(
        1, 16, H, W, torch.float32, torch.device("cpu"), torch.Generator("cpu").manual_seed(5)
    )
    latent = adapter.initial_latent(5, H, W)
    assert latent.shape == (16, 8, 8) and packed.shape == (1, 16, 64)
    torch.testing.assert_close(adapter.pack(latent[None]), packed, rtol=0, atol=0)
    torch.testing.assert_close(adapter.unpack(packed, H, W)[0], latent, rtol=0, atol=0)
    torch.testing.assert_close(adapter._ids(7, 8, 8)[1], img_ids, rtol=0, atol=0)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("guidance", [1.0, 4.5])
def test_render_equals_plain_pipeline(tiny_adapter, family, guidance) -> None:
    """The t = 0 frame of a morph: adapter.render(encode(A), initial_latent(seed)) is the image
    the plain pipeline draws for prompt A and the same seed."""
    adapter = tiny_adapter(family)
    steps: list[int] = []
    image = adapter.render(
        adapter.encode([PROMPT]),
        adapter.initial_latent(3, H, W),
        steps=STEPS,
        guidance=guidance,
        height=H,
        width=W,
        negative=adapter.encode_negative(None, 1),
        on_step=lambda: steps.append(1),
    )
    assert image.shape == (1, 3, H, W) and image.dtype == torch.float32
    assert float(image.min()) >= 0 and float(image.max()) <= 1
    assert len(steps) == STEPS
    torch.testing.assert_close(image, _plain(adapter, PROMPT, 3, guidance), rtol=0, atol=1e-5)


def test_flux_true_cfg_equals_plain_pipeline(fresh_adapter) -> None:
    adapter = fresh_adapter("flux", true_cfg_scale=3.0)
    image = adapter.render(
        adapter.encode([PROMPT]),
        adapter.initial_latent(2, H, W),
        steps=STEPS,
        guidance=2.0,
        height=H,
        width=W,
        negative=adapter.encode_negative("a dog"),
    )
    reference = _plain(adapter, PROMPT, 2, 2.0, negative_prompt="a dog", true_cfg_scale=3.0)
    torch.testing.assert_close(image, reference, rtol=0, atol=1e-5)
    off = fresh_adapter("flux").render(
        adapter.encode([PROMPT]),
        adapter.initial_latent(2, H, W),
        steps=STEPS,
        guidance=2.0,
        height=H,
        width=W,
        negative=adapter.encode_negative("a dog"),
    )
    assert float((off - image).abs().max()) > 1e-3  # the negative only acts through true CFG


def test_flux_guidance_is_distilled_embedding(tiny_adapter, tmp_path) -> None:
    """FLUX.1-dev-like (guidance_embeds): guidance changes the image in one pass per step;
    schnell-like (no guidance embedding): guidance is ignored, as in the pipeline."""
    from whichway.models.tiny_mmdit import build_tiny_flux

    dev = tiny_adapter("flux")
    assert dev.distilled_guidance
    cond, latent = dev.encode([PROMPT]), dev.initial_latent(0, H, W)
    a, b = (
        dev.render(cond, latent, steps=STEPS, guidance=g, height=H, width=W) for g in (1.0, 6.0)
    )
    assert float((a - b).abs().max()) > 1e-3
    schnell = load_adapter(
        str(build_tiny_flux(tmp_path / "schnell", guidance_embeds=False)), device="cpu"
    )
    assert not schnell.distilled_guidance and schnell.describe()["distilled_guidance"] is False
    cond = schnell.encode([PROMPT])
    a, b = (
        schnell.render(cond, latent, steps=STEPS, guidance=g, height=H, width=W) for g in (1.0, 6.0)
    )
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_batch_equals_one_at_a_time_and_seed_repeats(tiny_adapter, family) -> None:
    adapter = tiny_adapter(family)
    cond = adapter.encode(["a cat", "a red car", "a dog in a forest"])
    latents = torch.stack([adapter.initial_latent(s, H, W) for s in range(3)])
    settings = {"steps": STEPS, "guidance": 4.0, "height": H, "width": W}
    batched = adapter.render(cond, latents, **settings)
    single = torch.cat([adapter.render(cond.select(i), latents[i], **settings) for i in range(3)])
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-5)
    again = adapter.render(cond, latents, **settings)
    torch.testing.assert_close(again, batched, rtol=0, atol=0)
    assert float((batched[0] - batched[1]).abs().max()) > 1e-3  # the rows really differ


@pytest.mark.parametrize("family", FAMILIES)
def test_render_rejects_bad_inputs(tiny_adapter, family) -> None:
    adapter = tiny_adapter(family)
    other = tiny_adapter("flux" if family == "sd3" else "sd3")
    cond = adapter.encode(["a cat", "a dog"])
    latent = adapter.initial_latent(0, H, W)
    settings = {"steps": STEPS, "guidance": 2.0, "height": H, "width": W}
    with pytest.raises(ValueError, match=r"latents must be \(B, 16, 8, 8\)"):
        adapter.render(cond, torch.zeros(2, 4, 8, 8), **settings)
    with pytest.raises(ValueError, match="latents have 3 rows but cond has 2"):
        adapter.render(cond, latent.expand(3, -1, -1, -1), **settings)
    with pytest.raises(ValueError, match="token group"):
        adapter.render(other.encode(["a cat"]), latent, **settings)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        adapter.render(cond, latent, steps=0, guidance=2.0, height=H, width=W)
    with pytest.raises(ValueError, match="guidance must be a finite number"):
        adapter.render(cond, latent, steps=STEPS, guidance=math.nan, height=H, width=W)
    with pytest.raises(ValueError, match="height must be a positive multiple of 16"):
        adapter.render(cond, latent, steps=STEPS, guidance=2.0, height=40, width=W)


# --- flow-matching Euler sampling and inversion -------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("guidance", [1.0, 4.0])
def test_euler_sample_reproduces_the_pipeline(tiny_adapter, family, guidance) -> None:
    """flow.euler_sample with the adapter's σ grid and velocity is the pipeline's own sampler,
    so inverting it inverts what render draws."""
    adapter = tiny_adapter(family)
    cond, latent = adapter.encode([PROMPT]), adapter.initial_latent(1, H, W)[None]
    schedule = adapter.schedule(6, H, W)
    assert isinstance(schedule, FlowSchedule) and len(schedule) == 6
    assert schedule.sigmas[0] == pytest.approx(1.0) and schedule.sigmas[-1] == 0
    assert torch.all(schedule.sigmas[1:] < schedule.sigmas[:-1])
    ours = euler_sample(adapter._velocity(cond, guidance), latent, schedule)
    theirs = adapter.render_latent(cond, latent, steps=6, guidance=guidance, height=H, width=W)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_euler_inversion_reconstructs_generated_latent(fresh_adapter, family) -> None:
    """Generate, invert, re-generate: the clean latent comes back. Measured on the tiny models
    with 8 steps, guidance 3 (relative L2 error of the regenerated clean latent): explicit
    inversion 0.047 (SD3) / 0.036 (Flux); three fixed-point refinements 1.0e-4 / 2.5e-5; an
    unrelated seed gives 1.3 / 1.4."""
    adapter = fresh_adapter(family, max_sequence_length=32)
    cond, seed_latent = adapter.encode([PROMPT]), adapter.initial_latent(3, H, W)
    settings = {"steps": INV_STEPS, "guidance": 3.0, "height": H, "width": W}
    clean = adapter.render_latent(cond, seed_latent, **settings)
    unrelated = _rel(
        adapter.render_latent(cond, adapter.initial_latent(99, H, W), **settings), clean
    )
    errors = {}
    calls: list[int] = []
    for refine in (0, 3):
        adapter.inversion_refine = refine
        calls.clear()
        noise = adapter.invert_latent(
            clean[0], PROMPT, steps=INV_STEPS, guidance=3.0, on_step=lambda: calls.append(1)
        )
        assert noise.shape == (16, 8, 8) and len(calls) == INV_STEPS
        errors[refine] = _rel(adapter.render_latent(cond, noise, **settings), clean)
        assert _rel(noise, seed_latent) < (0.2 if refine == 0 else 1e-3)
    assert unrelated > 0.5
    assert errors[0] < 0.08 and errors[0] < unrelated / 10
    assert errors[3] < 1e-3 and errors[3] < errors[0] / 10


@pytest.mark.parametrize("family", FAMILIES)
def test_invert_image_reconstructs_up_to_the_vae(fresh_adapter, family) -> None:
    """Image-level round trip. A random VAE is no autoencoder, so the target is the VAE's own
    round trip decode(encode(image)); rendering the inverted latent reproduces it. The random
    VAE's latents are off the model's distribution (Flux: std 0.11 against 1.2 for generated
    ones), where explicit inversion is poor (mean |error| 0.03 SD3, 0.12 Flux at 10 steps), so
    this uses 3 fixed-point refinements: at 8 steps mean |error| 1.3e-4 (SD3) and 1.8e-2 (Flux)
    against 0.14 / 0.17 for an unrelated seed (pixel values in [0, 1])."""
    from whichway.models._common import prepare_image, vae_encode

    adapter = fresh_adapter(family, inversion_refine=3, max_sequence_length=32)
    cond = adapter.encode([PROMPT])
    settings = {"steps": INV_STEPS, "guidance": 1.0, "height": H, "width": W}
    image = adapter.render(cond, adapter.initial_latent(4, H, W), **settings)[0]
    noise = adapter.invert(image, PROMPT, steps=INV_STEPS)
    clean = vae_encode(adapter.pipe.vae, prepare_image(image, H, W))
    torch.testing.assert_close(
        noise, adapter.invert_latent(clean, PROMPT, steps=INV_STEPS)[0], rtol=0, atol=0
    )
    vae = adapter.pipe.vae
    with torch.no_grad():
        target = vae.decode(clean / vae.config.scaling_factor + vae.config.shift_factor).sample
    target = adapter.pipe.image_processor.postprocess(target, output_type="pt")[0]
    rebuilt = adapter.render(cond, noise, **settings)[0]
    unrelated = adapter.render(cond, adapter.initial_latent(98, H, W), **settings)[0]
    error = float((rebuilt - target).abs().mean())
    assert error < 0.03 and error < float((unrelated - target).abs().mean()) / 5
    with pytest.raises(ValueError, match="image must be a torch.Tensor"):
        adapter.invert([0.5], PROMPT, steps=2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="prompt must be a string"):
        adapter.invert(image, None, steps=2)  # type: ignore[arg-type]


def test_flow_schedule_and_inversion_errors(tiny_adapter) -> None:
    from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler

    with pytest.raises(ValueError, match="needs the pipeline's FlowMatchEulerDiscreteScheduler"):
        flow_schedule(DDIMScheduler(), 4)
    with pytest.raises(ValueError, match="stochastic_sampling=True"):
        flow_schedule(FlowMatchEulerDiscreteScheduler(stochastic_sampling=True), 4)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        flow_schedule(FlowMatchEulerDiscreteScheduler(), 0)
    schedule = flow_schedule(FlowMatchEulerDiscreteScheduler(shift=3.0), 4)
    with pytest.raises(ValueError, match="refine must be a non-negative integer"):
        euler_invert(lambda x, t: x, torch.zeros(1, 4, 2, 2), schedule, refine=-1)
    adapter = tiny_adapter("sd3")
    with pytest.raises(
        ValueError, match=r"latent must be a torch.Tensor \(B, C, h, w\) or \(C, h, w\)"
    ):
        adapter.invert_latent(torch.zeros(8, 8), PROMPT, steps=2)


def test_euler_invert_is_exact_for_a_linear_field() -> None:
    """For v(x, t) = a·x the Euler step is x_{i+1} = (1 + Δσ_i a) x_i, so the fixed point of the
    refined inversion is x_{i+1} / (1 + Δσ_i a) exactly; sampling it back is the identity."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    schedule = flow_schedule(FlowMatchEulerDiscreteScheduler(shift=3.0), 8)
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def field(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return 0.3 * z

    clean = euler_sample(field, x, schedule)
    back = euler_invert(field, clean, schedule, refine=60)
    torch.testing.assert_close(back, x, rtol=1e-12, atol=1e-12)
    explicit = euler_invert(field, clean, schedule, refine=0)
    assert float((explicit - x).abs().max()) > 1e-4  # the explicit step is only first-order


# --- token-order invariance ------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_mmdit_text_tokens_are_order_invariant(tiny_adapter, family) -> None:
    """Measured finding: SD3 and Flux cannot see the order of their text tokens.

    SD3: text tokens enter the joint attention through a per-token linear map, with no positional
    embedding (only image patches get one), and attention is permutation-equivariant in its keys.
    Flux: text tokens carry RoPE position ids, but all equal (0, 0, 0), i.e. the identity
    rotation. On the tiny models, float32, timestep 500, the max relative difference is ≈ 1e-7
    (rounding), while the text itself moves the output by ≈ 6-8 % of its scale.
    """
    adapter = tiny_adapter(family)
    report = check_invariance(adapter, height=H, width=W)
    assert report.family == family
    assert report.n_tokens == ((77, 256) if family == "sd3" else (512,))
    assert report.invariant and report.informative
    assert report.max_rel < 1e-5 and report.text_effect > 1e-2


def test_check_flags_sd3_when_text_tokens_get_positions(fresh_adapter) -> None:
    """Control: give SD3's text tokens an absolute position embedding (added after the context
    embedder) and the same check reports a sensitive model."""
    adapter = fresh_adapter("sd3")
    baseline = check_invariance(adapter, height=H, width=W)
    embedder = adapter.pipe.transformer.context_embedder
    positions = torch.randn(
        77 + 256, embedder.out_features, generator=torch.Generator().manual_seed(0)
    )
    handle = embedder.register_forward_hook(lambda _m, _i, out: out + positions[: out.shape[1]])
    try:
        report = check_invariance(adapter, height=H, width=W)
    finally:
        handle.remove()
    # measured: max_rel ≈ 6e-4 (the tiny model's text moves its output by only ≈ 8 %)
    assert not report.invariant and report.max_rel > 1000 * baseline.max_rel


def test_check_flags_flux_when_text_tokens_get_distinct_rope_ids(fresh_adapter) -> None:
    """Control: give Flux's text tokens distinct RoPE ids (0, i, i) instead of the shared
    (0, 0, 0) and the check reports a sensitive model."""
    adapter = fresh_adapter("flux")
    baseline = check_invariance(adapter, height=H, width=W)
    original = adapter._ids

    def distinct_ids(n_text: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        txt, img = original(n_text, h, w)
        index = torch.arange(n_text, dtype=txt.dtype)
        return torch.stack([torch.zeros_like(index), index, index], dim=1), img

    adapter._ids = distinct_ids  # type: ignore[method-assign]
    report = check_invariance(adapter, height=H, width=W)
    assert not report.invariant and report.max_rel > 1000 * baseline.max_rel


@pytest.mark.parametrize("family", FAMILIES)
def test_denoise_once_contract(tiny_adapter, family) -> None:
    adapter = tiny_adapter(family)
    cond = adapter.encode(["a cat", "a dog"])
    latent = adapter.initial_latent(0, H, W)
    out = adapter.denoise_once(cond, latent, 500.0)
    assert out.shape == (2, 16, 8, 8) and out.dtype == torch.float32 and out.device.type == "cpu"
    single = adapter.denoise_once(cond.select(1), latent, 500.0)
    torch.testing.assert_close(out[1:], single, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match=r"timestep must be a number in \[0, 1000\]"):
        adapter.denoise_once(cond, latent, 2000.0)
    with pytest.raises(ValueError, match="with B = 1 or 2"):
        adapter.denoise_once(cond, latent.expand(3, -1, -1, -1), 500.0)


def test_conditioning_path_endpoints_render_prompts(tiny_adapter) -> None:
    """Through the renderer: t = 0 and t = 1 frames of an OT path equal the plain pipeline's
    images for prompts A and B (t = 1 is a row permutation of B, invisible to the model)."""
    from whichway.render import conditioning_path, render_frames

    adapter = tiny_adapter("sd3")
    a, b = "a photo of a cat", "a painting of a red car"
    cond, couplings = conditioning_path(
        adapter.encode([a]), adapter.encode([b]), torch.tensor([0.0, 0.5, 1.0])
    )
    assert len(couplings) == 2 and isinstance(cond, Conditioning)
    frames = render_frames(
        adapter,
        cond,
        adapter.initial_latent(7, H, W),
        steps=STEPS,
        guidance=3.0,
        height=H,
        width=W,
        batch_size=2,
        progress=False,
    )
    torch.testing.assert_close(frames[0:1], _plain(adapter, a, 7, 3.0), rtol=0, atol=1e-5)
    torch.testing.assert_close(frames[2:3], _plain(adapter, b, 7, 3.0), rtol=0, atol=1e-4)
