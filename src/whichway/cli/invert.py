"""``whichway invert``: DDIM (or flow-matching Euler) inversion of an image to its initial latent.

The image is encoded by the model's VAE and integrated backwards along the deterministic
sampler conditioned on ``--prompt`` (guidance 1.0 by default, i.e. no classifier-free
guidance). The latent is saved as ``.safetensors`` (key ``latent``, settings as metadata) or
``.pt``. With ``--check`` the latent is rendered again with the same prompt, steps, guidance and
size, the reconstruction is saved as a PNG next to the latent and its error is printed.

For the diffusion families the pipeline renders inverted latents with a DDIMScheduler built from
its own config (DDIM inversion is exact only for DDIM sampling); a morph that uses the latent
must use the same number of steps.

The module's top level imports only the standard library.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from whichway.cli._options import (
    LATENT_EXTENSIONS,
    add_model_options,
    check_at_least,
    check_input_image,
    check_out_file,
    check_request,
    check_size,
    load_model,
    out_file_or_folder,
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "invert",
        help="invert an image to the initial latent that regenerates it (DDIM / Euler inversion)",
        description=(
            "Encode IMAGE with the model's VAE and run the deterministic sampler backwards "
            "conditioned on --prompt; save the initial latent. --check renders it again and "
            "reports the reconstruction error."
        ),
    )
    parser.add_argument(
        "image", type=Path, metavar="IMAGE", help="image file (PNG, JPEG, WebP, ...)"
    )
    parser.add_argument(
        "--prompt", required=True, help="a prompt describing the image (e.g. its class name)"
    )
    add_model_options(parser)
    parser.add_argument(
        "--steps", type=int, default=50, help="inversion steps = rendering steps (default 50)"
    )
    parser.add_argument(
        "--guidance",
        type=float,
        default=1.0,
        help="classifier-free guidance during inversion (default 1.0 = none)",
    )
    parser.add_argument(
        "--height",
        type=int,
        default=None,
        help="resize to this height (default: the image's, rounded down to a multiple of 8)",
    )
    parser.add_argument(
        "--width",
        type=int,
        default=None,
        help="resize to this width (default: the image's, rounded down to a multiple of 8)",
    )
    parser.add_argument(
        "--refine",
        type=int,
        default=0,
        help="fixed-point refinements per inversion step (default 0; each costs one more "
        "denoiser call per step)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="latent file (.safetensors, .pt or .pth), or a folder: a path without an extension (or "
        "an existing folder) gets IMAGE's name with .latent.safetensors inside it (default: that "
        "name in the current directory)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="render the latent again and report the reconstruction error",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def check_args(args: argparse.Namespace) -> Path:
    """Every invert argument that needs no model; returns the latent file to write."""
    check_input_image(args.image, "IMAGE")
    check_at_least("--steps", args.steps, 1)
    check_at_least("--refine", args.refine, 0)
    check_size("--height", args.height)
    check_size("--width", args.width)
    # steps within the scheduler's, one image's decoding and encoding within the memory
    check_request(args, f"IMAGE {args.image.name}", 1, out=None)
    name = f"{args.image.stem}.latent.safetensors"
    if args.out is None:
        return check_out_file(Path(name), LATENT_EXTENSIONS)
    return out_file_or_folder(args.out, name, LATENT_EXTENSIONS)


def run(args: argparse.Namespace) -> int:
    out = check_args(args)

    from tqdm import tqdm

    from whichway import __version__
    from whichway._files import write_atomic
    from whichway.media import load_image, save_image
    from whichway.models._common import prepare_image, save_latent

    image = load_image(args.image)  # ValueError naming the file when unreadable
    adapter = load_model(args)
    if adapter.sampler not in (None, adapter.inversion_sampler):
        import logging

        logging.getLogger("whichway.invert").warning(
            "inversion is the exact inverse of %s, so it and --check use %s; --sampler %s is not used",
            adapter.inversion_sampler,
            adapter.inversion_sampler,
            adapter.sampler,
        )
    if hasattr(adapter, "inversion_refine"):
        adapter.inversion_refine = args.refine
    elif args.refine:
        raise ValueError(f"--refine is not supported by the {adapter.family} adapter")

    with tqdm(
        total=args.steps * (args.refine + 1),
        desc="inverting",
        unit="step",
        disable=args.quiet,
        file=sys.stderr,
    ) as bar:
        latent = adapter.invert(
            image,
            args.prompt,
            steps=args.steps,
            guidance=args.guidance,
            height=args.height,
            width=args.width,
            on_step=lambda: bar.update(1),
        )
    f = adapter.pipe.vae_scale_factor
    height, width = int(latent.shape[-2]) * f, int(latent.shape[-1]) * f
    metadata = {
        "whichway": __version__,
        "command": "invert",
        "image": str(args.image),
        "prompt": args.prompt,
        "model": adapter.model_id,
        "family": adapter.family,
        "steps": args.steps,
        "guidance": args.guidance,
        "refine": args.refine,
        "height": height,
        "width": width,
        "scheduler": type(adapter.pipe.scheduler).__name__,
    }
    if adapter.runtime is not None:
        metadata["runtime"] = json.dumps(adapter.runtime.describe())
    write_atomic(
        out, lambda tmp: save_latent(latent, tmp, metadata)
    )  # a finished inversion is never lost
    std = float(latent.std())
    print(f"latent {tuple(latent.shape)} (std {std:.3f}) of {args.image} saved to {out}")

    if args.check:
        cond = adapter.encode([args.prompt])
        with tqdm(
            total=args.steps, desc="re-rendering", unit="step", disable=args.quiet, file=sys.stderr
        ) as bar:
            rendered = adapter.render(
                cond,
                latent.unsqueeze(0),
                steps=args.steps,
                guidance=args.guidance,
                height=height,
                width=width,
                on_step=lambda: bar.update(1),
            )[0]
        target = (prepare_image(image, height, width)[0] + 1) / 2
        error = float((rendered - target).abs().mean())
        mse = float(((rendered - target) ** 2).mean())
        psnr = math.inf if mse == 0 else 10 * math.log10(1.0 / mse)
        png = out.with_name(out.name.split(".")[0] + ".reconstruction.png")
        save_image(rendered, png)
        print(
            f"reconstruction saved to {png}: mean |error| {error:.4f} (pixels in [0, 1]), "
            f"PSNR {psnr:.2f} dB"
        )
    return 0
