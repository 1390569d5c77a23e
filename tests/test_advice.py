"""Advice that works: every command whichway tells a user to run exists where whichway installs.

The commands are collected, not listed: backticked spans and ``pip install ...`` in the string
constants of the source (error messages, ``--help`` texts, docstrings that become the API
reference), and inline code and shell code blocks of README.md and ``docs/**/*.md``. Each command
of a known program is then checked without loading a model:

* ``whichway`` (or ``python -m whichway``): the sub-command (and a sub-sub-command) exists and
  every ``--option`` it names is one the parser knows;
* ``pip install``: ``pip install --help`` answers, and every ``whichway[extra]`` is an extra of the
  project (``pyproject.toml``);
* ``python -m module``: the module can be found; ``python path.py``: the script exists;
* any other program (``hf``, ``mkdocs``, ``pytest``, ``ruff`` ...): it is installed next to this
  Python and ``program [sub-command] --help`` exits 0. A program the same line installs first
  (``pip install pre-commit && pre-commit install``) is exempt from being installed already.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import whichway

ROOT = Path(__file__).resolve().parents[1]
SRC = Path(whichway.__file__).resolve().parent
BIN = Path(sys.executable).parent
PROGRAMS = (
    "whichway",
    "python",
    "pip",
    "pip3",
    "hf",
    "huggingface-cli",
    "mkdocs",
    "pytest",
    "ruff",
    "pre-commit",
    "diffusers-cli",
    "accelerate",
)
"""The programs whose commands are checked; a span starting with another word is not advice."""
SHELL_FENCES = ("", "bash", "sh", "shell", "console", "zsh")
_PLACEHOLDER = re.compile(r"[{}<>…]|\.\.\.|^[A-Z][A-Z_0-9]*$")


def _strings_of(path: Path) -> list[str]:
    """Every string constant of a Python file, f-strings with each ``{...}`` as ``{}``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.JoinedStr):
            out.append(
                "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
            )
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            out.append(node.value)
    return out


def _commands_in_text(text: str) -> list[str]:
    """Backticked spans (```` ``x`` ```` or `` `x` ``) and ``pip install ...`` up to the end of
    the clause."""
    spans = re.findall(r"``(.+?)``|`([^`\n]+)`", text)
    found = [a or b for a, b in spans]
    found += re.findall(r"example: (whichway [^\n`]+)", text)  # argparse epilogs
    found += re.findall(r"(pip install (?:'[^']*'|\"[^\"]*\"|[^\s\"';,)]+))", text)
    return found


def _commands_in_markdown(text: str) -> list[str]:
    """Inline code spans outside code blocks, and the lines of shell code blocks (comments and
    ``$`` prompts removed, ``\\`` continuations joined)."""
    found: list[str] = []
    fence = None
    lines: list[str] = []
    for line in text.splitlines():
        marker = re.match(r"\s*(```+|~~~+)\s*([\w-]*)", line)
        if marker and fence is None:
            fence, lang = marker.group(1), marker.group(2).lower()
            shell = lang in SHELL_FENCES
            continue
        if fence is not None:
            if line.strip().startswith(fence):
                fence = None
            elif shell:
                lines.append(line)
            continue
        found += _commands_in_text(line)
    joined = "\n".join(lines).replace("\\\n", " ")
    for line in joined.splitlines():
        line = line.strip()
        if line.startswith("$ "):
            line = line[2:]
        if line and not line.startswith("#"):
            found.append(line)
    return found


def collect_commands() -> dict[str, set[str]]:
    """Command -> where it was found (files relative to the repository)."""
    where: dict[str, set[str]] = {}
    sources = [(p, _strings_of(p)) for p in sorted(SRC.rglob("*.py"))]
    for path, strings in sources:
        for text in strings:
            for cmd in _commands_in_text(text):
                where.setdefault(cmd.strip(), set()).add(str(path.relative_to(SRC.parent)))
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    for path in docs:
        if path.is_file():
            for cmd in _commands_in_markdown(path.read_text(encoding="utf-8")):
                where.setdefault(cmd.strip(), set()).add(str(path.relative_to(ROOT)))
    return where


def _words(command: str) -> list[str]:
    try:
        return shlex.split(command, comments=True)
    except ValueError:  # an unbalanced quote in a message with a placeholder
        return command.split()


def _pieces(command: str) -> list[list[str]]:
    """The simple commands of a line (split at ``&&``, ``||``, ``;`` and ``|``)."""
    out, piece = [], []
    for word in _words(command):
        if word in ("&&", "||", ";", "|"):
            out.append(piece)
            piece = []
        else:
            piece.append(word)
    return [p for p in [*out, piece] if p]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings}


def check_whichway(args: list[str]) -> str | None:
    """Why ``whichway args`` would not parse as far as it can be checked (None: it would)."""
    from whichway.cli import build_parser

    parser = build_parser()
    if not args or args[0].startswith("-"):
        unknown = {a.split("=")[0] for a in args if a.startswith("--")} - _options(parser)
        return f"unknown option(s) {sorted(unknown)}" if unknown else None
    sub, rest = args[0], args[1:]
    if _PLACEHOLDER.search(sub):
        return None
    commands = _subparsers(parser)
    if sub not in commands:
        return f"no sub-command {sub!r} (there are: {', '.join(commands)})"
    parser = commands[sub]
    nested = _subparsers(parser)
    if nested and rest and not rest[0].startswith("-") and not _PLACEHOLDER.search(rest[0]):
        missing = [w for w in rest[0].split("|") if w not in nested]
        if missing:
            return f"'whichway {sub}' has no sub-command {missing} (it has: {', '.join(nested)})"
        if "|" not in rest[0]:
            more = _subparsers(nested[rest[0]])
            parser = nested[rest[0]]
            if more and len(rest) > 1 and rest[1] in more:
                parser = more[rest[1]]
    known = _options(parser)
    for word in rest:
        for option in word.split("/"):
            option = option.strip("[]").split("=")[0]
            if option.startswith("--") and not _PLACEHOLDER.search(option) and option not in known:
                return f"'whichway {sub}' has no option {option}"
    return None


def _extras() -> set[str]:
    """The extras ``pyproject.toml`` declares (what ``pip install -e ".[x]"`` reads)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        import tomli as tomllib

    with (ROOT / "pyproject.toml").open("rb") as fh:
        return set(tomllib.load(fh)["project"]["optional-dependencies"])


def _answers_help(program: str, sub: str | None) -> str | None:
    exe = BIN / program
    if not exe.is_file():
        return f"{program} is not installed next to {sys.executable}"
    argv = [str(exe), *([sub] if sub else []), "--help"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        return f"`{' '.join(argv[1:])}` exits {done.returncode}: {done.stderr.strip()[:200]}"
    return None


def check_command(command: str, help_cache: dict) -> str | None:
    """Why ``command`` would fail for a user of this installation (None: it would not)."""
    installed_now: set[str] = set()
    for words in _pieces(command):
        program, args = Path(words[0]).name, words[1:]
        if program not in PROGRAMS:
            continue
        if program == "python":
            form = args[1] if args[:1] == ["-m"] and len(args) > 1 else (args or [""])[0]
            if form and _PLACEHOLDER.search(Path(form).stem):
                continue  # python -m MODULE, python PATH.py: a form, not a command
            if args and args[0].endswith(".py"):
                if not (ROOT / args[0]).is_file():
                    return f"no script {args[0]} in the repository"
            elif len(args) >= 2 and args[0] == "-m":
                module, args = args[1], args[2:]
                if module == "whichway":
                    problem = check_whichway(args)
                elif importlib.util.find_spec(module) is None:
                    problem = f"no module {module!r} for `python -m {module}`"
                else:
                    problem = None
                if problem:
                    return problem
            continue
        if program == "whichway":
            problem = check_whichway(args)
            if problem:
                return problem
            continue
        sub = args[0] if args and re.fullmatch(r"[a-z][a-z-]*", args[0]) else None
        if program in ("pip", "pip3") and sub == "install":
            extras = _extras()
            for word in args[1:]:
                for extra in re.findall(r"whichway\[([^\]]*)\]|^\.\[([^\]]*)\]", word):
                    for name in ",".join(extra).split(","):
                        if name and name not in extras:
                            return f"whichway has no extra {name!r} (it has: {sorted(extras)})"
                if not word.startswith("-") and "[" not in word and word != ".":
                    installed_now.add(word.split("=")[0].split(">")[0].split("<")[0])
        if program in installed_now:
            continue
        key = (program, sub)
        if key not in help_cache:
            help_cache[key] = _answers_help(program, sub)
        if help_cache[key]:
            return help_cache[key]
    return None


def test_collector_finds_commands_in_messages_help_and_docs():
    commands = collect_commands()
    programs = {_words(c)[0] for c in commands if _words(c)}
    # the could-not-load message, the extras' install hints and the README's own commands
    assert any(c.startswith("hf download") for c in commands)
    assert any(c.startswith("pip install 'whichway[") for c in commands)
    assert {"whichway", "pip", "python", "mkdocs"} <= programs
    assert any(f.startswith("whichway/cli/") for files in commands.values() for f in files)


def test_a_command_that_is_not_installed_is_caught():
    cache: dict = {}
    assert "not installed" in check_command("huggingface-cli download some/model", cache)
    assert "exits" in check_command("hf no-such-command", cache)
    assert "no sub-command 'morf'" in check_command("whichway morf a b", cache)
    assert "no option --no-such" in check_command("whichway morph a b --no-such 1", cache)
    assert "no extra 'nope'" in check_command("pip install 'whichway[nope]'", cache)
    assert "no module" in check_command("python -m no_such_module_here", cache)
    assert "no script" in check_command("python benchmarks/no_such_bench.py --quick", cache)
    assert check_command("pip install pre-commit && pre-commit install", cache) is None
    assert check_command('whichway travel "a" "b" --seeds 1,2 --pacing audio', cache) is None


def test_every_suggested_command_exists():
    cache: dict = {}
    problems = []
    for command, files in sorted(collect_commands().items()):
        problem = check_command(command, cache)
        if problem:
            problems.append(f"{command!r} ({', '.join(sorted(files))}): {problem}")
    if problems:
        pytest.fail("commands that would fail for a user:\n" + "\n".join(problems))
