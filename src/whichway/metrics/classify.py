"""Class accuracy of generated images under a pretrained timm classifier.

Paper B (COG, "Linear combinations of latents in diffusion models") scores interpolations and
centroids of ImageNet images by whether a MaxViT classifier still assigns them the source class.
:class:`ClassifierAccuracy` streams images through any timm model by name, with the model's own
evaluation preprocessing (resize, centre crop, normalisation from its data config), and counts
top-1 and top-5 hits against integer labels or ImageNet class names:

.. math::
    \\mathrm{acc}@k = \\frac{1}{N}\\sum_{i=1}^{N} \\mathbb 1\\big[y_i \\in \\operatorname{top}_k f(x_i)\\big].
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from whichway._checks import as_tensor, check_finite
from whichway.metrics._weights import fetching

__all__ = [
    "DEFAULT_CLASSIFIER",
    "AccuracyResult",
    "ClassifierAccuracy",
    "imagenet_class_index",
    "topk_correct",
]

#: MaxViT-T (Tu et al. 2022), ImageNet-1k, 224 px: the classifier family paper B uses.
DEFAULT_CLASSIFIER = "maxvit_tiny_tf_224.in1k"


@dataclass(frozen=True)
class AccuracyResult:
    """Top-1 / top-5 accuracy over ``n`` images.

    ``top5`` counts a hit within the ``min(5, C)`` highest logits when the classifier has C < 5
    classes.
    """

    n: int
    correct_top1: int
    correct_top5: int

    @property
    def top1(self) -> float:
        return self.correct_top1 / self.n if self.n else math.nan

    @property
    def top5(self) -> float:
        return self.correct_top5 / self.n if self.n else math.nan

    def to_dict(self) -> dict[str, float | int]:
        return {"n": self.n, "top1": self.top1, "top5": self.top5}


def topk_correct(logits: Tensor, targets: Tensor, ks: Sequence[int] = (1, 5)) -> dict[int, int]:
    """Number of rows whose target is among the k highest logits, for each k.

    Parameters
    ----------
    logits : Tensor (N, C)
    targets : Tensor (N,) integer class indices in [0, C)
    ks : sequence of int
        Each k is clamped to C.

    Returns
    -------
    dict mapping k to the hit count.
    """
    logits = as_tensor("logits", logits)
    if logits.ndim != 2:
        raise ValueError(f"logits must be (N, C), got shape {tuple(logits.shape)}")
    if (
        not isinstance(targets, Tensor)
        or targets.dtype.is_floating_point
        or targets.shape != logits.shape[:1]
    ):
        raise ValueError(
            f"targets must be an integer tensor ({logits.shape[0]},), got {targets!r:.80}"
        )
    n_classes = logits.shape[1]
    if targets.numel() and (targets.min() < 0 or targets.max() >= n_classes):
        raise ValueError(
            f"targets must lie in [0, {n_classes}), got range [{int(targets.min())}, {int(targets.max())}]"
        )
    if any(k < 1 for k in ks):
        raise ValueError(f"every k must be >= 1, got {list(ks)}")
    kmax = min(max(ks), n_classes)
    top = logits.topk(kmax, dim=1).indices  # (N, kmax), sorted by logit
    hits = top == targets.to(top.device).unsqueeze(1)
    return {k: int(hits[:, : min(k, n_classes)].any(dim=1).sum()) for k in ks}


def imagenet_class_index(names: Sequence[str]) -> Tensor:
    """ImageNet-1k class indices of class names, through timm's ImageNet class information.

    A name matches a class by its full description (``"tench, Tinca tinca"``), its WordNet id
    (``"n01440764"``) or any one of its comma-separated synonyms (``"tench"``), case-insensitively,
    with underscores read as spaces. A synonym shared by several classes (``"crane"`` is both a bird
    and a machine) is rejected with the candidates listed.

    Returns
    -------
    Tensor (N,) int64
    """
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    lookup: dict[str, set[int]] = {}
    for index, (wnid, desc) in enumerate(zip(info.label_names(), info.label_descriptions())):
        keys = {wnid.lower(), desc.lower(), *(s.strip().lower() for s in desc.split(","))}
        for key in keys:
            lookup.setdefault(key, set()).add(index)
    out = []
    for name in names:
        if not isinstance(name, str):
            raise ValueError(f"class names must be strings, got {type(name).__name__}")
        key = name.strip().replace("_", " ").lower()
        found = lookup.get(key)
        if not found:
            raise ValueError(
                f"{name!r} is not an ImageNet-1k class name; give a synonym such as 'goldfish', the full "
                "description 'goldfish, Carassius auratus' or a WordNet id such as 'n01443537'"
            )
        if len(found) > 1:
            options = "; ".join(f"{i}: {info.index_to_description(i)!r}" for i in sorted(found))
            raise ValueError(
                f"{name!r} names several ImageNet classes ({options}); give the full description"
            )
        out.append(next(iter(found)))
    return torch.tensor(out, dtype=torch.int64)


class ClassifierAccuracy:
    """Streaming top-1/top-5 accuracy of a timm classifier.

    Parameters
    ----------
    model : str or nn.Module
        A timm model name (default :data:`DEFAULT_CLASSIFIER`, MaxViT-T on ImageNet-1k) or an
        already built timm model.
    pretrained : bool
        Load pretrained weights (downloaded from the Hugging Face hub on first use; when offline a
        :class:`~whichway.metrics.WeightsUnavailableError` says how to provide them). ``False``
        builds the architecture with random weights (tests, timing).
    checkpoint_path : str, optional
        Load the weights from this local file instead (``timm.create_model(checkpoint_path=...)``).
    device : str or torch.device, optional
        Where the classifier runs (CPU by default); images move there batch by batch.
    batch_size : int
        Images per forward pass.
    **model_kwargs
        Passed to ``timm.create_model`` (e.g. ``num_classes``).
    """

    def __init__(
        self,
        model: str | nn.Module = DEFAULT_CLASSIFIER,
        *,
        pretrained: bool = True,
        checkpoint_path: str | os.PathLike[str] | None = None,
        device: str | torch.device | None = None,
        batch_size: int = 32,
        **model_kwargs: object,
    ) -> None:
        import timm
        import timm.data

        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if isinstance(model, str):
            if not timm.is_model(model.split(".")[0]):
                raise ValueError(
                    f"unknown timm model {model!r}; list names with timm.list_models('maxvit*') "
                    f"(default {DEFAULT_CLASSIFIER!r})"
                )
            self.name = model
            if checkpoint_path is not None:
                net = timm.create_model(
                    model,
                    pretrained=False,
                    checkpoint_path=os.fspath(checkpoint_path),
                    **model_kwargs,
                )
            elif pretrained:
                from huggingface_hub import constants

                with fetching(
                    f"pretrained weights of timm model {model!r}",
                    url=f"https://huggingface.co/timm/{model}",
                    how=(
                        "run it once on a connected machine and copy the Hugging Face cache "
                        f"({constants.HF_HUB_CACHE}; set HF_HOME to move it) to this one, or pass "
                        "checkpoint_path= a local weights file"
                    ),
                    testing_hint="use ClassifierAccuracy(..., pretrained=False) for random weights",
                ):
                    net = timm.create_model(model, pretrained=True, **model_kwargs)
            else:
                net = timm.create_model(model, pretrained=False, **model_kwargs)
        elif isinstance(model, nn.Module):
            self.name = getattr(model, "default_cfg", {}).get("architecture", type(model).__name__)
            net = model
        else:
            raise ValueError(
                f"model must be a timm model name or an nn.Module, got {type(model).__name__}"
            )
        self.model = net.eval().requires_grad_(False)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.model.to(self.device)
        self.batch_size = batch_size
        self.data_config = timm.data.resolve_model_data_config(self.model)
        self.num_classes = int(getattr(self.model, "num_classes", 0)) or None
        self.reset()

    def reset(self) -> None:
        """Forget every counted image."""
        self._n = 0
        self._hits = {1: 0, 5: 0}

    # -- preprocessing ---------------------------------------------------------------------------
    def preprocess(self, images: Tensor) -> Tensor:
        """The model's evaluation transform on tensors in [0, 1].

        Resize so the shorter side is ``floor(size / crop_pct)`` (``crop_mode="center"``) or both
        sides are (``"squash"``), with the config's interpolation and antialiasing, clamp to [0, 1]
        as an 8-bit image would be, centre-crop to ``size`` and normalise by the config's mean/std.

        images : Tensor (N, 3, H, W) -> Tensor (N, 3, size_h, size_w) float32
        """
        import torch.nn.functional as F

        cfg = self.data_config
        _, out_h, out_w = cfg["input_size"]
        crop_pct = float(cfg.get("crop_pct", 1.0))
        mode = cfg.get("interpolation", "bilinear")
        mode = mode if mode in ("bilinear", "bicubic") else "bilinear"
        crop_mode = cfg.get("crop_mode", "center")
        x = images.to(self.device, torch.float32)
        h, w = x.shape[-2:]
        scale_h, scale_w = math.floor(out_h / crop_pct), math.floor(out_w / crop_pct)
        if crop_mode == "squash":
            size = (scale_h, scale_w)
        elif crop_mode == "center":
            # torchvision's Resize(int): shorter side -> target, longer side int(target * long / short)
            target = scale_h if out_h == out_w else min(scale_h, scale_w)
            size = (target, int(target * w / h)) if h <= w else (int(target * h / w), target)
        else:
            raise ValueError(
                f"unsupported crop_mode {crop_mode!r} in the model's data config; valid choices are: center, squash"
            )
        if (h, w) != size:
            x = F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=True).clamp(
                0, 1
            )
        # torchvision's CenterCrop offsets: int(round((size - crop) / 2))
        top = round((x.shape[-2] - out_h) / 2.0)
        left = round((x.shape[-1] - out_w) / 2.0)
        if top < 0 or left < 0:
            raise ValueError(f"images of {h}x{w} cannot be cropped to {out_h}x{out_w}")
        x = x[..., top : top + out_h, left : left + out_w]
        mean = torch.tensor(cfg["mean"], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(cfg["std"], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std

    def _check_images(self, images: Tensor) -> Tensor:
        images = as_tensor("images", images)
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[0] == 0:
            raise ValueError(
                f"images must be a non-empty tensor (N, 3, H, W), got shape {tuple(images.shape)}"
            )
        check_finite("images", images)
        lo, hi = float(images.min()), float(images.max())
        if lo < 0 or hi > 1:
            raise ValueError(f"images must be in [0, 1], got values in [{lo:.3g}, {hi:.3g}]")
        return images

    def logits(self, images: Tensor) -> Tensor:
        """Classifier logits of images in [0, 1].

        images : Tensor (N, 3, H, W) -> Tensor (N, C) float32 on :attr:`device`
        """
        images = self._check_images(images)
        out = []
        with torch.inference_mode():
            for start in range(0, images.shape[0], self.batch_size):
                out.append(
                    self.model(self.preprocess(images[start : start + self.batch_size])).float()
                )
        return torch.cat(out)

    def class_indices(self, labels: Tensor | Sequence[int] | Sequence[str]) -> Tensor:
        """Integer targets (N,) from integer labels or ImageNet class names."""
        if isinstance(labels, Tensor):
            if labels.dtype.is_floating_point or labels.ndim != 1:
                raise ValueError(
                    f"labels must be a 1-D integer tensor, got dtype {labels.dtype} shape {tuple(labels.shape)}"
                )
            return labels.to(torch.int64)
        labels = list(labels)
        if all(isinstance(v, str) for v in labels) and labels:
            if self.num_classes != 1000:
                raise ValueError(
                    f"class names need an ImageNet-1k classifier (1000 classes); this one has {self.num_classes}: "
                    "give integer labels"
                )
            return imagenet_class_index(labels)
        if all(isinstance(v, int) and not isinstance(v, bool) for v in labels):
            return torch.tensor(labels, dtype=torch.int64)
        raise ValueError("labels must be all integers or all ImageNet class names (strings)")

    def update(self, images: Tensor, labels: Tensor | Sequence[int] | Sequence[str]) -> None:
        """Classify ``images`` (N, 3, H, W) in [0, 1] and count hits against ``labels`` (N)."""
        targets = self.class_indices(labels)
        images = self._check_images(images)
        if targets.shape[0] != images.shape[0]:
            raise ValueError(
                f"got {images.shape[0]} images but {targets.shape[0]} labels; give one label per image"
            )
        hits = topk_correct(self.logits(images), targets, ks=(1, 5))
        self._n += images.shape[0]
        for k in self._hits:
            self._hits[k] += hits[k]

    def compute(self) -> AccuracyResult:
        """Accuracy over everything counted since the last :meth:`reset`."""
        return AccuracyResult(n=self._n, correct_top1=self._hits[1], correct_top5=self._hits[5])
