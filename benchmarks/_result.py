"""The contract every ``benchmarks/bench_*.py`` script follows, so ``run_all.py`` can tabulate them.

Each script

* accepts ``--quick`` (a short run), ``--device DEVICE`` and ``--json PATH``;
* measures whichway against a baseline **in the same run**, on the same data;
* ends by calling :func:`report` with one :class:`Result` per figure: it prints one line
  ``RESULT {json}`` per figure and, with ``--json PATH``, writes the list to PATH.

A figure says what is compared, the ratio (baseline time / whichway time: above 1 means whichway
is faster), both absolute figures, and whether the times are a *first call in a fresh process*
or *warm* (repeated calls in one process, after a warm-up).
"""

from __future__ import annotations

import argparse
import json
import platform
from dataclasses import asdict, dataclass, field

FIRST_CALL = "first call, fresh process"
WARM = "warm"


@dataclass(frozen=True)
class Result:
    """One benchmark figure.

    Attributes
    ----------
    bench : str
        Script name without ``bench_`` (``"clouds"``).
    compared : str
        What whichway does vs what the baseline does, in a few words.
    ours, baseline : str
        Absolute figures with units (``"2.1 s"``, ``"1.6 frames/s"``).
    ratio : float
        Baseline time / whichway time (> 1: whichway is faster).
    regime : str
        :data:`FIRST_CALL` or :data:`WARM`.
    device : str
        Where it ran (``"cpu"``, ``"cuda"``).
    notes : str
        Anything a reader needs (agreement of results, sizes).
    """

    bench: str
    compared: str
    ours: str
    baseline: str
    ratio: float
    regime: str
    device: str
    notes: str = ""
    extra: dict = field(default_factory=dict)


def add_arguments(parser: argparse.ArgumentParser, *, device_default: str = "cpu") -> None:
    """Add ``--json`` (and ``--device`` unless the script defines it) to a script's parser."""
    parser.add_argument(
        "--json", default=None, metavar="PATH", help="also write the results as JSON to PATH"
    )
    if not any("--device" in a.option_strings for a in parser._actions):
        parser.add_argument(
            "--device", default=device_default, help="where to run (default: %(default)s)"
        )


def machine() -> str:
    """A one-line description of the CPU machine."""
    import os

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}"


def report(results: list[Result], path: str | None) -> None:
    """Print one ``RESULT {json}`` line per figure and write them all to ``path`` if given."""
    rows = [asdict(r) for r in results]
    for row in rows:
        print("RESULT " + json.dumps(row))
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)


def seconds(value: float) -> str:
    """A duration with a sensible unit."""
    if value >= 1:
        return f"{value:.2f} s"
    if value >= 1e-3:
        return f"{value * 1e3:.1f} ms"
    return f"{value * 1e6:.1f} us"
