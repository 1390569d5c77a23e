"""Does the denoiser see the order of the text tokens? Measure it, don't assume it.

Paper A's premise is that cross-attention, softmax(QKᵀ/√D)V, is invariant to permuting the rows
of K and V, i.e. the text tokens, so a prompt's embedding is a point cloud. That holds for any
denoiser whose text tokens carry no position of their own inside the denoiser (SD 1.x/2.x and
SDXL cross-attention; SD3's joint attention if its text tokens get no positional encoding; Flux
if all text tokens share one RoPE position). The check runs the denoiser twice on the same latent
and timestep: once with the token rows in order, once with the rows of every token group
permuted (one seeded random permutation per group), and compares the outputs:

.. math::  \\text{max\\_rel} = \\max|f(x, t, P E) - f(x, t, E)| \\,/\\, \\max|f(x, t, E)|

An invariant model gives rounding noise (≈1e-7 in float32); a model that sees token order
(absolute positions added inside the denoiser) gives a difference of the order of the text's
own effect on the output, which the report also measures (in-order prompt vs the unconditional
embedding), so a model that ignores its text is not mistaken for an invariant one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from whichway.models.base import Adapter, Conditioning

DEFAULT_PROMPT = "a photo of an astronaut riding a horse on the moon"

#: relative tolerance of the verdict per dtype: a few hundred ulps of the output's scale
TOLERANCES: dict[torch.dtype, float] = {
    torch.float32: 1e-4,
    torch.float64: 1e-9,
    torch.float16: 1e-2,
    torch.bfloat16: 5e-2,
}


@dataclass(frozen=True)
class InvarianceReport:
    """What one permuted-token denoiser call showed.

    family, model, dtype : what was checked
    prompt, seed, size : the prompt whose tokens were permuted, the seed of the latent and of the
        permutations (when no generator was given), the image size (height, width) of the latent
    n_tokens : tuple of int, the number of token rows of each group (all permuted)
    timestep : the denoiser's timestep (scheduler training scale)
    max_abs : max |f(P E) − f(E)| over the output
    max_rel : max_abs / max |f(E)|
    text_effect : max |f(E) − f(E_uncond)| / max |f(E)|, how much the text moves the output
    tolerance : max_rel threshold of the verdict for this dtype
    invariant : max_rel <= tolerance
    informative : text_effect > 10 · tolerance (otherwise the text barely matters and an
        "invariant" verdict says little)
    """

    family: str
    model: str
    dtype: str
    prompt: str
    seed: int
    size: tuple[int, int]
    n_tokens: tuple[int, ...]
    timestep: float
    max_abs: float
    max_rel: float
    text_effect: float
    tolerance: float
    invariant: bool
    informative: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        verdict = "INVARIANT to" if self.invariant else "SENSITIVE to"
        lines = [
            (
                f"{self.model or self.family} ({self.family}, {self.dtype}): "
                f"{verdict} the order of its text tokens"
            ),
            (
                f"  token groups permuted: {', '.join(map(str, self.n_tokens))} rows; "
                f"timestep {self.timestep:g}"
            ),
            f"  max |difference|      = {self.max_abs:.3e}",
            f"  relative to output    = {self.max_rel:.3e}  (tolerance {self.tolerance:.0e})",
            f"  text effect (vs uncond) = {self.text_effect:.3e}",
        ]
        if not self.informative:
            lines.append(
                "  note: the text barely changes this model's output; the verdict says little"
            )
        return "\n".join(lines)


def permute_tokens(
    cond: Conditioning, generator: torch.Generator
) -> tuple[Conditioning, tuple[Tensor, ...]]:
    """Permute the token rows of every group by one random permutation per group.

    cond : Conditioning with clouds (B, n_g, d_g); pooled vectors are left alone.
    Returns the permuted conditioning and the permutations (n_g,) (a non-identity one whenever
    n_g > 1, so the check never compares a conditioning with itself).
    """
    perms: list[Tensor] = []
    clouds: list[Tensor] = []
    for cloud in cond.clouds:
        n = cloud.shape[1]
        perm = torch.randperm(n, generator=generator)
        if n > 1 and torch.equal(perm, torch.arange(n)):
            perm = torch.roll(perm, 1)
        perms.append(perm)
        clouds.append(cloud[:, perm.to(cloud.device)])
    return Conditioning(tuple(clouds), cond.pooled), tuple(perms)


def check_invariance(
    adapter: Adapter,
    *,
    prompt: str = DEFAULT_PROMPT,
    seed: int = 0,
    timestep: float | None = None,
    generator: torch.Generator | None = None,
    height: int | None = None,
    width: int | None = None,
    tolerance: float | None = None,
) -> InvarianceReport:
    """Run the denoiser with the prompt's token rows in order and permuted; compare.

    adapter : a loaded model (:func:`whichway.models.load_adapter`)
    seed : seed of the latent (``adapter.initial_latent``) and, without ``generator``, of the
        permutations
    timestep : denoiser timestep; default half the scheduler's training range (500 of 1000)
    height, width : image size of the latent; default the model's default size
    tolerance : relative threshold of the verdict; default by the adapter's dtype
        (float32 1e-4, float16 1e-2, bfloat16 5e-2)
    """
    if not isinstance(adapter, Adapter):
        raise ValueError(
            f"adapter must be a whichway Adapter (from load_adapter), got {type(adapter).__name__}"
        )
    if tolerance is None:
        tolerance = TOLERANCES.get(adapter.dtype, 1e-2)
    if not tolerance > 0:
        raise ValueError(f"tolerance must be positive, got {tolerance!r}")
    if timestep is None:
        timestep = float(adapter.pipe.scheduler.config.num_train_timesteps) / 2
    default_h, default_w = adapter.default_size
    height, width = height or default_h, width or default_w
    generator = generator if generator is not None else torch.Generator("cpu").manual_seed(seed)

    cond = adapter.encode([prompt])
    permuted, _ = permute_tokens(cond, generator)
    uncond = adapter.encode_negative(None, 1)
    latent = adapter.initial_latent(seed, height, width).unsqueeze(0)

    reference = adapter.denoise_once(cond, latent, timestep).double()
    shuffled = adapter.denoise_once(permuted, latent, timestep).double()
    unconditional = adapter.denoise_once(uncond, latent, timestep).double()

    scale = float(reference.abs().max())
    if not torch.isfinite(reference).all() or scale == 0.0:
        raise ValueError(
            f"the denoiser output is {'not finite' if scale else 'all zeros'}; "
            "cannot judge invariance "
            "(try float32 or another timestep)"
        )
    max_abs = float((shuffled - reference).abs().max())
    max_rel = max_abs / scale
    text_effect = float((unconditional - reference).abs().max()) / scale
    return InvarianceReport(
        family=adapter.family,
        model=adapter.model_id,
        dtype=str(adapter.dtype).replace("torch.", ""),
        prompt=prompt,
        seed=seed,
        size=(height, width),
        n_tokens=tuple(int(c.shape[1]) for c in cond.clouds),
        timestep=float(timestep),
        max_abs=max_abs,
        max_rel=max_rel,
        text_effect=text_effect,
        tolerance=float(tolerance),
        invariant=max_rel <= tolerance,
        informative=text_effect > 10 * tolerance,
    )
