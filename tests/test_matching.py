"""The token matching table: exact against the coupling it lays out, and the tokenizer's rows."""

from __future__ import annotations

import pytest
import torch
from scipy.optimize import linear_sum_assignment

from whichway.clouds import couple
from whichway.matching import TokenLabels, match_clouds, token_labels, token_matching


def _clouds(n=9, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)


def test_table_is_the_ot_permutation_with_padding_collapsed():
    a, b = _clouds()
    # B's padding rows sit next to three of A's padding rows, so OT pairs padding with padding
    b[6:9] = a[4:7] + 1e-3 * torch.randn(3, 5, generator=torch.Generator().manual_seed(1))
    pad_a = (False,) * 4 + (True,) * 5
    pad_b = (False,) * 6 + (True,) * 3
    la = TokenLabels(tuple(f"a{i}" for i in range(9)), pad_a)
    lb = TokenLabels(tuple(f"b{i}" for i in range(9)), pad_b)
    m = match_clouds(a, b, la, lb, seed=4)

    cost = ((a[:, None].double() - b[None].double()) ** 2).sum(-1).numpy()
    rows, cols = linear_sum_assignment(cost)
    assert list(m.perm) == cols.tolist()  # SciPy's exact assignment, row i -> cols[i]
    assert m.sq_distances == pytest.approx(cost[rows, cols].tolist(), rel=1e-12)
    for method in ("ot", "clip", "random"):
        expected = couple(a, b, method, generator=torch.Generator().manual_seed(4)).cost
        assert m.costs[method] == pytest.approx(float(expected), rel=1e-12)
    assert m.costs["ot"] == pytest.approx(sum(m.sq_distances), rel=1e-12)
    assert m.costs["ot"] <= m.costs["clip"] and m.costs["ot"] <= m.costs["random"]

    # every A row appears exactly once; only padding->padding pairs are collapsed, into one last row
    covered = sorted(i for r in m.rows for i in r.rows_a)
    assert covered == list(range(9))
    both_pad = [i for i, j in enumerate(m.perm) if pad_a[i] and pad_b[j]]
    collapsed = [r for r in m.rows if r.collapsed]
    assert len(both_pad) >= 2  # the case has teeth: padding pairs with padding and is collapsed
    assert collapsed == [m.rows[-1]] and list(m.rows[-1].rows_a) == both_pad
    assert m.rows[-1].token_a == f"<padding> x{len(both_pad)}"
    for r in m.rows:
        assert r.sq_distance == pytest.approx(sum(m.sq_distances[i] for i in r.rows_a), rel=1e-12)
        assert r.moved == sum(m.perm[i] != i for i in r.rows_a)
        if not r.collapsed:
            i, j = r.rows_a[0], r.rows_b[0]
            assert r.token_a == ("<padding>" if pad_a[i] else f"a{i}")
            assert r.token_b == ("<padding>" if pad_b[j] else f"b{j}")
    assert m.moved == int((couple(a, b, "ot").perm != torch.arange(9)).sum())


def test_identical_clouds_match_in_row_order():
    a, _ = _clouds()
    m = match_clouds(a, a.clone())
    assert m.perm == tuple(range(9)) and m.moved == 0 and m.costs["ot"] == 0.0 == m.costs["clip"]


def test_unequal_clouds_are_refused():
    a, b = _clouds()
    with pytest.raises(ValueError, match="same shape"):
        match_clouds(a, b[:5])


def test_token_labels_follow_the_tokenizer(tiny_adapter):
    adapter = tiny_adapter("sd")
    tok = adapter.pipe.tokenizer
    (labels,) = token_labels(adapter, "a photo of a cat", [77])
    ids = tok("a photo of a cat").input_ids  # BOS, 5 words, EOS
    assert labels.padding == (False,) * len(ids) + (True,) * (77 - len(ids))
    assert labels.tokens[1:6] == ("a", "photo", "of", "a", "cat")

    m = token_matching(adapter, "a photo of a cat", "a red dog", seed=0)
    cond = adapter.encode(["a photo of a cat", "a red dog"])
    ot = couple(cond.clouds[0][0], cond.clouds[0][1], "ot")
    assert list(m.groups[0].perm) == ot.perm.tolist()
    with pytest.raises(ValueError, match="both prompts"):
        token_matching(adapter, "a cat", " ")


def test_figure_draws_one_line_per_plotted_pair_and_one_panel_per_group():
    from whichway.matching import TokenMatching, matching_figure

    a, b = _clouds()
    la = TokenLabels(tuple(f"a{i}" for i in range(9)), (False,) * 4 + (True,) * 5)
    lb = TokenLabels(tuple(f"b{i}" for i in range(9)), (False,) * 6 + (True,) * 3)
    groups = (match_clouds(a, b, la, lb, group=0), match_clouds(b, a, lb, la, group=1))
    fig = matching_figure(TokenMatching("A", "B", groups))
    assert len(fig.axes) == 2
    for ax, g in zip(fig.axes, groups):
        # real tokens come first here, so a real row is its own plot row and padding shares one
        pad_a, pad_b = g.labels_a.padding.index(True), g.labels_b.padding.index(True)
        moved: dict[tuple[int, int], bool] = {}
        for i, j in enumerate(g.perm):
            key = (min(i, pad_a), min(j, pad_b))
            moved[key] = moved.get(key, False) or i != j
        assert len(ax.lines) == len(moved)
        assert sum(line.get_color() == "#e8590c" for line in ax.lines) == sum(moved.values())
        assert ax.get_title().startswith(f"group {g.group}:")
