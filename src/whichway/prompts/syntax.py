"""Prompt syntax as artists write it (A1111, ComfyUI, Deforum, FizzNodes), parsed without torch.

* ``(text:1.2)``  weight 1.2;  ``(text)``  x 1.1;  ``[text]``  / 1.1; groups nest and multiply:
  ``((a))`` is 1.21, ``((a:1.5))`` is 1.65.
* ``\\(``, ``\\)``, ``\\[``, ``\\]``, ``\\\\``  a literal bracket or backslash.
* ``BREAK`` (upper case, a word of its own) ends the current 75-token chunk: what follows starts
  a new one.
* ``... --neg blurry, lowres``  (Deforum's convention, schedule prompts only): the text after
  ``--neg`` is the negative prompt (:func:`split_negative`).

A colon is literal text except inside a round group, where the part after its last top-level
colon must be a number (``(sky:bright)`` is an error, not a guess). Unbalanced brackets, a weight
that is not a number, an empty or negative weight and a second ``--neg`` raise
:class:`PromptSyntaxError`, one line naming the prompt and the position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

EMPHASIS = 1.1
"""The factor of one ``( )`` (multiply) or ``[ ]`` (divide), as in A1111 and ComfyUI."""

NEGATIVE_MARKER = "--neg"

_ESCAPES = {"(": "(", ")": ")", "[": "[", "]": "]", "\\": "\\"}


class PromptSyntaxError(ValueError):
    """A prompt that cannot be parsed; the message names the prompt and the position."""

    def __init__(self, prompt: str, position: int, what: str, label: str | None = None) -> None:
        self.prompt, self.position, self.what = prompt, position, what
        name = label or f"prompt {short_repr(prompt)}"
        pointer = short_repr(prompt[position:], 20) if position < len(prompt) else "<end>"
        hint = (
            "; write \\( \\) or \\[ \\] for literal brackets"
            if what.startswith("unbalanced")
            else "; a weight is written (text:1.2)"
            if "weight" in what
            else "; BREAK ends a chunk: write it outside any brackets"
            if "BREAK" in what
            else "; give the negative prompt on its own (--negative-prompt)"
            if "travel keyframes only" in what
            else ""
        )
        super().__init__(f"{name}: {what} at position {position} (at {pointer}){hint}")


def short_repr(text: str, limit: int = 48) -> str:
    """``repr(text)``, cut to ``limit`` characters with an ellipsis (for one-line messages)."""
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


@dataclass(frozen=True)
class Fragment:
    """A run of text with one weight (the product of the groups around it)."""

    text: str
    weight: float = 1.0


@dataclass(frozen=True)
class ParsedPrompt:
    """A prompt as fragments, split into chunks at ``BREAK``.

    chunks : tuple of tuples of :class:`Fragment`; adjacent fragments of equal weight merged.
    source : the prompt as written.
    """

    chunks: tuple[tuple[Fragment, ...], ...]
    source: str

    @property
    def text(self) -> str:
        """The prompt without syntax (weights dropped, chunks joined by a space)."""
        return " ".join("".join(f.text for f in chunk) for chunk in self.chunks)

    @property
    def weighted(self) -> bool:
        """Whether any fragment has a weight other than 1."""
        return any(f.weight != 1.0 for chunk in self.chunks for f in chunk)

    @property
    def plain(self) -> bool:
        """No syntax at all: one chunk, weight 1 everywhere, the text exactly as written. A plain
        prompt is encoded by the pipeline's own ``encode_prompt``, bit for bit as without this
        layer."""
        return len(self.chunks) == 1 and not self.weighted and self.text == self.source


class _Group:
    """An open bracket while parsing: its children (text or groups) and its weight colon."""

    __slots__ = ("children", "colon", "kind", "start", "weight_text")

    def __init__(self, kind: str, start: int) -> None:
        self.kind, self.start = kind, start
        self.children: list[str | _Group | None] = []  # None marks a BREAK (top level only)
        self.colon = -1
        self.weight_text: list[str] = []

    def add(self, c: str) -> None:
        if self.colon >= 0:
            self.weight_text.append(c)
        else:
            self.children.append(c)

    def colon_is_text(self) -> None:
        """A second colon or a nested group after the colon: the colon was literal text."""
        if self.colon >= 0:
            self.children.extend([":", *self.weight_text])
            self.colon, self.weight_text = -1, []


NESTING = ("multiply", "replace")
"""How an explicit weight inside other groups combines with theirs: A1111 multiplies
(``((a:1.5))`` is 1.65), ComfyUI replaces (``((a:1.5))`` is 1.5)."""


def parse_prompt(prompt: str, label: str | None = None, nesting: str = "multiply") -> ParsedPrompt:
    """Parse weights, emphasis, escapes and ``BREAK`` (see the module docstring).

    label : how error messages name the prompt (default: the prompt itself, shortened).
    nesting : one of :data:`NESTING`; ``(a)`` and ``[a]`` always multiply the outer weight.
    Raises :class:`PromptSyntaxError` for unbalanced brackets and weights that are not numbers.
    """
    if not isinstance(prompt, str):
        raise ValueError(f"a prompt must be a string, got {type(prompt).__name__}")
    root = _Group("", -1)
    stack = [root]
    weights: dict[int, float] = {}  # id(group) -> its factor
    i, n = 0, len(prompt)
    while i < n:
        c, top = prompt[i], stack[-1]
        if c == "\\" and i + 1 < n and prompt[i + 1] in _ESCAPES:
            top.add(prompt[i + 1])
            i += 2
            continue
        if c in "([":
            top.colon_is_text()
            group = _Group(c, i)
            top.children.append(group)
            stack.append(group)
        elif c in ")]":
            kind, name = ("(", "parentheses") if c == ")" else ("[", "brackets")
            if top is root or top.kind != kind:
                what = "closes nothing" if top is root else f"closes a '{top.kind}'"
                raise PromptSyntaxError(prompt, i, f"unbalanced {name}: '{c}' {what}", label)
            weights[id(top)] = _group_weight(prompt, top, label)
            stack.pop()
        elif c == ":" and top.kind == "(":
            top.colon_is_text()
            top.colon = i
        elif c == "B" and _is_break(prompt, i):
            if top is not root:
                raise PromptSyntaxError(prompt, i, "BREAK inside a bracketed group", label)
            root.children.append(None)
            i += len("BREAK")
            continue
        else:
            top.add(c)
        i += 1
    if len(stack) > 1:
        group = stack[-1]
        close = ")" if group.kind == "(" else "]"
        name = "parentheses" if group.kind == "(" else "brackets"
        raise PromptSyntaxError(
            prompt,
            group.start,
            f"unbalanced {name}: '{group.kind}' is never closed by '{close}'",
            label,
        )
    chunks: list[list[Fragment]] = [[]]
    if nesting not in NESTING:
        raise ValueError(f"nesting must be one of {', '.join(NESTING)}, got {nesting!r}")
    _flatten(root, 1.0, weights, chunks, nesting == "replace")
    return ParsedPrompt(tuple(tuple(_strip(c)) for c in chunks), prompt)


def _group_weight(prompt: str, group: _Group, label: str | None) -> float:
    if group.kind == "[":
        return 1.0 / EMPHASIS
    if group.colon < 0:
        return EMPHASIS
    raw = "".join(group.weight_text).strip()
    try:
        value = float(raw)
    except ValueError:
        raise PromptSyntaxError(
            prompt, group.colon + 1, f"weight {raw!r} is not a number", label
        ) from None
    if not math.isfinite(value) or value < 0:
        raise PromptSyntaxError(
            prompt, group.colon + 1, f"weight {raw!r} must be a finite number >= 0", label
        )
    return value


def _flatten(
    group: _Group,
    weight: float,
    weights: dict[int, float],
    chunks: list[list[Fragment]],
    replace: bool,
) -> None:
    for child in group.children:
        if child is None:
            chunks.append([])
        elif isinstance(child, _Group):
            explicit = replace and child.colon >= 0
            inner = weights[id(child)] if explicit else weight * weights[id(child)]
            _flatten(child, inner, weights, chunks, replace)
        else:
            chunk = chunks[-1]
            if chunk and chunk[-1].weight == weight:
                chunk[-1] = Fragment(chunk[-1].text + child, weight)
            else:
                chunk.append(Fragment(child, weight))


def _strip(chunk: list[Fragment]) -> list[Fragment]:
    """Drop the spaces around a BREAK (what A1111 does), keep the fragments otherwise."""
    return [f for f in chunk if f.text]


def _is_break(prompt: str, i: int) -> bool:
    end = i + len("BREAK")
    if prompt[i:end] != "BREAK":
        return False
    before = prompt[i - 1] if i > 0 else " "
    after = prompt[end] if end < len(prompt) else " "
    return not (before.isalnum() or before == "_") and not (after.isalnum() or after == "_")


def split_negative(prompt: str, label: str | None = None) -> tuple[str, str | None]:
    """Deforum's ``--neg``: ``"a forest --neg blurry"`` -> ``("a forest", "blurry")``.

    Returns (positive, negative or None when there is no marker), both stripped. A second
    ``--neg`` raises :class:`PromptSyntaxError` at its position.
    """
    first = prompt.find(NEGATIVE_MARKER)
    if first < 0:
        return prompt, None
    second = prompt.find(NEGATIVE_MARKER, first + len(NEGATIVE_MARKER))
    if second >= 0:
        raise PromptSyntaxError(prompt, second, "'--neg' appears twice", label)
    positive = prompt[:first].strip()
    negative = prompt[first + len(NEGATIVE_MARKER) :].strip()
    return positive, negative


def check_no_negative_marker(prompt: str, label: str | None = None) -> None:
    """Refuse Deforum's ``--neg`` where it is not read (every prompt but a travel keyframe's):
    :class:`PromptSyntaxError` at its position, instead of encoding "--neg ..." as text."""
    at = prompt.find(NEGATIVE_MARKER)
    if at >= 0:
        raise PromptSyntaxError(
            prompt, at, "'--neg' splits off a negative prompt in travel keyframes only", label
        )


def check_no_negative_markers(*named: tuple[str, str | None]) -> None:
    """:func:`check_no_negative_marker` on each (label, prompt) pair whose prompt is a string,
    named as :func:`check_prompts_syntax` names them."""
    for label, prompt in named:
        if isinstance(prompt, str):
            check_no_negative_marker(prompt, f"{label} ({short_repr(prompt, 40)})")


def escape_prompt(text: str) -> str:
    """``text`` with every bracket and backslash escaped, so that :func:`parse_prompt` reads it as
    written (captions of a data set are text, not weighted prompts)."""
    return "".join("\\" + c if c in _ESCAPES else c for c in text)


def check_prompt(prompt: str, label: str | None = None) -> str:
    """Parse ``prompt`` for its errors only (before any model loads); returns it unchanged."""
    parse_prompt(prompt, label)
    return prompt


def check_prompts_syntax(*named: tuple[str, str | None]) -> None:
    """:func:`check_prompt` on each (label, prompt) pair whose prompt is a string; the label
    names the prompt in the error ("prompt A", "keyframe 3", ...)."""
    for label, prompt in named:
        if isinstance(prompt, str):
            parse_prompt(prompt, f"{label} ({short_repr(prompt, 40)})")
