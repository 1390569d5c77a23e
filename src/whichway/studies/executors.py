"""Executors: run study units in-process or on Ray actors, streaming results back.

A study is a list of :class:`Unit` (a prompt pair, an image to invert, a group of latents) and a
:class:`WorkerSpec`: an importable factory that builds a worker (which loads the model once) and
whose ``__call__(unit)`` returns a :class:`UnitResult`. Executors differ only in where workers
live:

* :class:`LocalExecutor` builds one worker in this process and runs units in order.
* :class:`RayExecutor` starts ``workers`` Ray actors, one model each (``num_gpus=1`` per actor when
  the cluster has GPUs), keeps two units in flight per actor and yields results as they finish
  (``ray.wait``), so the driver can record them while the actors keep working. Without an
  address it starts a local Ray (CPU-only machines work).

Workers do no file I/O: rows, images and cached tensors travel back in the :class:`UnitResult`
and the driver writes them (:func:`run_units`), so a Ray cluster needs no shared file system and
only the driver touches the run directory.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)

EXECUTOR_NAMES: tuple[str, ...] = ("local", "ray")


@dataclass(frozen=True)
class Unit:
    """One unit of work. unit_id : str unique in the study; payload : picklable inputs."""

    unit_id: str
    payload: Any = None


@dataclass(frozen=True)
class UnitResult:
    """What a worker returns for a unit.

    rows : tuple of dict   result rows (scalars), one or more per unit
    files : dict           run-dir-relative path -> image Tensor (3, H, W) in [0, 1] (written
                           as PNG) or bytes (written as is); written before the rows are recorded
    tensors : dict         run-dir-relative path -> Tensor, saved with safetensors (caches)
    seconds : float        wall time of the unit inside the worker
    """

    unit_id: str
    rows: tuple[dict[str, Any], ...]
    files: Mapping[str, Any] = field(default_factory=dict)
    tensors: Mapping[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


class Worker(Protocol):
    def __call__(self, unit: Unit) -> UnitResult: ...


@dataclass(frozen=True)
class WorkerSpec:
    """An importable worker factory and its keyword arguments (picklable for Ray).

    factory : "package.module:callable" returning a :class:`Worker`
    """

    factory: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def build(self) -> Worker:
        module, _, name = self.factory.partition(":")
        if not name:
            raise ValueError(
                f"worker factory {self.factory!r} must look like 'package.module:name'"
            )
        try:
            obj = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"cannot import worker factory {self.factory!r}: {exc}") from exc
        return obj(**dict(self.kwargs))


class Executor(Protocol):
    def map(self, spec: WorkerSpec, units: Sequence[Unit]) -> Iterator[UnitResult]: ...
    def close(self) -> None: ...


class LocalExecutor:
    """Runs every unit in this process with one worker (built lazily, kept for later maps)."""

    def __init__(self) -> None:
        self._worker: Worker | None = None
        self._spec: WorkerSpec | None = None

    def map(self, spec: WorkerSpec, units: Sequence[Unit]) -> Iterator[UnitResult]:
        if self._worker is None or self._spec != spec:
            self._worker, self._spec = spec.build(), spec
        for unit in units:
            yield _timed(self._worker, unit)

    def close(self) -> None:
        self._worker = None


def _timed(worker: Worker, unit: Unit) -> UnitResult:
    start = time.perf_counter()
    result = worker(unit)
    if result.unit_id != unit.unit_id:
        raise RuntimeError(f"worker returned unit {result.unit_id!r} for unit {unit.unit_id!r}")
    if result.seconds:
        return result
    return UnitResult(
        result.unit_id, result.rows, result.files, result.tensors, time.perf_counter() - start
    )


class _RayWorkerActor:
    """Body of the Ray actor: builds the worker (loads the model) once."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.worker = spec.build()

    def run(self, unit: Unit) -> UnitResult:
        return _timed(self.worker, unit)


class RayExecutor:
    """Runs units on Ray actors (one model per actor), results streamed back as they finish.

    address : Ray address ("" or None starts/joins a local Ray)
    workers : number of actors; 0 = one per GPU in the cluster, or 1 when there is none
    cpus_per_worker : CPUs reserved per actor
    num_cpus : CPUs of a local Ray started here (ignored with an address)
    in_flight : units queued per actor (2 hides the driver's round trip)
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        workers: int = 0,
        cpus_per_worker: float = 1.0,
        num_cpus: int | None = None,
        in_flight: int = 2,
    ) -> None:
        try:
            import ray
        except ImportError as exc:  # pragma: no cover
            raise ValueError("the ray executor needs Ray: pip install 'ray[default]'") from exc
        self._ray = ray
        self._owns_ray = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
            if address:
                kwargs["address"] = address
            elif num_cpus is not None:
                kwargs["num_cpus"] = num_cpus
            ray.init(**kwargs)
            self._owns_ray = True
        gpus = int(ray.cluster_resources().get("GPU", 0))
        self.num_gpus_per_worker = 1 if gpus > 0 else 0
        self.workers = workers if workers > 0 else max(1, gpus)
        self.cpus_per_worker = cpus_per_worker
        self.in_flight = max(1, in_flight)
        self._actors: list[Any] = []
        self._spec: WorkerSpec | None = None

    def _start(self, spec: WorkerSpec) -> None:
        if self._actors and self._spec == spec:
            return
        self._kill_actors()
        cls = self._ray.remote(num_cpus=self.cpus_per_worker, num_gpus=self.num_gpus_per_worker)(
            _RayWorkerActor
        )
        self._actors = [cls.remote(spec) for _ in range(self.workers)]
        self._spec = spec
        log.info("started %d Ray worker(s), %d GPU each", self.workers, self.num_gpus_per_worker)

    def map(self, spec: WorkerSpec, units: Sequence[Unit]) -> Iterator[UnitResult]:
        ray = self._ray
        self._start(spec)
        todo = list(units)[::-1]  # pop() from the end keeps the given order
        pending: dict[Any, int] = {}  # object ref -> actor index
        load = [0] * len(self._actors)

        def submit(i: int) -> None:
            unit = todo.pop()
            pending[self._actors[i].run.remote(unit)] = i
            load[i] += 1

        for _ in range(self.in_flight):
            for i in range(len(self._actors)):
                if todo:
                    submit(i)
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                ref = ready[0]
                i = pending.pop(ref)
                load[i] -= 1
                if todo:
                    submit(i)
                yield ray.get(ref)
        finally:
            for ref in pending:
                ray.cancel(ref, force=False)

    def _kill_actors(self) -> None:
        for a in self._actors:
            self._ray.kill(a)
        self._actors = []
        self._spec = None

    def close(self) -> None:
        self._kill_actors()
        if self._owns_ray:
            self._ray.shutdown()
            self._owns_ray = False


def make_executor(
    name: str,
    *,
    address: str = "",
    workers: int = 0,
    cpus_per_worker: float = 1.0,
    num_cpus: int | None = None,
) -> LocalExecutor | RayExecutor:
    """Executor by name: "local" | "ray"."""
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(
            address or None, workers=workers, cpus_per_worker=cpus_per_worker, num_cpus=num_cpus
        )
    raise ValueError(f"unknown executor {name!r}; valid choices are: {', '.join(EXECUTOR_NAMES)}")


# --- driver ------------------------------------------------------------------------------------
def save_outputs(run_dir: Any, result: UnitResult) -> None:
    """Write a result's files (PNG / bytes) and tensors (safetensors) atomically under run_dir."""
    from pathlib import Path

    from whichway.studies.store import atomic_write_bytes

    run_dir = Path(run_dir)
    for rel, obj in result.files.items():
        path = run_dir / rel
        if isinstance(obj, (bytes, bytearray)):
            atomic_write_bytes(path, bytes(obj))
        else:
            atomic_write_bytes(path, png_bytes(obj))
    for rel, tensor in result.tensors.items():
        save_tensor(run_dir / rel, tensor)


def png_bytes(image: Any) -> bytes:
    """PNG bytes of an image Tensor (3, H, W) float in [0, 1] or uint8."""
    import io

    import torch
    from PIL import Image

    if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(
            f"an image must be a Tensor (3, H, W), got {getattr(image, 'shape', type(image))}"
        )
    if image.dtype != torch.uint8:
        image = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    buf = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).cpu().numpy()).save(buf, format="PNG")
    return buf.getvalue()


_SHA_KEY = "whichway.sha256"


class DamagedTensorError(ValueError):
    """A cached tensor file is unreadable or fails its checksum (never to be loaded)."""


def _safetensors_split(data: bytes) -> tuple[dict[str, Any], bytes]:
    """(header, data section) of a safetensors file's bytes; ValueError / TypeError if the header
    is unreadable."""
    import json

    if len(data) < 8:
        raise ValueError(f"{len(data)} bytes, shorter than a safetensors header")
    n = int.from_bytes(data[:8], "little")
    if n <= 0 or 8 + n > len(data):
        raise ValueError("header length points past the end of the file")
    header = json.loads(data[8 : 8 + n])
    if not isinstance(header, dict):
        raise TypeError("header is not a JSON object")
    return header, data[8 + n :]


def save_tensor(path: Any, tensor: Any) -> None:
    """Save one tensor atomically with safetensors (key ``"tensor"``); its header's metadata
    records the SHA-256 of the data section (``whichway.sha256``), checked by :func:`load_tensor`."""
    import hashlib

    from safetensors.torch import save

    from whichway.studies.store import atomic_write_bytes

    t = {"tensor": tensor.detach().cpu().contiguous()}
    _, body = _safetensors_split(save(t))
    atomic_write_bytes(path, save(t, metadata={_SHA_KEY: hashlib.sha256(body).hexdigest()}))


def load_tensor(path: Any) -> Any:
    """Load a tensor saved by :func:`save_tensor`, checking it first.

    Raises FileNotFoundError when the file is missing and :class:`DamagedTensorError` (saying
    why) when it is truncated, not safetensors, or its data section does not match the recorded
    SHA-256 (files without a recorded checksum are only checked by the reader).
    """
    import hashlib
    from pathlib import Path

    from safetensors.torch import load

    data = Path(path).read_bytes()
    try:
        header, body = _safetensors_split(data)
    except (ValueError, TypeError) as exc:
        raise DamagedTensorError(f"not a safetensors file ({exc})") from exc
    want = (header.get("__metadata__") or {}).get(_SHA_KEY)
    if want and hashlib.sha256(body).hexdigest() != want:
        raise DamagedTensorError(
            f"checksum mismatch (SHA-256 recorded {want[:16]}…, the data has "
            f"{hashlib.sha256(body).hexdigest()[:16]}…)"
        )
    try:
        tensors = load(data)
    except Exception as exc:  # any reader error means the file is unusable
        raise DamagedTensorError(
            f"not readable ({str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r})"
        ) from exc
    if "tensor" not in tensors:
        raise DamagedTensorError(f"holds {sorted(tensors)[:3]}, not a cached tensor")
    return tensors["tensor"]


def run_units(
    store: Any,
    executor: Executor,
    spec: WorkerSpec,
    units: Sequence[Unit],
    *,
    progress: bool = True,
    desc: str = "units",
    on_result: Callable[[UnitResult], None] | None = None,
    budget: Any = None,
    later: int = 0,
) -> dict[str, float]:
    """Run the units not yet in ``store`` and record each as it finishes.

    Outputs (images, tensors) are written first, then the unit's rows in one atomic shard: a
    unit's shard exists only if everything it produced is on disk. Returns counts and timings.

    budget : a :class:`~whichway.studies.timebudget.TimeBudget` or None (no limit). The units
        left (these plus ``later``, those of the study's later phases) are projected from the
        timings the store holds before any unit runs (so before a worker loads its model), and
        else from the first max(2, workers) units run here; over budget raises
        :class:`~whichway.studies.timebudget.StudyOverBudget` between units (those finished
        stay recorded, running the study again resumes them).
    """
    from tqdm.auto import tqdm

    ids = [u.unit_id for u in units]
    if len(set(ids)) != len(ids):
        dup = sorted({u for u in ids if ids.count(u) > 1})[:5]
        raise ValueError(f"unit ids must be unique, duplicated: {dup}")
    done = store.completed()
    todo = [u for u in units if u.unit_id not in done]
    skipped = len(units) - len(todo)
    if skipped:
        log.info(
            "resuming: %d of %d %s already recorded, %d to run",
            skipped,
            len(units),
            desc,
            len(todo),
        )
    workers = int(getattr(executor, "workers", 1))
    warmup = 0  # projected from this run's first units once this many have run (0: not again)
    if budget is not None and todo:
        from whichway.studies.timebudget import check_recorded

        if not check_recorded(budget, store, len(todo) + later, workers):
            warmup = max(2, workers)
    start = time.perf_counter()
    worker_seconds = 0.0
    ran: list[float] = []
    bar = tqdm(
        total=len(units),
        initial=skipped,
        desc=desc,
        unit="unit",
        disable=not progress,
        dynamic_ncols=True,
    )
    try:
        for result in executor.map(spec, todo) if todo else ():
            save_outputs(store.run_dir, result)
            store.write({result.unit_id: result.rows})
            worker_seconds += result.seconds
            if on_result is not None:
                on_result(result)
            bar.update(1)
            ran.append(result.seconds)
            if len(ran) == warmup:
                budget.check(len(todo) - len(ran) + later, ran, workers)
    finally:
        bar.close()
    elapsed = time.perf_counter() - start
    return {
        "units": len(units),
        "skipped": skipped,
        "ran": len(todo),
        "seconds": elapsed,
        "worker_seconds": worker_seconds,
    }
