"""What a prompt weight does to the token embeddings: the rules in use, as pure tensor math.

For one chunk of L tokens, z (L, d) is the text encoder's output, w (L,) the tokens' weights
(1 for BOS, EOS and padding) and e (L, d) the output for the empty chunk (BOS, EOS, padding) of
the same length:

* ``comfyui`` (default; ComfyUI's CLIPTextEncode):  z'ᵢ = eᵢ + wᵢ·(zᵢ − eᵢ) -- each token moves
  along the line from the empty prompt's token at its position, w = 1 leaves it in place.
* ``a1111`` (A1111 "Original" emphasis):  z' = (w ⊙ z) · mean(z) / mean(w ⊙ z), the means over
  all L·d entries of the chunk: scale each token, then restore the chunk's mean.
* ``multiply`` (A1111 "No norm"):  z'ᵢ = wᵢ·zᵢ.

With every weight 1 each rule returns z unchanged (the same tensor), so ``(word:1.0)`` is ``word``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from whichway.prompts.options import (
    DEFAULT_WEIGHTING,
    WEIGHTING_RULES,
    check_weighting,
)

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

__all__ = ["DEFAULT_WEIGHTING", "WEIGHTING_RULES", "apply_weights", "check_weighting"]


def apply_weights(z: Tensor, weights: Tensor, rule: str, empty: Tensor | None = None) -> Tensor:
    """Weighted chunk encodings.

    z : Tensor (k, L, d)    encoder output of k chunks
    weights : Tensor (k, L) per-token weights
    rule : one of :data:`WEIGHTING_RULES`
    empty : Tensor (L, d)   encoder output of the empty chunk (``comfyui`` only)

    Returns (k, L, d) in z's dtype; chunks whose weights are all 1 are returned as they are.
    """
    import torch

    check_weighting(rule)
    if z.ndim != 3 or weights.shape != z.shape[:2]:
        raise ValueError(
            f"z must be (k, L, d) and weights (k, L); got {tuple(z.shape)}, {tuple(weights.shape)}"
        )
    out = z.clone()
    w = weights.to(device=z.device, dtype=z.dtype)
    for k in range(z.shape[0]):
        if bool((weights[k] == 1).all()):
            continue
        wk = w[k].unsqueeze(-1)
        if rule == "comfyui":
            if empty is None or empty.shape != z.shape[1:]:
                raise ValueError("the comfyui rule needs the empty chunk's encoding (L, d)")
            e = empty.to(device=z.device, dtype=z.dtype)
            moved = (z[k] - e) * wk + e
            out[k] = moved.where(wk != 1, z[k])
        elif rule == "a1111":
            # the mean ratio in float64: both means are sums of L·d terms of either sign
            z64 = z[k].double()
            scaled = z64 * weights[k].to(device=z.device, dtype=torch.float64).unsqueeze(-1)
            out[k] = (scaled * (z64.mean() / scaled.mean())).to(z.dtype)
        else:
            out[k] = z[k] * wk
    return out
