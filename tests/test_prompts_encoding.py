"""Weighted and long prompts through every family's encoders (tiny models, real classes).

Plain prompts are bit-identical to the pipeline's own ``encode_prompt``; ``(word:1.0)`` is
``word``; a weight changes exactly the rows and by exactly the amount its rule's formula says;
long prompts are 75-token chunks, and a morph between clouds of different chunk counts ends on
both prompts' own images with an exact optimal coupling (checked against POT).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from whichway.models import PromptTruncatedWarning
from whichway.prompts.syntax import PromptSyntaxError
from whichway.prompts.weighting import WEIGHTING_RULES

FAMILIES = ["sd", "sdxl", "sd3", "flux"]
PROMPT = "a photo of a cat on a table"
#: 200 words of the tiny vocabulary: 200 tokens + BOS/EOS, 3 chunks of 75
LONG = " ".join(["a red car near the big old tree under sky"] * 20)


def _tokenizers(adapter):
    """(group, tokenizer) pairs: which tokenizer's positions index each token group."""
    pipe = adapter.pipe
    if adapter.family == "sd3":
        return [(0, pipe.tokenizer), (1, pipe.tokenizer_3)]
    return [(0, pipe.tokenizer_2 if adapter.family == "flux" else pipe.tokenizer)]


def _rows_of_last_word(tokenizer, before: str, word: str) -> slice:
    start = len(tokenizer(before).input_ids) - 1  # without the end token
    return slice(start, start + len(tokenizer(word, add_special_tokens=False).input_ids))


def _equal(a, b) -> bool:
    same_pooled = (a.pooled is None and b.pooled is None) or torch.equal(a.pooled, b.pooled)
    return same_pooled and all(torch.equal(x, y) for x, y in zip(a.clouds, b.clouds, strict=True))


@pytest.fixture
def weighting(request):
    def use(adapter, rule):
        before = adapter.weighting
        adapter.weighting = rule
        request.addfinalizer(lambda: setattr(adapter, "weighting", before))

    return use


@pytest.mark.parametrize("family", FAMILIES)
def test_plain_prompts_are_the_pipelines_own_encoding_bit_for_bit(tiny_adapter, family):
    adapter = tiny_adapter(family)
    prompts = [PROMPT, "a red dog", "style: photo, 50mm"]
    assert _equal(adapter.encode(prompts), adapter._encode(prompts))
    # the chunked encoder gives the same bits for a one-chunk prompt (not only close)
    from whichway.prompts.syntax import parse_prompt

    assert _equal(adapter._encode_parsed(parse_prompt(PROMPT), 0), adapter._encode([PROMPT]))
    # weight 1 is no weight
    assert _equal(adapter.encode(["a photo of a (cat:1.0) on a table"]), adapter.encode([PROMPT]))


@pytest.mark.parametrize("family", FAMILIES)
def test_comfyui_rule_moves_only_the_weighted_tokens_along_the_empty_prompts_line(
    tiny_adapter, family
):
    adapter = tiny_adapter(family)
    assert adapter.weighting == "comfyui"
    plain, empty = adapter.encode(["a photo of a cat"]), adapter.encode([""])
    weighted = adapter.encode(["a photo of a (cat:1.5)"])
    for g, tokenizer in _tokenizers(adapter):
        z, e, got = plain.clouds[g][0], empty.clouds[g][0], weighted.clouds[g][0]
        rows = _rows_of_last_word(tokenizer, "a photo of a", "cat")
        expected = z.clone()
        expected[rows] = e[rows] + 1.5 * (z[rows] - e[rows])  # z' = e + w (z - e)
        assert not torch.allclose(expected[rows], z[rows])
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        # the other rows: the same computation, same bits up to the batch's float rounding
        others = torch.ones(z.shape[0], dtype=torch.bool)
        others[rows] = False
        torch.testing.assert_close(got[others], z[others], rtol=1e-6, atol=1e-6)
    if plain.pooled is not None:  # weights do not move the pooled vector
        torch.testing.assert_close(weighted.pooled, plain.pooled, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("rule", [r for r in WEIGHTING_RULES if r != "comfyui"])
def test_a1111_and_multiply_rules_follow_their_formulas(tiny_adapter, weighting, rule):
    adapter = tiny_adapter("sd")
    weighting(adapter, rule)
    z = adapter.encode(["a photo of a cat"]).clouds[0][0].double()
    got = adapter.encode(["a photo of a (cat:1.5)"]).clouds[0][0].double()
    rows = _rows_of_last_word(adapter.pipe.tokenizer, "a photo of a", "cat")
    w = torch.ones(z.shape[0], 1, dtype=torch.float64)
    w[rows] = 1.5
    expected = w * z
    if rule == "a1111":  # restore the chunk's mean: z' = w z · mean(z) / mean(w z)
        expected = expected * (z.mean() / expected.mean())
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, z, atol=1e-3)


def test_emphasis_and_nesting_are_the_products_of_their_factors(tiny_adapter, weighting):
    adapter = tiny_adapter("sd")
    weighting(adapter, "multiply")
    nested = adapter.encode(["a photo of a ((cat))"]).clouds[0]
    explicit = adapter.encode(["a photo of a (cat:1.21)"]).clouds[0]
    torch.testing.assert_close(nested, explicit, rtol=1e-6, atol=1e-6)
    down = adapter.encode(["a photo of a [cat]"]).clouds[0]
    torch.testing.assert_close(
        down, adapter.encode([f"a photo of a (cat:{1 / 1.1!r})"]).clouds[0], rtol=1e-6, atol=1e-6
    )


@pytest.mark.parametrize("family", ["sd", "sdxl", "sd3"])
def test_a_200_token_prompt_is_three_chunks_of_77_rows(tiny_adapter, family):
    adapter = tiny_adapter(family)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PromptTruncatedWarning)
        cond = adapter.encode([LONG, "a red dog"])
    assert cond.clouds[0].shape[1] == 231
    short = adapter.encode(["a red dog"])
    # the one-chunk prompt is tiled (repeated whole) to the batch's 231 rows
    torch.testing.assert_close(cond.clouds[0][1], short.clouds[0][0].repeat(3, 1), rtol=0, atol=0)
    # the chunks are each BOS + 75 tokens + EOS: chunk k starts with the same BOS row
    first = cond.clouds[0][0]
    torch.testing.assert_close(first[77], first[0])
    torch.testing.assert_close(first[154], first[0])
    # BREAK starts a chunk: two short chunks
    assert adapter.encode(["a red dog BREAK a cat"]).clouds[0].shape[1] == 154


def test_long_prompts_truncate_when_asked_with_the_warning(tiny_adapter):
    adapter = tiny_adapter("sd")
    adapter.long_prompts = "truncate"
    try:
        with pytest.warns(PromptTruncatedWarning, match="202 tokens but the .* window is 77"):
            cond = adapter.encode([LONG])
    finally:
        adapter.long_prompts = "chunk"
    assert cond.clouds[0].shape[1] == 77


def test_malformed_prompt_raises_before_encoding(tiny_adapter):
    adapter = tiny_adapter("sd")
    with pytest.raises(
        PromptSyntaxError, match=r"prompt 1 .*'\(' is never closed by '\)' at position 2"
    ):
        adapter.encode(["a cat", "a (dog"])


def test_negative_prompt_with_syntax_is_encoded_like_a_prompt(tiny_adapter):
    adapter = tiny_adapter("sd")
    negative = adapter.encode_negative("(blurry:1.3), lowres", 2)
    assert len(negative) == 2
    torch.testing.assert_close(
        negative.clouds[0][0], adapter.encode(["(blurry:1.3), lowres"]).clouds[0][0]
    )


def _pixels(path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def _image(adapter, **kwargs) -> np.ndarray:
    out = adapter.pipe(
        generator=torch.Generator("cpu").manual_seed(5),
        num_inference_steps=2,
        guidance_scale=4.0,
        height=32,
        width=32,
        output_type="np",
        **kwargs,
    ).images[0]
    return np.clip(np.rint(out * 255), 0, 255).astype(int)


def test_morph_between_3_chunk_and_1_chunk_prompts_ends_on_both_and_couples_exactly(
    tiny_pipeline, tmp_path
):
    import ot

    from whichway.models import load_adapter
    from whichway.morph import MorphSettings, run_morph
    from whichway.render import conditioning_path

    adapter = load_adapter(str(tiny_pipeline("sd")), device="cpu")
    short = "a red dog"
    settings = MorphSettings(
        LONG,
        short,
        t=(0.0, 0.5, 1.0),
        steps=2,
        guidance=4.0,
        height=32,
        width=32,
        seed=5,
        format=None,
    )
    result = run_morph(adapter, settings, tmp_path / "run", progress=False)
    # t = 1: the plain pipeline on B's own (77-row) prompt
    assert np.abs(_pixels(result.frames[-1]) - _image(adapter, prompt=short)).max() <= 1
    # t = 0: the plain pipeline on A's own 231-row conditioning (its negative tiled to 231 rows,
    # the rows a pipeline batch needs; A1111 and ComfyUI batch the same way)
    a = adapter.encode([LONG]).clouds[0]
    uncond = adapter.encode_negative(None, 1).clouds[0].repeat(1, 3, 1)
    plain_a = _image(adapter, prompt_embeds=a, negative_prompt_embeds=uncond)
    assert np.abs(_pixels(result.frames[0]) - plain_a).max() <= 1

    # the coupling is an exact assignment whose cost is the OT cost between the two uniform
    # clouds of 231 and 77 points (POT's network simplex on the unequal sizes)
    b = adapter.encode([short]).clouds[0]
    path, (coupling,) = conditioning_path(
        adapter.encode([LONG]), adapter.encode([short]), [0.0, 1.0]
    )
    assert coupling.perm is not None and coupling.plan is None
    x, y = a[0].double().numpy(), b[0].double().numpy()
    emd = ot.emd2(ot.unif(231), ot.unif(77), ot.dist(x, y), numItermax=10**7)
    assert float(coupling.cost) / 231 == pytest.approx(emd, rel=1e-9)
    # t = 1 is B itself: its rows, each three times, in another order
    end = path.clouds[0][1].double()
    order = lambda m: m[np.lexsort(m.T[::-1])]  # noqa: E731
    np.testing.assert_array_equal(order(end.numpy()), order(np.repeat(y, 3, axis=0)))


@pytest.mark.parametrize("family", FAMILIES)
def test_tiling_is_invisible_to_cross_attention_not_to_joint_attention(tiny_adapter, family):
    """Repeating every text row 3 times leaves a UNet's cross-attention output unchanged (float
    rounding), as a permutation does; in SD3/Flux joint attention the image queries give the
    repeated rows 3 times their mass, so only the permutation is invisible there."""
    from whichway.models.base import Conditioning

    adapter = tiny_adapter(family)
    cond = adapter.encode([PROMPT])
    size = adapter.default_size if family in ("sd", "sdxl") else (32, 32)
    x = torch.randn((1, *adapter.latent_shape(*size)), generator=torch.Generator().manual_seed(0))
    t = 500.0 if family in ("sd", "sdxl") else 0.5
    base = adapter.denoise_once(cond, x, t)

    def rel(other: Conditioning) -> float:
        return float((adapter.denoise_once(other, x, t) - base).norm() / base.norm())

    g = torch.Generator().manual_seed(1)
    permuted = Conditioning(
        tuple(c[:, torch.randperm(c.shape[1], generator=g)] for c in cond.clouds), cond.pooled
    )
    tiled = cond.tile([3 * r for r in cond.rows])
    assert rel(permuted) < 1e-5
    if family in ("sd", "sdxl"):
        assert rel(tiled) < 1e-5
    else:
        assert rel(tiled) > 1e-4  # measured 6.7e-4 (SD3), 6.4e-4 (Flux) on the tiny models


def test_tiling_refuses_a_least_common_multiple_beyond_the_cap():
    from whichway.models.base import MAX_ALIGNED_ROWS, Conditioning

    def cond(chunks: int) -> Conditioning:
        return Conditioning((torch.zeros(1, 77 * chunks, 4),))

    assert [c.rows for c in Conditioning.aligned([cond(2), cond(3)])] == [(462,), (462,)]
    assert MAX_ALIGNED_ROWS < 77 * 5 * 7
    with pytest.raises(ValueError, match="trailing BREAK adds an empty chunk"):
        Conditioning.aligned([cond(5), cond(7)])


def test_sd3_warns_when_clip_groups_of_different_chunk_counts_are_tiled(tiny_adapter, caplog):
    adapter = tiny_adapter("sd3")
    with caplog.at_level("WARNING", logger="whichway.models.prompting"):
        adapter.encode(["a red dog", "a cat"])
        assert not caplog.records  # same chunk count: exact, nothing to say
        cond = adapter.encode([LONG, "a red dog"])
    assert cond.rows == (231, 256)
    assert any("not exactly" in r.getMessage() for r in caplog.records)
