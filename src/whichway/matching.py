"""Which token of prompt A travels to which token of prompt B: the OT coupling read as a table.

For each token group of a conditioning (SD 1.x: one group of 77 CLIP tokens), the optimal
coupling sigma* pairs row i of A with row sigma*(i) of B (paper A, :mod:`whichway.clouds`). This
module lays that pairing out for people: the decoded token strings of both prompts, each A token's
partner in B, the squared distance ||E_A[i] - E_B[sigma(i)]||^2 of each pair, whether the pair
left row order (sigma(i) != i, the "clip" coupling), and the cost of the ot, clip and random
couplings side by side. Padding rows (the model sees them too) are collapsed into one labelled
row where they pair with padding.

The geometry (:func:`match_clouds`) is pure tensor math on clouds and labels; :func:`token_labels`
reads the model's tokenizers, and :func:`token_matching` joins the two for an adapter.
:func:`matching_figure` draws the pairing as lines between two columns of tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

    from whichway.models.base import Adapter

__all__ = [
    "GroupMatching",
    "MatchRow",
    "TokenLabels",
    "TokenMatching",
    "match_clouds",
    "matching_figure",
    "token_labels",
    "token_matching",
]


@dataclass(frozen=True)
class TokenLabels:
    """Decoded tokens of one prompt in one token group: ``tokens[i]`` names row i of the cloud,
    ``padding[i]`` is True for rows the tokenizer added as padding."""

    tokens: tuple[str, ...]
    padding: tuple[bool, ...]

    def __post_init__(self) -> None:
        if len(self.tokens) != len(self.padding):
            raise ValueError(f"{len(self.tokens)} tokens but {len(self.padding)} padding flags")


@dataclass(frozen=True)
class MatchRow:
    """One line of the table: A rows ``rows_a`` paired with B rows ``rows_b`` (one row each, or
    every padding row of A that pairs with padding of B, collapsed). ``sq_distance`` sums
    ||E_A[i] - E_B[sigma(i)]||^2 over the rows; ``moved`` counts rows with sigma(i) != i."""

    rows_a: tuple[int, ...]
    token_a: str
    rows_b: tuple[int, ...]
    token_b: str
    sq_distance: float
    moved: int

    @property
    def collapsed(self) -> bool:
        return len(self.rows_a) > 1


@dataclass(frozen=True)
class GroupMatching:
    """The OT pairing of one token group.

    perm : tuple of int (n,)      sigma*, A row i -> B row perm[i]
    sq_distances : tuple (n,)     ||E_A[i] - E_B[perm[i]]||^2
    rows : the table (real A tokens in row order, A padding paired with real B tokens one by
        one, then one collapsed row for A padding paired with B padding)
    costs : {"ot", "clip", "random"} -> coupling cost sum_i ||E_A[i] - E_B[sigma(i)]||^2
    """

    group: int
    labels_a: TokenLabels
    labels_b: TokenLabels
    perm: tuple[int, ...]
    sq_distances: tuple[float, ...]
    rows: tuple[MatchRow, ...]
    costs: dict[str, float]

    @property
    def moved(self) -> int:
        """Rows the OT coupling pairs off the diagonal."""
        return sum(int(p != i) for i, p in enumerate(self.perm))


@dataclass(frozen=True)
class TokenMatching:
    """Token matching of two prompts, one :class:`GroupMatching` per token group."""

    prompt_a: str
    prompt_b: str
    groups: tuple[GroupMatching, ...]

    @property
    def costs(self) -> dict[str, float]:
        """Coupling costs summed over token groups."""
        return {m: sum(g.costs[m] for g in self.groups) for m in self.groups[0].costs}


def _pad_label(count: int) -> str:
    return f"<padding> x{count}"


def match_clouds(
    cloud_a: Tensor,
    cloud_b: Tensor,
    labels_a: TokenLabels | None = None,
    labels_b: TokenLabels | None = None,
    *,
    group: int = 0,
    seed: int = 0,
) -> GroupMatching:
    """The OT pairing of two token clouds as a table.

    The OT coupling sigma* minimises C(sigma) = sum_i ||a_i - b_sigma(i)||^2
    (:func:`whichway.clouds.couple`); clip is sigma = id; random is a seeded permutation.

    Parameters
    ----------
    cloud_a, cloud_b : Tensor (n, d)
        Token embeddings of prompts A and B in one group (equal sizes).
    labels_a, labels_b : TokenLabels, optional
        Token strings and padding flags per row (``"row i"`` and no padding when omitted).
    seed : int
        Seed of the random coupling's ``torch.Generator`` (as ``whichway morph`` draws it).
    """
    import torch

    from whichway.clouds import COUPLING_METHODS, couple

    if cloud_a.ndim != 2 or cloud_a.shape != cloud_b.shape:
        raise ValueError(
            f"token matching needs two clouds of the same shape (n, d), got {tuple(cloud_a.shape)} "
            f"and {tuple(cloud_b.shape)}"
        )
    n = cloud_a.shape[0]
    labels_a = labels_a or TokenLabels(tuple(f"row {i}" for i in range(n)), (False,) * n)
    labels_b = labels_b or TokenLabels(tuple(f"row {i}" for i in range(n)), (False,) * n)
    if len(labels_a.tokens) != n or len(labels_b.tokens) != n:
        raise ValueError(
            f"labels must name all {n} rows, got {len(labels_a.tokens)} and {len(labels_b.tokens)}"
        )
    costs: dict[str, float] = {}
    ot = None
    for method in COUPLING_METHODS:
        c = couple(cloud_a, cloud_b, method, generator=torch.Generator().manual_seed(seed))
        costs[method] = float(c.cost)
        if method == "ot":
            ot = c
    assert ot is not None and ot.perm is not None
    perm = [int(p) for p in ot.perm.tolist()]
    a64, b64 = cloud_a.to(torch.float64), cloud_b.to(torch.float64)
    sq = ((a64 - b64[torch.tensor(perm)]) ** 2).sum(dim=1).tolist()

    rows: list[MatchRow] = []
    collapsed: list[int] = []
    for i, j in enumerate(perm):
        if labels_a.padding[i] and labels_b.padding[j]:
            collapsed.append(i)
            continue
        token_a = "<padding>" if labels_a.padding[i] else labels_a.tokens[i]
        token_b = "<padding>" if labels_b.padding[j] else labels_b.tokens[j]
        rows.append(MatchRow((i,), token_a, (j,), token_b, float(sq[i]), int(i != j)))
    if collapsed:
        rows.append(
            MatchRow(
                tuple(collapsed),
                _pad_label(len(collapsed)),
                tuple(perm[i] for i in collapsed),
                _pad_label(len(collapsed)),
                float(sum(sq[i] for i in collapsed)),
                sum(int(perm[i] != i) for i in collapsed),
            )
        )
    return GroupMatching(
        group, labels_a, labels_b, tuple(perm), tuple(float(x) for x in sq), tuple(rows), costs
    )


def _group_tokenizers(adapter: Adapter) -> list[Any]:
    """The tokenizer that names each token group's rows (None: rows are named by index)."""
    pipe = adapter.pipe
    family = adapter.family
    if family in ("sd", "sdxl"):
        return [pipe.tokenizer]  # SDXL: both CLIP tokenizers share the BPE vocabulary and rows
    if family == "sd3":
        return [pipe.tokenizer, getattr(pipe, "tokenizer_3", None)]
    if family == "flux":
        return [pipe.tokenizer_2]
    return []


def token_labels(adapter: Adapter, prompt: str, sizes: Sequence[int]) -> list[TokenLabels]:
    """Decoded tokens of ``prompt`` per token group, laid out as the adapter encodes it: the
    prompt's syntax parsed, CLIP groups in chunks of 77 rows, a cloud tiled to a batch's larger
    row count repeated. A weighted token is named with its weight (``sunlight ×1.2``), the first
    row of every chunk after the first with its chunk (``<|startoftext|> ‹chunk 2›``) and of
    every tiled copy with the copy (``‹copy 2›``); padding = rows after a chunk's end token."""
    from whichway.models.prompting import nesting_of
    from whichway.prompts.chunks import tokenize_chunks
    from whichway.prompts.syntax import parse_prompt

    parsed = parse_prompt(prompt, nesting=nesting_of(adapter.weighting))
    tokenizers = _group_tokenizers(adapter)
    out = []
    for g, n in enumerate(sizes):
        tok = tokenizers[g] if g < len(tokenizers) else None
        if tok is None:
            out.append(TokenLabels(tuple(f"row {i}" for i in range(n)), (False,) * n))
            continue
        chunked = g == 0 and adapter.family in ("sd", "sdxl", "sd3")
        window = int(tok.model_max_length) if chunked else n
        chunks = tokenize_chunks(
            tok, parsed, window, chunked=chunked and adapter.long_prompts == "chunk"
        )
        names: list[str] = []
        padding: list[bool] = []
        for k, (ids, weights) in enumerate(zip(chunks.ids, chunks.weights)):
            for i, (name, w) in enumerate(zip(tok.convert_ids_to_tokens(list(ids)), weights)):
                name = str(name).replace("</w>", "").replace("\u2581", "") or str(name)
                if w != 1.0:
                    name = f"{name} ×{w:.3g}"
                if i == 0 and k > 0:
                    name = f"{name} ‹chunk {k + 1}›"
                names.append(name)
                padding.append(i >= chunks.lengths[k])
        copies = max(1, n // len(names))
        names += [
            f"{name} ‹copy {c + 1}›" if i == 0 else name
            for c in range(1, copies)
            for i, name in enumerate(names[: len(padding)])
        ]
        padding = (padding * copies)[:n]
        out.append(TokenLabels(tuple(names[:n]), tuple(padding)))
    return out


def token_matching(
    adapter: Adapter, prompt_a: str, prompt_b: str, *, seed: int = 0
) -> TokenMatching:
    """Encode two prompts with ``adapter`` and lay out the OT pairing of every token group."""
    if not prompt_a.strip() or not prompt_b.strip():
        raise ValueError("give both prompts (A and B) to see how their tokens are matched")
    cond = adapter.encode([prompt_a, prompt_b])
    sizes = [c.shape[1] for c in cond.clouds]
    labels_a = token_labels(adapter, prompt_a, sizes)
    labels_b = token_labels(adapter, prompt_b, sizes)
    groups = tuple(
        match_clouds(c[0], c[1], labels_a[g], labels_b[g], group=g, seed=seed)
        for g, c in enumerate(cond.clouds)
    )
    return TokenMatching(prompt_a, prompt_b, groups)


def _node_layout(labels: TokenLabels) -> tuple[list[str], list[int]]:
    """Plot rows of one prompt: each real token its own row, every padding row one shared row.
    Returns (row names, row of each token)."""
    n = len(labels.tokens)
    names: list[str] = []
    where = [0] * n
    pad_node = None
    for i in range(n):
        if labels.padding[i]:
            if pad_node is None:
                pad_node = len(names)
                names.append(_pad_label(sum(labels.padding)))
            where[i] = pad_node
        else:
            where[i] = len(names)
            names.append(labels.tokens[i])
    return names, where


def _draw_group(ax: Any, g: GroupMatching) -> None:
    left, at_a = _node_layout(g.labels_a)
    right, at_b = _node_layout(g.labels_b)
    rows = max(len(left), len(right))
    # one line per (A row, B row) of the plot; padding rows share a line, orange if any left row order
    lines: dict[tuple[int, int], list[float]] = {}
    for i, j in enumerate(g.perm):
        entry = lines.setdefault((at_a[i], at_b[j]), [0.0, 0.0, 0.0])
        entry[0] += g.sq_distances[i]
        entry[1] += 1
        entry[2] += float(i != j)
    top = max(v[0] / v[1] for v in lines.values()) or 1.0
    for (ya, yb), (total, count, moved) in lines.items():
        ax.plot(
            [0.0, 1.0],
            [-ya, -yb],
            color="#e8590c" if moved else "#adb5bd",
            lw=0.8 + 2.2 * (total / count) / top,
            alpha=0.9,
            zorder=2 if moved else 1,
        )
    for k, name in enumerate(left):
        ax.text(-0.03, -k, name, ha="right", va="center", fontsize=9)
    for k, name in enumerate(right):
        ax.text(1.03, -k, name, ha="left", va="center", fontsize=9)
    ax.set_xlim(-0.9, 1.9)
    ax.set_ylim(-rows + 0.4, 0.9)
    ax.axis("off")
    costs = ", ".join(f"{m} {c:.4g}" for m, c in g.costs.items())
    ax.set_title(
        f"group {g.group}: A (left) -> B (right), {g.moved} of {len(g.perm)} rows leave row order "
        f"(orange)\ncoupling cost {costs}",
        fontsize=9,
    )


def matching_figure(matching: TokenMatching, group: int | None = None) -> Any:
    """A matplotlib figure of the OT pairing, one panel per token group (or only ``group``): A's
    tokens down the left, B's down the right (row order, padding as one row each side), a line
    from each A token to its partner in B. Orange lines left row order, grey ones stayed; line
    width grows with the squared distance."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    groups = matching.groups if group is None else (matching.groups[group],)
    heights = [
        max(len(_node_layout(g.labels_a)[0]), len(_node_layout(g.labels_b)[0])) + 3 for g in groups
    ]
    fig = Figure(figsize=(7.5, 0.34 * sum(heights) + 0.4), dpi=100)
    axes = fig.subplots(len(groups), 1, squeeze=False, gridspec_kw={"height_ratios": heights})
    for ax, g in zip(axes[:, 0], groups):
        _draw_group(ax, g)
    fig.tight_layout()
    return fig
