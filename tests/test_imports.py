"""The import structure: no module of whichway imports itself back through another (static, every
import counted: top level, inside functions, under ``TYPE_CHECKING`` and ``importlib``), and
``whichway --help`` and every sub-command's ``--help`` load no heavy library (a fresh interpreter,
as a user's shell starts one)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import whichway

HEAVY = ("torch", "numpy", "PIL", "diffusers", "transformers", "gradio", "ray", "lpips")


def _modules(root: Path) -> dict[str, Path]:
    """Dotted name -> file of every module of the package at ``root``."""
    out = {}
    for f in sorted(root.rglob("*.py")):
        parts = list(f.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = f
    return out


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports, from the source. ``from a import b``
    counts as importing ``a.b`` when that is a module, else ``a``; relative imports are resolved;
    ``importlib.import_module("a.b")`` with a literal name counts too."""
    mods = _modules(root)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                graph[name].update(a.name for a in node.names if a.name in mods)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package[: len(package) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    if full in mods:
                        graph[name].add(full)
                    elif base in mods:
                        graph[name].add(base)
            elif (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and node.args[0].value in mods
            ):
                graph[name].add(node.args[0].value)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_two_file_cycle_and_a_relative_one(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from pkg.b import g\n")
    (pkg / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\n"
    )
    (pkg / "sub" / "__init__.py").write_text("from . import c\n")
    (pkg / "sub" / "c.py").write_text("import importlib\nimportlib.import_module('pkg.sub.d')\n")
    (pkg / "sub" / "d.py").write_text("from .c import x\n")
    (pkg / "e.py").write_text("from pkg import a\n")  # one way: no cycle
    assert cycles(import_graph(pkg)) == [["pkg.a", "pkg.b"], ["pkg.sub.c", "pkg.sub.d"]]


def test_whichway_has_no_import_cycle():
    root = Path(whichway.__file__).parent
    graph = import_graph(root)
    assert len(graph) > 50 and "whichway.models.base" in graph["whichway.models.sd"]
    assert cycles(graph) == []


def test_help_of_every_command_imports_no_heavy_library():
    code = (
        "import contextlib, io, json, sys\n"
        "from whichway.cli import build_parser, main\n"
        "names = [a.dest for a in build_parser()._subparsers._group_actions[0]._choices_actions]\n"
        "for argv in [['--help']] + [[n, '--help'] for n in names]:\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n"
        "            main(argv)\n"
        "        except SystemExit:\n"
        "            pass\n"
        f"print(json.dumps([names, [m for m in {HEAVY!r} if m in sys.modules]]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    names, heavy = json.loads(done.stdout.splitlines()[-1])
    assert {"morph", "travel", "studio", "doctor"} <= set(names)
    assert heavy == []
