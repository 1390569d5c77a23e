"""DiffMorpher: whichway's batched render vs the official store-then-load layout.

A DiffMorpher morph (two per-image LoRAs interpolated per factor, the up blocks' self-attention
keys/values mixed from the end frames' hidden states for the calls i < λ·steps, AdaIN-slerped
initial latents) is rendered twice on the same model in the same run:

* store-then-load (the official ``Kevin-thu/DiffMorpher`` layout, ``model.py``'s ``morph``):
  the two end frames are rendered first, one row each, with a ``StoreProcessor`` on every
  up-block self-attention layer that keeps its input hidden states for every denoiser call;
  then each middle frame is rendered as one row whose ``LoadProcessor`` attends to
  (1 - α) h_A + α h_B taken from that store. Written here with whichway's own pieces (its
  per-row LoRA layers at the frame's α, the same up-block layers), the store a dict keyed by
  (layer, call);
* whichway: :func:`whichway.render.render_frames` with DiffMorpher's
  :class:`~whichway.attention.AttentionPath`, one denoiser batch [A, B, m_1 .. m_k], the end
  rows' hidden states used in the same call, nothing kept across steps.

Both use the same two LoRAs (a short fit on random images, timed: one LoRA optimizer step
against one denoiser forward of one row, best of several each, is the figure the run-time
estimate of ``whichway morph --method diffmorpher`` uses). Printed: frames/s of both and their
ratio, the bytes the store holds at its peak (whichway holds none across steps), and the largest
difference between the two renderings. Models: a tiny random SD pipeline and (unless ``--quick``) a
full-size SD 1.5-architecture UNet with random weights at a small resolution. On a GPU,
``--device cuda --dtype float16 --size 512``.

    python benchmarks/bench_diffmorpher.py [--quick] [--device cpu] [--size 64]

Times are warm: after a one-step warm-up render, the two ways alternate over ``--repeats``
rounds and the median is reported.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _result import WARM, Result, add_arguments, report, seconds

PROMPTS = ("a photo of a cat on a sofa", "a photo of a dog on a beach")


# --- the official layout, with whichway's pieces -----------------------------------------------


class StoreProcessor:
    """The official ``StoreProcessor``: keep the input hidden states of every call of one
    up-block self-attention layer in ``store[(layer, call)]``, attend plainly."""

    def __init__(self, plain: Any, store: dict, name: str) -> None:
        self.plain, self.store, self.name, self.calls = plain, store, name, 0

    def __call__(
        self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *a, **k
    ):
        if encoder_hidden_states is None:
            self.store[(self.name, self.calls)] = hidden_states.detach()
            self.calls += 1
        return self.plain(attn, hidden_states, encoder_hidden_states, attention_mask, *a, **k)


class LoadProcessor:
    """The official ``LoadProcessor`` (attn_beta 0): for calls i < ``warmup`` the keys and values
    come from (1 - α) h_A + α h_B of the stored end frames' same layer and call."""

    def __init__(self, plain: Any, stores: tuple[dict, dict], name: str, alpha: float, warmup: int):
        self.plain, self.stores, self.name = plain, stores, name
        self.alpha, self.warmup, self.calls = alpha, warmup, 0

    def __call__(
        self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *a, **k
    ):
        if encoder_hidden_states is None:
            if self.calls < self.warmup:
                key = (self.name, self.calls)
                h_a, h_b = self.stores[0][key], self.stores[1][key]
                encoder_hidden_states = (1 - self.alpha) * h_a + self.alpha * h_b
            self.calls += 1
        return self.plain(attn, hidden_states, encoder_hidden_states, attention_mask, *a, **k)


@contextlib.contextmanager
def up_block_processors(unet: Any, make: Callable[[str, Any], Any]) -> Iterator[None]:
    """``make(name, plain)`` on every layer DiffMorpher mixes (the official ``do_replace_attn``)."""
    from diffusers.models.attention_processor import Attention

    from whichway.attention.diffmorpher import _mixes

    replaced = []
    for name, module in unet.named_modules():
        if isinstance(module, Attention) and _mixes(name, module):
            plain = module.get_processor()
            replaced.append((module, plain))
            module.set_processor(make(name, plain))
    try:
        yield
    finally:
        for module, plain in replaced:
            module.set_processor(plain)


def held_bytes(stores: tuple[dict, dict]) -> int:
    """Bytes of the distinct tensors the stores keep alive."""
    seen = {}
    for store in stores:
        for t in store.values():
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(seen.values())


def store_then_load(adapter, loras, dm, path, latents, ts, options) -> tuple[Tensor, int, int]:
    """The official ``morph``: end frames first (storing), then one row per middle frame
    (loading). Returns the frames (T, 3, H, W), the bytes the store held and the denoiser calls
    it holds states of (a PNDM sampler calls once more than its steps)."""
    from whichway.attention.diffmorpher import RowAlphas, interpolated_loras

    unet = adapter.pipe.unet
    n = len(ts)
    warmup = dm.warmup_calls(options["steps"])
    stores: tuple[dict, dict] = ({}, {})
    out: list[Tensor | None] = [None] * n

    def one_row(k: int, make: Callable[[str, Any], Any]) -> None:
        with (
            interpolated_loras(unet, loras[0], loras[1], RowAlphas(ts[k : k + 1])),
            up_block_processors(unet, make),
        ):
            out[k] = adapter.render(path.select(k), latents[k : k + 1], **options)

    for end, k in ((0, 0), (1, n - 1)):
        one_row(k, lambda name, plain, s=stores[end]: StoreProcessor(plain, s, name))
    held = held_bytes(stores)
    calls = 1 + max(call for _, call in stores[0])
    for k in range(1, n - 1):
        alpha = float(ts[k])
        one_row(k, lambda name, plain, a=alpha: LoadProcessor(plain, stores, name, a, warmup))
    return torch.cat(out), held, calls


# --- the benchmark -----------------------------------------------------------------------------


def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - start


def fit_step_ratio(adapter, size: int, steps: int, lr: float) -> tuple[list[dict], float, float]:
    """Fit the two LoRAs (``steps`` AdamW steps each, on random images) and time one fit step
    against one denoiser forward of one row, both best of several (a loaded machine only adds
    time). Returns (LoRAs, seconds per step, per row)."""
    from whichway.attention.diffmorpher import fit_lora

    pipe, device = adapter.pipe, torch.device(adapter.device)
    cond = adapter.encode(list(PROMPTS))
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 1, 3, size, size, generator=g) * 2 - 1
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    step_times: list[float] = []

    def fit(i: int, n: int) -> dict:
        # each step's time from the step callback: the set-up a fit pays once is left out
        last = [time.perf_counter()]

        def on_step(step: int, loss: float) -> None:
            sync()
            now = time.perf_counter()
            if step > 0:  # the first step also pays the set-up and the optimizer's state
                step_times.append(now - last[0])
            last[0] = now

        with torch.enable_grad():
            return fit_lora(
                pipe.unet,
                pipe.vae,
                pipe.scheduler,
                images[i].to(device),
                cond.clouds[0][i : i + 1],
                steps=n,
                lr=lr,
                generator=torch.Generator().manual_seed(i),
                on_step=on_step,
            ).weights

    fit(0, 2)  # warm-up
    step_times.clear()
    loras = [fit(i, steps) for i in range(2)]
    latent = torch.randn((1, *adapter.latent_shape(size, size)), generator=g)
    one = cond.select(0)
    timestep = 0.5 * float(pipe.scheduler.config.num_train_timesteps)
    adapter.denoise_once(one, latent, timestep)  # warm-up
    rows = [
        _timed(lambda: adapter.denoise_once(one, latent, timestep), device)[1] for _ in range(5)
    ]
    return loras, min(step_times), min(rows)


def bench(
    adapter,
    label: str,
    *,
    frames: int,
    steps: int,
    size: int,
    repeats: int,
    guidance: float,
    fit_steps: int,
) -> Result:
    from whichway.attention import AttentionPath
    from whichway.attention.diffmorpher import adain_slerp, diffmorpher_hooks
    from whichway.attention.methods import DiffMorpherSettings
    from whichway.render import conditioning_path, render_frames

    device = torch.device(adapter.device)
    loras, t_step, t_row = fit_step_ratio(adapter, size, fit_steps, lr=1e-3)
    dm = DiffMorpherSettings(lora_steps=fit_steps)
    cond = adapter.encode(list(PROMPTS))
    ts = torch.linspace(0, 1, frames, dtype=torch.float64)
    path, _ = conditioning_path(cond.select(0), cond.select(1), ts, coupling="clip")
    z_a = adapter.initial_latent(0, size, size)
    z_b = adapter.initial_latent(1, size, size)
    latents = torch.cat([z_a[None], adain_slerp(z_a, z_b, ts[1:-1]), z_b[None]])
    options = {"steps": steps, "guidance": guidance, "height": size, "width": size}

    def batched() -> Tensor:
        attention = AttentionPath(
            dm,
            path.select([0, frames - 1]),
            latents[[0, -1]],
            ts,
            hooks=diffmorpher_hooks(loras[0], loras[1]),
        )
        return render_frames(
            adapter,
            path,
            latents,
            batch_size=frames,
            attention=attention,
            progress=False,
            **options,
        )

    adapter.render(path.select(0), latents[:1], **{**options, "steps": 1})  # warm-up
    runs: dict[str, list[float]] = {"loop": [], "ours": []}
    for _ in range(repeats):
        (loop, held, calls), t = _timed(
            lambda: store_then_load(adapter, loras, dm, path, latents, ts, options), device
        )
        runs["loop"].append(t)
        ours, t = _timed(batched, device)
        runs["ours"].append(t)
    t_loop, t_ours = statistics.median(runs["loop"]), statistics.median(runs["ours"])
    diff = (loop - ours).abs().max().item()
    mixed = dm.warmup_calls(steps)
    dtype = str(adapter.dtype).replace("torch.", "")
    print(
        f"\n{label}: {frames}-frame DiffMorpher morph, {steps} steps (K/V mix on {mixed} of "
        f"{calls} denoiser calls), "
        f"{size}x{size}, guidance {guidance:g}, {device} {dtype}; warm (after a warm-up render, "
        f"one process), median of {repeats} rounds"
    )
    print(f"  store-then-load, one row per frame: {t_loop:8.3f} s  {frames / t_loop:6.2f} frames/s")
    print(f"  whichway [A, B, m1..mk]:           {t_ours:8.3f} s  {frames / t_ours:6.2f} frames/s")
    print(f"  speed-up {t_loop / t_ours:.2f}x   max |loop - batched| = {diff:.2e}")
    print(f"  stored end-frame states: {held / 2**20:.2f} MiB held by the store; whichway: none")
    notes = f"images agree to {diff:.0e}; store held {held / 2**20:.2f} MiB, whichway none"
    if adapter.pipe.unet.config.block_out_channels[-1] == 1280:
        # the store grows with the tokens (size²), the denoiser calls and the element size; the
        # official code samples 50 DDIM steps (50 calls) at guidance 1 (one row)
        rows = 2 if guidance > 1 else 1
        at512 = held / rows * (512 / size) ** 2 * (50 / calls) * 2 / adapter.dtype.itemsize
        print(
            f"  the same store at 512x512, 50 DDIM steps, guidance 1, float16 (the official "
            f"defaults): {at512 / 2**30:.2f} GiB"
        )
        notes += f" ({at512 / 2**30:.2f} GiB at the official 512 px, 50 steps, fp16)"
    print(
        f"  one LoRA fit step {seconds(t_step)} / one denoiser row {seconds(t_row)} "
        f"= {t_step / t_row:.2f} rows (rank 16, batch 1, {size}x{size})"
    )
    return Result(
        bench="diffmorpher",
        compared=f"{label}, a {frames}-frame DiffMorpher morph ({steps} steps, {size}px, guidance "
        f"{guidance:g}): one denoiser batch [A, B, m1..mk] vs the official store-then-load "
        "(end frames storing, then one row per middle frame)",
        ours=f"{frames / t_ours:.2f} frames/s",
        baseline=f"{frames / t_loop:.2f} frames/s",
        ratio=t_loop / t_ours,
        regime=WARM,
        device=str(device),
        notes=f"median of {repeats} rounds ({seconds(t_ours)} vs {seconds(t_loop)}); {notes}; "
        f"a LoRA fit step = {t_step / t_row:.1f} denoiser rows",
        extra={
            "store_bytes": held,
            "max_abs_diff": diff,
            "fit_step_seconds": t_step,
            "row_seconds": t_row,
            "fit_step_rows": t_step / t_row,
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model only")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, choices=("float32", "float16", "bfloat16"))
    parser.add_argument("--size", type=int, default=None, help="full-size model resolution")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--frames", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument(
        "--guidance", type=float, default=1.0, help="official DiffMorpher default: 1"
    )
    parser.add_argument("--fit-steps", type=int, default=4, help="LoRA steps per image")
    add_arguments(parser)
    args = parser.parse_args()

    from whichway.models import adapter_for, load_adapter
    from whichway.models.tiny import build_tiny_pipeline, full_size_pipeline

    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory() as tmp:
        tiny = load_adapter(
            str(build_tiny_pipeline("sd", tmp)), device=args.device, dtype=args.dtype
        )
        results = [
            bench(
                tiny,
                "tiny SD pipeline",
                frames=args.frames or (7 if args.quick else 11),
                steps=args.steps or (3 if args.quick else 6),
                size=32 if args.quick else 64,
                repeats=args.repeats or (1 if args.quick else 3),
                guidance=args.guidance,
                fit_steps=args.fit_steps,
            )
        ]
    if not args.quick:
        gpu = args.device.startswith("cuda")
        pipe = full_size_pipeline(
            "sd", device=args.device, dtype=args.dtype or ("float16" if gpu else "float32")
        )
        results.append(
            bench(
                adapter_for(pipe, "random SD 1.5-architecture UNet"),
                "full-size SD 1.5 UNet (random weights)",
                frames=args.frames or (11 if gpu else 5),
                steps=args.steps or (20 if gpu else 2),
                size=args.size or (512 if gpu else 64),
                repeats=args.repeats or (3 if gpu else 1),
                guidance=args.guidance,
                fit_steps=args.fit_steps,
            )
        )
    report(results, args.json)


if __name__ == "__main__":
    main()
