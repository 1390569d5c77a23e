r"""Initial noise for a batch of frames, as ComfyUI draws it per seed, along a latent path.

ComfyUI's KSampler draws the noise of a batch from one seed, so every batch item gets different
noise; a morph needs the *same* noise for every frame (the paper's fixed seed) or a chosen path
between two seeds. :func:`seed_noise` is exactly the noise ComfyUI draws for a batch of one with
that seed (a CPU ``torch.Generator`` seeded with it, one ``randn`` of the latent's shape), and
:func:`noise_path` moves between two of them (:func:`whichway.render.latent_path`):

.. math::

    \text{fixed: } x_t = x_A, \qquad \text{cog: } x_t = \frac{(1-t)\,x_A + t\,x_B}{\sqrt{(1-t)^2 + t^2}},

slerp and lerp as in :mod:`whichway.gaussian`. :class:`PathNoise` is ComfyUI's NOISE interface
(``seed``, ``generate_noise(latent)``) over that path, for ``SamplerCustomAdvanced`` and the
pack's sampler node.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["NOISE_METHODS", "PathNoise", "noise_path", "parse_times", "seed_noise"]

#: Noise along a morph: one seed for all frames, or a path from seed A to seed B.
NOISE_METHODS: tuple[str, ...] = ("fixed", "cog", "slerp", "lerp")


def parse_times(text: str, frames: int) -> list[float]:
    """Frame times from a node's fields: ``text`` ("0, 0.25, 1") when given, else ``frames``
    uniform values from 0 to 1. Raises ValueError (for ComfyUI's validation) on bad input."""
    text = (text or "").strip()
    if not text:
        if not isinstance(frames, int) or frames < 2:
            raise ValueError(f"frames must be at least 2 (t = 0 and t = 1), got {frames}")
        return [i / (frames - 1) for i in range(frames)]
    values = []
    for part in text.replace("\n", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            values.append(float(part))
        except ValueError:
            raise ValueError(
                f"t values must be numbers separated by commas, e.g. 0, 0.5, 1; got {part!r}"
            ) from None
    if not values:
        raise ValueError("t values are empty; write numbers in [0, 1], e.g. 0, 0.5, 1")
    bad = [v for v in values if not 0.0 <= v <= 1.0]
    if bad:
        raise ValueError(f"t values must lie in [0, 1], got {bad[0]:g}")
    return values


def seed_noise(seed: int, shape: Sequence[int]) -> Tensor:
    """ComfyUI's noise for one latent of ``shape`` (C, h, w) and ``seed``: a CPU generator seeded
    with ``seed`` and one ``randn((1, C, h, w))``; returns (C, h, w) float32."""
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randn((1, *shape), generator=generator, dtype=torch.float32)[0]


def noise_path(
    seed_a: int, seed_b: int, times: Sequence[float], shape: Sequence[int], method: str = "cog"
) -> Tensor:
    """Noise (T, C, h, w) for frames at ``times`` between the noises of ``seed_a`` and ``seed_b``.

    ``fixed`` repeats seed A's noise; ``cog`` / ``slerp`` / ``lerp`` combine the two seeds'
    noises (exact at t = 0 and t = 1 for cog and lerp). Equal seeds give ``fixed``: the COG of a
    latent with itself would rescale it.
    """
    from whichway._checks import check_choice
    from whichway.render import latent_path

    check_choice("noise method", method, NOISE_METHODS)
    x_a = seed_noise(seed_a, shape)
    if method == "fixed" or seed_a == seed_b:
        return latent_path(x_a, None, times, method="fixed")
    return latent_path(x_a, seed_noise(seed_b, shape), times, method=method)


@dataclass(frozen=True)
class PathNoise:
    """ComfyUI's NOISE interface for a batch of frames along a noise path.

    seed : int                 seed A (ComfyUI's samplers read it for their own randomness)
    seed_b : int
    method : str               one of :data:`NOISE_METHODS`
    times : tuple (T,) or None the frames' t; None: uniform over the latent batch it is given
    per_frame : tuple of (seed_a, seed_b, t, method) or None
        a journey's own pair of seeds, t and method per frame (then ``times`` is ignored)
    """

    seed: int
    seed_b: int
    method: str
    times: tuple[float, ...] | None = None
    per_frame: tuple[tuple[int, int, float, str], ...] | None = None

    @property
    def frames(self) -> int | None:
        if self.per_frame is not None:
            return len(self.per_frame)
        return None if self.times is None else len(self.times)

    def generate_noise(self, input_latent: dict[str, Any]) -> Tensor:
        """Noise (B, C, h, w) for the latent batch; a batch of another size than the path's
        frames is a ValueError, not a silent cut."""
        samples = input_latent["samples"]
        batch, shape = samples.shape[0], tuple(samples.shape[1:])
        frames = self.frames
        if frames is not None and frames != batch:
            raise ValueError(
                f"the latent batch has {batch} frames but the noise path {frames}; set the "
                f"EmptyLatentImage batch_size to {frames} (or the path's frames to {batch})"
            )
        if self.per_frame is not None:
            parts = [noise_path(a, b, [t], shape, method)[0] for a, b, t, method in self.per_frame]
            noise = torch.stack(parts)
        else:
            times = self.times if self.times is not None else parse_times("", max(batch, 2))
            if self.times is None and batch == 1:
                times = [0.0]
            noise = noise_path(self.seed, self.seed_b, times, shape, self.method)
        return noise.to(dtype=samples.dtype)
