"""``prompt_interpolation_callback``s in diffusers' FreeNoise signature, so whichway's OT path can
replace FreeNoise's row-by-row lerp inside ``AnimateDiffPipeline`` (``pipe.enable_free_noise(...,
prompt_interpolation_callback=...)``) and a FreeNoise journey can be compared with whichway's.

A callback is called as ``callback(start_index, end_index, start_tensor, end_tensor)`` with the
two keyframes' prompt embeddings (1, L, D) and returns (end_index - start_index + 1, L, D), the
frames from one keyframe to the next, both included, at t_i = i / (end - start).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

InterpolationCallback = Callable[[int, int, "Tensor", "Tensor"], "Tensor"]


def _times(start_index: int, end_index: int) -> Tensor:
    import torch

    if end_index <= start_index:
        raise ValueError(
            f"a keyframe pair needs end_index > start_index, got {start_index} and {end_index}"
        )
    count = end_index - start_index + 1
    return torch.arange(count, dtype=torch.float64) / (count - 1)


def lerp_interpolation(
    start_index: int, end_index: int, start_tensor: Tensor, end_tensor: Tensor
) -> Tensor:
    """FreeNoise's default: E_i = (1 - t_i) E_start + t_i E_end, row by row (token j of one
    prompt with token j of the other). (1, L, D) x 2 -> (n, L, D)."""
    import torch

    ts = _times(start_index, end_index).tolist()
    return torch.cat([(1 - t) * start_tensor + t * end_tensor for t in ts])


def ot_interpolation(method: str = "ot", *, seed: int = 0) -> InterpolationCallback:
    """A callback following whichway's path: each token cloud E_t[i] = (1 - t) E_start[i] +
    t E_end[σ(i)] with σ the optimal assignment (``method="ot"``; "clip" is the lerp, "random"
    a seeded random pairing), computed by :func:`whichway.clouds.interpolate_clouds`."""
    from whichway.clouds import COUPLING_METHODS

    if method not in COUPLING_METHODS:
        raise ValueError(
            f"unknown coupling {method!r}; valid choices are: {', '.join(COUPLING_METHODS)}"
        )

    def callback(
        start_index: int, end_index: int, start_tensor: Tensor, end_tensor: Tensor
    ) -> Tensor:
        import torch

        from whichway.clouds import interpolate_clouds

        if start_tensor.shape[0] != 1 or end_tensor.shape[0] != 1:
            raise ValueError("each keyframe's prompt embedding must have batch 1")
        ts = _times(start_index, end_index).to(start_tensor.dtype)
        with torch.no_grad():  # prompt embeddings carry no gradient here (the pipeline's rule)
            return interpolate_clouds(
                start_tensor[0],
                end_tensor[0],
                ts.to(start_tensor.device),
                method=method,
                generator=torch.Generator().manual_seed(seed),
            )

    return callback
