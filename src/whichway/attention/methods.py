"""Names and settings of the attention-interpolation methods, torch-free (the CLI checks them
before any model loads)."""

from __future__ import annotations

from dataclasses import dataclass

from whichway._checks import SettingError

AID_MODES = ("outer", "inner")
"""How the endpoint frames' attention is combined: after (outer) or before (inner) softmax."""

AID_LAYERS = ("both", "self", "cross")
"""Which attention layers AID acts on (the official pipeline: both)."""

METHODS = ("plain", "aid-outer", "aid-inner", "paid")
"""Interpolation methods: ``plain`` (conditioning/latent paths only) or attention
interpolation (AID outer/inner; PAID = AID with a guide prompt for the middle frames)."""

ATTENTION_FAMILIES = ("sd", "sdxl", "sd3", "flux")
"""Families whose denoiser AID is built for (UNet attention; SD3's and Flux's joint attention)."""

JOINT_FAMILIES = ("sd3", "flux")
"""Families whose denoiser has one joint attention per block (``--aid-layers both`` only)."""


BO_EVALUATIONS = 24
"""Sequences the Bayesian Beta-prior search (``--spacing beta-bo``) scores by default: the
official 3 × 3 grid, then up to 15 Gaussian-process steps."""


ATTENTION_KEYS = ("method", "warmup_ratio", "aid_layers", "fused", "guide_prompt")
"""Settings of an attention method, as morph records them."""


def check_warmup_ratio(value: float) -> float:
    """The fraction of denoising steps AID acts on: a number in [0, 1]."""
    if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        from whichway._checks import SettingError

        raise SettingError("{warmup_ratio} must lie in [0, 1], got {value!r}", value=value)
    return float(value)


@dataclass(frozen=True)
class AIDSettings:
    """How AID acts: ``mode`` outer | inner, ``fused`` (the row's own keys/values beside the
    endpoint's), ``warmup_ratio`` (the first int(steps * ratio) steps), ``layers`` both | self |
    cross. Defaults are the official pipeline's (fused outer on every layer, ratio 0.5)."""

    mode: str = "outer"
    fused: bool = True
    warmup_ratio: float = 0.5
    layers: str = "both"

    def __post_init__(self) -> None:
        from whichway._checks import check_choice

        check_choice("AID mode", self.mode, AID_MODES)
        check_choice("AID layers", self.layers, AID_LAYERS)
        check_warmup_ratio(self.warmup_ratio)

    def warmup_calls(self, steps: int) -> int:
        """Steps AID acts on (their conditional denoiser calls): int(steps * warmup_ratio), as
        the official pipeline."""
        return int(steps * self.warmup_ratio)


def aid_fields(
    warmup_ratio: float | None = None, aid_layers: str | None = None, fused: bool | None = None
) -> dict[str, float | str | bool]:
    """How AID acts as :class:`whichway.morph.MorphSettings` names it, ``{"warmup_ratio": r,
    "aid_layers": layers, "fused": f}``, the official value (:class:`AIDSettings`' default:
    0.5, ``both``, True) for each one that is None; the values are not checked here."""
    official = AIDSettings()
    return {
        "warmup_ratio": official.warmup_ratio if warmup_ratio is None else warmup_ratio,
        "aid_layers": official.layers if aid_layers is None else aid_layers,
        "fused": official.fused if fused is None else fused,
    }


def settings_for(method: str, *, fused: bool, warmup_ratio: float, layers: str) -> AIDSettings:
    """The :class:`AIDSettings` of an attention method (``aid-outer`` | ``aid-inner`` | ``paid``;
    PAID interpolates outside softmax like the official PAID demos)."""
    mode = {"aid-outer": "outer", "aid-inner": "inner", "paid": "outer"}.get(method)
    if mode is None:
        raise ValueError(f"{method!r} is not an attention method; choose from {METHODS[1:]}")
    return AIDSettings(mode=mode, fused=fused, warmup_ratio=warmup_ratio, layers=layers)


def check_method(method: str, warmup_ratio: float, layers: str, guide_prompt: str | None) -> None:
    """One-line ValueErrors for an attention-method request that cannot run: an unknown method
    or layer set, a warmup ratio outside [0, 1], a guide prompt without ``paid`` or ``paid``
    without one."""
    from whichway._checks import check_choice

    check_choice("method", method, (*METHODS, *IMAGE_METHODS))
    check_choice("AID layers", layers, AID_LAYERS)
    check_warmup_ratio(warmup_ratio)
    if guide_prompt is not None and method != "paid":
        raise SettingError(
            "{guide_prompt} is PAID's prompt for the middle frames; use {method} paid (got "
            "{method} {m})",
            m=method,
        )
    if method == "paid" and not guide_prompt:
        raise SettingError(
            "the paid method needs a guide prompt (the middle frames' prompt): give {guide_prompt}"
        )


def _subject(listed: bool, segment: str | None) -> str:
    """Who asked for method ``{m}``, in a refusal's template: a row of the ``methods`` list
    (``listed``), a travel ``segment``'s own keyframe method, or the ``method`` setting."""
    if segment is not None:
        return "{segment} uses {m} ({keyframe_method}), which"
    return "{m} in {methods}" if listed else "{method} {m}"


def check_family(
    method: str,
    family: str | None,
    layers: str = "both",
    *,
    listed: bool = False,
    segment: str | None = None,
) -> None:
    """An attention method needs a denoiser it is built for (:data:`ATTENTION_FAMILIES`);
    joint attention (:data:`JOINT_FAMILIES`) has no separate self/cross layers. ``listed``: the
    method is one of a list of rows (the ``methods`` setting: compare's ``--methods``, a study's
    ``study.methods``), so the error says to remove it from that list instead of choosing
    ``plain``; ``segment``: the method is that travel segment's own (its keyframe's method),
    so the error names the segment and the keyframe method setting."""
    if method == "plain" or family is None:
        return
    if method in IMAGE_METHODS:
        check_image_method(method, True, family, listed=listed, segment=segment)
        return
    if family not in ATTENTION_FAMILIES:
        raise SettingError(
            _subject(listed, segment)
            + " is built for {families} models, not {family}; "
            + _remedy(listed, segment, "use {method} plain")
            + " with this model",
            m=method,
            families=", ".join(ATTENTION_FAMILIES),
            family=family,
            segment=segment,
        )
    if family in JOINT_FAMILIES and layers != "both":
        raise SettingError(
            "{aid_layers} {layers} needs separate self- and cross-attention (sd, sdxl); {family} "
            "has one joint attention per block: use {aid_layers} both",
            layers=layers,
            family=family,
        )


IMAGE_METHODS = ("diffmorpher",)
"""Methods that morph between two *images* (``--image-a``/``--image-b``), never prompts only."""

DIFFMORPHER_FAMILIES = ("sd", "sdxl")
"""Families DiffMorpher is built for: UNets with up blocks (the official code: SD 1.x/2.x;
SDXL the same with its added conditions)."""

DIFFMORPHER_KEYS = ("lora_rank", "lora_steps", "lora_lr", "attn_lambda")
"""Settings of DiffMorpher, as morph records them."""


@dataclass(frozen=True)
class DiffMorpherSettings:
    """DiffMorpher (Zhang et al., CVPR 2024; official code ``Kevin-thu/DiffMorpher``), with the
    official defaults: a rank-16 LoRA fitted per image for 200 AdamW steps at learning rate
    2e-4, and the up blocks' self-attention keys/values mixed from the endpoint frames' for
    the denoiser calls i < λ·steps (``lamb`` 0.6)."""

    lora_rank: int = 16
    lora_steps: int = 200
    lora_lr: float = 2e-4
    attn_lambda: float = 0.6

    def __post_init__(self) -> None:
        check_diffmorpher(self.lora_rank, self.lora_steps, self.lora_lr, self.attn_lambda)

    def warmup_calls(self, steps: int) -> int:
        """Denoiser calls the K/V mix acts on: those with index i < λ·steps (the official
        ``self.id < 50 * self.lamd`` at 50 steps)."""
        return sum(1 for i in range(steps) if i < steps * self.attn_lambda)


MAX_LORA_RANK = 1024
"""Largest ``--lora-rank`` (above every SD/SDXL attention width, where a LoRA is no longer low-rank)."""

MAX_LORA_STEPS = 100_000
"""Largest ``--lora-steps`` (500 times the official 200): bounded work before anything loads."""

LORA_STEP_ROWS = 2.2
"""One LoRA fit step (forward, backward and AdamW update at batch 1) in denoiser rows (one
denoiser forward of one row), for the run-time estimate and a study's time budget: the frozen
UNet's backward needs the input gradients only, about one more forward. Measured by
``benchmarks/bench_diffmorpher.py``: 2.0-2.5 on the full-size SD 1.5 UNet (64 and 128 px, CPU),
2.7-3.4 on the tiny test model (docs/attention.md, DiffMorpher)."""


def check_diffmorpher(rank: object, steps: object, lr: object, attn_lambda: object) -> None:
    """One-line ValueErrors for DiffMorpher settings outside their range: ``--lora-rank`` and
    ``--lora-steps`` whole numbers >= 1 (steps may be 0: no fitting, the LoRAs stay zero) up to
    :data:`MAX_LORA_RANK` / :data:`MAX_LORA_STEPS`,
    ``--lora-lr`` in (0, 1], ``--attn-lambda`` in [0, 1]."""
    import math

    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= MAX_LORA_RANK:
        raise SettingError(
            "{lora_rank} must be a whole number in [1, {top}] (official 16), got {got!r}",
            top=MAX_LORA_RANK,
            got=rank,
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or not 0 <= steps <= MAX_LORA_STEPS:
        raise SettingError(
            "{lora_steps} must be a whole number in [0, {top}] (official 200), got {got!r}",
            top=MAX_LORA_STEPS,
            got=steps,
        )
    if not isinstance(lr, (int, float)) or not math.isfinite(lr) or not 0 < lr <= 1:
        raise SettingError("{lora_lr} must lie in (0, 1] (official 2e-4), got {got!r}", got=lr)
    if not isinstance(attn_lambda, (int, float)) or not 0.0 <= float(attn_lambda) <= 1.0:
        raise SettingError(
            "{attn_lambda} must lie in [0, 1] (official 0.6), got {got!r}", got=attn_lambda
        )


def _remedy(listed: bool, segment: str | None, otherwise: str) -> str:
    """What to do instead, in a refusal's template (see :func:`_subject`)."""
    if segment is not None:
        return "give that segment another method"
    return "remove it from {methods}" if listed else otherwise


def check_image_method(
    method: str,
    has_images: bool,
    family: str | None = None,
    *,
    listed: bool = False,
    segment: str | None = None,
) -> None:
    """A method of :data:`IMAGE_METHODS` needs ``--image-a``/``--image-b`` and a family of
    :data:`DIFFMORPHER_FAMILIES` (None: not known yet); ``listed`` and ``segment`` as in
    :func:`check_family`."""
    if method not in IMAGE_METHODS:
        return
    if not has_images:
        raise SettingError(
            ("{m} in {methods}" if listed else "{method} {m}")
            + " morphs between two images: give {image_a} and {image_b} (and their prompts as "
            "{prompt_a}/{prompt_b})",
            m=method,
        )
    if family is not None and family not in DIFFMORPHER_FAMILIES:
        raise SettingError(
            _subject(listed, segment)
            + " is built for {families} models (UNet up blocks), not {family}; "
            + _remedy(listed, segment, "use {method} plain or aid-outer/aid-inner")
            + " with this model",
            m=method,
            families=", ".join(DIFFMORPHER_FAMILIES),
            family=family,
            segment=segment,
        )
