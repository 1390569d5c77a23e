"""Resumable Parquet result store of a study run.

Layout of a run directory::

    RUN_DIR/
      manifest.json          config, versions, model, seeds, unit counts (rewritten atomically)
      results/
        shard-<hash>.parquet one file per finished unit (or small batch of units)
        compact-<hash>.parquet  shards merged by :meth:`ResultStore.compact`
      .lock                  held (flock) by the one process writing this run

Guarantees:

* A shard is written to a temporary file in the same folder, flushed, fsync'ed and moved into
  place with :func:`os.replace`, so a reader never sees a half-written file: a run killed at any
  moment loses at most the units whose shard was not yet moved into place (those in flight).
* The completed-unit index is read from the shards themselves (their ``unit_id`` column), so it
  can never disagree with the data. A unit already in the index is refused
  (:meth:`ResultStore.write`), and only one process at a time may write a run (an exclusive
  ``flock`` on ``.lock``, released by the kernel when the process dies, even by SIGKILL).
* :meth:`compact` merges shards into one file whose Parquet metadata names the shards it
  replaces; if the process dies before deleting them, readers skip (and later delete) them, so no
  unit is ever read twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

log = logging.getLogger(__name__)

RESULTS_DIR = "results"
MANIFEST = "manifest.json"
_REPLACES_KEY = b"whichway.replaces"


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder + fsync + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode())


def _write_parquet_atomic(table: Any, path: Path) -> None:
    import pyarrow.parquet as pq

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RunLockedError(RuntimeError):
    """Another process is writing this run directory."""


class ResultStore:
    """Append-only, resumable table of result rows keyed by ``unit_id``.

    Every row written for a unit carries its ``unit_id``; one unit's rows go into one shard
    together (a unit is either wholly recorded or not at all).
    """

    def __init__(self, run_dir: str | Path, *, lock: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.results_dir = self.run_dir / RESULTS_DIR
        self._lock_fh: Any = None
        self._done: set[str] | None = None
        if lock:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.results_dir.mkdir(parents=True, exist_ok=True)
            self._acquire_lock()

    # --- locking ---------------------------------------------------------------------------
    def _acquire_lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - non-POSIX: no cross-process lock
            log.warning("fcntl unavailable: cannot stop two processes writing %s", self.run_dir)
            return
        fh = open(self.run_dir / ".lock", "a+")  # noqa: SIM115 - held open for the run's lifetime
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            fh.close()
            raise RunLockedError(
                f"run directory {str(self.run_dir)!r} is being written by another process; wait for "
                "it to finish or stop it first"
            ) from exc
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._lock_fh = fh

    def close(self) -> None:
        if self._lock_fh is not None:
            self._lock_fh.close()  # closing releases the flock
            self._lock_fh = None

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reading ---------------------------------------------------------------------------
    def _files(self) -> tuple[list[Path], set[str]]:
        """Live result files and the names of shards superseded by a compacted file."""
        import pyarrow.parquet as pq

        if not self.results_dir.is_dir():
            return [], set()
        files = sorted(self.results_dir.glob("*.parquet"))
        superseded: set[str] = set()
        for f in files:
            if f.name.startswith("compact-"):
                meta = pq.read_schema(f).metadata or {}
                if _REPLACES_KEY in meta:
                    superseded.update(json.loads(meta[_REPLACES_KEY]))
        live = [f for f in files if f.name not in superseded]
        return live, superseded

    def completed(self) -> set[str]:
        """Ids of the units recorded so far (read from the shards)."""
        if self._done is None:
            import pyarrow.parquet as pq

            done: set[str] = set()
            for f in self._files()[0]:
                ids = pq.read_table(f, columns=["unit_id"]).column("unit_id").to_pylist()
                done.update(ids)
            self._done = done
        return set(self._done)

    def read(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """All rows, in shard order; raises if a unit appears in two files (never expected)."""
        import pandas as pd
        import pyarrow as pa
        import pyarrow.parquet as pq

        live, _ = self._files()
        if not live:
            return pd.DataFrame(columns=["unit_id"] if columns is None else list(columns))
        tables = [pq.read_table(f, columns=list(columns) if columns else None) for f in live]
        df = pa.concat_tables(tables, promote_options="permissive").to_pandas()
        owners: dict[str, str] = {}
        for f, t in zip(live, tables):
            if "unit_id" not in t.column_names:
                break
            for u in set(t.column("unit_id").to_pylist()):
                if u in owners:
                    raise RuntimeError(
                        f"unit {u!r} is recorded in both {owners[u]} and {f.name}; the store is corrupt"
                    )
                owners[u] = f.name
        return df

    # --- writing ---------------------------------------------------------------------------
    def write(self, rows_by_unit: Mapping[str, Sequence[Mapping[str, Any]]]) -> Path:
        """Record the rows of one or more finished units in one new shard (atomic).

        rows_by_unit : unit id -> its rows (dicts of scalars). Each row gets ``unit_id``.
        Raises ValueError if a unit is already recorded or has no rows.
        """
        import pyarrow as pa

        if self._lock_fh is None:
            raise RuntimeError("this ResultStore was opened read-only (lock=False); it cannot write")
        if not rows_by_unit:
            raise ValueError("nothing to write: give at least one unit's rows")
        done = self.completed()
        again = [u for u in rows_by_unit if u in done]
        if again:
            raise ValueError(f"unit(s) already recorded, refusing to record them twice: {again[:5]}")
        records: list[dict[str, Any]] = []
        for unit_id, rows in rows_by_unit.items():
            if not rows:
                raise ValueError(f"unit {unit_id!r} has no rows; a finished unit records at least one")
            for row in rows:
                records.append({"unit_id": unit_id, **{k: v for k, v in row.items() if k != "unit_id"}})
        table = pa.Table.from_pylist(records)
        key = hashlib.blake2b("\x1f".join(sorted(rows_by_unit)).encode(), digest_size=10).hexdigest()
        path = self.results_dir / f"shard-{key}.parquet"
        _write_parquet_atomic(table, path)
        assert self._done is not None
        self._done.update(rows_by_unit)
        return path

    def compact(self) -> Path | None:
        """Merge every shard into one ``compact-*.parquet`` (crash-safe, see module docstring)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._lock_fh is None:
            raise RuntimeError("this ResultStore was opened read-only (lock=False); it cannot compact")
        live, superseded = self._files()
        for name in superseded:  # leftovers of a compaction that died before deleting them
            (self.results_dir / name).unlink(missing_ok=True)
        if len(live) <= 1:
            return live[0] if live else None
        table = pa.concat_tables([pq.read_table(f) for f in live], promote_options="permissive")
        names = [f.name for f in live]
        meta = dict(table.schema.metadata or {})
        meta[_REPLACES_KEY] = json.dumps(names).encode()
        table = table.replace_schema_metadata(meta)
        key = hashlib.blake2b("\x1f".join(names).encode(), digest_size=10).hexdigest()
        path = self.results_dir / f"compact-{key}.parquet"
        _write_parquet_atomic(table, path)
        for f in live:
            f.unlink(missing_ok=True)
        return path

    # --- manifest --------------------------------------------------------------------------
    def write_manifest(self, manifest: Mapping[str, Any]) -> Path:
        return atomic_write_json(self.run_dir / MANIFEST, dict(manifest))

    def read_manifest(self) -> dict[str, Any]:
        path = self.run_dir / MANIFEST
        if not path.is_file():
            raise ValueError(f"{str(self.run_dir)!r} is not a study run directory: {MANIFEST} is missing")
        return json.loads(path.read_text())


def versions() -> dict[str, str]:
    """Versions of the libraries that shape a study's numbers (for the manifest)."""
    from importlib import metadata

    out: dict[str, str] = {}
    for name in ("whichway", "torch", "diffusers", "transformers", "lpips", "timm", "torch-fidelity",
                 "scipy", "pot", "pandas", "pyarrow", "ray"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    import platform

    out["python"] = platform.python_version()
    return out


def unit_key(parts: Iterable[object]) -> str:
    """A short stable id from parts (for units defined by many fields)."""
    return hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).hexdigest()
