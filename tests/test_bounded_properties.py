"""Property tests (hypothesis): whatever numbers, schedule files or study configs a user gives,
the command line answers with one line and exit status 2, or goes on to load the model; never a
traceback, never a partial output.

Loading is replaced by a sentinel that stops the command where the model would load (every
check that needs no model has passed by then); a refusal must have written nothing.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
import types
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from whichway.cli import main

PROPERTY = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,  # the same examples on every CI run
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class WouldLoad(BaseException):
    """Raised where the command would load a model or run a study: every check passed."""


@pytest.fixture
def guarded(monkeypatch):
    """Model loading and the study runners raise :class:`WouldLoad`."""
    import whichway.models

    def would_load(*args, **kwargs):
        raise WouldLoad

    monkeypatch.setattr(whichway.models, "load_adapter", would_load)
    for name, func in (("prompt_study", "run_prompt_study"), ("latent_study", "run_latent_study")):
        fake = types.ModuleType(f"whichway.studies.{name}")
        setattr(fake, func, would_load)
        monkeypatch.setitem(sys.modules, f"whichway.studies.{name}", fake)


def answer(argv: list[str]) -> tuple[str, str]:
    """("refused", the stderr line) | ("usage", argparse's message) | ("loads", "")."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main(argv)
        except WouldLoad:
            return "loads", ""
        except SystemExit as exc:  # argparse: a value of the wrong type
            assert exc.code == 2, (argv, err.getvalue())
            return "usage", err.getvalue()
    assert rc == 2, (argv, rc, err.getvalue())
    lines = err.getvalue().strip().splitlines()
    assert len(lines) == 1 and ": error: " in lines[0], (argv, lines)
    return "refused", lines[0]


def written(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


# numbers a user might type: ordinary ones, edge cases, absurd ones, and things that are not numbers
NUMBERS = st.one_of(
    st.integers(-3, 64),
    st.integers(10**9, 10**30),
    st.sampled_from(["0", "-1", "1e9", "nan", "inf", "-inf", "1.5", "", "x", "9" * 40]),
    st.floats(allow_nan=True, allow_infinity=True),
).map(str)

OPTIONS = {
    "morph": ["--frames", "--steps", "--height", "--width", "--fps", "--batch-size", "--seed"],
    "travel": [
        "--seconds",
        "--frames-per-segment",
        "--steps",
        "--height",
        "--width",
        "--fps",
        "--batch-size",
        "--coarse",
    ],
    "grid": ["--size", "--steps", "--height", "--width", "--batch-size"],
}
PREFIX = {"morph": ["morph", "a cat", "a dog"], "travel": ["travel", "a cat", "a dog"]}
PREFIX["grid"] = ["grid", "seeds", "a cat", "--seeds", "0,1,2"]


@PROPERTY
@given(
    command=st.sampled_from(sorted(OPTIONS)),
    data=st.data(),
)
def test_numeric_arguments_never_give_a_traceback(tiny_pipeline, guarded, command, data):
    chosen = data.draw(
        st.lists(st.sampled_from(OPTIONS[command]), min_size=1, max_size=4, unique=True)
    )
    values = [data.draw(NUMBERS, label=name) for name in chosen]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / ("grid.png" if command == "grid" else "run")
        argv = [*PREFIX[command], "--model", str(tiny_pipeline("sd")), "--out", str(out)]
        for name, value in zip(chosen, values):
            argv += [f"{name}={value}"]
        answer(argv)
        assert written(Path(tmp)) == []  # nothing written before the model loads


# schedule files: known and unknown keys, values of any JSON type, sizes from tiny to absurd
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.lists(st.integers(0, 5), max_size=3),
)
SCHEDULE_KEYS = ["fps", "seconds", "frames_per_segment", "steps", "height", "width", "seed"]
SCHEDULE_KEYS += ["pacing", "coupling", "latent", "batch_size", "format", "coarse", "bogus"]
KEYFRAME = st.dictionaries(
    st.sampled_from(["prompt", "seed", "at", "frame", "coupling", "latent", "image", "typo"]),
    VALUES,
    max_size=4,
).map(lambda kf: {"prompt": "a cat", **kf} if "prompt" not in kf else kf)
SCHEDULE = st.fixed_dictionaries(
    {"keyframe": st.lists(KEYFRAME, min_size=0, max_size=4)},
    optional=dict.fromkeys(SCHEDULE_KEYS, VALUES),
)


@PROPERTY
@given(schedule=SCHEDULE, raw=st.one_of(st.none(), st.binary(max_size=64)))
def test_schedule_files_never_give_a_traceback(tiny_pipeline, guarded, schedule, raw):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "schedule.json"
        if raw is None:
            path.write_text(json.dumps(schedule))
        else:
            path.write_bytes(raw)  # bytes that are rarely JSON at all
        out = Path(tmp) / "run"
        answer(["travel", str(path), "--model", str(tiny_pipeline("sd")), "--out", str(out)])
        assert not out.exists() or written(out) == []


STUDY_KEYS = {
    "pairs.n_per_group": st.integers(-2, 10**12),
    "pairs.group_width": st.floats(-1, 6),
    "render.steps": st.integers(-2, 10**7),
    "render.height": st.integers(-64, 10**6),
    "render.width": st.integers(-64, 10**6),
    "render.batch_size": st.integers(-2, 10**6),
    "study.save_frames": st.booleans(),
    "study.couplings": st.lists(st.sampled_from(["ot", "clip", "random", "nope"]), max_size=3),
    "render.t": st.lists(st.floats(-1, 2), max_size=4),
}


@PROPERTY
@given(
    overrides=st.dictionaries(st.sampled_from(sorted(STUDY_KEYS)), st.just(None), max_size=5),
    data=st.data(),
)
def test_study_configs_never_give_a_traceback(tiny_pipeline, guarded, overrides, data):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "pairs.csv").write_text("prompt_a,prompt_b,similarity\na cat,a dog,3\n")
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["study", "prompts", "init", str(folder / "p.toml")]) == 0
        sets = [f'model.id="{tiny_pipeline("sd")}"', 'pairs.source="file"']
        sets += [f'pairs.file="{folder / "pairs.csv"}"']
        for key in overrides:
            value = data.draw(STUDY_KEYS[key], label=key)
            sets.append(f"{key}={json.dumps(value)}")
        argv = ["study", "prompts", "run", str(folder / "p.toml"), "--out", str(folder / "run")]
        answer(argv + [x for s in sets for x in ("--set", s)])
        assert not (folder / "run").exists() or written(folder / "run") == []


# prompts as artists type them, with the syntax's characters in any order (issue 24's layer)
PROMPT_TEXT = st.text(alphabet="ab ()[]:\\,.1-2 BREAK--neg", max_size=40)


@PROPERTY
@given(a=PROMPT_TEXT, b=PROMPT_TEXT, neg=PROMPT_TEXT)
def test_prompt_syntax_never_gives_a_traceback(tiny_pipeline, guarded, a, b, neg):
    """Any prompt, negative prompt or schedule keyframe prompt is parsed before the model loads:
    malformed syntax is one line naming the prompt and the position, never a traceback, nothing
    written; well-formed syntax reaches the model load."""
    from whichway.prompts.syntax import (
        PromptSyntaxError,
        check_no_negative_markers,
        parse_prompt,
        split_negative,
    )

    def well_formed(prompt: str, schedule: bool = False) -> bool:
        try:
            if schedule:
                positive, negative = split_negative(prompt)
                parse_prompt(positive)
                if negative is not None:
                    parse_prompt(negative)
            else:
                parse_prompt(prompt)
                check_no_negative_markers(("prompt", prompt))  # --neg: keyframes only
        except PromptSyntaxError:
            return False
        return True

    model = ["--model", str(tiny_pipeline("sd"))]
    with tempfile.TemporaryDirectory() as tmp:
        how, line = answer(["morph", a, b, "--negative-prompt", neg, *model, "--out", f"{tmp}/m"])
        formed = well_formed(a) and well_formed(b) and well_formed(neg.replace("--neg", ""))
        if how == "refused" and formed:
            assert "must not be empty" in line or "PROMPT" in line, line  # not a syntax error
        if how == "loads":
            assert formed
        schedule = Path(tmp) / "journey.json"
        schedule.write_text(json.dumps({"0": a or "x", "12": b or "y"}))
        how, line = answer(["travel", str(schedule), *model, "--out", f"{tmp}/t"])
        if how == "loads":
            assert well_formed(a or "x", True) and well_formed(b or "y", True)
        if how == "refused" and not (well_formed(a or "x", True) and well_formed(b or "y", True)):
            assert "position" in line, line  # the syntax error says where
        assert written(Path(tmp)) == [schedule]
