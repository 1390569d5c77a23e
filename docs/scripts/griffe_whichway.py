"""Griffe extension for whichway's API reference (loaded by mkdocstrings, see mkdocs.yml).

Two jobs, both at load time so that the site is built by static analysis (no torch import):

1. **Lazy packages.** ``whichway``, ``whichway.metrics``, ``whichway.models`` and
   ``whichway.studies`` export their public names through a PEP 562 ``__getattr__`` driven by a
   ``_EXPORTS = {"name": "defining.module"}`` table, which static analysis cannot follow. The
   table is read from the module's source and each name becomes an alias to the object in its
   defining module, so ``::: whichway.metrics`` documents exactly the names ``__all__`` lists.
2. **Constants.** A module constant documented by a ``#:`` comment above it (Sphinx's
   convention, used throughout whichway) gets that comment as its docstring.
3. **reStructuredText in docstrings.** The docstrings are NumPy style with Sphinx roles and
   ``.. math::`` blocks; these are rewritten to what Markdown + arithmatex render:
   ``.. math::`` blocks to ``$$ … $$``, ``:math:`x``` to ``$x$`` and ``:func:`name``` (and the
   other Python roles) to a code span.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import griffe

_ROLE = re.compile(r":(?:func|class|mod|meth|attr|data|exc|obj):`~?([^`]+)`")
_MATH_ROLE = re.compile(r":math:`([^`]+)`")
_LITERAL = re.compile(r"(\$[^$]+\$|``[^`]+``|`[^`]+`)")
_STAR = re.compile(r"(?<![*\\])\*(?=[A-Za-z_]\w*[),\]])")  # (K, *shape), not *emphasis*
_MATH_BLOCK = re.compile(r"^(?P<indent>[ \t]*)\.\. math::[ \t]*(?P<inline>.*)$")


def rst_to_markdown(text: str) -> str:
    """Rewrite the reStructuredText constructs whichway's docstrings use into Markdown."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _MATH_BLOCK.match(lines[i])
        if not match:
            out.append(lines[i])
            i += 1
            continue
        indent = len(match.group("indent"))
        i += 1
        body: list[str] = [match.group("inline").strip()]
        while i < len(lines) and (
            not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent
        ):
            body.append(lines[i].strip())
            i += 1
        while body and not body[-1]:
            body.pop()
        while body and not body[0]:
            body.pop(0)
        pad = " " * indent
        out += [f"{pad}$$", *(f"{pad}{b}" for b in body if b), f"{pad}$$", ""]
    text = "\n".join(out)
    text = _MATH_ROLE.sub(lambda m: f"${m.group(1)}$", text)
    text = _ROLE.sub(lambda m: f"`{m.group(1)}`", text)
    return _escape_stars(text)


def _escape_stars(text: str) -> str:
    """Escape the star of a shape's ``*name`` as in (K, *shape), which would open Markdown
    emphasis (a real ``*emphasis*`` is left alone); not
    inside math or code, nor on a NumPy section's ``name : type`` lines (griffe reads the type
    there and shows it as code)."""
    lines = text.split("\n")
    in_math, in_section = False, False
    for i, line in enumerate(lines):
        if line.strip() == "$$":
            in_math = not in_math
            continue
        is_header = i + 1 < len(lines) and re.fullmatch(r"\s*-{3,}\s*", lines[i + 1]) is not None
        if is_header:
            in_section = True
        if in_math or is_header or (in_section and line[:1].strip()):
            continue  # a section's item line starts at column 0 (docstrings are dedented)
        parts = _LITERAL.split(line)
        for j in range(0, len(parts), 2):
            parts[j] = _STAR.sub(r"\\*", parts[j])
        lines[i] = "".join(parts)
    return "\n".join(lines)


def _lazy_exports(module: griffe.Module) -> dict[str, str]:
    """The ``_EXPORTS`` table of a lazy package, read from its source (empty when it has none)."""
    if not isinstance(module.filepath, Path):  # a namespace package has a list of folders
        return {}
    tree = ast.parse(module.filepath.read_text(encoding="utf-8"))
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        if isinstance(target, ast.Name) and target.id == "_EXPORTS" and node.value is not None:
            return ast.literal_eval(node.value)
    return {}


class WhichwayDocs(griffe.Extension):
    """Aliases for lazily exported names, ``#:`` comments as docstrings, RST to Markdown."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is None and obj.is_attribute:
            text = _comment_docstring(obj)
            if text:
                obj.docstring = griffe.Docstring(text, parent=obj)
        if obj.docstring is not None:
            obj.docstring.value = rst_to_markdown(obj.docstring.value)

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        for module in [pkg, *_submodules(pkg)]:
            exports = _lazy_exports(module)
            for name, source in exports.items():
                if name not in module.members:
                    module.set_member(name, griffe.Alias(name, f"{source}.{name}", parent=module))
                try:
                    module.members[name].final_target  # noqa: B018 -- resolves the alias
                except (griffe.AliasResolutionError, griffe.CyclicAliasError):
                    # a warning, so that `mkdocs build --strict` fails on a stale export table
                    griffe.logger.warning(
                        f"{module.path}._EXPORTS names {name!r} in {source}, which has no such name"
                    )
            if exports:
                module.exports = sorted(exports) + [
                    n for n in ("__version__",) if n in module.members
                ]


def _comment_docstring(obj: griffe.Object) -> str:
    """The ``#:`` comment lines right above a module attribute (Sphinx's convention), joined."""
    lines = obj.lines_collection[obj.filepath] if isinstance(obj.filepath, Path) else None
    if not lines or not obj.lineno:
        return ""
    found: list[str] = []
    i = obj.lineno - 2  # lineno is 1-based: the line above the assignment
    while i >= 0 and lines[i].lstrip().startswith("#:"):
        found.insert(0, lines[i].lstrip()[2:].strip())
        i -= 1
    return " ".join(found)


def _submodules(module: griffe.Module) -> list[griffe.Module]:
    found = []
    for member in module.modules.values():
        if not member.is_alias:
            found += [member, *_submodules(member)]
    return found
