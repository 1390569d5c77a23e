"""Resumable Parquet result store of a study run.

Layout of a run directory::

    RUN_DIR/
      manifest.json          config, versions, model, seeds, unit counts, and the store's record
                             of its files: SHA-256, rows and units of each (rewritten atomically)
      results/
        shard-<key>-<n>u-<sha>.parquet    one file per finished unit (or small batch of units)
        compact-<key>-<n>u-<sha>.parquet  shards merged by :meth:`ResultStore.compact`
        damaged/             damaged results files, set aside (never deleted)
      .lock                  held (flock) by the one process writing this run

A results file's name says how many units it holds (``<n>u``) and starts its SHA-256 (``<sha>``,
16 hex digits); ``manifest.json`` records the full SHA-256, row and unit counts of every results
file present when it was last written (at the start and end of a run and at each compaction), so a
damaged file is told from a good one by its checksum, not only by the Parquet reader's error.

Guarantees:

* A results file is written to a temporary file in the same folder, flushed, fsync'ed and moved
  into place with :func:`os.replace` (then the folder is fsync'ed), so a reader never sees a
  half-written file: a run killed at any moment loses at most the units whose shard was not yet
  moved into place (those in flight).
* The completed-unit index is read from the files themselves (their ``unit_id`` column), so it
  can never disagree with the data. A unit already in the index is refused
  (:meth:`ResultStore.write`), and only one process at a time may write a run (an exclusive
  ``flock`` on ``.lock``, released by the kernel when the process dies, even by SIGKILL).
* :meth:`compact` writes the merged file (whose Parquet metadata names the shards it replaces) and
  records it in the manifest *before* deleting those shards; if the process dies before deleting
  them, readers skip (and later delete) them, so no unit is ever read twice.
* Reading checks every file: its checksum (manifest, else name), that Parquet can read it, that it
  has a string ``unit_id`` column and that its columns are ones this run writes with the same types
  (the manifest records them). A file that fails is **damaged**: the writing store (the one holding
  the lock) moves it to ``results/damaged/`` (a suffix is added on a name collision) and logs one
  warning naming it and the units it held, which are then no longer completed and are computed
  again by the resumed run. A read-only store (``lock=False``: reports, ``verify``) leaves it in
  place, logs the same warning once, and reads the rest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

log = logging.getLogger(__name__)

RESULTS_DIR = "results"
DAMAGED_DIR = "damaged"
MANIFEST = "manifest.json"
_REPLACES_KEY = b"whichway.replaces"
# manifest.json keys owned by the store
FILES_KEY = "results_files"
SCHEMA_KEY = "results_schema"
DAMAGED_KEY = "damaged_files"
_NAME_RE = re.compile(r"^(shard|compact)-([0-9a-f]+)-(\d+)u-([0-9a-f]{16})\.parquet$")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, flush, fsync,
    os.replace, fsync of the folder)."""
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
    _fsync_dir(path.parent)
    return path


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_bytes(
        path, (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode()
    )


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def set_aside(path: Path, folder: Path) -> Path:
    """Move ``path`` into ``folder`` (created), never overwriting: on a name collision a suffix
    ``.1``, ``.2``, ... is added before the extension. Returns the new path."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    k = 0
    while target.exists():
        k += 1
        target = folder / f"{path.stem}.{k}{path.suffix}"
    os.replace(path, target)
    _fsync_dir(folder)
    _fsync_dir(path.parent)
    return target


def _parquet_bytes(table: Any) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    return buf.getvalue().to_pybytes()


def _type_str(t: Any) -> str:
    """An Arrow type's name, with list item fields unnamed (Parquet renames them)."""
    import pyarrow as pa

    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"{'large_' if pa.types.is_large_list(t) else ''}list<{_type_str(t.value_type)}>"
    if pa.types.is_struct(t):
        return "struct<" + ", ".join(f"{f.name}: {_type_str(f.type)}" for f in t) + ">"
    return str(t)


def _is_nullish(t: str) -> bool:
    """Arrow's type for a column that held only None (or only empty lists)."""
    return t in ("null", "list<null>", "large_list<null>")


def _is_list(t: str) -> bool:
    return t.startswith(("list<", "large_list<"))


def _compatible(a: str, b: str) -> bool:
    """Whether two Arrow type names can hold the same column (None-only columns fit any type)."""
    if a == b or "null" in (a, b):
        return True
    if _is_nullish(a) or _is_nullish(b):
        return _is_list(a) and _is_list(b)
    return {a, b} <= {"string", "large_string"}


def _merge_schema(
    ref: Mapping[str, str], schema: Mapping[str, str]
) -> tuple[dict[str, str], list[str]]:
    """(merged column types, conflicts) of a run's recorded columns and a new file's."""
    out = dict(ref)
    conflicts = []
    for name, t in schema.items():
        if name not in out or (
            _is_nullish(out[name]) and not _is_nullish(t) and _compatible(out[name], t)
        ):
            out[name] = t
        elif not _compatible(out[name], t):
            conflicts.append(f"{name}: {t} (the run has {out[name]})")
    return out, conflicts


@dataclass(frozen=True)
class ResultFile:
    """A readable results file: name in ``results/``, SHA-256 of its bytes, rows, unit ids."""

    name: str
    sha256: str
    rows: int
    units: frozenset[str]

    def record(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "rows": self.rows, "units": len(self.units)}


@dataclass(frozen=True)
class DamagedFile:
    """A results file that failed the checks.

    name : its name in ``results/``; reason : what failed; units : how many of the units it held
    no readable file records (they are computed again), None when the count cannot be known;
    moved_to : run-dir-relative path in ``results/damaged/``, or None when left in place (a
    read-only store).
    """

    name: str
    reason: str
    units: int | None
    moved_to: str | None = None

    def message(self) -> str:
        if self.units is None:
            held = "the units it held (count unknown)"
        else:
            held = f"the {self.units} unit(s) it held"
        if self.units == 0:
            fate = "every unit it held is recorded in another file, so none is lost"
        elif self.moved_to:
            fate = f"{held} will be computed again"
        else:
            fate = f"{held} are left out until the study is run again, which sets it aside and computes them again"
        where = f"moved to {self.moved_to}" if self.moved_to else "left in place (read-only)"
        return f"damaged results file {RESULTS_DIR}/{self.name}: {self.reason}; {where}; {fate}"


@dataclass
class _Scan:
    live: dict[str, ResultFile] = field(default_factory=dict)
    superseded: set[str] = field(default_factory=set)
    damaged: list[DamagedFile] = field(default_factory=list)
    tables: dict[str, Any] = field(default_factory=dict)
    done: set[str] = field(default_factory=set)  # units of the live files


class RunLockedError(RuntimeError):
    """Another process is writing this run directory."""


class ResultStore:
    """Append-only, resumable table of result rows keyed by ``unit_id``.

    Every row written for a unit carries its ``unit_id``; one unit's rows go into one shard
    together (a unit is either wholly recorded or not at all).

    lock : hold the run's lock (needed to write; a store without it only reads)
    warn : log one warning per damaged file found (``verify`` reports them itself)
    """

    def __init__(self, run_dir: str | Path, *, lock: bool = True, warn: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.warn = warn
        self.results_dir = self.run_dir / RESULTS_DIR
        self._lock_fh: Any = None
        self._scan_state: _Scan | None = None
        self._meta: dict[str, Any] | None = None
        self._warned: set[tuple[str, str]] = set()
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

    @property
    def writable(self) -> bool:
        return self._lock_fh is not None

    def close(self) -> None:
        if self._lock_fh is not None:
            self._lock_fh.close()  # closing releases the flock
            self._lock_fh = None

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the store's record in manifest.json -------------------------------------------------
    def _load_meta(self) -> dict[str, Any]:
        if self._meta is None:
            m: dict[str, Any] = {}
            path = self.run_dir / MANIFEST
            if path.is_file():
                try:
                    m = json.loads(path.read_text())
                except (OSError, ValueError):
                    m = {}
            self._meta = {
                FILES_KEY: dict(m.get(FILES_KEY) or {}),
                SCHEMA_KEY: dict(m.get(SCHEMA_KEY) or {}),
                DAMAGED_KEY: list(m.get(DAMAGED_KEY) or []),
            }
        return self._meta

    def _store_section(self) -> dict[str, Any]:
        meta = self._load_meta()
        scan = self._scan()
        meta[FILES_KEY] = {n: f.record() for n, f in sorted(scan.live.items())}
        return {k: meta[k] for k in (FILES_KEY, SCHEMA_KEY, DAMAGED_KEY) if meta[k]}

    def _persist(self) -> None:
        """Rewrite the store's keys of manifest.json (only when a manifest exists)."""
        path = self.run_dir / MANIFEST
        if not self.writable or not path.is_file():
            return
        manifest = {
            k: v
            for k, v in json.loads(path.read_text()).items()
            if k not in (FILES_KEY, SCHEMA_KEY, DAMAGED_KEY)
        }
        manifest.update(self._store_section())
        atomic_write_json(path, manifest)

    # --- checking and reading ----------------------------------------------------------------
    def _check(
        self, path: Path, keep_table: bool
    ) -> tuple[ResultFile | None, str, Any, Any, list[str]]:
        """(file record or None, reason it failed, table, the units it held (ids, a count or None
        when unknown), names it replaces)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        meta = self._load_meta()
        rec = meta[FILES_KEY].get(path.name)
        m = _NAME_RE.match(path.name)
        known_units = (
            rec.get("units") if isinstance(rec, dict) else (int(m.group(3)) if m else None)
        )
        data = path.read_bytes()
        sha = sha256_hex(data)
        bad_sum = ""
        if isinstance(rec, dict) and rec.get("sha256") and rec["sha256"] != sha:
            bad_sum = f"checksum mismatch (manifest.json records SHA-256 {rec['sha256'][:16]}…, the file has {sha[:16]}…)"
        elif m and not sha.startswith(m.group(4)):
            bad_sum = (
                f"checksum mismatch (its name says SHA-256 {m.group(4)}…, the file has {sha[:16]}…)"
            )
        try:
            table = pq.read_table(pa.BufferReader(data))
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            first = re.sub(r"^Could not open Parquet input source '<Buffer>': ", "", first)
            unreadable = f"not readable as Parquet ({first})"
            return (
                None,
                f"{bad_sum}; {unreadable}" if bad_sum else unreadable,
                None,
                known_units,
                [],
            )
        if bad_sum:
            return None, bad_sum, None, known_units, []
        names = table.column_names
        if "unit_id" not in names or _type_str(table.schema.field("unit_id").type) not in (
            "string",
            "large_string",
        ):
            return (
                None,
                "schema mismatch (no string unit_id column: not a results file of this store)",
                None,
                known_units,
                [],
            )
        units = frozenset(table.column("unit_id").to_pylist())
        ref = meta[SCHEMA_KEY]
        if ref:
            extra = [n for n in names if n not in ref]
            _, conflicts = _merge_schema(
                ref, {n: _type_str(table.schema.field(n).type) for n in names if n in ref}
            )
            if extra or conflicts:
                what = (
                    [f"columns this run does not write: {extra[:5]}"] if extra else []
                ) + conflicts[:3]
                return None, f"schema mismatch ({'; '.join(what)})", None, units, []
        if (
            isinstance(rec, dict)
            and rec.get("rows") is not None
            and int(rec["rows"]) != table.num_rows
        ):
            return (
                None,
                f"row count mismatch ({table.num_rows} rows, manifest.json records {rec['rows']})",
                None,
                units,
                [],
            )
        replaces: list[str] = []
        smeta = table.schema.metadata or {}
        if path.name.startswith("compact-") and _REPLACES_KEY in smeta:
            replaces = list(json.loads(smeta[_REPLACES_KEY]))
        return (
            ResultFile(path.name, sha, table.num_rows, units),
            "",
            table if keep_table else None,
            {f.name: _type_str(f.type) for f in table.schema},
            replaces,
        )

    def _scan(self, keep_tables: bool = False, refresh: bool = False) -> _Scan:
        """Check every results file (cached; ``refresh`` or ``keep_tables`` reads them again)."""
        if self._scan_state is not None and not (refresh or keep_tables):
            return self._scan_state
        if not self.writable:
            self._meta = None  # a reader follows what the writer has recorded since
        meta = self._load_meta()
        scan = _Scan()
        files = sorted(self.results_dir.glob("*.parquet")) if self.results_dir.is_dir() else []
        compacts = [f for f in files if f.name.startswith("compact-")]
        bad: list[tuple[Path, str, Any]] = []
        good: dict[str, tuple[ResultFile, Any, dict[str, str]]] = {}

        def check(f: Path) -> None:
            try:
                res, reason, table, held, replaces = self._check(f, keep_tables)
            except FileNotFoundError:  # removed meanwhile (a writer compacting): not ours to judge
                return
            if res is None:
                bad.append((f, reason, held))
            else:
                good[f.name] = (res, table, held)
                scan.superseded.update(replaces)

        for f in compacts:
            check(f)
        for f in files:
            if f.name not in scan.superseded and not f.name.startswith("compact-"):
                check(f)
        for name in scan.superseded:
            good.pop(name, None)
        scan.live = {n: r for n, (r, _, _) in sorted(good.items())}
        scan.tables = {n: t for n, (_, t, _) in good.items() if t is not None}
        if not meta[SCHEMA_KEY] and good:  # a run written before its columns were recorded
            merged: dict[str, str] = {}
            for _, _, cols in good.values():
                merged, _ = _merge_schema(merged, cols)
            meta[SCHEMA_KEY] = merged
        recorded = scan.done = (
            set().union(*(f.units for f in scan.live.values())) if scan.live else set()
        )
        for f, reason, held in bad:
            if f.name in scan.superseded:
                continue
            units = len(held - recorded) if isinstance(held, frozenset) else held
            moved = None
            if self.writable:
                moved = str(set_aside(f, self.results_dir / DAMAGED_DIR).relative_to(self.run_dir))
            d = DamagedFile(f.name, reason, units, moved)
            scan.damaged.append(d)
            if self.warn and (f.name, reason) not in self._warned:
                self._warned.add((f.name, reason))
                log.warning(d.message())
            if moved:
                meta[DAMAGED_KEY].append(
                    {"name": f.name, "moved_to": moved, "reason": reason, "units": units}
                )
        self._scan_state = scan
        if scan.damaged and self.writable:
            self._persist()
        return scan

    @property
    def damaged(self) -> tuple[DamagedFile, ...]:
        """Damaged results files found by the last read (set aside when this store writes)."""
        return tuple(self._scan().damaged)

    def files(self) -> dict[str, ResultFile]:
        """The readable, live results files (name -> record)."""
        return dict(self._scan().live)

    def completed(self) -> set[str]:
        """Ids of the units recorded so far (read from the files)."""
        return set(self._scan().done)

    def read(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """All readable rows, in file order (damaged files are left out, see the module docstring);
        raises if a unit appears in two files (never expected)."""
        import pandas as pd
        import pyarrow as pa

        scan = self._scan(keep_tables=True)
        tables = scan.tables
        scan.tables = {}
        if not scan.live:
            return pd.DataFrame(columns=["unit_id"] if columns is None else list(columns))
        owners: dict[str, str] = {}
        for name, f in scan.live.items():
            for u in f.units:
                if u in owners:
                    raise RuntimeError(
                        f"unit {u!r} is recorded in both {owners[u]} and {name}; the store is corrupt"
                    )
                owners[u] = name
        parts = [tables[n] for n in scan.live]
        if columns is not None:
            parts = [t.select([c for c in columns if c in t.column_names]) for t in parts]
        df = pa.concat_tables(parts, promote_options="permissive").to_pandas()
        if columns is not None:
            df = df.reindex(columns=list(columns))
        return df

    # --- writing ---------------------------------------------------------------------------
    def _require_writable(self, what: str) -> None:
        if not self.writable:
            raise RuntimeError(
                f"this ResultStore was opened read-only (lock=False); it cannot {what}"
            )

    def _record_schema(self, table: Any, what: str) -> None:
        meta = self._load_meta()
        schema = {f.name: _type_str(f.type) for f in table.schema}
        merged, conflicts = _merge_schema(meta[SCHEMA_KEY], schema)
        if conflicts:
            raise ValueError(
                f"{what} do not match the columns this run records: {'; '.join(conflicts[:3])}"
            )
        if merged != meta[SCHEMA_KEY]:
            meta[SCHEMA_KEY] = merged
            self._persist()  # before the file that needs them, so a reader never rejects it

    def _put(self, kind: str, key: str, table: Any) -> ResultFile:
        data = _parquet_bytes(table)
        sha = sha256_hex(data)
        units = frozenset(table.column("unit_id").to_pylist())
        name = f"{kind}-{key}-{len(units)}u-{sha[:16]}.parquet"
        atomic_write_bytes(self.results_dir / name, data)
        return ResultFile(name, sha, table.num_rows, units)

    def write(self, rows_by_unit: Mapping[str, Sequence[Mapping[str, Any]]]) -> Path:
        """Record the rows of one or more finished units in one new shard (atomic).

        rows_by_unit : unit id -> its rows (dicts of scalars). Each row gets ``unit_id``.
        Raises ValueError if a unit is already recorded or has no rows, or if the rows' column
        types differ from those recorded earlier in this run.
        """
        import pyarrow as pa

        self._require_writable("write")
        if not rows_by_unit:
            raise ValueError("nothing to write: give at least one unit's rows")
        done = self._scan().done
        again = [u for u in rows_by_unit if u in done]
        if again:
            raise ValueError(
                f"unit(s) already recorded, refusing to record them twice: {again[:5]}"
            )
        records: list[dict[str, Any]] = []
        for unit_id, rows in rows_by_unit.items():
            if not rows:
                raise ValueError(
                    f"unit {unit_id!r} has no rows; a finished unit records at least one"
                )
            for row in rows:
                records.append(
                    {"unit_id": unit_id, **{k: v for k, v in row.items() if k != "unit_id"}}
                )
        table = pa.Table.from_pylist(records)
        self._record_schema(table, f"the rows of unit(s) {list(rows_by_unit)[:3]}")
        key = hashlib.blake2b(
            "\x1f".join(sorted(rows_by_unit)).encode(), digest_size=10
        ).hexdigest()
        rec = self._put("shard", key, table)
        scan = self._scan()
        scan.live[rec.name] = rec
        scan.done.update(rec.units)
        return self.results_dir / rec.name

    def compact(self) -> Path | None:
        """Merge every live file into one ``compact-*.parquet`` (crash-safe, see module docstring)."""
        import pyarrow as pa

        self._require_writable("compact")
        scan = self._scan(keep_tables=True)
        tables = scan.tables
        scan.tables = {}
        for name in scan.superseded:  # leftovers of a compaction that died before deleting them
            (self.results_dir / name).unlink(missing_ok=True)
        scan.superseded = set()
        if len(scan.live) <= 1:
            self._persist()
            return self.results_dir / next(iter(scan.live)) if scan.live else None
        names = list(scan.live)
        table = pa.concat_tables([tables[n] for n in names], promote_options="permissive")
        meta = dict(table.schema.metadata or {})
        meta[_REPLACES_KEY] = json.dumps(names).encode()
        table = table.replace_schema_metadata(meta)
        key = hashlib.blake2b("\x1f".join(names).encode(), digest_size=10).hexdigest()
        rec = self._put("compact", key, table)  # durable before anything it replaces is removed
        scan.live = {rec.name: rec}
        self._persist()  # the manifest now records the compacted file, not the shards
        for n in names:
            (self.results_dir / n).unlink(missing_ok=True)
        _fsync_dir(self.results_dir)
        return self.results_dir / rec.name

    # --- manifest --------------------------------------------------------------------------
    def write_manifest(self, manifest: Mapping[str, Any]) -> Path:
        """Write manifest.json atomically: ``manifest`` plus the store's record of its files."""
        own = (FILES_KEY, SCHEMA_KEY, DAMAGED_KEY)
        body = {k: v for k, v in dict(manifest).items() if k not in own}
        return atomic_write_json(self.run_dir / MANIFEST, {**body, **self._store_section()})

    def read_manifest(self) -> dict[str, Any]:
        path = self.run_dir / MANIFEST
        if not path.is_file():
            raise ValueError(
                f"{str(self.run_dir)!r} is not a study run directory: {MANIFEST} is missing"
            )
        try:
            manifest = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(
                f"{str(path)!r} is damaged (not JSON: {exc}); restore it from a copy or start the "
                "run in a new directory"
            ) from exc
        if not isinstance(manifest, dict):
            raise ValueError(
                f"{str(path)!r} is damaged (not a JSON object); restore it from a copy or start "
                "the run in a new directory"
            )
        return manifest


def versions() -> dict[str, str]:
    """Versions of the libraries that shape a study's numbers (for the manifest)."""
    from importlib import metadata

    out: dict[str, str] = {}
    for name in (
        "whichway",
        "torch",
        "diffusers",
        "transformers",
        "lpips",
        "timm",
        "torch-fidelity",
        "scipy",
        "pot",
        "pandas",
        "pyarrow",
        "ray",
    ):
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
