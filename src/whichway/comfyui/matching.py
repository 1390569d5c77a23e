"""Which token of prompt A goes to which token of prompt B, drawn for ComfyUI.

The prompts are encoded by ComfyUI's CLIP (``clip.tokenize`` + ``encode_from_tokens_scheduled``),
split into token groups as the prompt path splits them
(:func:`whichway.comfyui.conditioning.token_groups`), paired by
:func:`whichway.matching.match_clouds` (the OT coupling, with the ot / clip / random costs) and
drawn by :func:`whichway.matching.matching_figure` — the studio's plot. Row names come from
ComfyUI's own tokenizer of each group (``inv_vocab``); rows after the end token are padding.
"""

from __future__ import annotations

from typing import Any

__all__ = ["figure_image", "token_labels", "token_matching"]

# ComfyUI's tokenize() keys per token group: CLIP groups read the CLIP-L (or G, H) ids, T5 the T5's
_GROUP_KEYS = {"T5": ("t5xxl",)}
_CLIP_KEYS = ("l", "g", "h")


def token_labels(clip: Any, tokens: dict[str, Any], group: str, n: int) -> Any:
    """:class:`whichway.matching.TokenLabels` of a group's n rows from ComfyUI's tokens
    (``{key: [[(id, weight, ...), ...], ...]}``); rows named by index when the tokenizer of the
    group is not found or its rows do not add up to n."""
    from whichway.matching import TokenLabels

    for key in _GROUP_KEYS.get(group, _CLIP_KEYS):
        if key not in tokens:
            continue
        tok = getattr(clip.tokenizer, f"clip_{key}", None) or getattr(clip.tokenizer, key, None)
        ids = [int(item[0]) for batch in tokens[key] for item in batch]
        vocab = getattr(tok, "inv_vocab", None)
        if vocab is None or len(ids) != n:
            break
        end = getattr(tok, "end_token", None)
        names, padding, ended = [], [], False
        for i in ids:
            names.append(str(vocab.get(i, i)).replace("</w>", "").replace("\u2581", "") or str(i))
            padding.append(ended)
            ended = ended or (end is not None and i == end)
        return TokenLabels(tuple(names), tuple(padding))
    return TokenLabels(tuple(f"row {i}" for i in range(n)), (False,) * n)


def token_matching(clip: Any, prompt_a: str, prompt_b: str, *, seed: int = 0) -> Any:
    """:class:`whichway.matching.TokenMatching` of two prompts encoded by ComfyUI's ``clip``."""
    from whichway.comfyui.conditioning import token_groups
    from whichway.matching import TokenMatching, match_clouds

    if not prompt_a.strip() or not prompt_b.strip():
        raise ValueError("give both prompts (A and B) to see how their tokens are matched")
    sides = []
    for text in (prompt_a, prompt_b):
        tokens = clip.tokenize(text)
        cond = clip.encode_from_tokens_scheduled(tokens)[0]
        groups = token_groups(cond[0], cond[1].get("pooled_output"))
        sides.append((tokens, cond[0][0].float(), groups))
    (tok_a, ea, ga), (tok_b, eb, gb) = sides
    if ga.bounds != gb.bounds:
        raise ValueError(
            f"the prompts encode to token groups {ga.bounds} and {gb.bounds}; the matching plot "
            "needs equally long prompts (each within one 75-token chunk)"
        )
    out = []
    for g, (name, (lo, hi)) in enumerate(zip(ga.names, ga.bounds)):
        out.append(
            match_clouds(
                ea[lo:hi],
                eb[lo:hi],
                token_labels(clip, tok_a, name, hi - lo),
                token_labels(clip, tok_b, name, hi - lo),
                group=g,
                seed=seed,
            )
        )
    return TokenMatching(prompt_a, prompt_b, tuple(out))


def figure_image(figure: Any) -> Any:
    """A matplotlib Figure as a ComfyUI IMAGE: float tensor (1, H, W, 3) in [0, 1]."""
    import numpy as np
    import torch
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    return torch.from_numpy(rgba[..., :3].astype(np.float32) / 255.0).unsqueeze(0)
