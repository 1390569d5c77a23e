"""GPU smoke test: every family at its real size, random weights, on CUDA.

For SD 1.5 (512 px, float16), SDXL (1024 px, float16), SD3 medium (1024 px, bfloat16) and
FLUX.1-dev (1024 px, bfloat16), a pipeline with the published architecture (denoiser, VAE, text
encoders at full width and depth; tiny tokenizers, random weights) renders a few frames through
:func:`whichway.render.render_frames`, once per variant:

* ``base``: the pipeline on the GPU as loaded;
* ``tiling``: ``vae.enable_tiling()``;
* ``offload``: ``pipe.enable_model_cpu_offload()`` (components move to the GPU one at a time);
* ``compile``: ``torch.compile`` of the denoiser (the first call, which compiles, is timed apart).

Printed per variant: peak GPU memory (``torch.cuda.max_memory_allocated``) of the timed render,
the peak the analytic estimate of ``whichway doctor`` predicts for it (and their ratio),
frames/s of the warm render (the warm-up call is a first call in the process), and the warm-up
time. The options go through the pipelines' own methods, so this runs before and after the
runtime options (``--offload``, ``--vae-tiling``, ``--compile``) land in whichway.

    python benchmarks/gpu_smoke.py [--families sd,sdxl,sd3,flux] [--variants base,tiling,offload,compile]
                                   [--frames 2] [--steps 10]
    python benchmarks/gpu_smoke.py --check-configs   # CPU: build every architecture on the meta
                                                     # device and print its parameter counts
    python benchmarks/gpu_smoke.py --tiny            # CPU: the same code path on tiny pipelines

On a machine without CUDA the full-size run refuses (exit status 2) and says which modes work.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from typing import Any

import torch

FAMILIES = ("sd", "sdxl", "sd3", "flux")
VARIANTS = ("base", "tiling", "offload", "compile")
SIZES = {"sd": 512, "sdxl": 1024, "sd3": 1024, "flux": 1024}
DTYPES = {"sd": torch.float16, "sdxl": torch.float16, "sd3": torch.bfloat16, "flux": torch.bfloat16}
GUIDANCE = {"sd": 7.5, "sdxl": 5.0, "sd3": 7.0, "flux": 3.5}

# --- published architectures (config.json of each model's components) --------------------------

SDXL_UNET = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "transformer_layers_per_block": (1, 2, 10),
    "attention_head_dim": (5, 10, 20),
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
    "norm_num_groups": 32,
}  # stabilityai/stable-diffusion-xl-base-1.0, ~2.57B parameters
SD3_TRANSFORMER = {
    "sample_size": 128,
    "patch_size": 2,
    "in_channels": 16,
    "out_channels": 16,
    "num_layers": 24,
    "attention_head_dim": 64,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "caption_projection_dim": 1536,
    "pooled_projection_dim": 2048,
    "pos_embed_max_size": 192,
}  # stabilityai/stable-diffusion-3-medium-diffusers, ~2.0B parameters
FLUX_TRANSFORMER = {
    "patch_size": 1,
    "in_channels": 64,
    "num_layers": 19,
    "num_single_layers": 38,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "pooled_projection_dim": 768,
    "guidance_embeds": True,
    "axes_dims_rope": (16, 56, 56),
}  # black-forest-labs/FLUX.1-dev, ~11.9B parameters
CLIP_L = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "projection_dim": 768,
    "vocab_size": 49408,
}
CLIP_G = {
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_attention_heads": 20,
    "num_hidden_layers": 32,
    "projection_dim": 1280,
    "vocab_size": 49408,
    "hidden_act": "gelu",
}
T5_XXL = {
    "vocab_size": 32128,
    "d_model": 4096,
    "d_kv": 64,
    "d_ff": 10240,
    "num_layers": 24,
    "num_heads": 64,
    "relative_attention_num_buckets": 32,
    "feed_forward_proj": "gated-gelu",
    "dropout_rate": 0.0,
    "is_encoder_decoder": False,
    "use_cache": False,
    "pad_token_id": 0,
    "eos_token_id": 1,
}
PUBLISHED = {  # denoiser parameters, as the model cards / config give them (rounded)
    "sd": 0.86e9,
    "sdxl": 2.57e9,
    "sd3": 2.03e9,
    "flux": 11.9e9,
}


def _vae(latent_channels: int, scaling: float, shift: float | None, *, force_upcast: bool) -> Any:
    from diffusers import AutoencoderKL

    extra = (
        {}
        if shift is None
        else {"shift_factor": shift, "use_quant_conv": False, "use_post_quant_conv": False}
    )
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=latent_channels,
        sample_size=1024,
        scaling_factor=scaling,
        force_upcast=force_upcast,
        **extra,
    )


def _clip(cls_name: str, tokenizer: Any, settings: dict[str, Any]) -> Any:
    import transformers
    from transformers import CLIPTextConfig

    config = CLIPTextConfig(
        max_position_embeddings=77,
        layer_norm_eps=1e-5,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **settings,
    )
    return getattr(transformers, cls_name)(config).eval()


def _t5() -> Any:
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(**T5_XXL)).eval()


def _scheduler(family: str) -> Any:
    import diffusers

    from whichway.models.tiny import _sd15_scheduler

    if family == "sd":
        return _sd15_scheduler()
    if family == "sdxl":
        return diffusers.EulerDiscreteScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            steps_offset=1,
            timestep_spacing="leading",
        )
    if family == "sd3":
        return diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    return diffusers.FlowMatchEulerDiscreteScheduler(
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )


def full_size_pipeline(family: str, device: str | torch.device = "cpu") -> Any:
    """The published architecture of ``family`` with random weights, float32; its modules are
    built directly on ``device`` ("meta": shapes only), schedulers and tokenizers on the CPU."""
    import diffusers

    from whichway.models.tiny import SD15_UNET_CONFIG, tiny_clip_tokenizer
    from whichway.models.tiny_mmdit import tiny_t5_tokenizer

    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; valid choices are: {', '.join(FAMILIES)}")
    scheduler = _scheduler(family)
    tok, tok_2 = tiny_clip_tokenizer(), tiny_clip_tokenizer(pad_token="!")
    t5_tok = tiny_t5_tokenizer()
    with torch.device(device):
        if family == "sd":
            return diffusers.StableDiffusionPipeline(
                vae=_vae(4, 0.18215, None, force_upcast=False),
                text_encoder=_clip("CLIPTextModel", tok, CLIP_L),
                tokenizer=tok,
                unet=diffusers.UNet2DConditionModel(**SD15_UNET_CONFIG),
                scheduler=scheduler,
                safety_checker=None,
                feature_extractor=None,
                image_encoder=None,
                requires_safety_checker=False,
            )
        if family == "sdxl":
            return diffusers.StableDiffusionXLPipeline(
                vae=_vae(4, 0.13025, None, force_upcast=True),
                text_encoder=_clip("CLIPTextModel", tok, {**CLIP_L, "hidden_act": "quick_gelu"}),
                text_encoder_2=_clip("CLIPTextModelWithProjection", tok_2, CLIP_G),
                tokenizer=tok,
                tokenizer_2=tok_2,
                unet=diffusers.UNet2DConditionModel(**SDXL_UNET),
                scheduler=scheduler,
                image_encoder=None,
                feature_extractor=None,
                force_zeros_for_empty_prompt=True,
            )
        if family == "sd3":
            return diffusers.StableDiffusion3Pipeline(
                transformer=diffusers.SD3Transformer2DModel(**SD3_TRANSFORMER),
                scheduler=scheduler,
                vae=_vae(16, 1.5305, 0.0609, force_upcast=False),
                text_encoder=_clip("CLIPTextModelWithProjection", tok, CLIP_L),
                tokenizer=tok,
                text_encoder_2=_clip("CLIPTextModelWithProjection", tok_2, CLIP_G),
                tokenizer_2=tok_2,
                text_encoder_3=_t5(),
                tokenizer_3=t5_tok,
            )
        return diffusers.FluxPipeline(
            scheduler=scheduler,
            vae=_vae(16, 0.3611, 0.1159, force_upcast=False),
            text_encoder=_clip("CLIPTextModel", tok, CLIP_L),
            tokenizer=tok,
            text_encoder_2=_t5(),
            tokenizer_2=t5_tok,
            transformer=diffusers.FluxTransformer2DModel(**FLUX_TRANSFORMER),
        )


def check_configs(families: list[str]) -> None:
    """Build every architecture on the meta device (no memory, no weights), print its size and
    the analytic peak-memory estimate of ``whichway doctor`` at the family's size and dtype."""
    from diffusers.utils import logging as diffusers_logging

    from whichway.models import adapter_for
    from whichway.models.memory import component_memory, format_bytes, plan_memory

    diffusers_logging.set_verbosity_error()
    print(f"{'family':<7}{'component':<16}{'parameters':>16}{'bf16/fp16 weights':>20}")
    for family in families:
        pipe = full_size_pipeline(family, "meta")
        for c in component_memory(pipe):
            note = ""
            if c.name in ("unet", "transformer"):
                note = f"   (published ~{PUBLISHED[family] / 1e9:.2f}B)"
            print(f"{family:<7}{c.name:<16}{c.elements:>16,}{format_bytes(c.bytes // 2):>20}{note}")
        size, dtype, guidance = SIZES[family], DTYPES[family], GUIDANCE[family]
        plan = plan_memory(
            adapter_for(pipe.to(dtype=dtype), family), size, size, guidance, capacity_bytes=None
        )
        print(
            f"{family:<7}doctor estimate at {size}x{size}, {str(dtype)[6:]}, guidance {guidance:g}: weights "
            f"{format_bytes(plan.weights_bytes)}, per frame: denoising {format_bytes(plan.denoise_frame_bytes)}, "
            f"VAE decoding {format_bytes(plan.decode_frame_bytes)}; peak batch 1 {format_bytes(plan.peak(1))}, "
            f"batch 4 {format_bytes(plan.peak(4))}"
        )


def _timed(fn: Any) -> tuple[Any, float]:
    torch.cuda.synchronize() if torch.cuda.is_available() else None
    start = time.perf_counter()
    out = fn()
    torch.cuda.synchronize() if torch.cuda.is_available() else None
    return out, time.perf_counter() - start


def run_variant(
    pipe: Any, family: str, variant: str, *, frames: int, steps: int, size: int, device: str
) -> dict[str, Any]:
    """Apply ``variant`` to ``pipe``, render ``frames`` frames and measure them."""
    from whichway.models import adapter_for
    from whichway.models.memory import plan_memory
    from whichway.render import conditioning_path, render_frames

    cuda = device.startswith("cuda")
    if variant == "offload":
        pipe.to("cpu")
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    if variant == "tiling":
        pipe.vae.enable_tiling()
    adapter = adapter_for(pipe, f"random {family} ({variant})")
    if variant == "offload":
        adapter.device = torch.device(device)  # inputs go where the hooks run the modules
    if variant == "compile":
        name = "unet" if hasattr(pipe, "unet") and pipe.unet is not None else "transformer"
        setattr(pipe, name, torch.compile(getattr(pipe, name)))
    guidance = GUIDANCE[family]
    cond = adapter.encode(["a photo of a cat", "a photo of a dog"])
    path, _ = conditioning_path(cond.select(0), cond.select(1), torch.linspace(0, 1, frames))
    latent = adapter.initial_latent(0, size, size)
    options = {
        "steps": steps,
        "guidance": guidance,
        "height": size,
        "width": size,
        "batch_size": frames,
        "progress": False,
    }
    _, warm_up = _timed(
        lambda: render_frames(adapter, path.select(slice(0, 1)), latent, **{**options, "steps": 1})
    )
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    _, seconds = _timed(lambda: render_frames(adapter, path, latent, **options))
    peak = torch.cuda.max_memory_allocated() if cuda else None
    estimate = None
    if variant in ("base", "compile"):  # the analytic plan models the pipeline as loaded
        estimate = plan_memory(adapter, size, size, guidance, capacity_bytes=None).peak(frames)
    return {
        "peak": peak,
        "estimate": estimate,
        "fps": frames / seconds,
        "seconds": seconds,
        "warm_up": warm_up,
    }


def smoke(
    families: list[str], variants: list[str], *, frames: int, steps: int, device: str, tiny: bool
) -> None:
    from whichway.models.memory import format_bytes

    print(
        f"{frames} frames per render (one batch), {steps} steps; torch {torch.__version__}, device {device}"
        + (f" ({torch.cuda.get_device_name()})" if device.startswith("cuda") else "")
    )
    print(
        f"{'family':<7}{'variant':<9}{'size':>6}{'dtype':>10}{'peak':>11}{'estimate':>11}{'est/peak':>9}"
        f"{'frames/s':>10}{'warm-up s':>11}"
    )
    for family in families:
        dtype = torch.float32 if tiny else DTYPES[family]
        size = 64 if tiny else SIZES[family]
        for variant in variants:
            try:
                if tiny:
                    from whichway.models import load_adapter
                    from whichway.models.tiny import build_tiny_pipeline

                    with tempfile.TemporaryDirectory() as tmp:
                        pipe = load_adapter(
                            str(build_tiny_pipeline(family, tmp)), device="cpu"
                        ).pipe
                else:
                    pipe = full_size_pipeline(family, device)
                    pipe.to(dtype=dtype)
                row = run_variant(
                    pipe, family, variant, frames=frames, steps=steps, size=size, device=device
                )
            except Exception as exc:
                print(
                    f"{family:<7}{variant:<9}{size:>6}{str(dtype)[6:]:>10}  failed: {type(exc).__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else ''}"
                )
                continue
            finally:
                with contextlib.suppress(NameError):
                    del pipe
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()
            ratio = (
                f"{row['estimate'] / row['peak']:.2f}" if row["peak"] and row["estimate"] else "-"
            )
            print(
                f"{family:<7}{variant:<9}{size:>6}{str(dtype)[6:]:>10}{format_bytes(row['peak']) if row['peak'] else '-':>11}"
                f"{format_bytes(row['estimate']) if row['estimate'] else '-':>11}{ratio:>9}"
                f"{row['fps']:>10.3f}{row['warm_up']:>11.1f}",
                flush=True,
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--frames", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cuda")
    parser.add_argument(
        "--tiny", action="store_true", help="tiny pipelines on the CPU (plumbing only)"
    )
    parser.add_argument(
        "--check-configs", action="store_true", help="build the architectures on meta; print sizes"
    )
    args = parser.parse_args(argv)
    families = [f for f in args.families.split(",") if f]
    variants = [v for v in args.variants.split(",") if v]
    bad = sorted(set(families) - set(FAMILIES)) + sorted(set(variants) - set(VARIANTS))
    if bad:
        print(
            f"gpu_smoke: unknown {', '.join(bad)}; families: {', '.join(FAMILIES)}; variants: {', '.join(VARIANTS)}",
            file=sys.stderr,
        )
        return 2
    torch.set_grad_enabled(False)
    if args.check_configs:
        check_configs(families)
        return 0
    if args.tiny:
        smoke(
            families,
            [v for v in variants if v in ("base", "tiling")],
            frames=args.frames,
            steps=args.steps,
            device="cpu",
            tiny=True,
        )
        return 0
    if not (args.device.startswith("cuda") and torch.cuda.is_available()):
        print(
            "gpu_smoke: the full-size run needs a CUDA GPU (none is visible here). On a CPU run "
            "--check-configs (architecture sizes) or --tiny (the same code path on tiny models).",
            file=sys.stderr,
        )
        return 2
    smoke(families, variants, frames=args.frames, steps=args.steps, device=args.device, tiny=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
