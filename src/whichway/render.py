"""Batched, streaming rendering of interpolation paths.

A path is a list of waypoints t_0 = 0 < ... < t_K = 1. Each waypoint has

* a conditioning: every token group of prompt A is coupled to prompt B's (``ot`` | ``clip`` |
  ``random``, :func:`whichway.clouds.couple`) and displacement-interpolated,
  E_t[i] = (1 - t) E_0[i] + t E_1[sigma(i)]; pooled vectors are interpolated linearly;
* an initial latent: the same seed for every frame (the paper's setting), or a latent path
  between two seeds or two inverted images (``cog`` | ``slerp`` | ``lerp`` | ``nao``).

All waypoints go through the pipeline in batches of ``batch_size`` (guidance's two halves in the
same batch), each prompt is encoded once, the pipeline is built once, and frames are handed to
``on_frame`` as soon as their batch finishes, so memory is bounded by the batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from whichway._checks import SettingError, as_times, check_choice
from whichway.clouds import Coupling, couple, interpolate_clouds

if TYPE_CHECKING:  # pragma: no cover
    from whichway.attention.batch import AttentionPath
    from whichway.models.base import Adapter, Conditioning

logger = logging.getLogger(__name__)

LATENT_METHODS = ("fixed", "cog", "slerp", "lerp", "nao")
"""How the initial latent varies along a path; ``fixed`` = one seed for every frame."""


class RenderCancelled(Exception):
    """``render_frames`` stopped between batches because ``should_stop()`` returned True; every
    frame of the finished batches was already handed to ``on_frame`` (and so is kept)."""

    def __init__(self, done: int, total: int) -> None:
        super().__init__(f"cancelled after {done} of {total} frames; finished frames are kept")
        self.done = done
        self.total = total


def stop_if_asked(should_stop: Callable[[], bool] | None, done: int = 0, total: int = 0) -> None:
    """Raise :class:`RenderCancelled` when ``should_stop()`` says so (None: never): the check a
    run makes between its phases (encoding, inversion steps, batches, writing) so that a cancel
    is honoured within one denoiser call or batch."""
    if should_stop is not None and should_stop():
        raise RenderCancelled(done, total)


def _lerp_exact(a: Tensor, b: Tensor, ts: Tensor) -> Tensor:
    """(1 - t) a + t b for each t in ts (T,), exact at t = 0 and t = 1; returns (T, *a.shape)."""
    t = ts.to(dtype=a.dtype, device=a.device).reshape(-1, *([1] * a.ndim))
    return (1 - t) * a.unsqueeze(0) + t * b.unsqueeze(0)


def conditioning_path(
    cond_a: Conditioning,
    cond_b: Conditioning,
    ts: Tensor | Sequence[float],
    *,
    coupling: str = "ot",
    generator: torch.Generator | None = None,
    couplings: Sequence[Coupling] | None = None,
) -> tuple[Conditioning, tuple[Coupling, ...]]:
    """Conditionings of T waypoints between two single-prompt conditionings.

    Parameters
    ----------
    cond_a, cond_b : Conditioning with batch 1
        Prompts A and B, from the same adapter.
    ts : Tensor (T,)
        Waypoint times in [0, 1].
    coupling : "ot" | "clip" | "random"
        How token rows of A are paired with token rows of B, per token group.
    couplings : one Coupling per token group, optional
        Couplings computed by an earlier call (reused as they are; ``coupling`` is then ignored),
        so a path rendered in pieces pairs its tokens once.

    Returns
    -------
    (Conditioning with T rows, one Coupling per token group)

    Each token group follows E_t[i] = (1 - t) E_A[i] + t E_B[sigma(i)] (rows in A's order);
    pooled vectors follow (1 - t) p_A + t p_B. With ``ot`` this is the Wasserstein geodesic.
    """
    from whichway.models.base import Conditioning

    if len(cond_a) != 1 or len(cond_b) != 1:
        raise ValueError(
            f"conditioning_path needs one prompt per side, got batches {len(cond_a)} and {len(cond_b)}"
        )
    if len(cond_a.clouds) != len(cond_b.clouds) or (cond_a.pooled is None) != (
        cond_b.pooled is None
    ):
        raise ValueError("the two conditionings come from different model families")
    # clouds of different row counts (long prompts of different chunk counts): both tiled to
    # the least common multiple, which cross-attention cannot tell from the prompts, so the
    # coupling is an exact assignment and the path ends at B itself
    cond_a, cond_b = Conditioning.aligned([cond_a, cond_b])
    first = cond_a.clouds[0]
    times, _ = as_times(ts, dtype=first.dtype, device=first.device)
    if couplings is not None and len(couplings) != len(cond_a.clouds):
        raise ValueError(f"got {len(couplings)} couplings for {len(cond_a.clouds)} token groups")
    groups: list[Tensor] = []
    used: list[Coupling] = []
    for g, (xa, xb) in enumerate(zip(cond_a.clouds, cond_b.clouds)):
        c = (
            couple(xa[0], xb[0], coupling, generator=generator)
            if couplings is None
            else couplings[g]
        )
        used.append(c)
        groups.append(interpolate_clouds(xa[0], xb[0], times, coupling=c))
    pooled = None
    if cond_a.pooled is not None and cond_b.pooled is not None:
        pooled = _lerp_exact(cond_a.pooled[0], cond_b.pooled[0], times)
    return Conditioning(tuple(groups), pooled), tuple(used)


def latent_path(
    latent_a: Tensor,
    latent_b: Tensor | None,
    ts: Tensor | Sequence[float],
    *,
    method: str = "cog",
) -> Tensor:
    """Initial latents (T, C, h, w) along a path.

    ``fixed`` repeats ``latent_a``; ``cog`` / ``slerp`` / ``lerp`` combine ``latent_a`` and
    ``latent_b`` at each t (:mod:`whichway.gaussian`); ``nao`` optimises a norm-aware path with
    one point per waypoint and needs uniformly spaced t.
    """
    from whichway import gaussian

    check_choice("latent method", method, LATENT_METHODS)
    times, _ = as_times(ts, dtype=torch.float64, device=torch.device("cpu"))
    if method == "fixed":
        return latent_a.unsqueeze(0).expand(len(times), *latent_a.shape).clone()
    if latent_b is None:
        raise ValueError(
            f"latent method {method!r} needs a second latent (a second seed or image); "
            "use method='fixed' for one seed"
        )
    if method == "nao":
        uniform = torch.linspace(0, 1, len(times), dtype=torch.float64)
        if len(times) < 3 or not torch.allclose(times, uniform, atol=1e-9):
            raise SettingError(
                "latent method 'nao' optimises a path of equally spaced points: use {frames} N "
                "(N >= 3) with uniform spacing, or choose cog/slerp/lerp for arbitrary t"
            )
        return gaussian.nao_interpolate(latent_a, latent_b, n_points=len(times)).points
    fn = {"cog": gaussian.cog_interpolate, "slerp": gaussian.slerp, "lerp": gaussian.lerp}[method]
    return fn(latent_a, latent_b, times.to(latent_a.dtype))


def render_frames(
    adapter: Adapter,
    cond: Conditioning,
    latents: Tensor,
    *,
    steps: int,
    guidance: float,
    height: int,
    width: int,
    batch_size: int | str | None = 4,
    negative: Conditioning | None = None,
    on_frame: Callable[[int, Tensor], None] | None = None,
    progress: bool = True,
    keep: bool = True,
    on_step: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_batch_size: Callable[[int], None] | None = None,
    attention: AttentionPath | None = None,
) -> Tensor | None:
    """Render T waypoints in batches.

    Frames rendered in one batch equal the frames rendered one at a time (float tolerance).

    Parameters
    ----------
    cond : Conditioning with T rows
    latents : Tensor (T, C, h, w), or (C, h, w) shared by every frame
    negative : Conditioning with batch 1 (shared) or T rows (one per frame), or None for the
        pipeline's own unconditional
    on_frame : called as ``on_frame(index, image (3, H, W) in [0, 1])`` when a batch finishes
    keep : return the frames (T, 3, H, W); with False nothing is kept (streaming to ``on_frame``)
    on_step : called as ``on_step(done, total)`` after every denoising step of every batch
        (``total`` = batches x steps), e.g. to drive a web page's progress bar
    should_stop : polled before each batch; when it returns True, :class:`RenderCancelled` is
        raised (frames of the finished batches were already handed to ``on_frame``)
    on_batch_size : called with the smaller batch size after an out-of-memory retry, so that a
        caller rendering in several calls starts the next one at the size that fits
    attention : render with attention interpolation (AID, :mod:`whichway.attention`): each
        batch is denoised with the path's two endpoint rows beside it; None = plain rendering
    """
    from tqdm.auto import tqdm

    from whichway.models.memory import is_out_of_memory, release_cached_memory, resolve_batch_size

    n = len(cond)
    if n == 0:
        raise ValueError("nothing to render: the conditioning has no rows")
    if latents.ndim == 3:
        latents = latents.unsqueeze(0).expand(n, *latents.shape)
    if latents.shape[0] != n:
        raise ValueError(
            f"got {n} conditionings but {latents.shape[0]} latents; give one per frame or one shared"
        )
    planned = batch_size == "auto" or (
        batch_size is None and torch.device(adapter.device).type != "cpu"
    )
    if attention is not None and planned:
        # AID denoises the path's two endpoint rows beside every batch: plan rows, not frames
        rows = resolve_batch_size(batch_size, adapter, n + 2, height, width, guidance)
        batch_size = max(1, rows - 2)
    else:
        batch_size = resolve_batch_size(batch_size, adapter, n, height, width, guidance)
    if negative is None:
        negative = adapter.encode_negative(None, 1)
    if len(negative) not in (1, n):
        raise ValueError(
            f"got {n} conditionings but {len(negative)} negatives; give one per frame or one shared"
        )
    kept: list[Tensor] = []
    n_batches = -(-n // batch_size)
    # steps done and planned, counted here: a disabled tqdm bar (progress=False) counts nothing
    done, total = 0, n_batches * steps
    with tqdm(
        total=total,
        desc=f"rendering {n} frame{'s' * (n != 1)}",
        unit="step",
        disable=not progress,
        leave=False,
    ) as bar:

        def step() -> None:
            nonlocal done
            done += 1
            bar.update(1)
            if on_step is not None:
                on_step(done, total)

        start = 0
        while start < n:
            stop_if_asked(should_stop, start, n)
            stop = min(start + batch_size, n)
            counted = done
            out_of_memory = False
            render = (
                adapter.render
                if attention is None
                else attention.renderer(adapter, slice(start, stop))
            )
            try:
                images = render(
                    cond.select(slice(start, stop)),
                    latents[start:stop],
                    steps=steps,
                    guidance=guidance,
                    height=height,
                    width=width,
                    negative=negative.expand(stop - start)
                    if len(negative) == 1
                    else negative.select(slice(start, stop)),
                    on_step=step,
                )
            except Exception as exc:
                if not is_out_of_memory(exc) or stop - start == 1:
                    if is_out_of_memory(exc):
                        logger.error(
                            "out of memory with one frame per batch; run `whichway doctor --model "
                            "%s` for the options that fit (offloading, VAE tiling, a smaller size)",
                            getattr(adapter, "model_id", "") or "MODEL",
                        )
                    raise
                out_of_memory = True
            if out_of_memory:  # outside the handler: the traceback's tensors are released first
                release_cached_memory(adapter.device)
                batch_size = (stop - start) // 2
                if on_batch_size is not None:
                    on_batch_size(batch_size)
                logger.warning(
                    "out of memory at frames %d-%d; retrying with %d frames per batch (frames "
                    "already finished are kept)",
                    start,
                    stop - 1,
                    batch_size,
                )
                # the failed batch's steps are redone: rebase the count on the batches left
                done, total = counted, counted + (-(-(n - start) // batch_size)) * steps
                bar.total, bar.n = total, done
                bar.refresh()
                continue
            for offset, image in enumerate(images):
                if on_frame is not None:
                    on_frame(start + offset, image)
            if keep:
                kept.append(images)
            start = stop
    return torch.cat(kept) if keep else None
