"""Fréchet distance between image sets (FID), as a streaming accumulator.

FID (Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
Equilibrium", arXiv 1706.08500) fits a Gaussian to each set's features and reports the Fréchet
(2-Wasserstein) distance between the two Gaussians:

.. math::
    d^2\\big(\\mathcal N(\\mu_1, \\Sigma_1), \\mathcal N(\\mu_2, \\Sigma_2)\\big)
    = \\|\\mu_1 - \\mu_2\\|_2^2 + \\operatorname{Tr}\\big(\\Sigma_1 + \\Sigma_2
      - 2 (\\Sigma_1 \\Sigma_2)^{1/2}\\big).

Sufficient statistics are kept in float64 and merged batch by batch (Chan, Golub & LeVeque's
pairwise update of the mean and the centred sum of outer products, which avoids the cancellation
of the raw-moment formula :math:`\\sum x x^\\top - n \\bar x \\bar x^\\top`), so sets of any size
stream through in constant memory and partial accumulators (e.g. from Ray workers) merge exactly.

The trace of the matrix square root is taken from the symmetric form
:math:`\\operatorname{Tr}(\\Sigma_1\\Sigma_2)^{1/2} = \\operatorname{Tr}(\\Sigma_1^{1/2}\\Sigma_2\\Sigma_1^{1/2})^{1/2}`
with two symmetric eigendecompositions in float64; eigenvalues of these positive semi-definite
matrices that round below zero are clamped to zero, so singular covariances (fewer samples than
feature dimensions) need no diagonal offset and no complex arithmetic.

The default feature extractor is torch-fidelity's InceptionV3 port of the TensorFlow FID network
(feature dimensions 64, 192, 768 or 2048, as paper B reports); any ``nn.Module`` mapping images
(N, 3, H, W) in [0, 1] to features (N, d) can be plugged in.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from whichway._checks import as_tensor, check_finite
from whichway.metrics._weights import fetching, hub_checkpoint_dir

__all__ = [
    "FID",
    "INCEPTION_DIMS",
    "FrechetAccumulator",
    "FrechetStatistics",
    "InceptionFeatures",
    "frechet_distance",
]

#: Feature dimensions of the InceptionV3 FID network (pool outputs of successive blocks).
INCEPTION_DIMS: tuple[int, ...] = (64, 192, 768, 2048)


@dataclass(frozen=True)
class FrechetStatistics:
    """Gaussian fit of a feature set.

    Attributes
    ----------
    n : int
        Number of samples.
    mean : Tensor (d,) float64
    cov : Tensor (d, d) float64
        Unbiased sample covariance (divided by n - 1).
    """

    n: int
    mean: Tensor
    cov: Tensor

    @property
    def dim(self) -> int:
        return int(self.mean.numel())

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the statistics to ``path`` (a torch file), e.g. to reuse a reference set's fit."""
        torch.save({"n": self.n, "mean": self.mean.cpu(), "cov": self.cov.cpu()}, os.fspath(path))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FrechetStatistics:
        """Read statistics written by :meth:`save`."""
        data = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
        return cls(
            n=int(data["n"]), mean=data["mean"].to(torch.float64), cov=data["cov"].to(torch.float64)
        )


def _sqrtm_psd(a: Tensor) -> Tensor:
    """Square root of a symmetric positive semi-definite matrix via ``eigh`` (float64)."""
    vals, vecs = torch.linalg.eigh((a + a.mT) / 2)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.mT


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> float:
    """Fréchet distance between :math:`\\mathcal N(\\mu_1, \\Sigma_1)` and :math:`\\mathcal N(\\mu_2, \\Sigma_2)`.

    .. math::
        \\|\\mu_1 - \\mu_2\\|^2 + \\operatorname{Tr}\\Sigma_1 + \\operatorname{Tr}\\Sigma_2
        - 2 \\operatorname{Tr}\\big(\\Sigma_1^{1/2} \\Sigma_2 \\Sigma_1^{1/2}\\big)^{1/2}

    (the last trace equals :math:`\\operatorname{Tr}(\\Sigma_1\\Sigma_2)^{1/2}`), computed in float64.

    Parameters
    ----------
    mu1, mu2 : Tensor (d,)
    sigma1, sigma2 : Tensor (d, d)
        Symmetric positive semi-definite covariances.

    Returns
    -------
    float
        The squared Fréchet distance (what is reported as "FID").
    """
    mu1, mu2 = as_tensor("mu1", mu1), as_tensor("mu2", mu2)
    sigma1, sigma2 = as_tensor("sigma1", sigma1), as_tensor("sigma2", sigma2)
    d = mu1.numel()
    if mu1.ndim != 1 or mu2.shape != mu1.shape:
        raise ValueError(
            f"mu1 and mu2 must be 1-D of the same length (d,), got {tuple(mu1.shape)} and {tuple(mu2.shape)}"
        )
    if sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(
            f"sigma1 and sigma2 must be ({d}, {d}) to match the means, got {tuple(sigma1.shape)} and {tuple(sigma2.shape)}"
        )
    for name, value in (("mu1", mu1), ("mu2", mu2), ("sigma1", sigma1), ("sigma2", sigma2)):
        check_finite(name, value)
    device = mu1.device
    m1, m2 = mu1.to(torch.float64), mu2.to(device=device, dtype=torch.float64)
    s1, s2 = (
        sigma1.to(device=device, dtype=torch.float64),
        sigma2.to(device=device, dtype=torch.float64),
    )
    root1 = _sqrtm_psd(s1)
    middle = root1 @ s2 @ root1
    tr_covmean = torch.linalg.eigvalsh((middle + middle.mT) / 2).clamp_min(0).sqrt().sum()
    value = (m1 - m2).square().sum() + s1.trace() + s2.trace() - 2 * tr_covmean
    return max(float(value), 0.0)  # d^2 >= 0; rounding can leave -1e-15


class FrechetAccumulator:
    """Streaming mean and covariance of features, in float64.

    Keeps the count :math:`n`, the running mean :math:`\\bar x` and the centred sum of outer
    products :math:`M = \\sum_i (x_i - \\bar x)(x_i - \\bar x)^\\top`; a batch with statistics
    :math:`(n_b, \\bar x_b, M_b)` is merged as

    .. math::
        \\delta = \\bar x_b - \\bar x,\\quad n' = n + n_b,\\quad
        \\bar x' = \\bar x + \\tfrac{n_b}{n'}\\delta,\\quad
        M' = M + M_b + \\tfrac{n\\, n_b}{n'}\\, \\delta\\delta^\\top .

    Parameters
    ----------
    dim : int, optional
        Feature dimension; fixed by the first :meth:`update` if omitted.

    Examples
    --------
    >>> real, fake = FrechetAccumulator(), FrechetAccumulator()
    >>> real.update(torch.randn(100, 8)); fake.update(torch.randn(100, 8) + 1)
    >>> fid = real.compute(fake)
    """

    def __init__(self, dim: int | None = None) -> None:
        if dim is not None and (not isinstance(dim, int) or dim < 1):
            raise ValueError(f"dim must be a positive integer or None, got {dim!r}")
        self.dim = dim
        self.reset()

    def reset(self) -> None:
        """Forget every sample (the feature dimension given at construction is kept)."""
        self.n = 0
        self._mean: Tensor | None = None
        self._m2: Tensor | None = None

    def update(self, features: Tensor) -> None:
        """Add a batch of feature vectors.

        Parameters
        ----------
        features : Tensor (N, d)
        """
        features = as_tensor("features", features)
        if features.ndim != 2 or features.shape[0] == 0:
            raise ValueError(
                f"features must be a non-empty tensor (N, d), got shape {tuple(features.shape)}"
            )
        if self.dim is not None and features.shape[1] != self.dim:
            raise ValueError(
                f"features have dimension {features.shape[1]} but this accumulator holds dimension {self.dim}"
            )
        check_finite("features", features)
        x = features.detach().to(torch.float64)
        mean_b = x.mean(dim=0)
        centred = x - mean_b
        self._merge(x.shape[0], mean_b, centred.mT @ centred)

    def _merge(self, n_b: int, mean_b: Tensor, m2_b: Tensor) -> None:
        if self._mean is None or self._m2 is None:
            self.dim = int(mean_b.numel())
            self.n, self._mean, self._m2 = n_b, mean_b.clone(), m2_b.clone()
            return
        mean_b, m2_b = mean_b.to(self._mean.device), m2_b.to(self._mean.device)
        n = self.n + n_b
        delta = mean_b - self._mean
        self._mean = self._mean + delta * (n_b / n)
        self._m2 = self._m2 + m2_b + torch.outer(delta, delta) * (self.n * n_b / n)
        self.n = n

    def merge(self, other: FrechetAccumulator) -> FrechetAccumulator:
        """Add another accumulator's samples to this one (in place); returns ``self``."""
        if not isinstance(other, FrechetAccumulator):
            raise ValueError(f"can only merge a FrechetAccumulator, got {type(other).__name__}")
        if other._mean is None or other._m2 is None:
            return self
        if self.dim is not None and other.dim != self.dim:
            raise ValueError(f"cannot merge dimension {other.dim} into dimension {self.dim}")
        self._merge(other.n, other._mean, other._m2)
        return self

    def statistics(self) -> FrechetStatistics:
        """Mean and unbiased covariance of everything seen (needs at least 2 samples)."""
        if self._mean is None or self._m2 is None or self.n < 2:
            raise ValueError(
                f"need at least 2 samples for a covariance, this accumulator has {self.n}"
            )
        return FrechetStatistics(n=self.n, mean=self._mean.clone(), cov=self._m2 / (self.n - 1))

    def compute(self, other: FrechetAccumulator | FrechetStatistics) -> float:
        """Fréchet distance between this set's Gaussian fit and ``other``'s."""
        if isinstance(other, FrechetAccumulator):
            other = other.statistics()
        if not isinstance(other, FrechetStatistics):
            raise ValueError(
                f"other must be a FrechetAccumulator or FrechetStatistics, got {type(other).__name__}"
            )
        mine = self.statistics()
        if other.dim != mine.dim:
            raise ValueError(f"feature dimensions differ: {mine.dim} here and {other.dim} in other")
        return frechet_distance(mine.mean, mine.cov, other.mean, other.cov)


class InceptionFeatures(nn.Module):
    """InceptionV3 FID features of images in [0, 1] (torch-fidelity's port of the TF network).

    Images are quantised to uint8 (``round(255 x)``, as saved images would be), resized to
    299×299 with TF1-compatible bilinear interpolation and passed through the network; the output is
    the average-pooled activation of the block with ``dims`` channels.

    Parameters
    ----------
    dims : {64, 192, 768, 2048}
    weights_path : str, optional
        A local copy of the weights; by default they download on first use into torch.hub's cache.
    """

    def __init__(
        self, dims: int = 2048, *, weights_path: str | os.PathLike[str] | None = None
    ) -> None:
        super().__init__()
        if dims not in INCEPTION_DIMS:
            raise ValueError(
                f"unknown Inception feature dimension {dims!r}; valid choices are: {INCEPTION_DIMS}"
            )
        from torch_fidelity import feature_extractor_inceptionv3 as fe

        self.dims = dims
        filename = fe.URL_INCEPTION_V3.rsplit("/", 1)[-1]
        with fetching(
            f"InceptionV3 FID weights ({filename})",
            url=fe.URL_INCEPTION_V3,
            how=(
                f"download {fe.URL_INCEPTION_V3} on a connected machine and copy {filename} into "
                f"{hub_checkpoint_dir()} (torch.hub's cache; set TORCH_HOME to move it), or pass "
                "weights_path= the file"
            ),
            testing_hint="pass your own feature_extractor (any nn.Module mapping images to features) to FID",
        ):
            self.net = fe.FeatureExtractorInceptionV3(
                "inception-v3-compat",
                [str(dims)],
                feature_extractor_weights_path=os.fspath(weights_path)
                if weights_path is not None
                else None,
            )

    def forward(self, images: Tensor) -> Tensor:
        """images : Tensor (N, 3, H, W) in [0, 1] -> Tensor (N, dims) float32."""
        quantised = (images * 255).round().clamp(0, 255).to(torch.uint8)
        return self.net(quantised)[0]


FeatureExtractor = Callable[[Tensor], Tensor]


class FID:
    """Fréchet Inception Distance between a real and a generated image set, streamed.

    Parameters
    ----------
    feature_extractor : nn.Module or callable, optional
        Maps images (N, 3, H, W) in [0, 1] to features (N, d). Default: :class:`InceptionFeatures`
        with ``dims`` (weights download on first use; see the error message when offline).
    dims : {64, 192, 768, 2048}
        Inception feature dimension (only for the default extractor).
    device : str or torch.device, optional
        Where the extractor runs (CPU by default); images move there batch by batch.
    batch_size : int
        Images per extractor call.

    Examples
    --------
    >>> fid = FID(dims=2048)                          # doctest: +SKIP
    >>> fid.update(real_images, real=True)            # doctest: +SKIP
    >>> fid.update(generated, real=False)             # doctest: +SKIP
    >>> fid.compute()                                 # doctest: +SKIP
    """

    def __init__(
        self,
        feature_extractor: nn.Module | FeatureExtractor | None = None,
        *,
        dims: int = 2048,
        device: str | torch.device | None = None,
        batch_size: int = 64,
        weights_path: str | os.PathLike[str] | None = None,
    ) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if feature_extractor is None:
            feature_extractor = InceptionFeatures(dims, weights_path=weights_path)
        elif not callable(feature_extractor):
            raise ValueError(
                f"feature_extractor must be an nn.Module or a callable, got {type(feature_extractor).__name__}"
            )
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        if isinstance(feature_extractor, nn.Module):
            feature_extractor = feature_extractor.to(self.device).eval()
        self.feature_extractor = feature_extractor
        self.batch_size = batch_size
        self.real = FrechetAccumulator()
        self.fake = FrechetAccumulator()

    def features(self, images: Tensor) -> Tensor:
        """Features (N, d) of images (N, 3, H, W) in [0, 1], extracted in batches."""
        images = as_tensor("images", images)
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[0] == 0:
            raise ValueError(
                f"images must be a non-empty tensor (N, 3, H, W), got shape {tuple(images.shape)}"
            )
        check_finite("images", images)
        lo, hi = float(images.min()), float(images.max())
        if lo < 0 or hi > 1:
            raise ValueError(f"images must be in [0, 1], got values in [{lo:.3g}, {hi:.3g}]")
        out = []
        with torch.inference_mode():
            for start in range(0, images.shape[0], self.batch_size):
                batch = images[start : start + self.batch_size].to(self.device, torch.float32)
                feats = self.feature_extractor(batch)
                if (
                    not isinstance(feats, Tensor)
                    or feats.ndim != 2
                    or feats.shape[0] != batch.shape[0]
                ):
                    shape = (
                        tuple(feats.shape) if isinstance(feats, Tensor) else type(feats).__name__
                    )
                    raise ValueError(
                        f"feature_extractor must return a tensor (N, d) for N images, got {shape}"
                    )
                out.append(feats.to(torch.float64))
        return torch.cat(out)

    def update(self, images: Tensor, *, real: bool) -> None:
        """Add images (N, 3, H, W) in [0, 1] to the real or the generated set."""
        (self.real if real else self.fake).update(self.features(images))

    def update_features(self, features: Tensor, *, real: bool) -> None:
        """Add precomputed features (N, d) (e.g. cached reference features) to one set."""
        (self.real if real else self.fake).update(features)

    def compute(self) -> float:
        """FID between everything added as real and as generated."""
        return self.fake.compute(self.real)

    def reset(self, *, keep_real: bool = False) -> None:
        """Clear both sets, or only the generated one with ``keep_real=True`` (reuse a reference set)."""
        if not keep_real:
            self.real.reset()
        self.fake.reset()
