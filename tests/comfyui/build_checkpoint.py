"""Build a small random-weight SD 1.x checkpoint that ComfyUI's CheckpointLoaderSimple accepts.

Run with the Python that has ComfyUI's requirements, from anywhere::

    python tests/comfyui/build_checkpoint.py COMFYUI_DIR OUT.safetensors

The modules are ComfyUI's own classes (a one-level UNet with model_channels 320 and context 768,
the full-size CLIP-L text encoder its SD 1.x config fixes, the TAESD decoder), initialised from a
seeded torch.Generator and saved in the original single-file key layout (``model.diffusion_model.``,
``cond_stage_model.transformer.``, ``first_stage_model.``) in float16. ComfyUI's loader reads the
UNet's depth from the keys, so the file is about 280 MB instead of 2 GB.
"""

from __future__ import annotations

import json
import os
import sys


def build(comfy_dir: str, out: str, seed: int = 0) -> str:
    sys.path.insert(0, comfy_dir)
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options

    comfy.options.enable_args_parsing()
    import comfy.clip_model
    import comfy.ops
    import comfy.taesd.taesd
    import torch
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    from safetensors.torch import save_file

    ops = comfy.ops.disable_weight_init
    unet = UNetModel(
        image_size=32,
        in_channels=4,
        model_channels=320,
        out_channels=4,
        num_res_blocks=[1],
        channel_mult=(1,),
        num_heads=8,
        use_spatial_transformer=True,
        transformer_depth=[1],
        transformer_depth_output=[1, 1],
        transformer_depth_middle=1,
        context_dim=768,
        legacy=False,
        operations=ops,
    )
    with open(os.path.join(comfy_dir, "comfy", "sd1_clip_config.json")) as f:
        config = json.load(f)
    clip = comfy.clip_model.CLIPTextModel(config, torch.float32, "cpu", ops)
    vae = comfy.taesd.taesd.TAESD()
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for prefix, module in (
        ("model.diffusion_model.", unet),
        ("cond_stage_model.transformer.", clip),
        ("first_stage_model.", vae),
    ):
        for name, p in module.state_dict().items():
            if not p.is_floating_point():
                value = p.clone()
            elif name.endswith("vae_scale"):
                value = torch.ones_like(p)
            elif name.endswith("vae_shift"):
                value = torch.zeros_like(p)
            elif "norm" in name or "ln_" in name:
                value = torch.ones_like(p) if name.endswith("weight") else torch.zeros_like(p)
            elif name.endswith("bias"):
                value = torch.zeros_like(p)
            else:
                fan_in = p[0].numel() if p.ndim > 1 else p.numel()
                # He-scaled decoder (so images vary with the latent), small elsewhere
                std = (2.0 / fan_in) ** 0.5 if module is vae else min(0.02, fan_in**-0.5)
                value = torch.randn(p.shape, generator=gen) * std
            state[prefix + name] = value.to(torch.float16).contiguous()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = out + ".part"
    save_file(state, tmp)
    os.replace(tmp, out)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: build_checkpoint.py COMFYUI_DIR OUT.safetensors")
    print(build(os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])))
