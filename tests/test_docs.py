"""The documentation site: it builds with ``mkdocs build --strict`` (as CI does), and its API
reference shows every public name of the public modules with its docstring.

The site is built once per session into a temp dir (a few seconds, offline). Each public name's
object is imported for real and its docstring compared with the rendered page, so a function that
mkdocstrings cannot see (the lazy packages' names), an empty docstring, or reStructuredText left
unconverted fails here, not in a reader's browser.
"""

from __future__ import annotations

import html
import importlib
import importlib.util
import inspect
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: module -> its page in the API reference (docs/api/<page>.md)
API_PAGES = {
    "whichway.clouds": "clouds",
    "whichway.gaussian": "gaussian",
    "whichway.metrics": "metrics",
    "whichway.models": "models",
    "whichway.travel": "travel",
    "whichway.studies": "studies",
    "whichway.render": "render",
    "whichway.attention": "attention",
    "whichway.morph": "morph",
    "whichway.grid": "grid",
    "whichway.media": "media",
    "whichway.matching": "matching",
    "whichway.compare": "compare",
    "whichway.audio": "audio",
    "whichway.prompts": "prompts",
    "whichway.budget": "budget",
    "whichway.comfyui.conditioning": "comfyui-conditioning",
    "whichway.comfyui.noise": "comfyui-noise",
    "whichway.comfyui.journey": "comfyui-journey",
    "whichway.comfyui.install": "comfyui-install",
}

pytest.importorskip("mkdocstrings_handlers.python", reason="the docs extra is not installed")


def _build(out: Path) -> float:
    """``mkdocs build --strict`` as CI runs it; the seconds it took."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return time.perf_counter() - start


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    out = tmp_path_factory.mktemp("site")
    return out, _build(out)


@pytest.fixture(scope="module")
def site(built: tuple[Path, float]) -> Path:
    return built[0]


def _page(site: Path, name: str) -> str:
    return (site / "api" / name / "index.html").read_text(encoding="utf-8")


def _section(page: str, anchor: str) -> str:
    """The text of the object documented under ``id="anchor"``, up to the next object that is
    not one of its own members."""
    start = page.find(f'id="{anchor}"')
    assert start >= 0, f"{anchor} is not in the API reference"
    end = len(page)
    for m in re.finditer(r'id="(whichway\.[^"]+)"', page[start + 1 :]):
        if not m.group(1).startswith(anchor + "."):
            end = start + 1 + m.start()
            break
    text = re.sub(r"<[^>]+>", " ", page[start:end])
    return " ".join(html.unescape(text).split())


def _words(text: str) -> list[str]:
    """The plain words of a docstring or a rendered page: math left out (the page shows TeX for
    MathJax), roles and code spans reduced to their text."""
    text = re.sub(r":math:`[^`]*`", " ", text)
    text = re.sub(r"\\\((.*?)\\\)|\\\[(.*?)\\\]", " ", text, flags=re.S)
    text = re.sub(r":\w+:`~?([^`]*)`", r"\1", text)
    return re.findall(r"[A-Za-z]{3,}", text.replace("`", " "))


def _public(module_name: str) -> list[tuple[str, object]]:
    """``__all__``, or for a module without one what mkdocstrings shows: the functions and
    classes it defines whose names do not start with an underscore."""
    module = importlib.import_module(module_name)
    if hasattr(module, "__all__"):
        return [(name, getattr(module, name)) for name in module.__all__]
    return [
        (name, obj)
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and (inspect.isfunction(obj) or inspect.isclass(obj))
        and obj.__module__ == module_name
    ]


def test_the_site_builds_strict_and_fast(built: tuple[Path, float]) -> None:
    """The build CI runs: strict (a warning is an error) and well under a minute, offline."""
    site, seconds = built
    assert (site / "index.html").is_file() and (site / "api" / "clouds" / "index.html").is_file()
    assert seconds < 60, f"mkdocs build took {seconds:.1f} s"


@pytest.mark.parametrize("module_name", sorted(API_PAGES))
def test_every_public_name_appears_with_its_docstring(site: Path, module_name: str) -> None:
    page = _page(site, API_PAGES[module_name])
    names = _public(module_name)
    assert names, f"{module_name}.__all__ is empty"
    for name, obj in names:
        section = _section(page, f"{module_name}.{name}")
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue  # constants: their anchor (and #: comment, where there is one) is enough
        doc = inspect.getdoc(obj)
        assert doc and doc.strip(), f"{module_name}.{name} has no docstring"
        first = _words(doc.split("\n\n")[0])[:8]
        rendered = _words(section)
        assert first, f"{module_name}.{name}: no plain words in the first paragraph"
        joined = " ".join(rendered)
        assert " ".join(first) in joined, (
            f"{module_name}.{name}: docstring {first} not rendered: {section[:300]}"
        )


def test_the_top_level_page_links_every_export_to_its_definition(site: Path) -> None:
    import whichway

    page = _page(site, "whichway")
    for name in whichway.__all__:
        if name == "__version__":
            continue
        defining = whichway._EXPORTS[name]
        assert defining in API_PAGES, f"whichway.{name} is defined in an undocumented module"
        assert f"#{defining}.{name}" in page, f"whichway.{name} is not linked from the API index"
        assert f'id="{defining}.{name}"' in _page(site, API_PAGES[defining])


def test_no_restructuredtext_left_in_the_api_reference(site: Path) -> None:
    """Docstrings are written with Sphinx roles and ``.. math::``; the page must show rendered
    math (arithmatex) and code, never the raw markup."""
    for page_name in ["whichway", *API_PAGES.values()]:
        text = html.unescape(re.sub(r"<[^>]+>", " ", _page(site, page_name)))
        for raw in (".. math::", ":math:`", ":func:`", ":class:`", ":mod:`", ":meth:`"):
            assert raw not in text, f"api/{page_name}: raw {raw!r} left in the page"
    gaussian = _page(site, "gaussian")
    cog = _section(gaussian, "whichway.gaussian.cog")
    assert r"\frac{\alpha}{\sqrt\beta}" in cog  # the displayed equation, for MathJax
    assert 'class="arithmatex"' in gaussian


def test_docs_figures_are_small_and_referenced() -> None:
    assets = ROOT / "docs" / "assets"
    pngs = sorted(assets.glob("*.png"))
    assert pngs, "docs/assets has no figures (python docs/scripts/make_figures.py)"
    pages = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "docs").rglob("*.md"))
    pages += (ROOT / "README.md").read_text(encoding="utf-8")
    for png in pngs:
        assert png.stat().st_size < 300 * 1024, f"{png.name} is over 300 KB"
        assert png.name in pages, f"{png.name} is not shown on any page"


def test_readme_keeps_the_ci_test_command() -> None:
    """``.ci/run`` reads the line after the marker; the docs site says how to serve itself."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8").split("\n")
    at = readme.index("<!-- test-command -->")
    assert readme[at + 1 : at + 4] == [
        "```bash",
        'pip install -e ".[test]" && python -m pytest -q',
        "```",
    ]
    assert "mkdocs serve" in "\n".join(readme)


def _extension():
    """docs/scripts/griffe_whichway.py, the griffe extension mkdocs.yml loads, imported by path."""
    spec = importlib.util.spec_from_file_location(
        "griffe_whichway", ROOT / "docs" / "scripts" / "griffe_whichway.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_restructuredtext_becomes_markdown_with_math() -> None:
    convert = _extension().rst_to_markdown
    doc = (
        "Combine *these* latents.\n"
        "\n"
        ".. math::\n"
        "\n"
        "    z = \\frac{y}{\\sqrt\\beta}\n"
        "\n"
        "See :func:`~whichway.gaussian.cog` and :math:`w_k = 1/K` for (K, *shape).\n"
        "\n"
        "Parameters\n"
        "----------\n"
        "latents : Tensor (K, *shape)\n"
        "    K latents, each (*shape).\n"
    )
    assert convert(doc) == (
        "Combine *these* latents.\n"
        "\n"
        "$$\n"
        "z = \\frac{y}{\\sqrt\\beta}\n"
        "$$\n"
        "\n"
        "See `whichway.gaussian.cog` and $w_k = 1/K$ for (K, \\*shape).\n"
        "\n"
        "Parameters\n"
        "----------\n"
        "latents : Tensor (K, *shape)\n"
        "    K latents, each (\\*shape).\n"
    )
    # the one-line form, indented inside a section's description
    assert convert("    .. math:: W_2 = \\sqrt{C/n}\n    after") == (
        "    $$\n    W_2 = \\sqrt{C/n}\n    $$\n\n    after"
    )
