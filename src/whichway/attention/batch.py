"""Batched AID rendering: the two endpoint rows are denoised once per batch of frames.

The official AID code denoises [A, frame, B] for every frame (three rows per frame). Here a
batch of k frames is one denoiser batch [A, B, m_1 .. m_k] (and its unconditional twin under
guidance, which attends plainly), so k frames cost k + 2 rows per step. The endpoint rows are
the path's own t = 0 and t = 1 waypoints (conditioning and initial latent), so a middle row
sees exactly the endpoint frames the plain morph renders.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    from whichway.attention.methods import AIDSettings, DiffMorpherSettings
    from whichway.models.base import Adapter, Conditioning


@dataclass(frozen=True)
class AttentionPath:
    """What :func:`whichway.render.render_frames` needs to render a path with AID (or
    DiffMorpher: its settings and ``hooks``).

    settings : AIDSettings or DiffMorpherSettings
    ends : Conditioning with E rows      the endpoint conditionings (a morph: its t = 0 and t = 1)
    end_latents : Tensor (E, C, h, w)    the endpoints' initial latents
    coefs : Tensor (T,)                  c of every waypoint handed to render_frames (its t)
    pairs : Tensor (T, 2) or None        each waypoint's endpoints A and B as rows of ``ends``
        (a travel: the keyframes around its segment); None = rows 0 and 1 for every waypoint
    end_negative : Conditioning (E rows) or None   the endpoints' own negatives, when the
        waypoints have one each; None = the shared negative
    hooks : callable or None   DiffMorpher's (:func:`whichway.attention.diffmorpher.diffmorpher_hooks`)
    """

    settings: AIDSettings | DiffMorpherSettings
    ends: Conditioning
    end_latents: Tensor
    coefs: Tensor
    pairs: Tensor | None = None
    end_negative: Conditioning | None = None
    hooks: Any = None

    def renderer(self, adapter: Adapter, rows: slice) -> Any:
        """``adapter.render`` for the waypoints ``rows`` of the path, with AID."""

        def render(cond: Conditioning, latents: Tensor, **options: Any) -> Tensor:
            return render_aid_batch(
                adapter,
                self.settings,
                self.ends,
                self.end_latents,
                cond,
                latents,
                self.coefs[rows],
                pairs=None if self.pairs is None else self.pairs[rows],
                end_negative=self.end_negative,
                hooks=self.hooks,
                **options,
            )

        return render


def with_guide(cond: Conditioning, ts: Tensor, guide: Conditioning) -> Conditioning:
    """PAID's conditioning: the rows with 0 < t < 1 take the guide prompt's (1 row), the end
    rows keep their own. cond (T rows), ts (T,) -> Conditioning (T rows)."""
    from whichway.models.base import Conditioning

    rows = [guide if 0.0 < float(t) < 1.0 else cond.select(i) for i, t in enumerate(ts)]
    return Conditioning.cat(rows)


def _same_row(cond: Conditioning, i: int, ends: Conditioning, j: int) -> bool:
    pick = [(a[i], b[j]) for a, b in zip(cond.clouds, ends.clouds)]
    if cond.pooled is not None and ends.pooled is not None:
        pick.append((cond.pooled[i], ends.pooled[j]))
    return all(torch.equal(x, y) for x, y in pick)


def render_aid_batch(
    adapter: Adapter,
    settings: AIDSettings | DiffMorpherSettings,
    ends: Conditioning,
    end_latents: Tensor,
    cond: Conditioning,
    latents: Tensor,
    coefs: Tensor,
    *,
    steps: int,
    guidance: float,
    height: int,
    width: int,
    negative: Conditioning | None = None,
    on_step: Any = None,
    pairs: Tensor | None = None,
    end_negative: Conditioning | None = None,
    hooks: Any = None,
) -> Tensor:
    """Render k waypoints with AID in one denoiser batch [ends used..., m_1 .. m_k].

    Parameters
    ----------
    ends : Conditioning (E rows)         endpoint conditionings (a morph: A at t = 0, B at t = 1)
    end_latents : Tensor (E, C, h, w)    endpoint initial latents
    cond : Conditioning (k rows)         the waypoints' own conditionings
    latents : Tensor (k, C, h, w)        the waypoints' initial latents
    coefs : Tensor (k,)                  each waypoint's c (its t between its endpoints)
    pairs : Tensor (k, 2) or None        each waypoint's endpoints (rows of ``ends``); None =
        rows 0 and 1
    negative : Conditioning (1 or k rows) or None
    end_negative : Conditioning (E rows) or None   the endpoints' negatives; None = the first
        waypoint's (a morph's negative is shared)
    hooks : callable or None   what acts on the denoiser instead of AID's processors:
        (denoiser, control, row alphas (R,)) -> context manager, the row alphas being 0 for
        endpoint row 0, 1 for row 1 and c for the middle rows (DiffMorpher's LoRA and K/V mix)

    Returns
    -------
    Tensor (k, 3, H, W) images in [0, 1]

    Only the endpoints some waypoint of the batch uses are denoised. With
    ``warmup_calls(steps) == 0`` AID never acts and the waypoints are rendered plainly (the
    endpoint rows would change nothing). A waypoint whose c is 0 (1) and whose inputs are its
    endpoint A's (B's) is that endpoint row itself and is not rendered twice.
    """
    k = len(cond)
    if latents.ndim == 3:
        latents = latents.unsqueeze(0).expand(k, *latents.shape)
    if len(coefs) != k or latents.shape[0] != k:
        raise ValueError(f"got {k} conditionings, {latents.shape[0]} latents, {len(coefs)} coefs")
    options: dict[str, Any] = {"steps": steps, "guidance": guidance, "height": height}
    options.update(width=width, on_step=on_step)
    warmup = settings.warmup_calls(steps)
    if warmup == 0 and hooks is None:
        return adapter.render(cond, latents, negative=negative, **options)
    from whichway.attention.aid import AIDControl, installed
    from whichway.models.base import Conditioning

    pair = [(0, 1)] * k if pairs is None else [(int(a), int(b)) for a, b in pairs.tolist()]
    # waypoints that are an endpoint row (same c, conditioning and latent) reuse its image
    reuse: dict[int, int] = {}
    for i in range(k):
        for end, c in ((pair[i][0], 0.0), (pair[i][1], 1.0)):
            if (
                float(coefs[i]) == c
                and torch.equal(latents[i], end_latents[end].to(latents))
                and _same_row(cond, i, ends, end)
            ):
                reuse[i] = end
    middle = [i for i in range(k) if i not in reuse]
    used = sorted({e for i in middle for e in pair[i]} | set(reuse.values()))
    slot = {e: j for j, e in enumerate(used)}
    rows = Conditioning.cat([ends.select(used).to(dtype=cond.clouds[0].dtype), cond.select(middle)])
    row_latents = torch.cat([end_latents[used].to(latents), latents[middle]])
    if negative is not None:
        # the endpoints' own negatives, or the (shared) negative of the first waypoint
        lead = (
            negative.select([0] * len(used)) if end_negative is None else end_negative.select(used)
        )
        rest = negative.expand(len(middle)) if len(negative) == 1 else negative.select(middle)
        negative = Conditioning.cat([lead, rest])
    # Flux's single-stream blocks see [text; image] without knowing where the text ends
    text_tokens = rows.clouds[0].shape[1] if adapter.family == "flux" else None
    control = AIDControl(
        coefs[middle].double(),
        warmup,
        text_tokens=text_tokens,
        pairs=torch.tensor(
            [[slot[pair[i][0]], slot[pair[i][1]]] for i in middle], dtype=torch.long
        ).reshape(-1, 2),
        leading=len(used),
        # Flux's true CFG: the negative branch is a call of its own, attended plainly
        separate_negative=float(getattr(adapter, "true_cfg_scale", 1.0)) > 1,
    )
    denoiser = getattr(adapter.pipe, "unet", None) or adapter.pipe.transformer
    if hooks is None:
        acting = installed(
            denoiser, control, mode=settings.mode, fused=settings.fused, layers=settings.layers
        )
    else:
        if any(e > 1 for e in used):
            raise ValueError("DiffMorpher morphs between two endpoints (rows 0 and 1) only")
        alphas = torch.cat([torch.tensor(used, dtype=torch.float64), coefs[middle].double()])
        acting = hooks(denoiser, control, alphas)
    with acting:
        images = adapter.render(rows, row_latents, negative=negative, **options)
    order = [slot[reuse[i]] if i in reuse else len(used) + middle.index(i) for i in range(k)]
    return images[order]
