"""AID: attention interpolation (He et al., "AID: Attention Interpolation of Text-to-Image
Diffusion", NeurIPS 2024; official code ``QY-H00/attention-interpolation-diffusion``).

A batch of rows [A, B, m_1 .. m_k] goes through one denoiser call. In every attention layer
AID acts on, a middle row m with coefficient c attends to the endpoint rows' keys and values
of the same layer (self-attention: projections of the rows' hidden states; cross-attention:
projections of their text conditions):

* outer: out_m = (1 - c) Attn(Q_m, K_A, V_A) + c Attn(Q_m, K_B, V_B)   (mixed after softmax)
* inner: out_m = Attn(Q_m, (1 - c) K_A + c K_B, (1 - c) V_A + c V_B)   (one softmax)
* fused: the row's own keys/values are concatenated to the endpoint's along the token axis,
  e.g. Attn(Q_m, [K_m; K_A], [V_m; V_A]) (outer) or Attn(Q_m, [K_m; K_c], [V_m; V_c]) (inner).

Attn(Q, K, V) = softmax(Q K^T * scale) V per head. The endpoint rows themselves attend plainly
(at c = 0 and c = 1 the formulas reduce to plain attention: duplicated key/value pairs leave
softmax attention unchanged). The processor works on the conditional half of a guided batch
only; the unconditional rows attend plainly, as in the official pipeline. Where the negative
branch is a denoiser call of its own (Flux's true CFG), that call attends plainly and the
warmup counts the conditional calls, i.e. steps.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from whichway._checks import SettingError
from whichway.attention.methods import AID_LAYERS, AID_MODES


def attend(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """softmax(Q K^T * scale) V; q (N, H, n, d), k and v (N, H, m, d) -> (N, H, n, d)."""
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=scale)


def aid_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    coefs: Tensor,
    key_a: Tensor,
    value_a: Tensor,
    key_b: Tensor,
    value_b: Tensor,
    *,
    mode: str = "outer",
    fused: bool = True,
    scale: float,
) -> Tensor:
    """AID attention of k middle rows towards two endpoint rows.

    Parameters
    ----------
    q : Tensor (k, H, n, d)       queries of the middle rows
    k, v : Tensor (k, H, m, d)    the middle rows' own keys and values (used when ``fused``)
    coefs : Tensor (k,)           interpolation coefficient c of each row, in [0, 1]
    key_a, value_a, key_b, value_b : Tensor (1, H, m, d)   the endpoint rows' keys/values
    mode : "outer" | "inner"
    fused : concatenate the row's own keys/values to the endpoint's

    Returns
    -------
    Tensor (k, H, n, d)

    outer: (1 - c) Attn(Q, K_A*, V_A*) + c Attn(Q, K_B*, V_B*);
    inner: Attn(Q, (1 - c) K_A + c K_B (*), (1 - c) V_A + c V_B (*)), where (*) prepends the
    row's own K, V along the token axis when ``fused``.
    """
    if mode not in AID_MODES:
        raise ValueError(f"unknown AID mode {mode!r}; valid choices are: {', '.join(AID_MODES)}")
    c = coefs.to(dtype=q.dtype, device=q.device).reshape(-1, 1, 1, 1)
    rows = q.shape[0]

    def keys(x: Tensor, own: Tensor) -> Tensor:
        x = x.expand(rows, *x.shape[1:])
        return torch.cat([own, x], dim=-2) if fused else x

    if mode == "outer":
        out_a = attend(q, keys(key_a, k), keys(value_a, v), scale)
        out_b = attend(q, keys(key_b, k), keys(value_b, v), scale)
        return (1 - c) * out_a + c * out_b
    key_c = (1 - c) * key_a + c * key_b
    value_c = (1 - c) * value_a + c * value_b
    return attend(q, keys(key_c, k), keys(value_c, v), scale)


_UNLABELLED = (
    "AID with a separate negative branch (Flux's true CFG) needs the pipeline to label its "
    "denoiser calls (transformer.cache_context), which this diffusers' pipeline does not; "
    "upgrade diffusers or render with true_cfg_scale 1"
)


@dataclass
class AIDControl:
    """Shared, mutable state of the AID processors of one denoiser during one batch render.

    coefs : Tensor (k,)   c of the middle rows; the conditional rows are [A, B, m_1 .. m_k]
    warmup_calls : int    AID acts on the conditional calls of steps 0 .. warmup_calls - 1 (the
        official ``i < int(steps * warmup_ratio)``), then every layer attends plainly
    calls : int           conditional denoiser calls seen so far, one per step (advanced by a
        forward pre-hook)
    text_tokens : int     text tokens ahead of the image tokens in Flux's single-stream blocks
    pairs : Tensor (k, 2)  each middle row's endpoint rows among the ``leading`` rows (several
        segments in one batch: [ends..., m_1 .. m_k]); None = every row between rows 0 and 1
    leading : int         conditional rows before the middle rows, attended plainly
    separate_negative : bool   the negative branch is a denoiser call of its own (Flux's true
        CFG: per step the pipeline calls the conditional branch, then the negative one) rather
        than the unconditional half of one batched call; each call must then be labelled
    branch : str or None  the label of the call under way, set by :func:`installed` from the
        pipeline's ``transformer.cache_context("cond" | "uncond")``; None = not labelled
    """

    coefs: Tensor
    warmup_calls: int
    calls: int = 0
    current: int = field(default=-1)
    text_tokens: int | None = None
    pairs: Tensor | None = None
    leading: int = 2
    separate_negative: bool = False
    branch: str | None = None

    @property
    def rows(self) -> int:
        """Conditional rows per denoiser call: the leading endpoint rows and the middle rows."""
        return self.leading + len(self.coefs)

    def endpoints(self, first: int) -> tuple[Tensor, Tensor]:
        """Batch rows of each middle row's endpoints A and B: (1,) each for [A, B, m_1 ..], or
        (k,) each with ``pairs``."""
        if self.pairs is None:
            return torch.tensor([first]), torch.tensor([first + 1])
        return first + self.pairs[:, 0], first + self.pairs[:, 1]

    @property
    def active(self) -> bool:
        return 0 <= self.current < self.warmup_calls

    def advance(self, *_: Any) -> None:
        """Forward pre-hook of the denoiser: a new call begins. A conditional call (one per
        step) is counted and may act; a separate negative-branch call ("uncond") attends
        plainly and does not count, so the warmup counts steps."""
        if self.branch == "uncond":
            self.current = -1
            return
        if self.separate_negative and self.branch != "cond":
            raise RuntimeError(_UNLABELLED)
        self.current = self.calls
        self.calls += 1


def _heads(x: Tensor, heads: int) -> Tensor:
    """(N, n, H*d) -> (N, H, n, d)."""
    return x.view(x.shape[0], -1, heads, x.shape[-1] // heads).transpose(1, 2)


class AIDAttnProcessor:
    """A diffusers attention processor applying AID to the conditional middle rows.

    The batch it sees is [uncond rows; cond rows] under classifier-free guidance or [cond rows]
    without; the cond rows are [A, B, m_1 .. m_k] (``control.rows`` of them). While
    ``control.active`` is false (after the warmup, or before any step) it hands the call to
    ``plain``, the processor it replaced, unchanged.
    """

    def __init__(self, control: AIDControl, plain: Any, *, mode: str, fused: bool) -> None:
        if mode not in AID_MODES:
            raise ValueError(
                f"unknown AID mode {mode!r}; valid choices are: {', '.join(AID_MODES)}"
            )
        self.control = control
        self.plain = plain
        self.mode = mode
        self.fused = fused

    def __call__(
        self,
        attn: Any,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        temb: Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> Tensor:
        control = self.control
        if not control.active:
            return self.plain(
                attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs
            )
        if attention_mask is not None:
            raise ValueError("AID does not support attention masks (UNet attention has none)")
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        spatial = hidden_states.ndim == 4
        if spatial:
            batch, channels, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channels, height * width).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        if encoder_hidden_states is None:
            context = hidden_states
        elif attn.norm_cross:
            context = attn.norm_encoder_hidden_states(encoder_hidden_states)
        else:
            context = encoder_hidden_states

        q = _heads(attn.to_q(hidden_states), attn.heads)
        k = _heads(attn.to_k(context), attn.heads)
        v = _heads(attn.to_v(context), attn.heads)
        if getattr(attn, "norm_q", None) is not None:
            q = attn.norm_q(q)
        if getattr(attn, "norm_k", None) is not None:
            k = attn.norm_k(k)
        total = q.shape[0]
        first = _first_conditional(total, control.rows)  # after the unconditional half
        a, b = control.endpoints(first)
        lead = first + control.leading
        plain = attend(q[:lead], k[:lead], v[:lead], attn.scale)
        mixed = aid_attention(
            q[lead:],
            k[lead:],
            v[lead:],
            control.coefs,
            k[a],
            v[a],
            k[b],
            v[b],
            mode=self.mode,
            fused=self.fused,
            scale=attn.scale,
        )
        out = torch.cat([plain, mixed]).transpose(1, 2).reshape(total, -1, q.shape[1] * q.shape[3])
        out = attn.to_out[1](attn.to_out[0](out.to(q.dtype)))
        if spatial:
            out = out.transpose(-1, -2).reshape(batch, channels, height, width)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


class AIDJointAttnProcessor(AIDAttnProcessor):
    """AID on joint (MMDiT) attention over [image tokens; text tokens] (SD3's
    ``JointAttnProcessor2_0`` layout).

    A middle row's joint keys/values are its own with the *image-token* part replaced by the
    endpoint frame's, K*_A = [K_A,img; K_m,txt] (and likewise V, and B); outer and inner then
    follow :func:`aid_attention` with these (inner mixes only the image part, the text parts
    being equal). Fused prepends the row's own joint keys/values, so that at c = 0 with A's
    inputs the keys are [K_A; K_A], duplicates, and attention is plain. The text tokens stay the
    row's own: they come from the path's coupling. Calls without text tokens attend plainly.
    """

    def __call__(
        self,
        attn: Any,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        control = self.control
        if not control.active or encoder_hidden_states is None:
            return self.plain(
                attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs
            )
        if attention_mask is not None:
            raise ValueError("AID does not support attention masks (SD3 attention has none)")
        n_image = hidden_states.shape[1]
        q = _heads(attn.to_q(hidden_states), attn.heads)
        k = _heads(attn.to_k(hidden_states), attn.heads)
        v = _heads(attn.to_v(hidden_states), attn.heads)
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            k = attn.norm_k(k)
        cq = _heads(attn.add_q_proj(encoder_hidden_states), attn.heads)
        ck = _heads(attn.add_k_proj(encoder_hidden_states), attn.heads)
        cv = _heads(attn.add_v_proj(encoder_hidden_states), attn.heads)
        if attn.norm_added_q is not None:
            cq = attn.norm_added_q(cq)
        if attn.norm_added_k is not None:
            ck = attn.norm_added_k(ck)
        q, k, v = (torch.cat(pair, dim=2) for pair in ((q, cq), (k, ck), (v, cv)))
        out = _joint_aid(self, q, k, v, slice(0, n_image), attn.scale)
        out = out.transpose(1, 2).reshape(q.shape[0], -1, q.shape[1] * q.shape[3]).to(q.dtype)
        image, text = out[:, :n_image], out[:, n_image:]
        if not attn.context_pre_only:
            text = attn.to_add_out(text)
        return attn.to_out[1](attn.to_out[0](image)), text


class AIDFluxAttnProcessor(AIDAttnProcessor):
    """AID on Flux's attention (``FluxAttnProcessor`` layout: [text tokens; image tokens], rotary
    position embedding on both). As :class:`AIDJointAttnProcessor`: a middle row's image-token
    keys/values (after the rotary embedding, so at the same positions) are replaced by the end
    frame's, its text tokens stay its own. Dual-stream blocks get the text separately; in the
    single-stream blocks the text length comes from ``control.text_tokens``."""

    def __call__(
        self,
        attn: Any,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        image_rotary_emb: Any = None,
    ) -> Any:
        control = self.control
        if not control.active:
            return self.plain(
                attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb
            )
        from diffusers.models.embeddings import apply_rotary_emb
        from diffusers.models.transformers.transformer_flux import _get_qkv_projections

        if attention_mask is not None:
            raise ValueError("AID does not support attention masks (Flux attention has none)")
        q, k, v, eq, ek, ev = _get_qkv_projections(attn, hidden_states, encoder_hidden_states)
        q, k, v = (x.unflatten(-1, (-1, attn.head_dim)) for x in (q, k, v))
        q, k = attn.norm_q(q), attn.norm_k(k)
        if encoder_hidden_states is not None:
            eq, ek, ev = (x.unflatten(-1, (-1, attn.head_dim)) for x in (eq, ek, ev))
            eq, ek = attn.norm_added_q(eq), attn.norm_added_k(ek)
            q, k, v = (torch.cat(pair, dim=1) for pair in ((eq, q), (ek, k), (ev, v)))
            n_text = encoder_hidden_states.shape[1]
        elif control.text_tokens is None:
            raise ValueError("AID on Flux's single-stream blocks needs control.text_tokens")
        else:
            n_text = control.text_tokens
        if image_rotary_emb is not None:
            q = apply_rotary_emb(q, image_rotary_emb, sequence_dim=1)
            k = apply_rotary_emb(k, image_rotary_emb, sequence_dim=1)
        q, k, v = (x.transpose(1, 2) for x in (q, k, v))  # (N, H, L, d)
        out = _joint_aid(self, q, k, v, slice(n_text, None), attn.head_dim**-0.5)
        out = out.transpose(1, 2).flatten(2, 3).to(q.dtype)
        if encoder_hidden_states is None:
            return out
        text, image = out[:, :n_text], out[:, n_text:]
        image = attn.to_out[1](attn.to_out[0](image.contiguous()))
        return image, attn.to_add_out(text.contiguous())


def _joint_aid(
    processor: AIDAttnProcessor, q: Tensor, k: Tensor, v: Tensor, image: slice, scale: float
) -> Tensor:
    """Joint attention (N, H, L, d) with AID on the conditional middle rows: their ``image``
    tokens' keys/values replaced by the endpoint rows' (the rest their own); endpoint and
    unconditional rows attend plainly."""
    control = processor.control
    total = q.shape[0]
    first = _first_conditional(total, control.rows)
    lead = first + control.leading
    mid = slice(lead, total)
    a, b = control.endpoints(first)

    def endpoint(x: Tensor, rows: Tensor) -> Tensor:
        own = x[mid].clone()
        own[:, :, image] = x[rows][:, :, image]
        return own

    plain = attend(q[:lead], k[:lead], v[:lead], scale)
    mixed = aid_attention(
        q[mid],
        k[mid],
        v[mid],
        control.coefs,
        endpoint(k, a),
        endpoint(v, a),
        endpoint(k, b),
        endpoint(v, b),
        mode=processor.mode,
        fused=processor.fused,
        scale=scale,
    )
    return torch.cat([plain, mixed])


def _first_conditional(total: int, rows: int) -> int:
    """Index of the first conditional row in a batch of ``total``: 0 without guidance, ``rows``
    after the unconditional half under it."""
    first = total - rows
    if first not in (0, total // 2):
        raise ValueError(
            f"AID expected {rows} conditional rows (or twice that under guidance), got a batch "
            f"of {total}"
        )
    return first


def _is_joint(module: Any) -> bool:
    return getattr(module, "added_kv_proj_dim", None) is not None


def _acts_on(module: Any, layers: str) -> bool:
    cross = bool(getattr(module, "is_cross_attention", False))
    return layers == "both" or (layers == "cross") == cross


@contextlib.contextmanager
def installed(
    denoiser: torch.nn.Module, control: AIDControl, *, mode: str, fused: bool, layers: str
) -> Iterator[int]:
    """Install :class:`AIDAttnProcessor` on the denoiser's attention layers of kind ``layers``
    ("both" | "self" | "cross") for the duration of the block; yields how many were installed.

    The processors they replace are kept and put back on exit, and a forward pre-hook counts
    the denoiser's calls for the warmup (``control``); the pipeline's branch labels reach
    ``control.branch`` through :func:`labelled_branches`."""
    from diffusers.models.attention_processor import Attention

    if layers not in AID_LAYERS:
        raise ValueError(
            f"unknown AID layers {layers!r}; valid choices are: {', '.join(AID_LAYERS)}"
        )
    from diffusers.models.transformers.transformer_flux import FluxAttention

    replaced: list[tuple[Any, Any]] = []
    for module in denoiser.modules():
        if isinstance(module, FluxAttention):
            if layers != "both":
                raise SettingError(
                    "{aid_layers} {layers} needs separate self- and cross-attention (SD 1.x/2.x, "
                    "SDXL); Flux's joint attention takes {aid_layers} both",
                    layers=layers,
                )
            kind: type[AIDAttnProcessor] = AIDFluxAttnProcessor
        elif not isinstance(module, Attention):
            continue
        elif _is_joint(module):  # one joint attention per block: image and text tokens together
            if layers != "both":
                raise SettingError(
                    "{aid_layers} {layers} needs separate self- and cross-attention (SD 1.x/2.x, "
                    "SDXL); joint attention (SD3) takes {aid_layers} both",
                    layers=layers,
                )
            kind = AIDJointAttnProcessor
        elif _acts_on(module, layers):
            kind = AIDAttnProcessor
        else:
            continue
        plain = module.get_processor()
        replaced.append((module, plain))
        module.set_processor(kind(control, plain, mode=mode, fused=fused))
    hook = denoiser.register_forward_pre_hook(control.advance)
    try:
        with labelled_branches(denoiser, control):
            yield len(replaced)
    finally:
        hook.remove()
        for module, plain in replaced:
            module.set_processor(plain)


@contextlib.contextmanager
def labelled_branches(denoiser: torch.nn.Module, control: AIDControl) -> Iterator[None]:
    """Pass the pipeline's branch labels to ``control.branch`` for the duration of the block.

    diffusers' pipelines wrap each denoiser call of a branch run on its own in
    ``denoiser.cache_context(name)`` (FluxPipeline: "cond", then "uncond" under true CFG); the
    method is wrapped on this instance so that ``control.branch`` holds the name while the call
    runs (None outside), and put back on exit, also when the block raises (a failed or cancelled
    render). A denoiser without the method is left alone, unless ``control.separate_negative``
    needs the labels (RuntimeError)."""
    own = getattr(denoiser, "cache_context", None)
    if own is None:
        if control.separate_negative:  # before anything renders, not at the first call
            raise RuntimeError(_UNLABELLED)
        yield
        return
    patched = vars(denoiser).get("cache_context")  # an instance's own (e.g. an enclosing block's)

    @contextlib.contextmanager
    def labelled(name: str, *args: Any, **kwargs: Any) -> Iterator[None]:
        control.branch = name
        try:
            with own(name, *args, **kwargs):
                yield
        finally:
            control.branch = None

    denoiser.cache_context = labelled
    try:
        yield
    finally:
        if patched is None:
            del denoiser.cache_context
        else:
            denoiser.cache_context = patched
