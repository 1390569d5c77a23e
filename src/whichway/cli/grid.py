"""``whichway grid``: 2-D image grids over a COG subspace of seeds or a barycentric mix of prompts."""

from __future__ import annotations

import argparse
from pathlib import Path

from whichway.cli._options import (
    IMAGE_EXTENSIONS,
    add_generation_options,
    add_model_options,
    check_at_least,
    check_generation,
    check_request,
    check_seed,
    check_seeds,
    load_model,
    out_file_or_folder,
    print_run_estimate,
)

GRID_FILE = "grid.png"
"""File name written inside --out when --out is a folder."""


def _common(p: argparse.ArgumentParser) -> None:
    add_model_options(p)
    p.add_argument("--size", type=int, default=5, help="cells per side (default 5)")
    add_generation_options(p)
    p.add_argument(
        "--out",
        default=GRID_FILE,
        help=f"image file to write ({', '.join(IMAGE_EXTENSIONS)}), or a folder: a path without an "
        f"extension (or an existing folder) gets {GRID_FILE} inside it (default {GRID_FILE})",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("grid", help="2-D grid over a COG subspace of seeds, or over 3-4 prompts")
    kinds = p.add_subparsers(dest="grid_kind", metavar="KIND", required=True)
    s = kinds.add_parser(
        "seeds",
        help="grid over two coordinates of the COG subspace spanned by K >= 2 seeds' latents",
    )
    s.add_argument("prompt", metavar="PROMPT")
    s.add_argument(
        "--seeds",
        default="0,1,2",
        help="comma-separated seeds spanning the subspace (default 0,1,2)",
    )
    s.add_argument(
        "--axes",
        default="0,1",
        help="the two subspace coordinates on the grid's axes (default 0,1)",
    )
    _common(s)
    s.set_defaults(func=run_seeds)
    q = kinds.add_parser(
        "prompts",
        help="Wasserstein-barycenter mixtures of 3 prompts (triangle) or 4 prompts (square)",
    )
    q.add_argument("prompts", metavar="PROMPT", nargs="+")
    q.add_argument("--seed", type=int, default=0)
    _common(q)
    q.set_defaults(func=run_prompts)


def _ints(text: str, what: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{what} must be comma-separated integers, got {text!r}") from None


def _render_options(args: argparse.Namespace) -> dict:
    return {
        "size": args.size,
        "steps": args.steps,
        "guidance": args.guidance,
        "height": args.height,
        "width": args.width,
        "batch_size": args.batch_size,
        "negative_prompt": args.negative_prompt,
        "progress": not args.quiet,
    }


def _check_common(args: argparse.Namespace) -> Path:
    """The checks both grids share (no model needed); returns the image file to write."""
    check_at_least("--size", args.size, 2)
    check_generation(args)
    out = out_file_or_folder(args.out, GRID_FILE, IMAGE_EXTENSIONS)
    check_request(
        args,
        f"--size {args.size}",
        args.size * args.size,  # cells (a triangle of prompts fills about half)
        out=out.parent,
        held_per_frame=_held_per_cell,
        disk_per_frame=_sheet_bytes_per_cell,
    )
    return out


def _held_per_cell(height: int, width: int) -> int:
    """Bytes a grid keeps per cell until its sheet is written: the rendered float32 image, its
    copy in the cell array, the RGB picture and its thumbnail on the sheet."""
    from whichway.budget import thumbnail_pixels

    return 3 * height * width * (4 + 4 + 1) + 3 * thumbnail_pixels(height, width)


def _sheet_bytes_per_cell(height: int, width: int) -> int:
    """Bytes of one cell's thumbnail in the sheet's PNG (a floor)."""
    from whichway.budget import PNG_BYTES_PER_PIXEL, thumbnail_pixels

    return int(thumbnail_pixels(height, width) * PNG_BYTES_PER_PIXEL)


def run_seeds(args: argparse.Namespace) -> int:
    seeds = check_seeds("--seeds", _ints(args.seeds, "--seeds"), minimum=2, distinct=True)
    axes = _ints(args.axes, "--axes")
    if len(axes) != 2 or not all(0 <= a < len(seeds) for a in axes) or axes[0] == axes[1]:
        raise ValueError(
            f"--axes needs two different coordinates in 0..{len(seeds) - 1}, got {args.axes!r}"
        )
    out = _check_common(args)

    from whichway.grid import seed_grid

    adapter = load_model(args)
    print_run_estimate(adapter, args, args.size * args.size)
    result = seed_grid(
        adapter, args.prompt, seeds, out, axes=(axes[0], axes[1]), **_render_options(args)
    )
    print(f"wrote {result.image} ({args.size}x{args.size} cells over seeds {list(seeds)})")
    return 0


def run_prompts(args: argparse.Namespace) -> int:
    if len(args.prompts) not in (3, 4):
        raise ValueError(f"a prompt grid mixes 3 or 4 prompts, got {len(args.prompts)}")
    check_seed("--seed", args.seed)
    out = _check_common(args)

    from whichway.grid import barycentric_weights, prompt_grid

    adapter = load_model(args)
    print_run_estimate(adapter, args, len(barycentric_weights(len(args.prompts), args.size)))
    result = prompt_grid(adapter, args.prompts, out, seed=args.seed, **_render_options(args))
    print(f"wrote {result.image} ({len(args.prompts)} prompts, {args.size} cells per side)")
    return 0
