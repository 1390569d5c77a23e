"""Run every ``benchmarks/bench_*.py`` script in a fresh process and print one markdown table.

Scripts are discovered by name (``bench_*.py`` next to this file), run one after another with
``--json PATH`` (plus ``--quick`` and ``--device`` when given), and their figures (see
``_result.py``) are collected into one table: what is compared, whichway's and the baseline's
absolute figures, the ratio (baseline / whichway: above 1 means whichway is faster), and whether
the figure is a first call in a fresh process or warm. A script that fails or reports nothing gets
a row saying so; the exit status is 1 then.

Usage::

    python benchmarks/run_all.py [--quick] [--device cuda] [--only clouds,metrics] [--json all.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def discover(only: list[str] | None = None) -> list[Path]:
    """The benchmark scripts, sorted by name; ``only`` keeps those named (``clouds`` or ``bench_clouds``)."""
    scripts = sorted(HERE.glob("bench_*.py"))
    if only:
        wanted = {name.removeprefix("bench_").removesuffix(".py") for name in only}
        unknown = wanted - {p.stem.removeprefix("bench_") for p in scripts}
        if unknown:
            known = ", ".join(p.stem.removeprefix("bench_") for p in scripts)
            raise SystemExit(
                f"run_all.py: error: no benchmark named {', '.join(sorted(unknown))} (known: {known})"
            )
        scripts = [p for p in scripts if p.stem.removeprefix("bench_") in wanted]
    return scripts


def run(script: Path, args: argparse.Namespace, out: Path) -> tuple[list[dict], float, int, str]:
    """Run one script in a fresh interpreter; returns (figures, seconds, exit status, output tail)."""
    cmd = [sys.executable, str(script), "--json", str(out)]
    if args.quick:
        cmd.append("--quick")
    if args.device:
        cmd += ["--device", args.device]
    env = dict(os.environ)
    src = str(HERE.parent / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    start = time.perf_counter()
    proc = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    log = proc.stdout + proc.stderr
    if not args.silent:
        sys.stderr.write(log)
    rows = json.loads(out.read_text()) if proc.returncode == 0 and out.exists() else []
    return rows, seconds, proc.returncode, log[-2000:]


def table(rows: list[dict]) -> str:
    """The markdown table of all figures."""
    lines = [
        "| benchmark | what is compared | whichway | baseline | ratio | timing | device | notes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = f"**{r['ratio']:.2f}×**" if r.get("ratio") is not None else "—"
        lines.append(
            f"| {r['bench']} | {r['compared']} | {r['ours']} | {r['baseline']} | {ratio} | {r['regime']} | "
            f"{r['device']} | {r.get('notes', '')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="pass --quick to every script")
    parser.add_argument(
        "--device", default=None, help="pass --device to every script (default: each script's own)"
    )
    parser.add_argument(
        "--only", default=None, help="comma-separated benchmark names (e.g. clouds,metrics)"
    )
    parser.add_argument(
        "--json", default=None, metavar="PATH", help="also write all figures as JSON to PATH"
    )
    parser.add_argument("--silent", action="store_true", help="do not echo the scripts' own output")
    args = parser.parse_args()

    scripts = discover(args.only.split(",") if args.only else None)
    rows: list[dict] = []
    failed = False
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with tempfile.TemporaryDirectory() as tmp:
        for script in scripts:
            name = script.stem.removeprefix("bench_")
            sys.stderr.write(f"\n==> {script.name}\n")
            got, seconds, code, tail = run(script, args, Path(tmp) / f"{name}.json")
            if code != 0 or not got:
                failed = True
                last = tail.strip().splitlines()[-1] if tail.strip() else ""
                rows.append(
                    {
                        "bench": name,
                        "compared": f"(failed: exit status {code}) {last}",
                        "ours": "—",
                        "baseline": "—",
                        "ratio": None,
                        "regime": "—",
                        "device": args.device or "—",
                    }
                )
                continue
            rows.extend(got)
            sys.stderr.write(f"<== {script.name}: {len(got)} figure(s) in {seconds:.0f} s\n")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"whichway benchmarks ({'--quick' if args.quick else 'full'}), {started}; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average at the end {load:.1f}; "
        f"ratio = baseline time / whichway time\n"
    )
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
