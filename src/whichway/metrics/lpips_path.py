"""LPIPS distances along a path of frames, one backbone pass per frame.

LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual
Metric", arXiv 1801.03924) compares two images through the unit-normalised activations
:math:`\\hat y^l \\in \\mathbb{R}^{H_l \\times W_l \\times C_l}` of layers :math:`l` of a backbone
(AlexNet or VGG16), weighted per channel by learned vectors :math:`w_l`:

.. math::
    d(x, x') = \\sum_l \\frac{1}{H_l W_l} \\sum_{h,w}
               \\left\\| w_l \\odot (\\hat y^l_{hw} - \\hat y'^l_{hw}) \\right\\|_2^2 .

The ``lpips`` package evaluates this pairwise, running the backbone on both images of every pair,
so a path of T frames costs 2(T-1) backbone passes. Here each frame's normalised features are
computed once, in batches (channels-last, the layout oneDNN's convolutions prefer), and the
per-step distances :math:`d_k = d(\\text{frame}_k, \\text{frame}_{k+1})` come from the cached
features with the package's own linear heads applied to the spatial means (the head and the mean
are both linear, so they commute): T backbone passes, the same numbers (tested to 1e-6 against
the package's pairwise call). Only the features of one batch plus one frame are held at a time.

Inputs are images in [0, 1]; they are mapped to [-1, 1] (the range LPIPS was trained on) inside.
"""

from __future__ import annotations

import copy
import functools
import warnings
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from whichway._checks import as_tensor, check_choice, check_finite
from whichway.metrics._weights import fetching, hub_checkpoint_dir
from whichway.metrics.smoothness import PathMetrics, path_metrics_from_steps

if TYPE_CHECKING:
    import lpips as _lpips

__all__ = [
    "LPIPS_NETS",
    "LPIPSPath",
    "backbone_weights_cached",
    "backbone_weights_file",
    "check_frames",
    "lpips_distances",
    "perceptual_path_length",
]

#: Backbones offered (LPIPS v0.1 linear heads ship with the ``lpips`` package for both).
LPIPS_NETS: tuple[str, ...] = ("alex", "vgg")

#: Smallest frame side the backbones accept (AlexNet's strided stem and pools need >= 32 pixels).
LPIPS_MIN_SIDE = 32


def check_frames(frames: object, *, name: str = "frames", min_frames: int = 2) -> Tensor:
    """Validate a path of RGB frames in [0, 1].

    Parameters
    ----------
    frames : Tensor (T, 3, H, W)
        Floating images in [0, 1], T >= ``min_frames``, H, W >= 32.

    Returns
    -------
    Tensor (T, 3, H, W), the input unchanged.
    """
    frames = as_tensor(name, frames)
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(
            f"{name} must be a tensor (T, 3, H, W) of RGB images, got shape {tuple(frames.shape)}"
        )
    if frames.shape[0] < min_frames:
        raise ValueError(
            f"{name} must hold at least {min_frames} frames to measure a path, got {frames.shape[0]}"
        )
    if min(frames.shape[2], frames.shape[3]) < LPIPS_MIN_SIDE:
        raise ValueError(
            f"{name} must be at least {LPIPS_MIN_SIDE}x{LPIPS_MIN_SIDE} pixels for the LPIPS backbones, "
            f"got {frames.shape[2]}x{frames.shape[3]}"
        )
    lo_t, hi_t = torch.aminmax(frames)  # one pass; NaN propagates into both
    lo, hi = float(lo_t), float(hi_t)
    if not (lo >= 0.0 and hi <= 1.0):
        check_finite(name, frames)  # NaN or inf: that message first
        raise ValueError(
            f"{name} must be images in [0, 1], got values in [{lo:.3g}, {hi:.3g}]; "
            "images in [-1, 1] convert with (x + 1) / 2, uint8 images with x / 255"
        )
    return frames


def _backbone_weights(net: str) -> tuple[str, str]:
    """URL and file name of the torchvision ImageNet weights LPIPS uses for ``net``."""
    from torchvision.models import AlexNet_Weights, VGG16_Weights

    url = AlexNet_Weights.IMAGENET1K_V1.url if net == "alex" else VGG16_Weights.IMAGENET1K_V1.url
    return url, url.rsplit("/", 1)[-1]


def _build_lpips(net: str, pretrained_backbone: bool, seed: int) -> _lpips.LPIPS:
    import lpips

    def build() -> _lpips.LPIPS:
        with warnings.catch_warnings():
            # lpips calls torchvision with the deprecated `pretrained=` argument.
            warnings.filterwarnings(
                "ignore", message=".*(pretrained|weight enum).*", category=UserWarning
            )
            return lpips.LPIPS(
                net=net,
                version="0.1",
                pretrained=True,
                pnet_rand=not pretrained_backbone,
                verbose=False,
            )

    if not pretrained_backbone:
        # Random backbone, seeded without touching the caller's global RNG state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build()
    url, filename = _backbone_weights(net)
    with fetching(
        f"torchvision {net} ImageNet weights ({filename}) that LPIPS uses as its backbone",
        url=url,
        how=(
            f"download {url} on a connected machine and copy {filename} into {hub_checkpoint_dir()} "
            "(torch.hub's cache; set TORCH_HOME to move it, the file then goes in "
            "$TORCH_HOME/hub/checkpoints)"
        ),
        testing_hint=(
            "use LPIPSPath(..., pretrained_backbone=False) or `whichway score --random-backbone`: a "
            "randomly initialised backbone through the same distance code, whose values are not "
            "comparable with published LPIPS numbers"
        ),
    ):
        return build()


class LPIPSPath:
    """An LPIPS model held once and reused to measure many paths.

    Parameters
    ----------
    net : {"alex", "vgg"}
        Backbone; ``"alex"`` is the LPIPS default and what paper A reports.
    pretrained_backbone : bool
        Load the ImageNet backbone weights (downloaded by torchvision on first use; a
        :class:`~whichway.metrics.WeightsUnavailableError` explains how to provide them offline).
        ``False`` builds a randomly initialised backbone (seeded by ``seed``) for tests: the same
        distance code and cost, values not comparable with published numbers. The LPIPS linear
        heads ship with the ``lpips`` package and are always loaded.
    device : str or torch.device, optional
        Where the network runs; CPU by default. Frames are moved there batch by batch.
    seed : int
        Seed of the random backbone (only with ``pretrained_backbone=False``).

    Examples
    --------
    >>> meter = LPIPSPath("alex")                       # doctest: +SKIP
    >>> meter.path_metrics(frames).ppl                  # frames: (T, 3, H, W) in [0, 1]  # doctest: +SKIP
    """

    def __init__(
        self,
        net: str = "alex",
        *,
        pretrained_backbone: bool = True,
        device: str | torch.device | None = None,
        seed: int = 0,
    ) -> None:
        self.net = check_choice("net", net, LPIPS_NETS)
        self.pretrained_backbone = bool(pretrained_backbone)
        self.model = _build_lpips(net, self.pretrained_backbone, seed).eval().requires_grad_(False)
        # The backbone this class runs: a channels-last copy of the lpips model's (same weights;
        # oneDNN's convolutions skip their layout reorders in that format, about 25% less CPU
        # time). ``self.model`` stays the lpips package's own model, as a reference.
        self.backbone = copy.deepcopy(self.model.net).to(memory_format=torch.channels_last)
        # the linear heads as weight vectors w_l (C_l,): lpips' 1x1 convolutions without bias
        self._heads = [lin.model[-1].weight.detach().flatten() for lin in self.model.lins]
        # the input map x -> ((2x - 1) - shift) / scale as x * gain + offset, (1, 3, 1, 1) each
        shift = self.model.scaling_layer.shift.double()
        scale = self.model.scaling_layer.scale.double()
        self._gain = (2.0 / scale).float()
        self._offset = ((-1.0 - shift) / scale).float()
        self.to(device if device is not None else "cpu")

    @property
    def device(self) -> torch.device:
        """Device the network runs on."""
        return self.model.scaling_layer.shift.device

    def to(self, device: str | torch.device) -> LPIPSPath:
        """Move the network to ``device`` (in place); returns ``self``."""
        device = torch.device(device)
        self.model.to(device)
        self.backbone.to(device)
        self._heads = [w.to(device) for w in self._heads]
        self._gain, self._offset = self._gain.to(device), self._offset.to(device)
        return self

    def __repr__(self) -> str:
        return f"LPIPSPath(net={self.net!r}, pretrained_backbone={self.pretrained_backbone}, device={self.device})"

    # -- the two halves of the LPIPS forward pass ------------------------------------------------
    def features(self, images: Tensor) -> list[Tensor]:
        """Unit-normalised backbone activations of a batch, one tensor per LPIPS layer.

        Parameters
        ----------
        images : Tensor (B, 3, H, W)
            Images in [0, 1] (not re-validated here; :meth:`distances` checks its input).

        Returns
        -------
        list of Tensor (B, C_l, H_l, W_l), float32 on :attr:`device`.
        """
        images = images.to(device=self.device, dtype=torch.float32)
        # [0, 1] -> [-1, 1], then LPIPS v0.1's scaling layer (x - shift) / scale: one affine map
        # per channel, written in one pass straight into the channels-last input
        x = torch.empty_like(images, memory_format=torch.channels_last)
        torch.addcmul(self._offset, images, self._gain, out=x)
        # unit-normalise each position over channels, in place (the activations are this call's):
        # lpips.normalize_tensor's x / (sqrt(sum_c x^2) + 1e-10), with one pass for the norm
        return [
            out.div_(torch.linalg.vector_norm(out, dim=1, keepdim=True).add_(1e-10))
            for out in self.backbone(x)
        ]

    def pair_distances(self, feats_a: list[Tensor], feats_b: list[Tensor]) -> Tensor:
        """LPIPS between matching rows of two feature lists (from :meth:`features`).

        Returns
        -------
        Tensor (B,) float32: :math:`\\sum_l w_l^\\top \\mathrm{mean}_{hw} (\\hat y^l - \\hat y'^l)^2`.

        lpips applies its linear head (a 1x1 convolution without bias, :math:`w_l`) to every
        position and then averages over positions; both are linear, so the head is applied here
        to the spatial mean instead (one dot product per layer instead of a convolution).
        """
        total: Tensor | int = 0
        for w, a, b in zip(self._heads, feats_a, feats_b):
            sq = torch.sub(a, b).square_()
            total = total + sq.mean(dim=(2, 3)) @ w
        assert isinstance(total, Tensor)
        return total

    # -- paths -----------------------------------------------------------------------------------
    def distances(self, frames: Tensor, *, batch_size: int = 8) -> Tensor:
        """Per-step LPIPS :math:`d_k = \\mathrm{LPIPS}(\\text{frame}_k, \\text{frame}_{k+1})`.

        Each frame goes through the backbone once; batches of ``batch_size`` frames, carrying the
        last frame's features over to the next batch.

        Parameters
        ----------
        frames : Tensor (T, 3, H, W)
            Images in [0, 1], T >= 2, in path order.
        batch_size : int
            Frames per backbone pass.

        Returns
        -------
        Tensor (T-1,) float64 on ``frames``' device.
        """
        frames = check_frames(frames)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        steps: list[Tensor] = []
        carry: list[Tensor] | None = None  # features of the previous batch's last frame
        with torch.inference_mode():
            for start in range(0, frames.shape[0], batch_size):
                feats = self.features(frames[start : start + batch_size])
                if carry is None:
                    left, right = [f[:-1] for f in feats], [f[1:] for f in feats]
                else:
                    left, right = [torch.cat([c, f[:-1]]) for c, f in zip(carry, feats)], feats
                if left[0].shape[0] > 0:
                    steps.append(self.pair_distances(left, right))
                carry = [f[-1:] for f in feats]
        return torch.cat(steps).to(device=frames.device, dtype=torch.float64)

    def path_metrics(
        self, frames: Tensor, t: Tensor | list[float] | None = None, *, batch_size: int = 8
    ) -> PathMetrics:
        """PPL, normalised PPL, smoothness, consistency and max step of a path of frames.

        Parameters
        ----------
        frames : Tensor (T, 3, H, W)
            Images in [0, 1], in path order.
        t : Tensor (T,) or list of float, optional
            The frames' interpolation times (strictly monotonic, in [0, 1]); uniform if omitted.

        Returns
        -------
        PathMetrics (see :mod:`whichway.metrics.smoothness` for the formulas).
        """
        if t is not None:  # validate the cheap argument before the expensive pass
            frames = check_frames(frames)
            n_t = torch.as_tensor(t).numel()
            if n_t != frames.shape[0]:
                raise ValueError(
                    f"t has {n_t} values but frames has {frames.shape[0]}; give one t per frame"
                )
        return path_metrics_from_steps(self.distances(frames, batch_size=batch_size), t)


@functools.lru_cache(maxsize=4)
def _shared_meter(net: str, pretrained_backbone: bool, device: str) -> LPIPSPath:
    return LPIPSPath(net, pretrained_backbone=pretrained_backbone, device=device)


def lpips_distances(
    frames: Tensor,
    *,
    net: str = "alex",
    pretrained_backbone: bool = True,
    batch_size: int = 8,
    device: str | torch.device | None = None,
) -> Tensor:
    """Per-step LPIPS of a path with a process-wide cached :class:`LPIPSPath`.

    Parameters
    ----------
    frames : Tensor (T, 3, H, W)
        Images in [0, 1].
    device : optional
        Where the network runs; ``frames``' device by default.

    Returns
    -------
    Tensor (T-1,) float64.
    """
    check_choice("net", net, LPIPS_NETS)
    dev = torch.device(device) if device is not None else as_tensor("frames", frames).device
    return _shared_meter(net, bool(pretrained_backbone), str(dev)).distances(
        frames, batch_size=batch_size
    )


def perceptual_path_length(
    frames: Tensor,
    t: Tensor | list[float] | None = None,
    *,
    net: str = "alex",
    pretrained_backbone: bool = True,
    batch_size: int = 8,
    device: str | torch.device | None = None,
) -> PathMetrics:
    """:class:`PathMetrics` of a path of frames with a process-wide cached :class:`LPIPSPath`.

    PPL :math:`= \\sum_k d_k` (paper A) and :math:`\\sum_k d_k/\\Delta t_k^2` (StyleGAN-style), with
    :math:`d_k` the LPIPS between consecutive frames; see :class:`PathMetrics`.
    """
    steps = lpips_distances(
        frames,
        net=net,
        pretrained_backbone=pretrained_backbone,
        batch_size=batch_size,
        device=device,
    )
    return path_metrics_from_steps(steps, t)


def backbone_weights_cached(net: str = "alex") -> bool:
    """Whether the torchvision ImageNet weights of ``net``'s backbone are already in torch.hub's
    cache, i.e. whether building a pretrained :class:`LPIPSPath` needs no download."""
    import os

    check_choice("net", net, LPIPS_NETS)
    _, filename = _backbone_weights(net)
    return os.path.isfile(os.path.join(hub_checkpoint_dir(), filename))


def backbone_weights_file(net: str = "alex") -> str:
    """File name of ``net``'s torchvision backbone weights (e.g. ``alexnet-owt-7be5be79.pth``)."""
    check_choice("net", net, LPIPS_NETS)
    return _backbone_weights(net)[1]
