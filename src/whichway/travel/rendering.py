"""Rendering a journey: the keyframes' conditionings and latents encoded once (:class:`Journey`),
any list of positions (segment, t) streamed through the denoiser in whole batches that span segment
boundaries, with one progress bar for the whole run (:class:`Renderer`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

    from whichway.attention.batch import AttentionPath
    from whichway.models.base import Adapter, Conditioning
    from whichway.models.timing import Preparation
    from whichway.morph import MorphSettings
    from whichway.travel.plan import TravelPlan
    from whichway.travel.settings import TravelSettings

logger = logging.getLogger(__name__)


def _plain_latents(methods: Sequence[str]) -> list[bool]:
    """Which keyframes need their plain latent (seed or plain inversion): those beside a
    segment that is not DiffMorpher (``methods``: one per segment)."""
    n_key = len(methods) + 1
    return [
        any(0 <= j < n_key - 1 and methods[j] != "diffmorpher" for j in (k - 1, k))
        for k in range(n_key)
    ]


def pending_preparation(adapter: Adapter, s: TravelSettings, run_dir: str | Path) -> Preparation:
    """The work :func:`whichway.travel.run.run_travel` does before its frames, less what
    ``run_dir`` caches: the LoRA fits and inversions of its DiffMorpher segments (a keyframe
    shared by two counted once) and the plain inversions of the other image keyframes. For
    :func:`whichway.models.timing.estimate_run_time`."""
    from whichway.morph import (
        inversion_file,
        inversion_options,
        missing_preparation,
        preparation_files,
    )

    height = s.height or adapter.default_size[0]
    width = s.width or adapter.default_size[1]
    methods = s.segment_methods()
    loras: list[Path] = []
    inverted: list[Path] = []
    for k, method in enumerate(methods):
        if method == "diffmorpher":
            more = preparation_files(adapter, segment_morph(s, k, height, width), run_dir)
            loras += more[0]
            inverted += more[1]
    for kf, plain in zip(s.keyframes, _plain_latents(methods)):
        if plain and kf.image is not None:
            inverted.append(
                inversion_file(
                    adapter, kf.image, kf.prompt, **inversion_options(s, height, width, run_dir)
                )
            )
    return missing_preparation(
        adapter,
        loras,
        inverted,
        lora_steps=s.lora_steps,
        steps=s.inversion_steps or s.steps,
        guidance=s.inversion_guidance,
    )


def segment_morph(s: TravelSettings, k: int, height: int, width: int) -> MorphSettings:
    """The morph between keyframes k and k + 1 that DiffMorpher segment k renders
    (:func:`whichway.morph.morph_inputs`)."""
    from whichway.morph import MorphSettings

    a, b = s.keyframes[k], s.keyframes[k + 1]
    return MorphSettings(
        a.prompt,
        b.prompt,
        (0.0, 1.0),
        coupling=s.segment_coupling(k),
        latent=s.segment_latent(k),
        steps=s.steps,
        guidance=s.guidance,
        height=height,
        width=width,
        image_a=a.image,
        image_b=b.image,
        inversion_steps=s.inversion_steps,
        inversion_guidance=s.inversion_guidance,
        format=None,
        method="diffmorpher",
        lora_rank=s.lora_rank,
        lora_steps=s.lora_steps,
        lora_lr=s.lora_lr,
        attn_lambda=s.attn_lambda,
    )


class Journey:
    """The keyframes' conditionings, latents and negatives, encoded once, and each segment's
    couplings, computed once; builds the rows of any list of positions."""

    def __init__(
        self,
        adapter: Adapter,
        s: TravelSettings,
        height: int,
        width: int,
        run_dir: Path,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        import torch

        from whichway.morph import inversion_options, inverted_latent
        from whichway.render import conditioning_path

        self.s = s
        # PAID's guide prompts are encoded with the keyframes' (one token count, as in morph)
        n_seg = len(s.keyframes) - 1
        guides = [s.segment_guide(k) for k in range(n_seg)]
        prompts = list(dict.fromkeys([kf.prompt for kf in s.keyframes] + [g for g in guides if g]))
        encoded = adapter.encode(prompts)
        self.cond = [encoded.select(prompts.index(kf.prompt)) for kf in s.keyframes]
        self.guide = [None if g is None else encoded.select(prompts.index(g)) for g in guides]
        negatives = [s.negative_of(k) for k in range(len(s.keyframes))]
        self.shared_negative = len(set(negatives)) == 1
        unique_neg = list(dict.fromkeys(negatives))
        encoded_neg = [adapter.encode_negative(x, 1) for x in unique_neg]
        self.negative = [encoded_neg[unique_neg.index(x)] for x in negatives]
        self.segment_method = list(s.segment_methods())
        # DiffMorpher segments render through morph's own inputs (each image's LoRA fitted once
        # and cached in run_dir/loras, inverted under it): only the other segments need the
        # keyframes' plain latents
        plain = _plain_latents(self.segment_method)
        self.latent = []
        for k, kf in enumerate(s.keyframes):
            if not plain[k]:  # a placeholder of the right shape: no row ever uses it
                self.latent.append(adapter.initial_latent(0, height, width))
            elif kf.image is not None:
                self.latent.append(
                    inverted_latent(
                        adapter,
                        kf.image,
                        kf.prompt,
                        **inversion_options(s, height, width, run_dir),
                        should_stop=should_stop,  # polled after every inversion step
                    )
                )
            else:
                self.latent.append(adapter.initial_latent(s.seed_of(k), height, width))
        self.method: list[str] = []
        self.couplings = []
        for k in range(len(s.keyframes) - 1):
            a, b = s.keyframes[k], s.keyframes[k + 1]
            method = s.segment_latent(k)
            if a.image is None and b.image is None and s.seed_of(k) == s.seed_of(k + 1):
                method = "fixed"  # one seed: COG of a latent with itself would rescale it
            elif method == "fixed":
                method = "cog"  # real images have their own latents (as morph does)
            self.method.append(method)
            _, cs = conditioning_path(
                self.cond[k],
                self.cond[k + 1],
                torch.zeros(1, dtype=torch.float64),
                coupling=s.segment_coupling(k),
                generator=torch.Generator().manual_seed(s.seed_of(k)),
            )
            self.couplings.append(cs)
        self.diffmorpher = {
            k: self._diffmorpher_inputs(adapter, k, height, width, run_dir, should_stop)
            for k in range(n_seg)
            if self.segment_method[k] == "diffmorpher"
        }

    def _diffmorpher_inputs(
        self,
        adapter: Adapter,
        k: int,
        height: int,
        width: int,
        run_dir: Path,
        should_stop: Callable[[], bool] | None,
    ) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], dict[str, Any]]]:
        """(``latents_at``, ``frames_at``) of DiffMorpher segment k: what
        :func:`whichway.morph.morph_inputs` gives the morph between its two image keyframes
        (LoRAs and inverted latents cached in ``run_dir``, so a keyframe shared by two
        segments is fitted and inverted once)."""
        from whichway.morph import morph_inputs
        from whichway.render import conditioning_path

        morph = segment_morph(self.s, k, height, width)

        def path_at(times: Tensor) -> tuple[Any, Any]:
            return conditioning_path(
                self.cond[k], self.cond[k + 1], times, couplings=self.couplings[k]
            )

        _, latents_at, frames_at = morph_inputs(
            adapter, morph, height, width, run_dir, path_at, should_stop=should_stop
        )
        return latents_at, frames_at

    def rows(
        self, positions: Sequence[tuple[int, float]]
    ) -> tuple[Conditioning, Tensor, Conditioning]:
        """(conditioning, latents (P, C, h, w), negatives with 1 or P rows) of ``positions``."""
        import torch

        from whichway.models.base import Conditioning
        from whichway.render import conditioning_path, latent_path

        by_segment: dict[int, list[int]] = {}
        for i, (k, _) in enumerate(positions):
            by_segment.setdefault(k, []).append(i)
        cond: list[Any] = [None] * len(positions)
        lat: list[Any] = [None] * len(positions)
        neg: list[Any] = [None] * len(positions)
        for k, index in by_segment.items():
            ts = torch.tensor([positions[i][1] for i in index], dtype=torch.float64)
            if k in self.diffmorpher:  # DiffMorpher: morph's rows, the end frames included
                latents_at, frames_at = self.diffmorpher[k]
                path, latents = frames_at(ts)["cond"], latents_at(ts)
            else:
                path, _ = conditioning_path(
                    self.cond[k], self.cond[k + 1], ts, couplings=self.couplings[k]
                )
                latents = latent_path(self.latent[k], self.latent[k + 1], ts, method=self.method[k])
            negs = None
            if not self.shared_negative:
                negs, _ = conditioning_path(
                    self.negative[k], self.negative[k + 1], ts, coupling="clip"
                )
            guide = self.guide[k]  # PAID: the middle frames take the segment's guide prompt
            for j, i in enumerate(index):
                t = float(ts[j])
                own = k if t == 0.0 else (k + 1 if t == 1.0 else None)
                if (
                    own is not None and k not in self.diffmorpher
                ):  # a keyframe (k or k + 1, both exist): its own conditioning and latent
                    cond[i], lat[i], neg[i] = self.cond[own], self.latent[own], self.negative[own]
                elif own is not None:  # DiffMorpher's end frame: its image under its own LoRA
                    cond[i], lat[i], neg[i] = path.select(j), latents[j], self.negative[own]
                else:
                    cond[i], lat[i] = path.select(j) if guide is None else guide, latents[j]
                    neg[i] = None if negs is None else negs.select(j)
        # keyframe negatives of different chunk counts: tiled to one row count (as in render)
        negative = (
            self.negative[0]
            if self.shared_negative
            else Conditioning.cat(Conditioning.aligned(neg))
        )
        return Conditioning.cat(cond), torch.stack([x.to(lat[0].dtype) for x in lat]), negative

    def group_of(self, k: int) -> str:
        """The rendering group of segment k: segments of one group share denoiser batches
        (``plain``; ``outer`` for aid-outer and paid, whose AID acts alike; ``aid-inner``;
        each DiffMorpher segment alone)."""
        method = self.segment_method[k]
        if method in ("plain", "aid-inner"):
            return method
        if method == "diffmorpher":  # its own LoRA pair: never batched with another segment
            return f"diffmorpher-{k}"
        return "outer"

    def groups(self, positions: Sequence[tuple[int, float]]) -> list[list[int]]:
        """The indices of ``positions`` per rendering group (:meth:`group_of`), each in order,
        groups in order of first appearance: a batch never mixes frames that attend
        differently, so every frame is what rendering its segment alone gives."""
        out: dict[str, list[int]] = {}
        for i, (k, _) in enumerate(positions):
            out.setdefault(self.group_of(k), []).append(i)
        return list(out.values())

    def attention(self, positions: Sequence[tuple[int, float]]) -> AttentionPath | None:
        """The AID path of ``positions`` (each segment between its two keyframes; all of one
        rendering group, :meth:`groups`), or None for plain segments."""
        group = {self.group_of(k) for k, _ in positions}
        if len(group) != 1:
            raise ValueError(f"positions of one rendering group expected, got {sorted(group)}")
        if group == {"plain"}:
            return None
        import torch

        k = positions[0][0]
        if k in self.diffmorpher:  # morph's own path, with the keyframes' own negatives
            import dataclasses

            from whichway.models.base import Conditioning

            ts = torch.tensor([t for _, t in positions], dtype=torch.float64)
            path = self.diffmorpher[k][1](ts)["attention"]
            if self.shared_negative:
                return path
            negatives = Conditioning.cat(Conditioning.aligned(self.negative))
            return dataclasses.replace(path, end_negative=negatives.select([k, k + 1]))

        from whichway.attention.batch import AttentionPath
        from whichway.attention.methods import settings_for
        from whichway.models.base import Conditioning

        s = self.s
        aid = settings_for(
            self.segment_method[positions[0][0]],
            fused=s.fused,
            warmup_ratio=s.warmup_ratio,
            layers=s.aid_layers,
        )
        return AttentionPath(
            aid,
            Conditioning.cat(self.cond),
            torch.stack([x.to(self.latent[0].dtype) for x in self.latent]),
            torch.tensor([t for _, t in positions], dtype=torch.float64),
            pairs=torch.tensor([[k, k + 1] for k, _ in positions], dtype=torch.long),
            end_negative=None
            if self.shared_negative
            else Conditioning.cat(Conditioning.aligned(self.negative)),
        )

    def segment_record(self, plan: TravelPlan, k: int) -> dict[str, Any]:
        """The ``run.json`` entry of segment k: its keyframes, coupling and latent method, and per
        token group the coupling cost and the W₂ path length over the segment's frame times."""
        import torch

        from whichway.clouds import path_length_w2
        from whichway.render import conditioning_path

        s = self.s
        ts = sorted({t for seg, t in zip(plan.segment, plan.t) if seg == k} | {0.0, 1.0})
        couplings = self.couplings[k]
        lengths = [0.0] * len(couplings)
        for start in range(0, len(ts) - 1, 128):  # pieces of 129 times, overlapping by one
            piece = torch.tensor(ts[start : start + 129], dtype=torch.float64)
            path, _ = conditioning_path(self.cond[k], self.cond[k + 1], piece, couplings=couplings)
            for g, cloud in enumerate(path.clouds):
                lengths[g] += float(path_length_w2(cloud.double()))
        groups = []
        for g, c in enumerate(couplings):
            groups.append(
                {
                    "group": g,
                    "method": c.method,
                    "cost": float(c.cost),
                    "w2_path_length": lengths[g],
                    "tokens_moved": None
                    if c.perm is None
                    else int((c.perm != torch.arange(len(c.perm))).sum()),
                }
            )
        frames = [i for i, seg in enumerate(plan.segment) if seg == k]
        return {
            "segment": k,
            "from": s.keyframes[k].prompt,
            "to": s.keyframes[k + 1].prompt,
            "coupling": s.segment_coupling(k),
            "latent": self.method[k],
            **s.segment_method_record(k),
            "frames": [plan.keyframe_frames[k], plan.keyframe_frames[k + 1]] if frames else [],
            "couplings": groups,
        }


class Renderer:
    """Streams positions through :func:`whichway.render.render_frames` in chunks of whole
    batches (a chunk spans segment boundaries), driving one progress bar for the whole run."""

    def __init__(
        self,
        adapter: Adapter,
        journey: Journey,
        s: TravelSettings,
        height: int,
        width: int,
        n_frames: int,
        progress: bool,
        hooks: dict[str, Any],
    ) -> None:
        from tqdm.auto import tqdm

        self.adapter, self.journey, self.s = adapter, journey, s
        self.size = (height, width)
        self.hooks = hooks
        self.chunk = s.batch_size * max(1, 32 // s.batch_size)
        self.batch = s.batch_size  # halved for the rest of the run after an out-of-memory retry
        self.planned = s.batch_size  # the batch size the bar's total was planned with
        self.total = 0
        self.done = 0  # steps finished (a disabled tqdm bar does not count)
        self.bar = tqdm(
            total=0, desc=f"travel: {n_frames} frames", unit="step", disable=not progress
        )

    def set_total(self, steps: int) -> None:
        """Denoising steps of the whole run (done so far included), planned at the current batch
        size: the bar's end and ETA."""
        self.planned = self.batch
        self._show_total(steps)

    def _show_total(self, steps: int) -> None:
        self.total = steps
        self.bar.total = steps
        self.bar.refresh()

    def steps_for(self, frames: int | Sequence[tuple[int, float]], batch: int | None = None) -> int:
        """Denoising steps of ``frames`` frames (a count, or the positions themselves: then
        each chunk's rendering groups are batched apart, :meth:`Journey.groups`) rendered in
        chunks of whole batches of ``batch`` frames (default: the current batch size)."""
        batch = batch or self.batch
        if not isinstance(frames, int):
            batches = 0
            for start in range(0, len(frames), self.chunk):
                part = frames[start : start + self.chunk]
                batches += sum(-(-len(g) // batch) for g in self.journey.groups(part))
            return batches * self.s.steps
        full, rest = divmod(frames, self.chunk)
        per_chunk = -(-self.chunk // batch)
        return (full * per_chunk + -(-rest // batch)) * self.s.steps

    def _shrink(self, batch_size: int) -> None:
        self.batch = batch_size

    def _advance(self, done: int) -> None:
        """Steps finished so far in the whole run; it moves back when a batch that ran out of
        memory is redone."""
        if done >= self.done:
            self.bar.update(done - self.done)
        else:
            self.bar.n = done
            self.bar.refresh()
        self.done = done
        if self.hooks.get("on_step") is not None:
            self.hooks["on_step"](self.done, self.total)

    def render(
        self,
        positions: Sequence[tuple[int, float]],
        on_frame: Callable[[int, Tensor], None] | None = None,
        *,
        on_chunk: Callable[[Tensor], None] | None = None,
    ) -> None:
        """Render ``positions`` in order: ``on_frame(index, image)`` per frame, or
        ``on_chunk(frames (P, 3, H, W))`` per chunk (then a chunk's frames are kept until it ends)."""
        import torch

        for start in range(0, len(positions), self.chunk):
            part = positions[start : start + self.chunk]
            kept: dict[int, Tensor] = {}
            for group in self.journey.groups(part):
                # frames of segments whose methods attend alike share batches; the others not
                index = [start + i for i in group]
                images = self._render_group(
                    [positions[i] for i in index],
                    index,
                    on_frame,
                    keep=on_chunk is not None,
                )
                if images is not None:
                    kept.update(zip(index, images))
            if on_chunk is not None:
                on_chunk(torch.stack([kept[start + i] for i in range(len(part))]))

    def _render_group(
        self,
        part: Sequence[tuple[int, float]],
        index: Sequence[int],
        on_frame: Callable[[int, Tensor], None] | None,
        keep: bool,
    ) -> Tensor | None:
        """Render positions of one rendering group (their indices in the run: ``index``)."""
        from whichway.render import render_frames

        h, w = self.size
        cond, latents, negative = self.journey.rows(part)
        base, planned = self.done, self.steps_for(len(part), self.planned)

        def step(done: int, total: int) -> None:
            nonlocal planned
            if total != planned:  # a smaller batch than planned, after an out-of-memory retry
                self._show_total(self.total + total - planned)
                planned = total
            self._advance(base + done)

        return render_frames(
            self.adapter,
            cond,
            latents,
            steps=self.s.steps,
            guidance=self.s.guidance,
            height=h,
            width=w,
            batch_size=self.batch,
            negative=negative,
            progress=False,
            keep=keep,
            on_frame=None if on_frame is None else (lambda i, image: on_frame(index[i], image)),
            on_step=step,
            should_stop=self.hooks.get("should_stop"),
            on_batch_size=self._shrink,
            attention=self.journey.attention(part),
        )

    def close(self) -> None:
        self.bar.close()


def render_into(
    renderer: Renderer,
    plan: TravelPlan,
    todo: Sequence[int],
    frames_dir: Path,
    on_frame: Callable[[int, Path], None] | None = None,
) -> int:
    """Render the frames ``todo`` of ``plan`` into ``frames_dir``, one render per distinct
    position (frames held before the first or after the last keyframe repeat one), each written
    as soon as its batch finishes; ``on_frame(index, png_path)`` after each file. Returns the
    number of renders."""
    from whichway.media import save_image
    from whichway.travel.record import frame_name

    targets: dict[tuple[int, float], list[int]] = {}
    for i in todo:
        targets.setdefault(plan.position(i), []).append(i)
    unique = list(targets)
    renderer.set_total(renderer.done + renderer.steps_for(unique))

    def write(j: int, image: Tensor) -> None:
        for i in targets[unique[j]]:
            target = frames_dir / frame_name(i)
            save_image(image, target)
            if on_frame is not None:
                on_frame(i, target)

    if unique:
        renderer.render(unique, write)
    else:
        logger.info("all %d frames already rendered in %s", plan.n_frames, frames_dir.parent)
    return len(unique)
