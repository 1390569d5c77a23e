"""The studio's controller: one loaded model, one job at a time, a cancel flag, and the run folder.

A :class:`Studio` is what the web page talks to. It holds the adapter (loaded once per process,
reloaded only when another model is chosen), runs one job at a time, and calls the same library
functions the command line does: :func:`whichway.morph.run_morph` (the Morph tab; a run started
here is a normal run directory, written and resumed exactly as ``whichway morph`` writes and
resumes it), :func:`whichway.compare.compare_couplings` (Compare) and
:func:`whichway.matching.token_matching` (Coupling). No geometry or rendering happens here.

Page values arrive as plain strings and numbers; :meth:`Studio.morph_settings` turns them into a
:class:`~whichway.morph.MorphSettings`, refusing bad input with a one-line ValueError before
anything heavy is loaded.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from whichway._files import slug
from whichway.attention.methods import BO_EVALUATIONS
from whichway.studio.limits import Limits

if TYPE_CHECKING:  # pragma: no cover
    from whichway.compare import CouplingComparison
    from whichway.matching import TokenMatching
    from whichway.models.base import Adapter
    from whichway.morph import MorphResult, MorphSettings

logger = logging.getLogger(__name__)

SIZE_MULTIPLE = 8
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, KeyError)

FIELD_NAMES: dict[str, str] = {
    "prompt_a": "Prompt A",
    "prompt_b": "Prompt B",
    "frames": "Frames",
    "t": "Explicit t",
    "latent": "Latent path",
    "spacing": "Spacing",
    "beta_evaluations": "Beta search evaluations",
    "image_a": "Image A",
    "image_b": "Image B",
    "method": "Method",
    "methods": "Attention methods",
    "warmup_ratio": "Warmup ratio",
    "aid_layers": "AID layers",
    "fused": "Fused with self-attention",
    "guide_prompt": "PAID guide prompt",
    "lora_rank": "LoRA rank",
    "lora_steps": "LoRA steps",
    "lora_lr": "LoRA learning rate",
    "attn_lambda": "Attention λ",
    "fps": "fps",
    "seconds": "Seconds",
    "pacing": "Pacing",
    "audio": "Audio",
    "snap_beats": "beat snapping",
    "motion": "Motion adapter",
    "keyframes": "Keyframes",
    "keyframe_method": "the method column of Keyframes",
    "keyframe_guide_prompt": "the guide prompt column of Keyframes",
    "keyframe_image": "the image column of Keyframes, naming a file under Keyframe images",
    "keyframe_images": "Keyframe images",
}
"""The page's label of each setting (a :class:`~whichway.morph.MorphSettings` or
:class:`~whichway.travel.TravelSettings` field; ``keyframe_*``: a column of the Travel tab's
keyframe table; ``methods``: the Compare tab's checklist of attention methods): the tabs label
their fields with it, and :func:`user_message` words a :class:`~whichway._checks.SettingError`
with it instead of the command line's flags."""


def user_message(exc: BaseException) -> str:
    """One line for the page: the message of a user error (bad input, a model that fails to
    load, a cancelled run); the type and message of anything else (its traceback goes to the
    server log only)."""
    from whichway._checks import SettingError
    from whichway.render import RenderCancelled

    if isinstance(exc, RenderCancelled):
        return f"Cancelled: {exc}."
    words = exc.worded(FIELD_NAMES) if isinstance(exc, SettingError) else str(exc)
    text = " ".join(words.split()) or type(exc).__name__
    if out_of_memory(exc):
        gist = text.split(". ")[0][:200]
        return (
            f"Out of memory ({gist}); the job stopped, finished frames are kept and the model stays "
            "loaded: try fewer frames, a smaller size or batch size"
        )
    if isinstance(exc, USER_ERRORS):
        return text
    logger.error("studio job failed", exc_info=exc)
    return f"{type(exc).__name__}: {text}"


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is Python's MemoryError or PyTorch's out-of-memory error."""
    if isinstance(exc, MemoryError):
        return True
    from whichway.models.memory import is_out_of_memory

    return is_out_of_memory(exc)


def parse_times(text: str) -> tuple[float, ...]:
    """'0, 0.25, 1' -> (0.0, 0.25, 1.0); ValueError naming the bad entry."""
    out = []
    for part in re.split(r"[,\s]+", text.strip()):
        if not part:
            continue
        try:
            out.append(float(part))
        except ValueError:
            raise ValueError(
                f"t must be comma-separated numbers such as 0, 0.25, 1; {part!r} is not a number"
            ) from None
    return tuple(out)


def _int(
    name: str, value: Any, *, minimum: int | None = None, optional: bool = False
) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        if optional:
            return None
        raise ValueError(f"{name} is required")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a whole number, got {value!r}") from None
    if number != int(number):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    if minimum is not None and number < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {int(number)}")
    return int(number)


def _size(name: str, value: Any) -> int | None:
    """Height/width: 0 or empty = the model's default; else a positive multiple of 8."""
    number = _int(name, value, optional=True)
    if not number:
        return None
    if number < 0 or number % SIZE_MULTIPLE:
        raise ValueError(
            f"{name} must be a positive multiple of {SIZE_MULTIPLE} (or 0 for the model's default), got {number}"
        )
    return number


def _number(name: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None


def _prompts(prompt_a: Any, prompt_b: Any) -> tuple[str, str]:
    from whichway.prompts.syntax import check_prompts_syntax

    a, b = (prompt_a or "").strip(), (prompt_b or "").strip()
    if not a or not b:
        raise ValueError("prompt A and prompt B must not be empty")
    check_prompts_syntax(("prompt A", a), ("prompt B", b))  # a visible error, before the model
    return a, b


def _render_options(
    *,
    seed: Any,
    steps: Any,
    guidance: Any,
    height: Any,
    width: Any,
    negative_prompt: Any,
    batch_size: Any,
) -> dict[str, Any]:
    """The rendering fields the Morph, Travel and Compare tabs share, parsed and checked."""
    return {
        "seed": _int("seed", seed) or 0,
        "steps": _int("steps", steps, minimum=1) or 1,
        "guidance": _number("guidance", guidance),
        "height": _size("height", height),
        "width": _size("width", width),
        "negative_prompt": (negative_prompt or "").strip() or None,
        # 0 or empty = auto: the page's empty number field sends 0 once it has been shown
        "batch_size": _int("batch size", batch_size, minimum=0, optional=True) or None,
    }


def _diffmorpher_fields(
    used: bool, lora_rank: Any, lora_steps: Any, lora_lr: Any, attn_lambda: Any
) -> dict[str, Any]:
    """The DiffMorpher fields of the Morph, Travel and Compare tabs, parsed when some segment
    (or row) ``used`` DiffMorpher (their settings' checks then judge the ranges); the official settings otherwise,
    as the page hides or ignores them."""
    from whichway.attention.methods import DiffMorpherSettings

    if not used:
        return asdict(DiffMorpherSettings())
    return {
        "lora_rank": _int(FIELD_NAMES["lora_rank"], lora_rank),
        "lora_steps": _int(FIELD_NAMES["lora_steps"], lora_steps),
        "lora_lr": _number(FIELD_NAMES["lora_lr"], lora_lr),
        "attn_lambda": _number(FIELD_NAMES["attn_lambda"], attn_lambda),
    }


def _aid_fields(used: bool, warmup_ratio: Any, aid_layers: Any, fused: Any) -> dict[str, Any]:
    """The AID fields of the Travel and Compare tabs as ``warmup_ratio``, ``aid_layers``,
    ``fused``, parsed when some segment (or row) ``used`` AID or PAID (their settings' checks
    then judge the ranges); the official settings otherwise, as the page hides them."""
    from whichway.attention.methods import aid_fields

    if not used:
        return aid_fields()
    ratio = _number(FIELD_NAMES["warmup_ratio"], warmup_ratio)
    return aid_fields(ratio, aid_layers or None, bool(fused))


def _travel_loras(settings: Any) -> tuple[int, int, int, int] | None:
    """DiffMorpher's (rank, LoRA steps, LoRA files, LoRA pairs) of a travel, for
    :meth:`Studio.check_request`: a file per image keyframe (image and prompt) of a DiffMorpher
    segment, fitted once even where two segments share it, a pair held per segment; None
    without DiffMorpher segments."""
    segments = [k for k, m in enumerate(settings.segment_methods()) if m == "diffmorpher"]
    if not segments:
        return None
    keys = settings.keyframes
    images = {(keys[j].image, keys[j].prompt) for k in segments for j in (k, k + 1)}
    return settings.lora_rank, settings.lora_steps, len(images), len(segments)


def _cell(value: Any) -> str | None:
    """A text cell of the keyframe table: stripped, None when empty (None, NaN or blank)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value).strip() or None


def _free_dir(base: Path) -> Path:
    """``base``, or ``base-2``, ``base-3``, ... : the first that does not exist yet."""
    target, k = base, 1
    while target.exists():
        k += 1
        target = base.with_name(f"{base.name}-{k}")
    return target


@dataclass(frozen=True)
class RunInfo:
    """A run directory under the studio's folder: ``kind`` is "morph"/"travel" (run.json) or
    "compare" (compare.json); ``info`` is that file's content."""

    name: str
    path: Path
    kind: str
    status: str
    modified: float
    info: dict[str, Any]

    def file(self, key: str) -> Path | None:
        """A file the run names in its JSON (``strip``, ``animation``), if it exists."""
        name = self.info.get(key)
        p = self.path / name if isinstance(name, str) else None
        return p if p is not None and p.is_file() else None

    @property
    def frames(self) -> list[Path]:
        return sorted((self.path / "frames").glob("*.png"))


class Studio:
    """Model, jobs and run folder of one studio process.

    Parameters
    ----------
    out_dir : the run folder: every run the page starts is written under it, and the Runs tab
        lists it
    model : hub id or local pipeline directory, loaded on first use (None: choose one in the page)
    device, dtype, variant : as ``whichway morph --device/--dtype/--variant``
    lpips_random_backbone : LPIPS with a random backbone (offline demos and tests; PPL values are
        then not comparable with published ones)
    limits : what one job may ask for (:class:`whichway.studio.limits.Limits`), checked with the
        disk and memory (:func:`whichway.budget.check_request`) before a job is queued
    """

    def __init__(
        self,
        out_dir: str | Path,
        model: str | None = None,
        *,
        device: str | None = None,
        dtype: str | None = None,
        variant: str | None = None,
        runtime: Any = None,
        lpips_random_backbone: bool = False,
        limits: Limits | None = None,
        weighting: str = "comfyui",
        long_prompts: str = "chunk",
    ) -> None:
        from whichway.prompts.options import check_long_prompts, check_weighting

        self.out_dir = Path(out_dir).resolve()
        self.limits = limits or Limits()
        self.model_id = model
        self.device, self.dtype, self.variant = device, dtype, variant
        self.runtime = (
            runtime  # whichway.models.runtime.RuntimeOptions (LoRA, sampler, offload, ...)
        )
        self.lpips_random_backbone = lpips_random_backbone
        #: prompt weighting rule and long-prompt mode (whichway.prompts), set on every adapter
        self.weighting = check_weighting(weighting)
        self.long_prompts = check_long_prompts(long_prompts)
        self._adapter: Adapter | None = None
        self._loaded: str | None = None
        self._meter: Any = None
        self._meter_note: str | None = None
        self._load_lock = threading.Lock()
        self._job_lock = threading.Lock()
        #: the stop flag of every job queued or running, by its owner (a page session, or None)
        self._stops: dict[str | None, set[threading.Event]] = {}
        self._stops_lock = threading.Lock()

    # --- model ---------------------------------------------------------------------------------
    @property
    def loaded_model(self) -> str | None:
        return self._loaded

    def adapter(self, model: str | None = None) -> Adapter:
        """The adapter of ``model`` (default: the current one), loading it only when it is not
        the one already loaded. A model that fails to load raises ValueError and leaves the
        previous one in place."""
        from whichway.models import load_adapter

        wanted = (model or "").strip() or self.model_id
        if not wanted:
            raise ValueError(
                "no model chosen: enter a hub id or a local pipeline folder in Model and press Load"
            )
        with self._load_lock:
            if self._adapter is None or self._loaded != wanted:
                logger.info("studio: loading %s", wanted)
                try:
                    adapter = load_adapter(
                        wanted,
                        device=self.device,
                        dtype=self.dtype,
                        variant=self.variant,
                        runtime=self.runtime,
                    )
                except (ValueError, OSError, ImportError) as exc:
                    raise ValueError(
                        f"could not load model {wanted!r}: {' '.join(str(exc).split())}"
                    ) from exc
                self._adapter, self._loaded, self.model_id = adapter, wanted, wanted
            assert self._adapter is not None
            from whichway.models.prompting import set_prompt_options

            set_prompt_options(self._adapter, self.weighting, self.long_prompts)
            return self._adapter

    def meter(self) -> tuple[Any, str | None]:
        """(LPIPS meter or None, a note: why it is None, or that its backbone is random), built
        once."""
        if self._meter is None and self._meter_note is None:
            try:
                from whichway.metrics import LPIPSPath

                self._meter = LPIPSPath("alex", pretrained_backbone=not self.lpips_random_backbone)
                if self.lpips_random_backbone:
                    self._meter_note = (
                        "PPL and smoothness use LPIPS on a random backbone (--lpips-random-backbone): "
                        "values are comparable with each other, not with published LPIPS numbers."
                    )
            except ImportError as exc:
                self._meter_note = (
                    f"PPL needs the metrics extra ({exc.name}): pip install 'whichway[metrics]'"
                )
            except FileNotFoundError as exc:  # WeightsUnavailableError says which file is missing
                self._meter_note = f"PPL unavailable: {' '.join(str(exc).split())}"
        return self._meter, self._meter_note

    # --- jobs ----------------------------------------------------------------------------------
    def cancel(self, owner: str | None = None) -> None:
        """Ask jobs to stop after their current batch (finished frames are kept): the jobs of
        ``owner`` (the page session that pressed Cancel), every job when None. A job still
        waiting for the slot never starts."""
        with self._stops_lock:
            flags = [f for o, fs in self._stops.items() if owner in (None, o) for f in fs]
        for flag in flags:
            flag.set()

    def stream(
        self, job: Callable[..., Any], owner: str | None = None
    ) -> Iterator[tuple[str, Any]]:
        """Run ``job(on_frame, on_step, should_stop)`` in a worker thread, one job at a time, and
        yield its events as they happen: ("queued", None) first when another job holds the slot,
        ("frame", (index, path)), ("step", (done, total)), then ("done", result) or ("error",
        exception). ``owner`` (a page session) is whose Cancel stops it (:meth:`cancel`); a job
        cancelled while it waits ends as ("error", RenderCancelled) without starting. Whatever
        the job raised, the slot is freed and the memory its tensors held is returned
        (:meth:`_recover`)."""
        stop = threading.Event()  # this job's own flag: a later job never clears it
        with self._stops_lock:
            self._stops.setdefault(owner, set()).add(stop)
        try:
            yield from self._stream(job, stop)
        finally:
            with self._stops_lock:
                self._stops[owner].discard(stop)
                if not self._stops[owner]:
                    del self._stops[owner]

    def _stream(self, job: Callable[..., Any], stop: threading.Event) -> Iterator[tuple[str, Any]]:
        events: queue.Queue[tuple[str, Any]] = queue.Queue()
        if not self._job_lock.acquire(blocking=False):
            yield "queued", None  # another job is running: this one starts when it ends
            self._job_lock.acquire()
        try:
            if stop.is_set():  # cancelled while it waited: it never starts
                from whichway.render import RenderCancelled

                cancelled = RenderCancelled(0, 0)
                cancelled.args = ("cancelled before it started; nothing was written",)
                yield "error", cancelled
                return

            def work() -> None:
                try:
                    result = job(
                        lambda k, p: events.put(("frame", (k, p))),
                        lambda d, t: events.put(("step", (d, t))),
                        stop.is_set,
                    )
                    events.put(("done", result))
                except BaseException as exc:
                    events.put(("error", exc))

            worker = threading.Thread(target=work, name="whichway-studio-job", daemon=True)
            worker.start()
            try:
                while True:
                    kind, value = events.get()
                    yield kind, value
                    if kind in ("done", "error"):
                        break
            finally:
                if worker.is_alive():  # the page went away mid-job: stop after this batch
                    stop.set()
                worker.join()
                self._recover()
        finally:
            self._job_lock.release()

    def _recover(self) -> None:
        """After a job, whatever it did: return what its tensors held (the collector and the
        accelerator's cache), so that a job that failed, an out-of-memory one included, leaves
        the app and the loaded model serving the next job with the memory it started with."""
        if self._adapter is None:
            import gc

            gc.collect()
            return
        from whichway.models.memory import release_cached_memory  # collects, empties the cache

        release_cached_memory(self._adapter.device)

    def run_sync(self, job: Callable[..., Any]) -> Any:
        """Run a job to the end (API callers and tests): its result, or its exception raised."""
        return self.run_sync_as(job, None)

    def run_sync_as(self, job: Callable[..., Any], owner: str | None) -> Any:
        """:meth:`run_sync` for ``owner`` (a page session: whose :meth:`cancel` stops it)."""
        for kind, value in self.stream(job, owner):
            if kind == "done":
                return value
            if kind == "error":
                raise value
        raise RuntimeError("job ended without a result")  # pragma: no cover

    # --- sizes ---------------------------------------------------------------------------------
    def check_request(
        self,
        label: str,
        frames: int,
        *,
        steps: int | None,
        guidance: float | None,
        height: int | None,
        width: int | None,
        batch_size: int | None = None,
        inversion_steps: int | None = None,
        held_per_frame: Callable[[int, int], int] | None = None,
        loras: tuple[int, int, int, int] | None = None,
    ) -> Any:
        """Refuse a job beyond this studio's :class:`Limits` or beyond the disk under the run
        folder and the memory (:func:`whichway.budget.check_request`), before it is queued:
        ValueError, one line. ``loras``: DiffMorpher's (rank, LoRA steps, LoRA files written,
        LoRA pairs held), whose steps count against the step limit and whose files and pairs
        against the disk and memory (:func:`whichway.budget.lora_bytes`). Returns the
        :class:`whichway.budget.Need`."""
        from whichway.budget import check_request, format_size, frame_size, lora_bytes, model_facts

        self.limits.check_frames(frames)
        self.limits.check_steps(steps)
        self.limits.check_steps(inversion_steps, "inversion steps")
        model = self._loaded or self.model_id
        self.limits.check_size(*frame_size(height, width, model_facts(model)))
        extra = (0, 0)
        if loras is not None:
            rank, lora_steps, files, pairs = loras
            self.limits.check_steps(lora_steps, "LoRA steps")
            extra = lora_bytes(model, rank, files, pairs)
            if extra[0]:
                label += f" and {files} rank-{rank} LoRA files of {format_size(extra[0] / files)}"
        return check_request(
            label,
            frames,
            model=model,
            device=self.device,
            steps=steps,
            guidance=guidance,
            height=height,
            width=width,
            batch_size=batch_size,
            inversion_steps=inversion_steps,
            out=self.out_dir,
            held_per_frame=held_per_frame,
            steps_name="Steps",  # the page's fields, not the command line's flags
            size_name="Height {h}, Width {w}",
            extra_bytes=extra,
        )

    def check_methods(
        self, methods: Sequence[str], aid_layers: str, *, listed: bool = False
    ) -> None:
        """Refuse attention ``methods`` the studio's model is not built for (its family from a
        local folder's ``model_index.json``, :func:`whichway.attention.methods.check_family`)
        before the job loads it: a :class:`~whichway._checks.SettingError`, one line.
        ``listed``: the methods are the Compare tab's checklist (*Attention methods*)."""
        from whichway.attention.methods import check_family

        for method in methods:
            check_family(method, self._family(), aid_layers, listed=listed)

    def _family(self) -> str | None:
        """The studio model's family, known without loading it (the loaded model's, or a local
        folder's ``model_index.json``); None when it is not known yet."""
        from whichway.models.samplers import local_family

        return local_family(self._loaded or self.model_id)

    def check_morph(self, settings: MorphSettings) -> None:
        """:meth:`check_methods` and :meth:`check_request` for a morph (a new one or a run to
        resume)."""
        from whichway.budget import morph_held_bytes

        self.check_methods((settings.method,), settings.aid_layers)
        self.check_request(
            f"{len(settings.t)} frames",
            len(settings.t),
            steps=settings.steps,
            guidance=settings.guidance,
            height=settings.height,
            width=settings.width,
            batch_size=settings.batch_size if isinstance(settings.batch_size, int) else None,
            inversion_steps=settings.inversion_steps,
            held_per_frame=lambda h, w: morph_held_bytes(h, w, settings.format is not None),
            loras=(settings.lora_rank, settings.lora_steps, 2, 1)
            if settings.method == "diffmorpher"
            else None,
        )

    def check_travel(self, settings: Any, frames: int | None = None) -> None:
        """The family check of every segment's method
        (:meth:`whichway.travel.TravelSettings.check_families`) and :meth:`check_request` for a
        travel: of ``frames`` frames,
        or of the length its
        settings give (an audio track's from its header, before it is decoded; when the header
        does not say, nothing is checked until ``frames`` is known from the decoded track)."""
        from whichway.budget import travel_frame_count, travel_held_bytes

        settings.check_families(self._family())  # a keyframe's own method named as its segment's
        if settings.seconds is not None and not math.isfinite(settings.seconds):
            raise ValueError(f"seconds must be a finite number, got {settings.seconds}")
        if frames is None:
            keys = settings.keyframes
            frames = travel_frame_count(
                len(keys),
                keys[-1].at,
                settings.fps,
                settings.seconds,
                settings.frames_per_segment,
                audio=settings.audio,
                audio_start=settings.audio_start or 0.0,
            )
        if frames is None:
            return
        self.limits.check_frames(frames)
        self.limits.check_seconds(frames / settings.fps)
        self.check_request(
            f"{frames} frames",
            frames,
            steps=settings.steps,
            guidance=settings.guidance,
            height=settings.height,
            width=settings.width,
            batch_size=settings.batch_size if isinstance(settings.batch_size, int) else None,
            inversion_steps=settings.inversion_steps,
            held_per_frame=lambda h, w: travel_held_bytes(h, w, settings.format),
            loras=_travel_loras(settings),
        )

    # --- morph ---------------------------------------------------------------------------------
    def morph_settings(
        self,
        prompt_a: str,
        prompt_b: str,
        *,
        negative_prompt: str = "",
        coupling: str = "ot",
        latent: str = "fixed",
        frames: Any = 11,
        t: str = "",
        spacing: str = "uniform",
        beta_evaluations: Any = BO_EVALUATIONS,
        seed: Any = 0,
        seed_b: Any = None,
        steps: Any = 30,
        guidance: Any = 7.5,
        height: Any = 0,
        width: Any = 0,
        image_a: str | None = None,
        image_b: str | None = None,
        batch_size: Any = None,
        format: str = "gif",
        fps: Any = 8.0,
        pingpong: bool = False,
        method: str = "plain",
        warmup_ratio: Any = 0.5,
        aid_layers: str = "both",
        fused: bool = True,
        guide_prompt: str = "",
        lora_rank: Any = 16,
        lora_steps: Any = 200,
        lora_lr: Any = 2e-4,
        attn_lambda: Any = 0.6,
    ) -> MorphSettings:
        """Page values -> MorphSettings, with the checks ``whichway morph`` makes (no model);
        ``method`` etc. choose interpolation inside attention (:mod:`whichway.attention`); the
        guide prompt counts for ``paid`` only, the LoRA settings and λ for ``diffmorpher``
        only and ``beta_evaluations`` for the ``beta-bo`` spacing only (the official defaults
        otherwise)."""
        from whichway.media import load_image
        from whichway.morph import MorphSettings, uniform_times

        prompt_a, prompt_b = _prompts(prompt_a, prompt_b)
        times = parse_times(t or "")
        if not times:
            count = _int("frames", frames, minimum=2) or 2
            self.limits.check_frames(count)  # before a list of that many times is built
            times = uniform_times(count)
        self.limits.check_frames(len(times))
        for path in (image_a, image_b):
            if path:
                load_image(path)  # ValueError naming the file when it is not a readable image
        image_a, image_b = self.keep_upload(image_a), self.keep_upload(image_b)
        fps_value = _number("fps", fps)
        if not 0 < fps_value < math.inf:
            raise ValueError(f"fps must be > 0, got {fps!r}")
        lora = _diffmorpher_fields(
            method == "diffmorpher", lora_rank, lora_steps, lora_lr, attn_lambda
        )
        settings = MorphSettings(
            prompt_a=prompt_a,
            prompt_b=prompt_b,
            t=tuple(times),
            coupling=coupling,
            latent=latent,
            seed_b=_int("seed B", seed_b, optional=True),
            spacing=spacing,
            # MorphSettings checks it as the CLI does (check_beta_search), worded with the field
            beta_evaluations=(
                _int(FIELD_NAMES["beta_evaluations"], beta_evaluations)
                if spacing == "beta-bo"
                else BO_EVALUATIONS
            ),
            image_a=image_a or None,
            image_b=image_b or None,
            format=None if format in (None, "none") else format,
            **_render_options(
                seed=seed,
                steps=steps,
                guidance=guidance,
                height=height,
                width=width,
                negative_prompt=negative_prompt,
                batch_size=batch_size,
            ),
            pingpong=bool(pingpong),
            fps=fps_value,
            method=method or "plain",
            warmup_ratio=_number("warmup ratio", warmup_ratio),
            aid_layers=aid_layers or "both",
            fused=bool(fused),
            guide_prompt=(guide_prompt or "").strip() or None if method == "paid" else None,
            **lora,
        )
        self.check_morph(settings)
        return settings

    def keep_upload(self, path: str | None) -> str | None:
        """Copy an uploaded file into ``<out>/uploads/<content hash><suffix>`` (once) and return
        that path: uploads live in a temporary folder, and a run (its run.json, its inversion
        cache, a later resume) must keep finding its images."""
        if not path:
            return None
        import hashlib
        import shutil

        source = Path(path)
        digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
        target = self.out_dir / "uploads" / f"{digest}{source.suffix.lower()}"
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        return str(target)

    def run_dir_for(self, settings: MorphSettings, adapter: Adapter) -> Path:
        """``<out>/<prompt-a>--<prompt-b>--<coupling>``, the name ``whichway morph`` gives a run
        by default; when that folder holds a run of other settings, the first free ``-2``,
        ``-3``, ... (a page never overwrites another run's frames)."""
        from whichway.morph import can_resume

        base = f"{slug(settings.prompt_a)}--{slug(settings.prompt_b)}--{settings.coupling}"
        k = 1
        while True:
            candidate = self.out_dir / (base if k == 1 else f"{base}-{k}")
            if can_resume(candidate, settings, adapter):
                return candidate
            k += 1

    def morph_job(
        self, settings: MorphSettings, run_dir: Path | None = None
    ) -> Callable[..., MorphResult]:
        """A job for :meth:`stream`: load the model, then :func:`run_morph` into ``run_dir``
        (default :meth:`run_dir_for`)."""
        from whichway.morph import run_morph

        def job(
            on_frame: Callable[[int, Path], None],
            on_step: Callable[[int, int], None],
            should_stop: Callable[[], bool],
        ) -> MorphResult:
            adapter = self.adapter()
            if settings.height is not None and settings.height % adapter.size_multiple:
                raise ValueError(
                    f"height must be a multiple of {adapter.size_multiple} for this model, got {settings.height}"
                )
            if settings.width is not None and settings.width % adapter.size_multiple:
                raise ValueError(
                    f"width must be a multiple of {adapter.size_multiple} for this model, got {settings.width}"
                )
            scorer, note = self.meter()  # spaces perceptual runs; scores every run when available
            if settings.spacing != "uniform" and scorer is None:
                raise ValueError(f"{settings.spacing} spacing needs LPIPS: {note}")
            target = run_dir or self.run_dir_for(settings, adapter)
            self.out_dir.mkdir(parents=True, exist_ok=True)
            result = run_morph(
                adapter,
                settings,
                target,
                progress=False,
                meter=scorer if settings.spacing != "uniform" else None,
                on_frame=on_frame,
                on_step=on_step,
                should_stop=should_stop,
            )
            # the PPL summary `whichway morph` adds to run.json when LPIPS is available
            if scorer is not None:
                from whichway.metrics import score_run

                try:
                    score_run(result.run_dir, meter=scorer)
                except (
                    ValueError
                ) as exc:  # e.g. frames below LPIPS's minimum: the run itself is fine
                    logger.warning("no PPL summary: %s", exc)
            return result

        return job

    def resume_job(self, name: str) -> Callable[..., MorphResult]:
        """A job that finishes the morph run ``name`` with the settings in its run.json."""
        from whichway.morph import MorphSettings

        run = self.open_run(name)
        if run.kind == "travel":
            return self._resume_travel(run)
        if run.kind != "morph":
            raise ValueError(
                f"{name} is a {run.kind} run; only morph and travel runs resume from the page"
            )
        settings = MorphSettings.from_record(run.info.get("settings", {}))
        self.check_morph(settings)
        return self.morph_job(settings, run.path)

    def _resume_travel(self, run: RunInfo) -> Callable[..., Any]:
        from whichway.travel import TravelSettings, prepare_travel

        settings = TravelSettings.from_record(run.info.get("settings", {}))
        self.check_travel(settings)  # before the plan is built
        prepared = prepare_travel(settings)
        self.check_travel(settings, prepared.n_frames)
        return self.travel_job(settings, run.path, prepared)

    # --- travel --------------------------------------------------------------------------------
    def travel_settings(
        self,
        keyframes: Any,
        *,
        audio: str | None = None,
        fps: Any = 24,
        seconds: Any = 0,
        frames_per_segment: Any = 0,
        pacing: str = "uniform",
        coupling: str = "ot",
        latent: str = "cog",
        seed: Any = 0,
        steps: Any = 30,
        guidance: Any = 7.5,
        height: Any = 0,
        width: Any = 0,
        negative_prompt: str = "",
        batch_size: Any = None,
        format: str = "mp4",
        motion: str | None = "",
        method: str = "plain",
        warmup_ratio: Any = 0.5,
        aid_layers: str = "both",
        fused: bool = True,
        guide_prompt: str = "",
        lora_rank: Any = 16,
        lora_steps: Any = 200,
        lora_lr: Any = 2e-4,
        attn_lambda: Any = 0.6,
        images: Sequence[str] | None = None,
    ) -> Any:
        """Page values -> ``(TravelSettings, Prepared)``: ``keyframes`` are the table's rows
        (prompt, seed, time in seconds, method, guide prompt, image; later columns may be left
        out; empty seed/time = the defaults, empty method = ``method``, rows without a prompt are
        skipped); a row's image names one of the uploaded ``images`` by its file name. A
        segment's method is its start row's, else ``method``; the AID settings count when some
        segment uses AID or PAID, ``guide_prompt`` when some segment is paid, the LoRA settings
        and λ when some segment is diffmorpher (the defaults otherwise, as ``whichway travel``
        fills them in). Checks what needs no model (:func:`whichway.travel.prepare_travel`, whose
        decoded track and plan :meth:`travel_job` takes so that the run does not decode it
        again)."""
        from whichway.attention.methods import METHODS
        from whichway.travel import Keyframe, TravelSettings, prepare_travel
        from whichway.travel.settings import TRAVEL_METHODS

        uploads = self._keyframe_images(images)
        rows = keyframes.values.tolist() if hasattr(keyframes, "values") else list(keyframes or [])
        frames = []
        for n, row in enumerate(rows, start=1):
            cells = list(row) + [None] * (6 - len(row))
            prompt = _cell(cells[0])
            if not prompt:
                continue
            at = cells[2]
            if at is not None and not (isinstance(at, str) and not at.strip()):
                try:
                    at = float(at)
                except (TypeError, ValueError):
                    raise ValueError(f"keyframe {n}: time must be seconds, got {at!r}") from None
                if math.isnan(at):  # an empty cell of a numeric column
                    at = None
            else:
                at = None
            kf_seed = cells[1]
            kf_seed = (
                None
                if kf_seed is None or (isinstance(kf_seed, float) and math.isnan(kf_seed))
                else kf_seed
            )
            kf_method = _cell(cells[3])
            if kf_method is not None and kf_method not in TRAVEL_METHODS:
                raise ValueError(
                    f"keyframe {n}: method must be one of {', '.join(TRAVEL_METHODS)} (empty: "
                    f"the {FIELD_NAMES['method']} field's), got {kf_method!r}"
                )
            image = _cell(cells[5])
            if image is not None:
                if image not in uploads:
                    have = ", ".join(sorted(uploads)) or "none uploaded"
                    raise ValueError(
                        f"keyframe {n}: image {image!r} is not among the "
                        f"{FIELD_NAMES['keyframe_images']} ({have}); upload it there or clear "
                        "the cell"
                    )
                image = self.keep_upload(uploads[image])
            frames.append(
                Keyframe(
                    prompt,
                    seed=_int(f"keyframe {n} seed", kf_seed, optional=True),
                    at=at,
                    method=kf_method,
                    guide_prompt=_cell(cells[4]),
                    image=image,
                )
            )
        if len(frames) < 2:
            raise ValueError(
                f"a travel needs at least 2 keyframes with a prompt, got {len(frames)}"
            )
        method = method or "plain"
        used = {method, *(kf.method for kf in frames[:-1] if kf.method is not None)}
        aid = _aid_fields(bool(used & set(METHODS[1:])), warmup_ratio, aid_layers, fused)
        fps_value, secs = _number("fps", fps), _number("seconds", seconds or 0)
        settings = TravelSettings(
            keyframes=tuple(frames),
            fps=fps_value,
            seconds=secs or None,
            frames_per_segment=_int("frames per segment", frames_per_segment, optional=True)
            or None,
            pacing=pacing,
            coupling=coupling,
            latent=latent,
            audio=self.keep_upload(audio),
            format=None if format in (None, "none") else format,
            motion=(motion or "").strip() or None,  # a motion adapter: one video denoising
            method=method,
            guide_prompt=(guide_prompt or "").strip() or None if "paid" in used else None,
            **aid,
            **_diffmorpher_fields(
                "diffmorpher" in used, lora_rank, lora_steps, lora_lr, attn_lambda
            ),
            **_render_options(
                seed=seed,
                steps=steps,
                guidance=guidance,
                height=height,
                width=width,
                negative_prompt=negative_prompt,
                batch_size=batch_size,
            ),
        )
        self.check_travel(settings)  # before the plan is built
        prepared = prepare_travel(settings)
        self.check_travel(settings, prepared.n_frames)
        return settings, prepared

    @staticmethod
    def _keyframe_images(images: Sequence[str] | None) -> dict[str, str]:
        """The Travel tab's uploaded keyframe images by file name (what the table's image column
        names), each checked to be a readable image."""
        from whichway.media import load_image

        found: dict[str, str] = {}
        for path in images or ():
            name = Path(path).name
            if name in found:
                raise ValueError(
                    f"two {FIELD_NAMES['keyframe_images']} are named {name!r}; the image column "
                    "names them by file name: rename one"
                )
            load_image(path)  # ValueError naming the file when it is not a readable image
            found[name] = path
        return found

    def travel_job(
        self, settings: Any, run_dir: Path | None = None, prepared: Any = None
    ) -> Callable[..., Any]:
        """A job for :meth:`stream`: :func:`whichway.travel.run_travel` into ``run_dir`` (default
        ``<out>/travel-<first prompt>--<last prompt>``, as ``whichway travel`` names it, with
        ``-2``, ``-3``, ... when that folder is taken)."""
        from whichway.travel import run_travel

        def job(
            on_frame: Callable[[int, Path], None],
            on_step: Callable[[int, int], None],
            should_stop: Callable[[], bool],
        ) -> Any:
            adapter = self.adapter()
            meter = None
            if settings.pacing == "perceptual":
                meter, note = self.meter()
                if meter is None:
                    raise ValueError(f"perceptual pacing needs LPIPS: {note}")
            target = run_dir
            if target is None:
                first, last = settings.keyframes[0].prompt, settings.keyframes[-1].prompt
                target = _free_dir(self.out_dir / f"travel-{slug(first, 24)}--{slug(last, 24)}")
            self.out_dir.mkdir(parents=True, exist_ok=True)
            return run_travel(
                adapter,
                settings,
                target,
                progress=False,
                meter=meter,
                prepared=prepared,
                on_frame=on_frame,
                on_step=on_step,
                should_stop=should_stop,
            )

        return job

    # --- compare and coupling -------------------------------------------------------------------
    def compare_job(
        self,
        prompt_a: str,
        prompt_b: str,
        *,
        t: str = "",
        frames: Any = 5,
        seed: Any = 0,
        steps: Any = 30,
        guidance: Any = 7.5,
        height: Any = 0,
        width: Any = 0,
        negative_prompt: str = "",
        batch_size: Any = None,
        attention: Sequence[str] = (),
        guide_prompt: str = "",
        warmup_ratio: Any = 0.5,
        aid_layers: str = "both",
        fused: bool = True,
        motion: str | None = "",
        image_a: str | None = None,
        image_b: str | None = None,
        lora_rank: Any = 16,
        lora_steps: Any = 200,
        lora_lr: Any = 2e-4,
        attn_lambda: Any = 0.6,
    ) -> Callable[..., tuple[CouplingComparison, Path, dict[str, Path], str | None]]:
        """A job rendering the pair with ot, clip and random couplings (shared end frames), and
        with the ``attention`` methods (aid-outer, aid-inner, paid with ``guide_prompt``,
        diffmorpher between the uploads ``image_a`` and ``image_b`` with the LoRA settings and
        λ given, its LoRAs and inversions cached in ``<out>/cache``) on the OT path; the strips
        and ``compare.json`` go to ``<out>/compare--<prompt-a>--<prompt-b>[-k]``. The AID settings
        (``warmup_ratio``, ``aid_layers``, ``fused``) act in every AID/PAID row and are ignored
        without one, as the images and the LoRA settings without the diffmorpher row. A method
        the model's family cannot run is refused before the job when the family is known
        (the loaded model, or a local folder's ``model_index.json``)."""
        from whichway.attention.methods import (
            METHODS,
            DiffMorpherSettings,
            check_image_method,
            check_method,
        )
        from whichway.compare import compare_couplings, save_comparison
        from whichway.morph import check_times, uniform_times

        prompt_a, prompt_b = _prompts(prompt_a, prompt_b)
        attention = tuple(attention or ())
        guide = (guide_prompt or "").strip() or None
        used_aid = any(m in METHODS[1:] for m in attention)  # the AID fields act in those rows
        aid = _aid_fields(used_aid, warmup_ratio, aid_layers, fused)
        for m in attention:
            check_method(m, aid["warmup_ratio"], aid["aid_layers"], guide if m == "paid" else None)
            check_image_method(m, bool(image_a and image_b), listed=True)
        self.check_methods(attention, aid["aid_layers"], listed=True)
        images: dict[str, Any] = {}
        loras = None  # DiffMorpher's (rank, steps, files, pairs) for check_request
        if "diffmorpher" in attention:
            from whichway.media import load_image

            for path in (image_a, image_b):
                load_image(path)  # ValueError naming the file when it is not a readable image
            lora = _diffmorpher_fields(True, lora_rank, lora_steps, lora_lr, attn_lambda)
            images = {
                "image_a": self.keep_upload(image_a),
                "image_b": self.keep_upload(image_b),
                "diffmorpher": DiffMorpherSettings(**lora),
                "cache": self.out_dir / "cache",
            }
            loras = (lora["lora_rank"], lora["lora_steps"], 2, 1)
        motion = (motion or "").strip() or None
        if motion is not None:  # the folder's config and weights, before any model
            from whichway.motion.adapter import check_motion_source

            check_motion_source(motion)
        times = parse_times(t or "")
        if not times:
            count = _int("frames", frames, minimum=2) or 2
            self.limits.check_frames(count)  # before a list of that many times is built
            times = uniform_times(count)
        check_times(times)
        options = _render_options(
            seed=seed,
            steps=steps,
            guidance=guidance,
            height=height,
            width=width,
            negative_prompt=negative_prompt,
            batch_size=batch_size,
        )
        self.limits.check_frames(len(times))
        paths = 3 + len(attention) + (2 if motion else 0)  # diffmorpher: T frames, not T - 2
        self.check_request(  # three paths (ot, clip, random) and the AID ones kept for strips
            f"{len(times)} frames x {paths} paths",
            paths * len(times),
            steps=options["steps"],
            guidance=options["guidance"],
            height=options["height"],
            width=options["width"],
            batch_size=options["batch_size"],
            held_per_frame=lambda h, w: 12 * h * w,  # float32 frames kept for strips, PPL
            loras=loras,
        )

        def job(
            on_frame: Any, on_step: Callable[[int, int], None], should_stop: Callable[[], bool]
        ):
            from whichway.metrics.lpips_path import LPIPS_MIN_SIDE

            adapter = self.adapter()
            meter, note = self.meter()
            h = options["height"] or adapter.default_size[0]
            w = options["width"] or adapter.default_size[1]
            if meter is not None and min(h, w) < LPIPS_MIN_SIDE:
                meter, note = (
                    None,
                    f"PPL unavailable: LPIPS needs frames of at least {LPIPS_MIN_SIDE} pixels",
                )
            result = compare_couplings(
                adapter,
                prompt_a,
                prompt_b,
                times,
                meter=meter,
                on_step=on_step,
                should_stop=should_stop,
                attention=attention,
                guide_prompt=guide,
                motion=motion,
                **(aid if used_aid else {}),
                **images,
                **options,
            )
            target = _free_dir(self.out_dir / f"compare--{slug(prompt_a)}--{slug(prompt_b)}")
            strips = save_comparison(result, target, adapter)
            return result, target, strips, note

        return job

    def token_matching(self, prompt_a: str, prompt_b: str, seed: Any = 0) -> TokenMatching:
        """The OT token matching of two prompts under the current model."""
        from whichway.matching import token_matching

        prompt_a, prompt_b = _prompts(prompt_a, prompt_b)
        seed_value = _int("seed", seed) or 0
        with self._job_lock:
            return token_matching(self.adapter(), prompt_a, prompt_b, seed=seed_value)

    # --- runs ----------------------------------------------------------------------------------
    def runs(self) -> list[RunInfo]:
        """Run directories directly under the run folder, newest first."""
        found = []
        if not self.out_dir.is_dir():
            return found
        for child in self.out_dir.iterdir():
            run = self._read_run(child)
            if run is not None:
                found.append(run)
        found.sort(key=lambda r: r.modified, reverse=True)
        return found

    def open_run(self, name: str) -> RunInfo:
        """The run ``name`` (a folder name directly under the run folder, nothing else)."""
        if not name or Path(name).name != name or name in (".", ".."):
            raise ValueError(f"unknown run {name!r}; pick one from the list")
        run = self._read_run(self.out_dir / name)
        if run is None:
            raise ValueError(f"unknown run {name!r}; pick one from the list (press Refresh)")
        return run

    @staticmethod
    def _read_run(path: Path) -> RunInfo | None:
        for file, default_kind in (("run.json", "morph"), ("compare.json", "compare")):
            f = path / file
            if f.is_file():
                try:
                    info = json.loads(f.read_text())
                except (OSError, json.JSONDecodeError):
                    info = {"status": "unreadable"}
                return RunInfo(
                    path.name,
                    path,
                    str(info.get("command", default_kind)),
                    str(info.get("status", "?")),
                    f.stat().st_mtime,
                    info,
                )
        return None
