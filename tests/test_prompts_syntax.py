"""The prompt syntax layer (whichway.prompts.syntax): weights, emphasis, escapes, BREAK, --neg."""

from __future__ import annotations

import pytest

from whichway.prompts.syntax import (
    EMPHASIS,
    Fragment,
    PromptSyntaxError,
    parse_prompt,
    split_negative,
)


def _pairs(prompt: str) -> list[list[tuple[str, float]]]:
    return [[(f.text, f.weight) for f in chunk] for chunk in parse_prompt(prompt).chunks]


def test_explicit_weight_and_plain_text_around_it():
    assert _pairs("a beautiful forest, (sunlight:1.2), masterpiece") == [
        [("a beautiful forest, ", 1.0), ("sunlight", 1.2), (", masterpiece", 1.0)]
    ]


def test_emphasis_nesting_multiplies():
    [[a, space, b, c]] = _pairs("((a)) [b] c")
    assert a == ("a", pytest.approx(EMPHASIS**2, abs=0))
    assert b == ("b", 1 / EMPHASIS) and space == (" ", 1.0) and c == (" c", 1.0)
    # an explicit weight replaces the group's own 1.1, nested groups multiply it
    assert _pairs("(a (b) c:1.5)") == [[("a ", 1.5), ("b", 1.5 * EMPHASIS), (" c", 1.5)]]
    assert _pairs("((a:1.5))") == [[("a", 1.5 * EMPHASIS)]]
    assert _pairs("[(a:2)]") == [[("a", 2 / EMPHASIS)]]


def test_escapes_and_literal_colons_are_text():
    assert _pairs(r"\(x\) \[y\] a\\b") == [[("(x) [y] a\\b", 1.0)]]
    assert _pairs("style: photo") == [[("style: photo", 1.0)]]
    assert parse_prompt("style: photo").plain
    # only the last colon of a group is its weight
    assert _pairs("(a:b:1.3)") == [[("a:b", 1.3)]]


def test_weight_one_is_the_plain_text_but_not_plain_syntax():
    parsed = parse_prompt("a (word:1.0) here")
    assert _pairs("a (word:1.0) here") == [[("a word here", 1.0)]]
    assert not parsed.weighted and not parsed.plain and parsed.text == "a word here"
    assert parse_prompt("a word here").plain


def test_break_starts_a_chunk_only_as_a_word():
    assert _pairs("a cat BREAK a dog") == [[("a cat ", 1.0)], [(" a dog", 1.0)]]
    assert _pairs("BREAKFAST and aBREAK") == [[("BREAKFAST and aBREAK", 1.0)]]
    assert _pairs("(red:1.2) BREAK") == [[("red", 1.2), (" ", 1.0)], []]


@pytest.mark.parametrize(
    ("prompt", "position", "what"),
    [
        ("a (cat", 2, r"'\(' is never closed"),
        ("a cat)", 5, r"'\)' closes nothing"),
        ("[a cat)", 6, r"'\)' closes a '\['"),
        ("(a cat]", 6, r"'\]' closes a '\('"),
        ("(sky:bright)", 5, r"weight 'bright' is not a number"),
        ("(sky:)", 5, r"weight '' is not a number"),
        ("(sky:-1)", 5, r"must be a finite number >= 0"),
        ("(a BREAK b)", 3, "BREAK inside"),
    ],
)
def test_malformed_syntax_is_one_line_naming_prompt_and_position(prompt, position, what):
    with pytest.raises(PromptSyntaxError, match=what) as err:
        parse_prompt(prompt)
    message = str(err.value)
    assert "\n" not in message and f"at position {position} " in message
    assert repr(prompt) in message and err.value.position == position
    with pytest.raises(PromptSyntaxError, match="^keyframe 12: "):
        parse_prompt(prompt, label="keyframe 12")
    # the advice fits the error: literal brackets only for unbalanced ones
    hint = message.rsplit("; ", 1)[-1]
    expected = (
        "write \\( \\) or \\[ \\] for literal brackets"
        if "unbalanced" in message
        else "a weight is written (text:1.2)"
        if "weight" in message
        else "BREAK ends a chunk: write it outside any brackets"
    )
    assert hint == expected, message


def test_neg_outside_a_keyframe_is_refused_where_it_stands():
    from whichway.morph import MorphSettings
    from whichway.prompts.syntax import check_no_negative_markers

    check_no_negative_markers(("prompt A", "a forest, (sun:1.2)"), ("prompt B", None))
    with pytest.raises(PromptSyntaxError, match=r"^prompt B \('a --neg b'\): .* at position 2 "):
        check_no_negative_markers(("prompt A", "a"), ("prompt B", "a --neg b"))
    with pytest.raises(PromptSyntaxError, match="travel keyframes only"):
        MorphSettings("a forest --neg blurry", "a cave", t=(0.0, 1.0))


def test_deforum_negative_split():
    assert split_negative("a forest, (sun:1.2) --neg blurry, lowres") == (
        "a forest, (sun:1.2)",
        "blurry, lowres",
    )
    assert split_negative("a forest") == ("a forest", None)
    assert split_negative("a forest --neg") == ("a forest", "")
    with pytest.raises(PromptSyntaxError, match=r"'--neg' appears twice at position 14 "):
        split_negative("a --neg b, c  --neg d")


def test_fragments_are_frozen_values():
    assert Fragment("a") == Fragment("a", 1.0)
    with pytest.raises(AttributeError):
        Fragment("a").weight = 2.0  # type: ignore[misc]


def test_comfyui_nesting_lets_an_explicit_weight_replace_the_outer_ones():
    def replace(prompt: str) -> list[list[tuple[str, float]]]:
        chunks = parse_prompt(prompt, nesting="replace").chunks
        return [[(f.text, f.weight) for f in chunk] for chunk in chunks]

    assert replace("((a:1.5))") == [[("a", 1.5)]]
    assert replace("(x (b:1.3) y:0.8)") == [[("x ", 0.8), ("b", 1.3), (" y", 0.8)]]
    assert replace("((a))") == _pairs("((a))")  # emphasis still multiplies
    with pytest.raises(ValueError, match="nesting must be one of"):
        parse_prompt("a", nesting="add")


def test_escaped_text_parses_back_to_itself_unweighted():
    from whichway.prompts.syntax import escape_prompt

    caption = r"a man (left) holds [a] sign \ (unbalanced"
    parsed = parse_prompt(escape_prompt(caption))
    assert parsed.text == caption and not parsed.weighted and len(parsed.chunks) == 1
