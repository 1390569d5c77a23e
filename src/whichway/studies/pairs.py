"""Prompt-pair sources for the prompt-pair study (paper A, DESIGN.md section 1.1).

Two kinds of source give a table of prompt pairs with a human similarity score:

* **Crisscrossed Captions** (CxC) semantic-textual-similarity CSVs
  (``caption1,caption2,agg_score,sampling_method``), whose caption ids such as
  ``COCO_val2014:sentid:190268`` are resolved to text through MS-COCO captions JSON files
  (``annotations[].id -> caption``). Ids that no given JSON file holds are dropped, counted and
  reported (:class:`PairSet`).
* **Plain pair files**: CSV, JSONL or Parquet with columns ``prompt_a, prompt_b`` and optionally
  ``similarity``, ``pair_id`` and ``guide`` (PAID's guide prompt of the pair).

Pairs are then sampled per similarity group (:func:`stratified_sample`): groups of width 0.5 over
the 0--5 scale, labelled by their upper edge 0.5, 1.0, ..., 5.0 as in the paper; a score on an
inner edge belongs to the upper group (``[0, 0.5), [0.5, 1.0), ..., [4.5, 5.0]``).

Every pair has a stable ``pair_id`` (the two CxC caption ids, or a hash of the two prompts), so a
run's units are the same whatever the file order, and a seed per pair (:func:`pair_seed`) that
depends only on the study seed and the pair id.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

log = logging.getLogger(__name__)

#: Columns of a Crisscrossed Captions STS file.
CXC_COLUMNS: tuple[str, ...] = ("caption1", "caption2", "agg_score")
#: Columns every pair table carries after loading.
PAIR_COLUMNS: tuple[str, ...] = ("pair_id", "prompt_a", "prompt_b", "similarity", "source")
#: File suffixes a plain pair file may have.
PAIR_FILE_FORMATS: tuple[str, ...] = (".csv", ".jsonl", ".parquet")


@dataclass(frozen=True)
class PairSet:
    """A loaded table of prompt pairs and what was lost on the way.

    pairs : DataFrame with columns ``pair_id, prompt_a, prompt_b, similarity, source`` (plus
        ``sampling_method`` for CxC), one row per resolvable pair, sorted by ``pair_id``.
    n_total : int        rows read from the source files
    n_unresolved : int   rows dropped because a caption id was not found in the captions JSON
    n_invalid : int      rows dropped for an empty prompt or a missing/out-of-range similarity
    unresolved_ids : tuple of str   a few of the caption ids that could not be resolved
    """

    pairs: pd.DataFrame
    n_total: int
    n_unresolved: int = 0
    n_invalid: int = 0
    unresolved_ids: tuple[str, ...] = field(default_factory=tuple)

    def summary(self) -> dict[str, int]:
        return {
            "pairs_read": self.n_total,
            "pairs_resolved": len(self.pairs),
            "pairs_unresolved": self.n_unresolved,
            "pairs_invalid": self.n_invalid,
        }


# --- reading ---------------------------------------------------------------------------------
def _read_table(path: Path, required: Sequence[str], what: str) -> pd.DataFrame:
    """Read a CSV / JSONL / Parquet file and check ``required`` columns are there."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} file {str(path)!r} does not exist or is not a file")
    suffix = path.suffix.lower()
    readers = {
        ".csv": lambda: pd.read_csv(path, dtype=str, keep_default_na=False),
        ".jsonl": lambda: pd.read_json(path, lines=True, dtype=False),
        ".ndjson": lambda: pd.read_json(path, lines=True, dtype=False),
        ".parquet": lambda: pd.read_parquet(path),
    }
    if suffix not in readers:
        raise ValueError(
            f"{what} file {str(path)!r} has an unknown format {suffix!r}; valid formats are: "
            f"{', '.join(PAIR_FILE_FORMATS)}"
        )
    try:
        df = readers[suffix]()
    except Exception as exc:  # parser errors of the three libraries differ
        raise ValueError(
            f"could not read {what} file {str(path)!r}: {type(exc).__name__}: {exc}"
        ) from exc
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(
            f"{what} file {str(path)!r} is missing column(s) {missing}; it has {list(df.columns)}, "
            f"and needs {list(required)}"
        )
    return df


def load_coco_captions(paths: Iterable[str | Path]) -> dict[int, str]:
    """Caption id -> caption text from MS-COCO captions JSON files (``annotations[].id``).

    Later files win when two files hold the same id (the texts agree in the official files).
    """
    captions: dict[int, str] = {}
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("give at least one COCO captions JSON file (e.g. captions_val2014.json)")
    for path in paths:
        if not path.is_file():
            raise ValueError(f"COCO captions file {str(path)!r} does not exist or is not a file")
        try:
            with path.open("r", encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"could not read COCO captions file {str(path)!r}: {exc}") from exc
        anns = data.get("annotations") if isinstance(data, dict) else None
        if not isinstance(anns, list):
            raise ValueError(
                f"COCO captions file {str(path)!r} has no 'annotations' list; expected the COCO "
                'captions format {"annotations": [{"id": ..., "caption": ...}, ...]}'
            )
        for ann in anns:
            try:
                captions[int(ann["id"])] = str(ann["caption"]).strip()
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(
                    f"COCO captions file {str(path)!r}: annotation {ann!r} lacks an integer 'id' "
                    "or a 'caption'"
                ) from exc
    return captions


def _caption_number(caption_id: str) -> int | None:
    """``COCO_val2014:sentid:190268`` -> 190268 (None when the id has no trailing number)."""
    tail = str(caption_id).rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else None


def load_cxc(
    sts_files: Iterable[str | Path],
    coco_files: Iterable[str | Path],
    *,
    max_similarity: float = 5.0,
) -> PairSet:
    """Crisscrossed Captions STS pairs resolved to caption text.

    sts_files : CxC ``sts_*.csv`` files (columns ``caption1, caption2, agg_score[,
        sampling_method]``).
    coco_files : COCO captions JSON files; caption ids they do not hold make the pair unresolved.

    Returns a :class:`PairSet`; ``similarity`` is ``agg_score`` (0 to ``max_similarity``). Rows
    with a score outside that range or not a number are dropped and counted as invalid.
    """
    import pandas as pd

    captions = load_coco_captions(coco_files)
    frames = []
    for path in sts_files:
        df = _read_table(Path(path), CXC_COLUMNS, "Crisscrossed Captions STS")
        frames.append(df.assign(source=f"cxc:{Path(path).stem}"))
    if not frames:
        raise ValueError("give at least one Crisscrossed Captions STS csv (e.g. sts_val.csv)")
    df = pd.concat(frames, ignore_index=True)
    n_total = len(df)
    num_a = df["caption1"].map(_caption_number)
    num_b = df["caption2"].map(_caption_number)
    text_a = num_a.map(lambda k: captions.get(k) if k is not None else None)
    text_b = num_b.map(lambda k: captions.get(k) if k is not None else None)
    resolved = text_a.notna() & text_b.notna()
    missing_ids = pd.concat([df.loc[text_a.isna(), "caption1"], df.loc[text_b.isna(), "caption2"]])
    out = pd.DataFrame(
        {
            "pair_id": df["caption1"].astype(str) + "|" + df["caption2"].astype(str),
            "prompt_a": text_a,
            "prompt_b": text_b,
            "similarity": pd.to_numeric(df["agg_score"], errors="coerce"),
            "source": df["source"],
        }
    )
    if "sampling_method" in df.columns:
        out["sampling_method"] = df["sampling_method"].astype(str)
    out = out[resolved]
    n_unresolved = int((~resolved).sum())
    out, n_invalid = _clean(out, max_similarity)
    if n_unresolved:
        log.info(
            "Crisscrossed Captions: %d of %d pairs unresolved (caption ids not in the COCO files)",
            n_unresolved,
            n_total,
        )
    return PairSet(
        out, n_total, n_unresolved, n_invalid, tuple(sorted(set(missing_ids.astype(str)))[:10])
    )


def prompt_pair_id(prompt_a: str, prompt_b: str) -> str:
    """Stable id of a plain prompt pair: a hash of the two prompts (order matters)."""
    digest = hashlib.blake2b(f"{prompt_a}\x1f{prompt_b}".encode(), digest_size=8).hexdigest()
    return f"p{digest}"


def load_pair_file(path: str | Path, *, max_similarity: float = 5.0) -> PairSet:
    """Pairs from a CSV / JSONL / Parquet file with ``prompt_a, prompt_b[, similarity, pair_id,
    guide]`` (``guide``: PAID's guide prompt of the pair, kept as text; empty cells give "").

    Without a ``similarity`` column every pair gets NaN and lands in no similarity group (use
    ``stratify=False`` when sampling). Without ``pair_id`` the id hashes the two prompts; exact
    duplicate pairs are dropped with a warning.
    """
    import pandas as pd

    path = Path(path)
    df = _read_table(path, ("prompt_a", "prompt_b"), "prompt pair")
    n_total = len(df)
    out = pd.DataFrame(
        {
            "prompt_a": df["prompt_a"].astype(str).str.strip(),
            "prompt_b": df["prompt_b"].astype(str).str.strip(),
        }
    )
    out["similarity"] = (
        pd.to_numeric(df["similarity"], errors="coerce") if "similarity" in df.columns else math.nan
    )
    if "guide" in df.columns:  # PAID's guide prompt per pair (study.methods with paid)
        out["guide"] = df["guide"].fillna("").astype(str).str.strip()
    if "pair_id" in df.columns:
        out["pair_id"] = df["pair_id"].astype(str)
    else:
        out["pair_id"] = [prompt_pair_id(a, b) for a, b in zip(out["prompt_a"], out["prompt_b"])]
    out["source"] = f"file:{path.name}"
    dup = out["pair_id"].duplicated()
    if dup.any():
        warnings.warn(
            f"{int(dup.sum())} duplicate pair(s) in {str(path)!r} dropped (same pair_id)",
            stacklevel=2,
        )
        out = out[~dup]
    out, n_invalid = _clean(out, max_similarity, need_similarity="similarity" in df.columns)
    return PairSet(out, n_total, 0, n_invalid)


def _clean(
    df: pd.DataFrame, max_similarity: float, need_similarity: bool = True
) -> tuple[pd.DataFrame, int]:
    """Drop empty prompts and invalid similarities; sort by pair id; fixed column order."""
    ok = (df["prompt_a"].str.len() > 0) & (df["prompt_b"].str.len() > 0)
    if need_similarity:
        sim = df["similarity"]
        ok &= sim.notna() & (sim >= 0) & (sim <= max_similarity)
    n_invalid = int((~ok).sum())
    if n_invalid:
        warnings.warn(
            f"{n_invalid} pair(s) dropped: empty prompt or similarity missing or outside "
            f"[0, {max_similarity}]",
            stacklevel=3,
        )
    extra = [c for c in df.columns if c not in PAIR_COLUMNS]
    df = df.loc[ok, list(PAIR_COLUMNS) + extra].sort_values("pair_id", kind="stable")
    return df.reset_index(drop=True), n_invalid


# --- grouping and sampling ---------------------------------------------------------------------
MAX_GROUPS = 10_000
"""Most similarity groups a study samples from (the paper's protocol has 10)."""


def group_labels(width: float = 0.5, max_similarity: float = 5.0) -> list[float]:
    """Upper edges of the similarity groups: width, 2*width, ..., max_similarity."""
    if width <= 0 or max_similarity <= 0:
        raise ValueError(
            f"group width and max similarity must be positive, got {width} and {max_similarity}"
        )
    ratio = max_similarity / width
    if not ratio <= MAX_GROUPS:  # also inf and nan: a width too small to count the groups
        raise ValueError(
            f"group width {width} makes {ratio:.3g} similarity groups up to {max_similarity}; "
            f"at most {MAX_GROUPS} are supported"
        )
    n = round(ratio)
    if abs(n * width - max_similarity) > 1e-9:
        raise ValueError(
            f"max similarity {max_similarity} is not a whole number of group widths {width}"
        )
    return [round((k + 1) * width, 10) for k in range(n)]


def similarity_group(
    similarity: pd.Series, width: float = 0.5, max_similarity: float = 5.0
) -> pd.Series:
    """Group label (upper edge) of each similarity: ``[0, w) -> w``, ..., ``[5 - w, 5] -> 5``.

    NaN similarities get NaN. The score is rounded to 1e-9 first so that decimal scores on an
    edge (2.5) are not moved across it by binary floating point.
    """
    import numpy as np
    import pandas as pd

    labels = group_labels(width, max_similarity)
    s = similarity.to_numpy(dtype=float)
    idx = np.floor(np.round(s / width, 9))
    idx = np.clip(idx, 0, len(labels) - 1)
    out = (idx + 1) * width
    return pd.Series(np.round(out, 10), index=similarity.index, name="group")


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from ``parts`` (study seed, unit id, ...), stable across runs and machines."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") >> 1


def pair_seed(study_seed: int, pair_id: str) -> int:
    """The seed of one pair: the same for every coupling of the pair and on every machine."""
    return derive_seed("pair", study_seed, pair_id)


def stratified_sample(
    pairs: pd.DataFrame,
    n_per_group: int,
    *,
    seed: int = 0,
    width: float = 0.5,
    max_similarity: float = 5.0,
    stratify: bool = True,
) -> pd.DataFrame:
    """Seeded sample of ``n_per_group`` pairs from each similarity group.

    Each group is shuffled by its own ``torch.Generator`` (seeded from ``seed`` and the group
    label) after sorting by ``pair_id``, and its first ``n_per_group`` pairs are kept. So the
    sample does not depend on file order, and a larger ``n_per_group`` gives a superset of a
    smaller one (a study can be extended and resumes its finished pairs). A group with fewer
    pairs gives all it has, with a warning; an empty group warns too.

    With ``stratify=False`` (pairs without similarity) one group ``nan`` is sampled.
    Returns the sampled rows with a ``group`` column, ordered by group then sample order.
    """
    import pandas as pd
    import torch

    if n_per_group < 1:
        raise ValueError(f"n_per_group must be >= 1, got {n_per_group}")
    missing = [c for c in ("pair_id", "similarity") if c not in pairs.columns]
    if missing:
        raise ValueError(
            f"pair table lacks column(s) {missing}; load it with load_cxc or load_pair_file"
        )
    df = pairs.sort_values("pair_id", kind="stable").reset_index(drop=True)
    if not stratify:
        g = torch.Generator().manual_seed(derive_seed("sample", seed, "all"))
        order = torch.randperm(len(df), generator=g)[:n_per_group].tolist()
        if len(df) < n_per_group:
            warnings.warn(
                f"only {len(df)} pairs available, fewer than the {n_per_group} asked for",
                stacklevel=2,
            )
        return df.iloc[order].assign(group=math.nan).reset_index(drop=True)
    if df["similarity"].isna().any():
        raise ValueError(
            f"{int(df['similarity'].isna().sum())} pair(s) have no similarity; stratified sampling "
            "needs a 'similarity' column (or sample with stratify=False)"
        )
    groups = similarity_group(df["similarity"], width, max_similarity)
    parts = []
    short = []
    for label in group_labels(width, max_similarity):
        members = df[groups == label]
        if len(members) == 0:
            warnings.warn(
                f"similarity group {label:g} is empty: no pairs with similarity in "
                f"[{label - width:g}, {label:g}{']' if label == max_similarity else ')'}",
                stacklevel=2,
            )
            continue
        if len(members) < n_per_group:
            short.append(f"{label:g} ({len(members)})")
        g = torch.Generator().manual_seed(derive_seed("sample", seed, f"{label:g}"))
        order = torch.randperm(len(members), generator=g)[:n_per_group].tolist()
        parts.append(members.iloc[order].assign(group=label))
    if short:
        warnings.warn(
            f"similarity group(s) with fewer than {n_per_group} pairs, all taken: {', '.join(short)}",
            stacklevel=2,
        )
    if not parts:
        raise ValueError("no pairs to sample: every similarity group is empty")
    return pd.concat(parts, ignore_index=True)
