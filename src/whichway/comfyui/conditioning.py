r"""ComfyUI CONDITIONING as whichway token groups, and the prompt path between two of them.

ComfyUI's ``CLIPTextEncode`` hands over ``[[cond (1, n, d), {"pooled_output": (1, p), ...}]]``.
whichway couples each *token group* separately (a token of one text encoder is never matched to
a token of another). The groups are read from what ComfyUI hands over, by model family:

========  =====  ========  =====================================================================
family    d      pooled p  token groups
========  =====  ========  =====================================================================
SD 1.x    768    768       one: CLIP-L tokens (77 per 75-token chunk)
SD 2.x    1024   1024      one: OpenCLIP-H tokens
SDXL      2048   1280      one: CLIP-L and CLIP-G hidden states concatenated per token
SD3       4096   2048      two: CLIP-L+G rows (zero-padded from 2048 to 4096), then T5 rows
Flux      4096   768       one: T5 tokens
========  =====  ========  =====================================================================

SD3's split is where the zero padding of the CLIP rows ends (a multiple of 77 rows; no such rows:
T5 only, as ComfyUI's SD3 CLIP loaded without CLIP-L/G hands over), not a guess: a tensor that fits none of these is a ValueError naming the shapes. Each group follows the
displacement path of Karris et al. 2025,

.. math::

    E_t[i] = (1 - t)\, E_A[i] + t\, E_B[\sigma(i)], \qquad p_t = (1 - t)\, p_A + t\, p_B,

through :func:`whichway.render.conditioning_path`, so the numbers are exactly those of
``whichway morph``; the groups are concatenated back in ComfyUI's order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from whichway.clouds import Coupling

__all__ = [
    "FAMILIES",
    "PromptPath",
    "TokenGroups",
    "comfy_conditioning",
    "coupling_report",
    "prompt_path",
    "token_groups",
]

#: (name, token width d, pooled width p, group names) of the families ComfyUI's encoders produce.
FAMILIES: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("SD 1.x", 768, 768, ("CLIP-L",)),
    ("SD 2.x", 1024, 1024, ("OpenCLIP-H",)),
    ("SDXL", 2048, 1280, ("CLIP-L+G",)),
    ("SD3", 4096, 2048, ("CLIP-L+G", "T5")),
    ("Flux", 4096, 768, ("T5",)),
)

_CLIP_CHUNK = 77  # ComfyUI's CLIP encoders emit 77 rows per 75-token chunk
_SD3_CLIP_WIDTH = 2048  # CLIP-L (768) + CLIP-G (1280), zero-padded to T5's 4096


@dataclass(frozen=True)
class TokenGroups:
    """How the rows of one CONDITIONING tensor split into whichway token groups.

    family : str                       e.g. ``"SDXL"``
    names : tuple (G,) of str          group names, e.g. ``("CLIP-L+G", "T5")``
    bounds : tuple (G,) of (start, stop)  row ranges of the groups in the tensor (n rows in all)
    """

    family: str
    names: tuple[str, ...]
    bounds: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class PromptPath:
    """A prompt path in ComfyUI's terms.

    conditioning : list   ComfyUI CONDITIONING with one entry whose tensor is (T, n_A, d)
    groups : TokenGroups  of prompt A (the path keeps A's rows)
    couplings : tuple (G,) of Coupling, one per token group
    times : Tensor (T,) float64
    """

    conditioning: list[Any]
    groups: TokenGroups
    couplings: tuple[Coupling, ...]
    times: Tensor


def _shape_help() -> str:
    known = "; ".join(f"{name}: (1, n, {d}) with pooled (1, {p})" for name, d, p, _ in FAMILIES)
    return f"known shapes are {known}"


def _single_entry(name: str, conditioning: Any) -> tuple[Tensor, dict[str, Any]]:
    """The one [tensor, dict] entry of a CONDITIONING, checked."""
    if not isinstance(conditioning, (list, tuple)) or len(conditioning) == 0:
        raise ValueError(
            f"{name} is not a ComfyUI CONDITIONING (a list of [tensor, dict]); connect a CLIPTextEncode output"
        )
    if len(conditioning) != 1:
        raise ValueError(
            f"{name} holds {len(conditioning)} conditioning entries (combined or area conditioning); "
            "connect one CLIPTextEncode output per prompt"
        )
    entry = conditioning[0]
    if (
        not isinstance(entry, (list, tuple))
        or len(entry) != 2
        or not isinstance(entry[0], Tensor)
        or not isinstance(entry[1], dict)
    ):
        raise ValueError(f"{name} is not a ComfyUI CONDITIONING entry [tensor, dict]")
    return entry[0], entry[1]


def token_groups(cond: Tensor, pooled: Tensor | None) -> TokenGroups:
    """Split the rows of a ComfyUI conditioning tensor (1, n, d) into token groups.

    The family is read from the token width d and the pooled width p (table in the module
    docstring); SD3's CLIP rows are the leading rows whose columns 2048..4095 are exactly zero
    (none: the T5 group alone; all: the CLIP group alone).
    Raises ValueError naming the shapes when they fit no family.
    """
    if cond.ndim != 3 or cond.shape[1] == 0:
        raise ValueError(
            f"a CONDITIONING tensor must be (batch, tokens, width), got {tuple(cond.shape)}; {_shape_help()}"
        )
    n, d = cond.shape[1], cond.shape[2]
    p = None if pooled is None else (pooled.shape[-1] if pooled.ndim >= 1 else None)
    for family, width, pooled_width, names in FAMILIES:
        if d != width or p != pooled_width:
            continue
        if family != "SD3":
            return TokenGroups(family, names, ((0, n),))
        padded = (cond[0, :, _SD3_CLIP_WIDTH:] == 0).all(dim=-1)
        split = int(torch.cumprod(padded.to(torch.int64), 0).sum())
        split -= split % _CLIP_CHUNK
        if split == 0:  # no CLIP rows: an SD3 CLIP loaded with T5 only
            return TokenGroups(family, names[1:], ((0, n),))
        if split == n:
            return TokenGroups(family, names[:1], ((0, n),))
        return TokenGroups(family, names, ((0, split), (split, n)))
    shown = None if pooled is None else tuple(pooled.shape)
    raise ValueError(
        f"a CONDITIONING of shape {tuple(cond.shape)} with pooled_output {shown} is not one whichway "
        f"knows; {_shape_help()}. Connect the CLIPTextEncode output of one of these models"
    )


def _as_whichway(name: str, conditioning: Any) -> tuple[Any, TokenGroups, dict[str, Any]]:
    from whichway.models.base import Conditioning

    cond, extras = _single_entry(name, conditioning)
    pooled = extras.get("pooled_output")
    if cond.ndim == 3 and cond.shape[0] != 1:
        raise ValueError(
            f"{name} is a batch of {cond.shape[0]} conditionings; a path needs one prompt per side"
        )
    groups = token_groups(cond, pooled)
    clouds = tuple(cond[:, a:b].float() for a, b in groups.bounds)
    pooled32 = None if pooled is None else pooled.reshape(1, -1).float()
    return Conditioning(clouds, pooled32), groups, extras


def prompt_path(
    cond_a: Any,
    cond_b: Any,
    times: Sequence[float] | Tensor,
    *,
    coupling: str = "ot",
    seed: int = 0,
) -> PromptPath:
    r"""The path of T conditionings between two ComfyUI CONDITIONINGs.

    Parameters
    ----------
    cond_a, cond_b : ComfyUI CONDITIONING, one entry each, tensors (1, n, d) of one family
    times : (T,) values in [0, 1]
    coupling : ``"ot"`` | ``"clip"`` | ``"random"`` (per token group)
    seed : seeds the torch.Generator of the random coupling

    Returns
    -------
    PromptPath whose CONDITIONING tensor is (T, n_A, d) in A's dtype; its ``pooled_output`` is
    (T, p); A's other keys are kept. At t = 0 the rows are A's exactly; at t = 1 a row
    permutation of B's (equal sizes), which cross-attention cannot tell from B.
    """
    from whichway.render import conditioning_path

    wa, groups_a, extras = _as_whichway("conditioning A", cond_a)
    wb, groups_b, _ = _as_whichway("conditioning B", cond_b)
    if groups_a.family != groups_b.family or groups_a.names != groups_b.names:
        raise ValueError(
            f"conditioning A is {groups_a.family} ({', '.join(groups_a.names)}) and B is "
            f"{groups_b.family} ({', '.join(groups_b.names)}); encode both prompts with the same CLIP"
        )
    if coupling != "ot":
        for name, xa, xb in zip(groups_a.names, wa.clouds, wb.clouds):
            if xa.shape[1] != xb.shape[1]:
                raise ValueError(
                    f"{name} tokens: A has {xa.shape[1]} rows and B {xb.shape[1]} (a prompt longer "
                    f"than one 75-token chunk); coupling {coupling!r} needs equal sizes: use ot"
                )
    ts = torch.as_tensor(times, dtype=torch.float64)
    generator = torch.Generator().manual_seed(int(seed))
    path, couplings = conditioning_path(wa, wb, ts, coupling=coupling, generator=generator)
    cond = _single_entry("conditioning A", cond_a)[0]
    return PromptPath(
        comfy_conditioning(path, extras, dtype=cond.dtype, device=cond.device),
        groups_a,
        couplings,
        ts,
    )


def comfy_conditioning(
    path: Any, extras: dict[str, Any], *, dtype: torch.dtype, device: torch.device
) -> list[Any]:
    """A whichway Conditioning (T rows) as a ComfyUI CONDITIONING: the groups concatenated along
    the token axis, ``pooled_output`` (T, p), the other keys of ``extras`` kept."""
    tensor = torch.cat(list(path.clouds), dim=1).to(device=device, dtype=dtype)
    out = dict(extras)
    if path.pooled is not None:
        pooled = extras.get("pooled_output")
        out["pooled_output"] = path.pooled.to(
            device=device if pooled is None else pooled.device,
            dtype=dtype if pooled is None else pooled.dtype,
        )
    return [[tensor, out]]


def coupling_report(
    groups: TokenGroups, couplings: Sequence[Coupling], n_rows: Sequence[int]
) -> str:
    r"""One line per token group: its coupling, cost C(σ), W₂ = √(C/n) and tokens moved (rows
    paired with a row of another index; ``-`` for the transport plan of unequal sizes)."""
    lines = [f"{groups.family}: {len(couplings)} token group{'s' * (len(couplings) != 1)}"]
    for name, c, n in zip(groups.names, couplings, n_rows):
        cost = float(c.cost)
        w2 = (cost / n) ** 0.5
        moved = "-" if c.perm is None else str(int((c.perm.cpu() != torch.arange(n)).sum()))
        lines.append(
            f"{name}: {n} tokens, coupling {c.method}, cost {cost:.6g}, W2 {w2:.6g}, moved {moved}/{n}"
        )
    return "\n".join(lines)
