"""Input validation shared by the geometry modules.

Every check raises :class:`ValueError` with a message that says what was wrong and what is
accepted, following diffusers' rule: concise errors over silent correction. Torch is imported
inside the tensor checks only, so the command line's size checks run before it loads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import Tensor


CLI_NAMES: Mapping[str, str] = {
    "prompt_a": "PROMPT_A",
    "prompt_b": "PROMPT_B",
    # a travel keyframe's own settings: --methods on the command line, keys of a schedule file
    "keyframe_method": "--methods or a schedule keyframe's method",
    "keyframe_guide_prompt": "a schedule keyframe's guide_prompt",
    "keyframe_image": "a schedule keyframe's image",
}
"""How the command line names a setting where that is not its flag ``--<key with dashes>``."""


def cli_name(key: str) -> str:
    """The command line's name of the setting ``key`` (``lora_rank`` -> ``--lora-rank``)."""
    return CLI_NAMES.get(key, "--" + key.replace("_", "-"))


class SettingError(ValueError):
    """A ValueError about settings, written once for every front end.

    ``template`` names each setting it is about as ``{key}`` (a
    :class:`~whichway.morph.MorphSettings` field: ``{lora_rank}``, ``{image_a}``) and takes the
    rest of its fields from ``values``. ``str(exc)`` names the settings as the command line
    does (:func:`cli_name`: ``--lora-rank``); :meth:`worded` as another front end does (the
    studio's field labels: ``LoRA rank``).
    """

    def __init__(self, template: str, **values: Any) -> None:
        self.template = template
        self.values = values
        super().__init__(self.worded({}))

    def worded(self, names: Mapping[str, str]) -> str:
        """The message, each setting called ``names[key]`` (its command-line name when
        ``names`` lacks it)."""
        values = self.values

        class Fields(dict):
            def __missing__(self, key: str) -> Any:
                return values[key] if key in values else names.get(key) or cli_name(key)

        return self.template.format_map(Fields())

    def __reduce__(self) -> tuple[Any, ...]:  # pickles with its template, not its text
        import functools

        return functools.partial(SettingError, self.template, **self.values), ()


def check_batch_size(value: object, name: str = "batch size") -> None:
    """Raise unless ``value`` is a positive integer, ``"auto"`` (what fits in memory) or None
    (the caller's default)."""
    if value is None or value == "auto":
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer or 'auto', got {value!r}")


def as_tensor(name: str, value: object) -> Tensor:
    """Return ``value`` as a floating tensor, or raise a ValueError naming ``name``."""
    import torch

    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise ValueError(
            f"{name} must have a floating dtype (float16/bfloat16/float32/float64), got {value.dtype}"
        )
    return value


def check_finite(name: str, value: Tensor) -> None:
    """Raise if ``value`` holds NaN or infinity."""
    import torch

    if not torch.isfinite(value).all():
        bad = int((~torch.isfinite(value)).sum())
        raise ValueError(
            f"{name} contains {bad} non-finite value(s) (NaN or inf); clean the input first"
        )


def check_same(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    """Raise unless ``a`` and ``b`` share shape, dtype and device."""
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.dtype != b.dtype:
        raise ValueError(
            f"{name_a} and {name_b} must have the same dtype, got {a.dtype} and {b.dtype}; "
            f"cast one with .to({a.dtype})"
        )
    if a.device != b.device:
        raise ValueError(
            f"{name_a} and {name_b} must be on the same device, got {a.device} and {b.device}"
        )


def check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    """Raise unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; valid choices are: {', '.join(choices)}")
    return value


def as_times(
    t: float | Sequence[float] | Tensor, *, dtype: torch.dtype, device: torch.device
) -> tuple[Tensor, bool]:
    """Normalise interpolation times.

    Returns ``(times, scalar)``: ``times`` is a 1-D tensor (T,) of values in [0, 1] on the given
    dtype/device and ``scalar`` says whether a single float was given (so the caller drops the
    leading T axis).
    """
    import torch

    scalar = isinstance(t, (int, float)) or (isinstance(t, torch.Tensor) and t.ndim == 0)
    times = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
    if times.numel() == 0:
        raise ValueError("t is empty; give a float in [0, 1] or a 1-D tensor of them")
    if isinstance(t, torch.Tensor) and t.ndim > 1:
        raise ValueError(f"t must be a float or a 1-D tensor (T,), got shape {tuple(t.shape)}")
    if not torch.isfinite(times).all() or (times < 0).any() or (times > 1).any():
        bad = times[~((times >= 0) & (times <= 1))]
        raise ValueError(f"t must lie in [0, 1], got {bad.tolist()[:5]}")
    return times.to(device=device, dtype=dtype), scalar
