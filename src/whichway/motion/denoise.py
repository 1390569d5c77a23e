"""The video denoising of a motion journey: every frame's own conditioning and initial latent,
denoised together by an AnimateDiff UNet over sliding context windows.

At each scheduler step τ, with x (T, C, h, w) the frames' latents, each window W = [a, b) is one
``UNetMotionModel`` call on x[a:b] as a (1, C, b - a, h, w) video whose frame f is conditioned on
its own prompt embedding c_f (classifier-free guidance: the unconditional video beside it,
ε = ε_u + g (ε_c - ε_u)). The windows' predictions are fused with the overlap weights of
:mod:`whichway.motion.windows`, and the scheduler steps all T frames at once. Peak memory is that
of one window; the T latents are all that is kept between windows. Frames are decoded one by one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

    from whichway.models.base import Adapter, Conditioning

logger = logging.getLogger(__name__)

OOM_HINT = (
    "out of memory denoising a context window; give a smaller --context-length (frames "
    "denoised at once), --offload model, --vae-tiling or a smaller --height/--width"
)


def shuffled_noise(latents: Tensor, length: int, stride: int, seed: int) -> Tensor:
    """FreeNoise's noise rescheduling: frames after the first window reuse the initial latents
    of the frames ``length`` before them, shuffled within each block of ``stride`` frames by a
    seeded permutation, so every window sees noise the first window saw. (T, C, h, w) -> same."""
    import torch

    out = latents.clone()
    generator = torch.Generator().manual_seed(seed)
    for start in range(length, out.shape[0], stride):
        source = torch.arange(start - length, min(start - length + stride, out.shape[0]))
        count = min(len(source), out.shape[0] - start)
        order = source[torch.randperm(len(source), generator=generator)][:count]
        out[start : start + count] = out[order]
    return out


def render_motion(
    adapter: Adapter,
    unet: Any,
    cond: Conditioning,
    latents: Tensor,
    *,
    steps: int,
    guidance: float,
    height: int,
    width: int,
    context_length: int,
    context_stride: int,
    weighting: str = "pyramid",
    negative: Conditioning | None = None,
    on_frame: Callable[[int, Tensor], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    progress: bool = True,
) -> None:
    """Denoise T frames as one video and hand each decoded frame (3, H, W) in [0, 1] to
    ``on_frame(index, image)``.

    cond : T rows (one per frame); latents : (T, C, h, w) unscaled N(0, I) draws;
    negative : 1 or T rows (default the pipeline's unconditional); ``unet`` from
    :func:`whichway.motion.adapter.motion_unet`. ``on_step(done, total)`` counts window calls
    (steps x windows); ``should_stop`` is polled before each step.
    """
    import torch
    from tqdm.auto import tqdm

    from whichway.models.base import Conditioning
    from whichway.models.memory import is_out_of_memory
    from whichway.motion.windows import context_windows, window_weights
    from whichway.render import stop_if_asked

    adapter._check_cond(cond)
    n = len(cond)
    if latents.shape[0] != n:
        raise ValueError(
            f"got {n} conditionings but {latents.shape[0]} latents; give one per frame"
        )
    windows = context_windows(n, context_length, context_stride)
    pipe = adapter.pipe
    device, dtype = adapter.device, adapter.dtype
    cfg = adapter._uses_cfg(guidance)
    if cfg:
        negative = adapter.encode_negative(None, 1) if negative is None else negative
        negative = negative.expand(n) if len(negative) == 1 else negative
        cond, negative = Conditioning.aligned([cond, negative])
        negative = negative.to(device, dtype)
    cond = cond.to(device, dtype)
    scheduler = pipe.scheduler
    scheduler.set_timesteps(steps, device=device)
    x = latents.to(device=device, dtype=dtype) * scheduler.init_noise_sigma
    total, done = len(scheduler.timesteps) * len(windows), 0
    with (
        torch.no_grad(),
        tqdm(
            total=total,
            desc=f"motion: {n} frames, {len(windows)} window{'s' * (len(windows) != 1)}",
            unit="window",
            disable=not progress,
        ) as bar,
    ):
        try:
            for t in scheduler.timesteps:
                stop_if_asked(should_stop, done, total)
                model_in = scheduler.scale_model_input(x, t)
                eps = torch.zeros_like(x)
                weight = torch.zeros(n, device=device, dtype=dtype)
                for a, b in windows:
                    w = torch.tensor(window_weights(b - a, weighting), device=device, dtype=dtype)
                    eps[a:b] += w[:, None, None, None] * _window_eps(
                        adapter,
                        unet,
                        model_in[a:b],
                        t,
                        cond,
                        negative,
                        a,
                        b,
                        guidance,
                        height,
                        width,
                    )
                    weight[a:b] += w
                    done += 1
                    bar.update(1)
                    if on_step is not None:
                        on_step(done, total)
                x = scheduler.step(eps / weight[:, None, None, None], t, x).prev_sample
            for i in range(n):
                if on_frame is not None:
                    on_frame(i, _decode(pipe, x[i : i + 1])[0])
        except Exception as exc:
            if is_out_of_memory(exc):
                raise RuntimeError(OOM_HINT) from exc
            raise


def _window_eps(
    adapter: Adapter,
    unet: Any,
    x: Tensor,
    t: Tensor,
    cond: Conditioning,
    negative: Conditioning | None,
    a: int,
    b: int,
    guidance: float,
    height: int,
    width: int,
) -> Tensor:
    """The guided noise prediction (F, C, h, w) of frames [a, b) denoised as one video."""
    import torch

    from whichway.models.base import Conditioning

    video = x.permute(1, 0, 2, 3).unsqueeze(0)  # (1, C, F, h, w)
    rows = cond.select(slice(a, b))
    if negative is not None:  # the unconditional video first, as the pipelines batch it
        video = torch.cat([video, video])
        rows = Conditioning.cat([negative.select(slice(a, b)), rows])
    kwargs = adapter._unet_kwargs(rows, height, width, guidance)
    with per_frame_added_conditions(unet, t, kwargs, b - a):
        out = unet(video, t, return_dict=False, **kwargs)[0].permute(0, 2, 1, 3, 4)  # (B,F,C,h,w)
    if negative is None:
        return out[0]
    uncond, text = out[0], out[1]
    return uncond + guidance * (text - uncond)


@contextmanager
def per_frame_added_conditions(
    unet: Any, t: Tensor, kwargs: dict[str, Any], frames: int
) -> Iterator[None]:
    """Give each frame its own SDXL added conditions inside ``unet`` (a ``UNetMotionModel``).

    ``kwargs["added_cond_kwargs"]`` holds B x F rows (``text_embeds`` (B F, P), ``time_ids``
    (B F, 6)), video-major. ``UNetMotionModel`` embeds one row per video and repeats it over the
    frames; here each frame's embedding

        emb_f = time_embedding(time_proj(t)) + add_embedding([pooled_f, add_time_proj(ids_f)])

    (what the still UNet computes for that frame) replaces the repeated one at every block, and
    the forward gets one row per video. No added conditions (SD 1.x): nothing changes."""
    import torch

    added = kwargs.get("added_cond_kwargs")
    if not added or unet.config.addition_embed_type != "text_time":
        yield
        return
    pooled, ids = added["text_embeds"], added["time_ids"]
    rows = pooled.shape[0]
    t_emb = unet.time_proj(t.reshape(-1).expand(rows)).to(dtype=unet.dtype)
    emb = unet.time_embedding(t_emb, kwargs.get("timestep_cond"))
    time_embeds = unet.add_time_proj(ids.flatten()).reshape(rows, -1)
    emb = emb + unet.add_embedding(torch.cat([pooled, time_embeds], dim=-1).to(emb.dtype))
    kwargs["added_cond_kwargs"] = {"text_embeds": pooled[::frames], "time_ids": ids[::frames]}

    def replace_temb(module: Any, args: tuple, block_kwargs: dict) -> tuple:
        if "temb" in block_kwargs:
            block_kwargs["temb"] = emb
        else:  # the mid block takes (hidden_states, temb, ...)
            args = (args[0], emb, *args[2:])
        return args, block_kwargs

    blocks = [*unet.down_blocks, unet.mid_block, *unet.up_blocks]
    handles = [  # first, so that hooks of the caller see the per-frame embedding
        b.register_forward_pre_hook(replace_temb, with_kwargs=True, prepend=True) for b in blocks
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _decode(pipe: Any, latent: Tensor) -> Tensor:
    """One latent (1, C, h, w) -> image (1, 3, H, W) float32 CPU in [0, 1], as the pipeline's
    ``output_type="pt"`` decodes it."""
    from whichway.models._common import images_to_cpu

    image = pipe.vae.decode(latent / pipe.vae.config.scaling_factor, return_dict=False)[0]
    image = pipe.image_processor.postprocess(image, output_type="pt", do_denormalize=[True])
    return images_to_cpu(image)
