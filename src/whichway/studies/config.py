"""Study configuration: TOML files of frozen dataclasses, with ``--set section.key=value`` overrides.

A config is a tree of frozen dataclasses, one per TOML table. Loading checks every key: an unknown
key (a typo) is a :class:`ValueError` that lists the valid keys of its table, and a value of the
wrong type is an error naming the expected type. TOML has no null: an empty string means "not
set" (e.g. ``device = ""`` picks the device automatically).

Example (prompt study)::

    [model]
    id = "stable-diffusion-v1-5/stable-diffusion-v1-5"

    [pairs]
    source = "cxc"
    sts = ["data/cxc/sts_val.csv", "data/cxc/sts_test.csv"]
    coco = ["data/coco/captions_val2014.json"]
    n_per_group = 1000

    [render]
    steps = 50
    t = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

C = TypeVar("C")

DEFAULT_T: tuple[float, ...] = tuple(round(0.1 * k, 10) for k in range(11))
EXECUTORS: tuple[str, ...] = ("local", "ray")
PAIR_SOURCES: tuple[str, ...] = ("cxc", "file")
COUPLINGS: tuple[str, ...] = ("ot", "clip", "random")
LPIPS_NETS: tuple[str, ...] = ("alex", "vgg")
FID_FEATURES: tuple[str, ...] = ("inception", "random")
INTERPOLATION_METHODS: tuple[str, ...] = ("lerp", "slerp", "nao", "cog")
CENTROID_METHODS: tuple[str, ...] = ("euclidean", "standardized", "mode_norm", "nao", "cog")


def _choice(name: str, value: str, choices: Sequence[str]) -> None:
    # torch-free twin of whichway._checks.check_choice (configs load before torch is imported)
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; valid choices are: {', '.join(choices)}")


def _positive(name: str, value: float, minimum: float = 1) -> None:
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


# --- sections shared by both studies -----------------------------------------------------------
@dataclass(frozen=True)
class ModelConfig:
    """Which diffusers pipeline to load (hub id or local directory), where, and how it runs (the
    runtime keys mirror the CLI's --offload, --vae-tiling, ..., see
    :class:`whichway.models.runtime.RuntimeOptions`)."""

    id: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    device: str = ""  # "" = cuda when available, else cpu
    dtype: str = ""  # "" = float32 on CPU, float16 on GPU
    variant: str = ""
    offload: str = "none"  # none | model | sequential (needs a GPU)
    vae_tiling: bool = False
    vae_slicing: bool = False
    vae: str = ""  # "" = the model's own VAE
    lora: tuple[str, ...] = ()  # "PATH_OR_ID[:SCALE]" each
    sampler: str = ""  # "" = the model's own scheduler
    compile: bool = False
    attention: str = ""  # "" = the model's default attention

    def __post_init__(self) -> None:
        self.runtime_options()  # unknown offload mode / sampler, bad LoRA scale: error at load

    def runtime_options(self) -> Any:
        """The :class:`~whichway.models.runtime.RuntimeOptions` of this section (None when every
        runtime key is at its default)."""
        from whichway.models.runtime import RuntimeOptions

        options = RuntimeOptions(
            offload=self.offload,
            vae_tiling=self.vae_tiling,
            vae_slicing=self.vae_slicing,
            vae=self.vae or None,
            loras=tuple(self.lora),
            sampler=self.sampler or None,
            compile=self.compile,
            attention=self.attention or None,
        )
        return None if options.is_default else options


@dataclass(frozen=True)
class RunConfig:
    """How units are executed."""

    executor: str = "local"  # local | ray
    address: str = ""  # Ray cluster address; "" starts a local Ray
    workers: int = 0  # Ray actors; 0 = one per GPU, or 1 on a CPU-only machine
    cpus_per_worker: float = 1.0
    progress: bool = True
    max_hours: float = 0.0  # time budget: refuse / stop when the units left need more; 0 = none

    def __post_init__(self) -> None:
        _choice("run.executor", self.executor, EXECUTORS)
        _positive("run.workers", self.workers, 0)
        _positive("run.max_hours", self.max_hours, 0)


@dataclass(frozen=True)
class MetricsConfig:
    """Path metrics (LPIPS) and image-set metrics (FID, classifier)."""

    lpips_net: str = "alex"  # alex | vgg
    pretrained: bool = True  # False: random backbones (tests, offline smoke runs)
    device: str = ""  # "" = the model's device
    fid_dims: tuple[int, ...] = (64, 192, 768, 2048)
    classifier: str = "maxvit_tiny_tf_224.in1k"  # timm ImageNet-1k classifier; "" = no accuracy
    fid_features: str = (
        "inception"  # inception | random (a seeded random projection, smoke tests only)
    )
    batch_size: int = 16

    def __post_init__(self) -> None:
        _choice("metrics.lpips_net", self.lpips_net, LPIPS_NETS)
        _choice("metrics.fid_features", self.fid_features, FID_FEATURES)
        for d in self.fid_dims:
            _choice("metrics.fid_dims entry", str(d), ("64", "192", "768", "2048"))


# --- prompt study ------------------------------------------------------------------------------
@dataclass(frozen=True)
class PairsConfig:
    """Where prompt pairs come from and how they are sampled."""

    source: str = "cxc"  # cxc | file
    sts: tuple[str, ...] = ()  # Crisscrossed Captions sts_*.csv files
    coco: tuple[str, ...] = ()  # COCO captions JSON files resolving the CxC ids
    file: str = ""  # CSV / JSONL / Parquet with prompt_a, prompt_b[, similarity]
    n_per_group: int = 1000
    group_width: float = 0.5
    max_similarity: float = 5.0
    stratify: bool = True

    def __post_init__(self) -> None:
        _choice("pairs.source", self.source, PAIR_SOURCES)
        _positive("pairs.n_per_group", self.n_per_group)


@dataclass(frozen=True)
class PromptRenderConfig:
    steps: int = 50
    guidance: float = 7.5
    height: int = 0  # 0 = the model's default size
    width: int = 0
    t: tuple[float, ...] = DEFAULT_T
    batch_size: int = 4
    negative_prompt: str = ""
    shared_endpoints: bool = (
        True  # render t=0/t=1 once per pair (needs a token-order-invariant model)
    )

    def __post_init__(self) -> None:
        _positive("render.steps", self.steps)
        _positive("render.batch_size", self.batch_size)
        ts = list(self.t)
        if (
            len(ts) < 2
            or ts != sorted(ts)
            or ts[0] != 0.0
            or ts[-1] != 1.0
            or len(set(ts)) != len(ts)
        ):
            raise ValueError(
                f"render.t must be increasing from 0.0 to 1.0 with at least 2 values, got {ts}"
            )


STUDY_METHODS: tuple[str, ...] = ("aid-outer", "aid-inner", "paid", "diffmorpher")
"""Attention methods a prompt study can add, each rendered on the OT text path with the pair's
seed: AID (official defaults), PAID (AID whose middle frames follow a guide prompt per pair:
``study.guide_prompt`` or a ``guide`` column of the pairs file) and DiffMorpher (between the
pair's own end frames, settings in ``[diffmorpher]``)."""

GUIDE_FIELDS: tuple[str, ...] = ("a", "b")
"""Placeholders of ``study.guide_prompt``: the pair's prompt A and prompt B."""


def check_guide_template(template: str) -> None:
    """``study.guide_prompt`` may name only ``{a}`` and ``{b}`` (literal braces doubled)."""
    import string

    try:
        names = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise ValueError(
            f"study.guide_prompt {template!r} is not a valid template ({exc}); write {{a}} and "
            "{b} for the pair's prompts and double a literal brace ({{ or }})"
        ) from None
    bad = [n for n in names if n not in GUIDE_FIELDS]
    if bad:
        raise ValueError(
            f"study.guide_prompt {template!r} names {', '.join(repr('{' + n + '}') for n in bad)}; "
            "only {a} (prompt A) and {b} (prompt B) are filled in (double a literal brace: {{ }})"
        )


@dataclass(frozen=True)
class PromptStudySettings:
    couplings: tuple[str, ...] = ("ot", "clip", "random")
    methods: tuple[str, ...] = ()  # attention methods rendered on the OT path beside them
    # PAID's guide per pair, e.g. "{a} and {b}"; "" = the pairs file's guide column
    guide_prompt: str = ""
    seed: int = 0
    save_frames: bool = False  # every frame of every path, as PNG
    save_strips: bool = False  # a contact strip per (pair, coupling)
    example_pairs: int = 3  # strips kept for this many pairs (the report's Figure 2)

    def __post_init__(self) -> None:
        if not self.couplings:
            raise ValueError(f"study.couplings is empty; choose from {', '.join(COUPLINGS)}")
        for c in self.couplings:
            _choice("study.couplings entry", c, COUPLINGS)
        for m in self.methods:
            _choice("study.methods entry", m, STUDY_METHODS)
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"study.methods lists a method twice: {list(self.methods)}")
        check_guide_template(self.guide_prompt)
        if self.guide_prompt and "paid" not in self.methods:
            raise ValueError(
                'study.guide_prompt is PAID\'s guide prompt; add "paid" to study.methods or '
                "leave it empty"
            )


@dataclass(frozen=True)
class DiffMorpherStudyConfig:
    """DiffMorpher's settings in a prompt study (``study.methods`` with ``diffmorpher``), the
    official defaults: a rank-16 LoRA per end image, 200 AdamW steps at 2e-4, the up-block
    K/V mix for the first λ = 0.6 of the steps, guidance 1 (the official ``guidance_scale``;
    the images are inverted without guidance, as the official DDIM inversion)."""

    lora_rank: int = 16
    lora_steps: int = 200
    lora_lr: float = 2e-4
    attn_lambda: float = 0.6
    guidance: float = 1.0

    def __post_init__(self) -> None:
        from whichway._checks import SettingError
        from whichway.attention.methods import DIFFMORPHER_KEYS, check_diffmorpher

        try:
            check_diffmorpher(self.lora_rank, self.lora_steps, self.lora_lr, self.attn_lambda)
        except SettingError as exc:  # worded with this section's keys, not the CLI's flags
            keys = {k: f"diffmorpher.{k}" for k in DIFFMORPHER_KEYS}
            raise ValueError(exc.worded(keys)) from None
        _positive("diffmorpher.guidance", self.guidance, 0)

    def settings(self) -> Any:
        """The :class:`whichway.attention.methods.DiffMorpherSettings` of this section."""
        from whichway.attention.methods import DiffMorpherSettings

        return DiffMorpherSettings(self.lora_rank, self.lora_steps, self.lora_lr, self.attn_lambda)


@dataclass(frozen=True)
class PromptStudyConfig:
    """Paper A's prompt-pair study (DESIGN.md section 1.1)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    pairs: PairsConfig = field(default_factory=PairsConfig)
    render: PromptRenderConfig = field(default_factory=PromptRenderConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    study: PromptStudySettings = field(default_factory=PromptStudySettings)
    diffmorpher: DiffMorpherStudyConfig = field(default_factory=DiffMorpherStudyConfig)
    run: RunConfig = field(default_factory=RunConfig)


def check_prompt_methods(config: PromptStudyConfig) -> None:
    """One-line ValueErrors for ``study.methods`` entries a config cannot run, before any data
    or model is loaded: ``paid`` with no guide source (``study.guide_prompt`` empty and pairs
    from CxC, which have no guide column; a pairs file's guides are checked when it is read)
    and a method on a local model folder of a family it is not built for (``diffmorpher``: other
    than SD / SDXL)."""
    methods = config.study.methods
    if "paid" in methods and not config.study.guide_prompt and config.pairs.source == "cxc":
        raise ValueError(
            "study.methods has paid, which needs a guide prompt per pair: set study.guide_prompt "
            '(e.g. "{a} and {b}") or use pairs.source = "file" with a guide column'
        )
    from whichway.models.samplers import local_family

    check_method_families(methods, local_family(config.model.id))


def check_method_families(methods: Sequence[str], family: str | None) -> None:
    """Every entry of ``study.methods`` needs a model family it is built for (DiffMorpher: SD /
    SDXL; None: not known yet): the shared check, worded with the config's key."""
    from whichway._checks import SettingError
    from whichway.attention.methods import check_family

    for m in methods:
        try:
            check_family(m, family, listed=True)
        except SettingError as exc:
            raise ValueError(exc.worded({"methods": "study.methods"})) from None


# --- latent study ------------------------------------------------------------------------------
@dataclass(frozen=True)
class DataConfig:
    """Image folders: ``root/<class name>/*.png|jpg``; the class name (underscores as spaces)
    fills ``prompt_template``."""

    root: str = ""
    classes: tuple[str, ...] = ()  # () = every sub-folder
    images_per_class: int = 50
    prompt_template: str = "{name}"
    extensions: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@dataclass(frozen=True)
class InversionConfig:
    steps: int = 400
    guidance: float = 1.0


@dataclass(frozen=True)
class LatentRenderConfig:
    steps: int = 400  # the inversion's steps, so an inverted latent reconstructs its image
    guidance: float = 1.0
    height: int = 0
    width: int = 0
    batch_size: int = 4


@dataclass(frozen=True)
class InterpolationConfig:
    methods: tuple[str, ...] = ("lerp", "slerp", "nao", "cog")
    pairs_per_class: int = 25
    interior: int = 3  # interior points per path
    nao_points: int = 11  # NAO path points, `interior` of them picked
    nao_max_iter: int = 10_000

    def __post_init__(self) -> None:
        for m in self.methods:
            _choice("interpolation.methods entry", m, INTERPOLATION_METHODS)
        _positive("interpolation.interior", self.interior)
        if self.nao_points < self.interior + 2:
            raise ValueError(
                f"interpolation.nao_points ({self.nao_points}) must be >= interior + 2 "
                f"({self.interior + 2}) so that {self.interior} interior points can be picked"
            )


@dataclass(frozen=True)
class CentroidConfig:
    methods: tuple[str, ...] = ("euclidean", "standardized", "mode_norm", "nao", "cog")
    sizes: tuple[int, ...] = (3, 5, 10, 25)  # images per centroid
    groups: tuple[int, ...] = (10, 10, 4, 1)  # centroids per class for each size
    nao_points: int = 11  # points per NAO path from each latent to the centroid
    nao_max_iter: int = 10_000

    def __post_init__(self) -> None:
        for m in self.methods:
            _choice("centroids.methods entry", m, CENTROID_METHODS)
        if len(self.sizes) != len(self.groups):
            raise ValueError(
                f"centroids.sizes {list(self.sizes)} and centroids.groups {list(self.groups)} "
                "must have the same length (one count of centroids per size)"
            )
        for k in self.sizes:
            _positive("centroids.sizes entry", k, 2)


@dataclass(frozen=True)
class LatentStudySettings:
    seed: int = 0
    example_rows: int = 2  # example image rows per method in the report


@dataclass(frozen=True)
class LatentStudyConfig:
    """Paper B's latent study (DESIGN.md section 1.2)."""

    model: ModelConfig = field(
        default_factory=lambda: ModelConfig(id="stabilityai/stable-diffusion-2-1-base")
    )
    data: DataConfig = field(default_factory=DataConfig)
    inversion: InversionConfig = field(default_factory=InversionConfig)
    render: LatentRenderConfig = field(default_factory=LatentRenderConfig)
    interpolation: InterpolationConfig = field(default_factory=InterpolationConfig)
    centroids: CentroidConfig = field(default_factory=CentroidConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    study: LatentStudySettings = field(default_factory=LatentStudySettings)
    run: RunConfig = field(default_factory=RunConfig)


STUDY_CONFIGS: dict[str, type] = {"prompts": PromptStudyConfig, "latents": LatentStudyConfig}


# --- building from dicts -----------------------------------------------------------------------
def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check/convert one TOML value to the dataclass field type ``hint``."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise ValueError(f"{where} must be a table of settings, got {value!r}")
        return from_dict(hint, value, where)
    if origin is tuple:
        args = typing.get_args(hint)
        item = args[0] if args else Any
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise ValueError(f"{where} must be a list, got {value!r}")
        return tuple(_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"{where} must be a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[C], data: Mapping[str, Any], where: str = "") -> C:
    """Build the dataclass ``cls`` from a (nested) mapping; unknown keys raise ValueError."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        table = f"[{where}]" if where else "the top level"
        raise ValueError(
            f"unknown key(s) {', '.join(repr(k) for k in unknown)} in {table} of the "
            f"{cls.__name__}; valid keys are: {', '.join(names)}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    """Nested plain dict (tuples as lists) of a config dataclass."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        v = getattr(config, f.name)
        if dataclasses.is_dataclass(v):
            out[f.name] = to_dict(v)
        elif isinstance(v, tuple):
            out[f.name] = list(v)
        else:
            out[f.name] = v
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"render.steps=20"`` -> (["render", "steps"], 20). The value is read as a TOML value
    (numbers, booleans, ``[lists]``, ``"strings"``); anything else is taken as a bare string."""
    if "=" not in text:
        raise ValueError(
            f"override {text!r} must look like section.key=value (e.g. render.steps=20)"
        )
    key, raw = text.split("=", 1)
    key, raw = key.strip(), raw.strip()
    if not key:
        raise ValueError(f"override {text!r} has no key before '='")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Merge ``section.key=value`` overrides into a nested dict (a copy)."""
    import copy

    out = copy.deepcopy(data)
    for text in overrides:
        keys, value = parse_override(text)
        node = out
        for k in keys[:-1]:
            nxt = node.setdefault(k, {})
            if not isinstance(nxt, dict):
                raise ValueError(f"override {text!r}: {k!r} is a setting, not a table")
            node = nxt
        node[keys[-1]] = value
    return out


def load_config(
    study: str, path: str | Path | None = None, overrides: Sequence[str] = ()
) -> PromptStudyConfig | LatentStudyConfig:
    """Read a study's TOML config (or the defaults when ``path`` is None) and apply overrides.

    study : "prompts" | "latents"
    Relative data paths stay as written; the CLI resolves them against the config file's folder.
    """
    if study not in STUDY_CONFIGS:
        raise ValueError(f"unknown study {study!r}; valid studies are: {', '.join(STUDY_CONFIGS)}")
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise ValueError(f"could not read study config {str(path)!r}: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"study config {str(path)!r} is not valid TOML: {exc}") from exc
    data = apply_overrides(data, overrides)
    return from_dict(STUDY_CONFIGS[study], data)


# --- writing TOML ------------------------------------------------------------------------------
def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        import json

        return json.dumps(v, ensure_ascii=False)  # a JSON string is a valid TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise ValueError(f"cannot write {type(v).__name__} {v!r} to TOML")


COMMENTS: dict[str, str] = {
    "run.max_hours": (
        "time budget in hours for the units still to run (or --max-hours); a run projected "
        "over it stops between units, finished units kept; 0 = no limit"
    ),
}
"""Comments :func:`write_config` writes above a setting (``table.key``)."""


def dumps_toml(data: Mapping[str, Any], comments: Mapping[str, str] | None = None) -> str:
    """TOML text of a config dict of scalars, lists and (one level of nested) tables;
    ``comments`` (``"table.key"`` -> text) are written as ``# text`` above their setting."""
    comments = comments or {}
    lines: list[str] = []
    scalars = {k: v for k, v in data.items() if not isinstance(v, Mapping)}
    for k, v in scalars.items():
        lines.append(f"{k} = {_toml_value(v)}")
    for k, v in data.items():
        if isinstance(v, Mapping):
            if lines:
                lines.append("")
            lines.append(f"[{k}]")
            for kk, vv in v.items():
                if isinstance(vv, Mapping):
                    raise ValueError(f"nested table {k}.{kk} is deeper than a config allows")
                if f"{k}.{kk}" in comments:
                    lines.append(f"# {comments[f'{k}.{kk}']}")
                lines.append(f"{kk} = {_toml_value(vv)}")
    return "\n".join(lines) + "\n"


def write_config(config: Any, path: str | Path) -> Path:
    """Write a config dataclass as TOML (round-trips through :func:`load_config`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps_toml(to_dict(config), COMMENTS), encoding="utf-8")
    return path
