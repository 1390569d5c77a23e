"""2-D grids of images: over a COG subspace of seeds, and over barycentric mixtures of prompts.

* Seed grid: K >= 2 seeds span a K-dimensional subspace of latents (QR basis, paper B); a grid
  over two of its coordinates is mapped back to Gaussian-faithful latents with COG and rendered
  with one prompt.
* Prompt grid: 3 prompts on a triangle (barycentric weights (a, b, c), a + b + c = 1) or 4 prompts
  on a square (bilinear weights). Each cell's conditioning is the free-support Wasserstein
  barycenter of the prompts' token clouds with those weights (the OT generalisation of the
  2-prompt path); pooled vectors are averaged with the same weights.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    from whichway.models.base import Adapter, Conditioning

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GridResult:
    """A rendered grid: ``cells`` (rows, cols, 3, H, W) with NaN-free blanks set to white,
    the image file, and each cell's caption (``""`` for a blank)."""

    cells: Tensor
    image: Path
    labels: tuple[tuple[str, ...], ...]


def barycentric_weights(k: int, steps: int) -> list[tuple[int, int, tuple[float, ...]]]:
    """(row, col, weights) of the cells of a prompt grid.

    k = 3: a triangle in a steps x steps square, cell (i, j) with j <= i has weights
    (1 - i/(s-1), (i - j)/(s-1), j/(s-1)) -- corners A (top), B (bottom left), C (bottom right).
    k = 4: bilinear weights ((1-u)(1-v), u(1-v), (1-u)v, uv) with u = j/(s-1), v = i/(s-1):
    corners A (top left), B (top right), C (bottom left), D (bottom right).
    """
    if k not in (3, 4):
        raise ValueError(f"a prompt grid mixes 3 or 4 prompts, got {k}")
    if steps < 2:
        raise ValueError(f"a grid needs at least 2 steps per side, got {steps}")
    s = steps - 1
    cells = []
    for i in range(steps):
        for j in range(steps):
            if k == 3:
                if j <= i:
                    cells.append((i, j, (1 - i / s, (i - j) / s, j / s)))
            else:
                u, v = j / s, i / s
                cells.append((i, j, ((1 - u) * (1 - v), u * (1 - v), (1 - u) * v, u * v)))
    return cells


def mix_conditionings(conds: Sequence[Conditioning], weights: Sequence[float]) -> Conditioning:
    """Wasserstein barycenter of single-prompt conditionings, group by group (batch 1)."""
    from whichway.clouds import cloud_barycenter
    from whichway.models.base import Conditioning

    w = torch.tensor(weights, dtype=torch.float64)
    groups = []
    for g in range(len(conds[0].clouds)):
        clouds = torch.stack([c.clouds[g][0] for c in conds])
        active = w > 0
        if int(active.sum()) == 1:  # a corner: exactly that prompt
            groups.append(clouds[int(active.nonzero()[0])][None])
            continue
        bary = cloud_barycenter(clouds[active], w[active].to(clouds.dtype))
        groups.append(bary.points[None].to(clouds.dtype))
    pooled = None
    if conds[0].pooled is not None:
        stacked = torch.stack([c.pooled[0] for c in conds])
        pooled = (w.to(stacked.dtype)[:, None] * stacked).sum(0, keepdim=True)
    return Conditioning(tuple(groups), pooled)


def _render_cells(
    adapter: Adapter,
    cond: Conditioning,
    latents: Tensor,
    positions: list[tuple[int, int]],
    labels: list[str],
    shape: tuple[int, int],
    out: Path,
    *,
    steps: int,
    guidance: float,
    height: int,
    width: int,
    batch_size: int | str | None,
    negative_prompt: str | None,
    progress: bool,
) -> GridResult:
    from whichway.media import labelled_grid, to_pil
    from whichway.render import render_frames

    images = render_frames(
        adapter,
        cond,
        latents,
        steps=steps,
        guidance=guidance,
        height=height,
        width=width,
        batch_size=batch_size,
        negative=adapter.encode_negative(negative_prompt, 1),
        progress=progress,
    )
    rows, cols = shape
    cells = torch.ones(rows, cols, *images.shape[1:])
    grid_labels = [["" for _ in range(cols)] for _ in range(rows)]
    for (i, j), image, label in zip(positions, images, labels):
        cells[i, j] = image
        grid_labels[i][j] = label
    from whichway._files import write_atomic

    flat = [to_pil(cells[i, j]) for i in range(rows) for j in range(cols)]
    sheet = labelled_grid(flat, [lab for row in grid_labels for lab in row], columns=cols)
    write_atomic(out, sheet.save)  # temporary name first; an unwritable --out is rescued
    return GridResult(cells, out, tuple(tuple(r) for r in grid_labels))


def seed_grid(
    adapter: Adapter,
    prompt: str,
    seeds: Sequence[int],
    out: str | Path,
    *,
    axes: tuple[int, int] = (0, 1),
    size: int = 5,
    span: tuple[float, float] | None = None,
    steps: int = 30,
    guidance: float = 7.5,
    height: int | None = None,
    width: int | None = None,
    batch_size: int | str | None = 4,
    negative_prompt: str | None = None,
    progress: bool = True,
) -> GridResult:
    """Render a size x size grid over coordinates ``axes`` of the COG subspace of ``seeds``."""
    from whichway.gaussian import LatentSubspace

    if len(seeds) < 2:
        raise ValueError(f"a seed grid needs at least 2 seeds to span a plane, got {len(seeds)}")
    height, width = height or adapter.default_size[0], width or adapter.default_size[1]
    latents = torch.stack([adapter.initial_latent(s, height, width) for s in seeds])
    subspace = LatentSubspace(latents)
    grid = subspace.grid(axes=axes, steps=size, span=span)  # (size, size, C, h, w)
    positions = [(i, j) for i in range(size) for j in range(size)]
    cond = adapter.encode([prompt]).expand(size * size)
    return _render_cells(
        adapter,
        cond,
        grid.reshape(size * size, *grid.shape[2:]),
        positions,
        [f"({i},{j})" for i, j in positions],
        (size, size),
        Path(out),
        steps=steps,
        guidance=guidance,
        height=height,
        width=width,
        batch_size=batch_size,
        negative_prompt=negative_prompt,
        progress=progress,
    )


def prompt_grid(
    adapter: Adapter,
    prompts: Sequence[str],
    out: str | Path,
    *,
    size: int = 5,
    seed: int = 0,
    steps: int = 30,
    guidance: float = 7.5,
    height: int | None = None,
    width: int | None = None,
    batch_size: int | str | None = 4,
    negative_prompt: str | None = None,
    progress: bool = True,
) -> GridResult:
    """Render barycentric mixtures of 3 prompts (triangle) or 4 prompts (square), one seed."""
    from whichway.models.base import Conditioning

    cells = barycentric_weights(len(prompts), size)
    height, width = height or adapter.default_size[0], width or adapter.default_size[1]
    encoded = adapter.encode(list(prompts))
    singles = [encoded.select(k) for k in range(len(prompts))]
    cond = Conditioning.cat([mix_conditionings(singles, w) for _, _, w in cells])
    latent = adapter.initial_latent(seed, height, width)
    labels = ["/".join(f"{x:.2f}".rstrip("0").rstrip(".") for x in w) for _, _, w in cells]
    return _render_cells(
        adapter,
        cond,
        latent,
        [(i, j) for i, j, _ in cells],
        labels,
        (size, size),
        Path(out),
        steps=steps,
        guidance=guidance,
        height=height,
        width=width,
        batch_size=batch_size,
        negative_prompt=negative_prompt,
        progress=progress,
    )
