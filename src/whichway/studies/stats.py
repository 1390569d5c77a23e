"""Paired significance tests of the prompt study (paper A's significance table).

For each similarity group, the same pairs are rendered under every coupling, so couplings are
compared pair by pair: a one-sided Wilcoxon signed-rank test of H1 "OT's metric is lower than the
other coupling's" on the paired differences d_i = m_OT(i) - m_other(i)
(:func:`scipy.stats.wilcoxon`, ``alternative="less"``; zero differences dropped, the "wilcox"
convention). Stars: * p < 0.05, ** p < 0.01, *** p < 0.001.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

STAR_LEVELS: tuple[tuple[float, str], ...] = ((0.001, "***"), (0.01, "**"), (0.05, "*"))
ALTERNATIVES: tuple[str, ...] = ("less", "greater", "two-sided")


def stars(p: float) -> str:
    """ "***" for p < 0.001, "**" for p < 0.01, "*" for p < 0.05, "" otherwise (and for NaN)."""
    if p is None or math.isnan(p):
        return ""
    for level, mark in STAR_LEVELS:
        if p < level:
            return mark
    return ""


@dataclass(frozen=True)
class PairedTest:
    """Result of a paired one-sided Wilcoxon signed-rank test of x against y.

    n : pairs used (finite in both); n_nonzero : pairs with a nonzero difference
    statistic, pvalue : scipy's (NaN when fewer than 1 nonzero difference)
    median_diff : median of x - y; mean_x, mean_y; win_rate : share of pairs with x < y
    """

    n: int
    n_nonzero: int
    statistic: float
    pvalue: float
    median_diff: float
    mean_x: float
    mean_y: float
    win_rate: float
    alternative: str

    @property
    def stars(self) -> str:
        return stars(self.pvalue)


def paired_wilcoxon(
    x: Sequence[float], y: Sequence[float], *, alternative: str = "less"
) -> PairedTest:
    """One-sided (default H1: x < y) Wilcoxon signed-rank test of paired samples x, y (n,).

    Pairs where either value is NaN are dropped. Zero differences are dropped before ranking
    (``zero_method="wilcox"``). With no nonzero difference the p-value is NaN (no evidence).
    """
    import numpy as np
    from scipy.stats import wilcoxon

    if alternative not in ALTERNATIVES:
        raise ValueError(
            f"unknown alternative {alternative!r}; valid choices are: {', '.join(ALTERNATIVES)}"
        )
    xa = np.asarray(x, dtype=np.float64)
    ya = np.asarray(y, dtype=np.float64)
    if xa.shape != ya.shape or xa.ndim != 1:
        raise ValueError(
            f"x and y must be 1-D and paired (same length), got shapes {xa.shape} and {ya.shape}"
        )
    ok = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[ok], ya[ok]
    d = xa - ya
    nz = int(np.count_nonzero(d))
    if nz == 0:
        stat, p = math.nan, math.nan
    else:
        res = wilcoxon(xa, ya, alternative=alternative, zero_method="wilcox")
        stat, p = float(res.statistic), float(res.pvalue)
    n = len(d)
    return PairedTest(
        n=n,
        n_nonzero=nz,
        statistic=stat,
        pvalue=p,
        median_diff=float(np.median(d)) if n else math.nan,
        mean_x=float(xa.mean()) if n else math.nan,
        mean_y=float(ya.mean()) if n else math.nan,
        win_rate=float((d < 0).mean()) if n else math.nan,
        alternative=alternative,
    )


def significance_table(
    results: pd.DataFrame,
    metric: str = "ppl",
    *,
    reference: str = "ot",
    others: Sequence[str] = ("clip", "random"),
    group_col: str = "group",
    alternative: str = "less",
) -> pd.DataFrame:
    """Paired tests of ``reference`` against each of ``others`` per group and overall.

    results : long table with columns ``pair_id, coupling, <group_col>, <metric>`` (one row per
        pair and coupling). Pairs are matched on ``pair_id``.
    Returns one row per (group, other): group ("all" for the pooled test), comparison,
    n, medians/means, median difference, win rate, statistic, p-value, stars.
    """
    import pandas as pd

    need = ["pair_id", "coupling", group_col, metric]
    missing = [c for c in need if c not in results.columns]
    if missing:
        raise ValueError(f"results lack column(s) {missing}; they have {list(results.columns)}")
    wide = results.pivot_table(
        index=["pair_id", group_col], columns="coupling", values=metric, aggfunc="first"
    )
    if reference not in wide.columns:
        raise ValueError(
            f"no rows for the reference coupling {reference!r}; found {list(wide.columns)}"
        )
    rows = []
    groups = sorted(wide.index.get_level_values(group_col).unique().tolist()) + ["all"]
    for g in groups:
        sub = wide if g == "all" else wide.xs(g, level=group_col, drop_level=False)
        for other in others:
            if other not in wide.columns:
                warnings.warn(
                    f"no rows for coupling {other!r}; it is left out of the significance table",
                    stacklevel=2,
                )
                continue
            t = paired_wilcoxon(
                sub[reference].to_numpy(), sub[other].to_numpy(), alternative=alternative
            )
            rows.append(
                {
                    group_col: g,
                    "comparison": f"{reference} < {other}"
                    if alternative == "less"
                    else f"{reference} vs {other}",
                    "metric": metric,
                    "n": t.n,
                    f"mean_{reference}": t.mean_x,
                    "mean_other": t.mean_y,
                    "median_diff": t.median_diff,
                    "win_rate": t.win_rate,
                    "statistic": t.statistic,
                    "pvalue": t.pvalue,
                    "stars": t.stars,
                }
            )
    return pd.DataFrame(rows)
