"""Make the documentation's figures in docs/assets/ (offline, CPU, tiny random models).

    python docs/scripts/make_figures.py            # all figures
    python docs/scripts/make_figures.py --only strip,matching,study,studio

Every figure comes from whichway's own commands on a tiny random pipeline of the real diffusers
classes, so the pictures are noise; they show what a strip, a study figure, the token-matching
plot and the studio's tabs look like, not what a real model draws.

* ``tiny-strip.png``: ``strip.png`` of ``whichway morph`` on ``whichway tiny-model sd``;
* ``token-matching.png``: ``whichway.matching.matching_figure`` for two prompts;
* ``study-ppl.png``: ``ppl_by_group.png`` of ``whichway study prompts run`` (its report) on 16
  prompt pairs in four similarity groups;
* ``studio-{morph,travel,compare,coupling,runs}.png``: the screenshots the browser tests in
  ``tests/test_studio.py`` save (needs ``chromium`` and ``chromedriver``).

Each PNG is reduced to a 256-colour palette (and screenshots to 1,000 px wide) to stay small.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "docs" / "assets"
STUDIO_TABS = ("morph", "travel", "compare", "coupling", "runs")


def whichway(*args: str) -> None:
    """Run one whichway command in a fresh process, as a user would."""
    subprocess.run([sys.executable, "-m", "whichway", *args], check=True, env=_env())


def _env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    return env


def save_small(src: Path, name: str, *, width: int | None = None) -> Path:
    """Copy ``src`` to docs/assets/``name`` as a 256-colour PNG, at most ``width`` pixels wide."""
    from PIL import Image

    img = Image.open(src).convert("RGB")
    if width is not None and img.width > width:
        img = img.resize((width, round(img.height * width / img.width)), Image.Resampling.LANCZOS)
    out = ASSETS / name
    img.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    print(f"{out.relative_to(ROOT)}: {img.width}x{img.height}, {out.stat().st_size / 1024:.0f} KiB")
    return out


def tiny_model(tmp: Path) -> Path:
    model = tmp / "tiny-sd"
    if not model.exists():
        whichway("tiny-model", "sd", str(model))
    return model


def strip(tmp: Path) -> None:
    model = tiny_model(tmp)
    out = tmp / "morph"
    prompts = ("a photo of a cat", "a photo of a dog")
    whichway(
        *("morph", *prompts, "--model", str(model), "--steps", "4", "--frames", "5"),
        *(
            "--out",
            str(out),
            "--format",
            "none",
            "--no-score",
            "--device",
            "cpu",
            "--height",
            "128",
            "--width",
            "128",
        ),
    )
    save_small(out / "strip.png", "tiny-strip.png")


def matching(tmp: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from whichway.matching import matching_figure, token_matching
    from whichway.models import load_adapter

    adapter = load_adapter(str(tiny_model(tmp)), device="cpu", dtype="float32")
    fig = matching_figure(token_matching(adapter, "a cat", "a cat sitting on a red sofa"))
    fig.savefig(tmp / "matching.png", dpi=90, bbox_inches="tight")
    save_small(tmp / "matching.png", "token-matching.png", width=1000)


#: prompt pairs for the study figure: four similarity groups, four pairs each
STUDY_PAIRS = {
    1.0: [
        ("a cat", "a bridge at night"),
        ("a red car", "a bowl of soup"),
        ("a mountain lake", "a typewriter"),
        ("a violin", "a desert road"),
    ],
    2.5: [
        ("a cat on a sofa", "a dog in a garden"),
        ("a red car", "a blue bicycle"),
        ("a mountain lake", "a river in a forest"),
        ("a violin", "a piano in a hall"),
    ],
    4.0: [
        ("a cat on a sofa", "a kitten on a couch"),
        ("a red car", "a red truck"),
        ("a mountain lake", "a lake below mountains"),
        ("a violin", "a cello"),
    ],
    5.0: [
        ("a cat on a sofa", "a cat sitting on a sofa"),
        ("a red car", "a red automobile"),
        ("a mountain lake", "a lake in the mountains"),
        ("a violin", "a violin on a table"),
    ],
}


def study(tmp: Path) -> None:
    import csv

    pairs, config, run = tmp / "pairs.csv", tmp / "study.toml", tmp / "study-run"
    with pairs.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["prompt_a", "prompt_b", "similarity"])
        for similarity, group in STUDY_PAIRS.items():
            writer.writerows((a, b, similarity) for a, b in group)
    whichway("study", "prompts", "init", str(config))
    sets = [
        f'model.id="{tiny_model(tmp)}"',
        'model.device="cpu"',
        'pairs.source="file"',
        f'pairs.file="{pairs}"',
        "pairs.n_per_group=4",
        "render.steps=2",
        "render.height=32",
        "render.width=32",
        "render.t=[0.0, 0.25, 0.5, 0.75, 1.0]",
        "metrics.pretrained=false",
    ]
    whichway(
        *("study", "prompts", "run", str(config), "--out", str(run)),
        *(arg for s in sets for arg in ("--set", s)),
    )
    save_small(run / "report" / "ppl_by_group.png", "study-ppl.png", width=1000)


def studio(tmp: Path) -> None:
    base = tmp / "pytest"
    select = "browser or compare_shows or coupling_tab or runs_tab or travel_tab"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(ROOT / "tests" / "test_studio.py"),
        ]
        + ["-k", select, f"--basetemp={base}"],
        check=True,
        env=_env(),
        cwd=ROOT,
    )
    for tab in STUDIO_TABS:
        save_small(base / "studio-screens" / f"{tab}.png", f"studio-{tab}.png", width=1000)


MAKERS = {"strip": strip, "matching": matching, "study": study, "studio": studio}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only", default=",".join(MAKERS), help=f"comma-separated: {', '.join(MAKERS)}"
    )
    args = parser.parse_args()
    chosen = [f.strip() for f in args.only.split(",") if f.strip()]
    unknown = sorted(set(chosen) - set(MAKERS))
    if unknown:
        parser.error(f"unknown figure(s) {unknown}; choose from {', '.join(MAKERS)}")
    ASSETS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="whichway-figures-") as tmp:
        for name in chosen:
            MAKERS[name](Path(tmp))


if __name__ == "__main__":
    main()
