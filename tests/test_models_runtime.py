"""Runtime options (sampler, LoRA, VAE, tiling/slicing, offload, attention, compile) on tiny
random pipelines of every family.

Each option must give exactly what the plain diffusers pipeline gives with the same setting:
a sampler's render equals the pipeline run with that scheduler (built here independently from
the diffusers class and its documented arguments), a LoRA'd model's render and prompt
encodings equal a pipeline that loaded the same LoRA file at the same scale, and so on.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest
import torch

from whichway.cli import main
from whichway.models import load_adapter
from whichway.models._common import STEP_NOISE_SEED
from whichway.models.runtime import (
    SAMPLERS,
    LoraSpec,
    RuntimeOptions,
    apply_runtime,
    build_scheduler,
    check_sampler,
    set_sampler,
)

A = "a photo of an astronaut riding a horse on the moon"
B = "a painting of a cat"
SIZE = {"sd": 16, "sdxl": 16, "sd3": 32, "flux": 32}
STEPS = 2


def _diffusers(name: str):
    import diffusers

    return getattr(diffusers, name)


#: sampler -> (diffusers class, from_config arguments), written from diffusers' documentation
FLOW = {"use_flow_sigmas": True, "prediction_type": "flow_prediction", "flow_shift": 3.0}
REFERENCE = {
    "ddim": ("DDIMScheduler", {"clip_sample": False, "thresholding": False}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler-a": ("EulerAncestralDiscreteScheduler", {}),
    "dpm++2m": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2},
    ),
    "dpm++2m-karras": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    ),
    "unipc": ("UniPCMultistepScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
    "deis": ("DEISMultistepScheduler", {}),
    "flow-euler": ("FlowMatchEulerDiscreteScheduler", {}),
    "flow-heun": ("FlowMatchHeunDiscreteScheduler", {}),
    "flow-unipc": ("UniPCMultistepScheduler", FLOW),
    "flow-dpm++2m": (
        "DPMSolverMultistepScheduler",
        {**FLOW, "algorithm_type": "dpmsolver++", "solver_order": 2},
    ),
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models spend their time in thread hand-offs, not arithmetic: one thread is several
    times faster (and the results are the same)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def samplers_adapter(tiny_pipeline):
    """One private adapter per family whose sampler the tests switch (loaded once)."""
    loaded: dict[str, object] = {}

    def get(family: str):
        if family not in loaded:
            loaded[family] = load_adapter(str(tiny_pipeline(family)), device="cpu", dtype="float32")
        return loaded[family]

    return get


def _plain(pipe, family: str, seed: int | None = None, latents=None, **kwargs) -> torch.Tensor:
    size = SIZE[family]
    generator = torch.Generator("cpu").manual_seed(STEP_NOISE_SEED if seed is None else seed)
    return pipe(
        prompt=A,
        num_inference_steps=STEPS,
        guidance_scale=1.0,
        height=size,
        width=size,
        generator=generator,
        latents=latents,
        output_type="pt",
        **kwargs,
    ).images.float()


def _render(adapter, family: str, seed: int = 3, prompt: str = A) -> torch.Tensor:
    size = SIZE[family]
    return adapter.render(
        adapter.encode([prompt]),
        adapter.initial_latent(seed, size, size),
        steps=STEPS,
        guidance=1.0,
        height=size,
        width=size,
    )


# --- samplers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "sampler"), [(f, s) for f, names in SAMPLERS.items() for s in names]
)
def test_sampler_render_equals_plain_pipeline_with_that_scheduler(
    samplers_adapter, family, sampler
):
    """The t = 0 frame (encode(A) + the seed's latent) rendered with --sampler equals the plain
    pipeline run with the same scheduler built from the model's config. Euler ancestral draws
    step noise: the adapter gives every row a generator seeded STEP_NOISE_SEED, so the plain
    pipeline gets the seed's latent and that generator."""
    adapter = samplers_adapter(family)
    set_sampler(adapter, sampler)
    cls_name, kwargs = REFERENCE[sampler]
    assert type(adapter.pipe.scheduler).__name__ == cls_name
    assert adapter.describe()["sampler"] == sampler
    image = _render(adapter, family)
    reference_scheduler = _diffusers(cls_name).from_config(
        adapter._loaded_scheduler.config, **kwargs
    )
    adapter.pipe.scheduler = reference_scheduler
    try:
        if sampler == "euler-a":
            size = SIZE[family]
            latent = adapter.initial_latent(3, size, size)[None]
            if family == "flux":  # pragma: no cover - no ancestral flow sampler
                latent = adapter.pack(latent)
            reference = _plain(adapter.pipe, family, latents=latent)
        else:
            reference = _plain(adapter.pipe, family, seed=3)
    finally:
        set_sampler(adapter, sampler)
    torch.testing.assert_close(image, reference, rtol=0, atol=1e-5)


def test_samplers_differ_and_keep_the_models_schedule(samplers_adapter):
    """The names are not aliases: Karras sigmas and the ancestral step change the image; every
    diffusion sampler keeps the model's betas and prediction type, every flow sampler its shift."""
    adapter = samplers_adapter("sd")
    images = {}
    for name in ("dpm++2m", "dpm++2m-karras", "euler", "euler-a"):
        set_sampler(adapter, name)
        images[name] = _render(adapter, "sd")
        assert adapter.pipe.scheduler.config.beta_schedule == "scaled_linear"
        assert adapter.pipe.scheduler.config.beta_end == pytest.approx(0.012)
    assert (images["dpm++2m"] - images["dpm++2m-karras"]).abs().max() > 1e-4
    assert (images["euler"] - images["euler-a"]).abs().max() > 1e-4
    set_sampler(adapter, None)
    assert adapter.pipe.scheduler is adapter._loaded_scheduler
    loaded = samplers_adapter("flux")._loaded_scheduler.config
    for name in SAMPLERS["flux"]:
        config = build_scheduler(name, loaded).config
        assert config.get("shift", config.get("flow_shift")) == 3.0
        assert config.get("use_dynamic_shifting") is True  # Flux's resolution-dependent shift


def test_invalid_sampler_lists_the_familys_choices(tiny_pipeline, monkeypatch):
    with pytest.raises(ValueError, match=r"unknown sampler 'dpm\+\+3m'.*sd: ddim, euler"):
        RuntimeOptions(sampler="dpm++3m")
    with pytest.raises(
        ValueError, match=r"'flow-euler' does not apply to a sd model.*ddim, euler, "
    ):
        check_sampler("flow-euler", "sd")
    with pytest.raises(
        ValueError, match=r"'flow-heun' does not apply to a flux model.*flow-euler, flow-unipc"
    ):
        check_sampler("flow-heun", "flux")
    # checked from the model's config, before any weight is loaded
    from diffusers import DiffusionPipeline

    def no_weights(*args, **kwargs):
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(DiffusionPipeline, "from_pretrained", no_weights)
    with pytest.raises(ValueError, match=r"'euler' does not apply to a sd3 model.*flow-heun"):
        load_adapter(
            str(tiny_pipeline("sd3")), device="cpu", runtime=RuntimeOptions(sampler="euler")
        )


def test_real_image_morph_renders_with_the_inversion_sampler(tiny_pipeline, tmp_path, caplog):
    """--sampler euler on a real-image morph: the end frames are rendered with DDIM (what the
    inversion inverts), the run says so, and the adapter renders with Euler again afterwards."""
    from whichway.media import save_image
    from whichway.morph import MorphSettings, run_morph

    adapter = load_adapter(
        str(tiny_pipeline("sd")), device="cpu", runtime=RuntimeOptions(sampler="euler")
    )
    images = []
    for k in range(2):
        path = tmp_path / f"{k}.png"
        save_image(torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(k)), path)
        images.append(str(path))
    settings = MorphSettings(
        A,
        B,
        (0.0, 1.0),
        steps=STEPS,
        guidance=1.0,
        height=16,
        width=16,
        image_a=images[0],
        image_b=images[1],
        format=None,
    )
    with caplog.at_level(logging.WARNING, logger="whichway.morph"):
        result = run_morph(adapter, settings, tmp_path / "run", progress=False)
    assert "renders with ddim" in caplog.text and "--sampler euler" in caplog.text
    run = json.loads((result.run_dir / "run.json").read_text())
    assert run["scheduler"] == "DDIMScheduler"
    assert run["settings"]["runtime"]["sampler"] == "euler"
    assert type(adapter.pipe.scheduler).__name__ == "EulerDiscreteScheduler"


def test_flow_inversion_keeps_euler_under_another_sampler(samplers_adapter):
    """SD3 with flow-unipc: inversion is the loaded Euler sampler's, exactly the latent it gives
    without --sampler, and it switches rendering to that Euler sampler (use_scheduler("default")
    goes back to UniPC)."""
    adapter = samplers_adapter("sd3")
    size = SIZE["sd3"]
    clean = torch.randn(1, 16, size // 8, size // 8, generator=torch.Generator().manual_seed(0))
    set_sampler(adapter, None)
    plain = adapter.invert_latent(clean, A, steps=STEPS)
    set_sampler(adapter, "flow-unipc")
    noise = adapter.invert_latent(clean, A, steps=STEPS)
    torch.testing.assert_close(noise, plain, rtol=0, atol=0)
    assert type(adapter.pipe.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    assert adapter.use_scheduler("default") == "inversion"
    assert type(adapter.pipe.scheduler).__name__ == "UniPCMultistepScheduler"
    set_sampler(adapter, None)


# --- LoRA --------------------------------------------------------------------------------------


def _make_lora(family: str, model: Path, out: Path, seed: int, *, text_encoder: bool) -> Path:
    """A random LoRA (rank 4) for the tiny model's denoiser (and its first text encoder, a CLIP
    model in every family), saved with the pipeline class's own ``save_lora_weights``."""
    import diffusers
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    denoiser, denoiser_cls, pipe_cls, encoder_cls = {
        "sd": ("unet", "UNet2DConditionModel", "StableDiffusionPipeline", CLIPTextModel),
        "sd3": (
            "transformer",
            "SD3Transformer2DModel",
            "StableDiffusion3Pipeline",
            CLIPTextModelWithProjection,
        ),
        "flux": ("transformer", "FluxTransformer2DModel", "FluxPipeline", CLIPTextModel),
    }[family]
    torch.manual_seed(seed)
    config = {"r": 4, "lora_alpha": 4, "init_lora_weights": False}
    net = getattr(diffusers, denoiser_cls).from_pretrained(model, subfolder=denoiser)
    net.add_adapter(LoraConfig(target_modules=["to_q", "to_k", "to_v", "to_out.0"], **config))
    layers = {f"{denoiser}_lora_layers": get_peft_model_state_dict(net)}
    if text_encoder:
        encoder = encoder_cls.from_pretrained(model, subfolder="text_encoder")
        # peft directly (transformers' own add_adapter wants a newer peft than diffusers does)
        lora = LoraConfig(target_modules=["q_proj", "k_proj", "v_proj", "out_proj"], **config)
        inject_adapter_in_model(lora, encoder)
        layers["text_encoder_lora_layers"] = get_peft_model_state_dict(encoder)
    getattr(diffusers, pipe_cls).save_lora_weights(out, safe_serialization=True, **layers)
    return out / "pytorch_lora_weights.safetensors"


@pytest.fixture(scope="module")
def loras(tiny_pipeline, tmp_path_factory):
    model = tiny_pipeline("sd")
    root = tmp_path_factory.mktemp("loras")
    return (
        _make_lora("sd", model, root / "style", 1, text_encoder=True),
        _make_lora("sd", model, root / "unet_only", 2, text_encoder=False),
    )


def test_lora_render_and_clouds_equal_a_pipeline_with_the_same_loras(tiny_pipeline, loras):
    """Two LoRAs at 0.7 and 0.4: the adapter's prompt clouds and its t = 0 frame equal those of
    a plain pipeline that loaded the same files at the same scales, and differ from the model
    without them (the first LoRA changes the text encoder: the coupled clouds are the LoRA'd
    model's)."""
    from diffusers import DiffusionPipeline

    model = str(tiny_pipeline("sd"))
    adapter = load_adapter(
        model,
        device="cpu",
        runtime=RuntimeOptions(loras=(f"{loras[0]}:0.7", LoraSpec(str(loras[1].parent), 0.4))),
    )
    report = adapter.runtime
    assert [x.sha256 for x in report.loras] == [
        hashlib.sha256(p.read_bytes()).hexdigest() for p in loras
    ]
    assert report.loras[0].components == ("unet", "text_encoder") and report.loras[
        1
    ].components == ("unet",)
    assert [x.scale for x in report.loras] == [0.7, 0.4]

    plain = DiffusionPipeline.from_pretrained(model)
    plain.set_progress_bar_config(disable=True)
    without_clouds = plain.encode_prompt([A], "cpu", 1, False)[0]
    without = _plain(plain, "sd", seed=3)
    plain.load_lora_weights(str(loras[0]), adapter_name="a")
    plain.load_lora_weights(str(loras[1]), adapter_name="b")
    plain.set_adapters(["a", "b"], adapter_weights=[0.7, 0.4])

    clouds = adapter.encode([A]).clouds[0]
    torch.testing.assert_close(
        clouds, plain.encode_prompt([A], "cpu", 1, False)[0], rtol=0, atol=1e-5
    )
    assert (clouds - without_clouds).abs().max() > 1e-3
    image = _render(adapter, "sd")
    torch.testing.assert_close(image, _plain(plain, "sd", seed=3), rtol=0, atol=1e-5)
    assert (image - without).abs().max() > 1e-3


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_transformer_lora_equals_a_pipeline_with_the_same_lora(tiny_pipeline, tmp_path, family):
    """SD3 / Flux: a LoRA on the transformer and the CLIP text encoder at 0.6 gives the frame of
    a plain pipeline that loaded it at 0.6, and changes the model's output."""
    from diffusers import DiffusionPipeline

    model = str(tiny_pipeline(family))
    file = _make_lora(family, tiny_pipeline(family), tmp_path, 3, text_encoder=True)
    adapter = load_adapter(
        model, device="cpu", runtime=RuntimeOptions(loras=(LoraSpec(str(file), 0.6),))
    )
    assert adapter.runtime.loras[0].components == ("transformer", "text_encoder")
    plain = DiffusionPipeline.from_pretrained(model)
    plain.set_progress_bar_config(disable=True)
    without = _plain(plain, family, seed=3)
    plain.load_lora_weights(str(file), adapter_name="x")
    plain.set_adapters(["x"], adapter_weights=[0.6])
    image = _render(adapter, family)
    torch.testing.assert_close(image, _plain(plain, family, seed=3), rtol=0, atol=1e-5)
    assert (image - without).abs().max() > 1e-3


def test_cli_morph_with_lora_sampler_and_slicing(tiny_pipeline, loras, tmp_path):
    """`whichway morph --lora F:0.7 --sampler dpm++2m --vae-slicing`: run.json records the options
    and the LoRA's SHA-256; the first frame is the plain pipeline's image with the same LoRA,
    scheduler and slicing (8-bit PNG)."""
    import numpy as np
    from diffusers import DiffusionPipeline, DPMSolverMultistepScheduler
    from PIL import Image

    model = str(tiny_pipeline("sd"))
    out = tmp_path / "run"
    argv = [
        "morph",
        A,
        B,
        "--model",
        model,
        "--device",
        "cpu",
        "--steps",
        str(STEPS),
        "--guidance",
        "1",
        "--frames",
        "2",
        "--height",
        "16",
        "--width",
        "16",
        "--format",
        "none",
        "--no-score",
        "--quiet",
        "--out",
        str(out),
        "--lora",
        f"{loras[0]}:0.7",
        "--sampler",
        "dpm++2m",
        "--vae-slicing",
    ]
    assert main(argv) == 0
    run = json.loads((out / "run.json").read_text())
    runtime = run["runtime"]
    assert runtime["sampler"] == "dpm++2m" and runtime["vae_slicing"] is True
    assert runtime["loras"][0]["sha256"] == hashlib.sha256(loras[0].read_bytes()).hexdigest()
    assert runtime["loras"][0]["scale"] == 0.7
    assert run["settings"]["runtime"]["loras"] == [[runtime["loras"][0]["sha256"], 0.7]]
    assert run["scheduler"] == "DPMSolverMultistepScheduler"
    assert run["timings"]["render_seconds"] > 0 and "compile_seconds" not in run["timings"]

    plain = DiffusionPipeline.from_pretrained(model)
    plain.set_progress_bar_config(disable=True)
    plain.scheduler = DPMSolverMultistepScheduler.from_config(plain.scheduler.config)
    plain.vae.enable_slicing()
    plain.load_lora_weights(str(loras[0]), adapter_name="style")
    plain.set_adapters(["style"], adapter_weights=[0.7])
    reference = _plain(plain, "sd", seed=0)[0]
    expected = np.rint(reference.permute(1, 2, 0).numpy() * 255).astype(np.int16)
    frame = np.asarray(Image.open(out / "frames" / "0000.png").convert("RGB")).astype(np.int16)
    assert np.abs(frame - expected).max() <= 1  # batched vs single rendering may flip a rounding
    # a different LoRA scale is a different run: its frames are rendered again, not resumed
    assert main([*argv[:-4], f"{loras[0]}:0.3", "--sampler", "dpm++2m", "--vae-slicing"]) == 0
    again = json.loads((out / "run.json").read_text())
    assert again["settings"]["runtime"]["loras"][0][1] == 0.3
    assert not np.array_equal(
        np.asarray(Image.open(out / "frames" / "0000.png")), frame.astype(np.uint8)
    )


def test_lora_sources_are_checked_before_loading(tmp_path):
    pickle = tmp_path / "style.bin"
    pickle.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"pickle.*safetensors files only"):
        RuntimeOptions(loras=(str(pickle),)).check()
    with pytest.raises(ValueError, match="does not exist"):
        RuntimeOptions(loras=(str(tmp_path / "missing.safetensors"),)).check()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="holds no .safetensors"):
        RuntimeOptions(loras=(str(empty),)).check()
    with pytest.raises(ValueError, match="finite"):
        LoraSpec.parse("style.safetensors:nan")
    assert LoraSpec.parse("owner/name:0.5") == LoraSpec("owner/name", 0.5)
    assert LoraSpec.parse("C:\\loras\\x.safetensors") == LoraSpec("C:\\loras\\x.safetensors", 1.0)
    assert LoraSpec.parse("owner/name/dir/x.safetensors") == LoraSpec(
        "owner/name/dir/x.safetensors"
    )
    # a hub id with no network and no cached copy (HF_HUB_OFFLINE=1 in tests) fails clearly
    from whichway.models.runtime import resolve_lora_file

    with pytest.raises(
        ValueError, match=r"could not fetch LoRA 'nobody/no-such-lora'.*local \.safetensors"
    ):
        resolve_lora_file("nobody/no-such-lora")


# --- VAE ---------------------------------------------------------------------------------------


def test_vae_swap_tiling_and_slicing(tiny_pipeline, tmp_path):
    """--vae DIR replaces the VAE (the render equals a pipeline built with that VAE, not the
    model's own); tiling and slicing give the pipeline's images with the same setting (tiles made
    small enough to split the tiny latent, so tiling is really used)."""
    from diffusers import AutoencoderKL, DiffusionPipeline

    from whichway.models.tiny import _tiny_vae

    model = str(tiny_pipeline("sd"))
    torch.manual_seed(5)
    _tiny_vae().save_pretrained(tmp_path / "vae", safe_serialization=True)
    adapter = load_adapter(
        model, device="cpu", runtime=RuntimeOptions(vae=str(tmp_path / "vae"), vae_slicing=True)
    )
    other = AutoencoderKL.from_pretrained(tmp_path / "vae")
    for name, value in other.state_dict().items():
        assert torch.equal(adapter.pipe.vae.state_dict()[name], value)
    assert adapter.pipe.vae.use_slicing
    plain = DiffusionPipeline.from_pretrained(model, vae=other)
    plain.set_progress_bar_config(disable=True)
    plain.vae.enable_slicing()
    swapped = _render(adapter, "sd")
    torch.testing.assert_close(swapped, _plain(plain, "sd", seed=3), rtol=0, atol=1e-5)

    plain = DiffusionPipeline.from_pretrained(model)
    plain.set_progress_bar_config(disable=True)
    assert (swapped - _plain(plain, "sd", seed=3)).abs().max() > 1e-3

    tiled = load_adapter(model, device="cpu", runtime=RuntimeOptions(vae_tiling=True))
    assert tiled.pipe.vae.use_tiling
    untiled_image = _render(tiled, "sd")  # 8x8 latent < the 32-cell tile: no split yet
    for vae in (tiled.pipe.vae, plain.vae):
        vae.enable_tiling()
        vae.tile_sample_min_size, vae.tile_latent_min_size = 8, 4
    image = _render(tiled, "sd")
    torch.testing.assert_close(image, _plain(plain, "sd", seed=3), rtol=0, atol=1e-5)
    assert (image - untiled_image).abs().max() > 1e-4


def test_vae_that_does_not_fit_or_is_not_safetensors(tiny_pipeline, tmp_path):
    with pytest.raises(ValueError, match=r"does not fit this model: 16 latent channels"):
        load_adapter(
            str(tiny_pipeline("sd")),
            device="cpu",
            runtime=RuntimeOptions(vae=str(tiny_pipeline("sd3"))),
        )
    from whichway.models.tiny import _tiny_vae

    _tiny_vae().save_pretrained(tmp_path / "pickled", safe_serialization=False)
    with pytest.raises(ValueError, match="no .safetensors weights"):
        RuntimeOptions(vae=str(tmp_path / "pickled")).check()


# --- offload, attention, compile ---------------------------------------------------------------


def test_offload_on_cpu_is_a_clear_error_before_loading(tiny_pipeline, monkeypatch, capsys):
    from diffusers import DiffusionPipeline

    def no_weights(*args, **kwargs):
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(DiffusionPipeline, "from_pretrained", no_weights)
    model = str(tiny_pipeline("sd"))
    with pytest.raises(
        ValueError, match=r"--offload model needs an accelerator .* runs on the CPU"
    ):
        load_adapter(model, device="cpu", runtime=RuntimeOptions(offload="model"))
    rc = main(["check-invariance", "--model", model, "--device", "cpu", "--offload", "sequential"])
    assert rc == 2
    assert "error: --offload sequential needs an accelerator" in capsys.readouterr().err
    if not torch.cuda.is_available():  # the default device is the CPU here
        with pytest.raises(ValueError, match="needs an accelerator"):
            load_adapter(model, runtime=RuntimeOptions(offload="model"))


def test_cli_sampler_of_another_family_fails_before_loading(tiny_pipeline, monkeypatch, capsys):
    from whichway.models import loading

    monkeypatch.setattr(
        loading, "_pipeline_class_name", lambda *a: pytest.fail("the model was opened")
    )
    model = str(tiny_pipeline("flux"))
    rc = main(["grid", "prompts", A, B, "a dog", "--model", model, "--sampler", "euler-a"])
    assert rc == 2
    assert "'euler-a' does not apply to a flux model" in capsys.readouterr().err


def test_attention_backend(samplers_adapter, tiny_pipeline):
    """--attention routes the SD3/Flux transformer's attention through a diffusers backend; the
    render equals the plain pipeline's; a UNet (no dispatcher) and unknown names are errors."""
    from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry

    active = _AttentionBackendRegistry._active_backend
    try:
        adapter = load_adapter(
            str(tiny_pipeline("flux")),
            device="cpu",
            runtime=RuntimeOptions(attention="_native_math"),
        )
        assert adapter.runtime.attention_layers > 0
        processors = [
            m.processor for m in adapter.pipe.transformer.modules() if hasattr(m, "processor")
        ]
        assert {p._attention_backend for p in processors} == {AttentionBackendName._NATIVE_MATH}
        torch.testing.assert_close(
            _render(adapter, "flux"), _plain(adapter.pipe, "flux", seed=3), rtol=0, atol=1e-5
        )
        with pytest.raises(ValueError, match=r"unknown attention backend 'fast'.*flash.*native"):
            RuntimeOptions(attention="fast").check()
        with pytest.raises(ValueError, match="UNet2DConditionModel does not route attention"):
            apply_runtime(samplers_adapter("sd"), RuntimeOptions(attention="native"))
    finally:
        _AttentionBackendRegistry._active_backend = active


def test_compile_traces_the_denoiser_and_keeps_the_frames(tiny_pipeline, samplers_adapter):
    """--compile compiles the denoiser in place (traced by dynamo; the eager backend keeps this
    test fast, inductor is the default); the frames are the uncompiled model's."""
    from whichway.models.runtime import compile_seconds

    adapter = load_adapter(
        str(tiny_pipeline("sd3")),
        device="cpu",
        runtime=RuntimeOptions(compile=True, compile_backend="eager"),
    )
    assert adapter.runtime.compiled == "transformer"
    assert adapter.describe()["runtime"]["compiled"] == "transformer"
    before = compile_seconds()
    image = _render(adapter, "sd3")
    assert compile_seconds() > before
    reference = samplers_adapter("sd3")
    set_sampler(reference, None)
    torch.testing.assert_close(image, _render(reference, "sd3"), rtol=0, atol=1e-5)


def test_study_config_takes_the_runtime_keys(tmp_path):
    from whichway.studies.config import ModelConfig, from_dict

    m = from_dict(
        ModelConfig,
        {"id": "x", "sampler": "euler", "lora": ["a.safetensors:0.5"], "vae_tiling": True},
    )
    options = m.runtime_options()
    assert (
        options.sampler == "euler"
        and options.loras == (LoraSpec("a.safetensors", 0.5),)
        and options.vae_tiling
    )
    assert from_dict(ModelConfig, {"id": "x"}).runtime_options() is None
    with pytest.raises(ValueError, match="unknown offload mode 'cpu'"):
        from_dict(ModelConfig, {"id": "x", "offload": "cpu"})
