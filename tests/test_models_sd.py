"""SD 1.x/2.x and SDXL adapters on tiny random pipelines saved and loaded by path.

The adapters must reproduce the plain diffusers pipeline exactly (same image for the same
prompt and seed), render a batch as each row alone, warn on long prompts, and invert images
(DDIM) so that rendering reconstructs them. The tiny VAE is random (decode then encode is not
the identity), so reconstruction is measured in the UNet's latent space, where inversion lives.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
import torch

from whichway.cli import main
from whichway.media import save_image
from whichway.models import (
    Conditioning,
    ModelLoadError,
    PromptTruncatedWarning,
    adapter_for,
    load_adapter,
)
from whichway.models._common import (
    ddim_invert,
    ddim_schedule,
    ddim_scheduler,
    load_latent,
    prepare_image,
    resolve_device,
    resolve_dtype,
    save_latent,
    vae_encode,
)

A = "a photo of an astronaut riding a horse on the moon"
B = "a painting of a cat"
C = "a small dog on the beach"
SIZE = 16  # pixels; latents are 8 x 8 with the tiny VAE (scale factor 2)
FAMILIES = ("sd", "sdxl")


def plain(adapter, prompt: str, seed: int, steps: int, guidance: float, **kwargs) -> torch.Tensor:
    """The plain diffusers pipeline's image for a prompt and seed, (1, 3, H, W) in [0, 1]."""
    return adapter.pipe(
        prompt=prompt,
        generator=torch.Generator("cpu").manual_seed(seed),
        num_inference_steps=steps,
        guidance_scale=guidance,
        height=SIZE,
        width=SIZE,
        output_type="pt",
        **kwargs,
    ).images


@pytest.fixture
def fresh_adapter(tiny_pipeline):
    """A private adapter (tests that switch schedulers must not touch the shared one)."""
    return lambda family: load_adapter(str(tiny_pipeline(family)), device="cpu", dtype="float32")


# --- plain-pipeline equality ------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("guidance", [1.0, 5.0])
def test_render_equals_plain_pipeline(tiny_adapter, family, guidance):
    """encode([A]) + initial_latent(seed) renders exactly the pipeline's image for (A, seed)."""
    adapter = tiny_adapter(family)
    image = adapter.render(
        adapter.encode([A]),
        adapter.initial_latent(3, SIZE, SIZE),
        steps=4,
        guidance=guidance,
        height=SIZE,
        width=SIZE,
    )
    reference = plain(adapter, A, 3, 4, guidance)
    assert image.shape == (1, 3, SIZE, SIZE) and image.dtype == torch.float32
    torch.testing.assert_close(image, reference.float(), atol=1e-5, rtol=0)
    # not trivially equal: another seed gives another image
    other = plain(adapter, A, 4, 4, guidance)
    assert (other - reference).abs().mean() > 1e-3


@pytest.mark.parametrize("family", FAMILIES)
def test_negative_prompt_equals_plain_pipeline(tiny_adapter, family):
    adapter = tiny_adapter(family)
    negative = adapter.encode_negative("blurry dark photo")
    image = adapter.render(
        adapter.encode([B]),
        adapter.initial_latent(0, SIZE, SIZE),
        steps=3,
        guidance=6.0,
        height=SIZE,
        width=SIZE,
        negative=negative,
    )
    reference = plain(adapter, B, 0, 3, 6.0, negative_prompt="blurry dark photo")
    torch.testing.assert_close(image, reference.float(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_batch_equals_one_at_a_time(tiny_adapter, family):
    adapter = tiny_adapter(family)
    cond = adapter.encode([A, B, C])
    latents = torch.stack([adapter.initial_latent(s, SIZE, SIZE) for s in range(3)])
    steps = []
    batch = adapter.render(
        cond,
        latents,
        steps=3,
        guidance=5.0,
        height=SIZE,
        width=SIZE,
        on_step=lambda: steps.append(1),
    )
    assert len(steps) == 3  # on_step once per denoising step of the batch
    alone = torch.cat(
        [
            adapter.render(
                cond.select(i), latents[i], steps=3, guidance=5.0, height=SIZE, width=SIZE
            )
            for i in range(3)
        ]
    )
    torch.testing.assert_close(batch, alone, atol=1e-4, rtol=0)
    assert (batch[0] - batch[1]).abs().mean() > 1e-3


@pytest.mark.parametrize("family", FAMILIES)
def test_shared_latent_and_same_seed_twice(tiny_adapter, family):
    adapter = tiny_adapter(family)
    cond = adapter.encode([A, B])
    latent = adapter.initial_latent(7, SIZE, SIZE)
    first = adapter.render(cond, latent, steps=2, guidance=1.0, height=SIZE, width=SIZE)
    second = adapter.render(
        cond, latent.expand(2, -1, -1, -1), steps=2, guidance=1.0, height=SIZE, width=SIZE
    )
    assert torch.equal(first, second)


# --- encoding ---------------------------------------------------------------------------------


def test_sd_encode_matches_pipeline_encode_prompt(tiny_adapter):
    adapter = tiny_adapter("sd")
    cond = adapter.encode([A, B])
    assert len(cond.clouds) == 1 and cond.pooled is None
    assert cond.clouds[0].shape == (2, 77, 32) and cond.clouds[0].dtype == torch.float32
    with torch.no_grad():
        single, _ = adapter.pipe.encode_prompt(B, "cpu", 1, False)
    torch.testing.assert_close(cond.clouds[0][1:], single, atol=1e-6, rtol=0)
    # the unconditional embedding is the encoded empty prompt
    torch.testing.assert_close(adapter.encode_negative().clouds[0], adapter.encode([""]).clouds[0])
    assert len(adapter.encode_negative(batch=3)) == 3


def test_sdxl_conditioning_and_zero_negative(tiny_adapter):
    adapter = tiny_adapter("sdxl")
    cond = adapter.encode([A, B])
    assert cond.clouds[0].shape == (2, 77, 64)  # both encoders' hidden states, concatenated
    assert cond.pooled is not None and cond.pooled.shape == (2, 32)
    with torch.no_grad():
        embeds, _, pooled, _ = adapter.pipe.encode_prompt(
            prompt=A, device="cpu", do_classifier_free_guidance=False
        )
    torch.testing.assert_close(cond.clouds[0][:1], embeds, atol=1e-6, rtol=0)
    torch.testing.assert_close(cond.pooled[:1], pooled, atol=1e-6, rtol=0)
    # force_zeros_for_empty_prompt: no negative prompt -> zeros, as the pipeline does
    assert adapter.pipe.config.force_zeros_for_empty_prompt
    negative = adapter.encode_negative()
    assert (
        torch.count_nonzero(negative.clouds[0]) == 0 and torch.count_nonzero(negative.pooled) == 0
    )
    # a negative prompt is encoded like a prompt
    given = adapter.encode_negative("blurry dark photo")
    torch.testing.assert_close(given.clouds[0], adapter.encode(["blurry dark photo"]).clouds[0])
    torch.testing.assert_close(given.pooled, adapter.encode(["blurry dark photo"]).pooled)


@pytest.mark.parametrize("family", FAMILIES)
def test_long_prompt_warns_with_count_and_cut_text_when_truncating(tiny_adapter, family):
    adapter = tiny_adapter(family)
    prompt = "cat " * 80 + "zebra giraffe"
    # by default a long prompt is encoded in 75-token chunks: nothing cut, nothing to warn about
    with warnings.catch_warnings():
        warnings.simplefilter("error", PromptTruncatedWarning)
        assert adapter.encode([prompt]).clouds[0].shape[1] == 154
    adapter.long_prompts = "truncate"  # what the pipeline does, when the user asks for it
    try:
        with pytest.warns(
            PromptTruncatedWarning, match=r"84 tokens but the .* window is 77.*zebra giraffe"
        ):
            cond = adapter.encode([prompt])
    finally:
        adapter.long_prompts = "chunk"
    assert cond.clouds[0].shape[1] == 77
    with warnings.catch_warnings():
        warnings.simplefilter("error", PromptTruncatedWarning)
        adapter.encode([A])  # a short prompt does not warn


def test_initial_latent_is_the_cpu_generator_draw(tiny_adapter):
    adapter = tiny_adapter("sd")
    latent = adapter.initial_latent(5, SIZE, SIZE)
    assert latent.shape == adapter.latent_shape(SIZE, SIZE) == (4, 8, 8)
    expected = torch.randn((1, 4, 8, 8), generator=torch.Generator("cpu").manual_seed(5))[0]
    assert torch.equal(latent, expected)
    assert adapter.default_size == (64, 64)
    assert tiny_adapter("sdxl").default_size == (64, 64)


# --- inversion --------------------------------------------------------------------------------


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("family", FAMILIES)
def test_ddim_inversion_reconstructs(fresh_adapter, family):
    """Generate with DDIM (10 steps), invert, re-generate.

    Measured on the tiny models (16 px, 10 steps): relative latent reconstruction error
    ‖x̂₀ − x₀‖/‖x₀‖ ≈ 0.07 with plain DDIM inversion and ≈ 2.5e-3 with 2 fixed-point refinements,
    against ≈ 1.5 for an unrelated seed; recovered noise within ≈ 0.05 (mean abs) of the true one
    (≈ 2e-3 refined); decoded pixels within ≈ 3e-4 against ≈ 0.16 for the other seed.
    Tolerances: 0.15, 1e-2, 0.1 and 5 %.
    """
    adapter = fresh_adapter(family)
    adapter.use_scheduler("ddim")
    cond = adapter.encode([A])
    noise = adapter.initial_latent(0, SIZE, SIZE)
    settings = {"steps": 10, "guidance": 1.0, "height": SIZE, "width": SIZE}
    clean = adapter.render_latent(cond, noise, **settings)
    other = adapter.render_latent(cond, adapter.initial_latent(1, SIZE, SIZE), **settings)
    assert _relative(other, clean) > 0.5

    inverted = adapter.invert_latent(clean[0], A, steps=10)
    assert inverted.shape == noise.shape
    assert float((inverted - noise).abs().mean()) < 0.1
    assert _relative(adapter.render_latent(cond, inverted, **settings), clean) < 0.15

    adapter.inversion_refine = 2
    refined = adapter.invert_latent(clean, A, steps=10)  # batched form (1, C, h, w)
    assert refined.shape == clean.shape
    rebuilt = adapter.render_latent(cond, refined, **settings)
    assert _relative(rebuilt, clean) < 1e-2

    # in pixels too: the reconstruction is far closer than another seed's image
    vae = adapter.pipe.vae

    def decode(z: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return (vae.decode(z / vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)

    image = decode(clean)
    assert (decode(rebuilt) - image).abs().mean() < 0.05 * (decode(other) - image).abs().mean()


def test_invert_image_is_vae_mean_then_latent_inversion_and_switches_to_ddim(fresh_adapter):
    adapter = fresh_adapter("sd")
    assert adapter.scheduler_name == "PNDMScheduler"
    image = torch.rand(3, 40, 36, generator=torch.Generator().manual_seed(0))
    latent = adapter.invert(image, B, steps=3, guidance=3.0)
    assert adapter.scheduler_name == "DDIMScheduler"
    assert latent.shape == (4, 20, 16)  # its own size rounded down to multiples of 8: 40 x 32
    scaled = vae_encode(adapter.pipe.vae, prepare_image(image, 40, 32))
    expected = adapter.invert_latent(scaled[0], B, steps=3, guidance=3.0)
    torch.testing.assert_close(latent, expected, atol=1e-6, rtol=0)
    assert adapter.use_scheduler("default") == "ddim"
    assert adapter.scheduler_name == "PNDMScheduler"
    with pytest.raises(
        ValueError, match="unknown scheduler 'euler'; valid choices are: default, ddim"
    ):
        adapter.use_scheduler("euler")


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_ddim_invert_is_exact_for_a_model_that_ignores_its_input(prediction_type):
    """If ε(x, t) does not depend on x, reversing DDIM step by step is exact; checked against
    diffusers' DDIMScheduler.step run forward on the inverted latent."""
    from diffusers import DDIMScheduler

    config = DDIMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        steps_offset=1,
        set_alpha_to_one=False,
        clip_sample=False,
        prediction_type=prediction_type,
    ).config
    table = torch.randn(
        1000, 2, 4, 5, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if prediction_type == "epsilon":
            return table[int(t)].clone()
        # a v-prediction consistent with a fixed ε: v = (ε − √(1−ᾱ) x)/√ᾱ  (so ε̂ = ε exactly)
        a = forward.alphas_cumprod[int(t)].double()
        return (table[int(t)] - (1 - a).sqrt() * x) / a.sqrt()

    forward = ddim_scheduler(config)
    clean = torch.randn(2, 4, 5, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    noise = ddim_invert(model, clean, ddim_schedule(ddim_scheduler(config), 25))
    forward.set_timesteps(25)
    x = noise
    for t in forward.timesteps:
        x = forward.step(model(x, t), t, x).prev_sample
    # diffusers' step takes its square roots of ᾱ in float32: agreement to ~1e-6, not 1e-12
    torch.testing.assert_close(x, clean, atol=2e-5, rtol=0)


# --- bad inputs -------------------------------------------------------------------------------


def test_unknown_path_and_offline_hub_id_fail_with_reason(tmp_path):
    with pytest.raises(
        ModelLoadError, match=r"could not load model .*no_such_dir.*Check that the hub id or local"
    ):
        load_adapter(str(tmp_path / "no_such_dir"), device="cpu")
    with pytest.raises(
        ModelLoadError, match=r"could not load model 'nobody/no-such-model': .*HF_HUB_OFFLINE"
    ):
        load_adapter("nobody/no-such-model", device="cpu")
    assert issubclass(ModelLoadError, ValueError)


def test_missing_files_variant_and_unsupported_pipeline(tiny_pipeline, tmp_path):
    import shutil

    with pytest.raises(ModelLoadError, match="could not load model"):
        load_adapter(str(tiny_pipeline("sd")), device="cpu", variant="fp16")
    broken = Path(shutil.copytree(tiny_pipeline("sd"), tmp_path / "broken"))
    for weights in (broken / "unet").glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(ModelLoadError, match=r"could not load model .*broken.*: \w+"):
        load_adapter(str(broken), device="cpu")
    tmp_path = tmp_path / "img2img"
    tmp_path.mkdir()
    (tmp_path / "model_index.json").write_text(
        json.dumps({"_class_name": "StableDiffusionImg2ImgPipeline"})
    )
    with pytest.raises(
        ValueError,
        match=r"unsupported pipeline 'StableDiffusionImg2ImgPipeline'.*"
        r"sd \(StableDiffusionPipeline\).*flux",
    ):
        load_adapter(str(tmp_path), device="cpu")


def test_adapter_for_wraps_in_memory_pipelines(tiny_adapter):
    pipe = tiny_adapter("sd").pipe
    adapter = adapter_for(pipe, model_id="memory")
    assert adapter.family == "sd" and adapter.describe()["model"] == "memory"
    with pytest.raises(ValueError, match="unsupported pipeline 'object'"):
        adapter_for(object())


def test_device_and_dtype_parsing():
    assert resolve_dtype(None, torch.device("cpu")) is torch.float32
    assert resolve_dtype(None, torch.device("cuda"), gpu_default=torch.bfloat16) is torch.bfloat16
    assert resolve_dtype("float16", torch.device("cpu")) is torch.float16
    assert resolve_dtype(torch.bfloat16, torch.device("cpu")) is torch.bfloat16
    with pytest.raises(
        ValueError, match="unknown dtype 'float8'; valid choices are: float32, float16, bfloat16"
    ):
        resolve_dtype("float8", torch.device("cpu"))
    with pytest.raises(ValueError, match="unknown device 'tpu:x'"):
        resolve_device("tpu:x")
    assert resolve_device("cpu") == torch.device("cpu")


def test_render_rejects_bad_inputs(tiny_adapter):
    adapter = tiny_adapter("sd")
    cond = adapter.encode([A, B])
    latent = adapter.initial_latent(0, SIZE, SIZE)
    with pytest.raises(ValueError, match=r"latents must be \(B, 4, 8, 8\)"):
        adapter.render(
            cond, torch.zeros(2, 4, 16, 16), steps=1, guidance=1.0, height=SIZE, width=SIZE
        )
    with pytest.raises(ValueError, match="latents have 3 rows but cond has 2"):
        adapter.render(
            cond, latent.expand(3, -1, -1, -1), steps=1, guidance=1.0, height=SIZE, width=SIZE
        )
    with pytest.raises(ValueError, match="height must be a positive multiple of 8"):
        adapter.render(cond, latent, steps=1, guidance=1.0, height=30, width=SIZE)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        adapter.render(cond, latent, steps=0, guidance=1.0, height=SIZE, width=SIZE)
    with pytest.raises(ValueError, match="guidance must be a finite number"):
        adapter.render(cond, latent, steps=1, guidance=math.nan, height=SIZE, width=SIZE)
    pooled = Conditioning(cond.clouds, torch.zeros(2, 8))
    with pytest.raises(ValueError, match="one token group and no pooled vector"):
        adapter.render(pooled, latent, steps=1, guidance=1.0, height=SIZE, width=SIZE)
    with pytest.raises(ValueError, match="one token group and a pooled vector"):
        tiny_adapter("sdxl").render(cond, latent, steps=1, guidance=1.0, height=SIZE, width=SIZE)
    with pytest.raises(ValueError, match="negative has 3 rows but cond has 2"):
        adapter.render(
            cond,
            latent,
            steps=1,
            guidance=5.0,
            height=SIZE,
            width=SIZE,
            negative=adapter.encode_negative(batch=3),
        )
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        adapter.initial_latent(-1, SIZE, SIZE)
    with pytest.raises(ValueError, match="prompts must be a non-empty sequence of strings"):
        adapter.encode([])


def test_images_and_latent_files(tmp_path):
    # image files themselves are tested in test_media.py
    image = torch.rand(3, 8, 12, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"image values must lie in \[0, 1\]"):
        prepare_image(image * 3, 8, 8)

    latent = torch.randn(4, 6, 6, generator=torch.Generator().manual_seed(0))
    # the command line accepts any case of the extension, so the files do too
    for name in ("z.safetensors", "z.pt", "Z.PT", "z.SafeTensors"):
        save_latent(latent, tmp_path / name, {"prompt": "a cat", "steps": 5})
        loaded, meta = load_latent(tmp_path / name)
        assert (
            torch.equal(loaded, latent) and meta["prompt"] == "a cat" and str(meta["steps"]) == "5"
        )
    with pytest.raises(ValueError, match="must end in one of: .safetensors, .pt, .pth"):
        save_latent(latent, tmp_path / "z.npy")


# --- CLI --------------------------------------------------------------------------------------


def test_cli_tiny_model_builds_a_loadable_pipeline(tmp_path, capsys):
    target = tmp_path / "tiny"
    assert main(["tiny-model", "sd", str(target), "--seed", "1"]) == 0
    assert "saved a tiny random sd pipeline" in capsys.readouterr().out
    assert load_adapter(str(target), device="cpu").family == "sd"
    assert main(["tiny-model", "sd", str(target)]) == 2
    assert "is not empty" in capsys.readouterr().err


def test_cli_invert_saves_latent_and_checks_reconstruction(
    tiny_pipeline, tiny_adapter, tmp_path, capsys
):
    adapter = tiny_adapter("sd")
    image = adapter.render(
        adapter.encode([B]),
        adapter.initial_latent(0, SIZE, SIZE),
        steps=2,
        guidance=1.0,
        height=SIZE,
        width=SIZE,
    )[0]
    png = save_image(image, tmp_path / "cat.png")
    out = tmp_path / "inv" / "cat.safetensors"
    code = main(
        [
            "invert",
            str(png),
            "--prompt",
            B,
            "--model",
            str(tiny_pipeline("sd")),
            "--device",
            "cpu",
            "--steps",
            "4",
            "--out",
            str(out),
            "--check",
            "--quiet",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    latent, meta = load_latent(out)
    assert latent.shape == (4, 8, 8)
    assert meta["prompt"] == B and meta["steps"] == "4" and meta["scheduler"] == "DDIMScheduler"
    assert (tmp_path / "inv" / "cat.reconstruction.png").is_file()
    assert "mean |error|" in printed and "PSNR" in printed

    bad = tmp_path / "notes.png"
    bad.write_text("hello")
    assert main(["invert", str(bad), "--prompt", B, "--model", str(tiny_pipeline("sd"))]) == 2
    assert "notes.png" in capsys.readouterr().err
    assert main(["invert", str(png), "--prompt", B, "--model", str(tmp_path / "nothing")]) == 2
    assert "could not load model" in capsys.readouterr().err


@pytest.mark.slow
def test_full_size_sd15_unet_has_the_real_architecture():
    from whichway.models.tiny import full_size_pipeline

    pipe = full_size_pipeline("sd", dtype="float32")
    params = sum(p.numel() for p in pipe.unet.parameters())
    assert 855e6 < params < 865e6  # SD 1.5's UNet: 859.5M parameters
    adapter = adapter_for(pipe, model_id="sd15-random")
    cond = adapter.encode([A])
    assert cond.clouds[0].shape == (1, 77, 768)
    out = adapter.denoise_once(cond, adapter.initial_latent(0, 64, 64)[None], 500)
    assert out.shape == (1, 4, 8, 8) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="supports family 'sd'"):
        full_size_pipeline("sdxl")


def test_tiny_vocabulary_reads_every_word_as_one_token():
    from whichway.models.tiny import TINY_WORDS, tiny_clip_tokenizer

    tokenizer = tiny_clip_tokenizer()
    ids = tokenizer(" ".join(TINY_WORDS)).input_ids
    assert len(ids) == len(TINY_WORDS) + 2  # start and end tokens
    with pytest.raises(
        ValueError, match="unknown family 'sd4'; valid choices are: sd, sdxl, sd3, flux"
    ):
        from whichway.models.tiny import build_tiny_pipeline

        build_tiny_pipeline("sd4", Path("unused"))


@pytest.mark.parametrize("family", FAMILIES)
def test_denoise_once_is_the_pipelines_unet_call(tiny_adapter, family, monkeypatch):
    """denoise_once feeds the UNet what the pipeline feeds it (SDXL: text_embeds and time_ids)."""
    adapter = tiny_adapter(family)
    unet = adapter.pipe.unet
    forward = unet.forward
    calls = []

    def recording_forward(sample, timestep, *args, **kwargs):
        out = forward(sample, timestep, *args, **kwargs)
        calls.append((sample.clone(), timestep, kwargs, out[0].clone()))
        return out

    monkeypatch.setattr(unet, "forward", recording_forward)
    cond = adapter.encode([C])
    adapter.render(
        cond, adapter.initial_latent(2, SIZE, SIZE), steps=2, guidance=1.0, height=SIZE, width=SIZE
    )
    sample, timestep, kwargs, output = calls[-1]
    if family == "sdxl":
        added = kwargs["added_cond_kwargs"]
        torch.testing.assert_close(added["time_ids"], adapter.time_ids(SIZE, SIZE, 1))
        torch.testing.assert_close(added["text_embeds"], cond.pooled)
    ours = adapter.denoise_once(cond, sample, float(timestep))
    torch.testing.assert_close(ours, output, atol=1e-6, rtol=0)
